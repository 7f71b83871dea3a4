"""Approve and reject from Slack's buttons: requests signed as Slack signs them, the Slack user mapped to
a portal user, exactly the web's rules, a dialog asking why for a rejection, audited with the channel.
Against a stand-in for Slack's Web API."""

import hashlib
import hmac
import json
import time
from urllib.parse import urlencode

import pytest
from django.test import Client

from audit.models import AuditAction, AuditEvent
from nexo_portal.lib.queues import get_queue
from releases.models import PromotionState, SlackIdentity, SlackIdentityLink
from tests import test_approval_notices as notices
from tests.servers.slack import CHANNEL, SIGNING_SECRET

pytestmark = pytest.mark.django_db

# The same people, release and promotion awaiting approval as the notices' tests (their fixtures).
people, release, waiting = notices.people, notices.release, notices.waiting

URL = "/api/v1/slack/interactions/"


# --- acting from Slack --------------------------------------------------------------------------------


def signed_post(body, secret=SIGNING_SECRET, timestamp=None):
    timestamp = str(int(time.time())) if timestamp is None else timestamp
    signature = "v0=" + hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return Client().post(
        URL,
        data=body,
        content_type="application/x-www-form-urlencoded",
        headers={"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature},
    )


def interact(payload, **signing):
    return signed_post(urlencode({"payload": json.dumps(payload)}), **signing)


def told_afterwards(slack_api):
    """What the person who clicked was told: sent by a job, once the interaction was answered."""
    queue = get_queue()
    for job in queue.jobs:
        job.perform()
        job.delete()
    return slack_api.called("chat.postEphemeral")


def button(action, promotion, slack_user):
    """A block_actions payload as Slack sends it when a message button is clicked."""
    return {
        "type": "block_actions",
        "user": {"id": slack_user, "username": "someone", "name": "someone", "team_id": "T0NEX0"},
        "api_app_id": "A0PORTAL",
        "token": "deprecated-verification-token",
        "container": {"type": "message", "message_ts": "1503435957.000200", "channel_id": CHANNEL},
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
        "team": {"id": "T0NEX0", "domain": "nexo"},
        "channel": {"id": CHANNEL, "name": "releases"},
        "message": {"type": "message", "ts": "1503435957.000200", "text": "…"},
        "response_url": "https://hooks.slack.com/actions/T0NEX0/1/abc",
        "actions": [
            {
                "action_id": action,
                "block_id": f"promotion-{promotion.pk}",
                "text": {"type": "plain_text", "text": action.title()},
                "value": str(promotion.pk),
                "type": "button",
                "action_ts": "1548426417.840180",
            }
        ],
    }


def submission(promotion, slack_user, comment):
    """A view_submission payload of the rejection modal, as Slack sends it."""
    return {
        "type": "view_submission",
        "team": {"id": "T0NEX0", "domain": "nexo"},
        "user": {"id": slack_user, "username": "someone", "name": "someone", "team_id": "T0NEX0"},
        "api_app_id": "A0PORTAL",
        "trigger_id": "12466734323.1395872398",
        "view": {
            "id": "V0REJECT",
            "type": "modal",
            "callback_id": "reject_promotion",
            "private_metadata": json.dumps({"promotion": promotion.pk, "channel": CHANNEL}),
            "state": {"values": {"comment": {"comment": {"type": "plain_text_input", "value": comment}}}},
            "hash": "156772938.1827394",
        },
    }


def test_approve_from_slack_acts_as_the_linked_person_and_is_audited_with_the_channel(waiting):
    response = interact(button("approve", waiting, "U0SAM"))
    assert response.status_code == 200
    assert [approval.user.username for approval in waiting.approvals.all()] == ["sam"]
    event = AuditEvent.objects.get(action=AuditAction.PROMOTION_APPROVED, promotion_id=waiting.pk)
    assert event.actor == "sam"
    assert event.message.endswith("approved by sam (1/2) in Slack")
    assert event.data["via"] == {"via": "Slack", "channel": CHANNEL, "slack_user": "U0SAM"}


def test_a_slack_user_with_a_confirmed_e_mail_is_linked_once_and_approves(waiting, slack_api, people):
    slack_api.add_user("U0SARA", "Sara@nexo.example")
    assert interact(button("approve", waiting, "U0SARA")).status_code == 200
    assert [approval.user.username for approval in waiting.approvals.all()] == ["sara"]
    identity = SlackIdentity.objects.get(slack_user_id="U0SARA")
    assert (identity.user, identity.linked_by) == (people["sara"], SlackIdentityLink.EMAIL)


@pytest.mark.parametrize(
    ("known", "reason"),
    [
        ({"email": "lead@nexo.example", "confirmed": False}, "an e-mail Slack has not confirmed"),
        ({"email": "stranger@elsewhere.example"}, "an e-mail no portal account has"),
        (None, "a user Slack does not know"),
    ],
)
def test_a_slack_user_the_portal_cannot_tell_apart_is_told_and_nothing_happens(waiting, slack_api, known, reason):
    if known:
        slack_api.add_user("U0WHO", known["email"], confirmed=known.get("confirmed", True))
    assert interact(button("approve", waiting, "U0WHO")).status_code == 200, reason
    assert waiting.approvals.count() == 0
    [told] = told_afterwards(slack_api)
    assert told["user"] == "U0WHO"
    assert "Your Slack account is not linked to a portal account" in told["text"]
    assert not SlackIdentity.objects.filter(slack_user_id="U0WHO").exists()


@pytest.mark.parametrize(
    ("error", "told"),
    [
        ("missing_scope", "may not read who you are (missing_scope): ask an administrator"),
        ("invalid_auth", "may not read who you are (invalid_auth)"),
    ],
)
def test_slack_refusing_to_say_who_clicked_is_told_as_what_it_is(waiting, slack_api, error, told):
    slack_api.errors["users.info"] = error
    interact(button("approve", waiting, "U0WHO"))
    [said] = told_afterwards(slack_api)
    assert told in said["text"]
    assert waiting.approvals.count() == 0


def test_slack_out_of_reach_when_asked_who_clicked_says_to_try_again(waiting, slack_api):
    slack_api.rate_limited.add("users.info")  # HTTP 429: worth another try
    interact(button("approve", waiting, "U0WHO"))
    [said] = told_afterwards(slack_api)
    assert "could not ask Slack who you are; try again" in said["text"]


def test_the_requester_cannot_approve_her_own_request_from_slack(waiting, slack_api):
    slack_api.add_user("U0RITA", "rita@nexo.example")
    interact(button("approve", waiting, "U0RITA"))
    assert waiting.approvals.count() == 0
    [told] = told_afterwards(slack_api)
    assert told["text"].startswith("You requested this promotion; another approver from platform-leads or sre-team")


def test_what_the_person_who_clicked_is_told_waits_for_the_answer_to_slack(waiting, slack_api):
    """Slack shows an error to whoever clicked unless the interaction is answered within 3 seconds, and
    chat.postEphemeral may take the whole HTTP timeout: the refusal is said by a job afterwards."""
    slack_api.add_user("U0RITA", "rita@nexo.example")
    assert interact(button("approve", waiting, "U0RITA")).status_code == 200
    assert slack_api.called("chat.postEphemeral") == []
    [said] = told_afterwards(slack_api)
    assert (said["channel"], said["user"]) == (CHANNEL, "U0RITA")
    assert said["text"].startswith("You requested this promotion")


def test_with_redis_out_of_reach_the_person_who_clicked_is_told_at_once(waiting, slack_api, settings):
    slack_api.add_user("U0RITA", "rita@nexo.example")
    settings.RQ_QUEUES = {"default": {**settings.RQ_QUEUES["default"], "URL": "redis://127.0.0.1:9/0"}}
    assert interact(button("approve", waiting, "U0RITA")).status_code == 200
    [said] = slack_api.called("chat.postEphemeral")
    assert said["text"].startswith("You requested this promotion")


def test_a_slack_too_slow_to_say_who_clicked_within_its_window_is_not_waited_for(waiting, slack_api, settings):
    """Asked while Slack waits for the answer, users.info gets what is left of Slack's 3 seconds, not
    the HTTP timeout: a late answer would approve while Slack already showed the click as failed."""
    settings.HTTP_TIMEOUT_SECONDS = 30
    slack_api.add_user("U0SARA", "sara@nexo.example")
    slack_api.slow["users.info"] = 4
    assert interact(button("approve", waiting, "U0SARA")).status_code == 200
    assert waiting.approvals.count() == 0
    [said] = told_afterwards(slack_api)
    assert "could not ask Slack who you are; try again" in said["text"]


def test_the_same_approver_cannot_approve_twice_from_slack(waiting, slack_api):
    interact(button("approve", waiting, "U0SAM"))
    interact(button("approve", waiting, "U0SAM"))
    assert waiting.approvals.count() == 1
    assert "You have already decided on this promotion" in told_afterwards(slack_api)[0]["text"]


def test_reject_opens_a_modal_asking_why_then_rejects_with_the_comment(waiting, slack_api):
    assert interact(button("reject", waiting, "U0SAM")).status_code == 200
    [opened] = slack_api.called("views.open")
    assert opened["trigger_id"] == "13345224609.738474920.8088930838d88f008e0"
    assert opened["view"]["callback_id"] == "reject_promotion"
    assert opened["view"]["blocks"][1]["element"]["type"] == "plain_text_input"
    waiting.refresh_from_db()
    assert waiting.state == PromotionState.AWAITING_APPROVAL, "nothing happens before the comment"

    blank = interact(submission(waiting, "U0SAM", "   "))
    assert blank.json() == {
        "response_action": "errors",
        "errors": {"comment": "Say why you reject it: a comment is required."},
    }
    assert interact(submission(waiting, "U0SAM", "error budget spent")).status_code == 200
    waiting.refresh_from_db()
    assert waiting.state == PromotionState.REJECTED
    event = AuditEvent.objects.get(action=AuditAction.PROMOTION_REJECTED, promotion_id=waiting.pk)
    assert (event.actor, event.data["comment"], event.data["via"]["channel"]) == ("sam", "error budget spent", CHANNEL)


def test_someone_outside_the_approver_groups_is_not_offered_the_modal(waiting, slack_api, people):
    slack_api.add_user("U0RITA", "rita@nexo.example")
    interact(button("reject", waiting, "U0RITA"))
    assert slack_api.called("views.open") == []
    assert "You requested this promotion" in told_afterwards(slack_api)[0]["text"]


@pytest.mark.parametrize(
    ("signing", "status", "message"),
    [
        ({"secret": "not-the-signing-secret"}, 401, "does not match"),
        ({"timestamp": str(int(time.time()) - 301)}, 401, "Stale request"),
        ({"timestamp": "soon"}, 401, "Unix seconds"),
    ],
)
def test_requests_not_signed_by_slack_now_are_refused(waiting, signing, status, message):
    response = interact(button("approve", waiting, "U0SAM"), **signing)
    assert response.status_code == status
    assert message in response.json()["message"]
    assert waiting.approvals.count() == 0


def test_unsigned_requests_and_an_unconfigured_secret_are_refused(waiting, settings):
    assert (
        Client().post(URL, data="payload=%7B%7D", content_type="application/x-www-form-urlencoded").status_code == 401
    )
    settings.SLACK_SIGNING_SECRET = ""
    assert interact(button("approve", waiting, "U0SAM")).status_code == 503
    assert waiting.approvals.count() == 0


def test_a_signed_body_that_is_not_an_interaction_is_a_400(waiting):
    assert signed_post("payload=not-json").status_code == 400
    assert signed_post("something=else").status_code == 400
    assert signed_post(urlencode({"payload": "[1, 2]"})).status_code == 400


@pytest.mark.parametrize(
    "payload",
    [
        {"type": "block_actions", "user": "U0SAM", "actions": [{"action_id": "approve", "value": "1"}]},
        {"type": "block_actions", "user": {"id": "U0SAM"}, "channel": "C1", "actions": [{"action_id": "approve"}]},
        {"type": "block_actions", "user": {"id": "U0SAM"}, "container": [], "actions": [{"action_id": "approve"}]},
        {"type": "view_submission", "user": {"id": "U0SAM"}, "view": "x"},
        {"type": "view_submission", "user": [], "view": {"callback_id": "reject_promotion", "state": []}},
        {"type": "view_submission", "view": {"callback_id": "reject_promotion", "state": {"values": []}}},
    ],
)
def test_a_signed_payload_of_another_shape_is_answered_never_a_500(waiting, payload):
    """Signed, so Slack's: not a shape Slack documents, but the portal answers without failing."""
    client = Client(raise_request_exception=False)
    body = urlencode({"payload": json.dumps(payload)})
    timestamp = str(int(time.time()))
    signature = "v0=" + hmac.new(SIGNING_SECRET.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()
    response = client.post(
        URL,
        data=body,
        content_type="application/x-www-form-urlencoded",
        headers={"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature},
    )
    assert response.status_code == 200, response.content
    assert waiting.approvals.count() == 0


def test_a_control_character_in_the_rejection_comment_is_said_under_the_field(waiting, slack_api):
    """An escape sequence pasted from a terminal: the modal says what to fix, as for an empty comment,
    instead of a 400 Slack shows as a connection error."""
    interact(button("reject", waiting, "U0SAM"))
    response = interact(submission(waiting, "U0SAM", "pasted from a terminal: \x1b[31mFAIL\x1b[0m"))

    assert response.status_code == 200
    answer = response.json()
    assert answer["response_action"] == "errors"
    assert "escape" in answer["errors"]["comment"].lower() or "U+001B" in answer["errors"]["comment"]
    waiting.refresh_from_db()
    assert waiting.state == PromotionState.AWAITING_APPROVAL


def test_a_first_click_racing_the_other_click_of_a_double_click_approves(waiting, slack_api, people, monkeypatch):
    """Both clicks of sara's first double-click look her up; the other one links her first."""
    from releases import slack

    slack_api.add_user("U0SARA", "sara@nexo.example")
    ask_slack = slack.call

    def the_other_click_links_her_meanwhile(method, **fields):
        answer = ask_slack(method, **fields)
        if method == "users.info":
            SlackIdentity.objects.create(user=people["sara"], slack_user_id="U0SARA", linked_by="email")
        return answer

    monkeypatch.setattr(slack, "call", the_other_click_links_her_meanwhile)
    assert interact(button("approve", waiting, "U0SARA")).status_code == 200

    assert [approval.user.username for approval in waiting.approvals.all()] == ["sara"]
    assert not any("not linked" in body["text"] for body in told_afterwards(slack_api))
