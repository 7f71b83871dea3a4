"""What the promotion pipeline tells /metrics: step durations and ends as they happen, and the state of
promotions and of the queue read from PostgreSQL and Redis when Prometheus scrapes.

The counters and histograms are nexo_portal/lib/metrics.py's, observed here once the transition's
transaction commits (a transition rolled back observed nothing). The collector reads its figures
at scrape time, so every web worker answers the same and nothing is summed over processes twice.
"""

import logging

from django.db import DatabaseError, transaction
from django.db.models import Count
from prometheus_client.core import GaugeMetricFamily
from redis.exceptions import RedisError
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from environments.models import Environment
from nexo_portal.lib import metrics, queues

from . import notices, slo, steps, worker
from .models import NoticeKind, Promotion, PromotionState, ReconcilerRound, RunStatus, Step

logger = logging.getLogger(__name__)

# The label values the counters are counted from zero for (count_from_zero): the RQ functions the
# portal enqueues, how a pipeline step ends (releases/jobs.py), why the reconciler resumed a step
# (releases/reconciler.py) and why a notice was given up (releases/notices.py).
JOB_FUNCTIONS = (
    steps.JOB_FUNCTION,
    notices.JOB_FUNCTION,
    "releases.pull_requests.close_on_github",
    "releases.slack_interactions.tell",
)
JOB_OUTCOMES = ("finished", "failed")
STEP_OUTCOMES = (RunStatus.DONE, RunStatus.RETRY, RunStatus.CRASHED)
RESUME_REASONS = ("lease_expired", "redelivered", "stalled")
GIVE_UP_REASONS = ("refused", "exhausted")


def count_from_zero():
    """Give every label combination the counters know of its 0 in this process, as it starts.

    A counter's child appears at its first increment, and the multiprocess directory is emptied at
    each start: the first refusal, crash or failed job was then a series whose first sample was 1,
    and `increase()` saw no increase (the documented alerts never fired on it). Each process gives
    the 0s to its own counters, the only ones a scrape adds up (its file in PROMETHEUS_MULTIPROC_DIR,
    or its own registry without it). Environments are rows: the collector gives theirs at scrape.
    """
    for function in JOB_FUNCTIONS:
        for outcome in JOB_OUTCOMES:
            metrics.JOBS.labels(function=function, outcome=outcome)
    for step in Step.values:
        for outcome in STEP_OUTCOMES:
            metrics.PIPELINE_STEPS.labels(step=step, outcome=outcome.value)
    for reason in RESUME_REASONS:
        metrics.RECONCILER_RESUMES.labels(reason=reason)
    for kind in NoticeKind.values:
        for reason in GIVE_UP_REASONS:
            metrics.NOTICES_GIVEN_UP.labels(kind=kind, reason=reason)


def stage_ended(promotion, stage):
    """Observe how long `stage` (slo.STAGES) of the promotion took, once the transaction commits."""
    seconds = slo.stage_seconds(promotion, stage)
    if seconds is None:
        return
    environment = promotion.environment.name
    transaction.on_commit(
        lambda: metrics.PROMOTION_STEP_SECONDS.labels(environment=environment, step=stage).observe(seconds)
    )


def promotion_ended(promotion):
    """Count the promotion's end (verified, failed, rejected, cancelled, superseded), once committed."""
    labels = {"environment": promotion.environment.name, "kind": promotion.kind, "state": promotion.state}
    transaction.on_commit(lambda: metrics.PROMOTIONS_FINISHED.labels(**labels).inc())


class PipelineCollector:
    """Active promotions by environment and state, when the reconciler last ended a round, the job
    queue (waiting, scheduled, running and failed jobs) and the workers alive; read from PostgreSQL
    and Redis at each scrape.

    Where one of them does not answer, its figures are left out (a made-up count would be read as
    true) and `nexo_database_up` or `nexo_redis_up` says 0: the portal still answers the scrape, so
    Prometheus' own `up` stays 1, and an alert on a missing figure never fires.
    """

    def collect(self):
        yield from self._promotions()
        yield from self._queue()

    def _promotions(self):
        family = GaugeMetricFamily(
            "nexo_promotions", "Promotions in each active state now, by environment.", labels=["environment", "state"]
        )
        try:
            names = dict(Environment.objects.values_list("pk", "name"))
            counts = {
                (row["environment"], row["state"]): row["count"]
                for row in Promotion.objects.active()
                .order_by()
                .values("environment", "state")
                .annotate(count=Count("*"))
            }
            last_round = ReconcilerRound.last_ended_at()
        except DatabaseError as error:
            logger.warning("/metrics could not read the promotions: %s", error)
            yield _answered("nexo_database_up", "PostgreSQL", False)
            return
        for name in names.values():
            # Counted from zero as soon as the environment exists, in this very answer: the
            # exposition reads the collectors before the counters.
            metrics.PROMOTION_SLO_BREACHES.labels(environment=name)
        for pk, name in names.items():
            for state in PromotionState.active():
                family.add_metric([name, state], counts.get((pk, state), 0))
        yield family
        yield GaugeMetricFamily(
            "nexo_reconciler_last_round_timestamp_seconds",
            "When the reconciler (manage.py reconcile --loop) last ended a round, in Unix time; 0 if it never has.",
            value=last_round.timestamp() if last_round else 0,
        )
        yield _answered("nexo_database_up", "PostgreSQL", True)

    def _queue(self):
        family = GaugeMetricFamily("nexo_queue_jobs", "RQ jobs by queue and status now.", labels=["queue", "status"])
        queue = queues.get_queue("default")
        try:
            figures = {
                "queued": queue.count,
                "scheduled": ScheduledJobRegistry(queue=queue).count,
                "started": StartedJobRegistry(queue=queue).count,
                "failed": FailedJobRegistry(queue=queue).count,
            }
            alive = worker.live_workers(queue.connection)
        except RedisError as error:
            logger.warning("/metrics could not read the queue and the workers: %s", error)
            yield _answered("nexo_redis_up", "Redis", False)
            return
        for status, count in figures.items():
            family.add_metric([queue.name, status], count)
        yield family
        yield GaugeMetricFamily(
            "nexo_workers", f"RQ workers alive now (heard from in the last {worker.ALIVE_SECONDS} s).", value=alive
        )
        yield _answered("nexo_redis_up", "Redis", True)


def _answered(name, what, answered):
    return GaugeMetricFamily(
        name,
        f"Whether {what} answered this scrape: 1 yes, 0 no (what is read from it is then left out).",
        value=int(answered),
    )
