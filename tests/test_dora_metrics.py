"""DORA definitions on small data sets whose figures are worked out by hand in each test."""

from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import DatabaseError, connection, transaction

from audit.models import AuditAction, AuditEvent
from releases.dora import metrics as dora
from releases.dora.metrics import Band, Interval, Period
from releases.models import Deployment, Incident, IncidentSource, Release
from tests.factories import make_release, make_service

pytestmark = pytest.mark.django_db

UTC = UTC
MONDAY = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # 2026-03-02 is the Monday of ISO week 10
MARCH = {"start": date(2026, 3, 1), "end": date(2026, 3, 31)}
HOUR = 3600


@pytest.fixture(autouse=True, params=["postgresql", "portable"])
def aggregation(request, monkeypatch):
    """Every definition is checked on both paths: PostgreSQL's single scan and the portable ORM one."""
    if request.param == "portable":
        monkeypatch.setattr(dora, "_database_has_percentiles", lambda: False)
    return request.param


def at(days=0, hours=0, minutes=0):
    return MONDAY + timedelta(days=days, hours=hours, minutes=minutes)


class History:
    """Writes deployments the way the pipeline does: through Deployment.objects.record()."""

    def __init__(self, environments, service=None, environment="production"):
        self.service = service or make_service()
        self.environment = environments[environment]
        self.environments = environments

    def release(self, version, committed_at=None, **fields):
        existing = Release.objects.filter(service=self.service, version=version).first()
        return existing or make_release(self.service, version, committed_at=committed_at, **fields)

    def deploy(self, version, when, lead_hours=None, committed_at=None, environment=None, **release_fields):
        if lead_hours is not None:
            committed_at = when - timedelta(hours=lead_hours)
        release = self.release(version, committed_at=committed_at, **release_fields)
        return Deployment.objects.record(
            release=release,
            environment=self.environments[environment] if environment else self.environment,
            deployed_at=when,
        )

    def rollback(self, version, when):
        return Deployment.objects.record(
            release=self.release(version), environment=self.environment, deployed_at=when, is_rollback=True
        )

    def hotfix(self, version, fixes, when, lead_hours=1):
        return self.deploy(version, when, lead_hours=lead_hours, is_hotfix=True, fixes=self.release(fixes))


def march_report(**filters):
    return dora.report(**MARCH, **filters)


# --- what counts as a change ------------------------------------------------------------------


def test_redeploys_and_rollbacks_are_not_change_deployments(environments):
    history = History(environments)
    history.deploy("2026.03.1", at(0))
    history.deploy("2026.03.2", at(1))
    history.deploy("2026.03.2", at(2))  # redeploy of what is running
    history.rollback("2026.03.1", at(3))
    history.deploy("2026.03.2", at(4))  # after the rollback: running it again is a change

    figures = march_report().overall

    assert [d.is_change for d in Deployment.objects.order_by("deployed_at")] == [True, True, False, False, True]
    assert figures.change_deployments == 3
    assert figures.rollbacks == 1


def test_only_the_chosen_environment_counts(environments):
    history = History(environments)
    history.deploy("2026.03.1", at(0), environment="staging")
    history.deploy("2026.03.1", at(1))

    assert march_report().overall.change_deployments == 1
    assert march_report(environment=environments["staging"]).overall.change_deployments == 1


def test_period_includes_its_last_day_and_nothing_after(environments):
    history = History(environments)
    history.deploy("2026.02.9", datetime(2026, 2, 28, 23, 59, tzinfo=UTC))
    history.deploy("2026.03.1", datetime(2026, 3, 1, 0, 0, tzinfo=UTC))
    history.deploy("2026.03.2", datetime(2026, 3, 31, 23, 59, tzinfo=UTC))
    history.deploy("2026.04.1", datetime(2026, 4, 1, 0, 0, tzinfo=UTC))

    assert march_report().overall.change_deployments == 2


# --- deployment frequency ------------------------------------------------------------------------


