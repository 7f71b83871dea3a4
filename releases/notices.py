"""Alerts and notices as rows, the outbox: owed in the transaction of the change they report,
delivered by RQ, handed to RQ again by the reconciler.

Every alert (releases/alerts.py) and approval notice (releases/approval_notices.py) is a `Notice`
written in the transaction of the change it reports, so a change rolled back owes nothing, and
handed to RQ once that commits. Redis out of reach at that moment, or a job RQ lost, costs only
time: every RECONCILE_SECONDS the reconciler hands RQ again each notice owed for OVERDUE_AFTER that
no worker is sending and RQ does not hold.

A worker sends a notice while holding its row's lock, and only while it is owed and due, so two
jobs for one notice (the reconciler's and a late original) send it once. The lock is held while
Slack or the mail server is called (HTTP_TIMEOUT_SECONDS at most): what the sender saved on its way
(the approval message's Slack ts) is committed with the outcome. Then:

- taken: `sent_at`;
- refused in a way retrying will not change (a webhook's 4xx, the Web API's `ok: false`): given up
  at once with the reason, logged and counted (`nexo_notices_given_up_total`);
- anything else (429, a 5xx, no answer, the mail server out of reach): tried again after each of
  RETRY_INTERVALS, then every hour (or after the longer wait a 429's Retry-After asks for), so that
  an outage of Slack or the mail server for hours — on the day the alerts matter — delays them but
  does not lose them; a notice still owed GIVE_UP_AFTER after it was owed is given up with the last
  error, logged and counted.

Ended rows are kept for KEPT_FOR, so whoever asks whether an alert went out, and when, or why not,
finds the answer in the admin; the reconciler deletes them after that.
"""

import logging
from contextvars import ContextVar
from datetime import timedelta

from django.db import DatabaseError, transaction
from django.db.models import Q
from django.utils import timezone
from redis.exceptions import RedisError
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry

from nexo_portal.lib import metrics, queues

from . import slack
from .models import Notice

logger = logging.getLogger(__name__)

JOB_FUNCTION = "releases.jobs.deliver_notice"
# The notice its sender runs for, within deliver() (send_parts reads what it did before).
_delivering = ContextVar("notice being delivered", default=None)
# Seconds before the next try after the first, second… failure; the last one repeats.
RETRY_INTERVALS = [10, 60, 300, 900, 1800, 3600]
# An alert a day late is history, not news: the admin, the log and the metric say it was never sent.
GIVE_UP_AFTER = timedelta(hours=24)
# A notice owed this long past its time that RQ does not hold is handed to RQ again.
OVERDUE_AFTER = timedelta(seconds=15)
KEPT_FOR = timedelta(days=30)


def owe(kind, *args):
    """A notice of `kind`, sent by calling its sender with `args` (JSON); RQ gets it once the transaction commits."""
    notice = Notice.objects.create(kind=kind, args=list(args))
    transaction.on_commit(lambda: dispatch(notice))
    return notice


def dispatch(notice):
    """Hand the notice to RQ, at its time. Redis being down is left to the reconciler, which sees it owed."""
    try:
        queues.hand_over(JOB_FUNCTION, notice.pk, job_id=notice.rq_job_id, at=notice.next_attempt_at)
    except RedisError as error:
        logger.warning("Could not hand %s to RQ (%s); the reconciler will", notice, error)
        return False
    return True


def deliver(notice_id, senders):
    """Send the notice with `senders[kind]` unless it is sent, given up, not due yet, or being sent.

    A sender returns nothing once the notice is taken, or the refusal (already logged) that
    retrying will not change; slack.SlackRefused counts as that too. Any other exception is worth
    another try, except a database error: then nothing can be recorded, and the reconciler finds
    the notice owed as it was.
    """
    now = timezone.now()
    with transaction.atomic():
        notice = Notice.objects.owed().select_for_update(skip_locked=True).filter(pk=notice_id).first()
        if notice is None or notice.next_attempt_at > now:
            logger.info("Notice %s is sent, given up, being sent or not due yet; nothing to do", notice_id)
            return
        notice.attempts += 1
        delivering = _delivering.set(notice)
        try:
            refusal = senders[notice.kind](*notice.args)
        except DatabaseError:
            raise
        except slack.SlackRefused as error:
            _give_up(notice, str(error), "refused")
        except Exception as error:
            _not_delivered(
                notice,
                f"{type(error).__name__}: {error}".strip().splitlines()[0][:500],
                wait=getattr(error, "retry_after", None),
            )
        else:
            if refusal:
                _give_up(notice, refusal, "refused")
            else:
                notice.sent_at = timezone.now()
        finally:
            _delivering.reset(delivering)
        notice.save(update_fields=["attempts", "last_error", "next_attempt_at", "sent_at", "given_up_at", "parts_done"])


