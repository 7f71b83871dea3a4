"""The process's Redis client for the job queue and the GitOps lock.

django-rq's `get_connection()` builds a new client, so a new TCP connection with its HELLO and
CLIENT SETINFO round trips (~1.7 ms here), on every call: once when a transition enqueues the
next job and once when the commit job takes the GitOps lock, both on the path from the last
approval to the push. redis-py's clients are thread-safe and reopen their connections after a
fork, so one client per process is enough; it is keyed on the queue's settings so a changed
setting (as tests do) gets a client of its own.
"""

from datetime import timedelta
from functools import lru_cache

import django_rq
from django.conf import settings
from django.utils import timezone


@lru_cache(maxsize=8)
def _client(name, config):
    return django_rq.get_connection(name)


def redis_connection(name="default"):
    return _client(name, repr(settings.RQ_QUEUES[name]))


def get_queue(name="default"):
    return django_rq.get_queue(name, connection=redis_connection(name))


def hand_over(function, argument, *, job_id, at):
    """Give RQ the job `job_id`, `function(argument)`, to run at `at` (at once when that has passed).

    For work whose row in the database says it is owed (a step run, a notice), so that a job RQ
    lost can be handed over again under the same id. Raises RedisError when Redis is out of reach.
    """
    queue = get_queue()
    if at > timezone.now():
        queue.enqueue_at(_whole_second_from(at), function, argument, job_id=job_id)
    else:
        queue.enqueue(function, argument, job_id=job_id)


def _whole_second_from(at):
    """`at`, rounded up to a whole second. RQ keeps a scheduled job's time in whole seconds, rounded
    down, and delivers it once the clock reaches that second: up to a second before `at`, where a
    soak's round would fall in the slot of the round before (releases/verification.py drops it) and
    a commit held by a freeze would find it not over yet."""
    return at if at.microsecond == 0 else at.replace(microsecond=0) + timedelta(seconds=1)


def waits_in_queue(queue, job):
    """Whether `job` is in its queue's list, for a worker to take (not only said to be queued)."""
    return queue.connection.lpos(queue.key, job.id) is not None