def test_deployment_frequency_per_day_week_and_month(environments):
    history = History(environments)
    for index in range(6):
        history.deploy(f"2026.03.{index + 1}", at(index))

    figures = march_report().overall  # 6 changes in the 31 days of March

    assert figures.per_day == pytest.approx(6 / 31)
    assert figures.per_week == pytest.approx(6 / 31 * 7)
    assert figures.per_month == pytest.approx(6 / 31 * 30)


@pytest.mark.parametrize(
    ("deploy_day_offsets", "expected_weekly_median"),
    [
        # March 2026 touches ISO weeks 9 (Sun 1 Mar only) to 14: six weeks.
        # Weeks 10-13 get five deploy-days each, week 14 (30-31 Mar) two, week 9 none:
        # median of [0,5,5,5,5,2] = 5.
        ([d + 7 * w for w in range(4) for d in range(5)] + [28, 29], 5.0),
        # Two deploy-days in weeks 10 and 11, one in 12, none elsewhere: [0,2,2,1,0,0] -> 0.5.
        ([0, 1, 7, 8, 14], 0.5),
        # Every Monday of weeks 10-14: [0,1,1,1,1,1] -> 1.
        ([0, 7, 14, 21, 28], 1.0),
    ],
)
def test_deploy_days_are_counted_per_iso_week(environments, deploy_day_offsets, expected_weekly_median):
    history = History(environments)
    for index, offset in enumerate(deploy_day_offsets):
        history.deploy(f"2026.03.{index + 1}", at(offset))

    figures = march_report().overall

    assert figures.deploy_days == len(set(deploy_day_offsets))
    assert figures.deploy_days_per_week == expected_weekly_median


@pytest.mark.parametrize(
    ("changes", "expected_band", "scale"),
    [
        # March has 31 days: on demand is at least one change deployment a day on average.
        (31, Band.ELITE, "On demand"),
        (30, Band.HIGH, "Daily to weekly"),
        (5, Band.HIGH, "Daily to weekly"),  # 5 x 7 = 35 >= 31: more than once a week
        (4, Band.MEDIUM, "Weekly to monthly"),  # 4 x 7 = 28 < 31
        (1, Band.LOW, "Monthly to six-monthly"),  # once in 31 days: less than once in 30
        (0, Band.LOW, "Monthly to six-monthly"),  # few deployments are an answer, not missing data
    ],
)
def test_a_services_frequency_band_is_its_rate_on_doras_scale(environments, changes, expected_band, scale):
    history = History(environments)
    history.deploy("2026.02.1", datetime(2026, 2, 1, tzinfo=UTC))  # before the period: the service has a past
    for index in range(changes):
        history.deploy(f"2026.03.{index + 1}", at(-1, hours=index * 23))

    figures = march_report(service=history.service).overall

    assert figures.change_deployments == changes
    assert figures.deployment_frequency_band == expected_band
    assert figures.deployment_frequency_scale == scale
    assert figures.as_dict()["deployment_frequency"]["band"] == expected_band.value


def test_the_badge_measures_the_headline_rate(environments):
    """Five deployments on one day and none after: the rate is what is banded, not the deploy-days."""
    history = History(environments)
    for index in range(5):
        history.deploy(f"2026.03.{index + 1}", at(0, hours=index))

    figures = march_report(service=history.service).overall

    assert figures.per_week == pytest.approx(5 / 31 * 7)  # the headline: 1.1 per week
    assert figures.deployment_frequency_band == Band.HIGH  # at least once a week, as the headline says


