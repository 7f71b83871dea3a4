"""A late hotfix — a hotfix of the release running in production, numbered below newer builds that
run elsewhere — goes into production as a promotion under the normal approvals, and can be rolled back."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from releases import policy, transitions
from releases.models import Deployment, PromotionKind, PromotionState
from releases.policy import PromotionError
from tests.factories import make_release, make_service
from tests.history import ran

pytestmark = pytest.mark.django_db


@pytest.fixture
def late(environments):
    """Production runs nexo-be 2026.06.8; develop, qa and staging already run 2026.06.9. The hotfix of
    2026.06.8 was built on its hotfix branch as 2026.06.7-hotfix."""
    service = make_service("nexo-be", team="backend-team")
    running, newer = make_release(service, "2026.06.8"), make_release(service, "2026.06.9")
    earlier = timezone.now() - timedelta(days=2)
    for name in ("develop", "qa", "staging", "production"):
        ran(running, environments[name], at=earlier)
    for name in ("develop", "qa", "staging"):
        ran(newer, environments[name], at=earlier + timedelta(hours=1))
    hotfix = make_release(service, "2026.06.7-hotfix", is_hotfix=True, fixes=running)
    return {"env": environments, "service": service, "running": running, "newer": newer, "hotfix": hotfix}


def why_not_enter(release, environment, kind=PromotionKind.MANUAL, is_emergency=False):
    current = Deployment.objects.current().filter(service=release.service, environment=environment).first()
    return policy.why_not_enter(release, environment, kind, is_emergency, None, current)


def test_a_late_hotfix_is_promoted_into_production_under_the_normal_approvals(late, rita, sam, lead):
    production = late["env"]["production"]

    promotion = transitions.request_promotion(late["hotfix"], production, rita)

    assert (promotion.kind, promotion.is_emergency, promotion.state) == (
        PromotionKind.MANUAL,
        False,
        PromotionState.AWAITING_APPROVAL,
    )
    assert policy.approvals_required(promotion) == production.required_approvals == 2
    transitions.approve(promotion, sam)
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.AWAITING_APPROVAL
    transitions.approve(promotion, lead)
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.APPROVED


def test_break_glass_takes_a_late_hotfix_too(late, rita):
    promotion = transitions.request_promotion(
        late["hotfix"], late["env"]["production"], rita, is_emergency=True, reason="INC-42: logins fail"
    )

    assert promotion.is_emergency


@pytest.mark.parametrize(
    ("case", "refusal"),
    [
        ("late hotfix", None),
        ("plain old build", "which is newer than 2026.06.5: request a rollback to go back."),
        ("hotfix of another release", "which is newer than 2026.06.7-hotfix: request a rollback to go back."),
        ("staging runs what it fixes", "has not been verified in staging; it must pass there"),
    ],
)
def test_only_a_hotfix_of_the_running_release_goes_in_below_it(late, case, refusal):
    service, production, staging = late["service"], late["env"]["production"], late["env"]["staging"]
    release = late["hotfix"]
    if case == "plain old build":
        release = make_release(service, "2026.06.5")
    elif case == "hotfix of another release":
        release.fixes = make_release(service, "2026.06.6")
        release.save()
    elif case == "staging runs what it fixes":
        ran(late["running"], staging, kind=PromotionKind.ROLLBACK)

    reason = why_not_enter(release, production)

    if refusal is None:
        assert reason is None
    else:
        assert refusal in reason


def test_a_late_hotfix_still_cannot_go_backwards_where_newer_builds_run(late, rita):
    newer_runs = re.escape("staging runs nexo-be 2026.06.9, which is newer than 2026.06.7-hotfix")
    with pytest.raises(PromotionError, match=newer_runs):
        transitions.request_promotion(late["hotfix"], late["env"]["staging"], rita)


def test_a_late_hotfix_can_be_rolled_back_to_the_release_it_fixed(late, rita, sam):
    production = late["env"]["production"]
    ran(late["hotfix"], production, state=PromotionState.FAILED)

    rollback = transitions.request_rollback(late["service"], production, rita, release=late["running"])

    assert (rollback.kind, rollback.release) == (PromotionKind.ROLLBACK, late["running"])
