"""/metrics: Prometheus' exposition of what the portal did, behind METRICS_TOKEN, right across processes."""

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from django.core.management import call_command
from django.db import transaction
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from environments.models import Environment
from environments.prometheus import Prometheus
from releases.models import Promotion, PromotionKind, PromotionState
from tests.factories import make_release, make_service

TOKEN = "metrics-token-for-the-tests-0123456789"
ROOT = Path(__file__).resolve().parent.parent


def sample(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def metrics_token(settings):
    settings.METRICS_TOKEN = TOKEN
    return TOKEN


def test_metrics_are_not_served_without_a_token_configured(client, db, settings):
    settings.METRICS_TOKEN = ""
    response = client.get("/metrics")
    assert response.status_code == 404
    assert b"METRICS_TOKEN" in response.content


@pytest.mark.parametrize("authorization", ["", "Bearer wrong-token", f"Basic {TOKEN}", TOKEN])
def test_metrics_refuse_a_missing_or_wrong_token(client, db, metrics_token, authorization):
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = client.get("/metrics", **headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"nexo_" not in response.content


def waiting_for_approval(environment):
    release = make_release(make_service("nexo-be"), "2026.02.1")
    return Promotion.objects.create(release=release, environment=environment, state=PromotionState.AWAITING_APPROVAL)


def test_metrics_show_promotions_by_environment_and_state_and_the_queue(
    client, environments, redis_connection, metrics_token
):
    waiting_for_approval(environments["staging"])
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert 'nexo_promotions{environment="staging",state="awaiting_approval"} 1.0' in text
    assert 'nexo_promotions{environment="production",state="awaiting_approval"} 0.0' in text
    assert 'nexo_queue_jobs{queue="default",status="failed"}' in text
    assert "nexo_audit_events_total" in text
    assert "nexo_database_up 1.0" in text
    assert "nexo_redis_up 1.0" in text


def test_metrics_say_redis_is_down_where_the_workers_and_the_queue_cannot_be_read(client, db, settings, metrics_token):
    """Without Redis no job runs, and `nexo_workers == 0` cannot say so: there is no count to compare."""
    settings.RQ_QUEUES = {"default": {"URL": "redis://127.0.0.1:1/0"}}
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    text = response.content.decode()
    assert "nexo_redis_up 0.0" in text
    assert "nexo_database_up 1.0" in text
    assert "\nnexo_workers " not in text, "no count is made up"


DATABASE_REFUSING_SCRAPE = """
import django
django.setup()
from django.test import Client
response = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer {token}", HTTP_HOST="localhost")
print(response.status_code)
print(response.content.decode())
"""


def test_metrics_say_the_database_is_down_when_it_refuses_connections(tmp_path):
    """A portal whose PostgreSQL refuses connections (nothing listens on its port) still answers the
    scrape, so `up` stays 1: `nexo_database_up` is what says it."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "nexo_portal.settings",
        "DATABASE_URL": "postgres://nexo:nexo@127.0.0.1:1/nexo",
        "METRICS_TOKEN": TOKEN,
        "ALLOWED_HOSTS": "localhost",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    scrape = subprocess.run(
        [sys.executable, "-c", DATABASE_REFUSING_SCRAPE.format(token=TOKEN)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert scrape.returncode == 0, scrape.stderr
    status, _, text = scrape.stdout.partition("\n")
    assert status == "200"
    assert "nexo_database_up 0.0" in text
    assert "nexo_redis_up 1.0" in text
    assert "\nnexo_promotions{" not in text


def test_requests_are_counted_by_method_with_made_up_methods_counted_as_one(client, db, metrics_token):
    """Anyone may send any method name, signed in or not: each would otherwise be a time series kept
    for good in every process and in Prometheus."""
    before = sample("nexo_http_requests_total", method="_OTHER", status="3xx")
    for made_up in ("X0ATTACK", "X1ATTACK", "X2ATTACK"):
        client.generic(made_up, "/")
    client.get("/")

    text = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content.decode()
    assert "ATTACK" not in text
    assert sample("nexo_http_requests_total", method="_OTHER", status="3xx") == before + 3
    assert sample("nexo_http_requests_total", method="GET", status="3xx") >= 1


def test_audit_events_are_counted_once_committed(transactional_db, environments):
    from releases import transitions

    release = make_release(make_service("nexo-be"), "2026.02.1")
    before = sample("nexo_audit_events_total", action="promotion.requested")
    with transaction.atomic():
        transitions.request_promotion(release, environments["develop"], None, kind=PromotionKind.AUTO)
        transaction.set_rollback(True)
    assert sample("nexo_audit_events_total", action="promotion.requested") == before
    transitions.request_promotion(release, environments["develop"], None, kind=PromotionKind.AUTO)
    assert sample("nexo_audit_events_total", action="promotion.requested") == before + 1


def test_outgoing_calls_are_counted_with_their_outcome_and_latency(configured_prometheus, prometheus_errors):
    ok_before = sample("nexo_outgoing_calls_total", target="prometheus", outcome="ok")
    seconds_before = sample("nexo_outgoing_call_duration_seconds_count", target="prometheus")
    Prometheus(configured_prometheus.url).query("vector(1)")
    assert sample("nexo_outgoing_calls_total", target="prometheus", outcome="ok") == ok_before + 1

    bad_before = sample("nexo_outgoing_calls_total", target="prometheus", outcome="4xx")
    prometheus_errors.answer_error(400, "bad_data", "parse error")
    with pytest.raises(Exception, match="parse error"):
        Prometheus(prometheus_errors.url).query("vector(")
    assert sample("nexo_outgoing_calls_total", target="prometheus", outcome="4xx") == bad_before + 1

    refused_before = sample("nexo_outgoing_calls_total", target="prometheus", outcome="error")
    with pytest.raises(Exception, match="Could not reach Prometheus"):
        Prometheus("http://127.0.0.1:9").query("vector(1)")
    assert sample("nexo_outgoing_calls_total", target="prometheus", outcome="error") == refused_before + 1
    assert sample("nexo_outgoing_call_duration_seconds_count", target="prometheus") == seconds_before + 3


def test_a_promotion_through_the_pipeline_observes_its_steps(pipeline, rita, paulo):
    from releases import transitions

    service = pipeline.add_service("nexo-be")
    release = make_release(service, "2026.02.1")
    transitions.request_promotion(release, pipeline.environments["develop"], None, kind=PromotionKind.AUTO)
    pipeline.run_jobs()  # develop, then qa by itself
    before = {
        step: sample("nexo_promotion_step_duration_seconds_count", environment="staging", step=step)
        for step in ("waiting_for_approval", "commit", "sync", "soak")
    }
    finished_before = sample("nexo_promotions_finished_total", environment="staging", kind="manual", state="verified")
    promotion = transitions.request_promotion(release, pipeline.environments["staging"], rita)
    transitions.approve(promotion, paulo)
    pipeline.run_jobs()
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.VERIFIED
    for step, count in before.items():
        assert sample("nexo_promotion_step_duration_seconds_count", environment="staging", step=step) == count + 1
    assert (
        sample("nexo_promotions_finished_total", environment="staging", kind="manual", state="verified")
        == finished_before + 1
    )
    assert sample("nexo_jobs_total", function="releases.jobs.run_step", outcome="finished") >= 3
    assert sample("nexo_pipeline_steps_total", step="commit", outcome="done") >= 1


def test_the_real_prometheus_scrapes_the_portal(prometheus, live_server, environments, metrics_token):
    waiting_for_approval(environments["production"])
    address = live_server.url.removeprefix("http://")
    prometheus.scrape_portal(address, TOKEN)
    try:
        values = prometheus.wait_for(
            'nexo_promotions{job="portal",environment="production",state="awaiting_approval"}',
            lambda values: values == [1.0],
            timeout=30,
        )
        assert values == [1.0]
        up = requests.get(f"{prometheus.url}/api/v1/query", params={"query": 'up{job="portal"}'}, timeout=5).json()
        assert [float(r["value"][1]) for r in up["data"]["result"]] == [1.0]
    finally:
        prometheus.scrape_portal("", "none")


MULTIPROCESS_WORKER = """
from nexo_portal.lib import metrics
for _ in range({count}):
    with metrics.outgoing_call("argocd", "GET get") as call:
        call.status = 200
"""
MULTIPROCESS_EXPOSITION = """
from nexo_portal.lib import metrics
body, _ = metrics.exposition()
print(body.decode())
"""


def test_multiprocess_mode_adds_up_every_process(tmp_path):
    """As gunicorn's workers and RQ's: each process counts into PROMETHEUS_MULTIPROC_DIR, /metrics sums them."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "nexo_portal.settings"}
    for count in (2, 3):
        subprocess.run([sys.executable, "-c", MULTIPROCESS_WORKER.format(count=count)], env=env, cwd=ROOT, check=True)
    exposition = subprocess.run(
        [sys.executable, "-c", MULTIPROCESS_EXPOSITION], env=env, cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    assert 'nexo_outgoing_calls_total{outcome="ok",target="argocd"} 5.0' in exposition
    assert 'nexo_outgoing_call_duration_seconds_count{target="argocd"} 5.0' in exposition


MULTIPROCESS_STARTED = """
import django
django.setup()
from nexo_portal.lib import metrics
body, _ = metrics.exposition()
print(body.decode())
"""


def test_a_process_that_starts_counts_every_known_failure_from_zero_across_processes(tmp_path):
    """A counter child appears at its first increment, and the multiprocess directory is emptied at
    each start: Prometheus then had no 0 before the first refusal, crash or failed job, and
    `increase(…[1h])` saw none. Every process (the web's, as here, the workers', the reconciler's)
    gives each known label combination its 0 as it starts."""
    from releases.models import NoticeKind, Step

    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "nexo_portal.settings"}
    exposition = subprocess.run(
        [sys.executable, "-c", MULTIPROCESS_STARTED], env=env, cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    exposed = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }

    def zero(name, **labels):
        return exposed.get((name, tuple(sorted(labels.items())))) == 0

    for kind in NoticeKind.values:
        for reason in ("refused", "exhausted"):
            assert zero("nexo_notices_given_up_total", kind=kind, reason=reason), (kind, reason)
    for step in Step.values:
        for outcome in ("done", "retry", "crashed"):
            assert zero("nexo_pipeline_steps_total", step=step, outcome=outcome), (step, outcome)
    for reason in ("lease_expired", "redelivered", "stalled"):
        assert zero("nexo_reconciler_resumes_total", reason=reason), reason
    for function in ("releases.jobs.run_step", "releases.jobs.deliver_notice"):
        for outcome in ("finished", "failed"):
            assert zero("nexo_jobs_total", function=function, outcome=outcome), (function, outcome)


def test_slo_breaches_are_counted_from_zero_in_every_environment_from_its_first_scrape(
    client, environments, redis_connection, metrics_token
):
    """Environments are rows: /metrics gives each its 0 as it reads them, in the same answer."""
    Environment.objects.create(name="perf-lab", position=9, promotion_slo_minutes=20)
    text = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content.decode()
    assert 'nexo_promotion_slo_breaches_total{environment="perf-lab"} 0.0' in text


def test_the_real_prometheus_sees_the_first_notice_given_up_as_an_increase(
    prometheus, live_server, transactional_db, redis_connection, metrics_token
):
    """The documented alert, `increase(nexo_notices_given_up_total[1h]) > 0`, on the first refusal."""
    from releases import notices, slack
    from releases.models import NoticeKind

    def refused(promotion_id):
        raise slack.SlackRefused("chat.postMessage", "channel_not_found")

    series = 'nexo_notices_given_up_total{job="portal",kind="approval_reminder",reason="refused"}'
    prometheus.scrape_portal(live_server.url.removeprefix("http://"), TOKEN)
    try:
        prometheus.wait_for(series, lambda values: len(values) == 1, timeout=30)
        notice = notices.owe(NoticeKind.APPROVAL_REMINDER, 1)
        notices.deliver(notice.pk, {NoticeKind.APPROVAL_REMINDER: refused})
        values = prometheus.wait_for(f"increase({series}[1h])", lambda values: values and values[0] > 0, timeout=30)
        assert values[0] > 0
    finally:
        prometheus.scrape_portal("", "none")


def test_jobs_are_counted_by_how_they_ended(transactional_db, redis_connection, slack_server):
    import django_rq

    from releases import alerts
    from releases.worker import PortalWorker

    function = "releases.alerts.send_audit_chain_alert"
    finished = sample("nexo_jobs_total", function=function, outcome="finished")
    failed = sample("nexo_jobs_total", function=function, outcome="failed")
    queue = django_rq.get_queue("default")
    worker = PortalWorker([queue], connection=queue.connection)

    queue.enqueue(alerts.send_audit_chain_alert, "3 events checked; event 2 was rewritten")
    worker.work(burst=True)
    assert sample("nexo_jobs_total", function=function, outcome="finished") == finished + 1

    slack_server.answer(500, "rollup_error")  # AlertNotDelivered: the job fails
    queue.enqueue(alerts.send_audit_chain_alert, "3 events checked; event 2 was rewritten")
    worker.work(burst=True)
    assert sample("nexo_jobs_total", function=function, outcome="failed") == failed + 1
    assert sample("nexo_jobs_total", function=function, outcome="finished") == finished + 1


def test_no_metric_of_the_portal_has_a_label_prometheus_attaches_itself():
    """Prometheus gives every series it scrapes the target's `job` and `instance`, and renames a label
    of the same name (`exported_job`): a panel's `sum by (job)` would group by the scrape job."""
    from nexo_portal.lib import metrics

    declared = [value for value in vars(metrics).values() if isinstance(value, MetricWrapperBase)]
    assert declared
    for metric in declared:
        assert not {"job", "instance"} & set(metric._labelnames), metric


def test_metrics_count_the_workers_alive_not_those_gone_silent(client, db, redis_connection, metrics_token):
    """A SIGKILLed worker stays in RQ's own registry until its key expires (up to its job timeout
    later): the portal counts those heard from in the last seconds."""
    from releases import worker

    worker.say_alive(redis_connection, "alive")
    worker.say_alive(redis_connection, "killed", at=time.time() - worker.ALIVE_SECONDS - 1)

    text = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content.decode()

    assert "nexo_workers 1.0" in text


def scraped_value(text, name):
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found, f"{name} is not on /metrics"
    return float(found[1])


def test_metrics_say_when_the_reconciler_last_ended_a_round(client, transactional_db, redis_connection, metrics_token):
    """Killed (with the worker running RQ's scheduler), the reconciler said nothing on /metrics: a soak's
    verdict went undelivered with `nexo_workers` at 1, and the SLO breaches it counts went silent too.
    Its last round, kept in PostgreSQL, says how long it has been gone; 0 for one that never ran."""
    text = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content.decode()
    assert scraped_value(text, "nexo_reconciler_last_round_timestamp_seconds") == 0

    before = time.time()
    call_command("reconcile", stdout=io.StringIO())
    after = time.time()

    text = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content.decode()
    assert before <= scraped_value(text, "nexo_reconciler_last_round_timestamp_seconds") <= after


def test_a_working_worker_is_counted_alive_and_not_once_it_stopped(pipeline):
    import django_rq

    from releases import worker

    job = django_rq.get_queue("default").enqueue("releases.worker.live_workers")
    pipeline.run_jobs()

    job.refresh()
    assert job.return_value() == 1, "the worker that ran it"
    assert worker.live_workers() == 0, "a worker that stopped says so"
