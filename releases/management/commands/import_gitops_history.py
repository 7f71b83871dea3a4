"""Create the historical deployments the GitOps repository's history shows, so DORA has a past.

Every first-parent commit of the branch that changes the image tag of a service's values file
for an environment is one deployment of that version there, finished at the commit time.
Whether it is a change, a redeploy or a rollback is decided by the rule live recording uses
(`Deployment.objects.classify`): only a version that was live there before can be a rollback,
when it is older than the one running or the commit says so (`rollback(...)`, `Revert "..."`);
a late hotfix or a promotion out of CalVer order is a change. Idempotent: a commit already
recorded (by the portal or an earlier import) is skipped.
"""

import re
import tempfile

import git
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from audit import log as audit
from audit.models import AuditAction
from environments.models import Environment
from releases import calver
from releases.gitops import values as values_file
from releases.gitops.repo import redact
from releases.models import IMAGE_DIGEST_PATTERN, Deployment, DeploymentSource, Release, Service

ROLLBACK_SUBJECT = re.compile(r"^\s*(rollback\b|revert\b)", re.IGNORECASE)
TRAILER = re.compile(r"^(Promotion-Id|Release-Digest):\s*(\S+)\s*$", re.MULTILINE)
IMPORTER = "gitops-import"


def is_rollback_message(commit):
    """The subject says rollback or revert; for a merge, any line may (GitHub puts the PR title there)."""
    lines = commit.message.splitlines()
    candidates = lines if len(commit.parents) > 1 else lines[:1]
    return any(ROLLBACK_SUBJECT.match(line) for line in candidates)


def trailers(commit):
    return dict(TRAILER.findall(commit.message))


