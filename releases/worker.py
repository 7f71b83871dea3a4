"""The RQ worker the portal runs (settings.RQ["WORKER_CLASS"], so `manage.py rqworker` uses it), and
how many of them are alive."""

import contextlib
import ctypes
import gc
import logging
import os
import signal
import sys
import threading
import time

from django.db import close_old_connections
from redis.exceptions import RedisError
from rq.job import JobStatus
from rq.worker import SimpleWorker

from nexo_portal.lib import context, metrics, queues, tracing

logger = logging.getLogger(__name__)

# Each worker says it is alive every ALIVE_EVERY seconds (its name in a sorted set, scored by the time
# it said so), and counts as alive for ALIVE_SECONDS after. RQ's own registry keeps a SIGKILLed worker
# listed until its key expires: up to 8 min later when it was idle, an hour (the job timeout) when it
# was running a job, which is when it matters.
ALIVE_KEY = "nexo:workers-alive"
ALIVE_EVERY = 10
ALIVE_SECONDS = 30

_frozen = False
_children_stop_with_it = False
# prctl(2): the signal the kernel sends this process when its parent dies.
_PR_SET_PDEATHSIG = 1


def freeze_start_up_objects():
    """Keep what lives as long as the process out of the collector's full collections, once.

    As in nexo_portal/wsgi.py: a full collection walks every tracked object, ~140,000 once
    Django is loaded, and stalls whatever job is running by tens of milliseconds.
    """
    global _frozen
    if not _frozen:
        gc.collect()
        gc.freeze()
        _frozen = True


def stop_children_with_this_process():
    """Have every child this process forks from now on sent SIGTERM when this process dies, once.

    RQ's scheduler runs in a child process of the worker that holds its lock. A worker SIGKILLed
    (the OOM killer, `kill -9`) cannot stop it, and the child went on alone, holding the
    scheduler's lock with the code it was started with, until someone killed it by hand. With
    Linux's parent-death signal the kernel sends it SIGTERM instead, on which RQ's scheduler
    releases its lock and exits, and a surviving worker takes the scheduling over (MAINTENANCE_SECONDS).
    Subprocesses (git) are exec'd without running Python and are not affected. The kernel ties the
    signal to the thread that forked, so this holds for forks from the worker's main thread, where
    RQ starts its scheduler (at start-up and in its maintenance).
    """
    global _children_stop_with_it
    if _children_stop_with_it or not sys.platform.startswith("linux"):
        return
    worker = os.getpid()
    libc = ctypes.CDLL(None, use_errno=True)
    forking = None  # the pid that is forking, noted before it does: children inherit the hooks

    def note_who_forks():
        nonlocal forking
        forking = os.getpid()

    def stop_with_parent():
        if forking != worker:
            return  # a grandchild: its parent is not the worker
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != worker:  # the worker died while it was forking this process
            os.kill(os.getpid(), signal.SIGTERM)

    os.register_at_fork(before=note_who_forks, after_in_child=stop_with_parent)
    _children_stop_with_it = True


def say_alive(connection, name, at=None):
    """Note that the worker `name` is alive at `at` (now), and forget those silent for a day."""
    at = time.time() if at is None else at
    pipeline = connection.pipeline()
    pipeline.zadd(ALIVE_KEY, {name: at})
    pipeline.zremrangebyscore(ALIVE_KEY, "-inf", at - 86400)
    pipeline.execute()


def live_workers(connection=None):
    """How many workers said they were alive in the last ALIVE_SECONDS. Raises RedisError."""
    connection = connection or queues.redis_connection()
    return connection.zcount(ALIVE_KEY, time.time() - ALIVE_SECONDS, "+inf")


class _Alive(threading.Thread):
    """Says the worker is alive from a thread of its own, whatever its job does, until it stops."""

    def __init__(self, connection, name):
        super().__init__(name="worker-alive", daemon=True)
        self.connection, self.worker = connection, name
        self.stopped = threading.Event()

    def run(self):
        while True:
            # Redis away: the worker says it lost Redis, and counts again once Redis is back.
            with contextlib.suppress(RedisError):
                say_alive(self.connection, self.worker)
            if self.stopped.wait(ALIVE_EVERY):
                return

    def stop(self):
        self.stopped.set()
        self.join(timeout=ALIVE_EVERY)  # not forever behind a Redis that does not answer
        try:
            self.connection.zrem(ALIVE_KEY, self.worker)
        except RedisError as error:
            logger.warning(
                "Worker %s could not say it stopped (%s); it stops counting in %s s", self.worker, error, ALIVE_SECONDS
            )


class PortalWorker(SimpleWorker):
    """Runs each job in the worker's own process instead of a freshly forked one, and outlives Redis.

    Forking a work horse and opening a new database connection for every job costs about
    40 ms per pipeline step, more than the GitOps commit itself (bench/bench_promotion.py).
    The jobs are short and idempotent — the soak is a series of scheduled samples, not one
    long job — so nothing gains from a process per job. Database connections are checked
    around every job, as Django does around every request.

    RQ's worker quits when Redis goes away in the middle of its loop; this one waits for Redis to
    answer again (backing off up to a minute) and goes back to work. It also looks for RQ's
    scheduler every MAINTENANCE_SECONDS rather than every ten minutes, so that when the worker
    running it dies another takes over as soon as its lock expires. From a thread of its own it says
    it is alive while it works (`live_workers`: /metrics' nexo_workers, /healthz).
    """

    MAINTENANCE_SECONDS = 30

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("maintenance_interval", self.MAINTENANCE_SECONDS)
        super().__init__(*args, **kwargs)

    def work(self, *args, **kwargs):
        freeze_start_up_objects()
        burst = kwargs.get("burst", args[0] if args else False)
        if not burst:  # a burst starts no scheduler process (and tests run bursts in their own process)
            stop_children_with_this_process()
        alive = _Alive(self.connection, self.name)
        alive.start()
        try:
            return self._work_through_redis_outages(args, kwargs, burst)
        finally:
            alive.stop()

    def _work_through_redis_outages(self, args, kwargs, burst):
        wait = 1.0
        while True:
            try:
                worked = super().work(*args, **kwargs)
            except RedisError as error:
                self.log.error("Worker %s: lost Redis (%s)", self.name, error)
                worked = None
            stopping = self._stop_requested or self._shutdown_requested_date
            if burst or stopping or kwargs.get("max_jobs") or kwargs.get("max_idle_time"):
                return worked
            wait = self._wait_for_redis(wait)

    def _wait_for_redis(self, wait):
        while True:
            self.log.warning("Worker %s: waiting %.0f s for Redis before going back to work", self.name, wait)
            time.sleep(wait)
            wait = min(wait * 2, 60.0)
            try:
                self.connection.ping()
                self.register_death()  # what the lost loop could not say, so the name is free again
            except RedisError:
                continue
            return 1.0

    def execute_job(self, job, queue):
        close_old_connections()
        try:
            # Every log line and span of the job carries its id; the job's own code adds the promotion.
            with context.bound(fresh=True, job_id=job.id), tracing.span(f"job {job.func_name}", kind="consumer"):
                super().execute_job(job, queue)
        finally:
            close_old_connections()
        # A job that failed and waits for RQ to retry it counts as failed too.
        outcome = "finished" if job.get_status(refresh=False) == JobStatus.FINISHED else "failed"
        metrics.JOBS.labels(function=job.func_name, outcome=outcome).inc()
