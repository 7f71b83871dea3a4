"""What the Argo CD, Prometheus and probe clients share: turning a failed HTTP call into words.

requests describes a refused connection as a nest of urllib3 reprs; people need "connection refused".
"""

import re

import requests
from requests.exceptions import InvalidSchema, InvalidURL, MissingSchema, SSLError

_OS_ERROR = re.compile(r"\[Errno -?\d+\] ([^\"')]+)")
_TLS_ERROR = re.compile(r"\[SSL: \w+\] ([^\"'(]+)")
EXCERPT_LENGTH = 200


def describe_failure(error, timeout):
    """A short reason for a request that got no HTTP answer: 'connection refused', 'no answer within 10 s'."""
    if isinstance(error, requests.Timeout):
        return f"no answer within {timeout:g} s"
    if isinstance(error, SSLError):
        match = _TLS_ERROR.search(str(error))
        return f"TLS failed: {match.group(1).strip() if match else error}"
    if isinstance(error, requests.ConnectionError):
        return _innermost(error)
    if isinstance(error, (MissingSchema, InvalidSchema, InvalidURL)):
        return f"invalid URL ({error})"
    return str(error)


def excerpt(text):
    """The start of a response body on one line, for messages about answers that are not the expected JSON."""
    text = " ".join((text or "").split())
    return text if len(text) <= EXCERPT_LENGTH else text[:EXCERPT_LENGTH] + "…"


def _innermost(error):
    match = _OS_ERROR.search(str(error))
    if not match:
        return str(error)
    reason = match.group(1).strip()
    return reason[:1].lower() + reason[1:]


def retry_after(response, *, at_most=3600):
    """The seconds a 429 or 503 asks the caller to wait (its `Retry-After`, in seconds), or None when
    it names none or an HTTP date, which the services the portal calls do not send. Bounded, so
    a wrong header cannot put a call off for days."""
    value = response.headers.get("Retry-After", "").strip()
    if not value.isascii() or not value.isdigit():
        return None
    return min(int(value), at_most)
