"""Incidents from PagerDuty V3 webhooks: signature check and event → Incident.

PagerDuty signs the raw body with HMAC-SHA256 and sends `X-PagerDuty-Signature: v1=<hex>`,
several comma-separated signatures while a secret is being rotated. Only the body is signed, not the
URL nor any header: where an incident is filed comes from the portal's configuration of the
subscription whose secret signed it (`subscriptions()`), never from the request. Deliveries are
at-least-once and a 4xx answer is never retried, so an event is applied idempotently
(keyed by the PagerDuty incident id) and refusals are reserved for bad requests. A signed body is
still read as untrusted: every field is checked for its JSON type and length before use.
"""

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils.dateparse import parse_datetime

from nexo_portal.lib import dates, inert
from releases.models import Deployment, Incident, IncidentSeverity, IncidentSource, Service

OPENING_EVENTS = {"incident.triggered", "incident.reopened"}
HANDLED_EVENTS = OPENING_EVENTS | {"incident.resolved", "incident.priority_updated"}
PRIORITY_SEVERITY = {
    "P1": IncidentSeverity.CRITICAL,
    "P2": IncidentSeverity.HIGH,
    "P3": IncidentSeverity.MEDIUM,
    "P4": IncidentSeverity.LOW,
    "P5": IncidentSeverity.LOW,
}
URGENCY_SEVERITY = {"high": IncidentSeverity.HIGH, "low": IncidentSeverity.LOW}


class InvalidEvent(Exception):
    """The body is not a PagerDuty V3 incident event we can read; the message says what is missing."""


def signature_is_valid(body, header, secret):
    """True when one of the header's v1 signatures is the HMAC-SHA256 of the body with the secret."""
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    candidates = [part.strip() for part in (header or "").split(",")]
    return any(
        # As bytes: compare_digest refuses str with non-ASCII characters, which a header may carry.
        hmac.compare_digest(candidate.removeprefix("v1=").encode(), expected.encode())
        for candidate in candidates
        if candidate.startswith("v1=")
    )


def subscriptions():
    """The configured subscriptions as (environment name, secret); "" names DORA's default environment."""
    configured = []
    if settings.INCIDENT_WEBHOOK_SECRET:
        configured.append((settings.INCIDENT_WEBHOOK_ENVIRONMENT, settings.INCIDENT_WEBHOOK_SECRET))
    configured += [(name, secret) for name, secret in settings.INCIDENT_WEBHOOK_SECRETS.items() if secret]
    return configured


def signing_environment(body, header, configured):
    """The environment name of the subscription whose secret signed `body` ("" for the default one),
    or None when none did."""
    return next((name for name, secret in configured if signature_is_valid(body, header, secret)), None)


