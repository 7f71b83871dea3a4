"""Health and smoke URLs: a GET that must end in 2xx. A probe never raises; a failure is a result
that says why, so the soak window can record it next to the others."""

from dataclasses import dataclass
from http import HTTPStatus

import requests
from django.conf import settings

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
    """GET `url` (following redirects); ok when the final answer is 2xx."""
    timeout = settings.HTTP_TIMEOUT_SECONDS if timeout is None else timeout
    try:
        with (
            metrics.outgoing_call("health", "GET") as call,
            requests.get(url, timeout=timeout, stream=True, allow_redirects=True) as response,
        ):
            call.status = response.status_code
            body = next(response.iter_content(BODY_BYTES), b"")
    except requests.RequestException as error:
        return ProbeResult(url=url, ok=False, status=None, detail=describe_failure(error, timeout))
    ok = 200 <= response.status_code < 300
    detail = f"HTTP {response.status_code} {_reason(response)}"
    if response.history:
        detail += f" from {response.url}"
    if not ok:
        text = excerpt(body.decode(response.encoding or "utf-8", errors="replace"))
        if text:
            detail += f": {text}"
    return ProbeResult(url=url, ok=ok, status=response.status_code, detail=detail)


def _reason(response):
    try:
        return HTTPStatus(response.status_code).phrase
    except ValueError:
        return response.reason or ""
