"""The promotion state machine: the only code that changes a promotion's state.

Every transition locks the promotion row, checks its rule, saves, records the audit event
and schedules the next step (a `StepRun`, handed to RQ once the transaction commits). Pages, admin actions, the API
and the RQ jobs all call these functions. Refusals raise `PromotionError` with a message
for the person who asked.

    awaiting_approval → approved → committing → committed → syncing → deployed → verifying → verified
           ↘ rejected / cancelled / superseded             any active state ↘ failed
    verified or failed → rolled_back (when a rollback takes its release out)
"""

import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, prefetch_related_objects
from django.utils import timezone
from redis.exceptions import RedisError
from rq import Retry

from audit import log as audit
from audit.models import AuditAction
from nexo_portal.lib import context, queues
from nexo_portal.lib.queries import one_or_none

from . import alerts, approval_notices, metrics, policy, steps, verification
from .models import (
    PIPELINE,
    Approval,
    ApprovalDecision,
    Deployment,
    Hold,
    Promotion,
    PromotionKind,
    PromotionState,
    PullRequestState,
    Release,
    RunStatus,
    Step,
    StepStatus,
)
from .policy import PromotionError

logger = logging.getLogger(__name__)

# Which step carries a promotion forward from each state (releases/steps.py); any other state owes no work.
JOB_FOR_STATE = {
    PromotionState.APPROVED: Step.COMMIT,
    PromotionState.COMMITTING: Step.COMMIT,
    PromotionState.COMMITTED: Step.SYNC,
    PromotionState.SYNCING: Step.SYNC,
    PromotionState.DEPLOYED: Step.VERIFY,
    PromotionState.VERIFYING: Step.VERIFY,
}

__all__ = ["PromotionError"]


def step_owed(promotion):
    """The step that carries `promotion` forward now, or None: JOB_FOR_STATE, and for a promotion
    delivered by pull request that awaits approval without one, opening it."""
    if (
        promotion.state == PromotionState.AWAITING_APPROVAL
        and promotion.environment.delivers_by_pull_request
        and not promotion.pr_number
    ):
        return Step.PULL_REQUEST
    return JOB_FOR_STATE.get(promotion.state)


# What a promotion is of and who asked for it: fixed when it is created.
FIXED_RELATIONS = ("release", "service", "environment", "requested_by", "previous_release")


def _locked(promotion):
    """The promotion (given as itself or its id), fresh and locked for the rest of the transaction
    (the audit chain's lock first)."""
    audit.lock_chain()
    promotion = (
        Promotion.objects.select_for_update(of=("self",))
        .select_related(*FIXED_RELATIONS)
        .get(pk=getattr(promotion, "pk", promotion))
    )
    context.bind_promotion(promotion)
    return promotion


def locked_in(promotion, *states):
    """For a step about to decide on `promotion` from what others may have changed meanwhile (the
    verify step's verdict): fresh and locked for the rest of the caller's transaction, the chain's
    lock first, or None when it has left `states`."""
    promotion = _locked(promotion)
    return promotion if promotion.state in states else None


def _record(action, promotion, actor, message, **data):
    # The log line that lets a promotion be followed in Loki-style tools, with the context's ids.
    logger.info("%s: %s", action, message)
    audit.record(
        action,
        actor=actor if actor is not None else PIPELINE,
        service=promotion.service.name,
        environment=promotion.environment.name,
        version=promotion.release.version,
        promotion=promotion,
        message=message,
        data=data,
    )


def _describe(promotion):
    return f"{promotion.service.name} {promotion.release.version} → {promotion.environment.name}"


def _expect(promotion, *states):
    if promotion.state not in states:
        allowed = " or ".join(PromotionState(state).label.lower() for state in states)
        raise PromotionError(f"{_describe(promotion)} is {promotion.get_state_display().lower()}, not {allowed}.")


# --- requesting ------------------------------------------------------------------------------


@dataclass
class _Request:
    """A request for a release in an environment, with what runs and what waits there."""

    release: Release
    environment: object
    actor: object
    kind: str = PromotionKind.MANUAL
    is_emergency: bool = False
    reason: str = ""
    rolls_back: Promotion | None = None
    expected: str | None = None

    def __post_init__(self):
        # The chain's lock, held by the caller's transaction, serialises every request: no two can
        # see the place empty. The promotion row is locked too, for its own transitions.
        self.service = self.release.service
        self.current = Deployment.objects.running(self.service, self.environment)
        self.active = one_or_none(  # one_active_promotion_per_service_environment
            Promotion.objects.select_for_update(of=("self",))
            .select_related("release")
            .filter(service=self.service, environment=self.environment)
            .active()
        )
        if self.active:
            # Its service and environment are the ones asked for: loaded already, not joined again.
            self.active.service, self.active.environment = self.service, self.environment
            # Its approvals matter only while it waits for them (to supersede it or refuse to); a
            # promotion that runs already refuses the request before they are read.
            if self.active.state == PromotionState.AWAITING_APPROVAL:
                prefetch_related_objects([self.active], "approvals__user")

    def why_not(self):
        """Every rule of a request, in one place: who asks, freezes, holds, the release's history, what waits."""
        service, environment, kind, active = self.service, self.environment, self.kind, self.active
        refusal = policy.why_not_request(
            self.actor, service, environment, kind=kind, is_emergency=self.is_emergency, reason=self.reason
        )
        if refusal:
            return refusal
        freeze = environment.active_freeze()
        if freeze and not self.is_emergency and kind != PromotionKind.ROLLBACK:
            return policy.why_not_request_while_frozen(self.actor, service, environment, freeze)
        if kind == PromotionKind.AUTO:
            if "hold_reason" in environment.__dict__:  # read with the environment (Hold.objects.reason_in_each)
                held = environment.hold_reason
            else:
                hold = Hold.objects.active().filter(service=service, environment=environment).first()
                held = hold.reason if hold else None
            if held:
                return (
                    f"Automatic promotions of {service.name} into {environment.name} are on hold ({held}). "
                    "Lift the hold to resume them; a person may still request a promotion."
                )
        refusal = policy.why_not_enter(
            self.release, environment, kind, self.is_emergency, self.rolls_back, self.current, self.expected
        )
        if refusal:
            return refusal
        if kind == PromotionKind.ROLLBACK:
            refusal = policy.why_not_unapprovable_rollback(self.actor, environment)
            if refusal:
                return refusal
        if active and active.state != PromotionState.AWAITING_APPROVAL:
            return (
                f"{_describe(active)} is already {active.get_state_display().lower()} (promotion #{active.pk}); "
                f"{policy.until_it_finishes(active)} before requesting another one."
            )
        is_rollback = kind == PromotionKind.ROLLBACK
        if active and (active.release_id, active.is_rollback, active.is_emergency) == (
            self.release.pk,
            is_rollback,
            self.is_emergency,
        ):
            # Asking again for what already waits (a second click, a retried call) would only throw
            # away the approvals it has.
            return (
                f"{_describe(active)} is already awaiting approval (promotion #{active.pk}, "
                f"{policy.approvals_given(active)}/{policy.approvals_required(active)}); approve or cancel it instead."
            )
        if active:
            return policy.why_not_supersede(active, self.actor)
        return None

    def create(self):
        actor, environment, active = self.actor, self.environment, self.active
        is_person = policy.is_person(actor)
        promotion = Promotion(
            release=self.release,
            service=self.service,
            environment=environment,
            kind=self.kind,
            requested_by=actor if is_person else None,
            requested_via="" if is_person else audit.actor_name(actor) if actor else PIPELINE,
            accountable_requester_id=policy.accountable_person_id(actor),
            is_emergency=self.is_emergency,
            emergency_reason=self.reason.strip() if self.is_emergency else "",
            rolls_back=self.rolls_back,
            previous_release=self.current.release if self.current else None,
        )
        discarded = []
        if active:
            # A newer request replaces the one awaiting approval; it is recorded, not lost. Approvals it
            # had (only whoever may cancel it gets this far then) are named in the audit and told.
            discarded = [
                approval for approval in active.approvals.all() if approval.decision == ApprovalDecision.APPROVE
            ]
            active.state = PromotionState.SUPERSEDED
            active.finished_at = timezone.now()
            steps.close(active.pk)
            active.save(update_fields=["state", "finished_at", "updated_at"])
            metrics.promotion_ended(active)
        needs_approval = policy.approvals_required(promotion) > 0
        promotion.state = PromotionState.AWAITING_APPROVAL if needs_approval else PromotionState.APPROVED
        promotion.approved_at = None if needs_approval else timezone.now()
        promotion.save()
        if active:
            active.superseded_by = promotion
            active.save(update_fields=["superseded_by"])
            approvers = ", ".join(approval.user.get_username() for approval in discarded)
            _record(
                AuditAction.PROMOTION_SUPERSEDED,
                active,
                actor,
                f"{_describe(active)} superseded by promotion #{promotion.pk}"
                + (f"; the approvals of {approvers} were discarded" if discarded else ""),
                superseded_by=promotion.pk,
                discarded_approvals=[
                    {
                        "approver": approval.user.get_username(),
                        "approved_at": approval.created_at,
                        "comment": approval.comment,
                    }
                    for approval in discarded
                ],
            )
            if discarded:
                alerts.enqueue_discarded_approvals_notice(active)
            approval_notices.enqueue_update(active)
            close_pull_request_later(active, f"superseded by promotion #{promotion.pk}")

        previous = environment.previous()
        _record(
            AuditAction.PROMOTION_REQUESTED,
            promotion,
            actor,
            f"{_describe(promotion)} requested" + (" (break-glass)" if self.is_emergency else ""),
            from_environment=previous.name if previous else None,
            to_environment=environment.name,
            kind=self.kind,
            rollback=self.kind == PromotionKind.ROLLBACK,
            emergency=self.is_emergency,
            emergency_reason=promotion.emergency_reason,
            previous_version=promotion.previous_release.version if promotion.previous_release else None,
        )
        if needs_approval:
            approval_notices.enqueue_awaiting(promotion)
            if environment.delivers_by_pull_request:
                steps.schedule(promotion, Step.PULL_REQUEST, first=True)
        else:
            steps.schedule(promotion, Step.COMMIT, first=True)
        return promotion


