"""Stopping a soak that goes wrong: a person who may roll back stops it from the promotion's page,
the board or the API, with a comment; it fails at once and the environment's rollback rule applies."""

from urllib.parse import quote

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from rest_framework.test import APIClient

from audit.models import AuditAction, AuditEvent
from nexo_portal.models import ApiToken
from releases import transitions
from releases.models import Promotion, PromotionKind, PromotionState, RunStatus, Step, StepRun
from releases.policy import PromotionError
from tests.factories import make_release
from tests.history import action_link, cell_html, ran, verified_up_to_staging

pytestmark = pytest.mark.django_db

COMMENT = "7.2 % errors against 1 %, 13 of 13 samples"


@pytest.fixture
def world(environments, rita, paulo, viewer):
    history = verified_up_to_staging(environments)
    return {**history, "rita": rita, "paulo": paulo, "viewer": viewer}


def soaking_in(world, environment_name):
    """nexo-be 2026.02.2 verifying in `environment_name`, where 2026.02.1 was verified before."""
    promotion = ran(
        make_release(world["service"], "2026.02.2"),
        world["env"][environment_name],
        state=PromotionState.VERIFYING,
        previous_release=world["release"],
    )
    StepRun.objects.create(promotion=promotion, step=Step.VERIFY)  # its next round of samples
    return promotion


def signed_in(user):
    client = Client()
    client.force_login(user)
    return client


def messages_of(response):
    return [str(message) for message in get_messages(response.wsgi_request)]


# --- the rule and the transition ---------------------------------------------------------------------


def test_stopping_a_soak_fails_it_saying_who_stopped_it_and_why_and_audits_it(world):
    promotion = soaking_in(world, "staging")

    stopped = transitions.stop(promotion, world["rita"], COMMENT)

    assert (stopped.state, stopped.failed_step) == (PromotionState.FAILED, "verification")
    assert stopped.error == f"stopped by rita: {COMMENT}"
    event = AuditEvent.objects.get(promotion_id=promotion.pk, action=AuditAction.PROMOTION_STOPPED)
    assert (event.actor, event.data["comment"]) == ("rita", COMMENT)
    assert AuditEvent.objects.filter(promotion_id=promotion.pk, action=AuditAction.PROMOTION_FAILED).exists()
    assert not StepRun.objects.filter(promotion=promotion, status__in=RunStatus.open()).exists()
    assert not Promotion.objects.filter(kind=PromotionKind.ROLLBACK).exists()  # staging: alert only


def test_where_the_policy_rolls_back_by_itself_a_stopped_soak_is_rolled_back(world):
    promotion = soaking_in(world, "qa")

    transitions.stop(promotion, world["rita"], COMMENT)

    rollback = Promotion.objects.get(kind=PromotionKind.ROLLBACK)
    assert (rollback.rolls_back, rollback.release, rollback.state) == (
        promotion,
        world["release"],
        PromotionState.APPROVED,
    )


def test_a_deployed_promotion_whose_soak_has_not_started_may_be_stopped_too(world):
    promotion = soaking_in(world, "staging")
    Promotion.objects.filter(pk=promotion.pk).update(state=PromotionState.DEPLOYED)

    assert transitions.stop(promotion, world["rita"], COMMENT).state == PromotionState.FAILED


@pytest.mark.parametrize(
    ("who", "comment", "refusal", "field"),
    [
        ("rita", "  ", "Say why you stop it: a comment is required.", "comment"),
        (
            "viewer",
            COMMENT,
            "Only members of backend-team or platform-team may request promotions of nexo-be into staging",
            None,
        ),
    ],
)
def test_a_stop_without_a_comment_or_by_someone_who_may_not_roll_back_is_refused(world, who, comment, refusal, field):
    promotion = soaking_in(world, "staging")

    with pytest.raises(PromotionError) as refused:
        transitions.stop(promotion, world[who], comment)

    assert str(refused.value).startswith(refusal)
    assert refused.value.field == field
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.VERIFYING


def test_only_a_soaking_promotion_can_be_stopped(world):
    verified = Promotion.objects.get(environment=world["env"]["staging"])
    with pytest.raises(PromotionError, match="only a promotion that is soaking"):
        transitions.stop(verified, world["rita"], COMMENT)


def test_a_rollback_requested_while_a_soak_runs_says_to_stop_the_soak(world):
    soaking_in(world, "staging")
    with pytest.raises(PromotionError, match=r"stop its soak \(Stop and roll back, on the promotion's page\)"):
        transitions.request_rollback(world["service"], world["env"]["staging"], world["rita"])


# --- the promotion's page --------------------------------------------------------------------------


def test_the_page_of_a_soaking_promotion_offers_to_stop_it_to_those_who_may_roll_back(client, world):
    promotion = soaking_in(world, "staging")
    url = f"/promotions/{promotion.pk}/"

    rita_page = signed_in(world["rita"]).get(url).content.decode()
    viewer_page = signed_in(world["viewer"]).get(url).content.decode()

    assert f'href="/promotions/{promotion.pk}/stop/?next=' in action_link(rita_page, "stop")
    assert "Stop and roll back…" in rita_page
    assert "nothing more can be done" not in rita_page
    assert action_link(viewer_page, "stop") is None
    assert "Only members of backend-team or platform-team may request promotions of nexo-be into staging" in viewer_page


