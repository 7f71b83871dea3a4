"""The jobs that carry a promotion through the pipeline, and how a worker runs them.

RQ delivers a `StepRun` (releases/steps.py); `run_step` claims it, holds its lease while the
step works and ends it. Each step takes a promotion id, loads fresh state, returns quietly if
the promotion has moved on (so running one twice does no harm), does its work and calls the
transition for it. What goes wrong is told apart:

- a transient error (a Git remote, Redis or the database out of reach: `TRANSIENT`) ends the run
  as `retry` and the step runs again after a backoff, for up to PIPELINE_RETRY_SECONDS in a row;
  only then does the promotion fail, saying for how long it tried;
- any other exception is a crash: the step runs again, and PIPELINE_MAX_CRASHES crashes in a row
  fail the promotion with the error;
- a refusal the step itself judges (a values file that cannot be changed, Argo CD's verdict)
  fails the promotion through its transition, as before.

RQ delivers the alerts and notices the outbox owes as well (releases/notices.py): `deliver_notice`
sends one with the sender of its kind.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, transaction
from django.utils import timezone
from redis.exceptions import RedisError

from audit import log as audit
from environments.argocd import ArgoCD, ArgoCDDeployFailed, ArgoCDError, ArgoCDRefused, ArgoCDTimeout
from nexo_portal.lib import context, metrics, tracing
from nexo_portal.lib.errors import Unavailable

from . import (
    alerts,
    approval_notices,
    argocd_health,
    image_gate,
    notices,
    policy,
    pull_requests,
    steps,
    transitions,
    verification,
)
from .gitops import message as gitops_message
from .gitops import values
from .gitops.github import GitHubError, GitHubUnavailable
from .gitops.repo import GitOpsError, GitOpsRepository, contains_commit
from .models import NoticeKind, Promotion, PromotionState, RunStatus, Step, StepRun
from .policy import PromotionError

logger = logging.getLogger(__name__)

TRANSIENT = (Unavailable, RedisError, OperationalError, InterfaceError)
# The step a promotion fails at, by the step that could not go on.
FAILED_STEP = {Step.COMMIT: "commit", Step.SYNC: "sync", Step.VERIFY: "verification", Step.PULL_REQUEST: "commit"}


# --- running a step -------------------------------------------------------------------------------------


def run_step(run_id):
    """The RQ job: claim the run, do its step under a lease, end the run with what happened."""
    run = steps.claim(run_id)
    if run is None:
        return
    context.bind(promotion_id=run.promotion_id)
    tracing.annotate(**{"nexo.promotion_id": run.promotion_id, "nexo.step": run.step})
    step = STEPS[run.step]
    try:
        with steps.Lease(run):
            step(run.promotion_id)
    except TRANSIENT as error:
        metrics.PIPELINE_STEPS.labels(step=run.step, outcome=RunStatus.RETRY).inc()
        _after_transient_error(run, error)
    except Exception as error:
        metrics.PIPELINE_STEPS.labels(step=run.step, outcome=RunStatus.CRASHED).inc()
        logger.exception("The %s step of promotion %s crashed", run.step, run.promotion_id)
        _after_crash(run, _last_line(error))
    else:
        metrics.PIPELINE_STEPS.labels(step=run.step, outcome=RunStatus.DONE).inc()
        steps.finish(run, RunStatus.DONE)


def _last_line(error):
    return f"{type(error).__name__}: {error}".strip().splitlines()[0][:500]


def _after_transient_error(run, error):
    """Try the step again after a backoff, unless it has been failing for too long already."""
    try:
        with transaction.atomic():
            if not steps.finish(run, RunStatus.RETRY, _last_line(error)):
                return  # the promotion moved on meanwhile
            resume(
                run.promotion_id,
                troubled_since=run.troubled_since or run.started_at,
                reason=str(error),
                wait_at_least=getattr(error, "retry_after", None),
            )
    except (DatabaseError, InterfaceError) as unreachable:
        # The database itself is out of reach: the run stays running until its lease expires, and
        # the reconciler reads here that it was not a crash.
        steps.note_interruption(run, unreachable)


def _after_crash(run, error):
    try:
        with transaction.atomic():
            if steps.finish(run, RunStatus.CRASHED, error):
                resume(run.promotion_id)
    except (DatabaseError, InterfaceError) as unreachable:
        steps.note_interruption(run, unreachable)


def end_abandoned(run, now=None):
    """The reconciler found the run's lease expired: its worker died (or lost the database)."""
    interrupted = steps.interruption(run)
    with transaction.atomic():
        expired = now or timezone.now()
        ended = StepRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING, lease_expires_at__lt=expired)
        if interrupted:
            status, error = RunStatus.RETRY, f"interrupted: {interrupted}"
        else:
            status = RunStatus.CRASHED
            error = f"its worker {run.worker} stopped renewing its lease (killed, or lost its connections)"
        if not ended.update(status=status, error=error, finished_at=timezone.now(), lease_expires_at=None):
            return False
        if status == RunStatus.RETRY:
            resume(run.promotion_id, troubled_since=run.troubled_since or run.started_at, reason=interrupted)
        else:
            resume(run.promotion_id)
    return True