@audit.chain_transaction()
def request_promotion(
    release,
    environment,
    actor,
    *,
    kind=PromotionKind.MANUAL,
    is_emergency=False,
    reason="",
    rolls_back=None,
    expected=None,
):
    """Ask for `release` to run in `environment`. `actor` is a user, a CI token, or None for the pipeline.
    `expected`: for a rollback, the version its requester saw running (policy.why_not_enter)."""
    request = _Request(release, environment, actor, kind, is_emergency, reason, rolls_back, expected)
    policy.ensure(request.why_not())
    return request.create()


def request_automatic_promotion(release, environment):
    """The pipeline asks for `release` in `environment` as CI registers it: (the promotion, None), or
    (None, why it waits) when a rule says not now (a freeze, a hold, something running there). The
    audit log says why too, and the build goes there when the place frees up if it is still the
    newest (promote_waiting)."""
    with audit.chain_transaction(savepoint=False):
        request = _Request(release, environment, None, PromotionKind.AUTO)
        refusal = request.why_not()
        if refusal is None:
            return request.create(), None
        _defer(release, environment, refusal)
        return None, str(refusal)


@audit.chain_transaction()
def request_rollback(service, environment, actor, *, release=None, rolls_back=None, expected=None):
    """Roll `service` back in `environment` to `release` (default: the last verified release there).

    What it takes out (unless `rolls_back` says) is the promotion of what runs there, as the pages show
    it (Deployment.objects.running), not the promotion deployed last: a release recorded running since
    without one (imported from the GitOps history) is refused, not rolled back past.
    `expected`: the version the requester saw running, a confirmation's or a caller's; when another
    one runs now, nothing is requested. What runs is read under the chain's lock, which every
    deployment takes too, so it cannot change between this check and the request.
    """
    if rolls_back is None:
        running = Deployment.objects.running(service, environment)
        policy.ensure(policy.why_not_roll_back_what_runs(service, environment, running))
        rolls_back = Promotion.objects.select_related("release").get(pk=running.promotion_id)
    if release is None:
        release = Release.objects.default_rollback_target(environment, rolls_back.release)
        if release is None:
            raise PromotionError(
                f"No release older than {rolls_back.release.version} was ever verified in {environment.name}; "
                "choose the release to roll back to."
            )
    return request_promotion(
        release, environment, actor, kind=PromotionKind.ROLLBACK, rolls_back=rolls_back, expected=expected
    )


# --- people deciding -------------------------------------------------------------------------


def _note_review(promotion, github_review_id):
    if github_review_id is not None and github_review_id not in promotion.pr_reviews_seen:
        promotion.pr_reviews_seen = [*promotion.pr_reviews_seen, github_review_id]
        promotion.save(update_fields=["pr_reviews_seen", "updated_at"])


@transaction.atomic
def approve(
    promotion, user, comment="", *, via=None, head_sha=None, github_review_id=None, token_creator_id=None, expected=None
):
    """`via`: where the decision was taken when not on the portal, for the audit (e.g. Slack and its channel).
    `token_creator_id`: who created the personal token it came through (policy._why_not_decide).
    `expected`: where the approvals stood on the confirmation it was given on (policy.approvals_standing);
    when they stand otherwise now, nothing is approved.

    Delivered by pull request, the approval binds to the pull request's head commit (`head_sha`: the
    one a GitHub review approved; default: the head the portal knows).
    """
    promotion = _locked(promotion)
    policy.ensure(policy.why_not_approve(promotion, user, token_creator_id, expected))
    Approval.objects.create(
        promotion=promotion,
        user=user,
        decision=ApprovalDecision.APPROVE,
        comment=comment.strip(),
        head_sha=head_sha or promotion.pr_head_sha,
        github_review_id=github_review_id,
    )
    _note_review(promotion, github_review_id)
    given, required = policy.approvals_given(promotion), policy.approvals_required(promotion)
    _record(
        AuditAction.PROMOTION_APPROVED,
        promotion,
        user,
        f"{_describe(promotion)} approved by {user.get_username()} ({given}/{required})"
        + (f" in {via['via']}" if via else ""),
        comment=comment.strip(),
        approvals=given,
        required=required,
        **({"via": via} if via else {}),
        **({"head": promotion.pr_head_sha, "pr_url": promotion.pr_url} if promotion.pr_number else {}),
    )
    approval_notices.enqueue_update(promotion)
    if given >= required:
        _quorum_reached(promotion)
    return promotion


