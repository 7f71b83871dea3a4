"""docs/prometheus-alerts.yml: rules promtool accepts, that read only metrics the portal's /metrics
exposes, and that the real Prometheus fires against a portal whose workers or Redis are gone."""

import re
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from releases.models import ReconcilerRound

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "docs" / "prometheus-alerts.yml"
TOKEN = "metrics-token-for-the-alerts-test"


@pytest.fixture
def metrics_token(settings):
    settings.METRICS_TOKEN = TOKEN


@pytest.fixture
def alerting(prometheus, live_server, metrics_token):
    """The real Prometheus evaluating the rules, and scraping the live portal."""
    prometheus.load_rules(RULES)
    prometheus.scrape_portal(live_server.url.removeprefix("http://"), TOKEN)
    yield prometheus
    prometheus.scrape_portal("", "none")
    prometheus.load_rules(None)


def alert_raised(prometheus, name):
    """Wait until the alert `name` is pending or firing for the portal (its `for` may be longer than a test)."""
    return prometheus.wait_for(
        f'ALERTS{{alertname="{name}",job="portal",alertstate=~"pending|firing"}}', lambda values: values == [1.0]
    )


def test_promtool_accepts_the_alert_rules():
    checked = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_alert_rules_read_only_metrics_the_portal_exposes(client, environments, redis_connection, metrics_token):
    exposed = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content.decode()
    families = set(re.findall(r"^# TYPE (\w+) (\w+)", exposed, re.M))
    names = {name for name, _ in families} | {f"{name}_total" for name, kind in families if kind == "counter"}
    used = set(re.findall(r"\bnexo_\w+", RULES.read_text()))
    assert {"nexo_workers", "nexo_redis_up", "nexo_database_up"} <= used
    assert used <= names, f"the rules read {used - names}, which /metrics does not expose"


def test_a_portal_whose_workers_and_reconciler_are_gone_is_alerted(alerting, redis_connection):
    """The workers and the reconciler killed five minutes ago: no worker says it is alive, no round ended since."""
    ReconcilerRound.record(timezone.now() - timedelta(minutes=5))
    alert_raised(alerting, "NexoNoWorkerAlive")
    alert_raised(alerting, "NexoReconcilerStopped")


def test_a_portal_without_redis_is_alerted(alerting, settings):
    """Without Redis the workers are not counted, so NexoNoWorkerAlive cannot fire: NexoRedisDown does."""
    settings.RQ_QUEUES = {"default": {"URL": "redis://127.0.0.1:1/0"}}
    alert_raised(alerting, "NexoRedisDown")