def resume(promotion_id, *, troubled_since=None, reason="", wait_at_least=None):
    """Schedule the step the promotion's state needs, unless it owes no work or has tried too long.

    `troubled_since`: the start of an unbroken series of transient errors (None after a crash or
    a success); past PIPELINE_RETRY_SECONDS the promotion fails. PIPELINE_MAX_CRASHES crashes of
    its step in a row fail it too. `wait_at_least`: the seconds the other side asked us to wait
    (a rate limit); the step does not run sooner, whatever the backoff says.
    """
    with transaction.atomic():
        return _resume(promotion_id, troubled_since, reason, wait_at_least)


def _resume(promotion_id, troubled_since, reason, wait_at_least=None):
    promotion = (
        Promotion.objects.select_for_update(of=("self",)).select_related("environment").filter(pk=promotion_id).first()
    )
    step = transitions.step_owed(promotion) if promotion else None
    if step is None or StepRun.objects.filter(promotion_id=promotion_id).open().exists():
        return None
    now = timezone.now()
    crashes = steps.consecutive(promotion_id, step, RunStatus.CRASHED)
    if crashes >= settings.PIPELINE_MAX_CRASHES:
        last = StepRun.objects.filter(promotion_id=promotion_id, step=step).order_by("-created_at", "-id").first()
        error = f"The {step} step crashed {crashes} times in a row; the last time: {last.error}. See the worker's log."
        _unless_moved_on(transitions.fail, promotion, FAILED_STEP[step], error)
        return None
    if troubled_since and now - troubled_since > timedelta(seconds=settings.PIPELINE_RETRY_SECONDS):
        minutes = round((now - troubled_since).total_seconds() / 60)
        error = f"Still failing after {minutes} min of retries: {reason}"
        _unless_moved_on(transitions.fail, promotion, FAILED_STEP[step], error)
        return None
    tries = crashes or (steps.consecutive(promotion_id, step, RunStatus.RETRY) if troubled_since else 0)
    delay = max(steps.backoff(tries) if tries else 0, wait_at_least or 0)
    return steps.schedule(
        promotion_id, step, timedelta(seconds=delay) if delay else None, troubled_since=troubled_since
    )


# --- the steps ------------------------------------------------------------------------------------------


def _load(promotion_id, *states):
    try:
        promotion = Promotion.objects.select_related(*transitions.FIXED_RELATIONS).get(pk=promotion_id)
    except Promotion.DoesNotExist:
        promotion = None
    if promotion is None or promotion.state not in states:
        logger.info("Promotion %s is not %s any more; nothing to do", promotion_id, "/".join(states))
        return None
    return promotion


def open_pull_request(promotion_id):
    """Delivered by pull request: push the promotion's branch and open its pull request while it awaits approval."""
    promotion = _load(promotion_id, PromotionState.AWAITING_APPROVAL)
    if promotion is None or promotion.pr_number:
        return
    try:
        pull_requests.open_for(promotion)
    except GitHubUnavailable:
        raise  # tried again by run_step, with backoff
    except (pull_requests.PullRequestError, GitHubError) as error:
        # GitHubError: GitHub refused the portal (a revoked token, no access to the repository): its setup.
        _unless_moved_on(
            transitions.fail, promotion, "commit", str(error), from_states=[PromotionState.AWAITING_APPROVAL]
        )
    except PromotionError as moved_on:
        logger.info("Promotion %s moved on before its pull request was recorded: %s", promotion_id, moved_on)


