"""Whatever links an incident to a deployment blames the change that introduced the running version:
a redeploy is not a change, so a failure while one is live belongs to the change it repeated."""

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.urls import reverse

from releases.dora import metrics as dora
from releases.models import Deployment, Incident, IncidentSource
from tests.factories import make_release, make_service, make_user

pytestmark = pytest.mark.django_db

MONDAY = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SECRET = "pd-webhook-secret-for-tests"


def at(days=0, hours=0):
    return MONDAY + timedelta(days=days, hours=hours)


@pytest.fixture
def web(environments):
    """web in production: 2026.03.1 (a change), 2026.03.2 (a change), then 2026.03.2 again (a redeploy)."""
    service = make_service("web", team="frontend-team")
    production = environments["production"]
    deployments = {}
    for name, version, when in (
        ("first", "2026.03.1", at(0)),
        ("change", "2026.03.2", at(1)),
        ("redeploy", "2026.03.2", at(2)),
    ):
        release = service.releases.filter(version=version).first() or make_release(
            service, version, committed_at=when - timedelta(hours=1)
        )
        deployments[name] = Deployment.objects.record(release=release, environment=production, deployed_at=when)
    assert not deployments["redeploy"].is_change
    return service, production, deployments


def march_failures():
    return dora.report(start=datetime(2026, 3, 1).date(), end=datetime(2026, 3, 31).date()).overall.failed_deployments


def test_pagerduty_incident_during_a_redeploy_blames_the_change_it_repeated(web, settings):
    service, _, deployments = web
    settings.INCIDENT_WEBHOOK_SECRET = SECRET
    body = json.dumps(
        {
            "event": {
                "id": "5ac64822-4adc-4fda-ade0-410becf0de4f",
                "event_type": "incident.triggered",
                "resource_type": "incident",
                "occurred_at": "2026-03-04T13:00:05Z",
                "data": {
                    "id": "PGR0VU2",
                    "type": "incident",
                    "created_at": "2026-03-04T13:00:00Z",  # while the redeploy of 4 March runs
                    "title": "Checkout errors above 5 %",
                    "service": {"id": "PF9KMXH", "summary": service.name, "type": "service_reference"},
                    "urgency": "high",
                },
            }
        }
    ).encode()
    signature = "v1=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()

    response = Client().post(
        "/api/v1/incidents/pagerduty/",
        data=body,
        content_type="application/json",
        headers={"X-PagerDuty-Signature": signature},
    )

    assert response.status_code == 202
    incident = Incident.objects.get(source=IncidentSource.PAGERDUTY)
    assert incident.caused_by == deployments["change"]
    assert march_failures() == 1


def test_rollback_of_a_redeploy_blames_the_change_it_repeated(web):
    _, production, deployments = web

    rollback = Deployment.objects.record(
        release=deployments["first"].release, environment=production, deployed_at=at(3), is_rollback=True
    )

    assert Incident.objects.get(fixed_by=rollback).caused_by == deployments["change"]
    assert march_failures() == 1


def test_hotfix_deployed_over_a_redeploy_blames_the_change_it_repeated(web):
    service, production, deployments = web
    hotfix = make_release(
        service, "2026.03.3-hotfix", committed_at=at(3), is_hotfix=True, fixes=deployments["change"].release
    )

    deployment = Deployment.objects.record(release=hotfix, environment=production, deployed_at=at(3, hours=2))

    assert Incident.objects.get(fixed_by=deployment).caused_by == deployments["change"]
    assert march_failures() == 1


def test_incident_entered_in_the_admin_against_a_redeploy_blames_the_change_it_repeated(web, client):
    service, production, deployments = web
    client.force_login(make_user("operator", is_staff=True, is_superuser=True))

    response = client.post(
        reverse("admin:releases_incident_add"),
        {
            "service": service.pk,
            "environment": production.pk,
            "title": "Checkout errors",
            "severity": "high",
            "started_at_0": "2026-03-04",
            "started_at_1": "13:00:00",
            "caused_by": deployments["redeploy"].pk,
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    assert Incident.objects.get(source=IncidentSource.MANUAL).caused_by == deployments["change"]
    assert march_failures() == 1


def test_history_recorded_late_before_a_blamed_change_moves_the_blame_to_the_change(web):
    """An import records a hand-made deployment of 2026.03.2 before the portal's: the portal's becomes
    a redeploy, and the incident that blamed it must follow the change, or the failure stops counting."""
    service, production, deployments = web
    incident = Incident.objects.create(
        service=service, environment=production, title="checkout down", started_at=at(1, hours=2),
        caused_by=deployments["change"],
    )  # fmt: skip
    assert march_failures() == 1

    imported = Deployment.objects.record(
        release=deployments["change"].release, environment=production, deployed_at=at(0, hours=12)
    )

    deployments["change"].refresh_from_db()
    incident.refresh_from_db()
    assert (imported.is_change, deployments["change"].is_change) == (True, False)
    assert incident.caused_by == imported
    assert march_failures() == 1


def test_history_recorded_late_as_a_rollback_leaves_the_incident_its_deployment(web):
    """The late deployment of the same release is a rollback (an imported rollback commit): the portal's
    becomes a redeploy of it with no change before, and its incident must not be left blaming nothing."""
    service, production, deployments = web
    incident = Incident.objects.create(
        service=service, environment=production, title="checkout down", started_at=at(1, hours=2),
        caused_by=deployments["change"],
    )  # fmt: skip

    Deployment.objects.record(
        release=deployments["change"].release, environment=production, deployed_at=at(0, hours=12), is_rollback=True
    )

    incident.refresh_from_db()
    assert incident.caused_by == deployments["change"]


def test_incident_during_a_rollback_still_blames_the_rollback(web):
    """A rollback introduced no change: nothing else can be blamed, so it stays the suspect."""
    service, production, deployments = web
    rollback = Deployment.objects.record(
        release=deployments["first"].release, environment=production, deployed_at=at(3), is_rollback=True
    )

    incident = Incident.objects.create(
        service=service, environment=production, title="still broken", started_at=at(3, hours=1), caused_by=rollback
    )

    assert incident.caused_by == rollback
