"""A Slack incoming webhook for tests (Slack cannot run here), answering as Slack documents:
200 `ok`, or an error status with a plain-text code such as `no_service` or `channel_is_archived`,
and 429 with `Retry-After` when rate limited."""

import pytest

from tests.servers.loopback import LoopbackServer, Response

WEBHOOK_PATH = "/services/T0NEX0/B0PORTAL/8u0BDNBEk5aGgZsI3vsmyqG6"


class SlackServer:
    def __init__(self):
        self.messages = []
        self._answer = Response.text(200, "ok", "text/html")
        self._server = LoopbackServer(self._respond)
        self.url = self._server.url + WEBHOOK_PATH

    def answer(self, status, code, **headers):
        self._answer = Response(status, code.encode(), {"Content-Type": "text/html", **headers})

    def close(self):
        self._server.close()

    def _respond(self, request):
        if request.method != "POST" or request.path != WEBHOOK_PATH:
            return Response.text(404, "no_service", "text/html")
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
