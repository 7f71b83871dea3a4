"""Promotion SLOs: per environment, how long promotions took against the target, how many ended verified,
how many deployments were rollbacks; and the time of each stage, so a slow approval is told from a slow sync.

The targets are the environment's (editable in the admin; the reference docs' by default: develop 10 min
and 99 %, qa 15 min and 98 %, staging and production 60 min with their 30-minute soak, 98 % and 99.9 %,
and for production fewer than 5 % rollbacks; a target is always longer than the soak it counts). A report
covers the promotions requested within a window of days:

- **stages** follow one another, so they add up to the whole: waiting for approval (requested →
  approved), commit (approved → pushed), sync (pushed → healthy), soak (healthy → verdict);
- **success**: of the promotions that reached a verdict, those verified (one verified and later rolled
  back counts as verified: its pipeline worked); rejected, cancelled and superseded ones are people's
  decisions, not the pipeline's, and count for neither side;
- **within target**: promotions verified no later than the target time after their request;
- **rollback rate**: rollbacks among the deployments made there in the window.

A promotion still active past its target is *breaching*: marked on the board and alerted once.
"""

import statistics
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from audit import log as audit
from audit.models import AuditAction
from environments.models import Environment
from nexo_portal.lib import metrics

from . import alerts
from .models import Promotion, PromotionKind, PromotionState

# (stage, when it starts, when it ends): consecutive, so the stages of a promotion add up to its time.
STAGES = (
    ("waiting_for_approval", "requested_at", "approved_at"),
    ("commit", "approved_at", "committed_at"),
    ("sync", "committed_at", "deployed_at"),
    ("soak", "deployed_at", "finished_at"),
)
STAGE_NAMES = [stage for stage, _, _ in STAGES]
_BOUNDS = {stage: (start, end) for stage, start, end in STAGES}
VERDICT_STATES = (PromotionState.VERIFIED, PromotionState.FAILED, PromotionState.ROLLED_BACK)
DEFAULT_DAYS = 30
MAX_DAYS = 366

COLUMNS = ("id", "kind", "state", "failed_step", "requested_at", "finished_at", *(end for _, _, end in STAGES))


def stage_seconds(promotion, stage):
    """Seconds the promotion spent in `stage`, or None when it has not gone through it (yet)."""
    start, end = _BOUNDS[stage]
    started, ended = _value(promotion, start), _value(promotion, end)
    if started is None or ended is None:
        return None
    return max(0.0, (ended - started).total_seconds())


def _value(promotion, name):
    return promotion[name] if isinstance(promotion, dict) else getattr(promotion, name)


def target(environment):
    return timedelta(minutes=environment.promotion_slo_minutes)


def is_breaching(promotion, now=None):
    """Active for longer than its environment's target time."""
    now = now or timezone.now()
    return promotion.is_active and now - promotion.requested_at > target(promotion.environment)


@dataclass
class EnvironmentSLO:
    environment: Environment
    target_minutes: int
    success_target: float
    rollback_target: float | None
    requested: int = 0
    verified: int = 0
    failed: int = 0
    within_target: int = 0
    deployments: int = 0
    rollbacks: int = 0
    active_breaching: int = 0
    median_minutes: float | None = None
    p90_minutes: float | None = None
    stage_median_minutes: dict = field(default_factory=dict)

    @property
    def success_percent(self):
        decided = self.verified + self.failed
        return round(100 * self.verified / decided, 2) if decided else None

    @property
    def within_target_percent(self):
        return round(100 * self.within_target / self.verified, 2) if self.verified else None

    @property
    def rollback_percent(self):
        return round(100 * self.rollbacks / self.deployments, 2) if self.deployments else None

    @property
    def success_met(self):
        return None if self.success_percent is None else self.success_percent >= self.success_target

    @property
    def rollback_met(self):
        if self.rollback_target is None or self.rollback_percent is None:
            return None
        return self.rollback_percent < self.rollback_target

    @property
    def slowest_stage(self):
        """The stage with the longest median: where the time goes."""
        known = {stage: minutes for stage, minutes in self.stage_median_minutes.items() if minutes is not None}
        return max(known, key=known.get) if known else None

    def as_dict(self):
        return {
            "environment": self.environment.name,
            "target_minutes": self.target_minutes,
            "success_target_percent": self.success_target,
            "rollback_target_percent": self.rollback_target,
            "requested": self.requested,
            "verified": self.verified,
            "failed": self.failed,
            "success_percent": self.success_percent,
            "success_met": self.success_met,
            "within_target": self.within_target,
            "within_target_percent": self.within_target_percent,
            "median_minutes": self.median_minutes,
            "p90_minutes": self.p90_minutes,
            "stage_median_minutes": self.stage_median_minutes,
            "slowest_stage": self.slowest_stage,
            "deployments": self.deployments,
            "rollbacks": self.rollbacks,
            "rollback_percent": self.rollback_percent,
            "rollback_met": self.rollback_met,
            "active_breaching": self.active_breaching,
        }


@dataclass
class SLOReport:
    start: object
    end: object
    days: int
    environments: list


