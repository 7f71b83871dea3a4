"""The DORA page, its exports, the API (same figures as the page) and the PagerDuty incident webhook."""

import csv
import hashlib
import hmac
import io
import json
import re
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test import Client

from audit.models import AuditAction, AuditEvent
from releases.models import Deployment, Incident, IncidentSeverity, IncidentSource
from tests.factories import make_release, make_service, make_user

pytestmark = pytest.mark.django_db

UTC = UTC
MONDAY = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MARCH = "start=2026-03-01&end=2026-03-31"
HOUR = 3600
SECRET = "pd-webhook-secret-for-tests"


def deploy(service, environment, version, when, lead_hours=None, is_rollback=False):
    release = service.releases.filter(version=version).first() or make_release(
        service, version, committed_at=when - timedelta(hours=lead_hours) if lead_hours is not None else None
    )
    return Deployment.objects.record(
        release=release, environment=environment, deployed_at=when, is_rollback=is_rollback
    )


@pytest.fixture
def history(environments):
    """Hand-computed March 2026 in production.

    api (backend-team): six changes with a 2 h lead time; the sixth rolled back after 30 min.
    web (frontend-team): five changes with a 10 h lead time; the first has an incident resolved 2 h later.
    Together: 11 changes, lead time median 2 h, 2 failed (CFR 2/11), recovery 0.5 h and 2 h (median 1.25 h),
    rework (0 hotfixes + 1 rollback) / (11 + 1).
    """
    production = environments["production"]
    api = make_service("api", team="backend-team")
    web = make_service("web", team="frontend-team")
    for index in range(6):
        deploy(api, production, f"2026.03.{index + 1}", MONDAY + timedelta(days=index), lead_hours=2)
    deploy(api, production, "2026.03.5", MONDAY + timedelta(days=5, minutes=30), is_rollback=True)
    web_deployments = [
        deploy(web, production, f"2026.03.{index + 1}", MONDAY + timedelta(days=index, hours=3), lead_hours=10)
        for index in range(5)
    ]
    Incident.objects.create(
        service=web,
        environment=production,
        title="web is slow",
        started_at=web_deployments[0].deployed_at,
        resolved_at=web_deployments[0].deployed_at + timedelta(hours=2),
        caused_by=web_deployments[0],
    )
    deploy(web, environments["staging"], "2026.03.1", MONDAY - timedelta(days=1), lead_hours=1)
    return {"api": api, "web": web}


@pytest.fixture
def reader():
    client = Client()
    client.force_login(make_user("stakeholder"))
    return client


def page_figures(html):
    return {metric: value for metric, value in re.findall(r'data-metric="(\w+)" data-value="([^"]*)"', html)}


# --- the page ---------------------------------------------------------------------------------


def test_page_needs_sign_in(history):
    response = Client().get("/dora/")

    assert response.status_code == 302
    assert response.url.startswith("/accounts/login/")


def test_page_shows_the_hand_computed_figures_with_bands_and_definitions(history, reader):
    response = reader.get(f"/dora/?{MARCH}")
    html = response.content.decode()

    assert response.status_code == 200
    figures = page_figures(html)
    assert int(figures["deployment_frequency"]) == 11
    assert float(figures["lead_time_for_changes"]) == pytest.approx(2 * HOUR)
    assert float(figures["change_failure_rate"]) == pytest.approx(2 / 11)
    assert float(figures["failed_deployment_recovery_time"]) == pytest.approx(1.25 * HOUR)
    assert float(figures["deployment_rework_rate"]) == pytest.approx(1 / 12)
    assert 'data-metric="change_failure_rate" data-value="0.181818' in html
    assert 'data-band="low"' in html  # 18 % > 15 %
    assert "DORA 2023 performance levels" in html
    assert "Failed deployment recovery time" in html
    assert "not “MTTR”" in html
    assert "a redeploy of the version already running there is not a change" in html


def test_page_draws_trend_charts_as_inline_svg(history, reader):
    html = reader.get(f"/dora/?{MARCH}&interval=weekly").content.decode()

    assert html.count('<svg class="chart"') == 6
    assert "<script" not in html.split("<main", 1)[1]
    assert "<title>2026-03-02: 11</title>" in html