def test_a_soaking_rollback_is_offered_to_stop_its_soak_not_to_roll_back_again(world):
    promotion = soaking_in(world, "staging")
    promotion.kind = PromotionKind.ROLLBACK
    promotion.save(update_fields=["kind"])
    rita = signed_in(world["rita"])

    page = rita.get(f"/promotions/{promotion.pk}/").content.decode()
    confirmation = rita.get(f"/promotions/{promotion.pk}/stop/").content.decode()

    assert "Stop soak…" in action_link(page, "stop")
    assert "roll back" not in action_link(page, "stop")
    assert '<h1 id="confirm-title" class="confirm-title">Stop the soak</h1>' in confirmation
    assert "Stop the soak and roll back" not in confirmation
    assert "This is a rollback: stopping it does not roll back again" in confirmation
    with pytest.raises(PromotionError, match=r"stop its soak \(Stop soak, on the promotion's page\)"):
        transitions.request_rollback(world["service"], world["env"]["staging"], world["rita"])


def test_the_stop_confirmation_says_the_rollback_comes_next_where_it_is_not_automatic(world):
    promotion = soaking_in(world, "staging")

    page = signed_in(world["rita"]).get(f"/promotions/{promotion.pk}/stop/").content.decode()

    assert "nexo-be 2026.02.2 → staging" in page
    assert "The soak stops now: 2026.02.2 fails its verification in staging" in page
    assert (
        "staging does not roll back by itself: the rollback to 2026.02.1 is offered to you next, to confirm. "
        "It waits for one approver from platform-team; the requester cannot approve it.</li>"
    ) in page
    assert "Why do you stop it?" in page


def test_the_stop_confirmation_says_when_the_rollback_that_follows_could_never_be_approved(world):
    # Paulo is the only member of platform-team, which approves rollbacks in staging.
    promotion = soaking_in(world, "staging")

    page = signed_in(world["paulo"]).get(f"/promotions/{promotion.pk}/stop/").content.decode()

    assert "is offered to you next" not in page
    assert (
        "staging does not roll back by itself, and you could not request the rollback to 2026.02.1 next: "
        "A rollback in staging needs one approval from platform-team, and nobody other than you can give one"
    ) in page


def test_stopping_from_the_page_leads_to_the_rollback_confirmation(world):
    promotion = soaking_in(world, "staging")

    response = signed_in(world["rita"]).post(f"/promotions/{promotion.pk}/stop/", {"comment": COMMENT, "next": "/"})

    assert response.status_code == 302
    assert response["Location"] == f"/services/nexo-be/environments/staging/rollback/?next={quote('/', safe='')}"
    assert messages_of(response) == ["You stopped nexo-be 2026.02.2 → staging."]
    promotion.refresh_from_db()
    assert promotion.error == f"stopped by rita: {COMMENT}"


def test_stopping_where_the_policy_rolls_back_goes_back_saying_so(world):
    promotion = soaking_in(world, "qa")

    response = signed_in(world["rita"]).post(f"/promotions/{promotion.pk}/stop/", {"comment": COMMENT, "next": "/"})

    assert response["Location"] == "/"
    assert messages_of(response) == ["You stopped nexo-be 2026.02.2 → qa: qa rolls back by itself."]


def test_a_stop_posted_without_a_comment_comes_back_to_the_form(world):
    promotion = soaking_in(world, "staging")

    response = signed_in(world["rita"]).post(f"/promotions/{promotion.pk}/stop/", {"comment": ""})

    assert response.status_code == 400
    assert "Say why you stop it: a comment is required." in response.content.decode()
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.VERIFYING


# --- the board ------------------------------------------------------------------------------------


def test_the_board_offers_to_stop_a_soak_instead_of_a_rollback_that_would_wait(world):
    promotion = soaking_in(world, "staging")

    cell = cell_html(signed_in(world["rita"]).get("/"), "nexo-be", "staging")
    viewer_cell = cell_html(signed_in(world["viewer"]).get("/"), "nexo-be", "staging")

    assert f"/promotions/{promotion.pk}/stop/" in action_link(cell, "stop")
    assert action_link(cell, "rollback") is None
    assert action_link(viewer_cell, "stop") is None


# --- the API ------------------------------------------------------------------------------------------


def api_as(user):
    client = APIClient()
    client.force_login(user)
    return client


def test_the_api_stops_a_soak_with_a_comment(world):
    promotion = soaking_in(world, "staging")

    response = api_as(world["rita"]).post(f"/api/v1/promotions/{promotion.pk}/stop/", {"comment": COMMENT}, "json")

    assert response.status_code == 200
    assert (response.json()["state"], response.json()["error"]) == ("failed", f"stopped by rita: {COMMENT}")


def test_the_api_refuses_a_stop_without_a_comment_on_the_field(world):
    promotion = soaking_in(world, "staging")

    response = api_as(world["rita"]).post(f"/api/v1/promotions/{promotion.pk}/stop/", {}, "json")

    assert response.status_code == 409  # the schema takes it; the rule refuses it, naming the field
    assert response.json()["errors"][0]["field"] == "comment"


def test_a_ci_token_never_stops_a_soak(world):
    promotion = soaking_in(world, "staging")
    _token, plain = ApiToken.objects.issue(name="ci", scopes=["promote"], all_services=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plain}")

    response = client.post(f"/api/v1/promotions/{promotion.pk}/stop/", {"comment": COMMENT}, "json")

    assert response.status_code == 403
    assert "API tokens of CI never stop a soak" in response.json()["message"]
