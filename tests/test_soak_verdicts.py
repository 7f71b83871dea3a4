"""What a soak may judge and when: the query template's range, gaps in the samples, failure limits."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db.models import F
from django.utils import timezone

from audit.models import AuditAction, AuditEvent
from releases import verification
from releases.jobs import verify_promotion
from releases.models import (
    Hold,
    Promotion,
    PromotionKind,
    PromotionState,
    SampleCheck,
    Step,
    StepRun,
    VerificationSample,
)
from tests.factories import make_release, make_service
from tests.history import ran

pytestmark = pytest.mark.django_db


# --- the query template ------------------------------------------------------------------------------


def test_a_range_placeholder_with_a_longest_range_that_is_no_duration_is_refused(environments):
    qa = environments["qa"]
    qa.prometheus_query_template = "sum(rate(x[{range:five minutes}]))"
    with pytest.raises(ValidationError) as raised:
        qa.clean()
    assert raised.value.message_dict["prometheus_query_template"] == [
        "In {range:five minutes}: 'five minutes' is not a PromQL duration such as 30s, 5m or 1h30m."
    ]


def test_a_fixed_range_longer_than_the_soak_is_refused_saying_to_write_range(environments):
    qa = environments["qa"]
    qa.prometheus_query_template = "sum(rate(x[10m])) / sum(rate(y[10m]))"
    with pytest.raises(ValidationError) as raised:
        qa.clean()
    soak, rollback_soak = raised.value.message_dict["prometheus_query_template"]
    assert soak.startswith("The query's 10m range is longer than the soak window (5m)")
    assert "Write [{range}] instead, or lengthen the soak." in soak
    assert rollback_soak.startswith("The query's 10m range is longer than the rollback soak (2m)")


def test_a_fixed_range_longer_than_the_rollback_soak_is_refused_too(environments):
    qa = environments["qa"]
    qa.prometheus_query_template = "sum(rate(x[5m])) / sum(rate(y[5m]))"
    with pytest.raises(ValidationError) as raised:
        qa.clean()
    [error] = raised.value.message_dict["prometheus_query_template"]
    assert error.startswith("The query's 5m range is longer than the rollback soak (2m)")


@pytest.mark.parametrize(
    "template", ["sum(rate(x[{range}]))", "sum(rate(x[{range:1h}]))", "sum(rate(x[1m]))", 'nexo_error_ratio{s="a"}']
)
def test_queries_that_fit_the_soak_are_accepted(environments, template):
    qa = environments["qa"]
    qa.prometheus_query_template = template
    qa.clean()


def test_the_default_query_measures_only_the_deployment_being_verified(environments):
    assert "[{range}]" in environments["production"].prometheus_query_template
    assert "[5m]" not in environments["production"].prometheus_query_template


# --- fail fast: the environment's limits -------------------------------------------------------------


@pytest.fixture
def soak(environments, prometheus_errors, settings):
    """nexo-be 2026.02.2 soaking in qa for the next hour, its error rate asked of the test server."""
    settings.PROMETHEUS_URL = prometheus_errors.url
    qa = environments["qa"]
    qa.prometheus_query_template = 'nexo_error_ratio{service="{service}"}'
    qa.required_checks = []
    qa.verification_window = timedelta(0)  # rounds expected: the one at the verdict
    qa.save()
    service = make_service("nexo-be", team="backend-team")
    now = timezone.now()
    promotion = ran(
        make_release(service, "2026.02.2"),
        qa,
        state=PromotionState.VERIFYING,
        at=now - timedelta(minutes=1),
        verification_started_at=now,
        verdict_at=now + timedelta(hours=1),
    )
    return {"promotion": promotion, "qa": qa, "prometheus": prometheus_errors}


def limits(soak, **fields):
    for name, value in fields.items():
        setattr(soak["qa"], name, value)
    soak["qa"].save()


def sample_round(soak):
    """One round of samples, as the verify step takes it; the promotion as it is after.

    Rounds keep to the soak's grid, one per slot: the rounds taken so far are moved a slot back,
    as if this one had come an interval after them."""
    promotion = soak["promotion"]
    promotion.samples.update(taken_at=F("taken_at") - timedelta(seconds=soak["qa"].sample_interval_seconds))
    verify_promotion(promotion.pk)
    return Promotion.objects.get(pk=promotion.pk)


def test_failed_samples_within_the_failure_limit_go_on_and_one_more_fails_the_soak_at_once(soak):
    limits(soak, failure_limit=2)
    soak["prometheus"].answer_value(0.05)

    states = [sample_round(soak).state for _ in range(2)]
    failed = sample_round(soak)

    assert states == [PromotionState.VERIFYING, PromotionState.VERIFYING]
    assert failed.state == PromotionState.FAILED
    assert failed.failed_step == "verification"
    assert failed.finished_at < failed.verdict_at
    assert failed.error == (
        "error rate above the threshold in 3 of 3 samples (worst 5.0000% > 1.00%), past the failure limit of 2"
    )


def test_by_default_the_first_failed_sample_fails_the_soak(soak):
    soak["prometheus"].answer_value(0.072)

    failed = sample_round(soak)

    assert failed.state == PromotionState.FAILED
    assert failed.error.endswith("(worst 7.2000% > 1.00%), past the failure limit of 0")


def test_a_verdict_with_failed_samples_within_the_limit_passes_and_says_so(soak):
    limits(soak, failure_limit=1)
    soak["prometheus"].answer_value(0.05)
    sample_round(soak)
    soak["prometheus"].answer_value(0.001)
    Promotion.objects.filter(pk=soak["promotion"].pk).update(verdict_at=timezone.now())

    verified = sample_round(soak)

    assert verified.state == PromotionState.VERIFIED
    event = AuditEvent.objects.get(promotion_id=verified.pk, action=AuditAction.PROMOTION_VERIFIED)
    assert (
        "error rate above the threshold in 1 of 2 samples (worst 5.0000% > 1.00%), within the failure limit of 1"
        in (event.message)
    )


def test_measurement_errors_in_a_row_past_the_limit_fail_the_soak_naming_the_error(soak):
    limits(soak, consecutive_error_limit=1)
    soak["prometheus"].answer_error(503, "unavailable", "the TSDB is not ready")

    first = sample_round(soak)
    failed = sample_round(soak)

    assert first.state == PromotionState.VERIFYING
    assert failed.state == PromotionState.FAILED
    assert failed.error.startswith(
        "error rate could not be measured 2 times in a row, past the consecutive error limit of 1 (error: "
    )
    assert "the TSDB is not ready" in failed.error


def test_a_soak_that_could_not_measure_the_release_holds_the_place_instead_of_rolling_back(soak):
    """Prometheus out of reach past the limit (a restart, say) says nothing against the release: an
    automatic rollback would take out a release that may be good, everything soaking at the time,
    and the rollback's own soak would meet the same outage. A hold says why."""
    qa, service = soak["qa"], soak["promotion"].service
    ran(make_release(service, "2026.02.1"), qa, at=timezone.now() - timedelta(days=1))
    limits(soak, consecutive_error_limit=1)
    soak["prometheus"].answer_error(503, "unavailable", "the TSDB is not ready")
    sample_round(soak)

    failed = sample_round(soak)

    assert (failed.state, failed.failed_step) == (PromotionState.FAILED, "verification")
    assert not Promotion.objects.filter(kind=PromotionKind.ROLLBACK).exists()
    hold = Hold.objects.active().get(service=service, environment=qa)
    assert hold.reason.startswith(
        "2026.02.2 failed at verification and was not rolled back automatically as the soak could not "
        "measure it, which says nothing against it: error rate could not be measured 2 times in a row"
    )