def test_page_lists_every_service_with_its_own_figures(history, reader):
    response = reader.get(f"/dora/?{MARCH}")
    services = {row.service.name: row.figures for row in response.context["report"].services}

    assert services["api"].change_deployments == 6
    assert services["api"].failed_deployments == 1
    assert services["web"].lead_time_median == pytest.approx(10 * HOUR)
    assert 'data-service="api"' in response.content.decode()


def test_team_page_pools_its_services_only(history, reader):
    report = reader.get(f"/dora/?{MARCH}&team=frontend-team").context["report"]

    assert [row.service.name for row in report.services] == ["web"]
    assert report.overall.change_deployments == 5


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("start=2026-04-01&end=2026-03-01", "is after the end"),
        ("service=nope", "There is no service called “nope”"),
        ("environment=moon", "There is no environment called “moon”"),
        ("start=yesterday", "Enter a valid date"),
        ("service=api&team=frontend-team", "api does not belong to frontend-team"),
        ("start=9999-12-01&end=9999-12-31", "Give a date between 1970-01-01 and 2999-12-31"),
    ],
)
def test_page_explains_a_bad_scope(history, reader, query, message):
    response = reader.get(f"/dora/?{query}")

    assert response.status_code == 400
    assert message in response.content.decode()


def test_a_refused_scope_keeps_what_was_chosen_in_the_form(history, reader):
    response = reader.get("/dora/?start=2026-04-01&end=2026-03-01&service=api&environment=staging&interval=monthly")
    html = response.content.decode()
    assert response.status_code == 400
    assert '<option value="api" selected>' in html
    assert '<option value="staging" selected>' in html
    assert '<option value="monthly" selected>' in html
    assert 'name="start" value="2026-04-01"' in html
    assert 'name="end" value="2026-03-01"' in html


def test_a_refused_scope_keeps_the_defaults_of_what_was_not_chosen(history, reader):
    """The form came back set to develop and "Whole period": the first options, not the page's defaults."""
    html = reader.get("/dora/?start=2026-04-01&end=2026-03-01").content.decode()

    assert '<option value="production" selected>' in html
    assert '<option value="weekly" selected>' in html


def test_a_one_day_period_is_one_day_and_not_extrapolated_to_weeks_and_months(history, reader):
    """One day said "(1 days)" and "14.0 per week … 60.0 per month" from its two deployments."""
    html = reader.get("/dora/?start=2026-03-02&end=2026-03-02").content.decode()
    card = html.split('data-metric="deployment_frequency"', 1)[1].split("</article>", 1)[0]
    body = reader.get("/api/v1/dora/?start=2026-03-02&end=2026-03-02").json()

    assert "(1 day)" in html
    assert "2 <span>change deployments in 1 day</span>" in card
    assert "<span>per week</span>" not in card
    assert "14.0" not in card
    assert "60.0 per month" not in card
    assert "shorter than a week" in card
    assert body["metrics"]["deployment_frequency"]["change_deployments"] == 2  # the figures stay
    assert any("shorter than a week" in warning for warning in body["data_quality_warnings"])
    assert "(31 days)" in reader.get(f"/dora/?{MARCH}").content.decode()


@pytest.mark.parametrize(
    ("url", "status"),
    [("/dora/", 400), ("/dora/export.json", 400), ("/api/v1/dora/", 409)],
    ids=["page", "json", "api"],
)
def test_a_period_that_ends_after_today_is_refused(history, reader, time_machine, url, status):
    """2027-01-01 … 2027-02-01 gave 0 deployments and "Monthly to six-monthly" for every service. The API
    answers 409, as for a start after the end: a date the schema accepts that contradicts the calendar."""
    time_machine.move_to("2026-12-07T12:00:00Z")

    response = reader.get(url, {"start": "2027-01-01", "end": "2027-02-01"})

    assert response.status_code == status
    assert "The end (2027-02-01) is after today (2026-12-07): choose an end on or before today" in (
        response.content.decode()
    )
    assert reader.get(url, {"start": "2026-11-01", "end": "2026-12-07"}).status_code == 200


