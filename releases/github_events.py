"""GitHub webhooks for promotions delivered by pull request: `pull_request` and `pull_request_review`.

A delivery is authentic when `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(GITHUB_WEBHOOK_SECRET,
body)>` matches (GitHub signs the body only). A delivery is a hint, never the truth: the portal
reads the pull request and its reviews from GitHub's API (releases/pull_requests.py), so a
replayed, forged-then-reordered or missed delivery changes nothing but how soon the portal knows;
a delivery id (`X-GitHub-Delivery`) seen in the last day is answered without acting again.
"""

import hashlib
import hmac
import json
import logging

from django.conf import settings
from drf_spectacular.utils import extend_schema
from redis.exceptions import RedisError
from rest_framework.response import Response
from rest_framework.views import APIView

from nexo_portal.lib.api import error_response
from nexo_portal.lib.queues import redis_connection

from . import pull_requests
from .gitops.github import GitHubError
from .models import Promotion, PromotionState
from .policy import PromotionError

logger = logging.getLogger(__name__)

EVENTS = {"pull_request", "pull_request_review"}
SEEN_KEY = "nexo:github-delivery:{}"
SEEN_SECONDS = 24 * 3600


class WebhookRefused(Exception):
    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


def signature_for(secret, body):
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def check_signature(secret, header, body):
    if not secret:
        raise WebhookRefused(
            "The GitHub webhook is not configured on the portal (GITHUB_WEBHOOK_SECRET is unset).", 503
        )
    if not header:
        raise WebhookRefused("Unsigned delivery: the X-Hub-Signature-256 header is required.", 401)
    if not hmac.compare_digest(header.encode(), signature_for(secret, body).encode()):
        raise WebhookRefused("The signature does not match the body: check the webhook's secret.", 401)


def first_delivery(delivery_id):
    """Whether this delivery id is new (remembered for a day). Without an id, every delivery is new."""
    if not delivery_id:
        return True
    try:
        return bool(redis_connection().set(SEEN_KEY.format(delivery_id[:100]), 1, nx=True, ex=SEEN_SECONDS))
    except RedisError as error:
        # Acting twice on a delivery is harmless (GitHub is read again), so an outage does not refuse it.
        logger.warning("GitHub webhook: cannot remember delivery %s: %s", delivery_id, error)
        return True


def handle(event, payload):
    """What the portal did with the delivery, in words."""
    if event not in EVENTS:
        return f"ignored: the portal acts on {', '.join(sorted(EVENTS))} events only"
    repository = (payload.get("repository") or {}).get("full_name", "")
    number = (payload.get("pull_request") or {}).get("number")
    if repository.lower() != settings.GITOPS_GITHUB_REPOSITORY.lower() or not isinstance(number, int):
        return "ignored: not a pull request of the GitOps repository"
    promotion = (
        Promotion.objects.filter(
            pr_number=number, state__in=[PromotionState.AWAITING_APPROVAL, PromotionState.APPROVED]
        )
        .select_related("release", "service", "environment", "requested_by", "previous_release")
        .first()
    )
    if promotion is None:
        return f"ignored: no promotion waits on pull request #{number}"
    sender = payload.get("sender") if isinstance(payload.get("sender"), dict) else None
    after = pull_requests.sync(promotion, sender=sender)
    return f"promotion #{after.pk} is {after.get_state_display().lower()}"


@extend_schema(exclude=True)  # GitHub's webhook (docs/pull-requests.md), not part of the API CI uses
class GitHubWebhookView(APIView):
    """GitHub only, proven by the HMAC of GITHUB_WEBHOOK_SECRET; no session, no token."""

    authentication_classes = []
    permission_classes = []
    throttle_classes = []

    def post(self, request):
        body = request.body
        try:
            check_signature(settings.GITHUB_WEBHOOK_SECRET, request.headers.get("X-Hub-Signature-256", ""), body)
        except WebhookRefused as refusal:
            return error_response(refusal.status, "signature", str(refusal))
        event = request.headers.get("X-GitHub-Event", "")
        if event == "ping":
            return Response({"outcome": "pong"})
        try:
            payload = json.loads(body)
        except ValueError:
            return error_response(400, "invalid", "Not a GitHub webhook delivery: the body must be JSON.")
        if not isinstance(payload, dict):
            return error_response(400, "invalid", "Not a GitHub webhook delivery: the body must be a JSON object.")
        if not first_delivery(request.headers.get("X-GitHub-Delivery", "")):
            return Response({"outcome": "ignored: this delivery was handled already"}, status=202)
        try:
            outcome = handle(event, payload)
        except (GitHubError, pull_requests.PullRequestError, PromotionError) as error:
            # The reconciler's poll reads the pull request again; GitHub need not redeliver.
            logger.warning("GitHub webhook: could not read the pull request: %s", error)
            outcome = f"deferred to the next poll: {error}"
        return Response({"outcome": outcome}, status=202)