def _quorum_reached(promotion):
    promotion.state = PromotionState.APPROVED
    promotion.approved_at = timezone.now()
    promotion.save(update_fields=["state", "approved_at", "updated_at"])
    metrics.stage_ended(promotion, "waiting_for_approval")
    steps.schedule(promotion, Step.COMMIT)


def approve_where_quorum_is_met():
    """Promotions waiting with as many approvals as their place now requires are approved, as the
    approval that reached the quorum would have done: the reconciler's answer to an environment whose
    required approvals were lowered (in the admin, mid-incident say). Otherwise they waited at "1/1"
    for a surplus approval, and whoever had approved no longer saw them in their list. Returns the
    promotions approved."""
    approved = []
    waiting = Promotion.objects.filter(state=PromotionState.AWAITING_APPROVAL).select_related(*FIXED_RELATIONS)
    for promotion in waiting.order_by("pk"):
        if policy.approvals_given(promotion) < policy.approvals_required(promotion):
            continue
        if promotion.environment.delivers_by_pull_request and not promotion.pr_number:
            continue  # its pull request is being opened: the merge needs it
        if policy.why_not_reach_quorum(promotion):
            continue  # frozen: approved by a later round once the freeze ends, as a person's would wait
        with transaction.atomic():
            promotion = _locked(promotion)
            given, required = policy.approvals_given(promotion), policy.approvals_required(promotion)
            if promotion.state != PromotionState.AWAITING_APPROVAL or given < required:
                continue
            _record(
                AuditAction.PROMOTION_APPROVED,
                promotion,
                None,
                f"{_describe(promotion)} approved ({given}/{required}): {promotion.environment.name} now requires "
                f"{required} approval{'s' if required != 1 else ''}",
                approvals=given,
                required=required,
            )
            approval_notices.enqueue_update(promotion)
            _quorum_reached(promotion)
            approved.append(promotion)
    return approved


@transaction.atomic
def reject(promotion, user, comment, *, via=None, github_review_id=None, token_creator_id=None):
    """`github_review_id`: a "changes requested" review on the promotion's pull request, in the reviewer's words.

    From someone who approved it, the rejection supersedes their approval: one decision per person, the
    latest, as on GitHub; the audit event keeps what the approval said (`withdrawn_approval`)."""
    promotion = _locked(promotion)
    policy.ensure(policy.why_not_reject(promotion, user, comment, token_creator_id))
    withdrawn = one_or_none(promotion.approvals.filter(user=user))  # their approval, superseded
    if withdrawn is not None:
        withdrawn.delete()
    Approval.objects.create(
        promotion=promotion,
        user=user,
        decision=ApprovalDecision.REJECT,
        comment=comment.strip(),
        head_sha=promotion.pr_head_sha,
        github_review_id=github_review_id,
    )
    _note_review(promotion, github_review_id)
    promotion.state = PromotionState.REJECTED
    promotion.finished_at = timezone.now()
    steps.close(promotion.pk)  # it owes no more work
    promotion.save(update_fields=["state", "finished_at", "updated_at"])
    metrics.promotion_ended(promotion)
    _record(
        AuditAction.PROMOTION_REJECTED,
        promotion,
        user,
        f"{_describe(promotion)} rejected by {user.get_username()}"
        + (f" in {via['via']}" if via else "")
        + ("; this withdraws the approval they gave earlier" if withdrawn else ""),
        comment=comment.strip(),
        **({"via": via} if via else {}),
        **({"withdrawn_approval": _approval_data(withdrawn)} if withdrawn else {}),
    )
    approval_notices.enqueue_update(promotion)
    close_pull_request_later(promotion, f"rejected by {user.get_username()}: {comment.strip()}")
    promote_waiting(promotion.service, promotion.environment)
    return promotion


def _approval_data(approval):
    return {
        "comment": approval.comment,
        "given_at": approval.created_at.isoformat(),
        "head": approval.head_sha,
        "github_review": approval.github_review_id,
    }


@transaction.atomic
def cancel(promotion, actor, comment=""):
    promotion = _locked(promotion)
    policy.ensure(policy.why_not_cancel(promotion, actor))
    if promotion.state == PromotionState.COMMITTING and not steps.withdraw(promotion.pk):
        # Held by a freeze when the policy looked, its retry claimed by a worker since (it ended).
        raise PromotionError(
            f"{_describe(promotion)}: its GitOps commit is being pushed right now; roll back once it is deployed."
        )
    promotion.state = PromotionState.CANCELLED
    promotion.finished_at = timezone.now()
    steps.close(promotion.pk)  # it owes no more work
    promotion.save(update_fields=["state", "finished_at", "updated_at"])
    metrics.promotion_ended(promotion)
    _record(
        AuditAction.PROMOTION_CANCELLED, promotion, actor, f"{_describe(promotion)} cancelled", comment=comment.strip()
    )
    approval_notices.enqueue_update(promotion)
    close_pull_request_later(
        promotion, f"cancelled by {audit.actor_name(actor)}" + (f": {comment.strip()}" if comment.strip() else "")
    )
    promote_waiting(promotion.service, promotion.environment)
    return promotion


# --- its pull request, delivered by pull request (releases/pull_requests.py) -----------------------


def close_pull_request_again(promotion, now):
    """The reconciler's retry for an ended promotion whose pull request is still open: dated `now`, so
    that the next retry waits its turn (pull_requests.CLOSE_AGAIN_EVERY), and its close queued again."""
    Promotion.objects.filter(pk=promotion.pk).update(updated_at=now)
    ended = f"promotion #{promotion.pk} is {promotion.get_state_display().lower()}"
    close_pull_request_later(promotion, ended + (f": {promotion.error}" if promotion.error else ""))


def close_pull_request_later(promotion, reason):
    """Once the end of `promotion` is committed, have a worker close its open pull request, saying why."""
    if promotion.pr_state != PullRequestState.OPEN:
        return
    promotion_id, text = promotion.pk, f"Closed by the Nexo Release Portal: {reason}"[:2000]

    def send():
        try:
            queues.get_queue().enqueue(
                "releases.pull_requests.close_on_github", promotion_id, text, retry=Retry(max=3, interval=[10, 60, 300])
            )
        except RedisError as error:
            logger.warning("Could not enqueue closing the pull request of promotion %s: %s", promotion_id, error)

    transaction.on_commit(send)


@transaction.atomic
def note_pull_request_merged(promotion):
    """GitHub says the pull request is merged (by a person, outside the portal's merge)."""
    promotion = _locked(promotion)
    promotion.pr_state = PullRequestState.MERGED
    promotion.save(update_fields=["pr_state", "updated_at"])
    return promotion