def test_page_queries_do_not_grow_with_services(history, reader, environments, django_assert_max_num_queries):
    with django_assert_max_num_queries(15) as few:
        reader.get(f"/dora/?{MARCH}&interval=weekly")
    for index in range(5):
        service = make_service(f"extra-{index}", team="backend-team")
        deploy(service, environments["production"], "2026.03.1", MONDAY, lead_hours=1)
    with django_assert_max_num_queries(len(few.captured_queries)):
        reader.get(f"/dora/?{MARCH}&interval=weekly")


def test_page_shows_the_spread_of_frequency_bands_for_many_services_and_the_band_for_one(history, reader):
    portfolio = reader.get(f"/dora/?{MARCH}").content.decode()
    web = reader.get(f"/dora/?{MARCH}&service=web").content.decode()

    # api 6 and web 5 change deployments in March's 31 days: both more than once a week.
    assert '<span class="badge info">Daily to weekly: 2</span>' in portfolio
    assert '<span class="badge ok">On demand: 0</span>' in portfolio
    assert 'data-metric="deployment_frequency" data-value="11" data-band=""' in portfolio
    assert 'data-metric="deployment_frequency" data-value="5" data-band="high"' in web
    assert ">Daily to weekly</span>" in web


# --- the API --------------------------------------------------------------------------------


def test_api_gives_the_figures_the_page_shows(history, reader):
    for scope in ("", "&team=backend-team", "&service=web"):
        html = reader.get(f"/dora/?{MARCH}{scope}").content.decode()
        shown = page_figures(html)
        metrics = reader.get(f"/api/v1/dora/?{MARCH}{scope}").json()["metrics"]

        assert int(shown["deployment_frequency"]) == metrics["deployment_frequency"]["change_deployments"]
        for metric, key in [
            ("lead_time_for_changes", "median_seconds"),
            ("change_failure_rate", "value"),
            ("failed_deployment_recovery_time", "median_seconds"),
            ("deployment_rework_rate", "value"),
        ]:
            if metrics[metric][key] is None:
                assert shown[metric] == ""
            else:
                assert float(shown[metric]) == pytest.approx(metrics[metric][key])


def test_api_document(history, reader):
    body = reader.get(f"/api/v1/dora/?{MARCH}").json()

    assert (body["environment"], body["start"], body["end"], body["interval"]) == (
        "production",
        "2026-03-01",
        "2026-03-31",
        "all",
    )
    assert body["metrics"]["change_failure_rate"] == {
        "value": pytest.approx(2 / 11),
        "failed_deployments": 2,
        "change_deployments": 11,
        "band": "low",
    }
    assert body["metrics"]["lead_time_for_changes"]["band"] == "elite"
    assert body["metrics"]["failed_deployment_recovery_time"]["band"] == "not_enough_data"  # 2 recoveries < 5
    assert body["bands_source"].startswith("DORA 2023")
    assert [service["service"] for service in body["services"]] == ["api", "web"]
    assert "intervals" not in body


def test_api_monthly_intervals_like_gitlab(history, reader):
    body = reader.get("/api/v1/dora/?start=2026-02-15&end=2026-03-31&interval=monthly").json()

    assert [
        (bucket["date"], bucket["metrics"]["deployment_frequency"]["change_deployments"])
        for bucket in body["intervals"]
    ] == [
        ("2026-02-01", 0),
        ("2026-03-01", 11),
    ]


def test_api_other_environment(history, reader):
    body = reader.get("/api/v1/dora/?start=2026-02-01&end=2026-03-31&environment=staging").json()

    assert body["metrics"]["deployment_frequency"]["change_deployments"] == 1


@pytest.mark.parametrize(
    ("query", "status", "field", "message"),
    [
        ("service=nope", 404, "service", "There is no service called “nope”."),
        ("team=ghosts", 404, "team", "There is no team called “ghosts”."),
        ("interval=daily", 400, "interval", "not a valid choice"),
        ("start=2026-13-01", 400, "start", "Date has wrong format"),
        ("start=2026-04-01&end=2026-03-01", 409, None, "is after the end"),
        ("end=2999-12-31", 409, "end", "is after today"),
        ("team=", 400, "team", "Give a value, or leave the parameter out."),
        ("start=9999-12-01&end=9999-12-31", 400, "start", "Give a date between 1970-01-01 and 2999-12-31"),
    ],
)
def test_api_answers_what_to_fix(history, reader, query, status, field, message):
    response = reader.get(f"/api/v1/dora/?{query}")

    assert response.status_code == status
    errors = response.json()["errors"]
    assert [error["field"] for error in errors][:1] == [field]
    assert message in errors[0]["message"]


