"""A token limited to services reads only those services; a session and an unlimited token read them all."""

import json

import pytest
from django.utils import timezone

from releases import transitions
from releases.models import Deployment
from tests.factories import make_release, make_service, make_user
from tests.test_api import session_client, token_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(environments, redis_connection, rita):
    """nexo-be and nexo-fe, each with a release deployed in develop and a newer one requested there."""
    backend = make_service("nexo-be", team="backend-team")
    frontend = make_service("nexo-fe", team="frontend-team")
    fiona = make_user("fiona", groups=["frontend-team"])
    promotions = {}
    for service, person in ((backend, rita), (frontend, fiona)):
        release = make_release(service, "2026.02.1", committed_at=timezone.now())
        Deployment.objects.create(
            service=service, environment=environments["develop"], release=release, deployed_at=timezone.now()
        )
        newer = make_release(service, "2026.02.2", committed_at=timezone.now())
        promotions[service.name] = transitions.request_promotion(newer, environments["develop"], person)
    return {"backend": backend, "frontend": frontend, "promotions": promotions, "rita": rita}


def limited(world):
    return token_client("read", services=[world["backend"]])


def services_in(rows, key="service"):
    return {row[key] for row in rows}


def test_limited_token_lists_only_its_services_releases_and_promotions(world):
    client = limited(world)
    assert services_in(client.get("/api/v1/releases/").json()["results"]) == {"nexo-be"}
    assert services_in(client.get("/api/v1/promotions/").json()["results"]) == {"nexo-be"}
    # Asking for another service by filter finds nothing rather than that service's rows.
    assert client.get("/api/v1/promotions/", {"service": "nexo-fe"}).json()["count"] == 0


def test_limited_token_is_refused_another_services_release_and_promotion(world):
    client = limited(world)
    response = client.get("/api/v1/services/nexo-fe/releases/2026.02.1/")
    assert response.status_code == 403
    assert response.json()["message"] == "This API token may act on nexo-be only, not on nexo-fe."
    response = client.get(f"/api/v1/promotions/{world['promotions']['nexo-fe'].pk}/")
    assert response.status_code == 403
    assert client.get("/api/v1/services/nexo-be/releases/2026.02.1/").status_code == 200
    assert client.get(f"/api/v1/promotions/{world['promotions']['nexo-be'].pk}/").status_code == 200


def test_limited_token_sees_only_its_services_in_the_matrix(world):
    client = limited(world)
    assert services_in(client.get("/api/v1/matrix/").json()) == {"nexo-be"}
    assert client.get("/api/v1/matrix/", {"team": "frontend-team"}).json() == []


def test_limited_token_reads_only_its_services_audit_events(world):
    client = limited(world)
    events = client.get("/api/v1/audit/", {"page_size": 500}).json()["results"]
    assert services_in(events) == {"nexo-be"}
    exported = json.loads(b"".join(client.get("/api/v1/audit/export/", {"per": "step"}).streaming_content))
    assert {record["service"] for record in exported} == {"nexo-be"}


def test_limited_token_gets_dora_of_its_services_only(world):
    client = limited(world)
    report = client.get("/api/v1/dora/", {"environment": "develop"}).json()
    assert services_in(report["services"]) == {"nexo-be"}
    assert report["metrics"]["deployment_frequency"]["change_deployments"] == 1
    response = client.get("/api/v1/dora/", {"environment": "develop", "service": "nexo-fe"})
    assert response.status_code == 403


def test_a_token_whose_services_were_all_deleted_reads_no_service(world):
    typo = make_service("nexo-bee")
    client = token_client("read", services=[typo])
    assert client.get("/api/v1/dora/", {"environment": "develop", "service": "nexo-be"}).status_code == 403
    typo.delete()
    response = client.get("/api/v1/dora/", {"environment": "develop", "service": "nexo-be"})
    assert response.status_code == 403
    assert response.json()["message"] == (
        "This API token was limited to services that no longer exist: it may act on none. "
        "Ask a platform engineer for a new one."
    )
    assert client.get(f"/api/v1/promotions/{world['promotions']['nexo-be'].pk}/").status_code == 403
    assert client.get("/api/v1/releases/").json()["count"] == 0
    assert client.get("/api/v1/promotions/").json()["count"] == 0
    assert client.get("/api/v1/matrix/").json() == []
    assert client.get("/api/v1/audit/").json()["count"] == 0
    assert client.get("/api/v1/dora/", {"environment": "develop"}).json()["services"] == []


def test_unlimited_tokens_and_people_read_every_service(world):
    ci = token_client("read")
    personal = token_client("read", user=world["rita"])
    person = session_client(world["rita"])
    for client in (ci, personal, person):
        assert services_in(client.get("/api/v1/promotions/").json()["results"]) == {"nexo-be", "nexo-fe"}
        assert services_in(client.get("/api/v1/matrix/").json()) == {"nexo-be", "nexo-fe"}
        report = client.get("/api/v1/dora/", {"environment": "develop"}).json()
        assert report["metrics"]["deployment_frequency"]["change_deployments"] == 2
        assert client.get(f"/api/v1/promotions/{world['promotions']['nexo-fe'].pk}/").status_code == 200


def test_personal_token_limited_to_services_reads_only_those(world):
    client = token_client("read", services=[world["backend"]], user=world["rita"])
    assert services_in(client.get("/api/v1/releases/").json()["results"]) == {"nexo-be"}