def merge_pull_request(promotion):
    """Delivered by pull request, the commit step merges the approved pull request (docs/pull-requests.md)."""
    try:
        promotion, sha = pull_requests.merge(promotion)
    except PromotionError as moved_on:
        logger.info("Promotion %s moved on before its merge: %s", promotion.pk, moved_on)
        return
    except policy.HeldByFreeze as held:
        _wait_for_freeze_end(promotion, held.freeze, promotion.state)
        return
    except GitHubUnavailable:
        raise  # tried again by run_step, with backoff
    except (pull_requests.PullRequestError, GitHubError) as error:
        states = [PromotionState.APPROVED, PromotionState.COMMITTING]
        _unless_moved_on(transitions.fail, promotion, "commit", str(error), from_states=states)
        return
    if promotion.state == PromotionState.APPROVED:  # GitHub had merged it already
        promotion = transitions.start_commit(promotion)
    message = f"{pull_requests.title(promotion)}\n\nMerged pull request #{promotion.pr_number}: {promotion.pr_url}\n"
    _unless_moved_on(transitions.mark_committed, promotion, sha, message, merged=True)


def commit_promotion(promotion_id):
    """Write the new image tag into the values file, commit with the trailers, push (or, delivered by
    pull request, merge the pull request)."""
    promotion = _load(promotion_id, PromotionState.APPROVED, PromotionState.COMMITTING)
    if promotion is None:
        return
    if promotion.state == PromotionState.APPROVED:  # nothing written or merged yet: the freeze, the image
        if _waits_for_freeze(promotion):
            return
        try:
            image_gate.check(promotion)  # RegistryUnavailable: tried again by run_step, with backoff
        except image_gate.ImageRefused as refusal:
            _unless_moved_on(transitions.fail, promotion, "image", str(refusal), from_states=[PromotionState.APPROVED])
            return
    if promotion.environment.delivers_by_pull_request:
        merge_pull_request(promotion)
        return
    # An approved promotion is marked committing while git writes the commit, and nothing is
    # pushed before that is saved. A job that finds it committing already is a retry: an earlier
    # attempt may have pushed, so it looks for its own commit first.
    resumed = promotion.state == PromotionState.COMMITTING
    service, environment, release = promotion.service, promotion.environment, promotion.release
    path, key = service.values_path(environment), service.image_tag_key
    approvers, held = promotion.approver_names(), {}

    def change(text):
        held["tag"] = values.read_value(text, key, path)  # what GitOps held before this commit
        return values.set_value(text, key, release.version, path)

    def message():
        # The audit chain's head as this commit is written, read once so mark_committed keeps the same message.
        if "audit_head" not in held:
            held["audit_head"] = audit.head()
        return gitops_message.promotion_message(
            promotion, approvers, values_held=held.get("tag"), audit_head=held["audit_head"]
        )

    owned = PromotionState.COMMITTING if resumed else PromotionState.APPROVED

    def before_push():
        # A freeze may have begun since the check above (the image gate and the fetch take time) or,
        # for a retried job, since the push that failed: nothing goes into a frozen environment.
        policy.raise_if_frozen(promotion)
        if not resumed:
            start_commit()

    def start_commit():
        nonlocal owned
        transitions.start_commit(promotion)
        owned = PromotionState.COMMITTING

    repository = GitOpsRepository()
    try:
        with repository.locked():
            sha = repository.commit_and_push(
                path,
                change,
                message,
                trailer=(gitops_message.PROMOTION_TRAILER, promotion.pk),
                since=promotion.requested_at - timedelta(days=1),
                look_for_trailer=resumed,
                before_push=before_push,
            )
            # A retried job may have found the commit an earlier attempt pushed, with the audit head
            # and previous version of its time, seconds or minutes ago: the promotion records what
            # Git holds, and when, so that the commit's stage does not take in the crash and the retry.
            written, pushed_at = repository.message_and_time_of(sha) if resumed else (message(), timezone.now())
    except PromotionError as moved_on:
        logger.info("Promotion %s moved on before its commit was pushed: %s", promotion_id, moved_on)
        return
    except policy.HeldByFreeze as held:
        _wait_for_freeze_end(promotion, held.freeze, owned)
        return
    except Unavailable as unreachable:
        _note_not_landed(promotion, unreachable)
        raise  # tried again by run_step, with backoff
    except (GitOpsError, values.ValuesFileError) as error:
        _note_not_landed(promotion, error)
        # Only from the state this job holds it in: a duplicate job that loaded it before another
        # one committed it must not fail what that one carried on.
        _unless_moved_on(transitions.fail, promotion, "commit", str(error), from_states=[owned])
        return
    _unless_moved_on(
        transitions.mark_committed, promotion, sha, written, committed_at=pushed_at, replaced=held.get("tag")
    )