def test_a_team_shows_the_spread_of_its_services_bands_not_one_pooled_band(environments):
    """Four services each deploying every other day: pooled, a deployment every day (elite before);
    each one is daily to weekly, and that is what the team shows."""
    histories = [History(environments, service=make_service(team="backend-team")) for _ in range(4)]
    for number, history in enumerate(histories):
        for index, day in enumerate(range(number % 2, 31, 2)):
            history.deploy(f"2026.03.{index + 1}", datetime(2026, 3, 1 + day, 9, tzinfo=UTC))

    team = march_report(team=histories[0].service.team)
    portfolio = march_report()

    assert team.overall.deploy_days == 31
    assert {row.figures.deployment_frequency_band for row in team.services} == {Band.HIGH}
    assert team.overall.deployment_frequency_band is None
    assert team.overall.frequency_bands == {"elite": 0, "high": 4, "medium": 0, "low": 0}
    assert team.overall.as_dict()["deployment_frequency"]["services_per_band"] == team.overall.frequency_bands
    assert portfolio.overall.frequency_bands == team.overall.frequency_bands


def test_several_deployments_on_one_day_are_one_deploy_day(environments):
    history = History(environments)
    for index in range(5):
        history.deploy(f"2026.03.{index + 1}", at(0, hours=index))

    figures = march_report().overall

    assert figures.change_deployments == 5
    assert figures.deploy_days == 1
    # Weeks [0,1,0,0,0,0] -> median 0; the one month has one deploy-day.
    assert figures.deploy_days_per_week == 0
    assert figures.deploy_days_per_month == 1


def test_four_deployments_are_not_enough_for_a_band_but_frequency_always_has_one(environments):
    history = History(environments)
    for index in range(4):
        history.deploy(f"2026.03.{index + 1}", at(index), lead_hours=1)

    figures = march_report(service=history.service).overall

    assert figures.deployment_frequency_band == Band.MEDIUM  # 4 in 31 days: weekly to monthly
    assert figures.lead_time_band == Band.NOT_ENOUGH_DATA
    assert figures.change_failure_rate_band == Band.NOT_ENOUGH_DATA


# --- lead time for changes ------------------------------------------------------------------


def test_lead_time_median_and_p90_over_change_deployments(environments):
    history = History(environments)
    for index, hours in enumerate([1, 2, 3, 4, 10]):
        history.deploy(f"2026.03.{index + 1}", at(index), lead_hours=hours)
    history.deploy("2026.03.5", at(6))  # redeploy: not a change, its lead time (now 6 days) is not counted
    history.rollback("2026.03.4", at(7))

    figures = march_report().overall

    assert figures.lead_time_samples == 5
    assert figures.lead_time_median == pytest.approx(3 * HOUR)
    # PERCENTILE_CONT(0.9) of 5 values: position 0.9 * 4 = 3.6 -> 4 h + 0.6 * (10 h - 4 h) = 7.6 h.
    assert figures.lead_time_p90 == pytest.approx(7.6 * HOUR)
    assert figures.lead_time_band == Band.ELITE


def test_release_committed_after_its_deployment_is_excluded_and_reported(environments):
    history = History(environments)
    for index in range(5):
        history.deploy(f"2026.03.{index + 1}", at(index), lead_hours=48)
    history.deploy("2026.03.9", at(9), committed_at=at(9, hours=2))

    report = march_report()

    assert report.overall.change_deployments == 6
    assert report.overall.lead_time_samples == 5
    assert report.overall.commit_after_deployment == 1
    assert report.overall.lead_time_median == pytest.approx(48 * HOUR)
    assert report.overall.lead_time_band == Band.HIGH
    assert any("commit time is after the deployment" in warning for warning in report.warnings)


def test_deployment_without_commit_time_is_excluded_and_reported(environments):
    history = History(environments)
    history.deploy("2026.03.1", at(0), lead_hours=2)
    history.deploy("2026.03.2", at(1), committed_at=None)

    report = march_report()

    assert report.overall.change_deployments == 2
    assert report.overall.lead_time_samples == 1
    assert report.overall.without_commit_time == 1
    assert report.overall.lead_time_median == pytest.approx(2 * HOUR)
    assert any("no commit time" in warning for warning in report.warnings)


