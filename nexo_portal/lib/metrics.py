"""The portal's Prometheus metrics: what every process counts, and the exposition `/metrics` serves.

Web workers (gunicorn forks several), RQ workers and the reconciler are separate processes, each
counting on its own. With PROMETHEUS_MULTIPROC_DIR set (before the process starts: prometheus_client
reads it at import), each process writes its counters and histograms to files there and the
exposition adds them all up (prometheus_client's multiprocess mode); without it, the exposition is
this process's own, which is right for one process (the demo, the tests). Figures that are state
rather than events (promotions by state, queue depth) are read from the database and Redis when
scraped, by the collectors the caller passes (releases/metrics.py), so they are never summed twice.
"""

import os
import time
from contextlib import contextmanager

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

from . import tracing

# Promotions take minutes to hours: buckets from 10 s to 4 h.
STEP_BUCKETS = (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400)
# Calls to Argo CD, Prometheus, GitHub and Slack take milliseconds to their timeout.
CALL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

PROMOTIONS_FINISHED = Counter(
    "nexo_promotions_finished",
    "Promotions that ended, by environment, kind and the state they ended in.",
    ["environment", "kind", "state"],
)
PROMOTION_STEP_SECONDS = Histogram(
    "nexo_promotion_step_duration_seconds",
    "How long each step of a promotion took: waiting_for_approval, commit, sync, soak.",
    ["environment", "step"],
    buckets=STEP_BUCKETS,
)
PROMOTION_SLO_BREACHES = Counter(
    "nexo_promotion_slo_breaches",
    "Promotions found active for longer than their environment's target time (counted once each).",
    ["environment"],
)
# `function`, not `job`: Prometheus gives every series the scrape's own `job` label, and renames a
# target's to `exported_job`.
JOBS = Counter(
    "nexo_jobs", "RQ jobs run, by function and how they ended (finished or failed).", ["function", "outcome"]
)
PIPELINE_STEPS = Counter(
    "nexo_pipeline_steps",
    "Pipeline step runs (commit, sync, verify) by how they ended: done, retry (a transient error) or crashed.",
    ["step", "outcome"],
)
RECONCILER_RESUMES = Counter(
    "nexo_reconciler_resumes",
    "Pipeline steps the reconciler delivered again: lease expired, lost by RQ, or a promotion stalled.",
    ["reason"],
)
NOTICES_GIVEN_UP = Counter(
    "nexo_notices_given_up",
    "Alerts and notices the portal gave up sending, by kind and why: refused (Slack will never take it) "
    "or exhausted (every retry failed).",
    ["kind", "reason"],
)
OUTGOING_CALLS = Counter(
    "nexo_outgoing_calls",
    "Calls to Argo CD, Prometheus, GitHub, Slack, health URLs and the mail server, by target and outcome "
    "(ok, an HTTP status class such as 4xx, or error when no answer came).",
    ["target", "outcome"],
)
OUTGOING_CALL_SECONDS = Histogram(
    "nexo_outgoing_call_duration_seconds",
    "How long calls to Argo CD, Prometheus, GitHub, Slack, health URLs and the mail server took, answered or not.",
    ["target"],
    buckets=CALL_BUCKETS,
)
AUDIT_EVENTS = Counter("nexo_audit_events", "Audit events recorded, by action.", ["action"])
HTTP_REQUESTS = Counter(
    "nexo_http_requests", "Requests the portal answered, by method and status class.", ["method", "status"]
)


def is_multiprocess():
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def status_class(status):
    return f"{int(status) // 100}xx"


# HTTP's methods (RFC 9110) and PATCH. A server takes any token as a method, and each label value
# is a time series kept for good in every process's file and in Prometheus: anything else is one
# value, as OpenTelemetry's conventions name it.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})


def method_label(method):
    return method if method in KNOWN_METHODS else "_OTHER"


@contextmanager
def outgoing_call(target, operation, **attributes):
    """Time and count one call to a remote service (`target`: argocd, prometheus, github, slack, health,
    oidc, registry, email).

    The block sets `.status` on what it gets back (`call.status = response.status_code`) when an
    answer came; an exception out of the block counts as `error`, or as its response's status
    class when it carries one (requests' HTTPError). With tracing on, the call is a span too.
    """
    call = _Call()
    started = time.perf_counter()
    with tracing.span(f"{target} {operation}", kind="client", **{"peer.service": target, **attributes}) as span:
        try:
            yield call
        except BaseException as error:
            status = getattr(getattr(error, "response", None), "status_code", None)
            outcome = status_class(status) if isinstance(status, int) else "error"
            OUTGOING_CALLS.labels(target=target, outcome=outcome).inc()
            raise
        else:
            outcome = "ok" if call.status is None or 200 <= call.status < 300 else status_class(call.status)
            OUTGOING_CALLS.labels(target=target, outcome=outcome).inc()
            if call.status is not None:
                span.set_attribute("http.response.status_code", call.status)
        finally:
            OUTGOING_CALL_SECONDS.labels(target=target).observe(time.perf_counter() - started)


class _Call:
    status = None


def exposition(collectors=()):
    """The text `/metrics` answers: `collectors` read now, then every process's counters (or this one's).

    The collectors come first: what they read may give a counter a label value it counts from zero
    (an environment), which is then in this answer already.
    """
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    if is_multiprocess():
        multiprocess.MultiProcessCollector(registry)
    else:
        for collector in list(REGISTRY._collector_to_names):
            registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def mark_process_dead(pid):
    """For gunicorn's child_exit hook: a dead worker's live gauges go (its counters stay counted)."""
    if is_multiprocess():
        multiprocess.mark_process_dead(pid)
