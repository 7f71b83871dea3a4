"""The Argo CD Notifications webhook: HMAC-signed, replays refused, events applied to promotions."""

import json
import time
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from releases import argocd_health, transitions
from releases.deployment_events import signature_for
from releases.models import Deployment, DeploymentEvent, PromotionState
from tests.factories import make_release, make_service
from tests.history import ran

pytestmark = pytest.mark.django_db

SECRET = "argocd-notifications-shared-secret"
URL = "/api/v1/webhooks/argocd/"


@pytest.fixture
def syncing(environments, settings, redis_connection):
    settings.ARGOCD_WEBHOOK_SECRET = SECRET
    service = make_service("nexo-be")
    promotion = transitions.request_promotion(make_release(service, "2026.02.1"), environments["develop"], None)
    promotion = transitions.mark_committed(
        transitions.start_commit(promotion), "c" * 40, "promote(nexo-be): develop → 2026.02.1"
    )
    return transitions.mark_syncing(promotion, configured=True)


def deliver(payload, *, secret=SECRET, timestamp=None, signature=None, raw=None):
    body = raw if raw is not None else json.dumps(payload).encode()
    timestamp = str(int(time.time())) if timestamp is None else timestamp
    headers = {"HTTP_X_NEXO_TIMESTAMP": timestamp}
    if signature is not False:
        headers["HTTP_X_NEXO_SIGNATURE"] = signature or f"sha256={signature_for(secret, timestamp, body)}"
    return Client().post(URL, body, content_type="application/json", **headers)


def deployed(revision="c" * 40, **extra):
    return {
        "trigger": "on-deployed",
        "application": "nexo-be-develop",
        "revision": revision,
        "sync_status": "Synced",
        "health_status": "Healthy",
        "phase": "Succeeded",
        "message": "successfully synced (all tasks run)",
        **extra,
    }


def test_a_signed_on_deployed_event_moves_the_syncing_promotion(syncing):
    response = deliver(deployed())
    assert response.status_code == 202, response.content
    assert response.json()["outcome"] == f"Promotion #{syncing.pk} is deployed."
    syncing.refresh_from_db()
    assert syncing.state == PromotionState.DEPLOYED
    assert Deployment.objects.get(promotion=syncing).health == "Healthy"


def test_an_on_sync_failed_event_fails_the_promotion_with_argo_cds_message(syncing):
    response = deliver(
        {
            "trigger": "on-sync-failed",
            "application": "nexo-be-develop",
            "revision": "c" * 40,
            "phase": "Failed",
            "message": "one or more objects failed to apply",
        }
    )
    assert response.status_code == 202
    syncing.refresh_from_db()
    assert syncing.state == PromotionState.FAILED
    assert "one or more objects failed to apply" in syncing.error


def test_a_replayed_delivery_is_refused(syncing):
    timestamp = str(int(time.time()))
    assert deliver(deployed(), timestamp=timestamp).status_code == 202
    replay = deliver(deployed(), timestamp=timestamp)
    assert replay.status_code == 409
    assert "refused as a replay" in replay.json()["message"]
    assert DeploymentEvent.objects.count() == 1


def test_an_old_delivery_is_refused_even_with_a_good_signature(syncing):
    response = deliver(deployed(), timestamp=str(int(time.time()) - 3600))
    assert response.status_code == 401
    assert "more than five minutes old" in response.json()["message"]


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({"signature": False}, "Unsigned delivery"),
        ({"signature": "sha256=" + "0" * 64}, "does not match the body"),
        ({"secret": "someone-elses-secret"}, "does not match the body"),
        ({"signature": "md5=abc"}, "does not match the body"),
        ({"signature": "sha256=\u00e9t\u00e9"}, "does not match the body"),
        ({"timestamp": "yesterday"}, "Unix time in seconds"),
    ],
)
def test_unsigned_or_badly_signed_deliveries_are_refused_and_change_nothing(syncing, kwargs, complaint):
    response = deliver(deployed(), **kwargs)
    assert response.status_code == 401
    body = response.json()
    assert complaint in body["message"]
    assert set(body) == {"status", "code", "message", "errors"}
    syncing.refresh_from_db()
    assert syncing.state == PromotionState.SYNCING
    assert not DeploymentEvent.objects.exists()


