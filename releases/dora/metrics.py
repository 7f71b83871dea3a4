"""DORA metrics from recorded deployments and incidents, computed by the database.

The definitions are written out in docs/dora.md and on the report page; this module is the
one place that implements them. Everything is counted per environment (production is the
headline) for a period of whole days; a team or portfolio figure pools the deployments of
its services, it never averages per-service medians. Deployment frequency is the exception:
it is banded per service, and a team or the portfolio shows how its services spread over the
bands (dora.dev warns against blending applications' frequencies).
"""

import statistics
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import cached_property

from django.contrib.auth.models import Group
from django.db import connection, transaction
from django.db.models import Count, DateField, Exists, F, OuterRef, Q, Subquery, TextChoices, Value
from django.db.models.functions import TruncDate, TruncMonth, TruncWeek
from django.utils import timezone

from environments.models import Environment
from nexo_portal.lib import dates
from releases.models import Deployment, Incident, Service

BANDS_SOURCE = "DORA 2023 performance levels (Google Cloud, Accelerate State of DevOps Report 2023)"
MIN_EVENTS = 5
HOUR = 3600
DAY = 24 * HOUR
WEEK = 7 * DAY
MONTH = 30 * DAY  # "a month" in the bands and in "per month" averages
DEFAULT_PERIOD_DAYS = 90
MAX_PERIOD_DAYS = 3 * 366


class ReportError(Exception):
    """The report cannot be made as asked; the message says what to change (`field`, where one is to blame)."""

    def __init__(self, message, field=None):
        super().__init__(message)
        self.field = field


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


# DORA's own scale for deployment frequency ("how often does your organization deploy code to production?").
FREQUENCY_SCALE = {
    Band.ELITE: "On demand",
    Band.HIGH: "Daily to weekly",
    Band.MEDIUM: "Weekly to monthly",
    Band.LOW: "Monthly to six-monthly",
}


def deployment_frequency_band(change_deployments, days):
    """One service's band on DORA's scale, from how often it deployed: at least once a day on average
    (on demand), once a week, once a month (30 days), or less. Few deployments are an answer, so
    there is no "not enough data"; whole numbers, so exactly once a week is daily to weekly."""
    if change_deployments >= days:
        return Band.ELITE
    if change_deployments * 7 >= days:
        return Band.HIGH
    if change_deployments * MONTH >= days * DAY:
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
        for given in (start, end):
            if given and not dates.in_range(given):
                raise ReportError(f"{given} is out of range. {dates.OUT_OF_RANGE}")
        today = today or timezone.localdate()
        if end and end > today:
            # Days to come have no deployments yet: their zeros would read as a slow team.
            raise ReportError(
                f"The end ({end}) is after today ({today}): choose an end on or before today.", field="end"
            )
        end = end or today
        start = start or end - timedelta(days=DEFAULT_PERIOD_DAYS - 1)
        if start > end:
            raise ReportError(f"The start ({start}) is after the end ({end}): choose a start on or before the end.")
        if (end - start).days + 1 > MAX_PERIOD_DAYS:
            raise ReportError(f"A report covers at most {MAX_PERIOD_DAYS} days; choose a shorter period.")
        return cls(start, end)

    @property
    def days(self):
        return (self.end - self.start).days + 1

    @property
    def shorter_than_a_week(self):
        """Too short for a rate per week or month, or a band on DORA's daily-to-monthly scale, to say
        more than the few days it has: the page gives the count instead, the API a warning."""
        return self.days < 7

    def bounds(self):
        zone = timezone.get_current_timezone()
        return (
            datetime.combine(self.start, time.min, tzinfo=zone),
            datetime.combine(self.end + timedelta(days=1), time.min, tzinfo=zone),
        )

    @cached_property
    def weeks(self):
        """The Mondays of the ISO weeks the period touches."""
        monday = self.start - timedelta(days=self.start.weekday())
        weeks = []
        while monday <= self.end:
            weeks.append(monday)
            monday += timedelta(days=7)
        return weeks

    @cached_property
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
    # For a team or the portfolio: how many of its services are in each frequency band (no pooled band).
    frequency_bands: dict | None = None

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

    def _band(self, band):
        return band if self.banded else None

    @property
    def deployment_frequency_band(self):
        """One service's band; None for a team or the portfolio (see `frequency_bands`) and trend buckets."""
        if self.frequency_bands is not None:
            return None
        return self._band(deployment_frequency_band(self.change_deployments, self.days))

    @property
    def frequency_spread(self):
        """For a team or the portfolio: (band, DORA's words, how many services) from on demand down."""
        counts = self.frequency_bands or {}
        return [(band, label, counts.get(band.value, 0)) for band, label in FREQUENCY_SCALE.items()]

    @property
    def deployment_frequency_scale(self):
        """The band in DORA's words ("Daily to weekly"), or ""."""
        band = self.deployment_frequency_band
        return FREQUENCY_SCALE[band] if band is not None else ""

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
                "scale": self.deployment_frequency_scale or None,
                "services_per_band": self.frequency_bands,
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
    team: Group | None
    overall: Figures
    services: list = field(default_factory=list)
    trend: list = field(default_factory=list)

    @property
    def warnings(self):
        """Data-quality notes people should see next to the figures."""
        notes = []
        if self.period.shorter_than_a_week:
            days = f"{self.period.days} day{'s' if self.period.days > 1 else ''}"
            notes.append(
                f"The period ({days}) is shorter than a week: the rates per week and per month and the deployment "
                "frequency bands extrapolate from it. Choose 7 days or more for them."
            )
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
HAS_VALID_COMMIT_TIME: Q = CHANGE & Q(release_committed_at__isnull=False, release_committed_at__lte=F("deployed_at"))


