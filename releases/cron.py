"""Periodic jobs, run by `manage.py rqcron releases.cron` (RQ's cron scheduler)."""

from rq import cron

from releases.reconciler import reconcile

cron.register(reconcile, queue_name="default", interval=60)
