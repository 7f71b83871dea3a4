"""A promotion's steps as a timeline: requested → approvals → GitOps commit → Argo CD sync →
healthy → soak → verified or failed, each done, current, failed, pending or skipped.

Read from the times the transitions stamp on the promotion; nothing here decides a rule.
"""

from dataclasses import dataclass, field

from django.utils import timezone

from . import drift
from .models import ApprovalDecision, PromotionKind, PromotionState, StepStatus
from .policy import approvals_given, approvals_required

DONE, CURRENT, FAILED, PENDING, SKIPPED = "done", "current", "failed", "pending", "skipped"
STOPPED_BEFORE_COMMIT = {PromotionState.REJECTED, PromotionState.CANCELLED, PromotionState.SUPERSEDED}


@dataclass
class Step:
    key: str
    title: str
    status: str
    at: object = None
    notes: list = field(default_factory=list)


@dataclass
class Soak:
    percent: int
    elapsed: str
    left: str
    window: str


def soak_duration(seconds):
    """A soak's time in words, to the second below an hour ("1 min 40 s"), to the minute above."""
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min" + (f" {seconds % 60} s" if seconds % 60 else "")
    return f"{seconds // 3600} h" + (f" {seconds % 3600 // 60} min" if seconds % 3600 // 60 else "")


def soak(promotion, now):
    """How far the soak window has gone, for the progress bar; None before it starts.

    Elapsed and left are cut to the same unit and left is the window less what is shown elapsed,
    so the two always add up to the window ("1 min 40 s of 4 min, 2 min 20 s left").
    """
    if not promotion.verification_started_at or not promotion.verdict_at:
        return None
    window = max(0, int((promotion.verdict_at - promotion.verification_started_at).total_seconds()))
    end = promotion.finished_at or now
    elapsed = max(0, min(int((end - promotion.verification_started_at).total_seconds()), window))
    unit = 1 if window < 3600 else 60
    elapsed -= elapsed % unit
    percent = 100 if window <= 0 else int(100 * elapsed / window)
    return Soak(percent, soak_duration(elapsed), soak_duration(window - elapsed), soak_duration(window))


def _status(done, current=False, failed=False, stopped=False):
    if failed:
        return FAILED
    if done:
        return DONE
    if current:
        return CURRENT
    return SKIPPED if stopped else PENDING


def steps(promotion, now, held_by_freeze=None, held_up=()):
    """`held_by_freeze`: the freeze its GitOps commit waits for (policy.freeze_holding), if any.
    `held_up`: what holds the current step up, in words, said under it."""
    state = promotion.state
    stopped = state in STOPPED_BEFORE_COMMIT or state == PromotionState.FAILED
    failed_step = promotion.failed_step if state in (PromotionState.FAILED, PromotionState.ROLLED_BACK) else ""
    required, given = approvals_required(promotion), approvals_given(promotion)

    requested = Step("requested", "Requested", DONE, promotion.requested_at, [f"by {promotion.requester_name()}"])
    if promotion.kind == PromotionKind.ROLLBACK:
        requested.notes.append(
            "rollback" + (f" of promotion #{promotion.rolls_back_id}" if promotion.rolls_back_id else "")
        )
    elif promotion.kind == PromotionKind.AUTO and promotion.environment.previous() is None:
        requested.notes.append("automatic, when the build was registered")  # nothing comes before it
    elif promotion.kind == PromotionKind.AUTO:
        requested.notes.append(f"automatic, after verification in {promotion.environment.previous().name}")
    if promotion.is_emergency:
        requested.notes.append(f"break-glass: {promotion.emergency_reason}")
    if promotion.previous_release:
        requested.notes.append(f"replacing {promotion.previous_release.version}")

    rejected = any(a.decision == ApprovalDecision.REJECT for a in promotion.approvals.all())
    if required == 0:
        approvals = Step(
            "approvals",
            "Approvals",
            DONE if promotion.approved_at else SKIPPED,
            promotion.approved_at,
            ["none needed here"],
        )
    else:
        approvals = Step(
            "approvals",
            f"Approvals {given}/{required}",
            _status(promotion.approved_at, state == PromotionState.AWAITING_APPROVAL, rejected, stopped),
            promotion.approved_at,
        )
    if state == PromotionState.SUPERSEDED and promotion.superseded_by_id:
        approvals.notes.append(f"superseded by promotion #{promotion.superseded_by_id}")
    if state == PromotionState.CANCELLED:
        approvals.notes.append("the request was cancelled")

    commit = Step(
        "commit",
        "GitOps commit",
        _status(
            promotion.committed_at,
            state in (PromotionState.APPROVED, PromotionState.COMMITTING),
            failed_step == "commit",
            stopped,
        ),
        promotion.committed_at or promotion.commit_started_at,
    )
    if held_by_freeze:  # approved, or committing after a push that failed before the freeze began
        ends = timezone.localtime(held_by_freeze.ends_at)
        commit.notes.append(f"waits for the freeze of {promotion.environment.name} to end at {ends:%Y-%m-%d %H:%M}")
    elif state == PromotionState.APPROVED:
        commit.notes.append("queued for a worker")

    sync_configured = promotion.sync_status != StepStatus.NOT_CONFIGURED
    sync = Step(
        "sync",
        "Argo CD sync",
        _status(
            promotion.deployed_at,
            state in (PromotionState.COMMITTED, PromotionState.SYNCING),
            failed_step == "sync",
            stopped,
        ),
        promotion.sync_started_at,
    )
    if not sync_configured:
        sync.notes.append("Argo CD is not configured: the sync was not watched")
    if promotion.applied_health:
        sync.notes.append(f"Argo CD applied it, and it came up {promotion.applied_health}")

    deployment = getattr(promotion, "deployment", None) if promotion.deployed_at else None
    healthy = Step(
        "healthy", "Deployed and healthy", _status(promotion.deployed_at, False, False, stopped), promotion.deployed_at
    )
    if deployment and deployment.health:
        healthy.notes.append(f"Argo CD: {deployment.health}")
    elif promotion.deployed_at and not sync_configured:
        healthy.notes.append("health not watched")

    soaking = Step(
        "soak",
        "Soak",
        _status(
            state in (PromotionState.VERIFIED,) or (state == PromotionState.ROLLED_BACK and failed_step == ""),
            state in (PromotionState.DEPLOYED, PromotionState.VERIFYING),
            failed_step == "verification",
            stopped,
        ),
        promotion.verification_started_at,
    )
    if promotion.verification_status == StepStatus.NOT_CONFIGURED:
        soaking.notes.append("nothing is configured to check: the soak is only a timer")

    if state == PromotionState.VERIFIED:
        outcome = Step("outcome", "Verified", DONE, promotion.finished_at)
    elif state == PromotionState.FAILED:
        outcome = Step(
            "outcome", f"Failed at {promotion.failed_step}", FAILED, promotion.finished_at, [promotion.error]
        )
    elif state == PromotionState.ROLLED_BACK:
        outcome = Step(
            "outcome", "Rolled back", FAILED, promotion.updated_at, [promotion.error] if promotion.error else []
        )
    elif state == PromotionState.REJECTED:
        outcome = Step("outcome", "Rejected", FAILED, promotion.finished_at)
    elif state in STOPPED_BEFORE_COMMIT:
        outcome = Step("outcome", promotion.get_state_display(), SKIPPED, promotion.finished_at)
    else:
        outcome = Step("outcome", "Verified", PENDING)
    timeline = [requested, approvals, commit, sync, healthy, soaking, outcome]
    for step in timeline:
        if step.status == CURRENT and held_up:
            step.notes.append("; ".join(held_up))
            break
    return timeline


def written_to_gitops(promotion, branch, holding=None):
    """What a promotion that failed left in the GitOps repository, said only as far as the portal knows
    it ("" otherwise: a commit recorded is shown as such).

    Nothing is pushed before the promotion is committing, and from then on it may have landed until
    the commit step learns otherwise (`push_may_have_landed`). `holding`: the place's current
    deployment, when the drift check found the values file holding the promotion's recorded commit."""
    if holding is not None:
        path = promotion.service.values_path(promotion.environment)
        return drift.portal_commit(path, holding.drifted_tag, holding.release.version, promotion)
    if promotion.state != PromotionState.FAILED or promotion.gitops_commit_sha:
        return ""
    if promotion.push_may_have_landed:
        return (
            f"Whether its commit reached the GitOps repository is not known: a push was cut off, and the "
            f"repository could not be read since. If it did, the values file says {promotion.release.version}."
        )
    return (
        f"Nothing was written to the GitOps repository: no commit of this promotion is on {branch}, the "
        "branch Argo CD follows, and Argo CD was not asked to sync."
    )


def sample_summary(samples):
    """'Error rate: 9 ok, 1 error; Health URL: 10 ok' — the soak at a glance."""
    counts = {}
    for sample in samples:
        by_outcome = counts.setdefault(sample.get_kind_display(), {})
        by_outcome[sample.outcome] = by_outcome.get(sample.outcome, 0) + 1
    return "; ".join(
        f"{kind}: " + ", ".join(f"{count} {outcome}" for outcome, count in outcomes.items())
        for kind, outcomes in counts.items()
    )
