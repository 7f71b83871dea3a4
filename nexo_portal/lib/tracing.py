"""Optional OpenTelemetry traces: spans for requests, jobs and outgoing calls, sent over OTLP/HTTP.

Off unless OTEL_EXPORTER_OTLP_ENDPOINT is set: then, and only then, OpenTelemetry's SDK and OTLP
exporter (requirements-tracing.txt, an optional extra) are imported, and every span carries the
promotion id, service, environment and job id of the context (nexo_portal/lib/context.py). The
exporter reads the rest of the standard OTEL_* variables itself (OTEL_EXPORTER_OTLP_HEADERS,
OTEL_SERVICE_NAME, …). Spans are exported in batches from a thread, so a collector out of reach
costs the portal nothing but the spans.
"""

import logging
import os
from contextlib import contextmanager

from . import context

logger = logging.getLogger(__name__)

_tracer = None
_provider = None
_configured = False


def is_enabled():
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def tracer():
    """The portal's tracer, set up on first use; None when tracing is off."""
    global _tracer, _configured
    if not _configured:
        _configured = True
        if is_enabled():
            _tracer = _set_up()
    return _tracer


def _set_up():
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        logger.error(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed: "
            "pip install -r requirements-tracing.txt. No spans will be sent."
        )
        return None
    global _provider
    service = os.environ.get("OTEL_SERVICE_NAME", "nexo-release-portal")
    _provider = provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return trace.get_tracer("nexo_portal")


def flush(timeout_millis=5000):
    """Send what is batched now (a job ending a burst, a test)."""
    if tracer() is not None and _provider is not None:
        _provider.force_flush(timeout_millis)


@contextmanager
def span(name, *, kind="internal", **attributes):
    """A span named `name` around the block, or nothing at all when tracing is off."""
    active = tracer()
    if active is None:
        yield _NO_SPAN
        return
    from opentelemetry.trace import SpanKind

    for field, value in context.current().items():
        attributes.setdefault(f"nexo.{field}", value)
    attributes = {key: value for key, value in attributes.items() if isinstance(value, str | bool | int | float)}
    with active.start_as_current_span(name, kind=getattr(SpanKind, kind.upper()), attributes=attributes) as current:
        yield current


def annotate(**attributes):
    """Set attributes on the span in progress (the promotion id once a job has loaded it)."""
    if tracer() is None:
        return
    from opentelemetry import trace

    current = trace.get_current_span()
    for key, value in attributes.items():
        if isinstance(value, str | bool | int | float):
            current.set_attribute(key, value)


class _NoSpan:
    def set_attribute(self, key, value):
        pass

    def update_name(self, name):
        pass


_NO_SPAN = _NoSpan()