@transaction.atomic
def note_merged_after_the_end(promotion, merged_by, merge_sha):
    """Someone merged on GitHub the pull request of a promotion that had ended (before the portal could
    close it): the change is on the branch Argo CD follows, outside the policy. Said in the audit log;
    the drift check flags the values file."""
    promotion = _locked(promotion)
    if promotion.pr_state != PullRequestState.OPEN or promotion.is_active:
        return promotion
    promotion.pr_state = PullRequestState.MERGED
    promotion.save(update_fields=["pr_state", "updated_at"])
    _record(
        AuditAction.PULL_REQUEST_MERGED,
        promotion,
        None,
        f"{_describe(promotion)}: pull request #{promotion.pr_number} was merged on GitHub by {merged_by} as "
        f"{merge_sha[:7]} after the promotion was {promotion.get_state_display().lower()}: the change is on the "
        "branch Argo CD follows without the portal's promotion",
        pr_url=promotion.pr_url,
        merged_by=merged_by,
        merge_commit=merge_sha,
    )
    return promotion


@transaction.atomic
def mark_pull_request_closed(promotion):
    """The portal closed the pull request of a promotion that ended (the audit event of its end says why)."""
    promotion = _locked(promotion)
    if promotion.pr_state != PullRequestState.OPEN or promotion.is_active:
        return promotion
    promotion.pr_state = PullRequestState.CLOSED
    promotion.save(update_fields=["pr_state", "updated_at"])
    return promotion


@transaction.atomic
def schedule_pull_request(promotion):
    """Open the promotion's pull request (again) if it awaits approval without one and no step is on its way."""
    promotion = _locked(promotion)
    if step_owed(promotion) != Step.PULL_REQUEST or promotion.runs.filter(status__in=RunStatus.open()).exists():
        return None
    return steps.schedule(promotion, Step.PULL_REQUEST)


@transaction.atomic
def record_pull_request(promotion, *, number, url, branch, head_sha, notes=()):
    """The promotion's pull request is open at `head_sha`, the portal's own commit: approvals given
    before it was opened bind to that commit. `notes`: what GitHub refused on the way (a label, a
    reviewer team), said in the audit event."""
    promotion = _locked(promotion)
    _expect(promotion, PromotionState.AWAITING_APPROVAL, PromotionState.APPROVED, PromotionState.COMMITTING)
    promotion.pr_number, promotion.pr_url, promotion.pr_branch = number, url, branch
    promotion.pr_head_sha, promotion.pr_state = head_sha, PullRequestState.OPEN
    promotion.save(update_fields=["pr_number", "pr_url", "pr_branch", "pr_head_sha", "pr_state", "updated_at"])
    promotion.approvals.filter(head_sha="").update(head_sha=head_sha)
    _record(
        AuditAction.PULL_REQUEST_OPENED,
        promotion,
        None,
        f"{_describe(promotion)}: pull request #{number} opened from {branch}"
        + (f" ({'; '.join(notes)})" if notes else ""),
        pr_url=url,
        branch=branch,
        head=head_sha,
        notes=list(notes),
    )
    approval_notices.enqueue_update(promotion)  # the approvers' message links the pull request
    return promotion


@transaction.atomic
def record_orphan_pull_request(promotion, *, number, url, branch, head_sha):
    """The promotion ended (cancelled, superseded, rejected) while GitHub opened its pull request: it
    is recorded all the same and closed by a job, which the reconciler queues again until GitHub
    takes it (pull_requests.poll), so that nobody merges what the portal will not deploy."""
    promotion = _locked(promotion)
    if promotion.is_active or promotion.pr_state:
        return promotion
    promotion.pr_number, promotion.pr_url, promotion.pr_branch = number, url, branch
    promotion.pr_head_sha, promotion.pr_state = head_sha, PullRequestState.OPEN
    promotion.save(update_fields=["pr_number", "pr_url", "pr_branch", "pr_head_sha", "pr_state", "updated_at"])
    ended = promotion.get_state_display().lower()
    _record(
        AuditAction.PULL_REQUEST_OPENED,
        promotion,
        None,
        f"{_describe(promotion)}: pull request #{number} opened from {branch} as the promotion ended ({ended}); "
        "the portal closes it",
        pr_url=url,
        branch=branch,
        head=head_sha,
    )
    close_pull_request_later(promotion, f"promotion #{promotion.pk} was {ended} while this pull request was opened")
    return promotion


@transaction.atomic
def note_branch_pushed(promotion, head_sha, *, pushed_by=None, merging=False):
    """Someone else pushed to the promotion's pull request: approvals given on another commit are void
    (an approved promotion awaits approval again), and the audit log and the promotion page say so.

    `merging`: the merge step asks, for a pull request GitHub has not merged (its merge answered with
    an error, or the worker died before it asked): a committing promotion awaits approval again too.
    Nobody else may take a committing promotion back: its merge may be under way."""
    promotion = _locked(promotion)
    if head_sha == promotion.pr_head_sha or promotion.state not in _UNMERGED_STATES[merging]:
        return promotion
    voided = [
        approval
        for approval in promotion.approvals.select_related("user")
        if approval.decision == ApprovalDecision.APPROVE and approval.head_sha != head_sha
    ]
    names = [approval.user.get_username() for approval in voided]
    Approval.objects.filter(pk__in=[approval.pk for approval in voided]).delete()
    previous, promotion.pr_head_sha = promotion.pr_head_sha, head_sha
    fields = ["pr_head_sha", "updated_at"]
    if promotion.state in (PromotionState.APPROVED, PromotionState.COMMITTING):
        fields += _await_approval_again(promotion)
    promotion.save(update_fields=fields)
    who = pushed_by or "someone other than the portal"
    _record(
        AuditAction.PULL_REQUEST_PUSHED,
        promotion,
        None,
        f"{_describe(promotion)}: {who} pushed {head_sha[:7]} to pull request #{promotion.pr_number}"
        + (f"; the approvals of {', '.join(names)} were voided" if names else ""),
        pr_url=promotion.pr_url,
        previous_head=previous,
        head=head_sha,
        pushed_by=pushed_by or "",
        voided_approvals=[
            {"approver": approval.user.get_username(), "head": approval.head_sha, "comment": approval.comment}
            for approval in voided
        ],
    )
    approval_notices.enqueue_update(promotion)
    return promotion