@pytest.mark.parametrize(
    ("lead_hours", "band"),
    [(23.9, Band.ELITE), (24, Band.HIGH), (7 * 24 - 0.1, Band.HIGH), (7 * 24, Band.MEDIUM), (30 * 24, Band.LOW)],
)
def test_lead_time_bands_follow_dora_2023(environments, lead_hours, band):
    history = History(environments)
    for index in range(5):
        history.deploy(f"2026.03.{index + 1}", at(index + 1), lead_hours=lead_hours)

    assert march_report().overall.lead_time_band == band


# --- change failure rate -------------------------------------------------------------------------


def test_change_failure_rate_counts_each_failed_deployment_once(environments):
    history = History(environments)
    deployments = [history.deploy(f"2026.03.{index + 1}", at(index), lead_hours=1) for index in range(8)]
    history.rollback("2026.03.1", at(1, hours=1))  # 2026.03.2 rolled back ...
    history.deploy("2026.03.2", at(1, hours=2))  # ... and deployed again, which is a change again
    for hours in (1, 2):  # two incidents on 2026.03.5: still one failed deployment
        Incident.objects.create(
            service=history.service,
            environment=history.environment,
            title=f"incident {hours}",
            started_at=deployments[4].deployed_at + timedelta(hours=hours),
            caused_by=deployments[4],
        )

    figures = march_report().overall

    assert figures.change_deployments == 9
    assert figures.failed_deployments == 2
    assert figures.change_failure_rate == pytest.approx(2 / 9)
    assert figures.change_failure_rate_band == Band.LOW


@pytest.mark.parametrize(("failed", "band"), [(1, Band.ELITE), (2, Band.HIGH), (3, Band.MEDIUM), (4, Band.LOW)])
def test_change_failure_rate_bands_follow_dora_2023(environments, failed, band):
    history = History(environments)
    deployments = [history.deploy(f"2026.03.{index + 1}", at(0, minutes=index)) for index in range(20)]
    for deployment in deployments[:failed]:
        Incident.objects.create(
            service=history.service,
            environment=history.environment,
            title="down",
            started_at=deployment.deployed_at,
            caused_by=deployment,
        )

    figures = march_report().overall  # 1, 2, 3, 4 in 20: 5 %, 10 %, 15 %, 20 %

    assert figures.change_failure_rate == pytest.approx(failed / 20)
    assert figures.change_failure_rate_band == band


def test_hotfix_marks_the_release_it_fixes_as_failed(environments):
    history = History(environments)
    broken = history.deploy("2026.03.1", at(0), lead_hours=1)
    history.hotfix("2026.03.2-hotfix", fixes="2026.03.1", when=at(0, hours=3))

    incident = Incident.objects.get()
    figures = march_report().overall

    assert (incident.source, incident.caused_by, incident.resolved_at) == (
        IncidentSource.HOTFIX,
        broken,
        at(0, hours=3),
    )
    assert figures.failed_deployments == 1
    assert figures.change_deployments == 2
    assert figures.hotfix_deployments == 1


def test_a_hotfix_link_corrected_after_the_deployment_blames_the_release_it_fixes(environments):
    """ReleaseAdmin lets the hotfix link be corrected: the hotfix counted as rework at once, but the
    release it fixes was not blamed (and a link taken back left its incident behind)."""
    history = History(environments)
    history.deploy("2026.03.1", at(0), lead_hours=1)
    broken = history.deploy("2026.03.2", at(1), lead_hours=1)
    fix = history.deploy("2026.03.3", at(2), lead_hours=1).release

    fix.is_hotfix, fix.fixes = True, broken.release
    fix.save()

    incident = Incident.objects.get()
    assert (incident.source, incident.caused_by) == (IncidentSource.HOTFIX, broken)
    figures = march_report().overall
    assert (figures.hotfix_deployments, figures.failed_deployments) == (1, 1)

    fix.is_hotfix, fix.fixes = False, None
    fix.save()

    assert not Incident.objects.exists()
    figures = march_report().overall
    assert (figures.hotfix_deployments, figures.failed_deployments) == (0, 0)
    withdrawn = AuditEvent.objects.filter(action=AuditAction.INCIDENT_RECORDED).order_by("pk").last()
    assert withdrawn.message.startswith("Incident withdrawn, the hotfix link it stood for was corrected:")


