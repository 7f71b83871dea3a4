"""The audit export in the reference docs' structured audit log shape: one record per completed promotion,
every record valid against docs/audit-record.schema.json; the per-step log with `per=step`."""

import json
import subprocess
from pathlib import Path

import jsonschema
import pytest
import time_machine
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent
from releases import transitions, verification
from releases.audit_export import export_json
from releases.gitops.repo import commit_url
from releases.models import (
    CheckResult,
    PromotionKind,
    PromotionState,
    SampleCheck,
    StepStatus,
    VerificationSample,
)
from tests.factories import make_release
from tests.history import ran, verified_up_to_staging

SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "docs" / "audit-record.schema.json").read_text())

# The example of versioning-and-promotion.md, "Structured Audit Log", as written there.
REFERENCE_EXAMPLE = {
    "event": "promotion",
    "service": "nexo-be",
    "version": "2026.02.1",
    "from_environment": "staging",
    "to_environment": "production",
    "timestamp": "2026-02-01T10:30:00Z",
    "initiator": "alice@nexo.com",
    "approvers": ["bob@nexo.com", "charlie@nexo.com"],
    "pr_url": "https://github.com/nexo-org/nexo-gitops/pull/123",
    "argocd_sync_id": "abc123",
    "rollback": False,
    "validation_results": {"smoke_tests": "passed", "load_test": "passed", "security_scan": "passed"},
}


def exported(per=None, **filters):
    """The export of the whole log, each record checked against the schema when it is per promotion."""
    records = json.loads("".join(export_json(AuditEvent.objects.filter(**filters).order_by("id"), per or "promotion")))
    if per is None:
        for record in records:
            jsonschema.validate(record, SCHEMA)
    return records


def test_the_schema_is_the_reference_example():
    jsonschema.validate(REFERENCE_EXAMPLE, SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**REFERENCE_EXAMPLE, "approvers": "bob@nexo.com"}, SCHEMA)


@pytest.fixture
def production(environments, rita, sam, lead):
    """nexo-be 2026.02.1 requested into production by Rita, approved by Sam and the lead, soaking."""
    for person in (rita, sam, lead):
        person.email = f"{person.username}@nexo.com"
        person.save()
    history = verified_up_to_staging(environments)
    promotion = transitions.request_promotion(history["release"], environments["production"], rita)
    transitions.approve(promotion, sam)
    transitions.approve(promotion, lead)
    promotion.refresh_from_db()
    # What the pipeline leaves on the way to the soak (the commit, the sync) is not what is checked here.
    promotion.state = PromotionState.VERIFYING
    promotion.gitops_commit_sha = "c" * 40
    promotion.deployed_at = promotion.verification_started_at = timezone.now()
    promotion.argocd_sync_id = "45"
    promotion.save()
    CheckResult.objects.create(
        release=history["release"], environment=environments["production"], name="smoke", passed=True, reported_by="ci"
    )
    return promotion


def sample(promotion, kind, ok, target=""):
    VerificationSample.objects.create(promotion=promotion, kind=kind, target=target, ok=ok, value=0.1, detail="x")


@pytest.mark.django_db
def test_a_verified_promotion_is_one_record_with_emails_the_commit_the_sync_and_the_soaks_verdicts(
    production, settings
):
    settings.GITOPS_REPO_URL = "https://ci:secret@github.com/nexo-org/nexo-gitops.git"
    sample(production, SampleCheck.ERROR_RATE, True)
    sample(production, SampleCheck.HEALTH_URL, True, target="https://be.nexo.invalid/health")
    sample(production, SampleCheck.ARGOCD_HEALTH, None)
    transitions.mark_verified(production, "all good")

    (record,) = exported()

    assert {key: record[key] for key in REFERENCE_EXAMPLE if key != "timestamp"} == {
        "event": "promotion",
        "service": "nexo-be",
        "version": "2026.02.1",
        "from_environment": "staging",
        "to_environment": "production",
        "initiator": "rita@nexo.com",
        "approvers": ["sam@nexo.com", "lead@nexo.com"],
        "pr_url": f"https://github.com/nexo-org/nexo-gitops/commit/{'c' * 40}",
        "argocd_sync_id": "45",
        "rollback": False,
        "validation_results": {
            "smoke": "passed",
            "soak:error_rate": "passed",
            "soak:health_url:https://be.nexo.invalid/health": "passed",
            "soak:argocd_health": "no_data",
        },
    }
    assert record["outcome"] == "verified"


