"""Health and smoke URLs: a GET that must end in 2xx. A probe never raises; a failure is a result
that says why, so the soak window can record it next to the others."""

import time
from dataclasses import dataclass
from http import HTTPStatus

import requests
from django.conf import settings
from urllib3.exceptions import HTTPError as TransportError
from urllib3.exceptions import ReadTimeoutError

from nexo_portal.lib import metrics
from nexo_portal.lib.http import describe_failure, excerpt

# Enough of an error page to show what the service said, without reading a large body.
BODY_BYTES = 2048


@dataclass(frozen=True)
class ProbeResult:
    url: str
    ok: bool
    status: int | None
    detail: str


def probe(url, *, timeout=None):
    """GET `url` (following redirects); ok when the final answer is 2xx and the start of its body
    follows within `timeout` of its headers."""
    timeout = settings.HTTP_TIMEOUT_SECONDS if timeout is None else timeout
    try:
        with (
            metrics.outgoing_call("health", "GET") as call,
            requests.get(url, timeout=timeout, stream=True, allow_redirects=True) as response,
        ):
            call.status = response.status_code
            body, complete = _start_of_body(response, time.monotonic() + timeout)
    except requests.RequestException as error:
        return ProbeResult(url=url, ok=False, status=None, detail=describe_failure(error, timeout))
    answered_ok = 200 <= response.status_code < 300
    detail = f"HTTP {response.status_code} {_reason(response)}"
    if response.history:
        detail += f" from {response.url}"
    if not complete:
        detail += f", but the rest of its answer did not come within {timeout:g} s"
    if not answered_ok:
        text = excerpt(body.decode(response.encoding or "utf-8", errors="replace"))
        if text:
            detail += f": {text}"
    return ProbeResult(url=url, ok=answered_ok and complete, status=response.status_code, detail=detail)


def _start_of_body(response, deadline):
    """(up to BODY_BYTES of the body, whether they came before `deadline`).

    The request's timeout bounds each read, not the answer: a service that sends a byte now and
    then would hold the soak's round for as many reads. Each read here takes what has arrived.
    """
    body = b""
    while len(body) < BODY_BYTES:
        if time.monotonic() > deadline:
            return body, False
        try:
            chunk = response.raw.read1(BODY_BYTES - len(body), decode_content=True)
        except ReadTimeoutError:
            return body, False
        except TransportError as error:  # the connection broke: as requests' own reads say it
            raise requests.ConnectionError(error) from error
        if not chunk:
            break
        body += chunk
    return body, True


def _reason(response):
    try:
        return HTTPStatus(response.status_code).phrase
    except ValueError:
        return response.reason or ""
