"""The RQ worker the portal runs (settings.RQ["WORKER_CLASS"], so `manage.py rqworker` uses it)."""

import gc

from django.db import close_old_connections
from rq.worker import SimpleWorker

_frozen = False


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


class PortalWorker(SimpleWorker):
    """Runs each job in the worker's own process instead of a freshly forked one.

    Forking a work horse and opening a new database connection for every job costs about
    40 ms per pipeline step, more than the GitOps commit itself (bench/bench_promotion.py).
    The jobs are short and idempotent — the soak is a series of scheduled samples, not one
    long job — so nothing gains from a process per job. Database connections are checked
    around every job, as Django does around every request.
    """

    def work(self, *args, **kwargs):
        freeze_start_up_objects()
        return super().work(*args, **kwargs)

    def execute_job(self, job, queue):
        close_old_connections()
        try:
            super().execute_job(job, queue)
        finally:
            close_old_connections()
