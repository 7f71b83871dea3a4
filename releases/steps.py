"""Pipeline steps as rows: scheduled in a transition's transaction, delivered by RQ, leased by a worker.

A promotion in a state that needs work (approved → commit, committed → sync, deployed or verifying
→ verify) has exactly one open `StepRun` (a database constraint). The transition that puts it in
that state schedules the run in its own transaction; RQ gets it once that commits. A worker claims
the run (queued → running, one worker only) and renews its lease while it works. Whatever happens
to RQ (a killed worker, Redis restarted empty, the scheduler lost with its worker), the row says
what is owed, and the reconciler delivers it again:

- a running run whose lease expired lost its worker: it is ended and the step resumed;
- a queued run past its time that RQ does not hold (or holds scheduled when it is overdue, or
  says is queued while no queue holds it: a worker took it and died before starting it) is
  handed to RQ again.

Running a step twice does no harm: the claim lets one worker in, and every step checks the
promotion's state before it acts.
"""

import logging
import os
import random
import socket
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from redis.exceptions import RedisError
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry

from nexo_portal.lib import queues

from .models import Promotion, PromotionState, RunStatus, Step, StepRun

logger = logging.getLogger(__name__)

JOB_FUNCTION = "releases.jobs.run_step"
# A queued run this late that RQ does not deliver is delivered again by the reconciler.
OVERDUE_AFTER = timedelta(seconds=15)
# Where a worker that cannot reach the database says why it stopped, for the reconciler to read.
INTERRUPTED_KEY = "nexo:step-run-interrupted:{}"


def worker_name():
    return f"{socket.gethostname()}:{os.getpid()}"


def lease():
    return timedelta(seconds=settings.PIPELINE_LEASE_SECONDS)


def backoff(attempt, *, base=5, cap=60):
    """Seconds before the next try after `attempt` tries in a row went wrong: 5, 10, 20, 40, 60, 60…, ±20 %."""
    return min(cap, base * 2 ** max(attempt - 1, 0)) * random.uniform(0.8, 1.2)


# --- scheduling, in the transitions' transactions -----------------------------------------------------


def schedule(promotion, step, delay=None, *, at=None, troubled_since=None, first=False):
    """The promotion's next run of `step`, after `delay` (or at `at`); RQ gets it once the transaction commits.

    The promotion's open run, if any, ends here: it is the step that led to this one (`first`:
    the promotion was just created and has none).
    """
    promotion_id = getattr(promotion, "pk", promotion)
    now = timezone.now()
    if not first:
        close(promotion_id, now=now)
    run = StepRun.objects.create(
        promotion_id=promotion_id,
        step=step,
        run_after=at or now + (delay or timedelta(0)),
        created_at=now,
        troubled_since=troubled_since,
    )
    transaction.on_commit(lambda: dispatch(run))
    return run


def wake_commits_held_by_freezes(environment_id):
    """A freeze of the environment was made, changed or deleted: the GitOps commits that wait there
    for a freeze to end (jobs.commit_promotion scheduled them for its end) are tried now, and wait
    again, for the new end, if a freeze still holds them."""
    with transaction.atomic():
        waiting = StepRun.objects.filter(
            step=Step.COMMIT,
            status=RunStatus.QUEUED,
            run_after__gt=timezone.now(),
            promotion__environment_id=environment_id,
            # Not a retry after a transient error: that one waits out its backoff and keeps its clock.
            troubled_since__isnull=True,
        )
        approved = Promotion.objects.select_for_update(of=("self",)).filter(
            pk__in=waiting.values("promotion_id"), state__in=[PromotionState.APPROVED, PromotionState.COMMITTING]
        )
        for promotion_id in approved.values_list("pk", flat=True):
            schedule(promotion_id, Step.COMMIT)


def freeze_changing(sender, instance, **kwargs):
    """pre_save of environments.ChangeFreeze: where it was, since the admin may move it to another environment."""
    if instance.pk is not None:
        instance._environment_before = (
            sender.objects.filter(pk=instance.pk).values_list("environment_id", flat=True).first()
        )


def freeze_changed(sender, instance, **kwargs):
    """post_save and post_delete of environments.ChangeFreeze (connected in apps.py): the commits it held
    where it was and where it is now are tried again."""
    places = {instance.environment_id, getattr(instance, "_environment_before", None)} - {None}
    # A failure here (the database gone between the two) must not fail the freeze's own change: the
    # commits then wait until the end the freeze had when they were scheduled.
    for environment_id in sorted(places):
        transaction.on_commit(partial(wake_commits_held_by_freezes, environment_id), robust=True)