def broken_glass(release, production):
    """`release` sent to production by break-glass, and verified there."""
    promotion = ran(release, production, state=PromotionState.VERIFYING, is_emergency=True, emergency_reason="down")
    return transitions.mark_verified(promotion, "all good")


@pytest.mark.django_db
def test_a_break_glass_fix_that_skipped_staging_comes_from_no_environment(environments):
    """from_environment was the environment before in today's pipeline, whatever the promotion did: a
    fix built minutes ago and sent straight to production was exported as coming from staging."""
    service, production = verified_up_to_staging(environments)["service"], environments["production"]
    emergency = broken_glass(make_release(service, "2026.02.2"), production)
    staged = ran(make_release(service, "2026.02.3"), environments["staging"])
    broken_glass(staged.release, production)
    timer_only = ran(make_release(service, "2026.02.4"), environments["staging"])
    timer_only.verification_status = StepStatus.NOT_CONFIGURED  # verified where nothing was set up to check
    timer_only.save()
    broken_glass(timer_only.release, production)

    sources = {record["version"]: record["from_environment"] for record in exported()}

    assert sources == {"2026.02.2": None, "2026.02.3": "staging", "2026.02.4": "staging"}
    steps = [record for record in exported(per="step") if record["promotion_id"] == emergency.pk]
    assert {record["from_environment"] for record in steps} == {None}


@pytest.mark.django_db
def test_a_soak_that_failed_says_which_check_failed(production):
    sample(production, SampleCheck.ERROR_RATE, True)
    sample(production, SampleCheck.HEALTH_URL, False, target="https://be.nexo.invalid/health")
    transitions.fail(production, "verification", "health URL failed")

    (record,) = exported()

    assert record["outcome"] == "failed"
    assert record["validation_results"]["soak:health_url:https://be.nexo.invalid/health"] == "failed"
    assert record["validation_results"]["soak:error_rate"] == "passed"


@pytest.mark.django_db
def test_a_soak_that_failed_for_missing_ci_checks_says_where_it_failed_why_and_which_were_missing(environments):
    """A qa promotion failed because CI never reported e2e: it was exported with `validation_results: {}`
    and nothing else to say why, although the compliance record exists to say it."""
    history = verified_up_to_staging(environments)
    release = make_release(history["service"], "2026.02.2")
    ran(release, environments["develop"])
    soaking = ran(release, environments["qa"], state=PromotionState.VERIFYING, verification_started_at=timezone.now())
    for name in ("performance", "security"):
        CheckResult.objects.create(
            release=release, environment=environments["qa"], name=name, passed=True, reported_by="ci"
        )
    reason = verification.verdict(soaking).summary
    transitions.fail(soaking, "verification", reason, roll_back=False)

    (record,) = exported()
    (step,) = [event for event in exported(per="step") if event["event"] == "promotion.failed"]

    assert reason.startswith("no e2e result was reported by CI")
    assert (record["outcome"], record["failed_step"], record["error"]) == ("failed", "verification", reason)
    expected = {"e2e": "no_data", "performance": "passed", "security": "passed"}
    assert record["validation_results"] == step["validation_results"] == expected


@pytest.mark.django_db
def test_a_verified_promotion_has_no_failed_step_nor_error(production):
    transitions.mark_verified(production, "all good")

    (record,) = exported()

    assert (record["failed_step"], record["error"]) == (None, None)


@pytest.mark.django_db
def test_promotions_that_did_not_complete_are_not_records_but_their_steps_stay_available(production):
    assert exported() == []  # still soaking

    steps = exported(per="step")

    assert [record["event"] for record in steps][-3:] == [
        "promotion.requested",
        "promotion.approved",
        "promotion.approved",
    ]


