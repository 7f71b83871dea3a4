"""DORA metrics from recorded deployments and incidents, computed by the database.

The definitions are written out in docs/dora.md and on the report page; this module is the
one place that implements them. Everything is counted per environment (production is the
headline) for a period of whole days; a team or portfolio figure pools the deployments of
its services, it never averages per-service medians.
"""

import statistics
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from django.db import connection
from django.db.models import (
    Aggregate,
    Count,
    DateField,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    FloatField,
    Func,
    OuterRef,
    Q,
    Subquery,
    TextChoices,
)
from django.db.models.functions import TruncDate, TruncMonth, TruncWeek
from django.utils import timezone

from environments.models import Environment

from .models import Deployment, Incident, Service

BANDS_SOURCE = "DORA 2023 performance levels (Google Cloud, Accelerate State of DevOps Report 2023)"
MIN_EVENTS = 5
HOUR = 3600
DAY = 24 * HOUR
WEEK = 7 * DAY
MONTH = 30 * DAY  # "a month" in the bands and in "per month" averages
DEFAULT_PERIOD_DAYS = 90
MAX_PERIOD_DAYS = 3 * 366


class ReportError(Exception):
    """The report cannot be made as asked; the message says what to change."""


class Band(TextChoices):
    ELITE = "elite", "Elite"
    HIGH = "high", "High"
    MEDIUM = "medium", "Medium"
    LOW = "low", "Low"
    NOT_ENOUGH_DATA = "not_enough_data", "Not enough data"


class Interval(TextChoices):
    ALL = "all", "Whole period"
    WEEKLY = "weekly", "Per ISO week"
    MONTHLY = "monthly", "Per month"


# --- bands (DORA 2023) ------------------------------------------------------------------------


def deployment_frequency_band(events, deploy_days_per_week, deploy_days_per_month):
    if events < MIN_EVENTS:
        return Band.NOT_ENOUGH_DATA
    if deploy_days_per_week >= 5:
        return Band.ELITE
    if deploy_days_per_week >= 1:
        return Band.HIGH
    if deploy_days_per_month >= 1:
        return Band.MEDIUM
    return Band.LOW


def _duration_band(events, seconds, elite, high, medium):
    if events < MIN_EVENTS or seconds is None:
        return Band.NOT_ENOUGH_DATA
    if seconds < elite:
        return Band.ELITE
    if seconds < high:
        return Band.HIGH
    if seconds < medium:
        return Band.MEDIUM
    return Band.LOW


def lead_time_band(events, median_seconds):
    return _duration_band(events, median_seconds, DAY, WEEK, MONTH)


def recovery_time_band(events, median_seconds):
    return _duration_band(events, median_seconds, HOUR, DAY, WEEK)


def change_failure_rate_band(change_deployments, failed_deployments):
    if change_deployments < MIN_EVENTS:
        return Band.NOT_ENOUGH_DATA
    # Whole numbers, so 1 in 20 is exactly 5 % and stays elite.
    for percent, band in ((5, Band.ELITE), (10, Band.HIGH), (15, Band.MEDIUM)):
        if failed_deployments * 100 <= change_deployments * percent:
            return band
    return Band.LOW


# --- periods ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """Whole days from `start` to `end`, both included, in the portal's time zone."""

    start: date
    end: date

    @classmethod
    def resolve(cls, start=None, end=None, today=None):
        end = end or today or timezone.localdate()
        start = start or end - timedelta(days=DEFAULT_PERIOD_DAYS - 1)
        if start > end:
            raise ReportError(f"The start ({start}) is after the end ({end}): choose a start on or before the end.")
        if (end - start).days + 1 > MAX_PERIOD_DAYS:
            raise ReportError(f"A report covers at most {MAX_PERIOD_DAYS} days; choose a shorter period.")
        return cls(start, end)

    @property
    def days(self):
        return (self.end - self.start).days + 1

    def bounds(self):
        zone = timezone.get_current_timezone()
        return (
            datetime.combine(self.start, time.min, tzinfo=zone),
            datetime.combine(self.end + timedelta(days=1), time.min, tzinfo=zone),
        )

    def weeks(self):
        """The Mondays of the ISO weeks the period touches."""
        monday = self.start - timedelta(days=self.start.weekday())
        weeks = []
        while monday <= self.end:
            weeks.append(monday)
            monday += timedelta(days=7)
        return weeks

    def months(self):
        """The first days of the calendar months the period touches."""
        month = self.start.replace(day=1)
        months = []
        while month <= self.end:
            months.append(month)
            month = (month + timedelta(days=32)).replace(day=1)
        return months

    def days_in(self, bucket_start, interval):
        """How many of the period's days fall in the week or month starting at `bucket_start`."""
        if interval == Interval.WEEKLY:
            bucket_end = bucket_start + timedelta(days=6)
        else:
            bucket_end = (bucket_start + timedelta(days=32)).replace(day=1) - timedelta(days=1)
        return (min(bucket_end, self.end) - max(bucket_start, self.start)).days + 1