@transaction.atomic
def refuse_foreign_head(promotion, head_sha, reason, *, pushed_by=None, commits=(), merging=False):
    """The pull request's head carries changes the portal did not write (pull_requests.check_head): the
    portal never merges it. The push is audited with its commits and the files they touch, and the
    promotion fails at its commit with `reason`, which closes the pull request with a comment saying so.
    `merging`: as for note_branch_pushed."""
    promotion = _locked(promotion)
    if promotion.state not in _UNMERGED_STATES[merging]:
        return promotion
    previous, promotion.pr_head_sha = promotion.pr_head_sha, head_sha
    promotion.save(update_fields=["pr_head_sha", "updated_at"])
    who = pushed_by or "someone other than the portal"
    _record(
        AuditAction.PULL_REQUEST_PUSHED,
        promotion,
        None,
        f"{_describe(promotion)}: {who} pushed {head_sha[:7]} to pull request #{promotion.pr_number}, carrying "
        "changes the portal did not write: it is not merged",
        pr_url=promotion.pr_url,
        previous_head=previous,
        head=head_sha,
        pushed_by=pushed_by or "",
        foreign_commits=[
            {"sha": commit.sha, "author": commit.author, "subject": commit.subject, "paths": commit.paths}
            for commit in commits
        ],
    )
    return fail(promotion, "commit", reason, from_states=_UNMERGED_STATES[merging])


# Where a pull request's approvals may still change: while it awaits approval or is approved, and, for
# the merge step alone (`merging`), while committing, before it asked GitHub to merge.
_UNMERGED_STATES = {
    False: (PromotionState.AWAITING_APPROVAL, PromotionState.APPROVED),
    True: (PromotionState.AWAITING_APPROVAL, PromotionState.APPROVED, PromotionState.COMMITTING),
}


def _await_approval_again(promotion):
    """An approved promotion not merged yet whose approvals no longer make the quorum: back to awaiting
    approval, its queued step ended. The fields to save."""
    promotion.state, promotion.approved_at, promotion.commit_started_at = PromotionState.AWAITING_APPROVAL, None, None
    steps.close(promotion.pk)
    return ["state", "approved_at", "commit_started_at"]


@transaction.atomic
def void_dismissed_reviews(promotion, dismissed_review_ids, *, merging=False):
    """Approvals that came from reviews since dismissed on GitHub no longer count: a promotion whose
    quorum they made, approved but not merged yet (the merge step reads the reviews last), awaits
    approval again; committing only when `merging` (as for note_branch_pushed)."""
    promotion = _locked(promotion)
    if promotion.state not in _UNMERGED_STATES[merging]:
        return promotion
    voided = list(promotion.approvals.filter(github_review_id__in=dismissed_review_ids).select_related("user"))
    if not voided:
        return promotion
    names = [approval.user.get_username() for approval in voided]
    Approval.objects.filter(pk__in=[approval.pk for approval in voided]).delete()
    quorum_lost = policy.approvals_given(promotion) < policy.approvals_required(promotion)
    if promotion.state != PromotionState.AWAITING_APPROVAL and quorum_lost:
        promotion.save(update_fields=["updated_at", *_await_approval_again(promotion)])
    _record(
        AuditAction.PULL_REQUEST_REVIEW_IGNORED,
        promotion,
        None,
        f"{_describe(promotion)}: the reviews of {', '.join(names)} on pull request #{promotion.pr_number} were "
        "dismissed on GitHub; their approvals no longer count",
        pr_url=promotion.pr_url,
        reviews=[approval.github_review_id for approval in voided],
        voided_approvals=names,
    )
    approval_notices.enqueue_update(promotion)
    return promotion


@transaction.atomic
def ignore_review(promotion, review_id, login, reason):
    """A review on the pull request that does not count under the portal's policy, said once in the audit log."""
    promotion = _locked(promotion)
    if review_id in promotion.pr_reviews_seen:
        return promotion
    _note_review(promotion, review_id)
    _record(
        AuditAction.PULL_REQUEST_REVIEW_IGNORED,
        promotion,
        None,
        f"{_describe(promotion)}: the review of {login} on pull request #{promotion.pr_number} does not count: "
        f"{reason}"[:500],
        pr_url=promotion.pr_url,
        review=review_id,
        login=login,
        reason=reason,
    )
    return promotion


@transaction.atomic
def close_pull_request(promotion, *, closed_by):
    """The promotion's pull request was closed without being merged: the promotion is cancelled."""
    promotion = _locked(promotion)
    if promotion.state not in (PromotionState.AWAITING_APPROVAL, PromotionState.APPROVED):
        return promotion
    promotion.state = PromotionState.CANCELLED
    promotion.pr_state = PullRequestState.CLOSED
    promotion.finished_at = timezone.now()
    steps.close(promotion.pk)
    promotion.save(update_fields=["state", "pr_state", "finished_at", "updated_at"])
    _record(
        AuditAction.PROMOTION_CANCELLED,
        promotion,
        None,
        f"{_describe(promotion)} cancelled: pull request #{promotion.pr_number} was closed on GitHub by {closed_by}",
        comment=f"Pull request closed on GitHub by {closed_by}",
        pr_url=promotion.pr_url,
        closed_by=closed_by,
    )
    approval_notices.enqueue_update(promotion)
    promote_waiting(promotion.service, promotion.environment)
    return promotion


# --- the pipeline moving it ------------------------------------------------------------------------


@transaction.atomic
def start_commit(promotion):
    """Approved → committing.

    The commit job calls this while git writes the commit, with the promotion and its fixed
    relations loaded an instant before: only the promotion's own row is locked and read again
    (the six-table join would cost more than the row, on the way to the push), and the related
    objects it holds are kept — the audit event takes only their names.
    """
    if isinstance(promotion, Promotion) and all(
        Promotion._meta.get_field(name).is_cached(promotion) for name in FIXED_RELATIONS
    ):
        audit.lock_chain()
        loaded, promotion = promotion, Promotion.objects.select_for_update().get(pk=promotion.pk)
        for name in FIXED_RELATIONS:
            setattr(promotion, name, getattr(loaded, name))
    else:
        promotion = _locked(promotion)
    _expect(promotion, PromotionState.APPROVED)
    promotion.state = PromotionState.COMMITTING
    promotion.commit_started_at = timezone.now()
    # Its push (or merge) follows: until the step hears how that went, it may have landed.
    promotion.push_may_have_landed = True
    promotion.save(update_fields=["state", "commit_started_at", "push_may_have_landed", "updated_at"])
    _record(AuditAction.PROMOTION_COMMIT_STARTED, promotion, None, f"GitOps commit for {_describe(promotion)} started")
    return promotion


def note_push_not_landed(promotion):
    """The commit step learnt that no commit of the promotion is on the GitOps branch (its push failed
    before reaching the remote, was refused, or was looked for afterwards and not found): a page may
    say that nothing was written. Not a change of state, and not audited: the step's run keeps the error."""
    Promotion.objects.filter(
        pk=promotion.pk, state=PromotionState.COMMITTING, push_may_have_landed=True, gitops_commit_sha=""
    ).update(push_may_have_landed=False, updated_at=timezone.now())


