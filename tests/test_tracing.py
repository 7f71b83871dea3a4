"""Optional tracing: with OTEL_EXPORTER_OTLP_ENDPOINT, spans for requests, jobs and outgoing calls reach an
OTLP/HTTP collector with the promotion id; without it, OpenTelemetry is not even imported."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.servers.loopback import LoopbackServer, Response

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import sys
import django
django.setup()
from django.test import Client
from nexo_portal.lib import context, metrics, tracing

Client().get("/healthz", HTTP_X_REQUEST_ID="trace-request-0001")
with context.bound(fresh=True, job_id="job-77", promotion_id=4242, service="nexo-be", environment="production"):
    with tracing.span("job releases.jobs.run_step", kind="consumer"):
        with metrics.outgoing_call("argocd", "GET get") as call:
            call.status = 200
tracing.flush()
# redis-py loads OpenTelemetry's API (and its metrics SDK) by itself when installed: what tracing brings
# is the trace SDK and the OTLP exporter.
tracing_modules = ("opentelemetry.sdk.trace", "opentelemetry.exporter")
print(tracing.tracer() is not None, any(module.startswith(tracing_modules) for module in sys.modules))
"""


class Collector:
    """An OpenTelemetry collector's OTLP/HTTP receiver: POST /v1/traces with an ExportTraceServiceRequest."""

    def __init__(self):
        self.spans = []
        self.received = threading.Event()
        self._server = LoopbackServer(self._respond)
        self.url = self._server.url

    def _respond(self, request):
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        if request.method != "POST" or request.path != "/v1/traces":
            return Response.text(404, "not found")
        export = ExportTraceServiceRequest()
        export.ParseFromString(request.body)
        for resource_spans in export.resource_spans:
            service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}.get("service.name")
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {a.key: _value(a.value) for a in span.attributes}
                    self.spans.append({"name": span.name, "kind": span.kind, "service": service, **attributes})
        self.received.set()
        body = ExportTraceServiceResponse().SerializeToString()
        return Response(200, body, {"Content-Type": "application/x-protobuf"})

    def close(self):
        self._server.close()


def _value(value):
    return getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None


@pytest.fixture
def collector():
    server = Collector()
    yield server
    server.close()


def run(extra_env):
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env.update(DJANGO_SETTINGS_MODULE="nexo_portal.settings", DEBUG="1", ALLOWED_HOSTS="testserver", **extra_env)
    return subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=ROOT, check=True, capture_output=True, text=True)


def test_spans_for_requests_jobs_and_outgoing_calls_carry_the_promotion(collector):
    result = run({"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_SERVICE_NAME": "nexo-portal-test"})
    assert result.stdout.strip() == "True True"
    assert collector.received.wait(10)
    spans = {span["name"]: span for span in collector.spans}

    request = spans["GET /healthz"]
    assert request["nexo.request_id"] == "trace-request-0001"
    assert request["http.response.status_code"] in (200, 503)  # the demo's database may be missing
    assert request["service"] == "nexo-portal-test"

    job = spans["job releases.jobs.run_step"]
    assert (job["nexo.promotion_id"], job["nexo.job_id"]) == (4242, "job-77")

    call = spans["argocd GET get"]
    assert call["nexo.promotion_id"] == 4242
    assert (call["peer.service"], call["http.response.status_code"]) == ("argocd", 200)


def test_without_an_endpoint_nothing_is_traced_and_the_trace_sdk_is_not_imported():
    result = run({})
    assert result.stdout.strip() == "False False"
