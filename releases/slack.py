"""Slack's Web API, as a Slack app's bot token calls it.

The Web API takes `POST {SLACK_API_URL}{method}` with `Authorization: Bearer xoxb-…` and a JSON body,
and answers HTTP 200 with `{"ok": true, …}` or `{"ok": false, "error": "channel_not_found"}`; a 429
carries `Retry-After`. A 429, a 5xx or no answer is worth another try (`SlackUnavailable`, RQ
retries the job); `ok: false` will not change by retrying (`SlackRefused`, logged).
"""

import requests
from django.conf import settings

from nexo_portal.lib.http import describe_failure


class SlackUnavailable(Exception):
    """Slack did not take the call this time; trying again may help."""


class SlackRefused(Exception):
    """Slack answered ok: false; the error code says why (channel_not_found, invalid_auth…)."""

    def __init__(self, method, error):
        super().__init__(f"Slack refused {method}: {error}")
        self.error = error


def is_configured():
    """Whether approval messages go to Slack: a bot token and the channel to post them in."""
    return bool(settings.SLACK_BOT_TOKEN and settings.SLACK_APPROVALS_CHANNEL)


def call(method, **fields):
    """Call one Web API method; its answer (a dict with ok: true), or SlackUnavailable / SlackRefused."""
    url = settings.SLACK_API_URL.rstrip("/") + "/" + method
    timeout = settings.HTTP_TIMEOUT_SECONDS
    try:
        response = requests.post(
            url,
            json={key: value for key, value in fields.items() if value is not None},
            headers={"Authorization": f"Bearer {settings.SLACK_BOT_TOKEN}"},
            timeout=timeout,
        )
    except requests.RequestException as error:
        # Not chained: requests' messages may quote the request, and the token travels in it.
        raise SlackUnavailable(f"Slack did not answer {method}: {describe_failure(error, timeout)}") from None
    if response.status_code == 429:
        raise SlackUnavailable(
            f"Slack is rate limiting {method}; retry after {response.headers.get('Retry-After', '?')} s"
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
