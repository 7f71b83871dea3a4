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
    Deployment,
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
from tests.history import cell_html, ran

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


def test_a_range_query_with_a_soak_shorter_than_the_shortest_range_is_refused_saying_to_lengthen_it(environments):
    """Every sample of a 20-second soak would wait for {range}'s 30 seconds, and the verdict fail for
    want of data: refused when it is set, not found out at each promotion."""
    qa = environments["qa"]
    qa.verification_window = timedelta(seconds=20)
    qa.sample_interval_seconds = 5
    with pytest.raises(ValidationError) as raised:
        qa.clean()
    assert raised.value.message_dict["prometheus_query_template"] == [
        "The query's {range} is at least 30s (VERIFICATION_MIN_RANGE_SECONDS), longer than the soak window (20s): "
        "its error-rate samples would wait until the soak is over, and the verdict would have no data. Lengthen "
        "the soak window to at least 30s."
    ]


def test_a_range_query_follows_the_shortest_range_the_portal_is_configured_with(environments, settings):
    settings.VERIFICATION_MIN_RANGE_SECONDS = 150
    qa = environments["qa"]
    with pytest.raises(ValidationError) as raised:
        qa.clean()
    [error] = raised.value.message_dict["prometheus_query_template"]
    assert error.startswith(
        "The query's {range} is at least 2m30s (VERIFICATION_MIN_RANGE_SECONDS), longer than the rollback soak (2m)"
    )
    assert error.endswith("Lengthen the rollback soak to at least 2m30s.")


@pytest.mark.parametrize(
    ("template", "complaint"),
    [
        (
            "sum(rate(x[{range}]))",
            "In qa: The query's {range} is at least 30s (VERIFICATION_MIN_RANGE_SECONDS), longer "
            "than the soak window (20s)",
        ),
        ("sum(rate(x[1m]))", "In qa: The query's 1m range is longer than the soak window (20s)"),
        ("sum(rate(x[{range:oops}]))", "In {range:oops}: 'oops' is not a PromQL duration"),
    ],
)
def test_a_services_own_query_is_refused_where_it_could_not_measure_an_environments_soak(
    environments, template, complaint
):
    qa = environments["qa"]
    qa.verification_window, qa.sample_interval_seconds, qa.prometheus_query_template = timedelta(seconds=20), 5, ""
    qa.save()
    service = make_service("nexo-be", team="backend-team")
    service.prometheus_query_template = template
    with pytest.raises(ValidationError) as raised:
        service.clean()
    [error] = raised.value.message_dict["prometheus_query_template"]
    assert error.startswith(complaint)


def test_a_services_own_query_that_fits_every_soak_is_accepted(environments):
    service = make_service("nexo-be", team="backend-team")
    service.prometheus_query_template = 'sum(rate(x{service="{service}"}[{range}]))'
    service.clean()


def test_a_soak_too_short_for_a_services_own_query_is_refused_naming_the_service_and_what_to_fix(environments):
    """The other side of the rule above: shortening the soak under a query a service carries of its
    own was accepted, and every promotion of that service there then failed for want of data."""
    make_service("nexo-be", team="backend-team", prometheus_query_template="sum(rate(x[2m]))")
    qa = environments["qa"]
    qa.verification_window = timedelta(minutes=1)
    with pytest.raises(ValidationError) as raised:
        qa.clean()
    assert raised.value.message_dict == {
        "verification_window": [
            "nexo-be's own error-rate query: The query's 2m range is longer than the soak window (1m): its "
            "error-rate samples would wait for the release before to leave the range until the soak is over, and "
            "the verdict would have no data. Write [{range}] instead, or lengthen the soak."
        ]
    }


