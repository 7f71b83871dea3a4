"""The soak against a real Prometheus (started for the tests) and real health URLs."""

import math
import threading
import time
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from environments.models import Environment
from releases import transitions, verification
from releases.jobs import verify_promotion
from releases.models import (
    Promotion,
    PromotionKind,
    PromotionState,
    RunStatus,
    SampleCheck,
    StepRun,
    StepStatus,
    VerificationSample,
)
from tests.factories import make_release, make_service
from tests.history import ran

pytestmark = pytest.mark.prometheus

QUERY = 'nexo_error_ratio{service="{service}",environment="{environment}"}'


@pytest.fixture
def soak(pipeline, configured_prometheus):
    for environment in pipeline.environments.values():
        environment.prometheus_query_template = QUERY
        environment.save()
    return configured_prometheus


def error_ratio(prometheus, service, environment, value):
    prometheus.set_error_ratio(service, environment, value)
    query = f'nexo_error_ratio{{service="{service}",environment="{environment}"}}'
    wanted = (
        (lambda values: values and math.isnan(values[0])) if math.isnan(value) else (lambda values: values == [value])
    )
    prometheus.wait_for(query, wanted)


def deploy(pipeline, service, version, environment="develop"):
    promotion = transitions.request_promotion(
        make_release(service, version), pipeline.environments[environment], None, kind=PromotionKind.AUTO
    )
    pipeline.run_jobs()
    promotion.refresh_from_db()
    return promotion


def test_an_error_rate_below_the_threshold_verifies_and_the_samples_are_kept(pipeline, soak):
    service = pipeline.add_service("svc-calm")
    pipeline.environments["qa"].auto_promote = False
    pipeline.environments["qa"].save()
    error_ratio(soak, "svc-calm", "develop", 0.002)
    promotion = deploy(pipeline, service, "2026.02.1")
    assert promotion.state == PromotionState.VERIFIED
    assert promotion.verification_status == StepStatus.PASSED
    sample = promotion.samples.get(kind=SampleCheck.ERROR_RATE)
    assert (sample.value, sample.ok) == (0.002, True)


def test_an_error_rate_above_the_threshold_fails_and_qa_rolls_back_by_itself(pipeline, soak):
    service = pipeline.add_service("svc-noisy")
    error_ratio(soak, "svc-noisy", "develop", 0.0)
    error_ratio(soak, "svc-noisy", "qa", 0.0)
    good = deploy(pipeline, service, "2026.02.1")
    assert (
        Promotion.objects.get(environment=pipeline.environments["qa"], release=good.release).state
        == PromotionState.VERIFIED
    )

    error_ratio(soak, "svc-noisy", "qa", 0.25)
    deploy(pipeline, service, "2026.02.2")  # develop is still fine; qa is not
    failed = Promotion.objects.get(environment=pipeline.environments["qa"], release__version="2026.02.2")
    assert failed.state == PromotionState.ROLLED_BACK
    assert failed.failed_step == "verification"
    assert "error rate above the threshold in 1 of 1 samples (worst 25.0000% > 1.00%)" in failed.error
    rollback = Promotion.objects.get(environment=pipeline.environments["qa"], kind=PromotionKind.ROLLBACK)
    assert rollback.release == good.release


def test_nan_means_no_traffic_and_never_passes(pipeline, soak):
    service = pipeline.add_service("svc-quiet")
    error_ratio(soak, "svc-quiet", "develop", float("nan"))
    promotion = deploy(pipeline, service, "2026.02.1")
    assert promotion.state == PromotionState.FAILED
    assert "no error-rate data during the window (no data: NaN" in promotion.error


