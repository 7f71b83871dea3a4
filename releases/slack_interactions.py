"""Approve and reject from Slack: the interactivity endpoint the approval message's buttons call.

Slack POSTs `application/x-www-form-urlencoded` with one field, `payload`, holding the interaction as
JSON, signed as releases/slack.py checks. Two interactions matter:

- `block_actions` from the message: **Approve** approves at once; **Reject…** opens a modal
  (views.open with the payload's trigger_id) asking for the comment the policy requires.
- `view_submission` of that modal: rejects with the comment; a refusal is shown in the modal
  (`response_action: errors`).

The Slack user acts as the portal user they are (`portal_user`): a `SlackIdentity` linked by an
administrator, or found once by the e-mail Slack says they confirmed, when exactly one active
portal account has it. Then exactly the web's rules apply: transitions.approve and reject ask
releases/policy.py (approver groups, distinct approvers, no self-approval). A refusal is told to
that user alone (chat.postEphemeral); the audit records the decision with the Slack channel.

Slack shows whoever clicked an error unless the interaction is answered within three seconds. So
what must be asked of Slack before answering (who clicked; the rejection dialog, whose trigger_id
lasts as long) gets at most ASK_SLACK_SECONDS, and what the person is told is sent by a job after
the answer (at once only when Redis is out of reach).
"""

import json
import logging
from urllib.parse import parse_qs

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.http import HttpResponse, JsonResponse
from drf_spectacular.utils import extend_schema
from redis.exceptions import RedisError
from rest_framework.views import APIView
from rq import Retry

from nexo_portal.lib import text
from nexo_portal.lib.api import error_response
from nexo_portal.lib.queues import get_queue

from . import approval_notices, policy, slack, transitions
from .models import Promotion, SlackIdentity, SlackIdentityLink

logger = logging.getLogger(__name__)

REJECT_CALLBACK = "reject_promotion"
COMMENT_BLOCK, COMMENT_ACTION = "comment", "comment"
# Of Slack's three seconds, what a call made before answering may take (the rest is the portal's).
ASK_SLACK_SECONDS = 2.0


class NotLinked(Exception):
    """The Slack user is nobody the portal knows; the message says how to become someone."""


def portal_user(slack_user_id):
    """The active portal user a Slack user is, linking them by confirmed e-mail the first time."""
    identity = SlackIdentity.objects.select_related("user").filter(slack_user_id=slack_user_id).first()
    if identity is not None:
        if not identity.user.is_active:
            raise NotLinked("Your portal account is deactivated.")
        return identity.user
    unlinked = (
        "Your Slack account is not linked to a portal account: ask an administrator to link it "
        "(Admin → Slack identities), or approve on the portal."
    )
    try:
        profile = slack.call("users.info", user=slack_user_id, timeout=ASK_SLACK_SECONDS)["user"]
    except slack.SlackRefused as refusal:
        logger.warning("Slack would not say who Slack user %s is: %s", slack_user_id, refusal)
        if refusal.error in ("user_not_found", "user_not_visible"):
            raise NotLinked(unlinked) from None
        # missing_scope, invalid_auth…: the portal's Slack app, which asking again will not change.
        raise NotLinked(
            f"The portal's Slack app may not read who you are ({refusal.error}): ask an administrator to give it "
            "the users:read and users:read.email scopes or to link your account, or approve on the portal."
        ) from None
    except (slack.SlackUnavailable, KeyError, TypeError) as error:
        logger.warning("Could not look up Slack user %s: %s", slack_user_id, error)
        raise NotLinked("The portal could not ask Slack who you are; try again, or use the portal.") from None
    email = (profile.get("profile") or {}).get("email") if isinstance(profile, dict) else None
    if not email or not profile.get("is_email_confirmed") or profile.get("deleted") or profile.get("is_bot"):
        raise NotLinked(unlinked)
    people = list(get_user_model().objects.filter(is_active=True, email__iexact=email)[:2])
    if len(people) != 1:
        raise NotLinked(unlinked)  # nobody, or several accounts share it
    linked = getattr(people[0], "slack_identity", None)
    if linked is not None:
        if linked.slack_user_id == slack_user_id:
            return people[0]  # the other click of a double-click linked them a moment ago
        raise NotLinked(unlinked)  # the account is linked to another Slack user
    try:
        with transaction.atomic():
            SlackIdentity.objects.create(user=people[0], slack_user_id=slack_user_id, linked_by=SlackIdentityLink.EMAIL)
    except IntegrityError:
        # The other click of a double-click linked them a moment ago: that link stands.
        if not SlackIdentity.objects.filter(user=people[0], slack_user_id=slack_user_id).exists():
            raise NotLinked(unlinked) from None
    return people[0]


