"""Separation of duties through tokens: a promotion requested with a CI token counts as requested by
the person who created the token, so nobody approves their own request by routing it through CI."""

import io

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from nexo_portal.models import ApiToken, TokenScope
from nexo_portal.tokens import TokenPrincipal
from releases import transitions
from releases.models import PromotionKind, PromotionState
from releases.policy import PromotionError
from tests.factories import make_release, make_service
from tests.test_api import assert_error, session_client, verified_through

pytestmark = pytest.mark.django_db

REQUEST = {"service": "nexo-be", "version": "2026.02.1", "environment": "production"}


@pytest.fixture
def release(environments, redis_connection):
    release = make_release(make_service("nexo-be", team="backend-team"), "2026.02.1")
    verified_through(release, "develop", "qa", "staging", environments=environments)
    return release


def ci_client(created_by, name="ci-nexo-be"):
    _, plain = ApiToken.objects.issue(name=name, scopes=[TokenScope.PROMOTE], created_by=created_by, all_services=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plain}")
    return client


def test_the_creator_of_the_ci_token_that_requested_it_may_not_approve_it(release, sam, sara):
    response = ci_client(created_by=sam).post("/api/v1/promotions/", REQUEST, format="json")
    assert response.status_code == 201, response.content
    url = f"/api/v1/promotions/{response.json()['id']}/approve/"
    assert_error(
        session_client(sam).post(url, {}, format="json"),
        403,
        text="requested through the API token ci-nexo-be, which you created, so it counts as your request",
    )
    assert session_client(sara).post(url, {}, format="json").json()["approvals"][0]["user"] == "sara"


def test_the_creator_of_the_ci_token_may_not_reject_it_either(release, environments, sam):
    client = ci_client(created_by=sam)
    promotion_id = client.post("/api/v1/promotions/", REQUEST, format="json").json()["id"]
    promotion = release.promotions.get(pk=promotion_id)
    assert promotion.accountable_requester == sam
    with pytest.raises(PromotionError, match="counts as your request"):
        transitions.reject(promotion, sam, "not now")
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.AWAITING_APPROVAL


def test_approvers_who_did_not_create_the_token_approve_as_usual(release, paulo, sam, sara):
    promotion_id = ci_client(created_by=paulo).post("/api/v1/promotions/", REQUEST, format="json").json()["id"]
    promotion = release.promotions.get(pk=promotion_id)
    transitions.approve(promotion, sam)
    transitions.approve(promotion, sara)
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.APPROVED


def test_a_person_requesting_counts_as_herself(release, environments, sam):
    promotion = transitions.request_promotion(release, environments["production"], sam)
    assert promotion.accountable_requester == sam
    with pytest.raises(PromotionError, match="You requested this promotion"):
        transitions.approve(promotion, sam)


def test_a_rollback_through_the_token_of_one_of_too_few_approvers_is_refused(release, environments, sam, sara):
    # Production's rollbacks need two approvals from sre-team or platform-leads: Sam and Sara here. A
    # rollback that Sam's token asks for counts as Sam's, so only Sara could approve it: never enough.
    production = environments["production"]
    production.rollback_required_approvals = 2
    production.save(update_fields=["rollback_required_approvals"])
    newer = make_release(release.service, "2026.02.2")
    verified_through(release, "production", environments=environments)
    verified_through(newer, "production", environments=environments)
    token, _ = ApiToken.objects.issue(
        name="ci-rollback", scopes=[TokenScope.PROMOTE], created_by=sam, all_services=True
    )
    with pytest.raises(PromotionError, match=r"only 1 person other than the token's creator \(sara\) can"):
        transitions.request_promotion(release, production, TokenPrincipal(token), kind=PromotionKind.ROLLBACK)


def test_create_api_token_names_the_person_a_ci_tokens_requests_count_as(db, sam):
    call_command("create_api_token", "ci-nexo-be", "--scope", "promote", "--created-by", "sam", stdout=io.StringIO())
    assert ApiToken.objects.get(name="ci-nexo-be").created_by == sam
    with pytest.raises(CommandError, match="No user named nobody"):
        call_command("create_api_token", "ci-other", "--scope", "promote", "--created-by", "nobody")