@pytest.mark.parametrize(
    ("status", "error_type", "error"),
    [
        (422, "execution", "query processing would load too many samples into memory"),
        (503, "unavailable", "the TSDB is not ready"),
    ],
)
def test_a_prometheus_error_is_no_data_and_its_message_is_kept(
    pipeline, prometheus_errors, settings, status, error_type, error
):
    for environment in pipeline.environments.values():
        environment.prometheus_query_template = QUERY
        environment.save()
    settings.PROMETHEUS_URL = prometheus_errors.url
    prometheus_errors.answer_error(status, error_type, error)
    promotion = deploy(pipeline, pipeline.add_service("svc-err"), "2026.02.1")
    assert promotion.state == PromotionState.FAILED
    assert error in promotion.error
    assert promotion.samples.get().ok is None


def test_a_spike_in_the_middle_of_the_soak_fails_it_at_once(pipeline, soak):
    """A spike fails the soak when it is seen, even though the end of the window might look fine."""
    service = pipeline.add_service("svc-spiky")
    develop = pipeline.environments["develop"]
    develop.verification_window = timedelta(hours=1)
    develop.save()
    error_ratio(soak, "svc-spiky", "develop", 0.001)
    promotion = transitions.request_promotion(make_release(service, "2026.02.1"), develop, None)
    pipeline.run_jobs(until=lambda: Promotion.objects.get(pk=promotion.pk).samples.count() == 1)
    pipeline.redis.flushdb()  # drive the remaining samples by hand
    error_ratio(soak, "svc-spiky", "develop", 0.3)
    promotion.refresh_from_db()
    time.sleep(verification.next_round_in(promotion, timezone.now()).total_seconds())  # the next round's slot (1 s)
    verify_promotion(promotion.pk)
    promotion.refresh_from_db()
    assert [s.ok for s in promotion.samples.order_by("taken_at")] == [True, False]
    assert promotion.state == PromotionState.FAILED
    assert promotion.finished_at < promotion.verdict_at
    assert promotion.error == (
        "error rate above the threshold in 1 of 2 samples (worst 30.0000% > 1.00%), past the failure limit of 0"
    )


def test_the_soak_keeps_sampling_until_the_window_ends(pipeline, soak):
    service = pipeline.add_service("svc-soak")
    develop = pipeline.environments["develop"]
    develop.verification_window = timedelta(seconds=2)
    develop.sample_interval_seconds = 1
    develop.save()
    pipeline.environments["qa"].auto_promote = False
    pipeline.environments["qa"].save()
    error_ratio(soak, "svc-soak", "develop", 0.0)
    promotion = deploy(pipeline, service, "2026.02.1")
    assert promotion.state == PromotionState.VERIFIED
    samples = list(promotion.samples.order_by("taken_at"))
    assert len(samples) >= 2  # one when the soak starts, more until the window is over
    assert samples[0].taken_at < promotion.verdict_at
    assert promotion.finished_at >= promotion.verdict_at


def test_a_failing_health_url_fails_verification(pipeline, health_server):
    service = pipeline.add_service("svc-web")
    develop = pipeline.environments["develop"]
    develop.health_url_templates = (
        health_server.answer("/health", 200) + "\n" + health_server.answer("/api/status", 503, "database down")
    )
    develop.save()
    promotion = deploy(pipeline, service, "2026.02.1")
    assert promotion.state == PromotionState.FAILED
    assert "/api/status failed 1 time(s)" in promotion.error
    assert promotion.samples.filter(kind=SampleCheck.HEALTH_URL, ok=True).count() == 1