@pytest.mark.django_db
def test_every_timestamp_has_the_reference_shape_whole_seconds_in_utc(production):
    from datetime import UTC, datetime

    from audit import log as audit
    from audit.models import AuditAction

    production.deployed_at = datetime(2026, 2, 1, 10, 0, 0, 654321, tzinfo=UTC)
    production.save()
    for at in (datetime(2026, 2, 1, 10, 30, tzinfo=UTC), datetime(2026, 2, 1, 10, 30, 0, 123456, tzinfo=UTC)):
        audit.record(AuditAction.RELEASE_REGISTERED, actor="ci", at=at)
    with time_machine.travel(datetime(2026, 2, 1, 11, 45, 7, 890123, tzinfo=UTC), tick=False):
        transitions.mark_verified(production, "all good")

    same_second = json.loads("".join(export_json(AuditEvent.objects.filter(actor="ci").order_by("id"), "step")))
    (record,) = exported()

    assert [step["timestamp"] for step in same_second] == ["2026-02-01T10:30:00Z", "2026-02-01T10:30:00Z"]
    assert same_second[0]["id"] < same_second[1]["id"]  # still told apart, and in order
    assert (record["timestamp"], record["deployed_at"]) == ("2026-02-01T11:45:07Z", "2026-02-01T10:00:00Z")
    # What the reference's readers do with them: jq's fromdateiso8601 takes whole seconds only.
    text = json.dumps([step["timestamp"] for step in same_second] + [record["timestamp"], record["deployed_at"]])
    jq = subprocess.run(["jq", "map(fromdateiso8601)"], input=text, capture_output=True, text=True, check=False)
    assert jq.returncode == 0, jq.stderr


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("repository", "expected"),
    [
        ("https://github.com/nexo-org/nexo-gitops.git", "https://github.com/nexo-org/nexo-gitops/commit/abc"),
        ("git@github.com:nexo-org/nexo-gitops.git", "https://github.com/nexo-org/nexo-gitops/commit/abc"),
        ("ssh://git@gitlab.example.com/platform/gitops", "https://gitlab.example.com/platform/gitops/commit/abc"),
        ("/var/lib/nexo/gitops.git", None),
    ],
)
def test_the_commit_url_of_a_gitops_repository(repository, expected):
    assert commit_url(repository, "abc") == expected


def test_the_export_pages_refuse_an_unknown_per(db, viewer):
    client = Client()
    client.force_login(viewer)

    response = client.get("/audit/export.json", {"per": "day"})

    assert response.status_code == 400
    assert "per is promotion" in response.json()["errors"]["per"][0]["message"]


def test_a_promotion_through_argo_cd_carries_its_sync_id(pipeline, argocd_server, settings):
    settings.ARGOCD_POLL_SECONDS = 0.01
    settings.ARGOCD_SYNC_TIMEOUT_SECONDS = 5
    service = pipeline.add_service("nexo-be")
    application = argocd_server.app("nexo-be-develop")
    argocd_server.app("nexo-be-qa")
    promotion = transitions.request_promotion(
        make_release(service, "2026.02.1"), pipeline.environments["develop"], None, kind=PromotionKind.AUTO
    )
    pipeline.run_jobs()
    promotion.refresh_from_db()

    assert promotion.state == PromotionState.VERIFIED
    deployed = [entry for entry in application.history if entry["revision"] == promotion.gitops_commit_sha]
    assert promotion.argocd_sync_id == str(deployed[-1]["id"])
    develop = next(record for record in exported() if record["to_environment"] == "develop")
    assert develop["argocd_sync_id"] == promotion.argocd_sync_id
    assert develop["initiator"] == "pipeline"
    assert develop["validation_results"]["soak:argocd_health"] == "passed"


@pytest.mark.django_db
def test_a_promotion_delivered_by_pull_request_names_its_pull_request(production):
    production.pr_url = "https://github.com/nexo-org/nexo-gitops/pull/123"
    production.save()
    transitions.mark_verified(production)

    (record,) = exported()

    assert record["pr_url"] == "https://github.com/nexo-org/nexo-gitops/pull/123"