def _note_not_landed(promotion, error):
    """A push known not to have landed (GitOpsError.not_landed): the promotion's page may then say that
    nothing was written, and does, should the promotion fail."""
    if getattr(error, "not_landed", False):
        transitions.note_push_not_landed(promotion)


def _waits_for_freeze(promotion):
    """A freeze that began after the approval (a worker down, a Git outage retried for minutes) keeps
    the commit out until it ends: the commit step is scheduled again for its end, sooner when the
    freeze is changed or deleted (steps.wake_commits_held_by_freezes)."""
    freeze = policy.freeze_holding(promotion)
    if freeze is None:
        return False
    _wait_for_freeze_end(promotion, freeze, PromotionState.APPROVED)
    return True


def _wait_for_freeze_end(promotion, freeze, state):
    """Schedule the commit step for the end of `freeze`, unless the promotion left `state` meanwhile.

    Committing too: a retried job whose earlier push failed (its commit not on the branch) waits as
    well, and looks for its commit by the trailer first when it runs again."""
    try:
        transitions.hold_commit_for_freeze(promotion, freeze, state=state)
    except PromotionError as moved_on:
        logger.info("Promotion %s moved on before its commit was held for a freeze: %s", promotion.pk, moved_on)


# A sync job fails a promotion only from syncing: one whose lease expired while it waited must not fail
# what the Argo CD Notifications event or another run of the step carried on meanwhile.
SYNCING = [PromotionState.SYNCING]


def sync_promotion(promotion_id):
    """Have Argo CD apply the commit and wait until it is Synced and Healthy."""
    promotion = _load(promotion_id, PromotionState.COMMITTED, PromotionState.SYNCING)
    if promotion is None:
        return
    argocd = ArgoCD.from_settings()
    promotion = transitions.mark_syncing(promotion, configured=argocd is not None)
    if argocd is None:
        transitions.mark_deployed(promotion)
        return
    service, environment = promotion.service, promotion.environment
    application = service.argocd_app(environment)
    auto_sync = environment.argocd_auto_sync
    includes = contains_commit(
        promotion.gitops_commit_sha, service.values_path(environment), service.image_tag_key, promotion.release.version
    )
    timeout = settings.ARGOCD_SYNC_TIMEOUT_SECONDS
    waiting = _SyncTrouble(promotion, timezone.now() + timedelta(seconds=timeout))
    try:
        status = argocd.wait_until_deployed(
            application,
            promotion.gitops_commit_sha,
            timeout=timeout,
            poll_seconds=settings.ARGOCD_POLL_SECONDS,
            auto_sync=auto_sync,
            # Argo CD reports the branch head it compared with, after a manual sync too: a later commit
            # (another service's promotion) that contains ours, Synced, runs ours, unless it put another
            # tag in our values file (a revert pushed since).
            includes=includes,
            on_retry=waiting.retrying,
            on_status=waiting.answered,
        )
    except ArgoCDRefused as refusal:
        # The path a rollback would take has just refused the portal: a hold says what to fix.
        _unless_moved_on(transitions.fail, promotion, "sync", str(refusal), roll_back=False, from_states=SYNCING)
        return
    except ArgoCDTimeout as timeout:
        # Unreachable or busy to the end (Argo CD, or the GitOps remote that would tell whether what it
        # runs contains ours): a rollback through them would meet the same; a hold says what happened.
        unanswered, overwritten, error = includes.unanswered, includes.overwritten, str(timeout)
        if unanswered:
            error += (
                f" The GitOps repository could not be read to tell whether {unanswered[:12]}, which Argo CD "
                f"reports, contains {promotion.gitops_commit_sha[:12]} ({includes.why_unanswered})."
            )
        if overwritten:
            # Someone outside the portal chose what runs: a rollback would commit over their choice.
            error += (
                f" Argo CD reports {overwritten[:12]}, which contains {promotion.gitops_commit_sha[:12]} but whose "
                f"values file names {includes.names_instead}, not this release's {promotion.release.version}: it was "
                "changed on the branch since (a revert, a tag written by hand)."
            )
        roll_back = timeout.last_error is None and not unanswered and not overwritten
        if roll_back and transitions.rolls_back_automatically(promotion, "sync"):
            error += _terminate_stuck_sync(argocd, application, promotion, includes)
        kept_because = TAKEN_OUT if overwritten else transitions.REFUSED_PATH
        _unless_moved_on(
            transitions.fail,
            promotion,
            "sync",
            error,
            roll_back=roll_back,
            from_states=SYNCING,
            kept_because=kept_because,
        )
        return
    except ArgoCDDeployFailed as failure:
        # Argo CD's last word on the place, which the reconciler leaves to this job while it syncs: where
        # the release came up Degraded its manifests run, and the board must not show what ran before
        # as Healthy.
        argocd_health.note_in_place(promotion.service, promotion.environment, failure.status.health, timezone.now())
        _unless_moved_on(
            transitions.fail,
            promotion,
            "sync",
            str(failure),
            from_states=SYNCING,
            applied_health=failure.applied_health,
        )
        return
    except ArgoCDError as error:
        _unless_moved_on(transitions.fail, promotion, "sync", str(error), from_states=SYNCING)
        return
    _unless_moved_on(transitions.mark_deployed, promotion, health=status.health, argocd_sync_id=status.sync_id)