def test_a_rollback_failing_its_own_soak_gives_the_hold_it_placed_the_newer_reason(pipeline, health_server):
    """The automatic rollback deployed (its hold: "Rolled back to …"), then failed its soak too: the
    hold now says so, for the board, the alert and whoever lifts it, and the audit log keeps both."""
    from audit.models import AuditAction, AuditEvent
    from releases.models import Hold

    service = pipeline.add_service("svc-web")
    develop = pipeline.environments["develop"]
    develop.health_url_templates = health_server.answer("/health", 200)
    develop.save()
    pipeline.environments["qa"].auto_promote = False
    pipeline.environments["qa"].save()
    assert deploy(pipeline, service, "2026.02.1").state == PromotionState.VERIFIED
    health_server.answer("/health", 503, "database down")

    deploy(pipeline, service, "2026.02.2")

    rollback = Promotion.objects.get(kind=PromotionKind.ROLLBACK)
    assert (rollback.state, rollback.failed_step) == (PromotionState.FAILED, "verification")
    hold = Hold.objects.active().get(service=service, environment=develop)
    assert hold.reason.startswith("The automatic rollback to 2026.02.1 failed at verification: ")
    assert "/health failed 1 time(s)" in hold.reason
    updated = AuditEvent.objects.get(action=AuditAction.HOLD_UPDATED)
    assert updated.data["previous_reason"] == f"Rolled back to 2026.02.1 by promotion #{rollback.pk}"
    assert updated.data["reason"] == hold.reason
    assert AuditEvent.objects.filter(action=AuditAction.HOLD_PLACED).count() == 1


def test_nothing_configured_says_so_instead_of_passing(pipeline):
    pipeline.environments["qa"].auto_promote = False
    pipeline.environments["qa"].save()
    promotion = deploy(pipeline, pipeline.add_service("svc-bare"), "2026.02.1")
    assert promotion.state == PromotionState.VERIFIED
    assert promotion.verification_status == StepStatus.NOT_CONFIGURED
    assert not promotion.samples.exists()


# --- samples measure only the deployment being verified -------------------------------------------

RANGE_QUERY = (
    'sum(rate(http_requests_total{service="{service}",status=~"5.."}[{range}]))'
    ' / sum(rate(http_requests_total{service="{service}"}[{range}]))'
)


def soaking(environments, service_name, healthy_for, template):
    """A new release of `service_name` verifying in qa, healthy for `healthy_for`, after an older one."""
    service = make_service(service_name, team="backend-team")
    qa = environments["qa"]
    qa.prometheus_query_template = template
    qa.save()
    now = timezone.now()
    previous = make_release(service, "2026.02.1")
    ran(previous, qa, at=now - timedelta(hours=1))
    return ran(
        make_release(service, "2026.02.2"),
        qa,
        state=PromotionState.VERIFYING,
        at=now - healthy_for,
        verification_started_at=now - healthy_for,
        previous_release=previous,
    )


@pytest.mark.parametrize(
    ("template", "healthy_seconds", "asked"),
    [
        ("sum(rate(x[{range}]))", 95, "sum(rate(x[95s]))"),
        ("sum(rate(x[{range}]))", 600, "sum(rate(x[300s]))"),  # a plain {range} goes up to 5m
        ("sum(rate(x[{range:1m}])) / sum(rate(y[{range}]))", 95, "sum(rate(x[60s])) / sum(rate(y[95s]))"),
        ("sum(rate(x[{range:1h}]))", 1800, "sum(rate(x[1800s]))"),
    ],
)
def test_range_is_filled_with_the_time_the_deployment_has_been_healthy_up_to_the_templates_longest(
    environments, prometheus_errors, settings, template, healthy_seconds, asked
):
    settings.PROMETHEUS_URL = prometheus_errors.url
    prometheus_errors.answer_value(0.001)
    promotion = soaking(environments, "svc-range", timedelta(seconds=healthy_seconds), template)

    [sample] = verification.take_samples(promotion)

    assert prometheus_errors.queries == [{"query": [asked]}]
    assert (sample.target, sample.value, sample.ok) == (asked, 0.001, True)


def test_a_range_sample_waits_until_the_deployment_has_been_healthy_for_the_shortest_range(
    environments, prometheus_errors, settings
):
    settings.PROMETHEUS_URL = prometheus_errors.url
    promotion = soaking(environments, "svc-young", timedelta(seconds=10), "sum(rate(x[{range}]))")

    [sample] = verification.take_samples(promotion)

    assert prometheus_errors.queries == []
    assert sample.ok is None
    assert sample.detail == "waiting: the deployment has been healthy for 10s; {range} is at least 30s"