# --- figures -------------------------------------------------------------------------------------


@dataclass
class Figures:
    """The five metrics for one scope (everything, a service, a week or a month) and their inputs."""

    days: int
    change_deployments: int = 0
    rollbacks: int = 0
    hotfix_deployments: int = 0
    failed_deployments: int = 0
    recovered_failures: int = 0
    lead_time_samples: int = 0
    without_commit_time: int = 0
    commit_after_deployment: int = 0
    lead_time_median: float | None = None
    lead_time_p90: float | None = None
    recovery_median: float | None = None
    recovery_p90: float | None = None
    deploy_days: int = 0
    deploy_days_per_week: float | None = None  # median over the ISO weeks of the period
    deploy_days_per_month: float | None = None  # median over the calendar months of the period
    banded: bool = True

    @property
    def per_day(self):
        return self.change_deployments / self.days if self.days else 0.0

    @property
    def per_week(self):
        return self.per_day * 7

    @property
    def per_month(self):
        return self.per_day * MONTH / DAY

    @property
    def change_failure_rate(self):
        return self.failed_deployments / self.change_deployments if self.change_deployments else None

    @property
    def unrecovered_failures(self):
        return self.failed_deployments - self.recovered_failures

    @property
    def rework_rate(self):
        denominator = self.change_deployments + self.rollbacks
        return (self.hotfix_deployments + self.rollbacks) / denominator if denominator else None

    @property
    def rework_events(self):
        return self.change_deployments + self.rollbacks

    def _band(self, band):
        return band if self.banded else None

    @property
    def deployment_frequency_band(self):
        return self._band(
            deployment_frequency_band(
                self.change_deployments, self.deploy_days_per_week or 0, self.deploy_days_per_month or 0
            )
        )

    @property
    def lead_time_band(self):
        return self._band(lead_time_band(self.lead_time_samples, self.lead_time_median))

    @property
    def change_failure_rate_band(self):
        return self._band(change_failure_rate_band(self.change_deployments, self.failed_deployments))

    @property
    def recovery_time_band(self):
        return self._band(recovery_time_band(self.recovered_failures, self.recovery_median))

    def as_dict(self):
        def band(value):
            return value.value if value is not None else None

        return {
            "deployment_frequency": {
                "change_deployments": self.change_deployments,
                "per_day": self.per_day,
                "per_week": self.per_week,
                "per_month": self.per_month,
                "deploy_days": self.deploy_days,
                "median_deploy_days_per_week": self.deploy_days_per_week,
                "median_deploy_days_per_month": self.deploy_days_per_month,
                "band": band(self.deployment_frequency_band),
            },
            "lead_time_for_changes": {
                "median_seconds": self.lead_time_median,
                "p90_seconds": self.lead_time_p90,
                "deployments": self.lead_time_samples,
                "excluded_commit_after_deployment": self.commit_after_deployment,
                "excluded_without_commit_time": self.without_commit_time,
                "band": band(self.lead_time_band),
            },
            "change_failure_rate": {
                "value": self.change_failure_rate,
                "failed_deployments": self.failed_deployments,
                "change_deployments": self.change_deployments,
                "band": band(self.change_failure_rate_band),
            },
            "failed_deployment_recovery_time": {
                "median_seconds": self.recovery_median,
                "p90_seconds": self.recovery_p90,
                "recovered": self.recovered_failures,
                "not_recovered": self.unrecovered_failures,
                "band": band(self.recovery_time_band),
            },
            "deployment_rework_rate": {
                "value": self.rework_rate,
                "hotfix_deployments": self.hotfix_deployments,
                "rollbacks": self.rollbacks,
                "change_deployments": self.change_deployments,
                "band": None,
            },
        }


@dataclass
class ServiceRow:
    service: Service
    figures: Figures


@dataclass
class Bucket:
    start: date
    figures: Figures


