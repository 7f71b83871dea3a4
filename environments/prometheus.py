"""Client for Prometheus' instant queries (GET /api/v1/query), as the soak window samples error rates.

Prometheus answers {"status": "success", "data": {"resultType": ..., "result": ...}} or
{"status": "error", "errorType": ..., "error": ...} with HTTP 400 (bad_data), 422 (execution) or
503 (timeout); sample values are strings, including "NaN", "+Inf" and "-Inf".
"""

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

import requests
from django.conf import settings

from nexo_portal.lib import metrics
from nexo_portal.lib.http import describe_failure, excerpt

# PromQL durations: one or more number-unit pairs, longest unit first ("5m", "1h30m", "500ms").
DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h|d|w|y)")
_DURATION = re.compile(r"(?:[0-9]+(?:ms|s|m|h|d|w|y))+")
# A range selector or subquery written in a query: [5m], [1h30m], [10m:1m].
_RANGE_SELECTOR = re.compile(r"\[\s*((?:[0-9]+(?:ms|s|m|h|d|w|y))+)\s*(?::[^\]]*)?\]")


def parse_duration(text):
    """A PromQL duration such as "5m" or "1h30m" as a timedelta; ValueError when it is not one."""
    text = text.strip()
    if not _DURATION.fullmatch(text):
        raise ValueError(f"{text!r} is not a PromQL duration such as 30s, 5m or 1h30m.")
    seconds = sum(int(number) * DURATION_UNITS[unit] for number, unit in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)


def format_duration(delta):
    """A timedelta as a PromQL duration in whole seconds ("95s"), the form Prometheus parses everywhere."""
    return f"{max(0, int(delta.total_seconds()))}s"


def describe_duration(delta):
    """A timedelta for people, in PromQL's compact style: "5m", "1m35s", "1h"."""
    seconds, parts = max(0, int(delta.total_seconds())), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


# `{range}` in a query template: the time the deployment under verification has been healthy, so
# that a rate() never reaches back into the release before it. `{range:10m}` says the longest range
# the query should use (a plain `{range}` goes up to DEFAULT_RANGE).
RANGE_PLACEHOLDER = re.compile(r"\{range(?::([^{}]*))?\}")
DEFAULT_RANGE = timedelta(minutes=5)


def has_range_placeholder(template):
    return bool(RANGE_PLACEHOLDER.search(template))


def range_placeholder_errors(template):
    """What is wrong with the `{range:…}` placeholders of a template, one sentence each."""
    errors = []
    for written in RANGE_PLACEHOLDER.findall(template):
        if written:
            try:
                parse_duration(written)
            except ValueError as error:
                errors.append(f"In {{range:{written}}}: {error}")
    return errors


def fill_range(template, elapsed):
    """The template with each `{range}` replaced by `elapsed`, clipped to the range it allows."""

    def replace(match):
        longest = parse_duration(match.group(1)) if match.group(1) else DEFAULT_RANGE
        return format_duration(min(elapsed, longest))

    return RANGE_PLACEHOLDER.sub(replace, template)


def longest_range(promql):
    """The longest range selector written in a query ([5m] in rate(x[5m])), or None without one."""
    ranges = [parse_duration(match) for match in _RANGE_SELECTOR.findall(promql)]
    return max(ranges) if ranges else None


class PrometheusError(Exception):
    """The query could not be answered. str() says why, with Prometheus' own errorType and error;
    `error_type` and `http_status` are None when no API answer came."""

    def __init__(self, sentence, *, error_type=None, http_status=None):
        super().__init__(sentence)
        self.error_type = error_type
        self.http_status = http_status


@dataclass(frozen=True)
class Sample:
    labels: dict
    value: float


class Prometheus:
    def __init__(self, base_url, *, timeout=None, session=None):
        self.base_url = base_url.rstrip("/")
        self.timeout = settings.HTTP_TIMEOUT_SECONDS if timeout is None else timeout
        self.session = session or requests.Session()

    def __repr__(self):
        return f"<Prometheus {self.base_url}>"

    @classmethod
    def from_settings(cls):
        """The configured Prometheus, or None when PROMETHEUS_URL is unset ("not configured")."""
        if not settings.PROMETHEUS_URL:
            return None
        return cls(settings.PROMETHEUS_URL)

    def query(self, promql, at=None):
        """The samples of an instant query, evaluated now or `at` (a datetime or Unix seconds).

        A scalar result is one sample without labels; a range vector or string is refused, since
        the caller compares numbers.
        """
        params = {"query": promql}
        if at is not None:
            params["time"] = at.timestamp() if isinstance(at, datetime) else at
        data = self._get("/api/v1/query", params, promql)
        result_type, result = data.get("resultType"), data.get("result")
        try:
            if result_type == "vector":
                return [Sample(labels=item["metric"], value=float(item["value"][1])) for item in result]
            if result_type == "scalar":
                return [Sample(labels={}, value=float(result[1]))]
        except (KeyError, IndexError, TypeError, ValueError) as error:
            raise PrometheusError(
                f"Prometheus at {self.base_url} answered the query {promql!r} with a {result_type} result "
                f"that could not be read ({error!r})."
            ) from error
        raise PrometheusError(
            f"The query {promql!r} returned a {result_type or 'missing'} result; it must return an instant "
            "vector or a scalar (a range selector such as [5m] belongs inside a function like rate())."
        )

    def instant_value(self, promql):
        """One number for a query: None when no series matched, the highest value when several did.

        Several series (one per pod, say) are reduced to the worst case, the highest. A NaN series
        (0/0: no traffic in the window) says nothing about errors and is skipped; only when every series
        is NaN is NaN returned, and the caller decides what an unknown ratio means.
        """
        samples = self.query(promql)
        if not samples:
            return None
        numbers = [sample.value for sample in samples if not math.isnan(sample.value)]
        return max(numbers) if numbers else math.nan

    def _get(self, path, params, promql):
        try:
            with metrics.outgoing_call("prometheus", f"GET {path}") as call:
                response = self.session.get(self.base_url + path, params=params, timeout=self.timeout)
                call.status = response.status_code
        except requests.RequestException as error:
            raise PrometheusError(
                f"Could not reach Prometheus at {self.base_url} for the query {promql!r}: "
                f"{describe_failure(error, self.timeout)}."
            ) from error
        try:
            body = response.json()
        except ValueError:
            body = None
        # A success carries its result in a mapping; JSend-shaped APIs say "success" about anything.
        answered = isinstance(body, dict) and body.get("status") in ("success", "error")
        if not answered or (body["status"] == "success" and not isinstance(body.get("data", {}), dict)):
            text = excerpt(response.text)
            raise PrometheusError(
                f"Prometheus at {self.base_url} gave HTTP {response.status_code} for the query {promql!r}, and not "
                f"its API's JSON" + (f": {text}" if text else "") + ". Is PROMETHEUS_URL the Prometheus server?",
                http_status=response.status_code,
            )
        if body["status"] == "error":
            error_type = body.get("errorType") or "unknown"
            raise PrometheusError(
                f"Prometheus could not run the query {promql!r} (HTTP {response.status_code}, {error_type}): "
                f"{body.get('error') or 'no reason given'}.",
                error_type=error_type,
                http_status=response.status_code,
            )
        return body.get("data") or {}