def promotions_in_window(start, end, services=None):
    """The window's promotions as dicts (no model instances): one query."""
    promotions = Promotion.objects.filter(requested_at__gte=start, requested_at__lt=end)
    if services is not None:
        promotions = promotions.filter(service_id__in=services)
    return promotions.order_by("requested_at", "id").values(
        *COLUMNS, "environment_id", "deployed_at", "service__name", "environment__name", "release__version"
    )


def report(days=DEFAULT_DAYS, *, services=None, now=None):
    """The SLOs of every environment over the last `days` days; `services`: ids to limit it to (None: all)."""
    now = now or timezone.now()
    start = now - timedelta(days=days)
    environments = list(Environment.objects.in_pipeline_order())
    rows = {environment.pk: [] for environment in environments}
    for row in promotions_in_window(start, now, services):
        rows[row["environment_id"]].append(row)
    active = Promotion.objects.active().select_related("environment")
    if services is not None:
        active = active.filter(service_id__in=services)
    breaching = {}
    for promotion in active:
        if is_breaching(promotion, now):
            breaching[promotion.environment_id] = breaching.get(promotion.environment_id, 0) + 1
    return SLOReport(
        start=start,
        end=now,
        days=days,
        environments=[_environment_slo(e, rows[e.pk], breaching.get(e.pk, 0)) for e in environments],
    )


def _environment_slo(environment, rows, breaching):
    result = EnvironmentSLO(
        environment=environment,
        target_minutes=environment.promotion_slo_minutes,
        success_target=float(environment.promotion_slo_success_percent),
        rollback_target=(
            None
            if environment.promotion_slo_rollback_percent is None
            else float(environment.promotion_slo_rollback_percent)
        ),
        requested=len(rows),
        active_breaching=breaching,
    )
    limit = target(environment)
    totals = []
    stages = {stage: [] for stage in STAGE_NAMES}
    for row in rows:
        if row["deployed_at"] is not None:
            result.deployments += 1
            result.rollbacks += row["kind"] == PromotionKind.ROLLBACK
        if row["state"] not in VERDICT_STATES:
            continue
        if row["state"] == PromotionState.FAILED or row["failed_step"]:
            result.failed += 1
            continue
        result.verified += 1
        total = row["finished_at"] - row["requested_at"]
        totals.append(total.total_seconds() / 60)
        result.within_target += total <= limit
        for stage in STAGE_NAMES:
            seconds = stage_seconds(row, stage)
            if seconds is not None:
                stages[stage].append(seconds / 60)
    result.median_minutes = _round(statistics.median(totals)) if totals else None
    result.p90_minutes = _round(_percentile(totals, 0.9)) if totals else None
    result.stage_median_minutes = {
        stage: _round(statistics.median(values)) if values else None for stage, values in stages.items()
    }
    return result


def _percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _round(minutes):
    return round(minutes, 2)


def csv_rows(start, end, services=None):
    """One row per promotion of the window with the minutes of each stage, for the CSV export."""
    for row in promotions_in_window(start, end, services):
        total = (row["finished_at"] - row["requested_at"]).total_seconds() / 60 if row["finished_at"] else None
        yield [
            row["id"],
            row["service__name"],
            row["environment__name"],
            row["release__version"],
            row["kind"],
            row["state"],
            row["requested_at"].isoformat(),
            row["finished_at"].isoformat() if row["finished_at"] else "",
            *("" if (seconds := stage_seconds(row, stage)) is None else _round(seconds / 60) for stage in STAGE_NAMES),
            "" if total is None else _round(total),
        ]


CSV_HEADER = [
    "promotion",
    "service",
    "environment",
    "version",
    "kind",
    "state",
    "requested_at",
    "finished_at",
    *(f"{stage}_minutes" for stage in STAGE_NAMES),
    "total_minutes",
]


def find_breaches(now=None):
    """Mark each active promotion past its target time, once, and have it alerted: the ids marked."""
    now = now or timezone.now()
    marked = []
    candidates = Promotion.objects.active().filter(slo_breached_at__isnull=True)
    for promotion in candidates.select_related("environment", "service", "release"):
        if not is_breaching(promotion, now):
            continue
        with audit.chain_transaction():
            if not Promotion.objects.filter(pk=promotion.pk, slo_breached_at__isnull=True).update(slo_breached_at=now):
                continue  # another reconciler got there first
            minutes = int((now - promotion.requested_at).total_seconds() // 60)
            audit.record(
                AuditAction.PROMOTION_SLO_BREACHED,
                service=promotion.service.name,
                environment=promotion.environment.name,
                version=promotion.release.version,
                promotion=promotion,
                message=f"{promotion.service.name} {promotion.release.version} → {promotion.environment.name} "
                f"active for {minutes} min, past its {promotion.environment.promotion_slo_minutes} min target "
                f"({promotion.get_state_display().lower()})",
                data={
                    "state": promotion.state,
                    "active_minutes": minutes,
                    "target_minutes": promotion.environment.promotion_slo_minutes,
                },
            )
            alerts.enqueue_slo_breach_alert(promotion)
            environment = promotion.environment.name
            transaction.on_commit(lambda env=environment: metrics.PROMOTION_SLO_BREACHES.labels(environment=env).inc())
        marked.append(promotion.pk)
    return marked