def test_api_needs_authentication(history):
    response = Client().get("/api/v1/dora/")

    assert response.status_code == 401
    assert "credentials were not provided" in response.json()["message"]


# --- exports ----------------------------------------------------------------------------------


def test_csv_export(history, reader):
    response = reader.get(f"/dora/export.csv?{MARCH}&interval=weekly")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))

    assert response["Content-Type"].startswith("text/csv")
    assert 'filename="dora-production-all-services-2026-03-01-2026-03-31.csv"' in response["Content-Disposition"]
    total, api, web, *weeks = rows
    assert (total["kind"], total["name"], total["change_deployments"], total["failed_deployments"]) == (
        "total",
        "all services",
        "11",
        "2",
    )
    assert float(total["lead_time_median_hours"]) == pytest.approx(2)
    assert float(total["change_failure_rate"]) == pytest.approx(2 / 11)
    assert float(total["recovery_median_hours"]) == pytest.approx(1.25)
    assert total["change_failure_rate_band"] == "low"
    assert (api["name"], api["rollbacks"], web["name"], web["recovered_failures"]) == ("api", "1", "web", "1")
    assert [week["name"] for week in weeks] == [
        "2026-02-23",
        "2026-03-02",
        "2026-03-09",
        "2026-03-16",
        "2026-03-23",
        "2026-03-30",
    ]
    assert weeks[1]["change_deployments"] == "11"
    assert weeks[1]["deployment_frequency_band"] == ""


def test_json_export_is_the_api_document(history, reader):
    exported = reader.get(f"/dora/export.json?{MARCH}&team=backend-team")
    api = reader.get(f"/api/v1/dora/?{MARCH}&team=backend-team")

    assert 'filename="dora-production-backend-team-2026-03-01-2026-03-31.json"' in exported["Content-Disposition"]
    assert json.loads(exported.content) == api.json()


def test_export_refuses_a_bad_scope(history, reader):
    response = reader.get("/dora/export.csv?start=2026-04-01&end=2026-03-01")

    assert response.status_code == 400
    assert "is after the end" in response.content.decode()


def test_page_links_to_exports_of_the_same_scope(history, reader):
    html = reader.get(f"/dora/?{MARCH}&service=api").content.decode()

    assert (
        "/dora/export.csv?environment=production&amp;start=2026-03-01&amp;end=2026-03-31&amp;interval=weekly&amp;service=api"
        in html
    )


# --- PagerDuty webhook ---------------------------------------------------------------------------


def pagerduty_event(
    event_type,
    incident_id="PGR0VU2",
    service="web",
    created_at="2026-03-03T13:00:00Z",
    occurred_at="2026-03-03T13:00:05Z",
    priority="P1",
):
    """A V3 webhook body as PagerDuty documents it (developer-docs, webhooks/01-Overview)."""
    return {
        "event": {
            "id": "5ac64822-4adc-4fda-ade0-410becf0de4f",
            "event_type": event_type,
            "resource_type": "incident",
            "occurred_at": occurred_at,
            "agent": {"id": "PLH1HKV", "summary": "Tenex Engineer", "type": "user_reference"},
            "client": {"name": "PagerDuty"},
            "data": {
                "id": incident_id,
                "type": "incident",
                "self": f"https://api.pagerduty.com/incidents/{incident_id}",
                "html_url": f"https://acme.pagerduty.com/incidents/{incident_id}",
                "number": 2,
                "status": "resolved" if event_type == "incident.resolved" else "triggered",
                "incident_key": "d3640fbd41094207a1c11e58e46b1662",
                "created_at": created_at,
                "title": "Checkout errors above 5 %",
                "service": {"id": "PF9KMXH", "summary": service, "type": "service_reference"},
                "assignees": [],
                "escalation_policy": {"id": "PUS0KTE", "summary": "Default", "type": "escalation_policy_reference"},
                "teams": [],
                "priority": {"id": "PSO75BM", "summary": priority, "type": "priority_reference"},
                "urgency": "high",
                "conference_bridge": None,
                "resolve_reason": None,
            },
        }
    }