@pytest.mark.django_db
def test_the_image_checks_production_required_are_among_the_validation_results(production, environments):
    production_environment = environments["production"]
    production_environment.requires_image_check = production_environment.requires_signature = True
    production_environment.requires_attestation = True
    production_environment.save()
    release = production.release
    release.image_checked_at = release.signature_verified_at = release.attestation_verified_at = timezone.now()
    release.signed_by = "sha256:" + "d" * 64
    release.save()
    transitions.mark_verified(production, "all good")

    (record,) = exported()

    assert record["validation_results"]["image:digest"] == "passed"
    assert record["validation_results"]["image:signature"] == "passed"
    assert record["validation_results"]["image:attestation"] == "passed"


@pytest.mark.django_db
def test_no_image_check_is_claimed_where_none_was_required(production):
    transitions.mark_verified(production, "all good")

    (record,) = exported()

    assert not [name for name in record["validation_results"] if name.startswith("image:")]


# --- filters that select events, not promotions ----------------------------------------------------------


def download(client, url, **params):
    response = client.get(url, params)
    assert response.status_code == 200, response.content
    return json.loads(b"".join(response.streaming_content))


@pytest.mark.django_db
def test_the_audit_pages_export_of_an_action_filter_gives_the_events_the_page_lists(production, viewer):
    """The page listed the approvals and its "Export JSON (filtered)" link gave `[]`: the default export
    has a record per completed promotion, which an action filter on approvals never matches."""
    client = Client()
    client.force_login(viewer)

    page = client.get("/audit/", {"action": "promotion.approved"}).content.decode()

    links = [part.split('"', 1)[0] for part in page.split('href="/audit/export.json')[1:]]
    assert links == ["?action=promotion.approved&amp;per=step"]
    assert "one record per event listed here" in page
    assert "per completed promotion" in page  # the page says why that export is not offered
    records = download(client, "/audit/export.json", action="promotion.approved", per="step")
    assert [record["event"] for record in records] == ["promotion.approved", "promotion.approved"]


@pytest.mark.django_db
def test_the_audit_page_offers_both_exports_where_both_apply(production, viewer):
    client = Client()
    client.force_login(viewer)

    page = client.get("/audit/", {"service": "nexo-be"}).content.decode()

    links = [part.split('"', 1)[0] for part in page.split('href="/audit/export.json')[1:]]
    assert links == ["?service=nexo-be&amp;per=step", "?service=nexo-be"]
    assert "one record per completed promotion" in page


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("filters", "says"),
    [
        ({"action": "promotion.approved"}, "action"),
        ({"actor": "sam"}, "actor"),
        ({"action": "promotion.requested", "per": "promotion"}, "action"),
    ],
)
@pytest.mark.parametrize("url", ["/audit/export.json", "/api/v1/audit/export/"])
def test_an_export_per_promotion_refuses_a_filter_that_cannot_select_a_promotion(
    production, viewer, url, filters, says
):
    """A consumer asking for the approvals got `[]` and could not tell it from "no approvals"."""
    client = Client()
    client.force_login(viewer)

    response = client.get(url, filters)

    # Each parameter is valid alone (the schema accepts them): together they contradict each other.
    assert response.status_code == 409
    text = response.content.decode()
    assert "per=step" in text
    assert says in text


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/audit/export.json", "/api/v1/audit/export/"])
def test_an_export_per_promotion_filtered_by_its_verdict_keeps_working(production, viewer, url):
    transitions.mark_verified(production, "all good")
    client = Client()
    client.force_login(viewer)

    (record,) = download(client, url, action="promotion.verified")
    assert download(client, url, action="promotion.failed") == []
    assert record["outcome"] == "verified"


@pytest.mark.django_db
def test_both_export_shapes_name_people_alike(production):
    """Per promotion the initiator was rita@nexo.com, per step `rita`: a consumer joining the two on
    people found no match. Both give e-mail addresses where known (the reference's example does);
    `actor` stays the name the log recorded."""
    transitions.mark_verified(production, "all good")

    (promotion,) = exported()
    steps = [record for record in exported(per="step") if record["promotion_id"] == promotion["promotion_id"]]

    assert promotion["initiator"] == "rita@nexo.com"
    assert {step["initiator"] for step in steps} == {"rita@nexo.com"}
    assert steps[-1]["approvers"] == promotion["approvers"] == ["sam@nexo.com", "lead@nexo.com"]
    assert [step["actor"] for step in steps if step["event"] == "promotion.approved"] == ["sam", "lead"]
