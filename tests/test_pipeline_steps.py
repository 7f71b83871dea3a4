"""Pipeline steps as rows: leased by a worker, delivered again when RQ loses them, retried on a
transient error, given up after repeated crashes — whatever RQ's registries say."""

from datetime import timedelta

import django_rq
from django.db import OperationalError
from django.utils import timezone
from rq.registry import ScheduledJobRegistry

from nexo_portal.lib.errors import Unavailable
from releases import jobs, steps, transitions
from releases.models import Promotion, PromotionState, RunStatus, Step, StepRun
from releases.reconciler import recover_steps
from tests.factories import make_release


def develop_promotion(pipeline, version="2026.02.1"):
    pipeline.environments["qa"].auto_promote = False
    pipeline.environments["qa"].save()
    service = pipeline.add_service("nexo-be")
    return transitions.request_promotion(make_release(service, version), pipeline.environments["develop"], None)


def state_of(promotion):
    promotion.refresh_from_db()
    return promotion.state


def runs_of(promotion):
    return list(StepRun.objects.filter(promotion=promotion).order_by("created_at", "id").values_list("step", "status"))


def open_run(promotion):
    return StepRun.objects.open().get(promotion=promotion)


def later(**delta):
    return timezone.now() + timedelta(**delta)


def run_due_steps_now():
    """Run every queued step at once, as a worker would when its time comes (backoffs skipped)."""
    for run in StepRun.objects.filter(status=RunStatus.QUEUED):
        StepRun.objects.filter(pk=run.pk).update(run_after=timezone.now())
        jobs.run_step(run.pk)


def test_a_transition_schedules_its_step_as_a_row_that_rq_delivers(pipeline):
    promotion = develop_promotion(pipeline)
    run = open_run(promotion)
    assert (run.step, run.status) == (Step.COMMIT, RunStatus.QUEUED)
    assert [job.id for job in django_rq.get_queue("default").jobs] == [run.rq_job_id]
    pipeline.run_jobs()
    assert state_of(promotion) == PromotionState.VERIFIED
    assert runs_of(promotion) == [("commit", "done"), ("sync", "done"), ("verify", "done")]
    assert not StepRun.objects.open().exists()


def test_only_one_worker_claims_a_run(pipeline):
    run = open_run(develop_promotion(pipeline))
    assert steps.claim(run.pk) is not None
    assert steps.claim(run.pk) is None  # a duplicate delivery finds it running


def test_a_run_rq_lost_is_delivered_again_by_the_reconciler(pipeline):
    promotion = develop_promotion(pipeline)
    pipeline.redis.flushdb()  # Redis restarted empty: the job is gone, the row is not
    assert recover_steps() == []  # not overdue yet
    assert recover_steps(now=later(minutes=1)) == [promotion.pk]
    assert recover_steps(now=later(minutes=1)) == []  # RQ holds it now: not delivered twice
    pipeline.run_jobs()
    assert state_of(promotion) == PromotionState.VERIFIED


def test_a_run_taken_by_a_worker_killed_before_it_started_is_delivered_again(pipeline):
    """RQ moves a job to its intermediate queue as a worker takes it; SIGKILLed before the worker marks it
    started, the job still says "queued" although no queue holds it."""
    promotion = develop_promotion(pipeline)
    queue = django_rq.get_queue("default")
    run = open_run(promotion)
    assert pipeline.redis.lmove(queue.key, queue.intermediate_queue_key) == run.rq_job_id.encode()
    assert recover_steps(now=later(minutes=1)) == [promotion.pk]
    assert [job.id for job in queue.jobs] == [run.rq_job_id]
    assert recover_steps(now=later(minutes=1)) == []  # in the queue now: not delivered twice
    pipeline.run_jobs()
    assert state_of(promotion) == PromotionState.VERIFIED


def test_redis_down_when_the_transition_commits_leaves_the_run_for_the_reconciler(pipeline, settings):
    working = settings.RQ_QUEUES
    settings.RQ_QUEUES = {"default": {"URL": "redis://127.0.0.1:1/0"}}
    promotion = develop_promotion(pipeline)
    settings.RQ_QUEUES = working
    assert state_of(promotion) == PromotionState.APPROVED
    assert open_run(promotion).status == RunStatus.QUEUED
    assert recover_steps(now=later(minutes=1)) == [promotion.pk]
    pipeline.run_jobs()
    assert state_of(promotion) == PromotionState.VERIFIED