def withdraw(promotion_id):
    """End the promotion's queued run before a worker claims it (claim() and this take turns on the
    row): False when a worker runs a step of it now, which nothing may cut short."""
    StepRun.objects.filter(promotion_id=promotion_id, status=RunStatus.QUEUED).update(
        status=RunStatus.DONE, finished_at=timezone.now(), lease_expires_at=None
    )
    return not StepRun.objects.filter(promotion_id=promotion_id, status=RunStatus.RUNNING).exists()


def close(promotion_id, *, now=None):
    """End the promotion's open run: it has moved on (or ended) and owes no more work."""
    StepRun.objects.filter(promotion_id=promotion_id, status__in=RunStatus.open()).update(
        status=RunStatus.DONE, finished_at=now or timezone.now(), lease_expires_at=None
    )


def dispatch(run):
    """Hand the run to RQ, at its time. Redis being down is left to the reconciler, which sees it queued."""
    try:
        queues.hand_over(JOB_FUNCTION, run.pk, job_id=run.rq_job_id, at=run.run_after)
    except RedisError as error:
        logger.warning("Could not hand %s to RQ (%s); the reconciler will", run, error)
        return False
    return True


def redeliver_if_lost(run, now):
    """A queued run past its time: hand it to RQ again unless RQ is about to deliver it.

    Returns what was wrong, or None when RQ has it in hand.
    """
    queue = queues.get_queue("default")
    try:
        job = Job.fetch(run.rq_job_id, connection=queue.connection)
        status = job.get_status()
    except NoSuchJobError:
        job, status = None, None
    if status == JobStatus.QUEUED and not queues.waits_in_queue(queue, job):
        # A worker moved it from the queue to RQ's intermediate queue and was killed before it
        # started it: RQ would only fail it after a minute or more, and until then it says queued.
        queue.intermediate_queue.remove(job.id)
        queue.enqueue_job(job)
        return "a worker took it from the queue and stopped before starting it"
    if status in (JobStatus.QUEUED, JobStatus.DEFERRED):
        return None  # waiting for a free worker
    if status == JobStatus.SCHEDULED:
        # RQ's scheduler runs inside one worker; when that worker dies, no other takes over for
        # minutes. The row knows the run is due: put it in the queue directly.
        ScheduledJobRegistry(queue=queue).remove(job)
        queue.enqueue_job(job)
        return "RQ's scheduler did not deliver it on time"
    dispatch(run)
    if status == JobStatus.STARTED:
        return "RQ started it but no worker claimed it"
    return "RQ did not have it (Redis lost it or was down when it was scheduled)"


# --- what a worker does with a run --------------------------------------------------------------------


def claim(run_id):
    """Queued → running for this worker, or None when another worker has it (or it has ended)."""
    now = timezone.now()
    claimed = StepRun.objects.filter(pk=run_id, status=RunStatus.QUEUED)
    if not claimed.update(
        status=RunStatus.RUNNING, worker=worker_name(), started_at=now, lease_expires_at=now + lease()
    ):
        logger.info("Step run %s is not queued any more; nothing to do", run_id)
        return None
    return StepRun.objects.get(pk=run_id)


def finish(run, status, error=""):
    """End a run this worker holds. False when it is no longer held (a transition ended it already)."""
    return bool(
        StepRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING, worker=run.worker).update(
            status=status, finished_at=timezone.now(), lease_expires_at=None, error=error[:2000]
        )
    )


def note_trouble(promotion_id, step, text):
    """Say on the promotion's run of `step` that this worker is running what holds it up now (Argo CD out
    of reach while the sync waits for it), or "" once it no longer does: the promotion page lists it
    with the runs that went wrong. The run's end writes its own outcome over it. Best effort: the
    database out of reach costs only the note."""
    try:
        StepRun.objects.filter(
            promotion_id=promotion_id, step=step, status=RunStatus.RUNNING, worker=worker_name()
        ).exclude(error=text).update(error=text[:2000])
    except DatabaseError as error:
        logger.warning("Could not note on the %s step of promotion %s that %s: %s", step, promotion_id, text, error)


def note_interruption(run, error):
    """The database is out of reach: say why in Redis, so the reconciler counts it as transient."""
    try:
        queues.redis_connection().set(INTERRUPTED_KEY.format(run.pk), str(error)[:500], ex=86400)
    except RedisError:
        logger.warning("Could not note in Redis why %s stopped", run)


def interruption(run):
    try:
        text = queues.redis_connection().get(INTERRUPTED_KEY.format(run.pk))
    except RedisError:
        return None
    return text.decode() if text else None


class Lease:
    """Renews the run's lease from a thread while the step works; a context manager."""

    def __init__(self, run):
        self.run = run
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._renew, name=f"lease-{run.pk}", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join()

    def _renew(self):
        every = max(settings.PIPELINE_LEASE_SECONDS / 3, 0.5)
        try:
            while not self.stopped.wait(every):
                try:
                    held = StepRun.objects.filter(
                        pk=self.run.pk, status=RunStatus.RUNNING, worker=self.run.worker
                    ).update(lease_expires_at=timezone.now() + lease())
                except DatabaseError as error:
                    logger.warning("Could not renew the lease of %s: %s", self.run, error)
                    connection.close()
                    continue
                if not held:
                    return  # ended by a transition, or taken over after the lease ran out
        finally:
            connection.close()  # this thread's own connection