def sign(body, secret=SECRET):
    return "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver(payload, signature=None, secret=SECRET, query=""):
    body = json.dumps(payload).encode()
    headers = {}
    if signature is not False:
        headers["X-PagerDuty-Signature"] = signature or sign(body, secret)
    return Client().post(
        f"/api/v1/incidents/pagerduty/{query}", data=body, content_type="application/json", headers=headers
    )


@pytest.fixture
def webhook_secret(settings):
    settings.INCIDENT_WEBHOOK_SECRET = SECRET


def test_webhook_records_an_incident_against_the_deployment_running_then(history, webhook_secret):
    response = deliver(pagerduty_event("incident.triggered"))

    incident = Incident.objects.get(source=IncidentSource.PAGERDUTY)
    assert response.status_code == 202
    assert response.json()["incident"] == incident.pk
    assert (incident.service.name, incident.environment.name, incident.external_id) == ("web", "production", "PGR0VU2")
    assert incident.started_at == datetime(2026, 3, 3, 13, 0, tzinfo=UTC)
    assert incident.caused_by.release.version == "2026.03.2"  # web 2026.03.2 went live on 3 March at 12:00
    assert incident.resolved_at is None
    assert incident.severity == IncidentSeverity.CRITICAL
    assert AuditEvent.objects.filter(action=AuditAction.INCIDENT_RECORDED, actor="pagerduty").count() == 1


def test_webhook_resolution_and_repeated_delivery(history, webhook_secret, reader):
    deliver(pagerduty_event("incident.triggered"))
    deliver(pagerduty_event("incident.triggered"))  # at-least-once delivery
    deliver(pagerduty_event("incident.resolved", occurred_at="2026-03-03T14:30:00Z"))

    incident = Incident.objects.get(source=IncidentSource.PAGERDUTY)
    metrics = reader.get(f"/api/v1/dora/?{MARCH}&service=web").json()["metrics"]
    assert incident.resolved_at == datetime(2026, 3, 3, 14, 30, tzinfo=UTC)
    assert metrics["change_failure_rate"]["failed_deployments"] == 2
    # web 2026.03.2 finished at 12:00 and recovered at 14:30; 2026.03.1 in 2 h: median 2.25 h.
    assert metrics["failed_deployment_recovery_time"]["median_seconds"] == pytest.approx(2.25 * HOUR)


def test_webhook_a_late_or_replayed_trigger_does_not_reopen_a_resolved_incident(history, webhook_secret):
    deliver(pagerduty_event("incident.triggered"))
    deliver(pagerduty_event("incident.resolved", occurred_at="2026-03-03T14:30:00Z"))
    late = deliver(pagerduty_event("incident.triggered"))  # occurred 13:00:05, delivered after the resolve
    incident = Incident.objects.get(source=IncidentSource.PAGERDUTY)
    assert late.status_code == 202
    assert "before the last event applied" in late.json()["outcome"]
    assert incident.resolved_at == datetime(2026, 3, 3, 14, 30, tzinfo=UTC)

    deliver(pagerduty_event("incident.reopened", occurred_at="2026-03-03T15:00:00Z"))
    incident.refresh_from_db()
    assert incident.resolved_at is None, "a reopening that happened after the resolve does reopen it"


def test_webhook_a_priority_change_delivered_first_does_not_hide_the_resolve_before_it(history, webhook_secret):
    deliver(pagerduty_event("incident.triggered"))
    deliver(pagerduty_event("incident.priority_updated", occurred_at="2026-03-03T15:00:00Z", priority="P2"))
    deliver(pagerduty_event("incident.resolved", occurred_at="2026-03-03T14:30:00Z"))  # happened first, came last
    incident = Incident.objects.get(source=IncidentSource.PAGERDUTY)
    assert incident.resolved_at == datetime(2026, 3, 3, 14, 30, tzinfo=UTC)
    assert incident.severity == "high", "the resolve's older P1 did not undo the change to P2"


