"""Load demo data: environments with the default policy, groups, users, three services with a
history of releases and promotions, and a local bare GitOps repository that agrees with it.

Idempotent: what exists is left alone, so running it twice changes nothing.
"""

import hashlib
import tempfile
from datetime import timedelta
from pathlib import Path

import git
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from audit import log as audit
from audit.models import AuditAction
from environments.defaults import ensure_default_environments
from environments.models import MAX_SOAK
from releases import policy
from releases.gitops import message as gitops_message
from releases.gitops import values as values_file
from releases.models import (
    PIPELINE,
    Approval,
    ApprovalDecision,
    CheckResult,
    Deployment,
    Promotion,
    PromotionKind,
    PromotionState,
    Release,
    Service,
    StepStatus,
)

DEMO_PASSWORD = "nexo-demo-2026"

TEAMS = ["backend-team", "frontend-team"]
SERVICES = [
    ("nexo-be", "Core API", "backend-team"),
    ("nexo-fe", "Web front end", "frontend-team"),
    ("nexo-auth", "Sign-in and tokens", "backend-team"),
]
# user name, full name, groups, staff
USERS = [
    ("rita", "Rita Requester", ["backend-team", "frontend-team"], False),
    ("sam", "Sam SRE", ["sre-team"], False),
    ("sara", "Sara SRE", ["sre-team"], False),
    ("paulo", "Paulo Platform", ["platform-team"], True),
]

# For each service: which of its releases reached which environment.
REACHED = {
    "nexo-be": {
        "qa": {0, 2, 3, 5, 6, 8, 9, 11, 12, 14},
        "staging": {2, 5, 8, 9, 11, 14},
        "production": {2, 5, 8, 9, 11},
    },
    "nexo-fe": {
        "qa": {1, 3, 4, 6, 7, 9, 10, 12, 13, 15},
        "staging": {3, 6, 7, 10, 13},
        "production": {3, 6, 7, 10, 13},
    },
    "nexo-auth": {"qa": {0, 4, 8, 12}, "staging": {0, 4, 8, 12}, "production": {0, 4, 8}},
}
RELEASE_COUNT = 16
# nexo-be's release 9 is a hotfix of release 8; nexo-fe's release 10 was rolled back in production.
HOTFIXES = {"nexo-be": {9: 8}}
ROLLED_BACK_IN_PRODUCTION = {"nexo-fe": {10}}
# Who reported the history's builds and CI results, as a pipeline's token would be named.
CI_ACTOR = "api-token:github-actions"
CHECK_SUMMARIES = {
    "e2e": "every end-to-end scenario passed",
    "performance": "p95 latency within its budget",
    "security": "no high or critical finding",
}

VALUES_TEMPLATE = """\
# Helm values for {service} in {environment}.
# Managed by GitOps: image.tag is written by the Nexo Release Portal on promotion;
# everything else changes through reviewed pull requests.

replicaCount: {replicas}   # the PodDisruptionBudget needs at least two outside develop

image:
  repository: ghcr.io/nexo-org/{service}
  # The release running here. Do not edit by hand: request a promotion instead.
  tag: ""
  pullPolicy: IfNotPresent

service:
  type: ClusterIP
  port: 8080

resources:
  requests: {{cpu: 100m, memory: 128Mi}}
  limits:
    cpu: 500m
    memory: 512Mi

env:
    - name: NEXO_ENVIRONMENT
      value: '{environment}'
    - name: LOG_LEVEL
      value: "info"   # switch to debug in develop when chasing a bug
"""


def fake_hex(*parts, length=40):
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:length]


def is_local_path(url):
    return "://" not in url and "@" not in url