def test_with_redis_down_the_reconciler_still_does_what_needs_only_the_database(pipeline, settings):
    """Which runs RQ holds cannot be asked while Redis is away; a promotion mid-way with no run at
    all is scheduled all the same, and the runs RQ lost are handed over once it is back."""
    lost = develop_promotion(pipeline)
    stalled = transitions.request_promotion(
        make_release(pipeline.add_service("nexo-fe"), "2026.02.1"), pipeline.environments["develop"], None
    )
    steps.close(stalled.pk)  # mid-way with no run: rows from before runs existed, or a bug
    pipeline.redis.flushdb()  # Redis restarted empty, then went away
    working = settings.RQ_QUEUES
    settings.RQ_QUEUES = {"default": {"URL": "redis://127.0.0.1:1/0"}}
    assert recover_steps(now=later(minutes=3)) == [stalled.pk]
    assert open_run(stalled).status == RunStatus.QUEUED
    settings.RQ_QUEUES = working
    assert sorted(recover_steps(now=later(minutes=3))) == [lost.pk, stalled.pk]
    pipeline.run_jobs()
    assert (state_of(lost), state_of(stalled)) == (PromotionState.VERIFIED, PromotionState.VERIFIED)


def test_a_killed_workers_step_is_resumed_once_its_lease_expires(pipeline):
    promotion = develop_promotion(pipeline)
    run = steps.claim(open_run(promotion).pk)  # a worker took it, then was SIGKILLed
    pipeline.redis.flushdb()
    assert recover_steps() == []  # its lease still runs: it may be slow, not dead
    assert recover_steps(now=later(seconds=31)) == [promotion.pk]
    run.refresh_from_db()
    assert run.status == RunStatus.CRASHED
    assert f"its worker {run.worker} stopped renewing its lease" in run.error
    pipeline.run_jobs()
    assert state_of(promotion) == PromotionState.VERIFIED


def test_a_worker_renews_its_lease_while_its_step_works(pipeline, settings, monkeypatch):
    settings.PIPELINE_LEASE_SECONDS = 1.5
    promotion = develop_promotion(pipeline)
    seen = []

    def slow_commit(promotion_id):
        import time

        first = StepRun.objects.get(promotion_id=promotion_id, status=RunStatus.RUNNING).lease_expires_at
        time.sleep(2.5)  # longer than the lease: only renewals keep it
        seen.append((first, StepRun.objects.get(promotion_id=promotion_id, status=RunStatus.RUNNING).lease_expires_at))

    monkeypatch.setitem(jobs.STEPS, Step.COMMIT, slow_commit)
    jobs.run_step(open_run(promotion).pk)
    [(first, last)] = seen
    assert last > first + timedelta(seconds=1)


def test_a_transient_error_is_retried_after_a_backoff_not_a_crash(pipeline, monkeypatch):
    promotion = develop_promotion(pipeline)
    commit = jobs.STEPS[Step.COMMIT]
    failures = iter([Unavailable("git@example: connection refused"), OperationalError("server closed the connection")])

    def flaky(promotion_id):
        error = next(failures, None)
        if error:
            raise error
        commit(promotion_id)

    monkeypatch.setitem(jobs.STEPS, Step.COMMIT, flaky)
    jobs.run_step(open_run(promotion).pk)
    retry = open_run(promotion)
    assert retry.run_after > timezone.now() + timedelta(seconds=3)  # backed off
    assert retry.troubled_since is not None
    run_due_steps_now()
    run_due_steps_now()
    assert runs_of(promotion)[:3] == [("commit", "retry"), ("commit", "retry"), ("commit", "done")]
    assert StepRun.objects.filter(status=RunStatus.RETRY).first().error == (
        "Unavailable: git@example: connection refused"
    )
    pipeline.run_jobs()
    assert state_of(promotion) == PromotionState.VERIFIED


def test_a_step_failing_transiently_for_longer_than_the_budget_fails_its_promotion(pipeline, settings, monkeypatch):
    settings.PIPELINE_RETRY_SECONDS = 60
    promotion = develop_promotion(pipeline)

    def unreachable(promotion_id):
        raise Unavailable("Cannot reach the GitOps remote: connection refused")

    monkeypatch.setitem(jobs.STEPS, Step.COMMIT, unreachable)
    jobs.run_step(open_run(promotion).pk)
    StepRun.objects.update(troubled_since=timezone.now() - timedelta(minutes=2))
    run_due_steps_now()
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.FAILED
    assert promotion.failed_step == "commit"
    assert promotion.error == (
        "Still failing after 2 min of retries: Cannot reach the GitOps remote: connection refused"
    )
    assert not StepRun.objects.open().exists()


