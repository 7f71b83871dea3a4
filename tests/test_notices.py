"""Alerts and notices as rows (releases/notices.py): owed in the transaction of the change they report,
sent once by a real RQ worker, handed to RQ again by the reconciler when Redis was away, given up
when Slack refuses them, tried again when it is busy. Against the Slack stand-ins."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone
from prometheus_client import REGISTRY
from rq.registry import ScheduledJobRegistry

from nexo_portal.lib import queues
from releases import jobs, notices, slack, transitions
from releases.models import Notice, NoticeKind, Promotion, PromotionState
from releases.reconciler import reconcile
from tests.factories import make_release, make_service
from tests.test_api import verified_through

pytestmark = pytest.mark.django_db(transaction=True)


def later(**delta):
    return timezone.now() + timedelta(**delta)


def given_up(kind, reason):
    return REGISTRY.get_sample_value("nexo_notices_given_up_total", {"kind": kind, "reason": reason}) or 0


@pytest.fixture
def syncing(pipeline):
    service = make_service("nexo-be", team="backend-team")
    return Promotion.objects.create(
        release=make_release(service, "2026.02.1"),
        environment=pipeline.environments["staging"],
        state=PromotionState.SYNCING,
        requested_at=timezone.now(),
    )


def fail(promotion):
    return transitions.fail(promotion, "sync", "Argo CD answered 500")


@pytest.fixture
def redis_down(settings):
    """Redis out of reach for whatever the test does inside `with redis_down():`."""
    working = settings.RQ_QUEUES

    class Down:
        def __enter__(self):
            settings.RQ_QUEUES = {"default": {"URL": "redis://127.0.0.1:1/0"}}

        def __exit__(self, *exc):
            settings.RQ_QUEUES = working

    return Down


# --- Redis away when the change commits ----------------------------------------------------------------


def test_an_alert_owed_while_redis_was_down_is_sent_once_it_is_back_and_the_reconciler_runs(
    syncing, pipeline, slack_server, redis_down
):
    with redis_down():
        fail(syncing)
    pipeline.run_jobs()
    assert slack_server.messages == [], "RQ never had it"
    [notice] = Notice.objects.owed()
    assert (notice.kind, notice.args) == (NoticeKind.FAILURE_ALERT, [syncing.pk])
    assert notices.redeliver_owed() == [], "not overdue yet"

    Notice.objects.update(next_attempt_at=later(seconds=-20))  # a round of the reconciler later
    assert reconcile()["notices"] == [notice.pk]
    assert notices.redeliver_owed() == [], "in the queue now: not handed over twice"
    pipeline.run_jobs()

    [message] = slack_server.messages
    assert message["text"].startswith(":red_circle: nexo-be 2026.02.1 → staging failed at sync: Argo CD answered 500")
    notice.refresh_from_db()
    assert notice.sent_at is not None
    assert notice.attempts == 1
    assert notices.redeliver_owed(now=later(hours=1)) == []


def test_the_reconciler_finishes_its_round_while_redis_is_down_with_a_notice_overdue(
    syncing, pipeline, slack_server, redis_down
):
    """Which owed notices RQ holds cannot be asked while Redis is away: the notices wait for a later
    round, and the rest of this one (drift, reminders, the audit chain's watch…) runs all the same."""
    with redis_down():
        fail(syncing)
        Notice.objects.update(next_attempt_at=later(seconds=-20))  # overdue
        round_ = reconcile()
    assert round_["notices"] == []
    assert round_["audit_chain"], "the round went on to its last task"
    assert reconcile()["notices"] == [Notice.objects.get().pk], "handed over once Redis is back"


def test_an_approval_request_owed_while_redis_was_down_is_posted_once_it_is_back(
    pipeline, slack_api, rita, sam, sara, lead, redis_down
):
    release = make_release(make_service("nexo-be", team="backend-team"), "2026.02.1")
    verified_through(release, "develop", "qa", "staging", environments=pipeline.environments)
    with redis_down():
        promotion = transitions.request_promotion(release, pipeline.environments["production"], rita)
    pipeline.run_jobs()
    assert slack_api.called("chat.postMessage") == []

    notices.redeliver_owed(now=later(seconds=20))
    pipeline.run_jobs()
    [posted] = slack_api.called("chat.postMessage")
    assert "nexo-be 2026.02.1 → production awaits approval (0/2)" in posted["text"]

    transitions.approve(promotion, sam, "")  # Redis is back: its update goes straight to RQ
    pipeline.run_jobs()
    [updated] = slack_api.called("chat.update")
    assert "awaits approval (1/2)" in updated["text"]
    assert not Notice.objects.owed().exists()


# --- what a transaction rolled back owes -----------------------------------------------------------------


def test_a_change_rolled_back_owes_and_sends_nothing(syncing, pipeline, slack_server):
    def fail_then_roll_back():
        with transaction.atomic():
            fail(syncing)
            raise RuntimeError("the caller's transaction fails after the transition")

    with pytest.raises(RuntimeError):
        fail_then_roll_back()
    syncing.refresh_from_db()
    assert syncing.state == PromotionState.SYNCING
    assert not Notice.objects.exists()
    assert notices.redeliver_owed(now=later(hours=1)) == []
    pipeline.run_jobs()
    assert slack_server.posted == 0


# --- sent once -------------------------------------------------------------------------------------------


def test_two_deliveries_of_one_notice_send_it_once(syncing, pipeline, slack_server):
    fail(syncing)
    [notice] = Notice.objects.all()

    def deliver():
        try:
            jobs.deliver_notice(notice.pk)
        finally:
            connection.close()  # this thread's own

    slack_server.hold()
    first, second = threading.Thread(target=deliver), threading.Thread(target=deliver)
    first.start()
    assert slack_server.arrived.wait(10), "the first delivery reached Slack"
    second.start()  # while the first holds the notice, waiting for Slack's answer
    second.join(10)
    slack_server.release()
    first.join(10)
    pipeline.run_jobs()  # and the job RQ got when the failure committed, late

    assert slack_server.posted == 1
    assert len(slack_server.messages) == 1
    notice.refresh_from_db()
    assert (notice.attempts, notice.sent_at is not None) == (1, True)


# --- refused, or tried again -----------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "code"), [(404, "channel_not_found"), (410, "channel_is_archived")])
def test_a_refusal_slack_will_never_accept_is_given_up_with_its_reason_and_not_tried_again(
    syncing, pipeline, slack_server, status, code
):
    slack_server.answer(status, code)
    before = given_up(NoticeKind.FAILURE_ALERT, "refused")
    fail(syncing)
    pipeline.run_jobs()

    notice = Notice.objects.get()
    assert notice.given_up_at is not None
    assert notice.sent_at is None
    assert notice.attempts == 1
    assert notice.last_error == f"Slack refused the alert for promotion {syncing.pk} with {status} {code}"
    assert given_up(NoticeKind.FAILURE_ALERT, "refused") == before + 1
    assert ScheduledJobRegistry(queue=queues.get_queue()).count == 0
    assert notices.redeliver_owed(now=later(hours=1)) == []
    pipeline.run_jobs()
    assert slack_server.posted == 1


def test_a_sender_that_slack_refuses_gives_its_notice_up_rather_than_leave_it_owed(redis_connection):
    """A sender may let slack.SlackRefused out (the approval request does): retrying will not change
    it, so the notice is given up with Slack's reason, not left owed for every reconciler round."""
    notice = notices.owe(NoticeKind.APPROVAL_REQUEST, 1)
    before = given_up(NoticeKind.APPROVAL_REQUEST, "refused")

    def refused(promotion_id):
        raise slack.SlackRefused("chat.postMessage", "channel_not_found")

    notices.deliver(notice.pk, {NoticeKind.APPROVAL_REQUEST: refused})

    notice.refresh_from_db()
    assert (notice.attempts, notice.sent_at) == (1, None)
    assert notice.given_up_at is not None
    assert notice.last_error == "Slack refused chat.postMessage: channel_not_found"
    assert given_up(NoticeKind.APPROVAL_REQUEST, "refused") == before + 1
    assert notices.redeliver_owed(now=later(hours=1)) == []


def test_a_slack_that_fails_is_tried_again_after_the_interval_and_the_alert_sent_once_it_recovers(
    syncing, pipeline, slack_server
):
    slack_server.answer(503, "service_unavailable")
    fail(syncing)
    pipeline.run_jobs(until=lambda: Notice.objects.get().attempts == 1)

    notice = Notice.objects.get()
    assert notice.last_error == "AlertNotDelivered: Slack answered 503 service_unavailable"
    assert (notice.sent_at, notice.given_up_at) == (None, None)
    assert notice.next_attempt_at > timezone.now()
    assert ScheduledJobRegistry(queue=queues.get_queue()).get_job_ids() == [notice.rq_job_id]
    assert notices.redeliver_owed() == [], "its retry is on its way"

    slack_server.answer(200, "ok")
    pipeline.run_jobs(until=lambda: slack_server.messages)  # RQ's scheduler brings the retry
    [message] = slack_server.messages
    assert "failed at sync" in message["text"]
    notice.refresh_from_db()
    assert notice.attempts == 2
    assert notice.sent_at is not None
    assert slack_server.posted == 2


@pytest.mark.parametrize(("retry_after", "waits"), [("120", 120), ("3", 10), ("a while", 10), ("99999", 3600)])
def test_a_rate_limited_alert_waits_as_long_as_slack_asks_within_an_hour(
    syncing, pipeline, slack_server, retry_after, waits
):
    slack_server.answer(429, "rate_limited", **{"Retry-After": retry_after})
    fail(syncing)
    before = timezone.now().replace(microsecond=0)
    pipeline.run_jobs(until=lambda: Notice.objects.get().attempts == 1)

    notice = Notice.objects.get()
    assert notice.last_error == f"AlertNotDelivered: Slack is rate limiting (rate_limited); retry after {retry_after} s"
    # Never sooner than the first interval (10 s), nor later than an hour, whatever the header says.
    assert before + timedelta(seconds=waits) <= notice.next_attempt_at <= timezone.now() + timedelta(seconds=waits)
    assert (notice.sent_at, notice.given_up_at) == (None, None)


def test_a_notice_owed_for_hours_is_still_tried_every_hour(syncing, pipeline, slack_server):
    slack_server.answer(500, "rollup_error")
    fail(syncing)
    # As if Slack had failed it at every interval for the last six hours.
    Notice.objects.update(attempts=9, created_at=timezone.now() - timedelta(hours=6))
    before = timezone.now().replace(microsecond=0)
    pipeline.run_jobs(until=lambda: Notice.objects.get().attempts == 10)

    notice = Notice.objects.get()
    assert (notice.sent_at, notice.given_up_at) == (None, None)
    assert before + timedelta(hours=1) <= notice.next_attempt_at <= timezone.now() + timedelta(hours=1)
    assert ScheduledJobRegistry(queue=queues.get_queue()).get_job_ids() == [notice.rq_job_id]


def test_a_notice_still_owed_after_a_day_is_given_up_with_the_last_error(syncing, pipeline, slack_server):
    slack_server.answer(500, "rollup_error")
    before = given_up(NoticeKind.FAILURE_ALERT, "exhausted")
    fail(syncing)
    # Its next hourly try would be more than a day after it was owed.
    Notice.objects.update(attempts=27, created_at=timezone.now() - notices.GIVE_UP_AFTER + timedelta(minutes=30))
    pipeline.run_jobs()

    notice = Notice.objects.get()
    assert notice.given_up_at is not None
    assert notice.last_error == (
        "not delivered in 28 attempts over 24 h; the last: AlertNotDelivered: Slack answered 500 rollup_error"
    )
    assert given_up(NoticeKind.FAILURE_ALERT, "exhausted") == before + 1
    assert ScheduledJobRegistry(queue=queues.get_queue()).count == 0


# --- kept for a while --------------------------------------------------------------------------------


def test_ended_notices_are_kept_for_thirty_days(pipeline):
    old, recent = later(days=-31), later(days=-29)
    sent_long_ago = Notice.objects.create(kind=NoticeKind.AUDIT_CHAIN_ALERT, args=["…"], sent_at=old)
    Notice.objects.create(kind=NoticeKind.AUDIT_CHAIN_ALERT, args=["…"], given_up_at=old, last_error="refused")
    sent_lately = Notice.objects.create(kind=NoticeKind.AUDIT_CHAIN_ALERT, args=["…"], sent_at=recent)
    owed = Notice.objects.create(kind=NoticeKind.AUDIT_CHAIN_ALERT, args=["…"], created_at=old, next_attempt_at=old)
    assert notices.forget_ended() == 2
    assert set(Notice.objects.values_list("pk", flat=True)) == {sent_lately.pk, owed.pk}
    assert not Notice.objects.filter(pk=sent_long_ago.pk).exists()