def test_hotfix_for_a_release_that_never_ran_here_blames_nothing_but_is_rework(environments):
    history = History(environments)
    history.deploy("2026.03.1", at(0), lead_hours=1)
    history.release("2026.03.2")  # registered, never deployed to production
    history.hotfix("2026.03.3-hotfix", fixes="2026.03.2", when=at(1))

    figures = march_report().overall

    assert not Incident.objects.exists()
    assert (figures.failed_deployments, figures.hotfix_deployments) == (0, 1)
    assert figures.rework_rate == pytest.approx(1 / 2)


def test_hotfix_that_itself_fails_is_a_second_failed_change(environments):
    history = History(environments)
    history.deploy("2026.03.1", at(0), lead_hours=1)
    history.hotfix("2026.03.2-hotfix", fixes="2026.03.1", when=at(0, hours=2))
    history.rollback("2026.03.1", at(0, hours=3))  # the hotfix was worse: back to the broken one
    history.hotfix("2026.03.3-hotfix", fixes="2026.03.1", when=at(0, hours=5))

    figures = march_report().overall

    # Changes: .1, .2-hotfix, .3-hotfix. Failed: .1 (two hotfixes name it) and .2-hotfix (rolled back).
    assert figures.change_deployments == 3
    assert figures.failed_deployments == 2
    assert figures.hotfix_deployments == 2
    assert figures.rollbacks == 1
    # .1 recovered at the first hotfix (2 h), .2-hotfix at its rollback (1 h).
    assert figures.recovery_median == pytest.approx(1.5 * HOUR)
    # Rework: (2 hotfix deployments + 1 rollback) / (3 changes + 1 rollback).
    assert figures.rework_rate == pytest.approx(3 / 4)


# --- failed deployment recovery time -----------------------------------------------------------


def test_recovery_is_the_earliest_of_rollback_hotfix_and_incident_resolution(environments):
    history = History(environments)
    rolled_back = history.deploy("2026.03.1", at(0), lead_hours=1)
    history.rollback("2026.02.9", at(0, minutes=30))  # 30 min
    hotfixed = history.deploy("2026.03.2", at(1), lead_hours=1)
    history.hotfix("2026.03.3-hotfix", fixes="2026.03.2", when=at(1, hours=2))  # 2 h
    several = history.deploy("2026.03.4", at(2), lead_hours=1)
    for resolved_hours in (5, 3):  # two incidents: the earlier resolution (3 h) counts
        Incident.objects.create(
            service=history.service,
            environment=history.environment,
            title="errors",
            started_at=at(2, hours=1),
            resolved_at=at(2, hours=resolved_hours),
            caused_by=several,
        )
    open_failure = history.deploy("2026.03.5", at(3), lead_hours=1)
    Incident.objects.create(
        service=history.service,
        environment=history.environment,
        title="still down",
        started_at=at(3, hours=1),
        caused_by=open_failure,
    )

    figures = march_report().overall

    assert {rolled_back.pk, hotfixed.pk, several.pk, open_failure.pk} == set(
        Incident.objects.values_list("caused_by", flat=True)
    )
    assert figures.failed_deployments == 4
    assert figures.recovered_failures == 3
    assert figures.unrecovered_failures == 1
    assert figures.recovery_median == pytest.approx(2 * HOUR)  # of 0.5 h, 2 h, 3 h
    assert figures.recovery_p90 == pytest.approx(2.8 * HOUR)  # 2 h + 0.8 * (3 h - 2 h)


@pytest.mark.parametrize(
    ("minutes", "band"), [(59, Band.ELITE), (60, Band.HIGH), (24 * 60, Band.MEDIUM), (7 * 24 * 60, Band.LOW)]
)
def test_recovery_bands_follow_dora_2023(environments, minutes, band):
    history = History(environments)
    for index in range(5):
        deployment = history.deploy(f"2026.03.{index + 1}", at(index * 5))
        Incident.objects.create(
            service=history.service,
            environment=history.environment,
            title="down",
            started_at=deployment.deployed_at,
            resolved_at=deployment.deployed_at + timedelta(minutes=minutes),
            caused_by=deployment,
        )

    assert march_report().overall.recovery_time_band == band


