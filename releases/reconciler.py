"""The periodic safety net: deliver every step the database says is owed, and notice GitOps drift.

The rows are the truth (releases/steps.py). Every RECONCILE_SECONDS, `manage.py reconcile --loop`:

- ends each running step whose lease expired (its worker died, or lost the database: a worker
  that could not reach it said so in Redis, which makes it a transient error, not a crash) and
  resumes the promotion, or fails it when the step has crashed too often or retried too long;
- hands RQ again each queued step past its time that RQ does not hold, or holds scheduled when it
  is overdue (RQ's scheduler lives inside one worker and dies with it);
- schedules the step of a promotion that is mid-way with no run at all (rows from before runs
  existed, or a bug);
- promotes the newest build that waited to enter an automatic environment while it was frozen,
  once the freeze has ended or was lifted: every transition that frees a place promotes what
  waited there, but a freeze ends with none;
- hands RQ again each alert or notice owed past its time that no worker is sending and RQ does not
  hold (Redis was down when its change committed, or lost it), and deletes those that ended more
  than 30 days ago (releases/notices.py);
- reads every open promotion pull request from GitHub, the fallback for missed webhooks, and opens
  those a promotion awaiting approval still lacks (releases/pull_requests.py);
- reads every values file and flags a place whose image tag differs from what the portal
  deployed there (audited once per difference, and once when it is put right), unless the portal's
  own last commit there wrote it (a promotion whose sync failed): that is said, not audited;
- asks Argo CD once for the health of every application and writes on each place's deployment the
  health that changed since it was last seen, which the board shows (an application that went
  Degraded an hour after its verification is Degraded there too);
- every AUDIT_VERIFY_SECONDS, verifies the audit chain against its witness, alerts once when it
  breaks and checkpoints its head (releases/audit_watch.py);
- reminds the approvers of each promotion that has waited APPROVAL_REMINDER_MINUTES, once
  (releases/approval_notices.py).

Each duty runs on its own: one that fails is logged with its traceback and the round goes on. A
round that ends says when (`ReconcilerRound`), for /metrics.
"""

import logging
from datetime import timedelta

from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Subquery
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from redis.exceptions import RedisError

from audit import log as audit
from audit.models import AuditAction, AuditEvent
from environments.argocd import ApplicationStatus, ArgoCD, ArgoCDError, SyncStatus
from environments.models import ChangeFreeze, Environment
from nexo_portal.lib import context, metrics

from . import (
    alerts,
    approval_notices,
    argocd_health,
    audit_watch,
    board,
    drift,
    jobs,
    notices,
    pull_requests,
    slo,
    steps,
    transitions,
)
from .gitops import values
from .gitops.repo import GitOpsError, GitOpsRepository
from .models import (
    PIPELINE,
    Deployment,
    Promotion,
    PromotionState,
    ReconcilerRound,
    Release,
    RunStatus,
    Service,
    StepRun,
)

logger = logging.getLogger(__name__)

DRIFTED_TAG_LENGTH = Deployment._meta.get_field("drifted_tag").max_length
# What `drifted_tag` holds for a tag cleared by hand (`tag: ""`, `tag: ~`): Helm runs the chart's
# appVersion. Not "", which means no drift, and the same every round, so it is audited once.
NO_TAG = "(no tag)"
MESSAGE_LENGTH = AuditEvent._meta.get_field("message").max_length
# A promotion mid-way and untouched for this long with no run at all gets one.
STALL_AFTER = timedelta(minutes=2)
# A build that waited for a freeze is looked for this long after the freeze ended, among the builds
# deferred from this long before it began.
AFTER_FREEZES = timedelta(days=1)
# Where a promotion rolls out the next release, what Argo CD reports is that rollout, not the release
# the place's deployment names; the sync job records the health of the deployment it makes.
ROLLING_OUT = [PromotionState.COMMITTED, PromotionState.SYNCING]