def test_services_whose_own_queries_need_the_same_are_named_together_under_the_soak_they_outgrow(environments):
    make_service("nexo-be", team="backend-team", prometheus_query_template="sum(rate(x[{range}]))")
    make_service("nexo-fe", team="frontend-team", prometheus_query_template="sum(rate(y[{range}]))")
    make_service("nexo-api", team="backend-team", prometheus_query_template="sum(rate(z[{range:1m}]))")
    make_service("nexo-web", team="frontend-team", prometheus_query_template='nexo_error_ratio{s="a"}')
    qa = environments["qa"]
    qa.rollback_verification_window, qa.sample_interval_seconds, qa.prometheus_query_template = (
        timedelta(seconds=20),
        5,
        "",
    )
    with pytest.raises(ValidationError) as raised:
        qa.clean()
    assert raised.value.message_dict == {
        "rollback_verification_window": [
            "nexo-api's, nexo-be's and nexo-fe's own error-rate queries: The query's {range} is at least 30s "
            "(VERIFICATION_MIN_RANGE_SECONDS), longer than the rollback soak (20s): its error-rate samples would "
            "wait until the soak is over, and the verdict would have no data. Lengthen the rollback soak to at "
            "least 30s."
        ]
    }


def test_a_soak_that_fits_every_services_own_query_is_accepted(environments):
    make_service("nexo-be", team="backend-team", prometheus_query_template="sum(rate(x[2m]))")
    qa = environments["qa"]
    qa.verification_window = timedelta(minutes=2)
    qa.clean()


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


# --- the sample interval -----------------------------------------------------------------------------


def test_a_sample_interval_longer_than_the_soak_is_refused_saying_what_to_fix(environments):
    qa = environments["qa"]
    qa.verification_window = timedelta(seconds=20)
    with pytest.raises(ValidationError) as raised:
        qa.clean()
    assert raised.value.message_dict["sample_interval_seconds"] == [
        "A sample every 30 seconds is longer than the soak window (20s): a soak would be judged on the "
        "round taken as it starts, when the deployment has just become healthy, and the one at its verdict. "
        "Sample at most every 20 seconds, or lengthen the soak window."
    ]


def test_a_sample_interval_longer_than_the_rollback_soak_is_refused_too(environments):
    qa = environments["qa"]
    qa.rollback_verification_window = timedelta(seconds=10)
    with pytest.raises(ValidationError) as raised:
        qa.clean()
    [error] = raised.value.message_dict["sample_interval_seconds"]
    assert error.startswith("A sample every 30 seconds is longer than the rollback soak (10s)")


@pytest.mark.parametrize(("window", "interval"), [(timedelta(seconds=30), 30), (timedelta(0), 30)])
def test_a_sample_interval_that_fits_the_soak_or_a_soak_of_one_round_is_accepted(environments, window, interval):
    qa = environments["qa"]
    qa.verification_window = qa.rollback_verification_window = window
    qa.prometheus_query_template = ""
    qa.sample_interval_seconds = interval
    qa.clean()


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


# --- Argo CD: this release's commit running, Healthy --------------------------------------------------


@pytest.fixture
def argocd_soak(soak, gitops, argocd_server):
    """As `soak`, with its GitOps commit (`ours`) pushed after 2026.02.1's (`before`), which ran in qa
    before it, and both synced in turn by the Argo CD test server: nexo-be-qa runs ours, Healthy."""
    promotion, qa, service = soak["promotion"], soak["qa"], soak["promotion"].service
    path = service.values_path(qa)
    gitops.write(path, 'image:\n  tag: "2026.02.1"\n', "promote(nexo-be): qa → 2026.02.1")
    before = gitops.head()
    gitops.write(path, 'image:\n  tag: "2026.02.2"\n', "promote(nexo-be): qa → 2026.02.2")
    ours = gitops.head()
    ran(make_release(service, "2026.02.1"), qa, at=timezone.now() - timedelta(days=1), gitops_commit_sha=before)
    Promotion.objects.filter(pk=promotion.pk).update(gitops_commit_sha=ours)
    soak["prometheus"].answer_value(0.0)
    application = argocd_server.app("nexo-be-qa").deployed(before, ours)
    return {**soak, "gitops": gitops, "application": application, "before": before, "ours": ours}


def verdict_due(soak):
    Promotion.objects.filter(pk=soak["promotion"].pk).update(verdict_at=timezone.now())


def argocd_samples(promotion):
    return [(s.ok, s.detail) for s in promotion.samples.filter(kind=SampleCheck.ARGOCD_HEALTH)]


