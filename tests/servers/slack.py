"""Slack for tests (Slack cannot run here), answering as Slack documents.

- An incoming webhook: 200 `ok`, or an error status with a plain-text code such as `no_service` or
  `channel_is_archived`, and 429 with `Retry-After` when rate limited (`slack_server`).
- The Web API a Slack app's bot calls (`slack_api`): chat.postMessage, chat.update,
  chat.postEphemeral, views.open and users.info.
"""

import threading
import time

import pytest

from tests.servers.loopback import LoopbackServer, Response

WEBHOOK_PATH = "/services/T0NEX0/B0PORTAL/8u0BDNBEk5aGgZsI3vsmyqG6"


class SlackServer:
    """`messages` are the messages Slack took; `posted` counts every POST, taken or not. `hold()` keeps
    each answer back until `release()` (a slow Slack), and `arrived` is set when a POST came."""

    def __init__(self):
        self.messages = []
        self.posted = 0
        self.arrived = threading.Event()
        self._released = threading.Event()
        self._released.set()
        self._answer = Response.text(200, "ok", "text/html")
        self._server = LoopbackServer(self._respond)
        self.url = self._server.url + WEBHOOK_PATH

    def answer(self, status, code, **headers):
        self._answer = Response(status, code.encode(), {"Content-Type": "text/html", **headers})

    def hold(self):
        self._released.clear()

    def release(self):
        self._released.set()

    def close(self):
        self._released.set()
        self._server.close()

    def _respond(self, request):
        if request.method != "POST" or request.path != WEBHOOK_PATH:
            return Response.text(404, "no_service", "text/html")
        self.posted += 1
        self.arrived.set()
        self._released.wait(30)
        if not isinstance(request.json, dict) or not (request.json.get("text") or request.json.get("blocks")):
            return Response.text(400, "no_text", "text/html")
        if self._answer.status == 200:
            self.messages.append(request.json)
        return self._answer


@pytest.fixture
def slack_server(settings):
    server = SlackServer()
    settings.SLACK_WEBHOOK_URL = server.url
    settings.PORTAL_URL = "https://portal.nexo.example"
    yield server
    server.close()


# --- the Web API, as a Slack app's bot token calls it ----------------------------------------------

BOT_TOKEN = "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
CHANNEL = "C0APPROVALS"


class SlackApiServer:
    """Slack's Web API for tests, as Slack documents it: `POST /api/<method>` with a bearer token and a
    JSON body; HTTP 200 with `{"ok": true, …}` or `{"ok": false, "error": "<code>"}`; 429 with
    `Retry-After` when rate limited.

    Methods: chat.postMessage (answers channel, ts, message), chat.update (channel, ts, text),
    chat.postEphemeral (message_ts), views.open (view with an id), users.info (user with profile.email
    and is_email_confirmed). `calls` keeps every (method, body); `users` are the workspace's members;
    `slow` makes a method's answers late.
    """

    def __init__(self):
        self.calls = []
        self.users = {}
        self.errors = {}  # method -> error code to answer once
        self.rate_limited = set()
        self.slow = {}  # method -> seconds Slack takes to answer it
        self._ts = 1503435956
        self._server = LoopbackServer(self._respond)
        self.url = self._server.url + "/api/"

    def add_user(self, slack_id, email, confirmed=True, **fields):
        self.users[slack_id] = {
            "id": slack_id,
            "team_id": "T0NEX0",
            "name": email.split("@")[0],
            "deleted": False,
            "is_bot": False,
            "is_email_confirmed": confirmed,
            "profile": {"email": email, "real_name": email.split("@")[0].title()},
            **fields,
        }

    def called(self, method):
        return [body for name, body in self.calls if name == method]

    def close(self):
        self._server.close()

    def _respond(self, request):
        method = request.path.removeprefix("/api/")
        if request.method != "POST" or not request.path.startswith("/api/"):
            return Response.json(404, {"ok": False, "error": "unknown_method"})
        if request.headers.get("Authorization") != f"Bearer {BOT_TOKEN}":
            return Response.json(200, {"ok": False, "error": "invalid_auth"})
        if method in self.rate_limited:
            return Response(429, b"", {"Retry-After": "30"})
        if method in self.slow:
            time.sleep(self.slow[method])
        body = request.json
        if not isinstance(body, dict):
            return Response.json(200, {"ok": False, "error": "invalid_json"})
        self.calls.append((method, body))
        if method in self.errors:
            return Response.json(200, {"ok": False, "error": self.errors.pop(method)})
        answer = getattr(self, "_" + method.replace(".", "_"), None)
        if answer is None:
            return Response.json(200, {"ok": False, "error": "unknown_method"})
        too_long = _sections_too_long(body.get("blocks"))
        if too_long:
            return Response.json(200, {"ok": False, "error": "invalid_blocks", "errors": too_long})
        return Response.json(200, {"ok": True, **answer(body)})

    def _next_ts(self):
        self._ts += 1
        return f"{self._ts}.000200"

    def _chat_postMessage(self, body):
        if not body.get("channel"):
            return {"ok": False, "error": "channel_not_found"}
        if not (body.get("text") or body.get("blocks")):
            return {"ok": False, "error": "no_text"}
        ts = self._next_ts()
        message = {"type": "message", "text": body.get("text", ""), "ts": ts, "bot_id": "B0PORTAL"}
        if body.get("thread_ts"):
            message["thread_ts"] = body["thread_ts"]
        return {"channel": body["channel"], "ts": ts, "message": message}

    def _chat_update(self, body):
        if not body.get("ts"):
            return {"ok": False, "error": "message_not_found"}
        return {"channel": body["channel"], "ts": body["ts"], "text": body.get("text", ""), "message": {}}

    def _chat_postEphemeral(self, body):
        if not body.get("user"):
            return {"ok": False, "error": "user_not_in_channel"}
        return {"message_ts": self._next_ts()}

    def _views_open(self, body):
        if not body.get("trigger_id"):
            return {"ok": False, "error": "invalid_trigger_id"}
        return {"view": {"id": "V0REJECT", "type": "modal", **body.get("view", {})}}

    def _users_info(self, body):
        user = self.users.get(body.get("user"))
        if user is None:
            return {"ok": False, "error": "user_not_found"}
        return {"user": user}


# Block Kit's limit on a section block's text ("Maximum length for the text in this field is 3000
# characters"); Slack refuses the whole message with invalid_blocks.
SECTION_TEXT_LIMIT = 3000


def _sections_too_long(blocks):
    return [
        f"must be less than {SECTION_TEXT_LIMIT + 1} characters [json-pointer:/blocks/{position}/text/text]"
        for position, block in enumerate(blocks if isinstance(blocks, list) else [])
        if isinstance(block, dict)
        and block.get("type") == "section"
        and len(str((block.get("text") or {}).get("text", ""))) > SECTION_TEXT_LIMIT
    ]


@pytest.fixture
def slack_api(settings):
    server = SlackApiServer()
    settings.SLACK_API_URL = server.url
    settings.SLACK_BOT_TOKEN = BOT_TOKEN
    settings.SLACK_APPROVALS_CHANNEL = CHANNEL
    settings.SLACK_SIGNING_SECRET = SIGNING_SECRET
    settings.PORTAL_URL = "https://portal.nexo.example"
    yield server
    server.close()
