"""The soak against a real Prometheus (started for the tests) and real health URLs."""

import math
from datetime import timedelta

import pytest
from django.utils import timezone

from releases import transitions
from releases.jobs import verify_promotion
from releases.models import Promotion, PromotionKind, PromotionState, SampleCheck, StepStatus
from tests.factories import make_release

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


def test_the_verdict_covers_the_whole_window_not_only_the_last_sample(pipeline, soak):
    """A spike in the middle of the soak fails it even though the end looks fine."""
    service = pipeline.add_service("svc-spiky")
    develop = pipeline.environments["develop"]
    develop.verification_window = timedelta(hours=1)
    develop.save()
    error_ratio(soak, "svc-spiky", "develop", 0.001)
    promotion = transitions.request_promotion(make_release(service, "2026.02.1"), develop, None)
    pipeline.run_jobs(until=lambda: Promotion.objects.get(pk=promotion.pk).samples.count() == 1)
    pipeline.redis.flushdb()  # drive the remaining samples by hand
    error_ratio(soak, "svc-spiky", "develop", 0.3)
    verify_promotion(promotion.pk)
    error_ratio(soak, "svc-spiky", "develop", 0.001)
    Promotion.objects.filter(pk=promotion.pk).update(verdict_at=timezone.now())
    verify_promotion(promotion.pk)
    promotion.refresh_from_db()
    assert [s.ok for s in promotion.samples.order_by("taken_at")] == [True, False, True]
    assert promotion.state == PromotionState.FAILED
    assert "error rate above the threshold in 1 of 3 samples" in promotion.error


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


def test_nothing_configured_says_so_instead_of_passing(pipeline):
    pipeline.environments["qa"].auto_promote = False
    pipeline.environments["qa"].save()
    promotion = deploy(pipeline, pipeline.add_service("svc-bare"), "2026.02.1")
    assert promotion.state == PromotionState.VERIFIED
    assert promotion.verification_status == StepStatus.NOT_CONFIGURED
    assert not promotion.samples.exists()