@transaction.atomic
def mark_committed(promotion, sha, message, committed_at=None, *, merged=False, replaced=None):
    """Committing → committed. `committed_at` is when the push returned (default: now).

    `merged`: `sha` is the merge commit of the promotion's pull request, which the portal merged.
    `replaced`: the tag the values file held before the commit, when the step read it.
    """
    promotion = _locked(promotion)
    _expect(promotion, PromotionState.COMMITTING)
    _note_overwritten_by_hand(promotion, sha, replaced)
    promotion.state = PromotionState.COMMITTED
    promotion.committed_at = committed_at or timezone.now()
    promotion.gitops_commit_sha = sha
    promotion.gitops_commit_message = message
    if merged:
        promotion.pr_state = PullRequestState.MERGED
    promotion.save(
        update_fields=[
            "state",
            "committed_at",
            "gitops_commit_sha",
            "gitops_commit_message",
            "pr_state",
            "updated_at",
        ]
    )
    metrics.stage_ended(promotion, "commit")
    if merged:
        _record(
            AuditAction.PULL_REQUEST_MERGED,
            promotion,
            None,
            f"{_describe(promotion)}: pull request #{promotion.pr_number} merged as {sha[:7]}",
            pr_url=promotion.pr_url,
            head=promotion.pr_head_sha,
            commit=sha,
            method=settings.GITOPS_GITHUB_MERGE_METHOD,
        )
    _record(
        AuditAction.PROMOTION_COMMITTED,
        promotion,
        None,
        f"{_describe(promotion)} committed as {sha[:7]}",
        commit=sha,
        approvers=promotion.approver_names(),
        initiator=promotion.requester_name(),
        **({"pr_url": promotion.pr_url} if promotion.pr_url else {}),
    )
    steps.schedule(promotion, Step.SYNC)
    return promotion


def _note_overwritten_by_hand(promotion, sha, replaced):
    """The commit replaced a tag someone wrote by hand: neither what the portal deployed there nor (a
    retry) the promotion's own. The reconciler's drift check skips places with a promotion in flight
    (an approval waiting for a freeze's end may be days), so a hand fix made meanwhile was overwritten
    without a trace but the commit message's previous version: the audit log says it now."""
    if replaced is None or replaced == promotion.release.version:
        return
    running = (
        Deployment.objects.current()
        .filter(service=promotion.service, environment=promotion.environment)
        .values_list("release__version", flat=True)
        .first()
    )
    if running is None or replaced == running:
        return  # a place the portal never deployed to holds what it was set up with: no drift
    committed_there = Promotion.objects.filter(
        service=promotion.service,
        environment=promotion.environment,
        release__version=replaced,
        gitops_commit_sha__gt="",
    )
    if committed_there.exists():
        return  # the portal's own commit, whose sync failed (the rollback after it replaces it)
    path = promotion.service.values_path(promotion.environment)
    _record(
        AuditAction.DRIFT_DETECTED,
        promotion,
        None,
        f"{path} said {replaced!r}, written there by hand over {running}; "
        f"the commit {sha[:7]} of {_describe(promotion)} replaced it"[:500],
        expected=running,
        found=replaced,
        overwritten_by=sha,
    )


@transaction.atomic
def mark_syncing(promotion, *, configured):
    promotion = _locked(promotion)
    if promotion.state == PromotionState.SYNCING:
        return promotion
    _expect(promotion, PromotionState.COMMITTED)
    promotion.state = PromotionState.SYNCING
    promotion.sync_started_at = timezone.now()
    promotion.sync_status = StepStatus.RUNNING if configured else StepStatus.NOT_CONFIGURED
    promotion.save(update_fields=["state", "sync_started_at", "sync_status", "updated_at"])
    note = "Argo CD sync started" if configured else "Argo CD is not configured: the sync is not watched"
    _record(AuditAction.PROMOTION_SYNCING, promotion, None, f"{_describe(promotion)}: {note}", configured=configured)
    return promotion


@transaction.atomic
def mark_deployed(promotion, *, health="", argocd_sync_id=""):
    """The release runs there: record the deployment, replace the previous one, start verifying.

    `argocd_sync_id`: the Argo CD history entry of the sync that deployed it, when Argo CD said.
    """
    promotion = _locked(promotion)
    _expect(promotion, PromotionState.SYNCING)
    now = timezone.now()
    promotion.state = PromotionState.DEPLOYED
    promotion.deployed_at = now
    promotion.argocd_sync_id = argocd_sync_id
    if promotion.sync_status == StepStatus.RUNNING:
        promotion.sync_status = StepStatus.PASSED
    promotion.save(update_fields=["state", "deployed_at", "sync_status", "argocd_sync_id", "updated_at"])
    metrics.stage_ended(promotion, "sync")

    Deployment.objects.record(
        release=promotion.release,
        environment=promotion.environment,
        deployed_at=now,
        promotion=promotion,
        is_rollback=promotion.is_rollback,
        gitops_commit_sha=promotion.gitops_commit_sha,
        health=health,
    )
    _record(
        AuditAction.PROMOTION_DEPLOYED,
        promotion,
        None,
        f"{_describe(promotion)} deployed" + (f" ({health})" if health else ""),
        health=health,
        **({"argocd_sync_id": argocd_sync_id} if argocd_sync_id else {}),
    )

    if promotion.is_rollback:
        _finish_rollback(promotion, now)
    steps.schedule(promotion, Step.VERIFY)
    return promotion


def _finish_rollback(rollback, now):
    taken_out = rollback.rolls_back
    if taken_out and taken_out.state in (PromotionState.VERIFIED, PromotionState.FAILED):
        taken_out.state = PromotionState.ROLLED_BACK
        taken_out.save(update_fields=["state", "updated_at"])
        _record(
            AuditAction.PROMOTION_ROLLED_BACK,
            taken_out,
            rollback.requested_by or rollback.requested_via,
            f"{_describe(taken_out)} rolled back to {rollback.release.version}",
            rollback_promotion=rollback.pk,
        )
    if not rollback.environment.auto_promote:
        return  # nothing enters here by itself: a hold would stop nothing, and its "lift" would promote nothing
    _place_hold(
        rollback.service,
        rollback.environment,
        f"Rolled back to {rollback.release.version} by promotion #{rollback.pk}",
        promotion=rollback,
        placed_by=rollback.requester_name(),
        now=now,
    )


def _place_hold(service, environment, reason, *, promotion=None, placed_by=PIPELINE, now=None):
    """Stop automatic promotions into the place until a person lifts the hold (one per place), or,
    placed by the pipeline for a release's failure, until a later release is verified there.

    A place on hold already keeps its hold with the newer reason: what happened since (the rollback
    that placed it failed its own soak, say) is what the board, the alerts and whoever lifts it must
    read, not "Rolled back to …" as if that had worked. A person's rollback as the newer reason makes
    it a person's decision, which only a person lifts."""
    reason = reason[:300]
    failed_release = _release_that_failed(promotion) if promotion and placed_by == PIPELINE else None
    held = Hold.objects.active().filter(service=service, environment=environment).select_for_update().first()
    if held is not None:
        if held.reason != reason:
            _give_hold_a_newer_reason(held, service, environment, reason, promotion, failed_release)
        return None
    hold = Hold.objects.create(
        service=service,
        environment=environment,
        reason=reason,
        placed_by=placed_by,
        placed_at=now or timezone.now(),
        failed_release=failed_release,
    )
    _record_hold(AuditAction.HOLD_PLACED, service, environment, promotion, "are on hold", {"reason": reason})
    return hold


