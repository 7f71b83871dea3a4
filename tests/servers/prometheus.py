"""A real Prometheus for tests, scraping an exporter the tests control; and a stand-in for the error
answers a real one will not give on demand (a query timeout, a server that is unavailable).

The real one is Debian's /usr/bin/prometheus with its own TSDB in a temporary directory, scraping
every second. Scraping means a value set on the exporter reaches queries about a second later:
`wait_for` polls until it has.
"""

import json
import shutil
import signal
import socket
import subprocess
import time

import pytest
import requests
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from tests.servers.loopback import LoopbackServer, Response

PROMETHEUS_BINARY = "/usr/bin/prometheus"
STARTUP_SECONDS = 30
SCRAPE_CONFIG = """\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: nexo
    static_configs:
      - targets: ["{exporter}"]
  # The portal's own /metrics, once a test says where it listens (`scrape_portal`).
  - job_name: portal
    metrics_path: /metrics
    authorization:
      credentials_file: {portal_token}
    file_sd_configs:
      - files: ["{portal_targets}"]
        refresh_interval: 1s
"""


class PrometheusUnderTest:
    def __init__(self, directory):
        self.registry = CollectorRegistry()
        self.error_ratio = Gauge(
            "nexo_error_ratio", "Share of requests that failed.", ["service", "environment"], registry=self.registry
        )
        self.http_requests = Counter(
            "http_requests", "Requests served.", ["service", "environment", "status"], registry=self.registry
        )
        self._exporter, _ = start_http_server(0, addr="127.0.0.1", registry=self.registry)
        exporter = f"127.0.0.1:{self._exporter.server_port}"

        self._portal_targets = directory / "portal-targets.json"
        self._portal_targets.write_text("[]")
        self._portal_token = directory / "portal-token"
        self._portal_token.write_text("none")
        self._scrape_config = SCRAPE_CONFIG.format(
            exporter=exporter, portal_targets=self._portal_targets, portal_token=self._portal_token
        )
        self._config = config = directory / "prometheus.yml"
        config.write_text(self._scrape_config)
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = directory / "prometheus.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    PROMETHEUS_BINARY,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_until_ready()

    def set_error_ratio(self, service, environment, value):
        self.error_ratio.labels(service=service, environment=environment).set(value)

    def count_requests(self, service, environment, status, amount=1):
        self.http_requests.labels(service=service, environment=environment, status=str(status)).inc(amount)

    def scrape_portal(self, address, token):
        """Scrape the portal's /metrics at `address` (host:port) with `token`; an empty address stops it."""
        self._portal_token.write_text(token)
        self._portal_targets.write_text(json.dumps([{"targets": [address]}] if address else []))

    def load_rules(self, path):
        """Evaluate the rules of the file at `path` (every second, as it scrapes); None unloads them.

        Prometheus reads its configuration again on SIGHUP; this returns once its rules are the file's."""
        rules = f"rule_files: [{json.dumps(str(path))}]\n" if path else ""
        self._config.write_text(self._scrape_config + rules)
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            groups = requests.get(f"{self.url}/api/v1/rules", timeout=5).json()["data"]["groups"]
            if {group["file"] for group in groups} == ({str(path)} if path else set()):
                return
            time.sleep(0.2)
        log = self.log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(
            f"Prometheus did not load the rules of {path} in {STARTUP_SECONDS} s. Its log ends with:\n{log}"
        )

    def wait_for(self, promql, predicate, timeout=15):
        """Poll the server until `predicate(values)` holds for the query's sample values; returns them."""
        deadline = time.monotonic() + timeout
        values = None
        while time.monotonic() < deadline:
            answer = requests.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5).json()
            data = answer.get("data") or {}
            if data.get("resultType") == "scalar":
                values = [float(data["result"][1])]
            elif data.get("resultType") == "vector":
                values = [float(item["value"][1]) for item in data["result"]]
            if values is not None and predicate(values):
                return values
            time.sleep(0.2)
        raise AssertionError(f"Prometheus never answered {promql!r} as expected within {timeout} s; last: {values}")

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._exporter.shutdown()
        self._exporter.server_close()

    def _wait_until_ready(self):
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        self.stop()
        log = self.log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"Prometheus did not become ready within {STARTUP_SECONDS} s. Its log ends with:\n{log}")


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory):
    """A real Prometheus scraping the test exporter every second; one per test session (and xdist worker)."""
    if not shutil.which(PROMETHEUS_BINARY):
        pytest.fail(f"{PROMETHEUS_BINARY} is missing: run ./scripts/test, which installs Debian's prometheus package.")
    server = PrometheusUnderTest(tmp_path_factory.mktemp("prometheus"))
    yield server
    server.stop()


@pytest.fixture
def configured_prometheus(prometheus, settings):
    """The real Prometheus, set as the portal's PROMETHEUS_URL."""
    settings.PROMETHEUS_URL = prometheus.url
    return prometheus


class FailingPrometheus:
    """Answers every query with what a test set: Prometheus' error JSON, a proxy's page, or one
    value; and keeps the queries it was asked."""

    def __init__(self):
        self._answer = Response.json(200, {"status": "success", "data": {"resultType": "vector", "result": []}})
        self.queries = []
        self._server = LoopbackServer(self._respond)
        self.url = self._server.url

    def answer_error(self, http_status, error_type, error):
        self._answer = Response.json(http_status, {"status": "error", "errorType": error_type, "error": error})

    def answer_value(self, value, labels=None):
        series = {"metric": labels or {}, "value": [0, str(value)]}
        self._answer = Response.json(200, {"status": "success", "data": {"resultType": "vector", "result": [series]}})

    def answer_page(self, http_status, text, content_type="text/html"):
        self._answer = Response.text(http_status, text, content_type)

    def close(self):
        self._server.close()

    def _respond(self, request):
        if request.path != "/api/v1/query":
            return Response.text(404, "404 page not found\n")
        self.queries.append(request.query)
        return self._answer


@pytest.fixture
def prometheus_errors():
    server = FailingPrometheus()
    yield server
    server.close()