def test_webhook_accepts_a_rotated_secret_among_several_signatures(history, webhook_secret):
    payload = pagerduty_event("incident.triggered")
    body = json.dumps(payload).encode()

    response = deliver(payload, signature=f"{sign(body, 'old-secret')},{sign(body)}")

    assert response.status_code == 202
    assert Incident.objects.filter(source=IncidentSource.PAGERDUTY).exists()


@pytest.mark.parametrize(
    ("signature", "status", "message"),
    [
        (False, 401, "Unsigned request"),
        ("v1=" + "0" * 64, 403, "does not match"),
        ("sha256=abc", 403, "does not match"),
        ("v1=\u00e9t\u00e9", 403, "does not match"),
    ],
)
def test_webhook_refuses_missing_or_bad_signatures(history, webhook_secret, signature, status, message):
    response = deliver(pagerduty_event("incident.triggered"), signature=signature)

    assert response.status_code == status
    assert message in response.json()["message"]
    assert not Incident.objects.filter(source=IncidentSource.PAGERDUTY).exists()


def test_webhook_refuses_a_body_signed_with_another_secret(history, webhook_secret):
    response = deliver(pagerduty_event("incident.triggered"), secret="someone-else")

    assert response.status_code == 403


def test_webhook_is_closed_until_a_secret_is_configured(history, settings):
    settings.INCIDENT_WEBHOOK_SECRET = ""

    response = deliver(pagerduty_event("incident.triggered"), secret="anything")

    assert response.status_code == 503
    assert "INCIDENT_WEBHOOK_SECRET" in response.json()["message"]


def test_webhook_ignores_services_and_events_it_does_not_know(history, webhook_secret):
    unknown_service = deliver(pagerduty_event("incident.triggered", service="API Service"))
    other_event = deliver(pagerduty_event("incident.acknowledged"))

    assert (unknown_service.status_code, other_event.status_code) == (202, 202)
    assert "no portal service is called “API Service”" in unknown_service.json()["outcome"]
    assert not Incident.objects.filter(source=IncidentSource.PAGERDUTY).exists()


def test_webhook_resolves_a_known_incident_whose_pagerduty_service_was_renamed(history, webhook_secret):
    """An incident is found by its id: a resolve naming the service as PagerDuty calls it now (renamed,
    or the incident moved) still closes it, where before it was ignored and the incident stayed open."""
    deliver(pagerduty_event("incident.triggered"))
    resolved = deliver(pagerduty_event("incident.resolved", service="web (legacy)", occurred_at="2026-03-03T14:30:00Z"))

    assert resolved.json()["outcome"].startswith("updated incident")
    incident = Incident.objects.get(source=IncidentSource.PAGERDUTY)
    assert (incident.service.name, incident.resolved_at) == ("web", datetime(2026, 3, 3, 14, 30, tzinfo=UTC))