class _SyncTrouble:
    """While the sync step asks Argo CD again and again (out of reach, failing, busy with another
    operation), its run says so, which the promotion page shows as it shows the commit step's retries,
    and the log says when it began and ended: without it the page said only "Argo CD sync current"
    for up to ARGOCD_SYNC_TIMEOUT_SECONDS."""

    def __init__(self, promotion, deadline):
        self.promotion = promotion
        self.deadline = deadline
        self.since = None
        self.said = ""

    def retrying(self, error, delay):
        self.since = self.since or timezone.now()
        what, why = error.trouble
        note = (
            f"{what} since {timezone.localtime(self.since):%H:%M:%S} ({why}); asking again until "
            f"{timezone.localtime(self.deadline):%H:%M:%S}"
        )
        if note != self.said:  # once per trouble, not at every try
            self.said = note
            logger.warning("The sync of promotion %s waits: %s", self.promotion.pk, note)
            steps.note_trouble(self.promotion.pk, Step.SYNC, note)

    def answered(self, status):
        if self.since is None:
            return
        seconds = round((timezone.now() - self.since).total_seconds())
        logger.info("Argo CD answers again for promotion %s after %s s: %s", self.promotion.pk, seconds, self.said)
        self.since, self.said = None, ""
        steps.note_trouble(self.promotion.pk, Step.SYNC, "")


def _terminate_stuck_sync(argocd, application, promotion, includes):
    """Argo CD answered throughout but our sync did not finish in time (a hook job that never completes,
    pods that never schedule), and a rollback follows: ask Argo CD to terminate our sync if it still
    runs, or the rollback's sync would be refused behind it ("another operation is already in
    progress") until it timed out too. Where people decide (no automatic rollback), a long hook such as
    a database migration is theirs to stop. A sentence for the promotion's error."""
    if not Promotion.objects.filter(pk=promotion.pk, state=PromotionState.SYNCING).exists():
        return ""  # moved on meanwhile (the Argo CD Notifications event, another run of the step)
    try:
        # Still syncing, so no rollback of it exists yet: a later commit containing ours is not the rollback's.
        asked = argocd.terminate_sync(application, promotion.gitops_commit_sha, includes=includes)
    except ArgoCDError as error:
        logger.warning("Could not terminate the sync of %s for promotion %s: %s", application, promotion.pk, error)
        return f" Its sync may still be running in Argo CD, which could not be asked to terminate it: {error}"
    if not asked:
        return ""
    logger.info("Asked Argo CD to terminate the sync of %s for promotion %s at its deadline", application, promotion.pk)
    return " Argo CD was asked to terminate its sync, still running, so that the rollback can sync."


