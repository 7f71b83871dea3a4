"""docs/grafana-dashboard.json: every panel's query is valid PromQL for the real Prometheus and asks only
for metrics the portal's /metrics exposes."""

import json
import re
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "metrics-token-for-the-dashboard-test"


@pytest.fixture
def metrics_token(settings):
    settings.METRICS_TOKEN = TOKEN


def test_the_grafana_dashboard_asks_the_real_prometheus_only_valid_queries_of_metrics_that_exist(
    prometheus, client, environments, redis_connection, metrics_token
):
    exposed = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content.decode()
    families = set(re.findall(r"^# TYPE (\w+) (\w+)", exposed, re.M))
    names = {name for name, _ in families} | {f"{name}_total" for name, kind in families if kind == "counter"}
    names |= {f"{name}_bucket" for name, kind in families if kind == "histogram"}
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert expressions
    for expression in expressions:
        used = set(re.findall(r"\bnexo_\w+", expression))
        assert used <= names, f"{expression} uses {used - names}, which /metrics does not expose"
        promql = expression.replace("$__range", "1h").replace('=~"$job"', '=~".*"')
        answer = requests.get(f"{prometheus.url}/api/v1/query", params={"query": promql}, timeout=5).json()
        assert answer["status"] == "success", (expression, answer.get("error"))