def test_a_body_tampered_after_signing_is_refused(syncing):
    timestamp = str(int(time.time()))
    signature = f"sha256={signature_for(SECRET, timestamp, json.dumps(deployed()).encode())}"
    response = deliver(
        None, raw=json.dumps(deployed(health_status="Degraded")).encode(), timestamp=timestamp, signature=signature
    )
    assert response.status_code == 401


def test_a_signed_but_malformed_body_is_a_400_naming_the_field(syncing):
    response = deliver({"trigger": "on-exploded", "application": "nexo-be-develop", "revision": "short"})
    assert response.status_code == 400
    assert {error["field"] for error in response.json()["errors"]} == {"trigger", "revision"}


def test_an_event_for_an_unknown_application_is_recorded_only(syncing):
    response = deliver(deployed(application="someone-elses-app"))
    assert response.status_code == 202
    assert "recorded only" in response.json()["outcome"]


def test_an_event_for_an_unknown_application_with_the_longest_name_is_recorded_only(syncing):
    """Kubernetes allows 253 characters; the sentence naming it overflowed the outcome's column: a 500,
    and Argo CD Notifications delivered it again and again."""
    application = "a" * 253
    response = deliver(deployed(application=application))
    assert response.status_code == 202
    assert response.json()["outcome"].startswith(f"No service and environment use the Argo CD application {'a' * 100}")


def test_the_webhook_is_off_until_a_secret_is_configured(syncing, settings):
    settings.ARGOCD_WEBHOOK_SECRET = ""
    assert deliver(deployed()).status_code == 503


# --- the health it brings: written as every observation of Argo CD is (releases/argocd_health.py) -----------


@pytest.fixture
def running(environments, settings):
    """nexo-be 2026.02.1 runs in develop, deployed by the commit c…c an hour ago; Argo CD saw it Healthy
    ten minutes ago."""
    settings.ARGOCD_WEBHOOK_SECRET = SECRET
    ran(
        make_release(make_service("nexo-be"), "2026.02.1"),
        environments["develop"],
        at=timezone.now() - timedelta(hours=1),
    )
    seen = timezone.now() - timedelta(minutes=10)
    Deployment.objects.update(health="Healthy", health_checked_at=seen)
    return seen


def current():
    return Deployment.objects.current().select_related("service", "environment", "release").get()


def test_a_late_delivery_does_not_overwrite_a_health_seen_after_it_was_sent(running):
    """The delivery was signed two minutes ago (a relay's queue, Argo CD Notifications retrying); a
    reconciler round saw the application Degraded a minute ago. The later observation stands: the board
    does not say Healthy over it."""
    degraded_at = timezone.now() - timedelta(minutes=1)
    assert argocd_health.note(current(), "Degraded", degraded_at)

    response = deliver(deployed(health_status="Healthy"), timestamp=str(int(time.time()) - 120))

    assert response.status_code == 202, response.content
    assert (current().health, current().health_checked_at) == ("Degraded", degraded_at)


def test_a_delivery_of_the_health_shown_keeps_since_when_it_holds(running):
    """The board says "Argo CD health since …": a delivery repeating the health is no change, so the time
    stays the first sighting's and the board's rows stay as rendered."""
    response = deliver(deployed(health_status="Healthy"))

    assert response.status_code == 202, response.content
    assert (current().health, current().health_checked_at) == ("Healthy", running)


def test_a_delivery_of_a_new_health_is_written_with_when_it_was_sent_and_logged(running, caplog):
    sent = int(time.time()) - 30

    with caplog.at_level("INFO", logger="releases.argocd_health"):
        response = deliver(deployed(health_status="Degraded"), timestamp=str(sent))

    assert response.status_code == 202, response.content
    assert (current().health, current().health_checked_at.timestamp()) == ("Degraded", sent)
    assert [record.getMessage() for record in caplog.records if record.name == "releases.argocd_health"] == [
        "Argo CD reports nexo-be 2026.02.1 in develop Degraded (it was Healthy)"
    ]


def test_a_delivery_stamped_ahead_of_the_portals_clock_is_taken_as_received(running):
    """A relay whose clock runs a few minutes fast (allowed: five minutes either way) does not stamp the
    health as seen in the future, where it would stand over every round until then."""
    deliver(deployed(health_status="Degraded"), timestamp=str(int(time.time()) + 240))

    assert current().health_checked_at <= timezone.now()
    assert argocd_health.note(current(), "Healthy", timezone.now())