def reconcile():
    with context.bound():  # what a round binds (a promotion it resumed) ends with the round
        recovered = _isolated(recover_steps, failed=[])
        after_freezes = _isolated(promote_after_freezes, failed=[])
        notices_redelivered = _isolated(notices.redeliver_owed, failed=[])
        _isolated(notices.forget_ended)
        pull_requests_read = _isolated(pull_requests.poll, failed=[])
        drifted = _isolated(detect_drift, failed=[])
        far_behind = _isolated(detect_far_behind, failed=[])
        breaching = _isolated(slo.find_breaches, failed=[])
        approved = _isolated(transitions.approve_where_quorum_is_met, failed=[])
        reminded = _isolated(approval_notices.remind_due, failed=[])
        verification = _isolated(audit_watch.watch_audit_chain)
        # Last: an Argo CD that accepts connections and never answers holds the round up to its timeout.
        argocd_health = _isolated(refresh_argocd_health, failed=[])
    ReconcilerRound.record(timezone.now())  # /metrics: a reconciler that stopped is alerted on
    return {
        "recovered": recovered,
        "promoted_after_freezes": after_freezes,
        "notices": notices_redelivered,
        "pull_requests": pull_requests_read,
        "drifted": drifted,
        "far_behind": far_behind,
        "argocd_health": argocd_health,
        "slo_breaches": breaching,
        "approved_at_quorum": [promotion.pk for promotion in approved],
        "reminded": reminded,
        "audit_chain": verification and verification.summary,
    }


def _isolated(duty, failed=None):
    """What `duty()` returns, or `failed` when it raised. A duty's bug or a row or file it did not
    expect would otherwise end every round at the same place, and the duties after it (SLO breaches,
    reminders, the audit chain's watch) would never run. The database out of reach ends the round
    instead: no duty runs without it, and `reconcile --loop` waits the outage out."""
    try:
        return duty()
    except Exception:
        if not connection.is_usable():
            raise
        logger.exception("Reconciler: %s failed; the round goes on without it", duty.__name__)
        return failed


def recover_steps(now=None):
    """Ids of the promotions whose step was owed and is on its way again."""
    now = now or timezone.now()
    recovered = []
    for run in StepRun.objects.filter(status=RunStatus.RUNNING, lease_expires_at__lt=now):
        with context.bound(promotion_id=run.promotion_id):
            ended = jobs.end_abandoned(run, now)
        if ended:
            logger.warning("Step run %s lost its worker %s; the promotion goes on", run.pk, run.worker)
            metrics.RECONCILER_RESUMES.labels(reason="lease_expired").inc()
            recovered.append(run.promotion_id)
    try:
        for run in StepRun.objects.filter(status=RunStatus.QUEUED, run_after__lt=now - steps.OVERDUE_AFTER):
            with context.bound(promotion_id=run.promotion_id):
                trouble = steps.redeliver_if_lost(run, now)
            if trouble:
                logger.warning("Step run %s was due at %s and delivered again: %s", run.pk, run.run_after, trouble)
                metrics.RECONCILER_RESUMES.labels(reason="redelivered").inc()
                recovered.append(run.promotion_id)
    except RedisError as error:
        # Which runs RQ holds cannot be asked now; the rows keep them owed for a round after Redis is
        # back. What needs only the database goes on (the promotions with no run at all, below).
        logger.warning("Reconciler: RQ cannot be asked about the steps owed this round: %s", error)
    stalled = (
        Promotion.objects.filter(state__in=list(transitions.JOB_FOR_STATE), updated_at__lt=now - STALL_AFTER)
        .exclude(runs__status__in=RunStatus.open())
        .values_list("pk", flat=True)
    )
    for promotion_id in stalled:
        with context.bound(promotion_id=promotion_id), transaction.atomic():
            if jobs.resume(promotion_id):
                logger.warning("Promotion %s was mid-way with no step owed; scheduled one", promotion_id)
                metrics.RECONCILER_RESUMES.labels(reason="stalled").inc()
                recovered.append(promotion_id)
    return list(dict.fromkeys(recovered))


