"""Those who read the audit log through the API are told what its page says of the chain: verified
and intact, broken from which event on, not verified yet, or verified by a row the portal did not sign."""

from datetime import datetime

import pytest
from django.db import connection
from drf_spectacular.generators import SchemaGenerator

from audit import checkpoints
from audit.models import AuditAction, AuditEvent
from releases import transitions
from tests.history import verified_up_to_staging
from tests.test_api import token_client
from tests.test_audit_chain import tamper

pytestmark = pytest.mark.django_db


@pytest.fixture
def approved(environments, rita, sam, lead, settings):
    """nexo-be 2026.02.1 requested into production by Rita, approved by Sam and the lead; its log verified
    and intact (the checkpoints to the log output only)."""
    settings.AUDIT_WITNESS = ""
    history = verified_up_to_staging(environments)
    promotion = transitions.request_promotion(history["release"], environments["production"], rita)
    transitions.approve(promotion, sam)
    transitions.approve(promotion, lead)
    assert checkpoints.watch(force=True).ok
    return AuditEvent.objects.get(action=AuditAction.PROMOTION_APPROVED, actor="sam")


def approved_by_paulo(event):
    """The tables' owner, in PostgreSQL, says Paulo gave that approval; the reconciler verifies the chain."""
    with connection.cursor() as cursor:
        # The test's transaction holds the state version's deferred triggers, which ALTER TABLE refuses to
        # leave pending; they fire now, as at the commit of the promotion's steps.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    tamper("UPDATE audit_auditevent SET actor = 'paulo' WHERE id = %s", [event.pk])
    return checkpoints.watch(force=True)


def chain_of_the_api():
    return token_client("read").get("/api/v1/audit/").json()["chain"]


def test_the_api_says_the_chain_holds_when_and_through_which_event_it_was_verified(approved):
    verification = checkpoints.chain_status().verification
    head = AuditEvent.objects.latest("id")

    chain = chain_of_the_api()
    assert (chain["intact"], chain["broken_at"], chain["verified_through"]) == (True, None, head.pk)
    assert datetime.fromisoformat(chain["verified_at"]) == verification.checked_at
    assert chain["summary"].startswith(f"The audit chain is intact: {verification.events_checked} events checked")


def test_the_api_says_an_edited_event_broke_the_chain_and_from_which_event_on_nothing_is_vouched_for(approved):
    verification = approved_by_paulo(approved)

    listed = token_client("read").get("/api/v1/audit/", {"action": "promotion.approved"}).json()
    assert "paulo" in [event["actor"] for event in listed["results"]]  # the log as it is, and beside it:
    assert listed["chain"]["intact"] is False
    assert listed["chain"]["broken_at"] == approved.pk
    assert listed["chain"]["summary"] == verification.summary
    assert f"breaks at event {approved.pk} (edited)" in listed["chain"]["summary"]


def test_the_api_says_the_chain_has_not_been_verified_yet(environments, rita):
    chain = chain_of_the_api()
    assert (chain["intact"], chain["verified_at"], chain["verified_through"], chain["broken_at"]) == (
        None,
        None,
        None,
        None,
    )
    assert chain["summary"].startswith("The chain has not been verified yet")


def test_the_api_does_not_repeat_a_verification_the_portal_did_not_sign(approved, settings):
    """Someone without the key marks the broken chain's last verification intact: the API does not say so."""
    approved_by_paulo(approved)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE audit_chainverification SET ok = true, problem = '', broken_at = NULL, broken_from = NULL"
        )

    chain = chain_of_the_api()
    assert (chain["intact"], chain["verified_at"], chain["broken_at"]) == (None, None, None)
    assert chain["summary"] == (
        "The last verification on record is not signed by the portal: it may have been altered; the next check, "
        f"within {settings.RECONCILE_SECONDS} seconds, replaces it."
    )


def test_the_schema_documents_the_chain_beside_the_events():
    page = SchemaGenerator().get_schema(request=None, public=True)["components"]["schemas"]["PaginatedAuditEventList"]
    assert "chain" in page["required"]
    assert set(page["properties"]["chain"]["properties"]) == {
        "intact",
        "verified_at",
        "verified_through",
        "broken_at",
        "summary",
    }