class Command(BaseCommand):
    help = "Load demo data (environments, groups, users, services, release history, a local GitOps repo). Idempotent."

    def add_arguments(self, parser):
        parser.add_argument(
            "--force",
            action="store_true",
            help="Seed even with DEBUG off. The demo accounts share a published password: never on a real portal.",
        )
        parser.add_argument(
            "--soak-seconds",
            type=int,
            metavar="N",
            help="Make every environment's soak (verification window) N seconds instead of the policy's 5 to 30 "
            "minutes, also for environments that exist already, so a release goes from develop to production in "
            "minutes; samples are then taken every N/5 seconds (at most the policy's interval). ./scripts/demo "
            "passes DEMO_SOAK_SECONDS here.",
        )

    def handle(self, *args, **options):
        if not settings.DEBUG and not options["force"]:
            raise CommandError(
                "seed_demo creates an administrator and people whose password is published in the README, so it "
                "only runs with DEBUG=1 (as ./scripts/demo does). On a portal people use, do not run it; "
                "for a throwaway one, pass --force."
            )
        now = timezone.now().replace(second=0, microsecond=0)
        with transaction.atomic():
            environments = ensure_default_environments()
            if options["soak_seconds"] is not None:
                self.shorten_soaks(environments, options["soak_seconds"])
            groups = self.seed_groups()
            users = self.seed_users(groups)
            services = self.seed_services(groups)
            history, seeded = [], []
            for service in services:
                if not service.releases.exists():
                    history.extend(self.seed_history(service, environments, users, now))
                    seeded.append(service)
        self.seed_gitops_repository(services, environments, history)
        with transaction.atomic():
            # After the GitOps repository, so the events name the commits it holds.
            self.seed_audit_history(seeded)
        self.stdout.write(self.style.SUCCESS("Demo data is in place."))
        self.stdout.write(
            f"Sign in as admin, rita (requester), sam or sara (SREs) or paulo "
            f"(platform engineer); every demo password is: {DEMO_PASSWORD}"
        )

    def shorten_soaks(self, environments, seconds):
        longest = int(MAX_SOAK.total_seconds())
        if not 0 <= seconds <= longest:
            raise CommandError(f"--soak-seconds must be from 0 to {longest} (366 days), not {seconds}.")
        for environment in environments.values():
            environment.verification_window = timedelta(seconds=seconds)
            if seconds:
                # Several rounds in a short soak: its first, as the deployment becomes healthy, never
                # decides alone, and the soak's charts show a series.
                environment.sample_interval_seconds = min(environment.sample_interval_seconds, max(1, seconds // 5))
            try:
                environment.clean()  # how the soak's settings fit together; the range of each is checked above
            except ValidationError as error:
                problems = " ".join(message for messages in error.message_dict.values() for message in messages)
                raise CommandError(f"--soak-seconds {seconds} does not fit {environment.name}: {problems}") from None
            environment.save(update_fields=["verification_window", "sample_interval_seconds"])
        self.stdout.write(f"Every environment's soak lasts {seconds} seconds (--soak-seconds).")

    # --- reference data -------------------------------------------------------------------

    def seed_groups(self):
        names = {"platform-team", "sre-team", "platform-leads", *TEAMS}
        return {name: Group.objects.get_or_create(name=name)[0] for name in sorted(names)}

    def seed_users(self, groups):
        users = {}
        admin, created = User.objects.get_or_create(
            username="admin", defaults={"is_staff": True, "is_superuser": True, "email": "admin@nexo.invalid"}
        )
        if created:
            admin.set_password(DEMO_PASSWORD)
            admin.save()
        users["admin"] = admin
        for username, full_name, group_names, is_staff in USERS:
            first, last = full_name.split(" ", 1)
            user, created = User.objects.get_or_create(
                username=username,
                defaults={
                    "first_name": first,
                    "last_name": last,
                    "email": f"{username}@nexo.invalid",
                    "is_staff": is_staff,
                },
            )
            if created:
                user.set_password(DEMO_PASSWORD)
                user.save()
                user.groups.set(groups[name] for name in group_names)
            users[username] = user
        return users

    def seed_services(self, groups):
        services = []
        for name, description, team in SERVICES:
            service, _ = Service.objects.get_or_create(
                name=name,
                defaults={
                    "description": description,
                    "team": groups[team],
                    "image_repository": f"ghcr.io/nexo-org/{name}",
                    "source_repo_url": f"https://github.com/nexo-org/{name}",
                },
            )
            services.append(service)
        return services

    # --- history ------------------------------------------------------------------------------

    def seed_history(self, service, environments, users, now):
        """Sixteen releases over ten weeks, each verified in develop, some further on, with a
        hotfix and a production rollback, so the board, the drift and DORA have something to show.

        Returns the deployments in the order they happened, for the GitOps history.
        """
        releases = []
        builds_per_month = {}
        first_registration = now - timedelta(days=70)
        hotfixes = HOTFIXES.get(service.name, {})
        for index in range(RELEASE_COUNT):
            registered_at = first_registration + timedelta(days=index * 4.4, hours=index % 3)
            month_key = (registered_at.year, registered_at.month)
            builds_per_month[month_key] = builds_per_month.get(month_key, 0) + 1
            version = f"{registered_at.year}.{registered_at.month:02d}.{builds_per_month[month_key]}"
            if index in hotfixes:
                version += "-hotfix"
            releases.append(
                Release.objects.create(
                    service=service,
                    version=version,
                    commit_sha=fake_hex(service.name, version),
                    committed_at=registered_at - timedelta(hours=3 + index % 5),
                    image_digest="sha256:" + fake_hex("digest", service.name, version, length=64),
                    changelog=f"- feat: change number {index + 1} of {service.name}\n- fix: small fixes",
                    is_hotfix=index in hotfixes,
                    fixes=releases[hotfixes[index]] if index in hotfixes else None,
                    registered_by=CI_ACTOR,
                    registered_at=registered_at,
                )
            )

        reached = REACHED[service.name]
        plan = []  # (when, environment, release, requester, approvers, kind)
        for index, release in enumerate(releases):
            base = release.registered_at
            plan.append((base + timedelta(minutes=12), environments["develop"], release, None, [], PromotionKind.AUTO))
            if index in reached["qa"]:
                plan.append((base + timedelta(minutes=40), environments["qa"], release, None, [], PromotionKind.AUTO))
            if index in reached["staging"]:
                plan.append(
                    (
                        base + timedelta(days=1),
                        environments["staging"],
                        release,
                        users["rita"],
                        [users["paulo"]],
                        PromotionKind.MANUAL,
                    )
                )
            if index in reached["production"]:
                sres = [users["sam"], users["sara"]]
                plan.append(
                    (
                        base + timedelta(days=2),
                        environments["production"],
                        release,
                        users["rita"],
                        sres,
                        PromotionKind.MANUAL,
                    )
                )
                if index in ROLLED_BACK_IN_PRODUCTION.get(service.name, ()):
                    back_to = releases[max(i for i in reached["production"] if i < index)]
                    plan.append(
                        (
                            base + timedelta(days=2, hours=5),
                            environments["production"],
                            back_to,
                            users["rita"],
                            sres,
                            PromotionKind.ROLLBACK,
                        )
                    )

        deployments, current = [], {}
        for when, environment, release, requester, approvers, kind in sorted(plan, key=lambda step: step[0]):
            taken_out = current.get(environment.name)
            promotion = Promotion.objects.create(
                release=release,
                service=service,
                environment=environment,
                kind=kind,
                state=PromotionState.VERIFIED,
                requested_by=requester,
                requested_via="" if requester else "pipeline",
                previous_release=taken_out.release if taken_out else None,
                rolls_back=taken_out.promotion if kind == PromotionKind.ROLLBACK else None,
                # Before its approval (5 minutes before it ran) even when nobody had to approve it.
                requested_at=when - timedelta(minutes=30 if approvers else 6),
                approved_at=when - timedelta(minutes=5),
                commit_started_at=when - timedelta(minutes=4),
                committed_at=when - timedelta(minutes=4) + timedelta(seconds=3),
                sync_started_at=when - timedelta(minutes=3),
                deployed_at=when,
                verification_started_at=when,
                finished_at=when + environment.verification_window,
                gitops_commit_sha=fake_hex("gitops", service.name, environment.name, release.version, str(when)),
                sync_status=StepStatus.PASSED,
                verification_status=StepStatus.PASSED,
            )
            if kind == PromotionKind.ROLLBACK:
                Promotion.objects.filter(pk=taken_out.promotion_id).update(state=PromotionState.ROLLED_BACK)
            for offset, approver in enumerate(approvers):
                Approval.objects.create(
                    promotion=promotion,
                    user=approver,
                    decision=ApprovalDecision.APPROVE,
                    comment="Looks good." if offset == 0 else "",
                    created_at=when - timedelta(minutes=20 - 10 * offset),
                )
            self.seed_check_results(promotion)
            deployment = Deployment.objects.record(
                release=release,
                environment=environment,
                deployed_at=when,
                promotion=promotion,
                is_rollback=kind == PromotionKind.ROLLBACK,
                gitops_commit_sha=promotion.gitops_commit_sha,
                health="Healthy",
            )
            current[environment.name] = deployment
            deployments.append(deployment)

        if service.name == "nexo-be":
            self.seed_pending_production_request(service, environments["production"], users["rita"], current)
        return deployments

    def seed_check_results(self, promotion):
        """The CI results a verified promotion needed, reported during its soak: without them a
        rollback to this release there (the qa policy rolls back by itself) would fail its checks."""
        environment = promotion.environment
        reported_at = promotion.verification_started_at + environment.verification_window / 2
        CheckResult.objects.bulk_create(
            CheckResult(
                release=promotion.release,
                environment=environment,
                name=name,
                passed=True,
                summary=CHECK_SUMMARIES.get(name, f"{name} passed"),
                reported_by=CI_ACTOR,
                reported_at=reported_at,
            )
            for name in environment.required_checks
        )

    def seed_pending_production_request(self, service, production, requester, current):
        """One production promotion waiting for two SREs, so the demo has something to approve."""
        staging_release = current["staging"].release
        if current["production"].release == staging_release:
            return
        Promotion.objects.create(
            release=staging_release,
            service=service,
            environment=production,
            kind=PromotionKind.MANUAL,
            requested_by=requester,
            previous_release=current["production"].release,
        )

    # --- audit log -------------------------------------------------------------------------------

    def seed_audit_history(self, services):
        """The audit events the pipeline would have written for the seeded history, at the times
        it happened and in that order, chained like any other: registrations, requests, approvals,
        the GitOps commit, the sync, the deployment, the soak and its verdict, the rollback."""
        events = []
        for release in Release.objects.filter(service__in=services).select_related("service"):
            events.append(
                (
                    release.registered_at,
                    AuditAction.RELEASE_REGISTERED,
                    {
                        "actor": release.registered_by,
                        "service": release.service.name,
                        "version": release.version,
                        "message": f"{release.service.name} {release.version} registered from commit "
                        f"{release.commit_sha[:7]}",
                        "data": {
                            "commit_sha": release.commit_sha,
                            "image_digest": release.image_digest,
                            "hotfix": release.is_hotfix,
                            "tags": release.tags(),
                        },
                    },
                )
            )
        promotions = (
            Promotion.objects.filter(service__in=services)
            .select_related("service", "environment", "release", "requested_by", "previous_release", "rolls_back")
            .prefetch_related("approvals__user")
        )
        for promotion in promotions:
            events.extend(self._promotion_events(promotion))
        # Stable: events of one moment keep the order the pipeline writes them in.
        for at, action, fields in sorted(events, key=lambda event: event[0]):
            audit.record(action, at=at, **fields)

    def _promotion_events(self, promotion):
        environment, release = promotion.environment, promotion.release
        previous = environment.previous()
        described = f"{promotion.service.name} {release.version} → {environment.name}"
        required = policy.approvals_required(promotion)

        def event(at, action, message, actor=PIPELINE, **data):
            fields = {
                "actor": actor,
                "service": promotion.service.name,
                "environment": environment.name,
                "version": release.version,
                "promotion": promotion,
                "message": message,
                "data": data,
            }
            return at, action, fields

        requester = promotion.requested_by or promotion.requested_via or PIPELINE
        yield event(
            promotion.requested_at,
            AuditAction.PROMOTION_REQUESTED,
            f"{described} requested",
            requester,
            from_environment=previous.name if previous else None,
            to_environment=environment.name,
            kind=promotion.kind,
            rollback=promotion.is_rollback,
            emergency=False,
            emergency_reason="",
            previous_version=promotion.previous_release.version if promotion.previous_release else None,
        )
        approvals = sorted(promotion.approvals.all(), key=lambda approval: approval.created_at)
        for given, approval in enumerate(approvals, start=1):
            yield event(
                approval.created_at,
                AuditAction.PROMOTION_APPROVED,
                f"{described} approved by {approval.user.get_username()} ({given}/{required})",
                approval.user,
                comment=approval.comment,
                approvals=given,
                required=required,
            )
        if promotion.commit_started_at:
            yield event(
                promotion.commit_started_at,
                AuditAction.PROMOTION_COMMIT_STARTED,
                f"GitOps commit for {described} started",
            )
        if promotion.committed_at:
            sha = promotion.gitops_commit_sha
            yield event(
                promotion.committed_at,
                AuditAction.PROMOTION_COMMITTED,
                f"{described} committed as {sha[:7]}",
                commit=sha,
                approvers=[approval.user.get_username() for approval in approvals],
                initiator=promotion.requester_name(),
            )
        if promotion.sync_started_at:
            yield event(
                promotion.sync_started_at,
                AuditAction.PROMOTION_SYNCING,
                f"{described}: Argo CD sync started",
                configured=True,
            )
        if promotion.deployed_at:
            yield event(
                promotion.deployed_at,
                AuditAction.PROMOTION_DEPLOYED,
                f"{described} deployed (Healthy)",
                health="Healthy",
            )
            taken_out = promotion.rolls_back
            if taken_out is not None:
                yield (
                    promotion.deployed_at,
                    AuditAction.PROMOTION_ROLLED_BACK,
                    {
                        "actor": requester,
                        "service": promotion.service.name,
                        "environment": environment.name,
                        "version": taken_out.release.version,
                        "promotion": taken_out,
                        "message": f"{promotion.service.name} {taken_out.release.version} → {environment.name} "
                        f"rolled back to {release.version}",
                        "data": {"rollback_promotion": promotion.pk},
                    },
                )
        if promotion.verification_started_at:
            window = environment.verification_window
            verdict_at = promotion.verification_started_at + window
            yield event(
                promotion.verification_started_at,
                AuditAction.PROMOTION_VERIFYING,
                f"{described}: soaking until {timezone.localtime(verdict_at):%H:%M:%S}",
                window_seconds=window.total_seconds(),
            )
            passed = [f"{name} passed" for name in environment.required_checks]
            yield event(
                promotion.finished_at,
                AuditAction.PROMOTION_VERIFIED,
                f"{described} verified: " + "; ".join(["error rate within the threshold in every sample", *passed]),
            )

    # --- GitOps repository ---------------------------------------------------------------------

    def seed_gitops_repository(self, services, environments, history):
        url = settings.GITOPS_REPO_URL
        if not is_local_path(url):
            self.stdout.write(f"GITOPS_REPO_URL is remote ({url.split('@')[-1]}); no demo repository created.")
            return
        bare = Path(url)
        if bare.exists():
            self.stdout.write(f"GitOps repository {bare} already exists; left as it is.")
            return
        bare.parent.mkdir(parents=True, exist_ok=True)
        git.Repo.init(bare, bare=True, initial_branch=settings.GITOPS_BRANCH)
        with tempfile.TemporaryDirectory() as scratch:
            work = git.Repo.init(scratch, initial_branch=settings.GITOPS_BRANCH)
            author = git.Actor(settings.GITOPS_AUTHOR_NAME, settings.GITOPS_AUTHOR_EMAIL)
            first = min((d.deployed_at for d in history), default=timezone.now()) - timedelta(days=1)
            for service in services:
                for environment in environments.values():
                    path = Path(scratch) / service.values_path(environment)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    replicas = 1 if environment.name == "develop" else 2
                    path.write_text(
                        VALUES_TEMPLATE.format(service=service.name, environment=environment.name, replicas=replicas)
                    )
                    work.index.add([str(path)])
            self._commit(work, "chore: initial Helm values for the Nexo services", author, first)
            for deployment in sorted(history, key=lambda d: d.deployed_at):
                relative = deployment.service.values_path(deployment.environment)
                path = Path(scratch) / relative
                path.write_text(
                    values_file.set_value(
                        path.read_text(), deployment.service.image_tag_key, deployment.release.version, relative
                    )
                )
                work.index.add([str(path)])
                promotion = deployment.promotion
                message = (
                    f"{gitops_message.subject(promotion)}\n\n"
                    f"Requested by {promotion.requester_name()}.\n\n"
                    f"Promotion-Id: {promotion.pk}\nRelease-Digest: {deployment.release.image_digest}\n"
                )
                sha = self._commit(work, message, author, promotion.committed_at)
                Promotion.objects.filter(pk=promotion.pk).update(gitops_commit_sha=sha)
                Deployment.objects.filter(pk=deployment.pk).update(gitops_commit_sha=sha)
            work.create_remote("origin", str(bare)).push(f"HEAD:refs/heads/{settings.GITOPS_BRANCH}")
        self.stdout.write(f"Created the demo GitOps repository at {bare}.")

    def _commit(self, work, message, author, when):
        stamp = when.strftime("%Y-%m-%dT%H:%M:%S%z")
        return work.index.commit(message, author=author, committer=author, author_date=stamp, commit_date=stamp).hexsha