def _json_type(value):
    for kind, name in ((bool, "true or false"), (dict, "an object"), (list, "an array"), (str, "a string")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else "a number"


def _object(container, key, name):
    """The object at `key`; {} when it is absent or null."""
    value = container.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidEvent(f"{name} must be an object, got {_json_type(value)}.")
    return value


def _text(container, key, name, max_length=1000):
    """The string at `key`; "" when it is absent or null."""
    value = container.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidEvent(f"{name} must be a string, got {_json_type(value)}.")
    if len(value) > max_length:
        raise InvalidEvent(f"{name} is longer than {max_length} characters.")
    return value


def _timestamp(container, key, name):
    text = _text(container, key, name, max_length=40)
    try:
        moment = parse_datetime(text) if text else None
    except ValueError:  # the shape of a date-time, with a 13th month or a 25th hour
        moment = None
    if moment is None or moment.tzinfo is None or not dates.in_range(moment):
        raise InvalidEvent(f"{name} must be an ISO 8601 date and time with its offset, got {text!r}.")
    return moment


def _severity(data):
    """PagerDuty's priority when the account uses priorities, else its urgency."""
    priority = _text(_object(data, "priority", "event.data.priority"), "summary", "event.data.priority.summary")
    urgency = _text(data, "urgency", "event.data.urgency")
    return PRIORITY_SEVERITY.get(priority) or URGENCY_SEVERITY.get(urgency, IncidentSeverity.HIGH)


def apply_event(payload, environment):
    """Create or update the Incident the event is about. Returns (incident or None, what was done)."""
    event = payload.get("event") if isinstance(payload, dict) else None
    if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
        raise InvalidEvent("The body must be a PagerDuty V3 webhook: an object with event.event_type and event.data.")
    event_type = _text(event, "event_type", "event.event_type")
    if event_type not in HANDLED_EVENTS:
        return None, f"ignored: {event_type or 'an event without a type'} does not change an incident's timeline"
    data = event["data"]
    incident_id = _text(data, "id", "event.data.id", max_length=100)
    if _text(data, "type", "event.data.type") != "incident" or not incident_id:
        raise InvalidEvent(f"{event_type} must carry the incident in event.data (type incident, with an id).")
    service_name = _text(_object(data, "service", "event.data.service"), "summary", "event.data.service.summary")
    occurred_at = _timestamp(event, "occurred_at", "event.occurred_at")
    started_at = _timestamp(data, "created_at", "event.data.created_at")
    title = _text(data, "title", "event.data.title", max_length=10_000)[:255]
    url = _text(data, "html_url", "event.data.html_url", max_length=200)
    if url and not inert.is_http_url(url):
        url = ""  # shown as a link: only http(s) is kept; the incident itself still counts
    severity = _severity(data)
    parsed = _Event(event_type, incident_id, service_name, occurred_at, started_at, title, url, severity)
    try:
        with transaction.atomic():
            return _apply(parsed, environment)
    except IntegrityError:
        # PagerDuty delivered two events of a new incident at once, and the other delivery created it
        # first: applied again, this one finds it (locked) and orders itself after it.
        with transaction.atomic():
            return _apply(parsed, environment)


@dataclass(frozen=True)
class _Event:
    event_type: str
    incident_id: str
    service_name: str
    occurred_at: datetime
    started_at: datetime
    title: str
    url: str
    severity: str


def _apply(event, environment):
    incident = (
        Incident.objects.select_for_update()
        .filter(source=IncidentSource.PAGERDUTY, external_id=event.incident_id)
        .first()
    )
    created = incident is None
    if created:
        # A known incident is found by its id whatever its PagerDuty service is called now (renamed,
        # or the incident moved): only a new one needs a portal service of that name.
        service = Service.objects.filter(name=event.service_name).first()
        if service is None:
            return None, (
                f"ignored: no portal service is called “{event.service_name}” (name the PagerDuty service after it)"
            )
        incident = Incident(
            source=IncidentSource.PAGERDUTY,
            external_id=event.incident_id,
            service=service,
            environment=environment,
            started_at=event.started_at,
            # The deployment running when it started is the suspect (saving blames the change that brought
            # its version, should it be a redeploy); an operator can correct it in the admin.
            caused_by=Deployment.objects.live_at(service, environment, event.started_at),
        )
    elif incident.external_updated_at and event.occurred_at < incident.external_updated_at:
        # PagerDuty may deliver late or out of order; a signature has no time in it, so a replay
        # looks the same. Either way, what happened before the last change applied changes nothing.
        return incident, (
            f"ignored: this {event.event_type} occurred at {event.occurred_at.isoformat()}, before the last event "
            f"applied to incident {incident.pk} ({incident.external_updated_at.isoformat()})"
        )
    incident.title = event.title or f"PagerDuty incident {event.incident_id}"
    incident.external_url = event.url
    if created or event.event_type == "incident.priority_updated":
        # Only these say the priority now; a late trigger or resolve carries an older one.
        incident.severity = event.severity
    if event.event_type in OPENING_EVENTS:
        incident.resolved_at = None
    elif event.event_type == "incident.resolved":
        incident.resolved_at = max(event.occurred_at, incident.started_at)
    if event.event_type != "incident.priority_updated":
        # Only what opens or resolves it orders the events that may; a priority change does not.
        incident.external_updated_at = event.occurred_at
    incident.save()
    verb = {"incident.resolved": "resolved", "incident.reopened": "reopened"}.get(event.event_type, "triggered")
    if created or event.event_type != "incident.priority_updated":
        incident.audit("pagerduty", verb=verb)
    return incident, f"{'created' if created else 'updated'} incident {incident.pk} ({verb})"