def test_a_soak_argo_cd_found_running_this_releases_commit_healthy_passes(argocd_soak):
    verdict_due(argocd_soak)

    verified = sample_round(argocd_soak)

    assert verified.state == PromotionState.VERIFIED, verified.error
    assert argocd_samples(verified) == [(True, f"Healthy, running {argocd_soak['ours'][:12]}")]


def test_a_later_commit_of_the_branch_containing_ours_is_this_release_running(argocd_soak):
    """Argo CD reports what the branch resolved to: another service's promotion pushed after ours, and
    nothing of this application changed in it, so it is Synced at that commit, with ours in it."""
    gitops, ours = argocd_soak["gitops"], argocd_soak["ours"]
    gitops.write("helm/nexo-fe/values-qa.yaml", 'image:\n  tag: "2026.02.7"\n', "promote(nexo-fe): qa → 2026.02.7")
    later = gitops.head()
    argocd_soak["application"].head, argocd_soak["application"].reports_branch_head = (lambda: later), True
    verdict_due(argocd_soak)

    verified = sample_round(argocd_soak)

    assert verified.state == PromotionState.VERIFIED, verified.error
    assert argocd_samples(verified) == [
        (True, f"Healthy, running {later[:12]}, which contains this release's commit {ours[:12]}")
    ]


def test_an_application_rolled_back_in_argo_cd_fails_the_soak_at_once_naming_both_revisions(argocd_soak):
    """Someone ran `argocd app rollback` during the soak: Argo CD goes on reporting Healthy, about the
    release before. Each sample from then on measures that one: no failure the limit may tolerate."""
    before, ours = argocd_soak["before"], argocd_soak["ours"]
    limits(argocd_soak, failure_limit=2)
    assert sample_round(argocd_soak).state == PromotionState.VERIFYING
    application = argocd_soak["application"]
    application.rollback(application.history[0]["id"])
    application.instant = True  # done by the next sample

    failed = sample_round(argocd_soak)

    assert application.as_json()["status"]["sync"] == {
        "status": "OutOfSync",
        "revision": ours,
        "comparedTo": application.as_json()["status"]["sync"]["comparedTo"],
    }, "Argo CD reports the branch's commit, OutOfSync: the one running is in its history"
    assert (failed.state, failed.failed_step) == (PromotionState.FAILED, "verification")
    assert failed.finished_at < failed.verdict_at
    assert argocd_samples(failed) == [
        (True, f"Healthy, running {ours[:12]}"),
        (False, f"runs {before[:12]}, not this release's commit {ours[:12]}"),
    ]
    assert failed.error == (
        f"Argo CD found nexo-be-qa running {before[:12]}, not this release's commit {ours[:12]}, in 1 of 2 "
        "samples: what runs was changed outside the portal (an argocd app rollback, a sync to another "
        "revision, a commit putting another tag in the values file), so the soak no longer measured this release"
    )


def test_a_soak_that_found_another_revision_running_holds_the_place_instead_of_rolling_back(argocd_soak):
    """qa rolls back a failed soak by itself; here whoever changed what runs outside the portal is at
    work, and an automatic rollback would sync over what they chose (or be refused behind their sync)."""
    qa, service, application = argocd_soak["qa"], argocd_soak["promotion"].service, argocd_soak["application"]
    application.rollback(application.history[0]["id"])
    application.instant = True

    failed = sample_round(argocd_soak)

    assert failed.state == PromotionState.FAILED
    assert not Promotion.objects.filter(kind=PromotionKind.ROLLBACK).exists()
    hold = Hold.objects.active().get(service=service, environment=qa)
    assert hold.reason.startswith(
        "2026.02.2 failed at verification and was not rolled back automatically as something outside the "
        "portal made Argo CD run another revision, which a rollback would sync over: Argo CD found nexo-be-qa "
        f"running {argocd_soak['before'][:12]}"
    )


