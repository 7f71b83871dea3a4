"""Deployment events from Argo CD Notifications: verify the signature, refuse replays, apply them.

Argo CD's webhook body is a template; the portal expects this JSON (docs/argocd-notifications.md):

    {"trigger": "on-deployed" | "on-sync-failed", "application": "nexo-be-production",
     "revision": "<commit sha>", "sync_status": "Synced", "health_status": "Healthy",
     "phase": "Succeeded", "message": "successfully synced (all tasks run)"}

signed with `X-Nexo-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>` and
`X-Nexo-Timestamp: <unix seconds>`. A delivery older or newer than five minutes, or one whose
signature was seen before, is refused.
"""

import hashlib
import hmac
import re
import time
from datetime import UTC, datetime

from django.db import IntegrityError, transaction

from environments.models import Environment

from . import argocd_health, transitions
from .models import Deployment, DeploymentEvent, DeploymentEventTrigger, Promotion, PromotionState, Service
from .policy import PromotionError

MAX_CLOCK_SKEW_SECONDS = 300
# Unix seconds in ASCII digits, bounded: int() takes 4,300 digits, and time.time() minus such a number
# overflows a float.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class WebhookRefused(Exception):
    """The delivery is refused; `status` is the HTTP status to answer with."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


def signature_for(secret, timestamp, body):
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def check_signature(secret, timestamp, signature_header, body, now=None):
    """Return the hex signature if the delivery is authentic and fresh; raise WebhookRefused otherwise."""
    if not secret:
        raise WebhookRefused(
            "The Argo CD webhook is not configured on the portal (ARGOCD_WEBHOOK_SECRET is unset).", 503
        )
    if not signature_header or not timestamp:
        raise WebhookRefused("Unsigned delivery: X-Nexo-Signature and X-Nexo-Timestamp headers are required.", 401)
    if not _TIMESTAMP.fullmatch(timestamp):
        raise WebhookRefused("X-Nexo-Timestamp must be a Unix time in seconds, e.g. 1770000000.", 401)
    sent_at = int(timestamp)
    if abs((now or time.time()) - sent_at) > MAX_CLOCK_SKEW_SECONDS:
        raise WebhookRefused(
            "The delivery is more than five minutes old (or from the future): refused as a replay.", 401
        )
    scheme, _, given = signature_header.partition("=")
    expected = signature_for(secret, timestamp, body)
    # As bytes: compare_digest refuses str with non-ASCII characters, which a header may carry.
    if scheme != "sha256" or not hmac.compare_digest(given.encode(), expected.encode()):
        raise WebhookRefused("The signature does not match the body: check the shared secret.", 401)
    return expected


def _place_of(application):
    """The (service, environment) whose Argo CD application has this name."""
    environments = list(Environment.objects.all())
    for service in Service.objects.all():
        for environment in environments:
            if service.argocd_app(environment) == application:
                return service, environment
    return None, None


@transaction.atomic
def apply(payload, signature, timestamp):
    """Record the delivery and move the promotion it concerns. Returns the stored event.

    `timestamp`: its X-Nexo-Timestamp, checked (`check_signature`).
    """
    service, environment = _place_of(payload["application"])
    event = DeploymentEvent(
        trigger=payload["trigger"],
        application=payload["application"],
        revision=payload.get("revision", ""),
        sync_status=payload.get("sync_status", ""),
        health_status=payload.get("health_status", ""),
        phase=payload.get("phase", ""),
        message=payload.get("message", ""),
        signature=signature,
    )
    try:
        with transaction.atomic():
            event.save()
    except IntegrityError:
        raise WebhookRefused("This delivery was received before: refused as a replay.", 409) from None

    if service is None:
        outcome = f"No service and environment use the Argo CD application {event.application}; recorded only."
    else:
        outcome = _move_promotion(event, service, environment, _seen_at(timestamp, event.received_at))
    # Cut to the column: an application's name may take 253 characters of it.
    event.outcome = outcome[: DeploymentEvent._meta.get_field("outcome").max_length]
    event.save(update_fields=["promotion", "outcome"])
    return event


def _seen_at(timestamp, received_at):
    """When the health a delivery brings was seen: when it was sent, which may be minutes before it
    arrived (a relay's queue, a retry), so that it never stands over a health a reconciler round saw
    meanwhile; a sender's clock running fast is taken as the portal's, lest its health stand over
    every round until then."""
    return min(datetime.fromtimestamp(int(timestamp), UTC), received_at)


def _move_promotion(event, service, environment, seen_at):
    promotion = (
        Promotion.objects.filter(service=service, environment=environment, gitops_commit_sha=event.revision)
        .exclude(gitops_commit_sha="")
        .order_by("-requested_at")
        .first()
    )
    event.promotion = promotion
    if event.trigger == DeploymentEventTrigger.ON_DEPLOYED:
        # The health of what its commit deployed, and only while that still runs there.
        deployment = Deployment.objects.running(service, environment)
        if deployment is not None and deployment.gitops_commit_sha == event.revision:
            deployment.service, deployment.environment = service, environment
            argocd_health.note(deployment, event.health_status, seen_at)
    if promotion is None:
        return "No promotion made this commit; recorded only."
    try:
        if event.trigger == DeploymentEventTrigger.ON_DEPLOYED and promotion.state == PromotionState.SYNCING:
            transitions.mark_deployed(promotion, health=event.health_status)
            return f"Promotion #{promotion.pk} is deployed."
        if event.trigger == DeploymentEventTrigger.ON_SYNC_FAILED and promotion.state in (
            PromotionState.COMMITTED,
            PromotionState.SYNCING,
        ):
            transitions.fail(promotion, "sync", f"Argo CD {event.application}: {event.phase} {event.message}".strip())
            return f"Promotion #{promotion.pk} failed at sync."
    except PromotionError as refusal:
        return f"Promotion #{promotion.pk} not moved: {refusal}"
    return f"Promotion #{promotion.pk} is {promotion.get_state_display().lower()}; nothing to do."
