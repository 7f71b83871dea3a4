"""Those who read the audit log through the API or an export are told what its page says of the chain:
verified and intact, broken from which event on, not verified yet, or verified by a row the portal did
not sign. An export says it in each record, so the file says it once saved."""

import json
from datetime import datetime

import jsonschema
import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator

from audit import checkpoints
from audit import log as audit
from audit.models import AuditAction, AuditEvent
from releases import transitions
from releases.models import PromotionState
from tests.history import verified_up_to_staging
from tests.test_api import token_client
from tests.test_audit_chain import tamper
from tests.test_audit_export import SCHEMA

pytestmark = pytest.mark.django_db


@pytest.fixture
def approved(environments, rita, sam, lead, settings):
    """nexo-be 2026.02.1 requested into production by Rita, approved by Sam and the lead, deployed and
    soaking; its log verified and intact (the checkpoints to the log output only)."""
    settings.AUDIT_WITNESS = ""
    history = verified_up_to_staging(environments)
    promotion = transitions.request_promotion(history["release"], environments["production"], rita)
    transitions.approve(promotion, sam)
    transitions.approve(promotion, lead)
    promotion.refresh_from_db()
    promotion.state = PromotionState.VERIFYING
    promotion.deployed_at = promotion.verification_started_at = timezone.now()
    promotion.save()
    assert checkpoints.watch(force=True).ok
    return promotion


def sams_approval():
    return AuditEvent.objects.get(action=AuditAction.PROMOTION_APPROVED, actor="sam")


def approved_by_paulo(event):
    """The tables' owner, in PostgreSQL, says Paulo gave that approval; the reconciler verifies the chain."""
    with connection.cursor() as cursor:
        # The test's transaction holds the state version's deferred triggers, which ALTER TABLE refuses to
        # leave pending; they fire now, as at the commit of the promotion's steps.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    tamper("UPDATE audit_auditevent SET actor = 'paulo' WHERE id = %s", [event.pk])
    return checkpoints.watch(force=True)


def mark_intact_without_the_key():
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE audit_chainverification SET ok = true, problem = '', broken_at = NULL, broken_from = NULL"
        )


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
    edited = sams_approval()
    verification = approved_by_paulo(edited)

    listed = token_client("read").get("/api/v1/audit/", {"action": "promotion.approved"}).json()
    assert "paulo" in [event["actor"] for event in listed["results"]]  # the log as it is, and beside it:
    assert listed["chain"]["intact"] is False
    assert listed["chain"]["broken_at"] == edited.pk
    assert listed["chain"]["summary"] == verification.summary
    assert f"breaks at event {edited.pk} (edited)" in listed["chain"]["summary"]


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
    assert not approved_by_paulo(sams_approval()).ok, "the chain is broken before someone marks it intact"
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


def saved_export(person=None, **query):
    """The export as a saved file holds it: from the API with a token, or from the audit page by `person`."""
    if person is None:
        response = token_client("read").get("/api/v1/audit/export/", query)
    else:
        client = Client()
        client.force_login(person)
        response = client.get("/audit/export.json", query)
    assert response.status_code == 200
    return json.loads(b"".join(response.streaming_content))


@pytest.mark.parametrize("from_the_page", [False, True])
def test_each_exported_event_says_whether_it_is_past_the_break(approved, rita, from_the_page):
    edited = sams_approval()
    approved_by_paulo(edited)
    since = audit.record(AuditAction.RELEASE_REGISTERED, actor="ci", service="nexo-be", version="2026.02.2")

    records = saved_export(rita if from_the_page else None, per="step")

    said = {record["id"]: record["chain"] for record in records}
    assert {said[pk] for pk in said if pk < edited.pk} == {"verified"}
    assert {said[pk] for pk in said if pk >= edited.pk} == {"broken"}
    assert said[since.pk] == "broken"  # recorded since, after a break nothing vouches for
    assert [record["actor"] for record in records if record["id"] == edited.pk] == ["paulo"]


def test_events_recorded_since_the_last_verification_are_exported_as_not_verified_yet(approved):
    read = AuditEvent.objects.latest("id")
    since = audit.record(AuditAction.RELEASE_REGISTERED, actor="ci", service="nexo-be", version="2026.02.2")

    said = {record["id"]: record["chain"] for record in saved_export(per="step")}

    assert (said[read.pk], said[since.pk]) == ("verified", "unverified")


def test_no_exported_event_says_verified_after_a_verification_the_portal_did_not_sign(approved):
    approved_by_paulo(sams_approval())
    mark_intact_without_the_key()

    assert {record["chain"] for record in saved_export(per="step")} == {"unverified"}


def test_a_completed_promotion_exported_says_so_when_an_event_before_its_verdict_was_edited(approved):
    transitions.mark_verified(approved, "all good")
    assert checkpoints.watch(force=True).ok
    (record,) = saved_export()
    assert record["chain"] == "verified"

    approved_by_paulo(sams_approval())

    (record,) = saved_export()
    jsonschema.validate(record, SCHEMA)
    assert record["chain"] == "broken"