def take_out_of_the_branch(argocd_soak, how):
    """Put another tag than this release's in its values file on the branch, after its commit: a `git
    revert` of that commit, or a person's edit by hand. The new branch head, which contains ours."""
    gitops, path = argocd_soak["gitops"], argocd_soak["promotion"].service.values_path(argocd_soak["qa"])
    if how == "revert":
        return gitops.revert(argocd_soak["ours"])
    gitops.write(path, 'image:\n  tag: "2026.02.9"\n', "hotfix(nexo-be): qa → 2026.02.9, by hand")
    return gitops.head()


@pytest.mark.parametrize(("how", "named"), [("revert", "2026.02.1"), ("edit", "2026.02.9")])
def test_a_branch_head_that_put_another_tag_in_the_values_file_fails_the_soak_at_once(argocd_soak, how, named):
    """Someone reverted this release's commit on the branch, or wrote another tag over it by hand, and
    Argo CD synced that: the head still contains our commit, but what runs is another release, Healthy.
    Every sample from then on measures that one, as after an argocd app rollback."""
    limits(argocd_soak, failure_limit=2)
    taken_out = take_out_of_the_branch(argocd_soak, how)
    argocd_soak["application"].deployed(taken_out)

    failed = sample_round(argocd_soak)

    assert (failed.state, failed.failed_step) == (PromotionState.FAILED, "verification")
    assert argocd_samples(failed) == [
        (False, f"runs {taken_out[:12]}, whose values file names {named}, not this release's 2026.02.2")
    ]
    assert failed.error == (
        f"Argo CD found nexo-be-qa running {taken_out[:12]}, whose values file names {named}, not this "
        "release's 2026.02.2, in 1 of 1 samples: what runs was changed outside the portal (an argocd app "
        "rollback, a sync to another revision, a commit putting another tag in the values file), so the "
        "soak no longer measured this release"
    )


def test_a_soak_that_found_this_release_taken_out_of_the_branch_holds_the_place(argocd_soak):
    """As after an argocd app rollback: whoever reverted it is at work, and a rollback would commit over it."""
    qa, service = argocd_soak["qa"], argocd_soak["promotion"].service
    argocd_soak["application"].deployed(take_out_of_the_branch(argocd_soak, "revert"))

    failed = sample_round(argocd_soak)

    assert failed.state == PromotionState.FAILED
    assert not Promotion.objects.filter(kind=PromotionKind.ROLLBACK).exists()
    assert (
        Hold.objects.active()
        .get(service=service, environment=qa)
        .reason.startswith(
            "2026.02.2 failed at verification and was not rolled back automatically as something outside the "
            "portal made Argo CD run another revision"
        )
    )


def test_a_revision_whose_values_file_is_gone_does_not_run_this_release(argocd_soak):
    """Someone removed the values file on the branch: the head contains ours, and names no tag at all."""
    gitops, path = argocd_soak["gitops"], argocd_soak["promotion"].service.values_path(argocd_soak["qa"])
    gitops.remove(path)
    removed = gitops.head()
    argocd_soak["application"].deployed(removed)

    failed = sample_round(argocd_soak)

    assert argocd_samples(failed) == [
        (
            False,
            f"runs {removed[:12]}, whose values file names nothing ({path} is not there), not this release's 2026.02.2",
        )
    ]


def test_a_revision_git_cannot_tell_about_is_a_measurement_error_not_a_failure(argocd_soak):
    """Argo CD runs a later commit of the branch, and the GitOps remote is out of reach: whether it
    contains ours cannot be told. Not a failure; counted against the consecutive error limit."""
    gitops, ours = argocd_soak["gitops"], argocd_soak["ours"]
    gitops.write("helm/nexo-fe/values-qa.yaml", 'image:\n  tag: "2026.02.7"\n', "promote(nexo-fe): qa → 2026.02.7")
    later = gitops.head()
    argocd_soak["application"].head, argocd_soak["application"].reports_branch_head = (lambda: later), True

    with gitops.away():
        soaking = sample_round(argocd_soak)

    assert soaking.state == PromotionState.VERIFYING
    [(ok, detail)] = argocd_samples(soaking)
    assert ok is None
    assert detail.startswith(
        f"error: could not tell whether {later[:12]}, which Argo CD runs, contains this release's commit "
        f"{ours[:12]} (Cannot reach the GitOps repository"
    )


