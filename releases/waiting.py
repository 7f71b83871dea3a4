"""What waits for a person: the promotions awaiting approval that they may decide now (`policy.may_decide`).

The navigation counts them on every page and the tab title shows the count; /waiting/ lists them,
and those a freeze keeps from being approved until it ends.
"""

from django.db.models import Prefetch

from environments.models import Environment

from . import policy
from .models import Approval, Promotion, PromotionState


def _awaiting_approval():
    # The environments come once each, with the freeze in force (a freeze holds approvals) and their groups.
    environments = Environment.objects.with_active_freeze().prefetch_related("approver_groups")
    return (
        Promotion.objects.filter(state=PromotionState.AWAITING_APPROVAL)
        .select_related("release", "service", "requested_by", "previous_release")
        .prefetch_related(
            Prefetch("approvals", queryset=Approval.objects.select_related("user")),
            Prefetch("environment", queryset=environments),
        )
        .order_by("requested_at", "id")
    )


def for_person(user):
    """The promotions `user` may approve or reject, oldest request first: four queries (and the
    person's groups), however many."""
    if not policy.is_person(user):
        return []
    return [promotion for promotion in _awaiting_approval() if policy.may_decide(promotion, user)]


def held_by_freezes(user):
    """The promotions that would wait for `user` but for a freeze of their environment, oldest request
    first: they may reject them now and approve them once it ends. Four queries too."""
    if not policy.is_person(user):
        return []
    return [promotion for promotion in _awaiting_approval() if policy.may_decide_once_unfrozen(promotion, user)]


class Waiting:
    """What waits for the signed-in person, worked out once per page and only if the page asks."""

    def __init__(self, user, promotions=None):
        """`promotions`: what waits, when the page worked it out already (the unfiltered board)."""
        self.user = user
        self._promotions = promotions

    @property
    def promotions(self):
        if self._promotions is None:
            self._promotions = for_person(self.user)
        return self._promotions

    @property
    def count(self):
        return len(self.promotions)
