"""One Redis client per process for the queue and the GitOps lock, following the settings."""

from datetime import timedelta

from django.utils import timezone
from rq.job import Job
from rq.registry import ScheduledJobRegistry

from nexo_portal.lib import queues


def test_the_queue_and_the_lock_share_one_client_and_its_connection(redis_connection):
    first, second = queues.get_queue(), queues.get_queue()
    assert first.connection is second.connection is queues.redis_connection()
    assert first.connection.client_id() == second.connection.client_id(), "one TCP connection, reused"


def test_a_changed_queue_setting_gets_a_client_of_its_own(settings, redis_connection):
    before = queues.redis_connection()
    settings.RQ_QUEUES = {"default": {"URL": "redis://127.0.0.1:1/0"}}
    after = queues.redis_connection()
    assert after is not before
    assert after.connection_pool.connection_kwargs["port"] == 1


def test_a_job_handed_over_for_later_is_not_delivered_before_its_time(redis_connection):
    queue = queues.get_queue()
    at = (timezone.now() + timedelta(minutes=5)).replace(microsecond=700_000)
    queues.hand_over("releases.jobs.run_step", 1, job_id="step-run-1", at=at)

    job = Job.fetch("step-run-1", connection=queue.connection)
    registry = ScheduledJobRegistry(queue=queue)
    # RQ's scheduler delivers what is due by its clock in whole seconds: a score before `at` is an early start.
    assert registry.get_jobs_to_schedule(int(at.timestamp())) == []
    assert registry.get_scheduled_time(job) >= at
    assert registry.get_scheduled_time(job) - at < timedelta(seconds=1)