def test_a_step_that_crashes_three_times_in_a_row_fails_its_promotion(pipeline, monkeypatch):
    promotion = develop_promotion(pipeline)

    def broken(promotion_id):
        int("not a number")

    monkeypatch.setitem(jobs.STEPS, Step.COMMIT, broken)
    jobs.run_step(open_run(promotion).pk)
    assert state_of(promotion) == PromotionState.APPROVED  # one crash: tried again
    run_due_steps_now()
    run_due_steps_now()
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.FAILED
    assert promotion.error.startswith(
        "The commit step crashed 3 times in a row; the last time: ValueError: invalid literal for int()"
    )
    assert runs_of(promotion) == [("commit", "crashed")] * 3


def test_a_freeze_edit_waking_a_commit_in_its_crash_backoff_does_not_reset_its_crashes(pipeline, monkeypatch):
    """A crash's backoff is woken by any freeze edit in the environment (it looks like a commit waiting
    for a freeze): the run it replaces never ran, and must not count as a success between crashes."""
    promotion = develop_promotion(pipeline)

    def broken(promotion_id):
        int("not a number")

    monkeypatch.setitem(jobs.STEPS, Step.COMMIT, broken)
    develop = pipeline.environments["develop"].pk
    for _ in range(3):
        steps.wake_commits_held_by_freezes(develop)  # someone edits a freeze during each backoff
        run_due_steps_now()
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.FAILED
    assert promotion.error.startswith("The commit step crashed 3 times in a row")


def test_crashes_of_an_earlier_attempt_series_do_not_count_after_a_success(pipeline, monkeypatch):
    """The budget counts crashes in a row of this promotion's step, not whatever RQ still keeps."""
    promotion = develop_promotion(pipeline)
    run = open_run(promotion)
    StepRun.objects.filter(pk=run.pk).update(status=RunStatus.CRASHED)
    StepRun.objects.create(promotion=promotion, step=Step.COMMIT, status=RunStatus.RETRY)
    StepRun.objects.create(promotion=promotion, step=Step.COMMIT, status=RunStatus.CRASHED)
    StepRun.objects.create(promotion=promotion, step=Step.COMMIT, status=RunStatus.CRASHED)
    assert steps.consecutive(promotion.pk, Step.COMMIT, RunStatus.CRASHED) == 2
    assert jobs.resume(promotion.pk) is not None  # the third crash has not happened yet


def test_a_worker_that_lost_the_database_is_retried_not_counted_as_a_crash(pipeline):
    promotion = develop_promotion(pipeline)
    run = steps.claim(open_run(promotion).pk)
    steps.note_interruption(run, OperationalError("could not connect to server: Connection refused"))
    assert recover_steps(now=later(seconds=31)) == [promotion.pk]
    run.refresh_from_db()
    assert run.status == RunStatus.RETRY
    assert run.error == "interrupted: could not connect to server: Connection refused"
    assert open_run(promotion).troubled_since == run.started_at


def test_a_sample_rqs_lost_scheduler_did_not_deliver_is_delivered_by_the_reconciler(pipeline, settings):
    environment = pipeline.environments["develop"]
    environment.verification_window = timedelta(minutes=5)
    environment.sample_interval_seconds = 30
    environment.save()
    promotion = develop_promotion(pipeline)
    queue = django_rq.get_queue("default")
    from releases.worker import PortalWorker

    PortalWorker([queue], connection=queue.connection).work(burst=True)  # commit, sync, first sample
    assert state_of(promotion) == PromotionState.VERIFYING
    sample = open_run(promotion)
    assert sample.rq_job_id in ScheduledJobRegistry(queue=queue).get_job_ids()
    # The worker running RQ's scheduler died: nobody moves the sample to the queue when it is due.
    StepRun.objects.filter(pk=sample.pk).update(run_after=timezone.now() - timedelta(minutes=1))
    assert recover_steps() == [promotion.pk]
    assert sample.rq_job_id not in ScheduledJobRegistry(queue=queue).get_job_ids()
    assert [job.id for job in queue.jobs] == [sample.rq_job_id]


def test_a_promotion_mid_way_with_no_run_at_all_gets_one(pipeline):
    promotion = develop_promotion(pipeline)
    StepRun.objects.all().delete()  # as rows from before step runs existed
    pipeline.redis.flushdb()
    assert recover_steps() == []  # too recent to call it stalled
    Promotion.objects.filter(pk=promotion.pk).update(updated_at=timezone.now() - timedelta(minutes=10))
    assert recover_steps() == [promotion.pk]
    pipeline.run_jobs()
    assert state_of(promotion) == PromotionState.VERIFIED