@pytest.mark.parametrize(
    ("health", "detail"),
    [
        ("Unknown", "no data: health Unknown: Argo CD could not assess it"),
        ("Progressing", "no data: health Progressing: the rollout has not settled"),
        ("Suspended", "no data: health Suspended: the rollout is paused"),
    ],
)
def test_a_health_that_judges_nothing_is_no_data_not_an_ok_sample(argocd_soak, health, detail):
    argocd_soak["application"].reported_health = health
    limits(argocd_soak, consecutive_error_limit=0)  # no data is no measurement error

    soaking = sample_round(argocd_soak)

    assert soaking.state == PromotionState.VERIFYING
    assert argocd_samples(soaking) == [(None, detail)]


@pytest.mark.parametrize("health", ["Degraded", "Missing"])
def test_degraded_or_missing_is_a_failed_sample(argocd_soak, health):
    argocd_soak["application"].reported_health = health

    failed = sample_round(argocd_soak)

    assert argocd_samples(failed) == [(False, health)]
    assert failed.error == f"Argo CD reported nexo-be-qa {health} in 1 of 1 samples, past the failure limit of 0"


def test_a_soak_argo_cd_never_found_healthy_is_not_measured_and_holds_the_place(argocd_soak):
    """Argo CD could not tell the application's health for the whole window: nothing was measured, so
    no pass, and nothing against the release either: held, not rolled back."""
    argocd_soak["application"].reported_health = "Unknown"
    assert sample_round(argocd_soak).state == PromotionState.VERIFYING
    verdict_due(argocd_soak)

    failed = sample_round(argocd_soak)

    assert failed.state == PromotionState.FAILED
    assert (
        "Argo CD never found nexo-be-qa Healthy during the window (no data: health Unknown: Argo CD could not "
        "assess it)" in failed.error
    )
    assert not Promotion.objects.filter(kind=PromotionKind.ROLLBACK).exists()
    hold = Hold.objects.active().get(service=failed.service, environment=argocd_soak["qa"])
    assert "as the soak could not measure it, which says nothing against it" in hold.reason


def test_a_soak_argo_cd_answered_only_at_its_start_is_not_measured_and_holds_the_place(argocd_soak, argocd_server):
    """Healthy at the instant of deployment, as the sync step saw it, then 503 to everything: one error,
    within the consecutive error limit, and one OK sample that measured nothing of the window. No pass,
    and nothing against the release either: held, not rolled back."""
    limits(argocd_soak, verification_window=timedelta(seconds=30), sample_interval_seconds=30)
    assert sample_round(argocd_soak).state == PromotionState.VERIFYING
    argocd_server.unavailable_for(3600)
    verdict_due(argocd_soak)

    failed = sample_round(argocd_soak)

    assert [ok for ok, _ in argocd_samples(failed)] == [True, None]
    assert failed.state == PromotionState.FAILED
    assert "Argo CD never answered for nexo-be-qa during the window, only at its start (error: " in failed.error
    assert not Promotion.objects.filter(kind=PromotionKind.ROLLBACK).exists()
    hold = Hold.objects.active().get(service=failed.service, environment=argocd_soak["qa"])
    assert "as the soak could not measure it, which says nothing against it" in hold.reason
    event = AuditEvent.objects.get(promotion_id=failed.pk, action=AuditAction.PROMOTION_FAILED)
    assert event.data["soak_results"]["soak:argocd_health"] == "no_data"


def test_a_soak_argo_cd_answered_during_its_window_passes_despite_errors_within_the_limit(argocd_soak, argocd_server):
    limits(argocd_soak, verification_window=timedelta(seconds=60), sample_interval_seconds=30)
    sample_round(argocd_soak)
    sample_round(argocd_soak)
    argocd_server.unavailable_for(3600)
    verdict_due(argocd_soak)

    verified = sample_round(argocd_soak)

    assert verified.state == PromotionState.VERIFIED, verified.error
    assert [ok for ok, _ in argocd_samples(verified)] == [True, True, None]