def test_rollback_of_a_rollback_blames_no_change(environments):
    history = History(environments)
    history.deploy("2026.03.1", at(0))
    history.deploy("2026.03.2", at(1))
    history.rollback("2026.03.1", at(1, hours=1))
    history.rollback("2026.02.9", at(1, hours=2))

    first, second = Incident.objects.order_by("fixed_by__deployed_at")
    figures = march_report().overall

    assert first.caused_by.release.version == "2026.03.2"
    assert first.caused_by.is_change
    assert second.caused_by.is_rollback
    assert figures.failed_deployments == 1
    assert figures.rollbacks == 2


def test_rollback_of_a_redeployed_release_blames_the_change_that_brought_it(environments):
    history = History(environments)
    change = history.deploy("2026.03.1", at(0))
    history.deploy("2026.03.1", at(1))
    history.rollback("2026.02.9", at(2))

    assert Incident.objects.get().caused_by == change


# --- deployment rework rate ----------------------------------------------------------------------


def test_rework_rate(environments):
    history = History(environments)
    for index in range(6):
        history.deploy(f"2026.03.{index + 1}", at(index))
    history.rollback("2026.03.5", at(5, hours=1))
    history.hotfix("2026.03.7-hotfix", fixes="2026.03.5", when=at(6))

    figures = march_report().overall

    # 7 changes (6 + the hotfix), 1 rollback, 1 hotfix: (1 + 1) / (7 + 1).
    assert figures.rework_rate == pytest.approx(2 / 8)


def test_the_spread_leaves_out_services_that_had_not_reached_the_environment(environments):
    """A service created after the period, or that never left develop, counted as a "monthly to
    six-monthly" service of the portfolio's production spread."""
    daily = History(environments, service=make_service("daily"))
    for day in range(31):
        daily.deploy(f"2026.03.{day + 1}", datetime(2026, 3, 1 + day, 9, tzinfo=UTC))
    History(environments, service=make_service("develop-only"), environment="develop").deploy(
        "2026.03.1", datetime(2026, 3, 2, tzinfo=UTC)
    )
    History(environments, service=make_service("born-in-june")).deploy("2026.06.1", datetime(2026, 6, 2, tzinfo=UTC))

    assert march_report().overall.frequency_bands == {"elite": 1, "high": 0, "medium": 0, "low": 0}


# --- edge cases ---------------------------------------------------------------------------------


def test_empty_period_has_no_figures_and_no_bands(environments):
    History(environments).deploy("2026.02.1", datetime(2026, 2, 10, tzinfo=UTC))

    report = march_report(interval=Interval.WEEKLY)
    figures = report.overall

    assert figures.change_deployments == 0
    assert figures.change_failure_rate is None
    assert figures.rework_rate is None
    assert figures.lead_time_median is None
    assert figures.recovery_median is None
    assert figures.deploy_days_per_week == 0
    assert {figures.lead_time_band, figures.change_failure_rate_band, figures.recovery_time_band} == {
        Band.NOT_ENOUGH_DATA
    }
    assert figures.frequency_bands == {"elite": 0, "high": 0, "medium": 0, "low": 1}  # none this period
    assert len(report.trend) == 6
    assert all(bucket.figures.change_deployments == 0 for bucket in report.trend)
    assert report.warnings == []


def test_single_deployment(environments):
    History(environments).deploy("2026.03.1", at(0), lead_hours=5)

    figures = march_report().overall

    assert figures.change_deployments == 1
    assert figures.lead_time_median == figures.lead_time_p90 == pytest.approx(5 * HOUR)
    assert figures.change_failure_rate == 0
    assert figures.lead_time_band == Band.NOT_ENOUGH_DATA