def promote_after_freezes(now=None):
    """Ids of the promotions of builds that waited to enter an automatic environment while a freeze
    held it, now that the freeze has ended or was changed or deleted and none holds it."""
    now = now or timezone.now()
    since = now - AFTER_FREEZES
    ended = list(
        ChangeFreeze.objects.filter(ends_at__gt=since, ends_at__lte=now).values_list("environment__name", "starts_at")
    )
    thawed, began = {name for name, _ in ended}, [starts_at for _, starts_at in ended]
    for environment, moved_from, starts_at in AuditEvent.objects.filter(
        action__in=[AuditAction.FREEZE_CHANGED, AuditAction.FREEZE_DELETED], created_at__gte=since
    ).values_list("environment", "data__moved_from", "data__starts_at"):
        thawed |= {environment, moved_from} - {None}  # moved: where it was is free now
        began.append(parse_datetime(starts_at or "") or now)
    if not thawed:
        return []
    # A build deferred once, when the freeze refused it, waited for as long as the freeze lasted (a
    # weekend's, a holiday's): its deferral is looked for from a day before the freeze began.
    waited = set(
        AuditEvent.objects.filter(
            action=AuditAction.PROMOTION_DEFERRED,
            created_at__gte=min([now, *began]) - AFTER_FREEZES,
            environment__in=thawed,
        ).values_list("service", "environment")
    )
    environments = {
        environment.name: environment
        for environment in Environment.objects.filter(auto_promote=True, name__in=thawed).with_active_freeze(now)
        if environment.frozen_until is None
    }
    services = {service.name: service for service in Service.objects.filter(name__in={name for name, _ in waited})}
    promoted = []
    for service_name, environment_name in sorted(waited):
        service, environment = services.get(service_name), environments.get(environment_name)
        if service is None or environment is None:
            continue
        promotion = transitions.promote_waiting_after_freeze(service, environment)
        if promotion is not None:
            logger.info(
                "%s waited for a freeze of %s to end: promoted as %s", service_name, environment_name, promotion
            )
            promoted.append(promotion.pk)
    return promoted


def detect_drift():
    """Compare every current deployment with the tag its values file holds; flag and audit differences.

    A tag the portal's own last commit in the place wrote (a promotion whose sync failed, a rollback
    that did not finish) is written on the deployment with that promotion, and is not drift: neither
    returned nor audited, since the promotion's own events say what happened (releases/drift.py).

    Skipped while a worker holds the GitOps lock: it may be pushing a commit whose promotion this
    round would not see in flight yet. What the portal deployed, committed and has in flight is read
    after the values files and under the same lock, so nothing is pushed between the two readings.
    """
    keys = {
        deployment.service.values_path(deployment.environment): deployment.service.image_tag_key
        for deployment in Deployment.objects.current().select_related("service", "environment")
    }
    if not keys:
        return []
    repository = GitOpsRepository(lock_wait=0)
    try:
        with repository.locked():
            repository.sync()
            found = {path: _tag_in(repository, path, key) for path, key in sorted(keys.items())}
            # Still under the lock, so nothing is pushed between the files read and this.
            in_flight = set(
                Promotion.objects.filter(state__in=PromotionState.in_flight()).values_list(
                    "service_id", "environment_id"
                )
            )
            readings = []
            for deployment in Deployment.objects.current().select_related("service", "environment", "release"):
                path = deployment.service.values_path(deployment.environment)
                if (deployment.service_id, deployment.environment_id) in in_flight or path not in found:
                    continue
                tag = found[path]
                if tag == deployment.release.version:
                    readings.append((deployment, "", None))  # no difference
                else:
                    readings.append((deployment, tag, _committed_by(deployment, tag)))
    except GitOpsError as error:
        logger.info("Drift check skipped this round: %s", error)
        return []

    drifted = []
    for deployment, tag, committed_by in readings:
        if tag and committed_by is None:
            drifted.append(deployment.pk)
        if (deployment.drifted_tag, deployment.drifted_tag_committed_by_id) != (tag, committed_by and committed_by.pk):
            _flag(deployment, tag, committed_by)  # else flagged and audited already
    return drifted


def _committed_by(deployment, tag):
    """The promotion whose commit wrote `tag`, when it is the portal's last commit in the place and came
    after the deployment that runs there (its sync failed, or it was a rollback that did not finish);
    None when someone else wrote it, going back to an older commit of the portal's included."""
    last = Promotion.objects.select_related("release").last_committed_in(
        deployment.service_id, deployment.environment_id
    )
    if last is not None and last.release.version == tag and last.committed_at > deployment.deployed_at:
        return last
    return None