def _incidents():
    """The incidents linked to the deployment of the surrounding query."""
    return Incident.objects.filter(caused_by=OuterRef("pk"))


def _failed() -> Q:
    return CHANGE & Q(Exists(_incidents()))


def _first_resolution():
    return Subquery(_incidents().filter(resolved_at__isnull=False).order_by("resolved_at").values("resolved_at")[:1])


def _counts():
    return {
        "change_deployments": Count("pk", filter=CHANGE),
        "rollbacks": Count("pk", filter=Q(is_rollback=True)),
        "hotfix_deployments": Count("pk", filter=CHANGE & Q(release_is_hotfix=True)),
        "failed_deployments": Count("pk", filter=_failed()),
        "recovered_failures": Count("pk", filter=CHANGE & Q(Exists(_incidents().filter(resolved_at__isnull=False)))),
        "lead_time_samples": Count("pk", filter=HAS_VALID_COMMIT_TIME),
        "without_commit_time": Count("pk", filter=CHANGE & Q(release_committed_at__isnull=True)),
        "commit_after_deployment": Count("pk", filter=CHANGE & Q(release_committed_at__gt=F("deployed_at"))),
    }


def _database_has_percentiles():
    return connection.vendor == "postgresql"


# --- the portable path: plain ORM aggregation, percentiles in Python (the SQLite demo) ------------