def send_parts(**parts):
    """For a sender that tells in several ways (slack=…, email=…, each a function returning nothing or
    a refusal): each part once over the notice's attempts, and each tried although another failed, so
    that a Slack outage neither keeps the e-mails back nor has them sent again on every retry. Returns
    the first refusal and raises the first failure, after trying them all."""
    notice = _delivering.get()
    done = notice.parts_done if notice is not None else []
    refusal = failure = None
    for name, send in parts.items():
        if name in done:
            continue
        try:
            refused = send()
        except DatabaseError:
            raise
        except Exception as error:
            failure = failure or error
            continue
        refusal = refusal or refused
        done.append(name)  # a refusal too: trying again would not change it
    if failure is not None:
        raise failure
    return refusal


def _not_delivered(notice, error, wait=None):
    """Try again after the next of RETRY_INTERVALS, or after `wait` seconds if Slack asked for longer;
    give up when that would be past GIVE_UP_AFTER."""
    notice.last_error = error
    now = timezone.now()
    interval = RETRY_INTERVALS[min(notice.attempts, len(RETRY_INTERVALS)) - 1]
    # In whole seconds, as RQ schedules: a job it delivers in the right second finds the notice due.
    next_attempt_at = now.replace(microsecond=0) + timedelta(seconds=max(interval, wait or 0))
    if next_attempt_at > notice.created_at + GIVE_UP_AFTER:
        hours = round((now - notice.created_at).total_seconds() / 3600)
        reason = f"not delivered in {notice.attempts} attempts over {hours} h; the last: {error}"
        _give_up(notice, reason, "exhausted")
        return
    notice.next_attempt_at = next_attempt_at
    logger.warning("%s was not delivered (%s); trying again at %s", notice, error, notice.next_attempt_at)
    transaction.on_commit(lambda: dispatch(notice))


def _give_up(notice, reason, why):
    notice.given_up_at, notice.last_error = timezone.now(), reason[:2000]
    logger.error("Gave up sending %s (arguments %s): %s", notice, notice.args, reason)
    kind = notice.kind
    transaction.on_commit(lambda: metrics.NOTICES_GIVEN_UP.labels(kind=kind, reason=why).inc())


# --- for the reconciler -------------------------------------------------------------------------------


def redeliver_owed(now=None):
    """Hand RQ again each notice owed past its time that no worker is sending and RQ does not hold.

    Returns their ids.
    """
    now = now or timezone.now()
    with transaction.atomic():
        # Locked rows are being sent right now; skipping them is what "not being tried" means.
        owed = list(
            Notice.objects.owed()
            .filter(next_attempt_at__lt=now - OVERDUE_AFTER)
            .select_for_update(skip_locked=True)
            .order_by("next_attempt_at")
        )
    try:
        lost = [notice for notice in owed if not _held_by_rq(notice)]
    except RedisError as error:
        # Nothing can be handed over either: a later round does it, and this one goes on.
        logger.warning("Could not ask RQ which of %d owed notices it holds (%s); next round", len(owed), error)
        return []
    for notice in lost:
        logger.warning("%s was owed since %s and RQ did not have it; handed over again", notice, notice.next_attempt_at)
        dispatch(notice)
    return [notice.pk for notice in lost]


def _held_by_rq(notice):
    """Whether RQ will deliver the notice's job without help: it is in the queue, waiting for a worker."""
    queue = queues.get_queue("default")
    try:
        job = Job.fetch(notice.rq_job_id, connection=queue.connection)
    except NoSuchJobError:
        return False
    status = job.get_status()
    if status == JobStatus.SCHEDULED:
        # Overdue: the scheduler lives in one worker and died with it. Not scheduled twice.
        ScheduledJobRegistry(queue=queue).remove(job)
        return False
    return status == JobStatus.QUEUED and queues.waits_in_queue(queue, job)


def forget_ended(now=None):
    """Delete the notices sent or given up more than KEPT_FOR ago; returns how many."""
    before = (now or timezone.now()) - KEPT_FOR
    deleted, _ = Notice.objects.filter(Q(sent_at__lt=before) | Q(given_up_at__lt=before)).delete()
    return deleted
