"""Health and smoke URLs for tests: each path answers the status (and body, or redirect) a test sets."""

import pytest

from tests.servers.loopback import LoopbackServer, Response


class HealthServer:
    def __init__(self):
        self._answers = {}
        self.requests = 0
        self._server = LoopbackServer(self._respond)
        self.url = self._server.url

    def answer(self, path, status, body="", *, location=None):
        """Make `path` answer `status` (with a Location header when given); returns the full URL."""
        headers = {"Content-Type": "text/plain; charset=utf-8", **({"Location": location} if location else {})}
        self._answers[path] = Response(status, body.encode(), headers)
        return self.url + path

    def close(self):
        self._server.close()

    def _respond(self, request):
        self.requests += 1
        return self._answers.get(request.path) or Response.text(404, "404 page not found\n")


@pytest.fixture
def health_server():
    server = HealthServer()
    yield server
    server.close()