def test_team_figures_pool_deployments_instead_of_averaging_medians(environments):
    fast = History(environments, service=make_service(team="backend-team"))
    slow = History(environments, service=make_service(team="backend-team"))
    other = History(environments, service=make_service(team="frontend-team"))
    for index in range(3):
        fast.deploy(f"2026.03.{index + 1}", at(index), lead_hours=1)
    for index in range(2):
        slow.deploy(f"2026.03.{index + 1}", at(index), lead_hours=10)
    other.deploy("2026.03.1", at(0), lead_hours=100)

    report = march_report(team=fast.service.team)
    medians = {row.service.name: row.figures.lead_time_median for row in report.services}

    assert medians == {fast.service.name: pytest.approx(HOUR), slow.service.name: pytest.approx(10 * HOUR)}
    assert report.overall.change_deployments == 5
    assert report.overall.lead_time_median == pytest.approx(HOUR)  # median of 1,1,1,10,10 — not (1+10)/2


def test_team_deploy_days_count_a_day_once_across_services(environments):
    first = History(environments, service=make_service(team="backend-team"))
    second = History(environments, service=make_service(team="backend-team"))
    first.deploy("2026.03.1", at(0))
    second.deploy("2026.03.1", at(0, hours=2))
    second.deploy("2026.03.2", at(1))

    assert march_report(team=first.service.team).overall.deploy_days == 2


def test_trend_buckets_hold_each_weeks_figures(environments):
    history = History(environments)
    history.deploy("2026.03.1", at(0), lead_hours=2)
    history.deploy("2026.03.2", at(1), lead_hours=4)
    history.deploy("2026.03.3", at(7), lead_hours=8)
    history.rollback("2026.03.2", at(7, hours=1))

    trend = {bucket.start: bucket.figures for bucket in march_report(interval=Interval.WEEKLY).trend}

    assert list(trend) == [date(2026, 2, 23) + timedelta(weeks=n) for n in range(6)]
    assert trend[date(2026, 2, 23)].days == 1  # only Sunday 1 March is in the period
    assert (trend[date(2026, 3, 2)].change_deployments, trend[date(2026, 3, 2)].deploy_days) == (2, 2)
    assert trend[date(2026, 3, 2)].lead_time_median == pytest.approx(3 * HOUR)
    assert trend[date(2026, 3, 9)].change_failure_rate == 1.0
    assert trend[date(2026, 3, 9)].rollbacks == 1
    assert trend[date(2026, 3, 2)].deployment_frequency_band is None  # bands are for the whole period


def test_monthly_trend(environments):
    history = History(environments)
    history.deploy("2026.03.1", at(0))
    history.deploy("2026.04.1", datetime(2026, 4, 2, tzinfo=UTC))

    trend = dora.report(start=date(2026, 3, 15), end=date(2026, 4, 30), interval=Interval.MONTHLY).trend

    assert [(bucket.start, bucket.figures.days, bucket.figures.change_deployments) for bucket in trend] == [
        (date(2026, 3, 1), 17, 0),
        (date(2026, 4, 1), 30, 1),
    ]


def test_report_makes_the_same_number_of_queries_for_more_services(
    environments, django_assert_num_queries, django_assert_max_num_queries
):
    def populate(count):
        for _ in range(count):
            history = History(environments)
            for index in range(3):
                history.deploy(f"2026.03.{index + 1}", at(index), lead_hours=1)
            history.rollback("2026.03.2", at(3))

    populate(1)
    with django_assert_max_num_queries(20) as few:
        march_report(interval=Interval.WEEKLY)
    populate(4)
    with django_assert_num_queries(len(few.captured_queries)):
        march_report(interval=Interval.WEEKLY)