def _tell(channel, slack_user_id, message):
    """Have `message` said to that Slack user alone, in the channel they clicked in, after the answer."""
    try:
        get_queue().enqueue(tell, channel, slack_user_id, message, retry=Retry(max=2, interval=[5, 30]))
    except RedisError as error:
        logger.warning("Telling Slack user %s now, while Slack waits: Redis did not answer (%s)", slack_user_id, error)
        try:
            tell(channel, slack_user_id, message)
        except slack.SlackUnavailable as unavailable:
            logger.warning("Could not tell Slack user %s why: %s", slack_user_id, unavailable)


def tell(channel, slack_user_id, message):
    """The job: say `message` to that Slack user alone. Slack out of reach raises, for RQ to try again
    a little later (an explanation a minute late still explains); a refusal will not change."""
    try:
        slack.call("chat.postEphemeral", channel=channel, user=slack_user_id, text=message)
    except slack.SlackRefused as refusal:
        logger.warning("Could not tell Slack user %s why: %s", slack_user_id, refusal)


def _reject_modal(promotion, channel):
    return {
        "type": "modal",
        "callback_id": REJECT_CALLBACK,
        "private_metadata": json.dumps({"promotion": promotion.pk, "channel": channel}),
        "title": {"type": "plain_text", "text": "Reject promotion"},
        "submit": {"type": "plain_text", "text": "Reject"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": approval_notices._summary(promotion)},
            },
            {
                "type": "input",
                "block_id": COMMENT_BLOCK,
                "label": {"type": "plain_text", "text": "Why do you reject it?"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": COMMENT_ACTION,
                    "multiline": True,
                    "max_length": 2000,
                },
            },
        ],
    }


def _promotion(value):
    if not isinstance(value, str) or not value.isascii() or not value.isdigit() or len(value) > 12:
        return None
    return Promotion.objects.with_details().filter(pk=int(value)).first()


def _object(value):
    """A JSON object of the payload, or {} when Slack (signed, so Slack) sent something else there."""
    return value if isinstance(value, dict) else {}


def _block_action(payload):
    slack_user = str(_object(payload.get("user")).get("id", ""))
    channel = str(
        _object(payload.get("channel")).get("id", "") or _object(payload.get("container")).get("channel_id", "")
    )
    actions = payload.get("actions") or [{}]
    action = actions[0] if isinstance(actions, list) and isinstance(actions[0], dict) else {}
    kind = action.get("action_id")
    if kind not in (approval_notices.APPROVE, approval_notices.REJECT):
        return HttpResponse(status=200)  # the Open link button, or something this app does not handle
    promotion = _promotion(action.get("value"))
    if promotion is None:
        _tell(channel, slack_user, "That promotion does not exist any more.")
        return HttpResponse(status=200)
    try:
        user = portal_user(slack_user)
    except NotLinked as refusal:
        _tell(channel, slack_user, str(refusal))
        return HttpResponse(status=200)
    via = {"via": "Slack", "channel": channel, "slack_user": slack_user}
    if kind == approval_notices.APPROVE:
        try:
            transitions.approve(promotion, user, via=via)
        except policy.PromotionError as refusal:
            _tell(channel, slack_user, str(refusal))
        return HttpResponse(status=200)
    refusal = policy.why_not_reject(promotion, user)
    if refusal:
        _tell(channel, slack_user, str(refusal))
        return HttpResponse(status=200)
    try:
        slack.call(
            "views.open",
            trigger_id=str(payload.get("trigger_id", "")),
            view=_reject_modal(promotion, channel),
            timeout=ASK_SLACK_SECONDS,
        )
    except (slack.SlackRefused, slack.SlackUnavailable) as error:
        logger.warning("Could not open the rejection dialog for %s: %s", slack_user, error)
        _tell(channel, slack_user, "Slack would not open the rejection dialog; reject on the portal instead.")
    return HttpResponse(status=200)


