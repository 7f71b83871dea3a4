"""A tiny threaded HTTP server on a free loopback port: `respond(request) -> Response` in a daemon thread."""

import contextlib
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict  # name -> list of values, as parse_qs gives them
    headers: dict
    body: bytes

    @property
    def json(self):
        """The body parsed as JSON, or None when there is none or it is not JSON."""
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    headers: dict = field(default_factory=dict)

    @classmethod
    def json(cls, status, data):
        return cls(status, json.dumps(data).encode(), {"Content-Type": "application/json"})

    @classmethod
    def text(cls, status, text, content_type="text/plain; charset=utf-8"):
        return cls(status, text.encode(), {"Content-Type": content_type})


class LoopbackServer:
    """`port=0` takes a free port; passing a closed server's port brings it back at the same address."""

    def __init__(self, respond, port=0):
        connections = self._connections = set()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body leave in two writes; without this, delayed ACKs add 40 ms to each answer.
            disable_nagle_algorithm = True

            def setup(self):
                super().setup()
                connections.add(self.connection)

            def finish(self):
                connections.discard(self.connection)
                super().finish()

            def _handle(self):
                split = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(
                    method=self.command,
                    path=split.path,
                    query=parse_qs(split.query, keep_blank_values=True),
                    headers=dict(self.headers.items()),
                    body=self.rfile.read(length) if length else b"",
                )
                response = respond(request)
                self.send_response(response.status)
                for name, value in response.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(response.body)))
                self.end_headers()
                self.wfile.write(response.body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, format, *args):
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=self.url, daemon=True
        )
        self._thread.start()

    def close(self):
        """Stop listening and drop the kept-alive connections too, as a server that goes away does."""
        self._httpd.shutdown()
        self._httpd.server_close()
        for connection in list(self._connections):
            with contextlib.suppress(OSError):  # it closed meanwhile
                connection.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)