def _unless_moved_on(transition, promotion, *args, **kwargs):
    """Apply a step's outcome, unless the promotion moved on meanwhile (an Argo CD Notifications
    event during a sync; a cancellation, or another job for the same promotion, during a commit)."""
    try:
        transition(promotion, *args, **kwargs)
    except PromotionError as moved_on:
        logger.info("Promotion %s moved on during the sync: %s", promotion.pk, moved_on)


def verify_promotion(promotion_id):
    """Take one round of samples; at the end of the window, give the verdict. Reschedules itself."""
    promotion = _load(promotion_id, PromotionState.DEPLOYED, PromotionState.VERIFYING)
    if promotion is None:
        return
    if promotion.state == PromotionState.DEPLOYED:
        promotion = transitions.mark_verifying(promotion, configured=verification.is_configured(promotion))
    if verification.take_round(promotion) is None:
        return  # stopped, or given its verdict by another run, while the round was observed
    with audit.chain_transaction():
        # Decided on the promotion as it is now, locked: another run of the step (its lease expired
        # while it sampled) may have stored a round, extended the soak or given the verdict since
        # this one loaded it, and none may store a round or decide while this one does.
        promotion = transitions.locked_in(promotion, PromotionState.VERIFYING)
        if promotion is not None:
            _decide_soak(promotion)


def _decide_soak(promotion):
    passed_limits = verification.limits_passed(promotion)
    if passed_limits:
        # Fail fast: the rest of the window cannot undo a limit passed.
        _fail_soak(promotion, "; ".join(passed_limits))
        return
    now = timezone.now()
    if now < promotion.verdict_at:
        steps.schedule(promotion.pk, Step.VERIFY, verification.next_round_in(promotion, now))
        return
    result = verification.verdict(promotion)
    if result.extend_by:
        promotion = transitions.extend_soak(promotion, result.extend_by, result.summary)
        steps.schedule(promotion.pk, Step.VERIFY, verification.next_round_in(promotion, timezone.now()))
        return
    if result.passed:
        transitions.mark_verified(promotion, result.summary)
    else:
        _fail_soak(promotion, result.summary)


UNMEASURED = "as the soak could not measure it, which says nothing against it"
TAKEN_OUT = "as something outside the portal made Argo CD run another revision, which a rollback would sync over"


def _fail_soak(promotion, error):
    """A soak that found the release failing is rolled back where the policy says so; one that found
    another revision running (verification.found_another_revision) or could not measure the release
    (verification.found_nothing_against) is held instead."""
    if verification.found_another_revision(promotion):
        transitions.fail(promotion, "verification", error, roll_back=False, kept_because=TAKEN_OUT)
    elif verification.found_nothing_against(promotion):
        transitions.fail(promotion, "verification", error, roll_back=False, kept_because=UNMEASURED)
    else:
        transitions.fail(promotion, "verification", error)


STEPS = {
    Step.COMMIT: commit_promotion,
    Step.SYNC: sync_promotion,
    Step.VERIFY: verify_promotion,
    Step.PULL_REQUEST: open_pull_request,
}


# --- alerts and notices ---------------------------------------------------------------------------------

# What sends each kind of notice: called with the notice's arguments, it returns nothing once the
# notice is taken, or the refusal that retrying will not change.
NOTICE_SENDERS = {
    NoticeKind.FAILURE_ALERT: alerts.send_failure_alert,
    NoticeKind.AUDIT_CHAIN_ALERT: alerts.send_audit_chain_alert,
    NoticeKind.DISCARDED_APPROVALS: alerts.send_discarded_approvals_notice,
    NoticeKind.SLO_BREACH: alerts.send_slo_breach_alert,
    NoticeKind.FAR_BEHIND: alerts.send_far_behind_alert,
    NoticeKind.APPROVAL_REQUEST: approval_notices.notify_awaiting,
    NoticeKind.APPROVAL_UPDATE: approval_notices.update_message,
    NoticeKind.APPROVAL_REMINDER: approval_notices.remind,
}


def deliver_notice(notice_id):
    """The RQ job: send one notice the outbox owes, unless it is sent or being sent already."""
    notices.deliver(notice_id, NOTICE_SENDERS)
