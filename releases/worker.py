"""The RQ worker the portal runs (settings.RQ["WORKER_CLASS"], so `manage.py rqworker` uses it)."""

from django.db import close_old_connections
from rq.worker import SimpleWorker


class PortalWorker(SimpleWorker):
    """Runs each job in the worker's own process instead of a freshly forked one.

    Forking a work horse and opening a new database connection for every job costs about
    40 ms per pipeline step, more than the GitOps commit itself (bench/bench_promotion.py).
    The jobs are short and idempotent — the soak is a series of scheduled samples, not one
    long job — so nothing gains from a process per job. Database connections are checked
    around every job, as Django does around every request.
    """

    def execute_job(self, job, queue):
        close_old_connections()
        try:
            super().execute_job(job, queue)
        finally:
            close_old_connections()