def _release_that_failed(promotion):
    """The release a failure of `promotion` is about: for a rollback, the release it was taking out."""
    if not promotion.is_rollback:
        return promotion.release
    return promotion.rolls_back.release if promotion.rolls_back else promotion.previous_release


def _give_hold_a_newer_reason(hold, service, environment, reason, promotion, failed_release):
    previous, hold.reason = hold.reason, reason
    # A person's decision on the hold (failed_release empty) stays one, whatever the portal adds to it.
    hold.failed_release = failed_release if hold.failed_release_id else None
    hold.save(update_fields=["reason", "failed_release"])
    data = {"reason": reason, "previous_reason": previous}
    _record_hold(AuditAction.HOLD_UPDATED, service, environment, promotion, "stay on hold", data)


def _record_hold(action, service, environment, promotion, how, data):
    audit.record(
        action,
        actor=PIPELINE,
        service=service.name,
        environment=environment.name,
        version=promotion.release.version if promotion else "",
        promotion=promotion,
        message=f"Automatic promotions of {service.name} into {environment.name} {how}: {data['reason']}",
        data=data,
    )


@transaction.atomic
def mark_verifying(promotion, *, configured):
    promotion = _locked(promotion)
    if promotion.state == PromotionState.VERIFYING:
        return promotion
    _expect(promotion, PromotionState.DEPLOYED)
    now = timezone.now()
    promotion.state = PromotionState.VERIFYING
    promotion.verification_started_at = now
    promotion.verdict_at = now + promotion.verification_window
    promotion.verification_status = StepStatus.RUNNING if configured else StepStatus.NOT_CONFIGURED
    promotion.save(
        update_fields=["state", "verification_started_at", "verdict_at", "verification_status", "updated_at"]
    )
    _record(
        AuditAction.PROMOTION_VERIFYING,
        promotion,
        None,
        f"{_describe(promotion)}: soaking until {timezone.localtime(promotion.verdict_at):%H:%M:%S}"
        + ("" if configured else " (no checks configured: only the timer)"),
        window_seconds=promotion.verification_window.total_seconds(),
    )
    return promotion


@transaction.atomic
def extend_soak(promotion, extension, reason):
    """Verifying, with its verdict `extension` from now: the soak missed rounds of samples (a worker
    or the scheduler was gone for a while), and a verdict on what is left would be a guess.
    releases/verification.py says when, and that it happens once."""
    promotion = _locked(promotion)
    _expect(promotion, PromotionState.VERIFYING)
    promotion.verdict_at = timezone.now() + extension
    promotion.save(update_fields=["verdict_at", "updated_at"])
    _record(
        AuditAction.PROMOTION_SOAK_EXTENDED,
        promotion,
        None,
        f"{_describe(promotion)}: soak extended until {timezone.localtime(promotion.verdict_at):%H:%M:%S}: {reason}"[
            :500
        ],
        extension_seconds=extension.total_seconds(),
        reason=reason,
    )
    return promotion


@transaction.atomic
def mark_verified(promotion, summary=""):
    promotion = _locked(promotion)
    _expect(promotion, PromotionState.VERIFYING)
    promotion.state = PromotionState.VERIFIED
    promotion.finished_at = timezone.now()
    steps.close(promotion.pk)  # it owes no more work
    if promotion.verification_status == StepStatus.RUNNING:
        promotion.verification_status = StepStatus.PASSED
    promotion.save(update_fields=["state", "finished_at", "verification_status", "updated_at"])
    metrics.stage_ended(promotion, "soak")
    metrics.promotion_ended(promotion)
    _record(
        AuditAction.PROMOTION_VERIFIED,
        promotion,
        None,
        f"{_describe(promotion)} verified" + (f": {summary}" if summary else ""),
        soak_results=verification.soak_results(promotion),
        ci_results=verification.ci_results(promotion),
    )
    _lift_hold_superseded_by(promotion)
    _auto_promote_next(promotion)
    promote_waiting(promotion.service, promotion.environment)
    return promotion


def _lift_hold_superseded_by(promotion):
    """A hold the portal placed for a release's failure here, once a later release is verified here:
    that release no longer runs here, and the hold would keep deferring builds for nothing."""
    hold = (
        Hold.objects.active()
        .filter(service=promotion.service, environment=promotion.environment)
        .select_related("failed_release")
        .select_for_update(of=("self",))
        .first()
    )
    if hold is None or not hold.is_superseded_by(promotion.release):
        return
    hold.lifted_at = timezone.now()
    hold.save(update_fields=["lifted_at"])
    version, failed = promotion.release.version, hold.failed_release.version
    audit.record(
        AuditAction.HOLD_LIFTED,
        actor=PIPELINE,
        service=promotion.service.name,
        environment=promotion.environment.name,
        version=version,
        promotion=promotion,
        message=f"Automatic promotions of {promotion.service.name} into {promotion.environment.name} resumed: "
        f"{version} was verified there, after {failed}, whose failure had put them on hold",
        data={"reason": hold.reason, "failed_release": failed, "superseded_by": version},
    )


def _auto_promote_next(promotion):
    following = promotion.environment.next()
    if following is None or not following.auto_promote or promotion.is_rollback:
        return
    _promote_or_defer(promotion.release, following, promotion)


def _promote_or_defer(release, environment, because_of=None, *, say_why=True):
    """Promote `release` automatically, or say in the audit log why it waits (it goes when the place
    frees up); `say_why=False`: it said so already."""
    request = _Request(release, environment, None, PromotionKind.AUTO)
    refusal = request.why_not()
    if refusal is None:
        return request.create()
    if say_why:
        _defer(release, environment, refusal, because_of)
    return None


def _defer(release, environment, refusal, because_of=None):
    audit.record(
        AuditAction.PROMOTION_DEFERRED,
        actor=PIPELINE,
        service=release.service.name,
        environment=environment.name,
        version=release.version,
        promotion=because_of,
        message=f"{release.service.name} {release.version} waits to enter {environment.name}: {refusal}",
        data={"reason": str(refusal)},
    )


def promote_waiting(service, environment, *, say_why=True):
    """Now that the place is free: the newest build that waited to enter it, promoted automatically.

    A build waits when it was verified in the environment before while this one was busy, on hold
    or frozen, or, in the first environment, when CI registered it then (for a service deployed
    there on registration); only the newest goes, and the older ones say on their page that a
    newer build went instead. Returns the promotion, or None.
    """
    if not environment.auto_promote:
        return None
    previous = environment.previous()
    if previous is None:
        # Builds CI registered while the place was taken: since the last promotion into it (a
        # rollback aside: what it replaced was the one that kept them out) was asked for.
        since = (
            Promotion.objects.filter(service=service, environment=environment)
            .exclude(kind=PromotionKind.ROLLBACK)
            .order_by("-requested_at")
            .values_list("requested_at", flat=True)
            .first()
        )
        if not service.auto_deploy_on_registration or since is None:
            return None
        waiting = Release.objects.for_service(service).filter(registered_at__gt=since)
    else:
        verified = Promotion.objects.filter(release=OuterRef("pk"), environment=previous, state=PromotionState.VERIFIED)
        waiting = Release.objects.for_service(service).filter(Exists(verified))
    current = Deployment.objects.running(service, environment)
    if current:
        waiting = waiting.newer_than(current.release)
    newest = waiting.newest_first().first()
    if newest is None or newest.promotions.filter(environment=environment).exists():
        return None  # nothing newer waits, or the newest was tried there already (and people decided)
    return _promote_or_defer(newest, environment, say_why=say_why)


