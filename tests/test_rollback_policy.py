"""A rollback's own policy in each environment: how long it soaks and how many approvals it needs."""

from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditAction, AuditEvent
from releases import confirmations, policy, transitions
from releases.jobs import verify_promotion
from releases.models import Deployment, DeploymentSource, Hold, Promotion, PromotionKind, PromotionState
from releases.policy import PromotionError
from tests.factories import make_release, make_service, make_user
from tests.history import ran
from tests.test_api import session_client

pytestmark = pytest.mark.django_db


def bad_release_in(environments, name):
    """nexo-be 2026.02.1 verified in `name` an hour ago, then 2026.02.2 that failed there."""
    service = make_service("nexo-be", team="backend-team")
    good, bad = make_release(service, "2026.02.1"), make_release(service, "2026.02.2")
    ran(good, environments[name], at=timezone.now() - timedelta(hours=1))
    taken_out = ran(bad, environments[name], state=PromotionState.FAILED, at=timezone.now() - timedelta(minutes=10))
    return {"env": environments, "service": service, "good": good, "bad": bad, "taken_out": taken_out}


@pytest.fixture
def qa_history(environments):
    return bad_release_in(environments, "qa")


@pytest.fixture
def production_history(environments):
    return bad_release_in(environments, "production")


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


@pytest.mark.parametrize("place", ["qa", "production"])
def test_the_rollback_confirmation_promises_no_rollback_of_the_rollback(environments, rita, place):
    history = bad_release_in(environments, place)
    confirmation = confirmations.for_rollback(
        history["service"], history["env"][place], rita, history["taken_out"].deployment, history["good"]
    )
    assert (
        f"If its verification fails, the rollback is marked failed and 2026.02.1 stays in {place}: a rollback is "
        "never rolled back by itself, so what comes next is yours to decide."
    ) in confirmation.consequences, confirmation.consequences
    assert not any("rolled back to the last verified release" in line for line in confirmation.consequences)
    rollback = Promotion(service=history["service"], environment=history["env"][place], kind=PromotionKind.ROLLBACK)
    assert not transitions.rolls_back_automatically(rollback, "verification")


# --- how many approvals a rollback needs ---------------------------------------------------------


@pytest.mark.parametrize(("environment", "approvals"), [("develop", 0), ("qa", 0), ("staging", 1), ("production", 1)])
def test_rollbacks_need_one_approval_in_staging_and_production_and_none_before(environments, environment, approvals):
    assert environments[environment].rollback_required_approvals == approvals


def test_a_production_rollback_a_person_requests_needs_one_approval_not_two(production_history, sam, sara):
    rollback = transitions.request_rollback(production_history["service"], production_history["env"]["production"], sam)
    assert rollback.state == PromotionState.AWAITING_APPROVAL
    assert policy.approvals_required(rollback) == 1

    transitions.approve(rollback, sara)

    rollback.refresh_from_db()
    assert rollback.state == PromotionState.APPROVED


def test_a_rollback_the_pipeline_makes_by_policy_needs_no_approval(qa_history):
    rollback = transitions.request_rollback(qa_history["service"], qa_history["env"]["qa"], None)
    assert rollback.state == PromotionState.APPROVED


def test_a_rollback_nobody_else_could_approve_is_refused_before_it_is_made(production_history, sam, sara):
    production = production_history["env"]["production"]
    production.rollback_required_approvals = 2
    production.save()

    with pytest.raises(PromotionError) as refused:
        transitions.request_rollback(production_history["service"], production, sam)

    assert str(refused.value) == (
        "A rollback in production needs 2 distinct approvals from platform-leads or sre-team, and only 1 person "
        "other than you (sara) can give one: it could never be approved. Ask an administrator to lower the "
        "rollback approvals of production or to add approvers."
    )
    assert not Promotion.objects.filter(kind=PromotionKind.ROLLBACK).exists()


def test_the_rollback_confirmation_says_why_nobody_could_approve_it(production_history, sam):
    production = production_history["env"]["production"]
    confirmation = confirmations.for_rollback(
        production_history["service"],
        production,
        sam,
        production_history["taken_out"].deployment,
        production_history["good"],
    )
    assert confirmation.why_not.startswith(
        "A rollback in production needs one approval from platform-leads or sre-team"
    )
    assert "and nobody other than you can give one" in confirmation.why_not


def test_inactive_approvers_and_superusers_do_not_count_as_people_who_could_approve(production_history, sam, sara):
    sara.is_active = False
    sara.save()
    make_user("root", is_superuser=True)
    production = production_history["env"]["production"]

    with pytest.raises(PromotionError, match="and nobody other than you can give one"):
        transitions.request_rollback(production_history["service"], production, sam)