def test_a_soak_argo_cd_found_only_degraded_within_the_failure_limit_does_not_pass(argocd_soak):
    """The failure limit tolerates a Degraded sample among Healthy ones; it does not make a pass of a
    window in which Argo CD never found the release Healthy."""
    limits(argocd_soak, failure_limit=2, verification_window=timedelta(seconds=30), sample_interval_seconds=30)
    argocd_soak["application"].reported_health = "Degraded"
    sample_round(argocd_soak)
    verdict_due(argocd_soak)

    failed = sample_round(argocd_soak)

    assert argocd_samples(failed) == [(False, "Degraded"), (False, "Degraded")]
    assert failed.state == PromotionState.FAILED
    assert "Argo CD never found nexo-be-qa Healthy during the window (Degraded)" in failed.error
    event = AuditEvent.objects.get(promotion_id=failed.pk, action=AuditAction.PROMOTION_FAILED)
    assert event.data["soak_results"]["soak:argocd_health"] == "failed"


def test_an_error_rate_measured_only_at_the_soaks_start_is_no_data_during_the_window(soak):
    qa, service = soak["qa"], soak["promotion"].service
    ran(make_release(service, "2026.02.1"), qa, at=timezone.now() - timedelta(days=1))
    limits(soak, verification_window=timedelta(seconds=30), sample_interval_seconds=30)
    soak["prometheus"].answer_value(0.0)
    sample_round(soak)
    soak["prometheus"].answer_error(503, "unavailable", "the TSDB is not ready")
    verdict_due(soak)

    failed = sample_round(soak)

    assert failed.state == PromotionState.FAILED
    assert [sample.ok for sample in failed.samples.all()] == [True, None]
    assert "no error-rate data during the window (error: " in failed.error
    assert not Promotion.objects.filter(kind=PromotionKind.ROLLBACK).exists()
    assert Hold.objects.active().filter(service=service, environment=qa).exists()


def test_a_soak_progressing_for_a_while_between_healthy_samples_passes_on_them(argocd_soak):
    application = argocd_soak["application"]
    sample_round(argocd_soak)
    application.reported_health = "Progressing"
    sample_round(argocd_soak)
    application.reported_health = ""
    verdict_due(argocd_soak)

    verified = sample_round(argocd_soak)

    assert verified.state == PromotionState.VERIFIED, verified.error
    assert [ok for ok, _ in argocd_samples(verified)] == [True, None, True]


def test_the_promotion_page_says_which_revision_ran_instead_of_this_releases(argocd_soak, rita, client):
    before, ours = argocd_soak["before"][:12], argocd_soak["ours"][:12]
    application = argocd_soak["application"]
    application.rollback(application.history[0]["id"])
    application.instant = True
    failed = sample_round(argocd_soak)
    client.force_login(rita)

    page = client.get(failed.get_absolute_url()).content.decode()

    assert f"runs {before}, not this release&#x27;s commit {ours}" in page, "the sample, in the table and chart"
    assert f"Argo CD found nexo-be-qa running {before}, not this release&#x27;s commit {ours}" in page


def test_what_a_sample_finds_is_the_health_the_board_shows_at_once(argocd_soak, viewer, client):
    """The soak's Argo CD samples are observations of the place, as a reconciler round's list is: a
    release gone Degraded in its soak is Degraded on the board, not Healthy as it synced."""
    limits(argocd_soak, failure_limit=1)
    soaking = Deployment.objects.get(promotion=argocd_soak["promotion"])
    Deployment.objects.filter(pk=soaking.pk).update(health="Healthy")
    client.force_login(viewer)
    argocd_soak["application"].reported_health = "Degraded"

    assert sample_round(argocd_soak).state == PromotionState.VERIFYING

    soaking.refresh_from_db()
    assert soaking.health == "Degraded"
    assert soaking.health_checked_at is not None
    assert ">Degraded</span>" in cell_html(client.get("/"), "nexo-be", "qa")

    argocd_soak["application"].reported_health = ""
    assert sample_round(argocd_soak).state == PromotionState.VERIFYING
    assert ">Healthy</span>" in cell_html(client.get("/"), "nexo-be", "qa")
