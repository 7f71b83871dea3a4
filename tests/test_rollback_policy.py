"""A rollback's own policy in each environment: how long it soaks and how many approvals it needs."""

from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditAction, AuditEvent
from releases import confirmations, transitions
from releases.jobs import verify_promotion
from releases.models import PromotionKind, PromotionState
from tests.factories import make_release, make_service
from tests.history import ran

pytestmark = pytest.mark.django_db


@pytest.fixture
def qa_history(environments):
    """nexo-be 2026.02.1 verified in qa an hour ago, then 2026.02.2 that failed there."""
    service = make_service("nexo-be", team="backend-team")
    good, bad = make_release(service, "2026.02.1"), make_release(service, "2026.02.2")
    ran(good, environments["qa"], at=timezone.now() - timedelta(hours=1))
    taken_out = ran(bad, environments["qa"], state=PromotionState.FAILED, at=timezone.now() - timedelta(minutes=10))
    return {"env": environments, "service": service, "good": good, "bad": bad, "taken_out": taken_out}


def deployed_rollback(history):
    return ran(
        history["good"],
        history["env"]["qa"],
        state=PromotionState.DEPLOYED,
        kind=PromotionKind.ROLLBACK,
        rolls_back=history["taken_out"],
        previous_release=history["bad"],
    )


# --- how long a rollback soaks ---------------------------------------------------------------------


def test_a_rollback_soaks_for_its_environments_rollback_window_not_the_promotion_window(qa_history):
    rollback = transitions.mark_verifying(deployed_rollback(qa_history), configured=True)
    assert rollback.verdict_at - rollback.verification_started_at == timedelta(minutes=2)
    assert qa_history["env"]["qa"].verification_window == timedelta(minutes=5)


def test_a_rollback_without_a_soak_is_decided_at_once_and_says_the_error_rate_was_not_judged(
    qa_history, prometheus_errors, settings
):
    settings.PROMETHEUS_URL = prometheus_errors.url
    qa = qa_history["env"]["qa"]
    qa.rollback_verification_window = timedelta(0)
    qa.required_checks = []
    qa.save()
    rollback = deployed_rollback(qa_history)

    verify_promotion(rollback.pk)

    rollback.refresh_from_db()
    assert rollback.state == PromotionState.VERIFIED, rollback.error
    assert prometheus_errors.queries == []  # healthy for no time: {range} had nothing to measure
    assert rollback.samples.get().detail.startswith("waiting: ")
    verified = AuditEvent.objects.get(promotion_id=rollback.pk, action=AuditAction.PROMOTION_VERIFIED)
    assert "error rate not judged: no soak here for rollbacks, and a rate needs time" in verified.message


def test_the_rollback_confirmation_says_how_long_the_rollback_soaks(qa_history, rita, settings):
    settings.PROMETHEUS_URL = "http://127.0.0.1:9"  # configured; nothing is asked
    confirmation = confirmations.for_rollback(
        qa_history["service"], qa_history["env"]["qa"], rita, qa_history["taken_out"].deployment, qa_history["good"]
    )
    assert any(
        line.startswith("It then soaks for 2 min, the rollback soak of qa, while the portal watches the error rate")
        and line.endswith("of 2026.02.1 alone, from the moment it is healthy.")
        for line in confirmation.consequences
    ), confirmation.consequences
