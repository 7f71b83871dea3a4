"""Slack's Web API (a bot token) and the check of the requests Slack sends the portal (a signing secret).

The Web API takes `POST {SLACK_API_URL}{method}` with `Authorization: Bearer xoxb-…` and a JSON body,
and answers HTTP 200 with `{"ok": true, …}` or `{"ok": false, "error": "channel_not_found"}`; a 429
carries `Retry-After`. A 429, a 5xx or no answer is worth another try (`SlackUnavailable`, RQ
retries the job); `ok: false` will not change by retrying (`SlackRefused`, logged).

Requests from Slack (interactivity) carry `X-Slack-Request-Timestamp` and
`X-Slack-Signature: v0=<hex HMAC-SHA256(SLACK_SIGNING_SECRET, "v0:" + timestamp + ":" + raw body)>`;
one more than five minutes away from now is refused, so a captured request cannot be replayed later.
"""

import hashlib
import hmac
import time

import requests
from django.conf import settings

from nexo_portal.lib import metrics
from nexo_portal.lib.http import describe_failure, retry_after

MAX_AGE_SECONDS = 5 * 60


class SlackUnavailable(Exception):
    """Slack did not take the call this time; trying again may help, not before `retry_after`
    seconds when Slack said so."""

    def __init__(self, message, retry_after=None):
        super().__init__(message)
        self.retry_after = retry_after


class SlackRefused(Exception):
    """Slack answered ok: false; the error code says why (channel_not_found, invalid_auth…)."""

    def __init__(self, method, error):
        super().__init__(f"Slack refused {method}: {error}")
        self.error = error


class RequestRefused(Exception):
    """A request claiming to come from Slack that is not signed by it, or is stale."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def is_configured():
    """Whether approval messages go to Slack: a bot token and the channel to post them in."""
    return bool(settings.SLACK_BOT_TOKEN and settings.SLACK_APPROVALS_CHANNEL)


def call(method, *, timeout=None, **fields):
    """Call one Web API method; its answer (a dict with ok: true), or SlackUnavailable / SlackRefused.

    `timeout` (seconds) when the caller cannot wait HTTP_TIMEOUT_SECONDS for the answer."""
    url = settings.SLACK_API_URL.rstrip("/") + "/" + method
    timeout = min(timeout, settings.HTTP_TIMEOUT_SECONDS) if timeout else settings.HTTP_TIMEOUT_SECONDS
    try:
        with metrics.outgoing_call("slack", method) as call:
            response = requests.post(
                url,
                json={key: value for key, value in fields.items() if value is not None},
                headers={"Authorization": f"Bearer {settings.SLACK_BOT_TOKEN}"},
                timeout=timeout,
            )
            call.status = response.status_code
    except requests.RequestException as error:
        # Not chained: requests' messages may quote the request, and the token travels in it.
        raise SlackUnavailable(f"Slack did not answer {method}: {describe_failure(error, timeout)}") from None
    if response.status_code == 429:
        raise SlackUnavailable(
            f"Slack is rate limiting {method}; retry after {response.headers.get('Retry-After', '?')} s",
            retry_after=retry_after(response),
        )
    if response.status_code >= 500:
        raise SlackUnavailable(f"Slack answered {method} with HTTP {response.status_code}")
    try:
        answer = response.json()
    except ValueError:
        raise SlackRefused(method, f"HTTP {response.status_code} without JSON") from None
    if not isinstance(answer, dict) or not answer.get("ok"):
        raise SlackRefused(method, answer.get("error", "unknown_error") if isinstance(answer, dict) else "not_json")
    return answer


def check_request(body, timestamp, signature, now=None):
    """Refuse (RequestRefused) a request Slack did not sign with SLACK_SIGNING_SECRET, or a stale one."""
    secret = settings.SLACK_SIGNING_SECRET
    if not secret:
        raise RequestRefused(503, "Slack interactivity is not configured: set SLACK_SIGNING_SECRET.")
    if not timestamp or not signature:
        raise RequestRefused(401, "Unsigned request: Slack sends X-Slack-Request-Timestamp and X-Slack-Signature.")
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        raise RequestRefused(401, "X-Slack-Request-Timestamp must be Unix seconds.")
    if abs((now or time.time()) - int(timestamp)) > MAX_AGE_SECONDS:
        raise RequestRefused(401, "Stale request: its timestamp is more than five minutes away from now.")
    expected = "v0=" + hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        raise RequestRefused(401, "The X-Slack-Signature does not match this body and the signing secret.")