@dataclass
class Report:
    environment: Environment
    period: Period
    interval: str
    service: Service | None
    team: object | None
    overall: Figures
    services: list = field(default_factory=list)
    trend: list = field(default_factory=list)

    @property
    def warnings(self):
        """Data-quality notes people should see next to the figures."""
        notes = []
        if self.overall.commit_after_deployment:
            notes.append(
                f"{self.overall.commit_after_deployment} change deployment(s) left out of lead time: the release's "
                "commit time is after the deployment finished (a wrong clock or commit time)."
            )
        if self.overall.without_commit_time:
            notes.append(
                f"{self.overall.without_commit_time} change deployment(s) left out of lead time: the release has "
                "no commit time (imported history, or registered without one)."
            )
        return notes

    def as_dict(self):
        data = {
            "environment": self.environment.name,
            "service": self.service.name if self.service else None,
            "team": self.team.name if self.team else None,
            "start": self.period.start.isoformat(),
            "end": self.period.end.isoformat(),
            "interval": self.interval,
            "bands_source": BANDS_SOURCE,
            "metrics": self.overall.as_dict(),
            "data_quality_warnings": self.warnings,
            "services": [{"service": row.service.name, "metrics": row.figures.as_dict()} for row in self.services],
        }
        if self.interval != Interval.ALL:
            data["intervals"] = [
                {"date": bucket.start.isoformat(), "metrics": bucket.figures.as_dict()} for bucket in self.trend
            ]
        return data


# --- database aggregation -------------------------------------------------------------------


class Percentile(Aggregate):
    """PostgreSQL's continuous percentile (linear interpolation between the two nearest values)."""

    function = "PERCENTILE_CONT"
    name = "Percentile"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression, fraction, **extra):
        super().__init__(expression, fraction=float(fraction), **extra)


class Epoch(Func):
    template = "EXTRACT(EPOCH FROM %(expressions)s)"
    output_field = FloatField()


def percentile(values, fraction):
    """The same interpolation as PERCENTILE_CONT, for databases that lack it (the SQLite demo)."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


CHANGE = Q(is_change=True)
HAS_VALID_COMMIT_TIME = CHANGE & Q(release__committed_at__isnull=False, release__committed_at__lte=F("deployed_at"))


def _incidents():
    """The incidents linked to the deployment of the surrounding query."""
    return Incident.objects.filter(caused_by=OuterRef("pk"))


def _failed():
    return CHANGE & Exists(_incidents())


def _first_resolution():
    return Subquery(_incidents().filter(resolved_at__isnull=False).order_by("resolved_at").values("resolved_at")[:1])


def _counts():
    return {
        "change_deployments": Count("pk", filter=CHANGE),
        "rollbacks": Count("pk", filter=Q(is_rollback=True)),
        "hotfix_deployments": Count("pk", filter=CHANGE & Q(release__is_hotfix=True)),
        "failed_deployments": Count("pk", filter=_failed()),
        "recovered_failures": Count("pk", filter=CHANGE & Exists(_incidents().filter(resolved_at__isnull=False))),
        "lead_time_samples": Count("pk", filter=HAS_VALID_COMMIT_TIME),
        "without_commit_time": Count("pk", filter=CHANGE & Q(release__committed_at__isnull=True)),
        "commit_after_deployment": Count("pk", filter=CHANGE & Q(release__committed_at__gt=F("deployed_at"))),
    }


def _percentiles():
    lead_time = Epoch(ExpressionWrapper(F("deployed_at") - F("release__committed_at"), output_field=DurationField()))
    # NULL for a deployment with no resolved incident: PERCENTILE_CONT skips it.
    recovery_time = Epoch(ExpressionWrapper(_first_resolution() - F("deployed_at"), output_field=DurationField()))
    return {
        "lead_time_median": Percentile(lead_time, 0.5, filter=HAS_VALID_COMMIT_TIME),
        "lead_time_p90": Percentile(lead_time, 0.9, filter=HAS_VALID_COMMIT_TIME),
        "recovery_median": Percentile(recovery_time, 0.5, filter=CHANGE),
        "recovery_p90": Percentile(recovery_time, 0.9, filter=CHANGE),
    }


def _database_has_percentiles():
    return connection.vendor == "postgresql"


def _summaries(deployments, group_by):
    """Counts and percentiles per group (one query on PostgreSQL), keyed by the group's values."""
    in_database = _database_has_percentiles()
    aggregates = {**_counts(), **(_percentiles() if in_database else {})}
    if group_by:
        rows = deployments.values(*group_by).annotate(**aggregates).order_by()
        result = {tuple(row[name] for name in group_by): row for row in rows}
    else:
        result = {(): deployments.aggregate(**aggregates)}
    if not in_database:
        _fill_percentiles_portably(deployments, group_by, result)
    return result