def test_after_a_late_hotfix_an_automatic_rollback_goes_to_the_hotfix_not_the_release_it_fixed(environments):
    """qa ran 2026.06.8, then its late hotfix 2026.06.7-hotfix (numbered below it), then 2026.06.9
    failed its soak: the release verified there last is the hotfix."""
    qa = environments["qa"]
    service = make_service("nexo-be", team="backend-team")
    broken = make_release(service, "2026.06.8")
    hotfix = make_release(service, "2026.06.7-hotfix", is_hotfix=True, fixes=broken)
    now = timezone.now()
    ran(broken, qa, at=now - timedelta(days=3))
    ran(hotfix, qa, at=now - timedelta(days=2), kind=PromotionKind.MANUAL)
    soaking = ran(make_release(service, "2026.06.9"), qa, state=PromotionState.VERIFYING, at=now - timedelta(minutes=3))

    transitions.fail(soaking, "verification", "error rate 12%")

    rollback = Promotion.objects.get(kind=PromotionKind.ROLLBACK)
    assert (rollback.rolls_back, rollback.release) == (soaking, hotfix)


def test_an_automatic_rollback_does_not_go_back_to_a_release_people_rolled_back_away_from(environments):
    """qa: 2026.06.1 verified, then 2026.06.2; 2026.06.3 failed and was rolled back to 2026.06.2, which
    was bad too: people rolled it back to 2026.06.1. When 2026.06.4 fails, its rollback goes to 2026.06.1."""
    qa = environments["qa"]
    service = make_service("nexo-be", team="backend-team")
    rita = make_user("rita", groups=["backend-team"])
    first, second, third, fourth = (make_release(service, f"2026.06.{build}") for build in (1, 2, 3, 4))
    now = timezone.now()
    ran(first, qa, at=now - timedelta(hours=5))
    ran(second, qa, at=now - timedelta(hours=4))
    failed = ran(third, qa, state=PromotionState.ROLLED_BACK, at=now - timedelta(hours=3))
    to_second = ran(
        second,
        qa,
        kind=PromotionKind.ROLLBACK,
        rolls_back=failed,
        previous_release=third,
        at=now - timedelta(hours=2),
    )
    to_first = transitions.request_rollback(service, qa, rita, release=first)
    assert to_first.rolls_back == to_second
    to_first = transitions.mark_committed(transitions.start_commit(to_first), "d" * 40, "rollback")
    to_first = transitions.mark_deployed(transitions.mark_syncing(to_first, configured=False))
    transitions.mark_verified(transitions.mark_verifying(to_first, configured=False))
    Hold.objects.active().update(lifted_at=now)  # the rollbacks' holds, lifted
    soaking = ran(fourth, qa, state=PromotionState.VERIFYING, at=now - timedelta(minutes=3))

    transitions.fail(soaking, "verification", "error rate 12%")

    rollback = Promotion.objects.get(kind=PromotionKind.ROLLBACK, rolls_back=soaking)
    assert rollback.release == first


# --- what a rollback takes out: what runs, as the pages show it ---------------------------------


@pytest.fixture
def imported_over_the_portal(environments):
    """qa: the portal deployed 2026.02.1, then 2026.02.2; then someone set 2026.02.3 in the values
    file by hand, which the GitOps history import recorded running, with no portal promotion."""
    qa = environments["qa"]
    service = make_service("nexo-be", team="backend-team")
    now = timezone.now()
    good = make_release(service, "2026.02.1")
    ran(good, qa, at=now - timedelta(hours=2))
    ran(make_release(service, "2026.02.2"), qa, at=now - timedelta(hours=1))
    running = Deployment.objects.record(
        release=make_release(service, "2026.02.3"),
        environment=qa,
        deployed_at=now - timedelta(minutes=10),
        source=DeploymentSource.IMPORT,
        gitops_commit_sha="e" * 40,
    )
    return {"service": service, "qa": qa, "running": running, "good": good}


NOT_THE_PORTALS = (
    "nexo-be 2026.02.3 runs in qa, imported from the GitOps history rather than deployed by a portal "
    "promotion; the portal rolls back only what it deployed there."
)


def test_a_rollback_refuses_to_take_out_a_release_the_portal_did_not_deploy_and_names_it(
    imported_over_the_portal, rita
):
    with pytest.raises(PromotionError) as refused:
        transitions.request_rollback(imported_over_the_portal["service"], imported_over_the_portal["qa"], rita)

    assert str(refused.value) == NOT_THE_PORTALS
    assert not Promotion.objects.filter(kind=PromotionKind.ROLLBACK).exists()


def test_the_rollback_dialog_the_api_and_the_admin_refuse_it_in_the_same_words(
    imported_over_the_portal, rita, admin_client
):
    place = imported_over_the_portal
    dialog = confirmations.for_rollback(place["service"], place["qa"], rita, place["running"], place["good"])
    api = session_client(rita).post(
        "/api/v1/rollbacks/", {"service": "nexo-be", "environment": "qa", "running": "2026.02.3"}, format="json"
    )
    admin = admin_client.post(
        "/admin/releases/deployment/",
        {"action": "roll_back", "_selected_action": [place["running"].pk], "apply": "1"},
        follow=True,
    )

    assert dialog.why_not == NOT_THE_PORTALS
    assert (api.status_code, api.json()["message"]) == (409, NOT_THE_PORTALS)
    assert [str(message) for message in admin.context["messages"]] == [
        f"nexo-be in qa (running 2026.02.3) → the last verified release: {NOT_THE_PORTALS}"
    ]
    assert not Promotion.objects.filter(kind=PromotionKind.ROLLBACK).exists()