class Command(BaseCommand):
    help = "Import historical deployments from the GitOps repository's history of values files. Idempotent."

    def add_arguments(self, parser):
        parser.add_argument("--repo", default=None, help="GitOps repository URL or path (default: GITOPS_REPO_URL).")
        parser.add_argument("--branch", default=None, help="Branch Argo CD follows (default: GITOPS_BRANCH).")
        parser.add_argument("--service", action="append", default=[], help="Only this service (repeatable).")
        parser.add_argument("--environment", action="append", default=[], help="Only this environment (repeatable).")
        parser.add_argument("--dry-run", action="store_true", help="Show what would be imported; write nothing.")

    def handle(self, *args, **options):
        url = options["repo"] or settings.GITOPS_REPO_URL
        branch = options["branch"] or settings.GITOPS_BRANCH
        services = self._selected(Service.objects.order_by("name"), options["service"], "service")
        environments = self._selected(Environment.objects.in_pipeline_order(), options["environment"], "environment")
        self.warnings = []
        with tempfile.TemporaryDirectory(prefix="nexo-gitops-import-") as scratch:
            try:
                repo = git.Repo.clone_from(url, scratch, bare=True, branch=branch, single_branch=True)
            except git.GitCommandError as error:
                raise CommandError(
                    f"Could not clone branch {branch} of {redact(url)}: {(error.stderr or str(error)).strip()}"
                ) from error
            totals = []
            for service in services:
                for environment in environments:
                    # One transaction per values file: the audit chain's lock (taken first, before any
                    # row, as every writer does) is held for one file's history, not the whole import.
                    # Re-running skips what is recorded, so an import that stops half-way is finished
                    # by running it again.
                    with transaction.atomic():
                        audit.lock_chain()
                        totals.append(self.import_place(repo, branch, service, environment))
                        if options["dry_run"]:
                            transaction.set_rollback(True)
        for warning in self.warnings:
            self.stderr.write(self.style.WARNING(warning))
        imported = sum(created for created, _, _ in totals)
        rollbacks = sum(rolled for _, rolled, _ in totals)
        known = sum(skipped for _, _, skipped in totals)
        verb = "Would import" if options["dry_run"] else "Imported"
        self.stdout.write(
            self.style.SUCCESS(
                f"{verb} {imported} deployment(s) ({rollbacks} rollback(s)) from {redact(url)} {branch}; "
                f"{known} already recorded."
            )
        )

    def _selected(self, queryset, names, what):
        if not names:
            return list(queryset)
        found = list(queryset.filter(name__in=names))
        missing = sorted(set(names) - {item.name for item in found})
        if missing:
            raise CommandError(f"There is no {what} called {', '.join(missing)}.")
        return found

    def import_place(self, repo, branch, service, environment):
        """Import one values file's history. Returns (created, of which rollbacks, already recorded)."""
        path = service.values_path(environment)
        known_commits = set(
            Deployment.objects.in_place(service, environment).values_list("gitops_commit_sha", flat=True)
        )
        known_promotions = set(
            Deployment.objects.in_place(service, environment)
            .filter(promotion__isnull=False)
            .values_list("promotion_id", flat=True)
        )
        created = rollbacks = skipped = 0
        previous_tag = previous_release = None
        for commit in repo.iter_commits(branch, paths=path, first_parent=True, reverse=True):
            tag = self._tag_at(commit, path, service)
            if not tag or tag == previous_tag:
                continue  # the file was created empty, or something other than the tag changed
            previous_tag = tag
            try:
                version = calver.parse(tag)
            except calver.InvalidVersion:
                self.warnings.append(f"{path} at {commit.hexsha[:10]}: tag {tag!r} is not a CalVer version; skipped.")
                continue
            found = trailers(commit)
            promotion_id = found.get("Promotion-Id", "")
            if commit.hexsha in known_commits or (promotion_id.isdigit() and int(promotion_id) in known_promotions):
                skipped += 1
                previous_release = Release.objects.filter(
                    service=service, year=version.year, month=version.month, build=version.build
                ).first()
                continue
            release = self._release(service, tag, commit, found.get("Release-Digest", ""), previous_release)
            deployment = Deployment.objects.record(
                release=release,
                environment=environment,
                deployed_at=commit.committed_datetime,
                is_rollback=is_rollback_message(commit),
                source=DeploymentSource.IMPORT,
                gitops_commit_sha=commit.hexsha,
            )
            is_rollback = deployment.is_rollback
            audit.record(
                AuditAction.DEPLOYMENT_IMPORTED,
                actor=IMPORTER,
                service=service.name,
                environment=environment.name,
                version=tag,
                message=f"{service.name} {tag} in {environment.name} imported from GitOps commit {commit.hexsha[:10]}"
                + (" (rollback)" if is_rollback else ""),
                data={
                    "gitops_commit_sha": commit.hexsha,
                    "deployed_at": deployment.deployed_at,
                    "rollback": is_rollback,
                },
            )
            previous_release = release
            created += 1
            rollbacks += is_rollback
        return created, rollbacks, skipped

    def _tag_at(self, commit, path, service):
        try:
            blob = commit.tree / path
        except KeyError:
            return None  # the file was removed in this commit
        try:
            return values_file.read_value(blob.data_stream.read().decode(), service.image_tag_key, path)
        except (values_file.ValuesFileError, UnicodeDecodeError) as error:
            self.warnings.append(f"{path} at {commit.hexsha[:10]}: {error}; skipped.")
            return None

    def _release(self, service, version, commit, digest, previous_release):
        """The registered release of that version, or an imported one that knows only what Git shows."""
        parsed = calver.parse(version)
        # The values file may name a CI tag such as 2026.02.1-a3f2b1c: the same build as release 2026.02.1.
        release = (
            Release.objects.filter(service=service, version=version).first()
            or Release.objects.filter(service=service, year=parsed.year, month=parsed.month, build=parsed.build).first()
        )
        if release is not None:
            return release
        is_hotfix = parsed.metadata.startswith("hotfix")
        return Release.objects.create(
            service=service,
            version=version,
            commit_sha="",
            committed_at=None,  # the application commit is not in the GitOps history
            image_digest=digest if re.match(IMAGE_DIGEST_PATTERN, digest) else "",
            is_imported=True,
            is_hotfix=is_hotfix,
            # A hotfix's version does not say what it fixes; the release it replaced there is the best witness.
            fixes=previous_release if is_hotfix else None,
            registered_by=IMPORTER,
            registered_at=commit.committed_datetime,
            changelog=commit.message.strip()[:2000],
        )
