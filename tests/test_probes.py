"""Health and smoke probes: ok only when the final answer is 2xx; every failure is a result that says why."""

import socket
import threading
import time

import pytest

from environments.probes import ProbeResult, probe


@pytest.mark.parametrize(("status", "reason"), [(200, "OK"), (204, "No Content")])
def test_a_2xx_answer_is_ok(health_server, status, reason):
    url = health_server.answer("/health", status)

    assert probe(url) == ProbeResult(url=url, ok=True, status=status, detail=f"HTTP {status} {reason}")


@pytest.mark.parametrize(
    ("status", "reason"), [(500, "Internal Server Error"), (503, "Service Unavailable"), (404, "Not Found")]
)
def test_an_error_answer_fails_with_the_status_and_what_the_service_said(health_server, status, reason):
    url = health_server.answer("/health", status, "database connection pool exhausted\n")

    result = probe(url)

    assert (result.ok, result.status) == (False, status)
    assert result.detail == f"HTTP {status} {reason}: database connection pool exhausted"


def test_redirects_are_followed_and_the_final_answer_counts(health_server):
    health_server.answer("/ready", 200, "ok")
    url = health_server.answer("/health", 302, location="/ready")

    result = probe(url)

    assert (result.ok, result.status) == (True, 200)
    assert result.detail == f"HTTP 200 OK from {health_server.url}/ready"


def test_a_redirect_to_an_error_fails(health_server):
    health_server.answer("/down", 503)
    url = health_server.answer("/health", 301, location="/down")

    result = probe(url)

    assert (result.ok, result.status) == (False, 503)


def test_a_long_error_page_is_cut_short(health_server):
    url = health_server.answer("/health", 500, "x" * 10_000)

    result = probe(url)

    assert len(result.detail) < 300
    assert result.detail.endswith("…")


def test_a_refused_connection_is_a_failed_result_not_an_exception():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}/health"

    assert probe(url) == ProbeResult(url=url, ok=False, status=None, detail="connection refused")


def test_a_service_that_never_answers_times_out_as_a_failed_result():
    with socket.socket() as silent:
        # Listening but never accepting: the connection opens, no answer ever comes.
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/health"

        result = probe(url, timeout=0.2)

    assert (result.ok, result.status, result.detail) == (False, None, "no answer within 0.2 s")


def test_a_service_that_trickles_its_answer_fails_once_the_timeout_has_passed():
    # Headers at once, then a byte now and then: every read comes within the timeout, the answer never.
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        url = f"http://127.0.0.1:{listening.getsockname()[1]}/health"
        hung_up = threading.Event()

        def trickle():
            connection, _ = listening.accept()
            with connection:
                connection.recv(4096)
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 400\r\n\r\n")
                for _ in range(400):
                    time.sleep(0.05)
                    try:
                        connection.sendall(b"x")
                    except OSError:
                        hung_up.set()
                        return

        server = threading.Thread(target=trickle, daemon=True)
        server.start()
        result = probe(url, timeout=0.3)
        server.join()

    assert (result.ok, result.status) == (False, 200)
    assert result.detail == "HTTP 200 OK, but the rest of its answer did not come within 0.3 s"
    assert hung_up.is_set()


def test_an_invalid_url_is_a_failed_result_that_says_so():
    result = probe("nexo-be-develop.example.com/health")

    assert (result.ok, result.status) == (False, None)
    assert result.detail.startswith("invalid URL")


def test_the_timeout_defaults_to_the_http_timeout_setting(settings):
    settings.HTTP_TIMEOUT_SECONDS = 0.3
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()

        result = probe(f"http://127.0.0.1:{silent.getsockname()[1]}/health")

    assert result.detail == "no answer within 0.3 s"


def test_a_tls_failure_is_a_failed_result_that_says_so(health_server):
    plain_http = health_server.answer("/health", 200)

    result = probe(plain_http.replace("http://", "https://"))

    assert (result.ok, result.status) == (False, None)
    assert result.detail.startswith("TLS failed: ")
    assert "wrong version number" in result.detail