def _errors(message):
    return JsonResponse({"response_action": "errors", "errors": {COMMENT_BLOCK: message[:1000]}})


def _view_submission(payload):
    view = _object(payload.get("view"))
    if view.get("callback_id") != REJECT_CALLBACK:
        return HttpResponse(status=200)
    slack_user = str(_object(payload.get("user")).get("id", ""))
    try:
        metadata = json.loads(view.get("private_metadata") or "{}")
        promotion = _promotion(str(metadata.get("promotion", "")))
        channel = str(metadata.get("channel", ""))
    except (ValueError, AttributeError):
        promotion, channel = None, ""
    if promotion is None:
        return _errors("That promotion does not exist any more.")
    values = _object(_object(_object(view.get("state")).get("values")).get(COMMENT_BLOCK))
    comment = _object(values.get(COMMENT_ACTION)).get("value") or ""
    if not isinstance(comment, str):
        return _errors("Write why you reject it.")
    try:
        user = portal_user(slack_user)
        transitions.reject(promotion, user, comment, via={"via": "Slack", "channel": channel, "slack_user": slack_user})
    except (NotLinked, policy.PromotionError) as refusal:
        return _errors(str(refusal))
    return HttpResponse(status=200)  # an empty 200 closes the modal


@extend_schema(exclude=True)  # Slack's callback, not part of the API CI uses
class SlackInteractionsView(APIView):
    """Slack only, proven by the v0 signature of SLACK_SIGNING_SECRET; no session, no token. The Slack
    user then acts as their linked portal user, under the web's rules."""

    authentication_classes = []
    permission_classes = []
    throttle_classes = []

    def post(self, request):
        body = request.body
        try:
            slack.check_request(
                body,
                request.headers.get("X-Slack-Request-Timestamp", ""),
                request.headers.get("X-Slack-Signature", ""),
            )
        except slack.RequestRefused as refusal:
            return error_response(refusal.status, "signature", str(refusal))
        try:
            form = parse_qs(body.decode("utf-8"), strict_parsing=True)
            payload = json.loads(form["payload"][0])
        except (UnicodeDecodeError, ValueError, KeyError):
            return error_response(
                400, "invalid", "Not a Slack interaction: send a form field `payload` holding the interaction's JSON."
            )
        if not isinstance(payload, dict):
            return error_response(400, "invalid", "Not a Slack interaction: `payload` must be a JSON object.")
        try:
            text.check_json(payload)
        except text.Unreadable as unreadable:
            if unreadable.field == f"view.state.values.{COMMENT_BLOCK}.{COMMENT_ACTION}.value":
                # What a person typed in the modal (a terminal's escape sequence pasted): said under the field.
                return _errors(f"The comment {str(unreadable)[0].lower()}{str(unreadable)[1:]}")
            return error_response(400, "invalid", f"Not a Slack interaction: {unreadable}")
        if payload.get("type") == "block_actions":
            return _block_action(payload)
        if payload.get("type") == "view_submission":
            return _view_submission(payload)
        return HttpResponse(status=200)