def test_a_cancelled_promotion_ends_its_queued_run(pipeline, django_user_model):
    promotion = develop_promotion(pipeline)
    transitions.cancel(promotion, django_user_model.objects.create_superuser("root", "root@nexo.invalid", "pw"))
    assert runs_of(promotion) == [("commit", "done")]
    pipeline.run_jobs()
    assert state_of(promotion) == PromotionState.CANCELLED


def test_a_freeze_changed_wakes_the_commits_waiting_for_a_freeze_but_not_a_retry_in_its_backoff(pipeline):
    held = develop_promotion(pipeline)
    retrying = transitions.request_promotion(
        make_release(pipeline.add_service("nexo-fe"), "2026.02.1"), pipeline.environments["develop"], None
    )
    open_run(held).delete()
    open_run(retrying).delete()
    waiting = steps.schedule(held, Step.COMMIT, at=later(hours=2))  # as _waits_for_freeze left it
    backoff = steps.schedule(retrying, Step.COMMIT, delay=timedelta(seconds=40), troubled_since=later(minutes=-3))

    steps.wake_commits_held_by_freezes(pipeline.environments["develop"].pk)

    woken = open_run(held)
    assert woken.pk != waiting.pk
    assert woken.run_after <= timezone.now()
    assert open_run(retrying) == backoff  # untouched: its backoff and its retry clock are its own
    assert open_run(retrying).troubled_since == backoff.troubled_since


# --- what the promotion page says of a step no worker carries on ----------------------------------------


def test_a_soak_no_worker_carried_on_says_on_its_page_that_its_verdict_is_overdue(environments, viewer, client):
    """Its worker was SIGKILLed during the soak and none runs: the window ended 50 s ago, the last
    round was due 55 s ago. The page says so, not only "20 s of 20 s, 0 s left"."""
    from tests.factories import make_service
    from tests.history import ran

    now = timezone.now()
    soaking = ran(
        make_release(make_service("nexo-be", team="backend-team"), "2026.02.1"),
        environments["develop"],
        state=PromotionState.VERIFYING,
        at=now - timedelta(seconds=75),
        verification_started_at=now - timedelta(seconds=70),
        verdict_at=now - timedelta(seconds=50),
    )
    round_due = steps.schedule(soaking, Step.VERIFY, at=now - timedelta(seconds=55))
    client.force_login(viewer)

    page = client.get(soaking.get_absolute_url()).content.decode()

    overdue = f"{timezone.localtime(soaking.verdict_at):%H:%M:%S}"
    untaken = f"{timezone.localtime(round_due.run_after):%H:%M:%S}"
    assert f"verdict overdue since {overdue}; no worker has taken this step since {untaken}" in page
    assert "data-held-up" in page.split('<div class="columns">')[0], "the header says it too"


def test_a_soak_on_time_says_nothing_is_late(environments, viewer, client):
    from tests.factories import make_service
    from tests.history import ran

    now = timezone.now()
    soaking = ran(
        make_release(make_service("nexo-be", team="backend-team"), "2026.02.1"),
        environments["develop"],
        state=PromotionState.VERIFYING,
        at=now - timedelta(seconds=15),
        verification_started_at=now - timedelta(seconds=10),
        verdict_at=now + timedelta(seconds=10),
    )
    steps.schedule(soaking, Step.VERIFY, at=now + timedelta(seconds=5))
    client.force_login(viewer)

    page = client.get(soaking.get_absolute_url()).content.decode()

    assert "overdue" not in page
    assert "no worker" not in page
    assert "data-held-up" not in page


def test_a_commit_whose_worker_was_killed_says_in_its_header_what_its_runs_say(pipeline, viewer, client):
    """The reconciler ended the run of the killed worker as crashed and scheduled the next; no worker
    took it. The header does not say only "Committing" above a runs table saying "Crashed"."""
    promotion = transitions.start_commit(develop_promotion(pipeline))
    run = steps.claim(open_run(promotion).pk)  # a worker took it, then was SIGKILLed
    assert jobs.end_abandoned(run, now=later(seconds=31))
    StepRun.objects.filter(status=RunStatus.QUEUED).update(run_after=later(minutes=-1))
    client.force_login(viewer)

    page = client.get(promotion.get_absolute_url()).content.decode()

    header = page.split('<div class="columns">')[0]
    assert 'data-state="committing"' in header
    assert 'data-last-try="crashed"' in header
    assert "last try crashed" in header
    assert "data-held-up" in header
    assert "no worker has taken this step since" in page
