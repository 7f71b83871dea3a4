"""What a person is offered on a promotion and in a board cell, each action with why not.

The board's cells and the promotion page ask here, so both offer the same actions for the same
reasons (`policy`); they only differ in how much of it they show.
"""

from dataclasses import dataclass

from . import policy
from .models import PromotionKind

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