def test_portable_percentile_agrees_with_postgresql():
    values = [3.0, 1.0, 10.0, 4.0, 2.0, 7.5]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY v), percentile_cont(0.9) WITHIN GROUP (ORDER BY v)"
            " FROM unnest(%s::float8[]) AS v",
            [values],
        )
        median, p90 = cursor.fetchone()

    assert dora.percentile(values, 0.5) == pytest.approx(median)
    assert dora.percentile(values, 0.9) == pytest.approx(p90)
    assert dora.percentile([], 0.5) is None


@pytest.mark.parametrize("aggregation", ["postgresql"], indirect=True)  # it compares the two paths itself
def test_portable_path_gives_the_database_figures(environments, monkeypatch, aggregation):
    history = History(environments)
    for index, hours in enumerate([1, 2, 6]):
        history.deploy(f"2026.03.{index + 1}", at(index), lead_hours=hours)
    history.rollback("2026.03.2", at(2, hours=1))
    in_database = march_report().overall

    monkeypatch.setattr(dora, "_database_has_percentiles", lambda: False)
    portable = march_report().overall

    assert portable == in_database


def test_period_rejects_a_start_after_the_end():
    with pytest.raises(dora.ReportError, match=r"start .* is after the end"):
        Period.resolve(date(2026, 3, 2), date(2026, 3, 1))


def test_period_ends_today_at_the_latest():
    assert Period.resolve(date(2026, 12, 1), date(2026, 12, 7), today=date(2026, 12, 7)).days == 7
    with pytest.raises(dora.ReportError, match=r"end \(2026-12-08\) is after today \(2026-12-07\)") as refused:
        Period.resolve(date(2026, 12, 1), date(2026, 12, 8), today=date(2026, 12, 7))
    assert refused.value.field == "end"


def test_period_defaults_to_the_last_90_days():
    period = Period.resolve(today=date(2026, 3, 31))

    assert (period.start, period.end, period.days) == (date(2026, 1, 1), date(2026, 3, 31), 90)


# --- recording deployments --------------------------------------------------------------------


def test_record_closes_the_deployment_it_replaces(environments):
    history = History(environments)
    first = history.deploy("2026.03.1", at(0))
    second = history.deploy("2026.03.2", at(1))

    first.refresh_from_db()
    assert first.replaced_at == second.deployed_at
    assert second.replaced_at is None


def test_record_places_an_older_deployment_between_its_neighbours(environments):
    history = History(environments)
    history.deploy("2026.03.1", at(0))
    latest = history.deploy("2026.03.3", at(2))
    middle = history.deploy("2026.03.2", at(1))

    replaced = dict(Deployment.objects.values_list("release__version", "replaced_at"))
    assert replaced == {"2026.03.1": at(1), "2026.03.2": at(2), "2026.03.3": None}
    assert middle.is_change
    assert Deployment.objects.get(pk=latest.pk).is_change


def test_rollback_and_hotfix_incidents_are_recorded_once(environments):
    history = History(environments)
    history.deploy("2026.03.1", at(0))
    rollback = history.rollback("2026.02.9", at(1))

    again = Incident.objects.record_for_rollback(rollback)

    assert Incident.objects.count() == 1
    assert again == Incident.objects.get()


def test_database_refuses_a_rollback_counted_as_a_change(environments):
    history = History(environments)
    release = history.release("2026.03.1")
    with pytest.raises(DatabaseError), transaction.atomic():
        Deployment.objects.create(
            service=history.service,
            environment=history.environment,
            release=release,
            deployed_at=at(0),
            is_rollback=True,
            is_change=True,
        )


def test_deployments_keep_their_releases_commit_time_and_hotfix_flag_in_step(environments):
    history = History(environments)
    deployment = history.deploy("2026.03.1", at(0), lead_hours=2)
    release = deployment.release

    release.is_hotfix = True
    release.committed_at = at(0, hours=-5)
    release.save()

    deployment.refresh_from_db()
    figures = march_report().overall
    assert (deployment.release_is_hotfix, deployment.release_committed_at) == (True, at(0, hours=-5))
    assert figures.hotfix_deployments == 1
    assert figures.lead_time_median == pytest.approx(5 * HOUR)