def _summaries_portably(deployments, group_by):
    aggregates = _counts()
    if group_by:
        rows = deployments.values(*group_by).annotate(**aggregates).order_by()
        result = {tuple(row[name] for name in group_by): row for row in rows}
    else:
        result = {(): deployments.aggregate(**aggregates)}
    lead_times: dict[tuple, list[float]] = {}
    recoveries: dict[tuple, list[float]] = {}
    rows = (
        deployments.filter(CHANGE)
        .annotate(first_resolution=_first_resolution())
        .values_list(*group_by, "deployed_at", "release_committed_at", "first_resolution")
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
    return result


def _deploy_days_portably(deployments, truncate, group_by):
    rows = (
        deployments.filter(CHANGE)
        .annotate(bucket=truncate("deployed_at", output_field=DateField()))
        .values(*group_by, "bucket")
        .annotate(days=Count(TruncDate("deployed_at"), distinct=True))
        .order_by()
    )
    counts: dict[tuple, dict[date, int]] = {}
    for row in rows:
        counts.setdefault(tuple(row[name] for name in group_by), {})[row["bucket"]] = row["days"]
    return counts


def _aggregate_portably(deployments, interval):
    truncate = TruncWeek if interval == Interval.WEEKLY else TruncMonth
    return Totals(
        summaries={
            "overall": _summaries_portably(deployments, []),
            "service": _summaries_portably(deployments, ["service_id"]),
            "bucket": _summaries_portably(
                deployments.annotate(bucket=truncate("deployed_at", output_field=DateField())), ["bucket"]
            )
            if interval != Interval.ALL
            else {},
        },
        weekly={
            **_deploy_days_portably(deployments, TruncWeek, []),
            **_deploy_days_portably(deployments, TruncWeek, ["service_id"]),
        },
        monthly={
            **_deploy_days_portably(deployments, TruncMonth, []),
            **_deploy_days_portably(deployments, TruncMonth, ["service_id"]),
        },
    )


# --- the PostgreSQL path: one scan for every figure, one for the deploy-days -----------------------
#
# The same definitions as above in two statements. The deployments to count come from the ORM
# (filters stay in one place) and carry copies of their release's commit time and hotfix flag,
# so no join to releases; incidents are folded in by one grouped join instead of a lookup per
# deployment; GROUPING SETS give the whole, per-service and per-bucket figures in a single pass.
# bench/bench_dora.py measures it.

_FACTS = """
WITH deployment AS ({deployments}),
failure AS (
    SELECT caused_by_id, MIN(resolved_at) AS first_resolution
    FROM {incident_table}
    WHERE caused_by_id IS NOT NULL
    GROUP BY caused_by_id
),
facts AS (
    SELECT d.service_id,
           (DATE_TRUNC(%s, d.deployed_at AT TIME ZONE %s))::date AS bucket,
           d.is_change,
           d.is_rollback,
           d.is_change AND d.release_is_hotfix AS is_hotfix_change,
           d.is_change AND f.caused_by_id IS NOT NULL AS failed,
           d.is_change AND f.first_resolution IS NOT NULL AS recovered,
           d.is_change AND d.release_committed_at IS NULL AS without_commit_time,
           d.is_change AND d.release_committed_at > d.deployed_at AS commit_after_deployment,
           CASE WHEN d.is_change AND d.release_committed_at <= d.deployed_at
                THEN EXTRACT(EPOCH FROM d.deployed_at - d.release_committed_at) END AS lead_time,
           CASE WHEN d.is_change THEN EXTRACT(EPOCH FROM f.first_resolution - d.deployed_at) END AS recovery_time
    FROM deployment d LEFT JOIN failure f ON f.caused_by_id = d.id
)
SELECT {grouping} AS grouping, service_id, {bucket} AS bucket,
       COUNT(*) FILTER (WHERE is_change) AS change_deployments,
       COUNT(*) FILTER (WHERE is_rollback) AS rollbacks,
       COUNT(*) FILTER (WHERE is_hotfix_change) AS hotfix_deployments,
       COUNT(*) FILTER (WHERE failed) AS failed_deployments,
       COUNT(*) FILTER (WHERE recovered) AS recovered_failures,
       COUNT(lead_time) AS lead_time_samples,
       COUNT(*) FILTER (WHERE without_commit_time) AS without_commit_time,
       COUNT(*) FILTER (WHERE commit_after_deployment) AS commit_after_deployment,
       PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY lead_time) AS lead_time_median,
       PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY lead_time) AS lead_time_p90,
       PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY recovery_time) AS recovery_median,
       PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY recovery_time) AS recovery_p90
FROM facts
GROUP BY GROUPING SETS {grouping_sets}
"""

_DEPLOY_DAYS = """
WITH days AS (
    SELECT DISTINCT d.service_id, (d.deployed_at AT TIME ZONE %s)::date AS day
    FROM ({deployments}) d
)
SELECT GROUPING(service_id, week, month) AS grouping, service_id, week, month, COUNT(DISTINCT day) AS days
FROM (SELECT service_id, day, (DATE_TRUNC('week', day))::date AS week, (DATE_TRUNC('month', day))::date AS month
      FROM days) AS by_day
GROUP BY GROUPING SETS ((week), (month), (service_id, week), (service_id, month))
"""

# GROUPING(service_id, bucket) is a bit mask of the columns rolled up in that row.
_OVERALL, _BY_SERVICE, _BY_BUCKET = 0b11, 0b01, 0b10


def _fetch(cursor, sql, params):
    cursor.execute(sql, params)
    columns = [column.name for column in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def _aggregate_in_postgresql(deployments, interval):
    with transaction.atomic(), connection.cursor() as cursor:
        # Compiling these sub-second aggregations to machine code costs more than it saves.
        cursor.execute("SET LOCAL jit = off")
        return _aggregate_with(cursor, deployments, interval)


def _aggregate_with(cursor, deployments, interval):
    base, base_params = (
        deployments.values(
            "id", "service_id", "deployed_at", "is_change", "is_rollback", "release_committed_at", "release_is_hotfix"
        )
        .order_by()
        .query.sql_with_params()
    )
    zone = timezone.get_current_timezone_name()
    if interval == Interval.ALL:
        # No bucket column is grouped: report the mask it would have had.
        grouping, bucket, grouping_sets = "GROUPING(service_id) * 2 + 1", "NULL", "((), (service_id))"
    else:
        grouping, bucket, grouping_sets = "GROUPING(service_id, bucket)", "bucket", "((), (service_id), (bucket))"
    unit = "week" if interval == Interval.WEEKLY else "month"
    summaries: dict[str, dict[tuple, dict]] = {"overall": {(): {}}, "service": {}, "bucket": {}}
    sql = _FACTS.format(
        deployments=base,
        incident_table=Incident._meta.db_table,
        grouping=grouping,
        bucket=bucket,
        grouping_sets=grouping_sets,
    )
    for row in _fetch(cursor, sql, [*base_params, unit, zone]):
        grouping = row.pop("grouping")
        service_id, bucket = row.pop("service_id"), row.pop("bucket")
        if grouping == _OVERALL:
            summaries["overall"][()] = row
        elif grouping == _BY_SERVICE:
            summaries["service"][(service_id,)] = row
        elif grouping == _BY_BUCKET:
            summaries["bucket"][(bucket,)] = row

    days, days_params = (
        deployments.filter(CHANGE).values("service_id", "deployed_at").order_by().query.sql_with_params()
    )
    weekly: dict[tuple, dict[date, int]] = {}
    monthly: dict[tuple, dict[date, int]] = {}
    for row in _fetch(cursor, _DEPLOY_DAYS.format(deployments=days), [zone, *days_params]):
        pooled = row["grouping"] & 0b100
        key = () if pooled else (row["service_id"],)
        if row["week"] is not None:
            weekly.setdefault(key, {})[row["week"]] = row["days"]
        else:
            monthly.setdefault(key, {})[row["month"]] = row["days"]
    return Totals(summaries=summaries, weekly=weekly, monthly=monthly)


@dataclass
class Totals:
    """What the database returned: summaries by "overall"/"service"/"bucket", deploy-days by week and month."""

    summaries: dict
    weekly: dict
    monthly: dict


def _aggregate(deployments, interval):
    if _database_has_percentiles():
        return _aggregate_in_postgresql(deployments, interval)
    return _aggregate_portably(deployments, interval)


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
        figures.deploy_days_per_week = _median_over(period.weeks, weekly)
        figures.deploy_days_per_month = _median_over(period.months, monthly)
    return figures


def default_environment():
    """Production is the headline: the environment called production, else the last one."""
    return Environment.objects.filter(name="production").first() or Environment.objects.in_pipeline_order().last()


def report(
    *, environment=None, period=None, start=None, end=None, service=None, team=None, interval=Interval.ALL, only=None
):
    """The DORA report for one environment and period, optionally one service or one team's services.

    `only`: the ids of the services the reader may see at all (None: every service); the rest
    count nowhere, not even in the whole's figures.

    The period is a `Period`, or made from `start` and `end` (dates; the last 90 days by default).
    A fixed number of queries whatever the number of services or deployments.
    """
    environment = environment or default_environment()
    if environment is None:
        raise ReportError("There is no environment yet: create the environments first (manage.py seed_demo).")
    if service is not None and team is not None and service.team_id != team.pk:
        raise ReportError(f"{service.name} does not belong to {team.name}: choose the team or the service.")
    period = period or Period.resolve(start, end)
    since, until = period.bounds()

    services = Service.objects.select_related("team").order_by("name")
    deployments = Deployment.objects.filter(environment=environment, deployed_at__gte=since, deployed_at__lt=until)
    if service is not None:
        services = services.filter(pk=service.pk)
        deployments = deployments.filter(service=service)
    if team is not None:
        services = services.filter(team=team)
        deployments = deployments.filter(service__team=team)
    if only is not None:
        services = services.filter(pk__in=sorted(only))
        # Django writes no SQL for `IN ()`, and the aggregation below needs SQL: none readable is "no row".
        deployments = deployments.filter(service_id__in=sorted(only)) if only else deployments.filter(Value(False))

    totals = _aggregate(deployments, interval)
    overall = _figures(
        period.days, totals.summaries["overall"].get(()), totals.weekly.get((), {}), totals.monthly.get((), {}), period
    )
    rows = [
        ServiceRow(
            service=each,
            figures=_figures(
                period.days,
                totals.summaries["service"].get((each.pk,)),
                totals.weekly.get((each.pk,), {}),
                totals.monthly.get((each.pk,), {}),
                period,
            ),
        )
        for each in services
    ]

    trend = []
    if interval != Interval.ALL:
        buckets, days = (
            (period.weeks, totals.weekly.get((), {}))
            if interval == Interval.WEEKLY
            else (period.months, totals.monthly.get((), {}))
        )
        for bucket in buckets:
            figures = _figures(
                period.days_in(bucket, interval),
                totals.summaries["bucket"].get((bucket,)),
                {bucket: days.get(bucket, 0)},
                {},
                None,
                banded=False,
            )
            trend.append(Bucket(start=bucket, figures=figures))

    if service is None:
        # A team or the portfolio: the spread of its services' bands, never one band of pooled deployments.
        # Only services that had reached this environment by the period's end: one created since, or
        # that never left develop, is no "monthly to six-monthly" service here.
        reached = set(
            Deployment.objects.filter(environment=environment, deployed_at__lt=until)
            .values_list("service_id", flat=True)
            .distinct()
            .order_by()
        )
        bands = [row.figures.deployment_frequency_band for row in rows if row.service.pk in reached]
        overall.frequency_bands = {band.value: bands.count(band) for band in FREQUENCY_SCALE}

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