def test_a_soak_that_could_not_measure_while_ci_had_not_reported_yet_holds_too(soak):
    """qa requires CI results (e2e, performance, security by default) that arrive during the soak: a
    Prometheus restart before them still says nothing against the release."""
    qa, service = soak["qa"], soak["promotion"].service
    qa.required_checks = ["e2e"]
    qa.save()
    ran(make_release(service, "2026.02.1"), qa, at=timezone.now() - timedelta(days=1))
    limits(soak, consecutive_error_limit=1)
    soak["prometheus"].answer_error(503, "unavailable", "the TSDB is not ready")
    sample_round(soak)

    assert sample_round(soak).state == PromotionState.FAILED
    assert not Promotion.objects.filter(kind=PromotionKind.ROLLBACK).exists()
    assert Hold.objects.active().filter(service=service, environment=qa).exists()


def test_a_soak_that_measured_a_failure_is_rolled_back_where_the_policy_says_so(soak):
    qa, service = soak["qa"], soak["promotion"].service
    ran(make_release(service, "2026.02.1"), qa, at=timezone.now() - timedelta(days=1))
    limits(soak, consecutive_error_limit=1)
    soak["prometheus"].answer_error(503, "unavailable", "the TSDB is not ready")
    sample_round(soak)
    soak["prometheus"].answer_value(0.072)  # back, and the release is failing

    failed = sample_round(soak)

    assert failed.state == PromotionState.FAILED
    rollback = Promotion.objects.get(kind=PromotionKind.ROLLBACK)
    assert (rollback.release.version, rollback.rolls_back_id) == ("2026.02.1", failed.pk)
    assert not Hold.objects.active().exists()