# --- what holds a step up, for the promotion's page ------------------------------------------------------


@dataclass
class HeldUp:
    """What the promotion page says of the step a promotion is at: its last try, when that went wrong
    (crashed, or a transient error) and it is tried again, and why it is late, in words."""

    last_try: StepRun | None = None
    why: list = field(default_factory=list)


def held_up(promotion, runs, now):
    """What holds up the step `promotion` is at, from its `runs` (oldest first, as the page loads them).

    Late is OVERDUE_AFTER past its time, as for the reconciler: a queued run no worker took (all of
    them killed, or RQ's scheduler gone with its worker and no reconciler), a running run whose worker
    stopped renewing its lease, and a soak past its verdict's time (its last round runs at
    `verdict_at`). A running run may also say what it waits for (Argo CD out of reach).
    """
    current = next((run for run in reversed(runs) if run.status in RunStatus.open()), None)
    if current is None or not promotion.is_active:
        return HeldUp()
    held = HeldUp()
    tried = [
        run
        for run in runs
        if run.step == current.step and run.status not in RunStatus.open() and run.started_at is not None
    ]
    if tried and tried[-1].status in (RunStatus.CRASHED, RunStatus.RETRY):
        held.last_try = tried[-1]
    late = now - OVERDUE_AFTER
    overdue = verdict_overdue(promotion.verdict_at, now) if promotion.state == PromotionState.VERIFYING else ""
    if overdue:
        held.why.append(overdue)
    if current.status == RunStatus.QUEUED and current.run_after < late:
        held.why.append(f"no worker has taken this step since {_said(current.run_after, now)}")
    if current.status == RunStatus.RUNNING and current.lease_expires_at and current.lease_expires_at < now:
        renewed = current.lease_expires_at - lease()
        held.why.append(
            f"no worker has worked on this step since {_said(renewed, now)} "
            f"({current.worker} stopped renewing its lease)"
        )
    elif current.status == RunStatus.RUNNING and current.error:
        held.why.append(current.error)  # what the step itself said it waits for (jobs.sync_promotion)
    return held


def verdict_overdue(verdict_at, now):
    """The words the promotion page and the board say of a soak OVERDUE_AFTER past its verdict's time (its
    last round): "verdict overdue since …"; "" before then."""
    if verdict_at is None or verdict_at >= now - OVERDUE_AFTER:
        return ""
    return f"verdict overdue since {_said(verdict_at, now)}"


def _said(moment, now):
    """A moment as a sentence of the page says it: the time today, the date too before."""
    local = timezone.localtime(moment)
    return f"{local:%H:%M:%S}" if local.date() == timezone.localtime(now).date() else f"{local:%Y-%m-%d %H:%M}"


# What stopped a step's run, in a few words for a board cell, by the type of the error as the run
# records it (jobs._last_line: "GitOpsUnavailable: Cannot reach …"); the promotion's page has it whole.
TROUBLE_WORDS = {
    "GitOpsUnavailable": "GitOps unavailable",
    "RegistryUnavailable": "registry unavailable",
    "GitHubUnavailable": "waiting for GitHub",
    "OperationalError": "database unavailable",
    "InterfaceError": "database unavailable",
    "interrupted": "database unavailable",  # ended by the reconciler for a worker that lost it (jobs.end_abandoned)
    "ConnectionError": "Redis unavailable",
    "TimeoutError": "Redis unavailable",
    "RedisError": "Redis unavailable",
}


def trouble_in_words(status, error):
    """Why a run ended as `retry` or `crashed`, shortly: "GitOps unreachable", "crashed"."""
    if status == RunStatus.CRASHED:
        return "its worker stopped" if error.startswith("its worker ") else "crashed"
    kind = error.partition(":")[0]
    if kind == "GitOpsUnavailable" and "Cannot reach" in error:
        return "GitOps unreachable"
    return TROUBLE_WORDS.get(kind, "unavailable")


def consecutive(promotion_id, step, status):
    """How many of the step's latest runs, newest first, ended with `status` in a row.

    A run that ended without starting (replaced before its time: a freeze edit wakes every commit
    waiting there, a crash's backoff too) is no outcome and neither counts nor breaks the row."""
    count = 0
    for ended in StepRun.objects.filter(promotion_id=promotion_id, step=step).order_by("-created_at", "-id"):
        if ended.status in RunStatus.open() or (ended.status == RunStatus.DONE and ended.started_at is None):
            continue
        if ended.status != status:
            break
        count += 1
    return count