def _flag(deployment, tag, committed_by):
    """Write on the deployment the tag its values file holds where it differs ("" where it does not),
    and whether the portal's own commit wrote it; audit what is drift: a tag written outside the
    portal, once when it is found and once when it ends.

    The row read before may be stale: another reconciler (two run for a moment in a rolling update)
    may have written it meanwhile, or a promotion replaced it (record() locks it to do so, and clears
    it). It is locked and read again: one change is audited once, and a deployment no longer current
    is not flagged; the next round compares the file with the one that replaced it.
    """
    path = deployment.service.values_path(deployment.environment)
    version = deployment.release.version
    with transaction.atomic():
        audit.lock_chain()  # the chain before rows, as every writer takes them
        was = (
            Deployment.objects.select_for_update()
            .filter(pk=deployment.pk, replaced_at__isnull=True)
            .values_list("drifted_tag", "drifted_tag_committed_by")
            .first()
        )
        if was is None or was == (tag, committed_by and committed_by.pk):
            return
        was_tag, was_committed_by = was
        Deployment.objects.filter(pk=deployment.pk).update(
            drifted_tag=tag, drifted_tag_committed_by=committed_by, drift_detected_at=timezone.now() if tag else None
        )
        if tag and committed_by is None:
            action, message = AuditAction.DRIFT_DETECTED, f"{path} says {tag!r} but the portal deployed {version}"
            data = {"expected": version, "found": tag}
        elif was_tag and was_committed_by is None:
            action, data = AuditAction.DRIFT_RESOLVED, {"expected": version, "was": was_tag}
            if tag:
                # The same tag: flagged before the check knew the portal's own commits (an upgrade).
                ended = (
                    f"{path}: {was_tag!r} was taken for a change made outside the portal."
                    if was_tag == tag
                    else f"{path} no longer says {was_tag!r}."
                )
                message = f"{ended} {drift.portal_commit(path, tag, version, committed_by)}"
                data["committed_by"] = committed_by.pk
            else:
                message = f"{path} says {version} again, as the portal deployed (it said {was_tag!r})"
        else:
            return  # the portal's own commit came or went: its promotion's events say so
        audit.record(
            action,
            actor=PIPELINE,
            service=deployment.service.name,
            environment=deployment.environment.name,
            version=version,
            message=message[:MESSAGE_LENGTH],
            data=data,
        )


def _tag_in(repository, path, key):
    """The tag the values file holds, or what stands in for it, cut to what `drifted_tag` holds.

    A file a person broke (missing, not YAML, not UTF-8) or a tag longer than any build's is a drift
    to flag and audit once: an error here would end the drift check on every round, and a value
    compared uncut with the one stored cut would be audited again on every round.
    """
    try:
        tag = values.read_value(repository.read(path), key, path) or NO_TAG
    except FileNotFoundError:
        tag = f"(missing file {path})"
    except values.ValuesFileError as error:
        tag = f"(unreadable: {error})"
    return tag[:DRIFTED_TAG_LENGTH]


def refresh_argocd_health(now=None):
    """Ask Argo CD for the health of every application in one request, and write on each place's
    current deployment the health that changed. Returns the deployments written.

    Only a change is written (releases/argocd_health.py, as a soak's sample writes what it saw). Argo CD
    out of reach or refusing is logged and the board keeps the health last seen; so does a place whose
    application Argo CD does not list, or lists out of sync: what runs there is then not what the
    GitOps branch says (an `argocd app rollback`, a change not synced yet), and its health may be
    another release's. Applications of no place are not looked at.
    """
    argocd = ArgoCD.from_settings()
    if argocd is None:
        return []
    rolling_out = Promotion.objects.filter(
        service_id=OuterRef("service_id"), environment_id=OuterRef("environment_id"), state__in=ROLLING_OUT
    )
    places = {}
    for deployment in (
        Deployment.objects.current().exclude(Exists(rolling_out)).select_related("service", "environment", "release")
    ):
        application = deployment.service.argocd_app(deployment.environment)
        if application:
            places.setdefault(application, []).append(deployment)
    if not places:
        return []
    try:
        listed = argocd.list_applications(fields=["metadata.name", "status.health.status", "status.sync.status"])
    except ArgoCDError as error:
        logger.warning("Argo CD health not refreshed this round (%s); the board keeps the health last seen", error)
        return []
    statuses = {item["metadata"]["name"]: ApplicationStatus.from_application(item) for item in listed}
    unlisted = sorted(set(places) - set(statuses))
    if unlisted:
        logger.warning(
            "Argo CD lists no application %s (it is missing, or the portal's token may not read it); "
            "the board keeps the health last seen there",
            ", ".join(unlisted),
        )
    out_of_sync = sorted(
        name for name in places if name in statuses and statuses[name].sync_status != SyncStatus.SYNCED
    )
    if out_of_sync:
        logger.info(
            "Argo CD reports %s out of sync: what runs there may not be what the portal deployed, so the board "
            "keeps the health last seen there",
            ", ".join(out_of_sync),
        )
    reported = {name: status.health for name, status in statuses.items() if status.sync_status == SyncStatus.SYNCED}
    now = now or timezone.now()
    changed = []
    for application, health in sorted(reported.items()):
        for deployment in places.get(application, []):
            if argocd_health.note(deployment, health, now):
                changed.append(deployment.pk)
    return changed