def test_a_soak_argo_cd_never_answered_for_does_not_pass(soak, argocd_server):
    """An application renamed or deleted in Argo CD (403 on every sample), with fewer samples than the
    consecutive error limit, passed the soak on nothing. As for the error rate, no data is no pass."""
    soak["prometheus"].answer_value(0.0)
    Promotion.objects.filter(pk=soak["promotion"].pk).update(verdict_at=timezone.now())

    failed = sample_round(soak)

    assert failed.state == PromotionState.FAILED
    assert "Argo CD never answered for nexo-be-qa during the window (error: " in failed.error


def test_a_soak_argo_cd_found_healthy_passes(soak, argocd_server):
    argocd_server.app("nexo-be-qa")
    soak["prometheus"].answer_value(0.0)
    Promotion.objects.filter(pk=soak["promotion"].pk).update(verdict_at=timezone.now())

    assert sample_round(soak).state == PromotionState.VERIFIED


def test_an_answer_between_two_errors_starts_the_count_again(soak):
    limits(soak, consecutive_error_limit=1)
    soak["prometheus"].answer_error(503, "unavailable", "the TSDB is not ready")
    sample_round(soak)
    soak["prometheus"].answer_value(0.0)
    sample_round(soak)
    soak["prometheus"].answer_error(503, "unavailable", "the TSDB is not ready")

    assert sample_round(soak).state == PromotionState.VERIFYING


def test_no_traffic_is_no_measurement_error(soak):
    limits(soak, consecutive_error_limit=1)
    soak["prometheus"].answer_value("NaN")

    assert [sample_round(soak).state for _ in range(3)] == [PromotionState.VERIFYING] * 3


def test_a_failing_health_url_fails_the_soak_at_its_first_failure(soak, health_server):
    soak["qa"].prometheus_query_template = ""
    soak["qa"].health_url_templates = health_server.answer("/health", 503, "database down")
    soak["qa"].save()

    failed = sample_round(soak)

    assert failed.state == PromotionState.FAILED
    assert "/health failed 1 time(s): " in failed.error
    assert failed.error.endswith(", past the failure limit of 0")


# --- gaps: a soak that missed rounds of samples ---------------------------------------------------


def soaked_with_gap(soak, rounds_before):
    """A 5-minute soak sampled every 30 s (11 rounds, 9 needed) that took `rounds_before` rounds and
    whose verdict is due now."""
    now = timezone.now()
    limits(soak, verification_window=timedelta(minutes=5), sample_interval_seconds=30)
    promotion = soak["promotion"]
    Promotion.objects.filter(pk=promotion.pk).update(verification_started_at=now - timedelta(minutes=5), verdict_at=now)
    for number in range(rounds_before):
        VerificationSample.objects.create(
            promotion=promotion,
            kind=SampleCheck.ERROR_RATE,
            target="nexo_error_ratio",
            taken_at=now - timedelta(minutes=5) + number * timedelta(seconds=30),
            value=0.0,
            ok=True,
        )
    soak["prometheus"].answer_value(0.0)
    return promotion


def test_a_soak_that_missed_rounds_is_extended_by_the_time_missing_instead_of_judged(soak):
    promotion = soaked_with_gap(soak, rounds_before=1)

    extended = sample_round(soak)

    assert extended.state == PromotionState.VERIFYING
    assert timedelta(seconds=265) < extended.verdict_at - timezone.now() <= timedelta(seconds=270)  # 9 rounds
    event = AuditEvent.objects.get(promotion_id=promotion.pk, action=AuditAction.PROMOTION_SOAK_EXTENDED)
    assert "not enough samples yet: 2 of 11 expected rounds (at least 9 needed)" in event.message
    assert StepRun.objects.open().get(promotion=promotion).step == Step.VERIFY


def test_a_soak_still_short_of_rounds_after_its_extension_fails_for_not_enough_samples(soak):
    promotion = soaked_with_gap(soak, rounds_before=1)
    sample_round(soak)
    Promotion.objects.filter(pk=promotion.pk).update(verdict_at=timezone.now())

    failed = sample_round(soak)

    assert failed.state == PromotionState.FAILED
    assert failed.error.startswith(
        "not enough samples: 3 of 11 expected rounds (at least 9 needed), even with the soak extended once; "
        "a worker or RQ's scheduler was gone for part of the window"
    )


def test_a_soak_with_enough_rounds_is_judged_at_its_time(soak):
    soaked_with_gap(soak, rounds_before=8)

    assert sample_round(soak).state == PromotionState.VERIFIED


def test_rounds_keep_to_the_windows_grid_whenever_the_last_one_ended(soak):
    limits(soak, sample_interval_seconds=30)
    promotion = soak["promotion"]
    started = promotion.verification_started_at
    assert verification.next_round_in(promotion, started + timedelta(seconds=65)) == timedelta(seconds=25)
    assert verification.next_round_in(promotion, started + timedelta(seconds=30)) == timedelta(seconds=30)