def _fill_percentiles_portably(deployments, group_by, result):
    lead_times, recoveries = {}, {}
    rows = (
        deployments.filter(CHANGE)
        .annotate(first_resolution=_first_resolution())
        .values_list(*group_by, "deployed_at", "release__committed_at", "first_resolution")
    )
    for *key, deployed_at, committed_at, first_resolution in rows:
        key = tuple(key)
        if committed_at is not None and committed_at <= deployed_at:
            lead_times.setdefault(key, []).append((deployed_at - committed_at).total_seconds())
        if first_resolution is not None:
            recoveries.setdefault(key, []).append((first_resolution - deployed_at).total_seconds())
    for key, row in result.items():
        row["lead_time_median"] = percentile(lead_times.get(key, []), 0.5)
        row["lead_time_p90"] = percentile(lead_times.get(key, []), 0.9)
        row["recovery_median"] = percentile(recoveries.get(key, []), 0.5)
        row["recovery_p90"] = percentile(recoveries.get(key, []), 0.9)


def _deploy_days(deployments, truncate, group_by):
    """Distinct calendar days with at least one change deployment, per group and week or month."""
    rows = (
        deployments.filter(CHANGE)
        .annotate(bucket=truncate("deployed_at", output_field=DateField()))
        .values(*group_by, "bucket")
        .annotate(days=Count(TruncDate("deployed_at"), distinct=True))
        .order_by()
    )
    counts = {}
    for row in rows:
        counts.setdefault(tuple(row[name] for name in group_by), {})[row["bucket"]] = row["days"]
    return counts


def _median_over(buckets, counts):
    """Median of the counts over every bucket of the period, the empty ones counting as zero."""
    return float(statistics.median(counts.get(bucket, 0) for bucket in buckets)) if buckets else None


SUMMARY_FIELDS = [*_counts(), "lead_time_median", "lead_time_p90", "recovery_median", "recovery_p90"]


def _figures(days, summary, weekly, monthly, period, banded=True):
    figures = Figures(days=days, banded=banded)
    for name in SUMMARY_FIELDS:
        if summary and summary.get(name) is not None:
            setattr(figures, name, summary[name])
    figures.deploy_days = sum(weekly.values())
    if period is not None:
        figures.deploy_days_per_week = _median_over(period.weeks(), weekly)
        figures.deploy_days_per_month = _median_over(period.months(), monthly)
    return figures


def default_environment():
    """Production is the headline: the environment called production, else the last one."""
    return (
        Environment.objects.filter(name="production").first()
        or Environment.objects.in_pipeline_order().last()
    )


def report(*, environment=None, start=None, end=None, service=None, team=None, interval=Interval.ALL):
    """The DORA report for one environment and period, optionally one service or one team's services.

    A fixed number of queries whatever the number of services or deployments.
    """
    environment = environment or default_environment()
    if environment is None:
        raise ReportError("There is no environment yet: create the environments first (manage.py seed_demo).")
    if service is not None and team is not None and service.team_id != team.pk:
        raise ReportError(f"{service.name} does not belong to {team.name}: choose the team or the service.")
    period = start if isinstance(start, Period) else Period.resolve(start, end)
    since, until = period.bounds()

    services = Service.objects.select_related("team").order_by("name")
    deployments = Deployment.objects.filter(environment=environment, deployed_at__gte=since, deployed_at__lt=until)
    if service is not None:
        services = services.filter(pk=service.pk)
        deployments = deployments.filter(service=service)
    if team is not None:
        services = services.filter(team=team)
        deployments = deployments.filter(service__team=team)

    weekly = _deploy_days(deployments, TruncWeek, [])
    monthly = _deploy_days(deployments, TruncMonth, [])
    overall = _figures(
        period.days, _summaries(deployments, []).get(()), weekly.get((), {}), monthly.get((), {}), period
    )

    per_service = _summaries(deployments, ["service_id"])
    weekly_by_service = _deploy_days(deployments, TruncWeek, ["service_id"])
    monthly_by_service = _deploy_days(deployments, TruncMonth, ["service_id"])
    rows = [
        ServiceRow(
            service=each,
            figures=_figures(
                period.days,
                per_service.get((each.pk,)),
                weekly_by_service.get((each.pk,), {}),
                monthly_by_service.get((each.pk,), {}),
                period,
            ),
        )
        for each in services
    ]

    trend = []
    if interval != Interval.ALL:
        truncate, buckets, days_by_bucket = (
            (TruncWeek, period.weeks(), weekly.get((), {}))
            if interval == Interval.WEEKLY
            else (TruncMonth, period.months(), monthly.get((), {}))
        )
        per_bucket = _summaries(deployments.annotate(bucket=truncate("deployed_at", output_field=DateField())), ["bucket"])
        for bucket in buckets:
            figures = _figures(
                period.days_in(bucket, interval), per_bucket.get((bucket,)), {bucket: days_by_bucket.get(bucket, 0)}, {}, None,
                banded=False,
            )
            trend.append(Bucket(start=bucket, figures=figures))

    return Report(
        environment=environment,
        period=period,
        interval=interval,
        service=service,
        team=team,
        overall=overall,
        services=rows,
        trend=trend,
    )
