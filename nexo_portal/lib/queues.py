"""The process's Redis client for the job queue and the GitOps lock.

django-rq's `get_connection()` builds a new client, so a new TCP connection with its HELLO and
CLIENT SETINFO round trips (~1.7 ms here), on every call: once when a transition enqueues the
next job and once when the commit job takes the GitOps lock, both on the path from the last
approval to the push. redis-py's clients are thread-safe and reopen their connections after a
fork, so one client per process is enough; it is keyed on the queue's settings so a changed
setting (as tests do) gets a client of its own.
"""

from functools import lru_cache

import django_rq
from django.conf import settings


@lru_cache(maxsize=8)
def _client(name, config):
    return django_rq.get_connection(name)


def redis_connection(name="default"):
    return _client(name, repr(settings.RQ_QUEUES[name]))


def get_queue(name="default"):
    return django_rq.get_queue(name, connection=redis_connection(name))