def builds_behind_first():
    """{deployment: (builds behind the first environment's deployment of its service, that deployment)}
    for every current deployment outside the first environment: one query."""
    first = Environment.objects.first_in_pipeline()
    if first is None:
        return {}
    newer = Release.objects.filter(pk=OuterRef("release_id")).order_by().annotate(newer=board.newer_release_count())
    deployments = list(
        Deployment.objects.current()
        .select_related("service", "environment", "release")
        .annotate(newer=Subquery(newer.values("newer")[:1]))
    )
    leaders = {d.service_id: d for d in deployments if d.environment_id == first.pk}
    behind = {}
    for deployment in deployments:
        leader = leaders.get(deployment.service_id)
        if leader is not None and deployment.environment_id != first.pk:
            behind[deployment] = (deployment.newer - leader.newer, first)
    return behind


def detect_far_behind(now=None):
    """Flag each place more builds behind the first environment than its environment's drift_alert_builds:
    audited and said in Slack once per crossing; the flag goes when it is back within the limit (or the
    limit is turned off), audited once too. The crossing is the place's: a promotion there carries the flag
    to the new deployment (Deployment.objects.record), so a newer build ends it here and one still far
    behind continues it. Returns the deployments flagged now."""
    now = now or timezone.now()
    flagged = []
    for deployment, (behind, first) in builds_behind_first().items():
        threshold = deployment.environment.drift_alert_builds
        far = threshold > 0 and behind > threshold
        if not far:
            if deployment.far_behind_since:
                _back_within_limit(deployment, behind, first, threshold)
            continue
        if deployment.far_behind_since:
            continue  # flagged at this crossing already
        with transaction.atomic():
            audit.lock_chain()
            # Still current: a promotion since the round read it started the new deployment unflagged,
            # and the next round flags that one, the place's crossing, once.
            flagging = Deployment.objects.filter(
                pk=deployment.pk, replaced_at__isnull=True, far_behind_since__isnull=True
            )
            if not flagging.update(far_behind_since=now):
                continue
            audit.record(
                AuditAction.DRIFT_FAR_BEHIND,
                actor=PIPELINE,
                service=deployment.service.name,
                environment=deployment.environment.name,
                version=deployment.release.version,
                message=f"{_runs_behind(deployment, behind, first)} (more than {threshold})",
                data={"builds_behind": behind, "behind": first.name, "threshold": threshold},
            )
            alerts.enqueue_far_behind_alert(deployment, behind, first)
        flagged.append(deployment.pk)
    return flagged


def _runs_behind(deployment, behind, first):
    """How the far-behind events begin: "nexo-be in production runs 2026.03.7, 29 builds behind develop"."""
    where = f"{deployment.service.name} in {deployment.environment.name} runs {deployment.release.version}"
    return f"{where}, {drift.builds_behind(behind, first.name)}"


def _back_within_limit(deployment, behind, first, threshold):
    """Take the far-behind flag down and audit it: the log says when the crossing ended, not only when
    it began. The update decides, as for the flag: a second reconciler that read the same flag (two run
    for a moment in a rolling update), or a round that read a deployment replaced since (the flag moved
    to the new one), takes down nothing and records nothing."""
    since = deployment.far_behind_since
    with transaction.atomic():
        audit.lock_chain()
        if not Deployment.objects.filter(pk=deployment.pk, far_behind_since=since).update(far_behind_since=None):
            return
        ended = f"back within {threshold}" if threshold > 0 else "far-behind alerts are turned off there"
        audit.record(
            AuditAction.DRIFT_BACK_WITHIN_LIMIT,
            actor=PIPELINE,
            service=deployment.service.name,
            environment=deployment.environment.name,
            version=deployment.release.version,
            message=f"{_runs_behind(deployment, behind, first)}: {ended}",
            data={"builds_behind": behind, "behind": first.name, "threshold": threshold, "far_behind_since": since},
        )