def test_a_fixed_range_waits_until_it_no_longer_covers_the_previous_release(environments, prometheus_errors, settings):
    settings.PROMETHEUS_URL = prometheus_errors.url
    prometheus_errors.answer_value(0.0)
    promotion = soaking(environments, "svc-fixed", timedelta(seconds=80), "sum(rate(x[5m])) / sum(rate(y[5m]))")

    [waiting] = verification.take_samples(promotion)
    Promotion.objects.filter(pk=promotion.pk).update(deployed_at=timezone.now() - timedelta(minutes=5))
    promotion.refresh_from_db()
    [measured] = verification.take_samples(promotion)

    assert waiting.ok is None
    assert waiting.detail == (
        "waiting: the query's 5m window still covers the previous release "
        "(healthy for 1m20s; write [{range}] in the query to measure sooner)"
    )
    assert prometheus_errors.queries == [{"query": ["sum(rate(x[5m])) / sum(rate(y[5m]))"]}]
    assert measured.ok is True


def test_against_prometheus_a_range_sample_measures_the_rolled_back_release_not_the_one_before(
    environments, configured_prometheus, settings
):
    """The bad day's rollback: the release taken out failed 8 % of its requests, the one rolled back
    to fails none. A fixed [1m] window still sees the 8 %; {range} sees only the rollback."""
    settings.VERIFICATION_MIN_RANGE_SECONDS = 2
    prometheus, service = configured_prometheus, "svc-rolled-back"
    fixed = (
        f'sum(rate(http_requests_total{{service="{service}",status=~"5.."}}[1m]))'
        f' / sum(rate(http_requests_total{{service="{service}"}}[1m]))'
    )

    def bad_release_serves(values):
        prometheus.count_requests(service, "qa", 500, 8)
        prometheus.count_requests(service, "qa", 200, 92)
        return len(values) == 1 and values[0] > 0.01

    prometheus.wait_for(fixed, bad_release_serves)
    promotion = soaking(environments, service, timedelta(0), RANGE_QUERY)

    def rolled_back_release_serves(values):
        prometheus.count_requests(service, "qa", 200, 100)
        return timezone.now() - promotion.deployed_at > timedelta(seconds=4)

    prometheus.wait_for(f'sum(http_requests_total{{service="{service}"}})', rolled_back_release_serves)
    [sample] = verification.take_samples(promotion)

    assert "[4s]" in sample.target or "[5s]" in sample.target
    assert (sample.value, sample.ok) == (0.0, True)
    assert configured_prometheus.wait_for(fixed, lambda values: True)[0] > 0.01


def test_a_second_run_of_the_verify_step_in_one_slot_of_the_grid_keeps_the_first_round(
    environments, health_server, redis_connection
):
    """A worker whose lease expired while it sampled, and the run the reconciler started in its
    place, both take the slot's round: the failure must count once against the limit."""
    qa = environments["qa"]
    qa.health_url_templates = health_server.answer("/health", 503, "warming up")
    qa.failure_limit, qa.sample_interval_seconds = 1, 60
    qa.save()
    service = make_service("svc-twice", team="backend-team")
    now = timezone.now()
    promotion = ran(
        make_release(service, "2026.02.1"),
        qa,
        state=PromotionState.VERIFYING,
        at=now,
        verification_started_at=now,
        verdict_at=now + timedelta(minutes=10),
    )

    verify_promotion(promotion.pk)
    verify_promotion(promotion.pk)  # the same slot, a moment later

    promotion.refresh_from_db()
    assert promotion.state == PromotionState.VERIFYING, promotion.error
    [sample] = promotion.samples.all()
    assert (sample.kind, sample.ok) == (SampleCheck.HEALTH_URL, False)
    assert health_server.requests == 2  # both runs probed; one round was kept

    later = now + timedelta(seconds=60)  # the next slot takes its round, and the second failure passes the limit
    [taken] = verification.take_round(promotion, now=later)
    assert verification.round_slot(promotion, later) == (later, later + timedelta(seconds=60))
    assert taken.taken_at == later
    assert len(verification.limits_passed(promotion)) == 1


