"""What a person is offered on a promotion and in a board cell, each action with why not.

The board's cells and the promotion page ask here, so both offer the same actions for the same
reasons (`policy`); they only differ in how much of it they show.
"""

from dataclasses import dataclass

from . import policy
from .models import Deployment, Promotion, PromotionKind, PromotionState, Release

LABELS = {
    "lift": ("Lift hold…", ""),
    "approve": ("Approve", "primary"),
    "reject": ("Reject", "danger"),
    "cancel": ("Cancel request", ""),
    "stop": ("Stop and roll back…", "danger"),
    "rollback": ("Roll back…", "danger"),
}


@dataclass
class Action:
    kind: str
    label: str
    url: str
    why_not: str = ""
    tone: str = ""
    allowed: bool = True
    # Said beside an action that is allowed but worth a second look (a release just rejected here).
    note: str = ""


def decision_actions(promotion, user, url_for):
    """Approve, reject, cancel or stop as the promotion's state offers them; `url_for(kind, pk)` links each."""
    actions = [
        _action(kind, url_for(kind, promotion.pk), why_not)
        for kind, why_not in policy.offered_decisions(promotion, user)
    ]
    for action in actions:
        if action.kind == "stop":
            action.label = stop_label(promotion)
    return actions


def request_action(
    environment, version, url, *, refusal, user=None, waiting=None, busy=None, stopped="", held_back=None
):
    """Requesting `version` in `environment`: the board offers each place its candidate, and a promotion
    that failed before it ran offers its release again (`promote_again`).

    `refusal`: `policy.why_not_request()` for the person (the board asks it once per team and environment).
    `waiting`: the promotion awaiting approval there, which the request would replace; `busy`: one past
    approval, which must finish first. `stopped`: how the release's last promotion there ended ("failed
    at commit 5 min ago"), when it did: offered again then, never as the obvious next step.
    `held_back`: `policy.why_not_go_on()`, a check failed since its verdict before; only break-glass passes.
    """
    # Read with the environment on the board (with_active_freeze), asked of the database elsewhere.
    freeze = environment.active_freeze()
    # A frozen environment that allows break-glass still offers the request: its confirmation says so.
    frozen = freeze is not None and not environment.allows_break_glass
    why_not = refusal or (busy_refusal(busy) if busy is not None else "")
    if not why_not and frozen:
        why_not = policy.frozen_until(environment, freeze.ends_at, freeze.reason)
    if not why_not and held_back and not environment.allows_break_glass:
        why_not = held_back
    if not why_not and waiting is not None and waiting.state == PromotionState.AWAITING_APPROVAL:
        # A request would replace the one awaiting approval, whose approvals not everyone may discard.
        why_not = policy.why_not_supersede(waiting, user)
    action = Action("request", f"Promote {version}", url, why_not=why_not or "", tone="primary", allowed=not why_not)
    if stopped:
        # Just rejected, failed or rolled back here: offered again, never as the obvious next step.
        action.label = f"Promote {version} again"
        action.tone = ""
        action.note = f"{version} was {stopped} here"
    only_break_glass = [policy.frozen_until(environment, freeze.ends_at, freeze.reason)] if freeze else []
    if held_back and environment.allows_break_glass:
        only_break_glass.append(str(held_back))
    if only_break_glass and not refusal and not frozen:
        # Only break-glass enters now: not the obvious next step, and the button says so.
        action.label += " (break-glass)"
        action.tone = ""
        action.note = " ".join(only_break_glass) + " Only a break-glass promotion may enter now."
    return action


def promote_again(promotion, user, url, how_it_ended):
    """On the page of a promotion that failed before its release ran: requesting that release again, as
    the board's cell of the place offers it (`how_it_ended()`: the cell's words for it), while it is the
    place's newest promotion and its release still the one the place is offered. None otherwise.

    A new request is decided anew: the approvals given to this one do not carry over, and the action
    says so. An approval answers one request (who asked, what ran there then, the freezes), and the
    request again may come from one of its approvers.
    """
    if promotion.state != PromotionState.FAILED or promotion.is_rollback or promotion.deployed_at:
        return None
    service, environment = promotion.service, promotion.environment
    later = Promotion.objects.filter(service=service, environment=environment, requested_at__gt=promotion.requested_at)
    if later.exists() or Release.objects.offered_into(service, environment) != promotion.release:
        return None
    running = Deployment.objects.running(service, environment)
    if running is not None and not promotion.release.is_newer_than(running.release):
        return None
    action = request_action(
        environment,
        promotion.release.version,
        url,
        refusal=policy.why_not_request(user, service, environment),
        user=user,
        stopped=how_it_ended(),
        held_back=policy.why_not_go_on(promotion.release, environment),
    )
    approvers = promotion.approver_names()
    if approvers:
        given = "approvals given to this one" if len(approvers) > 1 else "approval given to this one"
        action.note += (
            f". It is a new request, approved anew: the {given} ({', '.join(approvers)}) "
            f"{'do' if len(approvers) > 1 else 'does'} not carry over."
        )
    return action


def stop_label(promotion):
    """A stopped soak fails its promotion and a rollback follows, unless it was a rollback itself:
    nothing rolls a rollback back (transitions._after_failure)."""
    return "Stop soak…" if promotion.is_rollback else LABELS["stop"][0]


def why_not_roll_back(user, service, environment):
    """Who may roll back: whoever may request promotions of the service there (`policy`), where
    someone else could approve the rollback."""
    return policy.why_not_request(
        user, service, environment, kind=PromotionKind.ROLLBACK
    ) or policy.why_not_unapprovable_rollback(user, environment)


def rollback_action(deployment, url, why_not, *, busy=None):
    """Rolling back what runs in a place, offered only over what the portal deployed there.

    `why_not`: `why_not_roll_back()` for the person (the board asks its two rules once per team and
    environment, and once per environment).
    `busy`: a promotion in the place past approval, which must finish first.
    """
    if deployment is None or deployment.promotion_id is None:
        return None
    if not why_not and busy is not None:
        why_not = busy_refusal(busy)
    return _action("rollback", url, why_not)


def lift_action(url, why_not):
    """Lifting a hold on automatic promotions, for whoever may request promotions there."""
    return _action("lift", url, why_not)


def busy_refusal(promotion):
    """Why nothing else may be requested while `promotion` is past approval, as `transitions` says it."""
    return (
        f"{promotion.service.name} {promotion.release.version} → {promotion.environment.name} is already "
        f"{promotion.get_state_display().lower()} (promotion #{promotion.pk}); {policy.until_it_finishes(promotion)}."
    )


def _action(kind, url, why_not):
    label, tone = LABELS[kind]
    return Action(kind, label, url, why_not=why_not or "", tone=tone, allowed=not why_not)