@audit.chain_transaction()
def promote_waiting_after_freeze(service, environment):
    """A freeze of the place ended or was lifted, which no transition says: the newest build that
    waited goes now (the reconciler asks). Still refused, it waits without a second deferral event."""
    return promote_waiting(service, environment, say_why=False)


@transaction.atomic
def hold_commit_for_freeze(promotion, freeze, *, state):
    """A freeze began after the approval (or after a push that failed): the GitOps commit step waits
    for its end, in the `state` the step found the promotion in (approved or committing)."""
    promotion = _locked(promotion)
    _expect(promotion, state)
    steps.schedule(promotion, Step.COMMIT, at=freeze.ends_at)
    ends = timezone.localtime(freeze.ends_at)
    _record(
        AuditAction.PROMOTION_COMMIT_HELD,
        promotion,
        None,
        f"{_describe(promotion)}: GitOps commit held until the freeze of {promotion.environment.name} ends at "
        f"{ends:%Y-%m-%d %H:%M %Z}: {freeze.reason}",
        ends_at=freeze.ends_at.isoformat(),
        reason=freeze.reason,
    )
    return promotion


# Why a failure was not rolled back automatically, by default (fail(roll_back=False)).
REFUSED_PATH = "through what refused the portal"


@transaction.atomic
def fail(promotion, step, error, *, from_states=None, roll_back=True, kept_because=REFUSED_PATH, applied_health=""):
    """Stop the promotion at `step` with `error`; roll back by itself where the policy says so.

    `from_states`: the states the caller's step may fail it from (a job that did not start the
    step must not fail a promotion another job has carried on); any active state by default.
    `roll_back=False`: no automatic rollback, a hold that says why instead (`kept_because`): the
    failure is a refusal of the very path a rollback would take (Argo CD refusing the portal's
    token), or says nothing against the release (a soak that could not measure it).
    Wherever the automation cannot finish, a hold on the place says why.
    `applied_health`: the sync failed on the health its release came up with once Argo CD had applied
    it (Degraded): its manifests run there, which the board and the page say. It is no deployment
    (mark_deployed records those that came up healthy, which DORA counts, and whose rollback ends an
    incident), so what ran before stays the place's deployment, with that health.
    """
    promotion = _locked(promotion)
    _expect(promotion, *(from_states or PromotionState.active()))
    promotion.state = PromotionState.FAILED
    promotion.failed_step = step
    promotion.error = error
    promotion.applied_health = applied_health
    promotion.finished_at = timezone.now()
    steps.close(promotion.pk)  # it owes no more work
    if step == "sync":
        promotion.sync_status = StepStatus.FAILED
    if step == "verification":
        promotion.verification_status = StepStatus.FAILED
    promotion.save(
        update_fields=[
            "state",
            "failed_step",
            "error",
            "applied_health",
            "finished_at",
            "sync_status",
            "verification_status",
            "updated_at",
        ]
    )
    metrics.stage_ended(promotion, "soak")  # when it had deployed: the soak it failed
    metrics.promotion_ended(promotion)
    _record(
        AuditAction.PROMOTION_FAILED,
        promotion,
        None,
        f"{_describe(promotion)} failed at {step}: {error}"[:500],
        step=step,
        error=error,
        **({"applied_health": applied_health} if applied_health else {}),
        **(
            {"soak_results": verification.soak_results(promotion), "ci_results": verification.ci_results(promotion)}
            if step == "verification"
            else {}
        ),
    )

    _after_failure(promotion, step, error, roll_back, kept_because)
    alerts.enqueue_failure_alert(promotion)
    close_pull_request_later(promotion, f"failed at {step}: {error}")
    return promotion


@transaction.atomic
def stop(promotion, user, comment):
    """Deployed or verifying → failed at verification, because a person stopped its soak.

    The environment's rollback rule applies as to any failed soak: an automatic rollback where the
    policy says so; elsewhere the person is offered the rollback next.
    """
    promotion = _locked(promotion)
    policy.ensure(policy.why_not_stop(promotion, user, comment))
    comment = comment.strip()
    _record(
        AuditAction.PROMOTION_STOPPED,
        promotion,
        user,
        f"{_describe(promotion)}: soak stopped by {user.get_username()}: {comment}"[:500],
        comment=comment,
        state=promotion.state,
    )
    return fail(promotion, "verification", f"stopped by {user.get_username()}: {comment}")


def rolls_back_automatically(promotion, step):
    """Whether a failure of `promotion` at `step` is rolled back by the pipeline (when what failed can
    still be gone through): a sync or soak failing where the policy says so, and never a rollback's."""
    return (
        step in ("sync", "verification")
        and promotion.environment.rollback_on_failed_verification
        and not promotion.is_rollback
    )


def _after_failure(promotion, step, error, roll_back, kept_because=REFUSED_PATH):
    """What automation does about a failure, and a hold (with the reason) wherever it cannot finish."""
    service, environment, version = promotion.service, promotion.environment, promotion.release.version
    if promotion.is_rollback and promotion.requested_via == PIPELINE:
        _place_hold(
            service, environment, f"The automatic rollback to {version} failed at {step}: {error}", promotion=promotion
        )
        return
    if not rolls_back_automatically(promotion, step):
        return  # alert-only here, or a rollback that failed: people decide
    if not roll_back:
        _place_hold(
            service,
            environment,
            f"{version} failed at {step} and was not rolled back automatically {kept_because}: {error}",
            promotion=promotion,
        )
        return
    try:
        with transaction.atomic():
            request_rollback(service, environment, None, rolls_back=promotion)
    except PromotionError as refusal:
        logger.warning("No automatic rollback for promotion %s: %s", promotion.pk, refusal)
        _place_hold(
            service, environment, f"The automatic rollback of {version} could not start: {refusal}", promotion=promotion
        )


@audit.chain_transaction()
def lift_hold(hold, user, comment=""):
    """Automatic promotions into the place resume; the newest build that waited goes now."""
    hold = Hold.objects.select_for_update(of=("self",)).select_related("service", "environment").get(pk=hold.pk)
    policy.ensure(policy.why_not_lift_hold(hold, user))
    hold.lifted_at = timezone.now()
    hold.lifted_by = user
    hold.save(update_fields=["lifted_at", "lifted_by"])
    audit.record(
        AuditAction.HOLD_LIFTED,
        actor=user,
        service=hold.service.name,
        environment=hold.environment.name,
        message=f"Automatic promotions of {hold.service.name} into {hold.environment.name} resumed",
        data={"reason": hold.reason, "comment": comment.strip()},
    )
    hold.promoted = promote_waiting(hold.service, hold.environment)
    return hold