def test_a_soak_stopped_while_its_round_was_observed_keeps_no_sample_and_owes_no_run(
    environments, health_server, redis_connection, rita, monkeypatch
):
    staging = environments["staging"]
    staging.health_url_templates = health_server.answer("/health", 200, "ok")
    staging.sample_interval_seconds = 60
    staging.save()
    now = timezone.now()
    promotion = ran(
        make_release(make_service("svc-stopped", team="backend-team"), "2026.02.1"),
        staging,
        state=PromotionState.VERIFYING,
        at=now,
        verification_started_at=now,
        verdict_at=now + timedelta(minutes=10),
    )
    observe = verification.observe

    def stopped_while_probing(promotion, now=None):
        samples = observe(promotion, now)  # the probes take their time, and meanwhile…
        transitions.stop(Promotion.objects.get(pk=promotion.pk), rita, "errors everywhere")
        return samples

    monkeypatch.setattr(verification, "observe", stopped_while_probing)

    verify_promotion(promotion.pk)

    promotion.refresh_from_db()
    assert (promotion.state, promotion.error) == (PromotionState.FAILED, "stopped by rita: errors everywhere")
    assert health_server.requests == 1
    assert not promotion.samples.exists()  # nothing measured after the verdict joins the soak's record
    assert not StepRun.objects.filter(promotion=promotion, status__in=RunStatus.open()).exists()


def test_the_verdicts_round_has_a_slot_of_its_own():
    start = timezone.now()
    promotion = Promotion(verification_started_at=start, verdict_at=start + timedelta(seconds=100))
    promotion.environment = Environment(sample_interval_seconds=30)
    assert verification.round_slot(promotion, start + timedelta(seconds=95)) == (
        start + timedelta(seconds=90),
        start + timedelta(seconds=100),
    )
    assert verification.round_slot(promotion, start + timedelta(seconds=100)) == (start + timedelta(seconds=100), None)
    assert verification.round_slot(promotion, start) == (start, start + timedelta(seconds=30))


def soaking_in_qa(environments, health_server, *, since, verdict_at):
    """svc-late 2026.02.1 verifying in qa `since` then, no round taken yet: a healthy URL probed every
    minute, no CI checks required. (A verdict at the end of ten minutes without rounds: short.)"""
    qa = environments["qa"]
    qa.health_url_templates = health_server.answer("/health", 200)
    qa.sample_interval_seconds, qa.required_checks = 60, []
    qa.save()
    return ran(
        make_release(make_service("svc-late", team="backend-team"), "2026.02.1"),
        qa,
        state=PromotionState.VERIFYING,
        at=since,
        verification_started_at=since,
        verdict_at=verdict_at,
    )


def test_a_second_run_at_the_verdict_goes_on_from_the_extension_the_first_made(
    environments, health_server, redis_connection, monkeypatch
):
    """Runs A and B both at the verdict (A's lease expired while it sampled): A keeps the round and
    extends the soak that missed rounds; B must not judge the old window again and fail it."""
    now = timezone.now()
    promotion = soaking_in_qa(environments, health_server, since=now - timedelta(minutes=10), verdict_at=now)
    observe = verification.observe

    def a_first(promotion, now=None):
        monkeypatch.setattr(verification, "observe", observe)
        verify_promotion(promotion.pk)  # A, while B observes
        return observe(promotion, now)

    monkeypatch.setattr(verification, "observe", a_first)
    verify_promotion(promotion.pk)  # B

    promotion.refresh_from_db()
    assert promotion.state == PromotionState.VERIFYING, promotion.error
    assert promotion.verdict_at > now
    assert promotion.samples.count() == 1