def test_webhook_two_first_deliveries_of_one_incident_at_once_both_apply(
    transactional_db, history, webhook_secret, monkeypatch
):
    """PagerDuty sends an incident's trigger and resolve within moments; two deliveries meeting on a new
    incident both created it, and the second answered 500 on the unique id. It is applied again."""
    both_inside = threading.Barrier(2, timeout=10)
    live_at = Deployment.objects.live_at

    def after_the_other_looked(*args):
        both_inside.wait()  # both found no incident and are about to create it
        return live_at(*args)

    monkeypatch.setattr(Deployment.objects, "live_at", after_the_other_looked)
    answers = {}

    def send(event_type, occurred_at):
        try:
            answers[event_type] = deliver(pagerduty_event(event_type, occurred_at=occurred_at))
        finally:
            connection.close()

    threads = [
        threading.Thread(target=send, args=("incident.triggered", "2026-03-03T13:00:05Z")),
        threading.Thread(target=send, args=("incident.resolved", "2026-03-03T14:30:00Z")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert {event: answer.status_code for event, answer in answers.items()} == {
        "incident.triggered": 202,
        "incident.resolved": 202,
    }
    incident = Incident.objects.get(source=IncidentSource.PAGERDUTY)
    assert incident.resolved_at == datetime(2026, 3, 3, 14, 30, tzinfo=UTC), "the later event, the resolve, wins"


def test_webhook_refuses_a_signed_body_that_is_not_an_event(history, webhook_secret):
    body = b'{"messages": []}'

    response = Client().post(
        "/api/v1/incidents/pagerduty/",
        data=body,
        content_type="application/json",
        headers={"X-PagerDuty-Signature": sign(body)},
    )

    assert response.status_code == 400
    assert "event.event_type" in response.json()["message"]


def test_webhook_environment_comes_from_the_subscription_whose_secret_signed_it(history, webhook_secret, settings):
    settings.INCIDENT_WEBHOOK_SECRETS = {"staging": "staging-secret"}
    deliver(pagerduty_event("incident.triggered", created_at="2026-03-02T10:00:00Z"), secret="staging-secret")

    incident = Incident.objects.get(source=IncidentSource.PAGERDUTY)
    assert incident.environment.name == "staging"
    assert incident.caused_by.environment.name == "staging"


def test_webhook_main_subscription_files_under_its_configured_environment(history, webhook_secret, settings):
    settings.INCIDENT_WEBHOOK_ENVIRONMENT = "staging"
    response = deliver(
        pagerduty_event("incident.triggered", created_at="2026-03-02T10:00:00Z"), query="?environment=staging"
    )

    assert response.status_code == 202
    assert Incident.objects.get(source=IncidentSource.PAGERDUTY).environment.name == "staging"


def test_webhook_a_replayed_delivery_cannot_be_moved_by_the_unsigned_url(history, webhook_secret, settings):
    settings.INCIDENT_WEBHOOK_SECRETS = {"staging": "staging-secret"}
    payload = pagerduty_event("incident.triggered", created_at="2026-03-02T10:00:00Z")
    assert deliver(payload).status_code == 202  # production's subscription

    replayed = deliver(payload, query="?environment=staging")

    assert replayed.status_code == 400
    assert "signed with the secret of the subscription for production" in replayed.json()["message"]
    assert replayed.json()["errors"][0]["field"] == "environment"
    assert [incident.environment.name for incident in Incident.objects.filter(source=IncidentSource.PAGERDUTY)] == [
        "production"
    ]


def test_webhook_a_subscription_for_an_environment_that_does_not_exist_is_a_configuration_error(history, settings):
    settings.INCIDENT_WEBHOOK_SECRETS = {"prod": SECRET}

    response = deliver(pagerduty_event("incident.triggered"))

    assert response.status_code == 503
    assert "configured for the environment “prod”, which does not exist" in response.json()["message"]
    assert not Incident.objects.filter(source=IncidentSource.PAGERDUTY).exists()


# --- admin ----------------------------------------------------------------------------------------


def test_incident_entered_in_the_admin_counts_as_a_failure(history, environments, reader):
    admin = Client()
    admin.force_login(make_user("ops", is_staff=True, is_superuser=True))
    deployment = Deployment.objects.get(
        service__name="api", release__version="2026.03.2", environment__name="production"
    )

    response = admin.post(
        "/admin/releases/incident/add/",
        {
            "service": history["api"].pk,
            "environment": environments["production"].pk,
            "title": "Payments failing",
            "severity": "high",
            "started_at_0": "2026-03-03",
            "started_at_1": "10:00:00",
            "resolved_at_0": "2026-03-03",
            "resolved_at_1": "11:00:00",
            "caused_by": deployment.pk,
        },
    )

    incident = Incident.objects.get(title="Payments failing")
    assert response.status_code == 302
    assert incident.source == IncidentSource.MANUAL
    assert (
        reader.get(f"/api/v1/dora/?{MARCH}&service=api").json()["metrics"]["change_failure_rate"]["failed_deployments"]
        == 2
    )


def test_admin_refuses_an_incident_linked_to_another_services_deployment(history, environments):
    admin = Client()
    admin.force_login(make_user("ops", is_staff=True, is_superuser=True))
    other = Deployment.objects.filter(service__name="web").first()

    response = admin.post(
        "/admin/releases/incident/add/",
        {
            "service": history["api"].pk,
            "environment": environments["production"].pk,
            "title": "Wrong link",
            "severity": "high",
            "started_at_0": "2026-03-03",
            "started_at_1": "10:00:00",
            "caused_by": other.pk,
        },
    )

    assert response.status_code == 200
    assert "Choose a deployment of the same service" in response.content.decode()
    assert not Incident.objects.filter(title="Wrong link").exists()