def test_a_run_whose_round_was_kept_goes_on_from_the_extension_another_run_made_meanwhile(
    environments, health_server, redis_connection, monkeypatch
):
    """Run A observes just before the verdict and hangs past it (its lease expires); run B, at the
    verdict, finds rounds missing and extends the soak. A's round fits the slot before the old
    verdict and is kept: A must decide on the extended soak, not judge the old window and fail it."""
    now = timezone.now()
    promotion = soaking_in_qa(
        environments, health_server, since=now - timedelta(minutes=10), verdict_at=now + timedelta(seconds=2)
    )
    observe = verification.observe

    def b_meanwhile(promotion, now=None):
        samples = observe(promotion, now)  # A's round, before the verdict
        monkeypatch.setattr(verification, "observe", observe)
        time.sleep(max(0, (promotion.verdict_at - timezone.now()).total_seconds()) + 0.1)
        verify_promotion(promotion.pk)  # B, at the verdict: rounds missing, extended
        return samples

    monkeypatch.setattr(verification, "observe", b_meanwhile)
    verify_promotion(promotion.pk)  # A

    promotion.refresh_from_db()
    assert promotion.state == PromotionState.VERIFYING, promotion.error
    assert promotion.verdict_at > now + timedelta(minutes=1)
    assert promotion.samples.count() == 2, "both rounds kept, each in its slot"


@pytest.mark.django_db(transaction=True)
def test_a_round_stored_by_another_run_while_the_verdict_is_given_is_judged_or_not_kept(
    environments, health_server, redis_connection, monkeypatch
):
    """Run B (its lease expired while it sampled) stores a failing round taken before the verdict
    while run A gives the verdict on the rounds before it: B waits for A's decision and keeps nothing,
    or A sees B's round; never a promotion verified past its failure limit."""
    from tests.test_api import _backends_waiting

    qa = environments["qa"]
    qa.health_url_templates = health_server.answer("/health", 200)
    qa.sample_interval_seconds, qa.required_checks, qa.failure_limit = 60, [], 0
    qa.save()
    now = timezone.now()
    start = now - qa.verification_window
    promotion = ran(
        make_release(make_service("svc-race", team="backend-team"), "2026.02.1"),
        qa,
        state=PromotionState.VERIFYING,
        at=start,
        verification_started_at=start,
        verdict_at=now,
    )
    interval = timedelta(seconds=qa.sample_interval_seconds)
    for slot in range(int(qa.verification_window / interval) - 1):  # every slot but the last before the verdict
        VerificationSample.objects.create(
            promotion=promotion,
            kind=SampleCheck.HEALTH_URL,
            target=promotion.service.health_urls(qa)[0],
            ok=True,
            value=200,
            detail="HTTP 200 OK",
            taken_at=start + slot * interval,
        )
    verdict, observe, b = verification.verdict, verification.observe, {}

    def failing(promotion, at=None):
        return [replace_ok(sample) for sample in observe(promotion, at)]

    def replace_ok(sample):
        sample.ok, sample.value, sample.detail = False, 500, "HTTP 500 Internal Server Error"
        return sample

    def b_stores_meanwhile():
        try:
            stale = Promotion.objects.select_related("environment", "service").get(pk=promotion.pk)
            b["kept"] = verification.take_round(stale, now=now - timedelta(seconds=10))
        finally:
            connections.close_all()

    def verdict_while_b_stores(promotion):
        result = verdict(promotion)
        monkeypatch.setattr(verification, "observe", failing)
        thread = threading.Thread(target=b_stores_meanwhile)
        thread.start()
        b["thread"] = thread
        thread.join(timeout=0.5)
        if thread.is_alive():  # waiting: for the promotion's lock, to be let go with the decision
            assert _backends_waiting(1) == 1
        return result

    monkeypatch.setattr(verification, "verdict", verdict_while_b_stores)
    verify_promotion(promotion.pk)  # A, at the verdict
    b["thread"].join()

    promotion.refresh_from_db()
    if promotion.state == PromotionState.VERIFIED:
        assert verification.limits_passed(promotion) == []
        assert b["kept"] is None, "B's round came after the verdict: not kept"
    else:
        assert promotion.state == PromotionState.FAILED
