"""Approvers told what awaits them: a Slack message naming the groups and mentioning the people Slack
knows, kept up to date as it is decided; e-mails; one reminder. Against a stand-in for Slack's Web API."""

import smtplib
import socket
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone
from prometheus_client import REGISTRY

from nexo_portal.lib import queues
from releases import approval_notices, slack, transitions
from releases.jobs import NOTICE_SENDERS, deliver_notice
from releases.models import ApprovalNotice, Notice, SlackIdentity
from tests.factories import make_release, make_service
from tests.faults import free_port
from tests.servers.slack import CHANNEL
from tests.test_api import verified_through

pytestmark = pytest.mark.django_db


def run_queued_jobs():
    """What a worker would do with the jobs the transitions handed over: their names, a notice's by its sender."""
    queue = queues.get_queue()
    jobs = queue.jobs
    queue.empty()
    names = []
    for job in jobs:
        if job.func is deliver_notice:
            names.append(NOTICE_SENDERS[Notice.objects.get(pk=job.args[0]).kind].__name__)
        else:
            names.append(job.func.__name__)
        job.func(*job.args)
    return names


@pytest.fixture
def people(rita, sam, sara, lead):
    for person, address in ((sam, "sam@nexo.example"), (sara, "sara@nexo.example"), (lead, "lead@nexo.example")):
        person.email = address
        person.save(update_fields=["email"])
    rita.email = "rita@nexo.example"
    rita.save(update_fields=["email"])
    SlackIdentity.objects.create(user=sam, slack_user_id="U0SAM")
    return {"rita": rita, "sam": sam, "sara": sara, "lead": lead}


@pytest.fixture
def release(environments, redis_connection):
    release = make_release(make_service("nexo-be", team="backend-team"), "2026.02.1")
    verified_through(release, "develop", "qa", "staging", environments=environments)
    return release


@pytest.fixture
def waiting(release, environments, people, slack_api, settings, django_capture_on_commit_callbacks):
    """Rita's production request, its approvers told (the notify job run as a worker would)."""
    settings.APPROVAL_EMAILS = True
    with django_capture_on_commit_callbacks(execute=True):
        promotion = transitions.request_promotion(release, environments["production"], people["rita"])
    assert run_queued_jobs() == ["notify_awaiting"]
    return promotion


def decide(decision, *args, captured, **kwargs):
    with captured(execute=True):
        decision(*args, **kwargs)
    return run_queued_jobs()


# --- told: Slack and e-mail --------------------------------------------------------------------------


def test_the_message_names_the_groups_mentions_known_people_and_links(waiting, slack_api):
    [posted] = slack_api.called("chat.postMessage")
    assert posted["channel"] == CHANNEL
    text = posted["blocks"][0]["text"]["text"]
    assert "nexo-be 2026.02.1 → production awaits approval (0/2) from platform-leads or sre-team" in text
    assert "Requested by rita." in text
    assert "Approvers: lead <@U0SAM> sara" in text, "Sam's Slack identity is known; the others are named"
    assert "rita" not in text.split("Approvers:")[1], "the requester is no approver of her own request"
    buttons = {element["action_id"]: element for element in posted["blocks"][1]["elements"]}
    assert (buttons["approve"]["value"], buttons["reject"]["value"]) == (str(waiting.pk), str(waiting.pk))
    assert buttons["open"]["url"] == f"https://portal.nexo.example/promotions/{waiting.pk}/"
    notice = ApprovalNotice.objects.get(promotion=waiting)
    assert (notice.slack_channel, notice.slack_ts) == (CHANNEL, "1503435957.000200")


def test_eligible_approvers_are_e_mailed_one_message_each(waiting):
    assert sorted(message.to[0] for message in mail.outbox) == [
        "lead@nexo.example",
        "sam@nexo.example",
        "sara@nexo.example",
    ]
    message = mail.outbox[0]
    assert message.subject == "Approval needed: nexo-be 2026.02.1 → production"
    assert f"https://portal.nexo.example/promotions/{waiting.pk}/" in message.body


def mail_server_down(settings):
    """E-mail through SMTP to a port nothing listens on: every send is refused until the test sets the
    backend back."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", free_port(), 2


def sent_emails(outcome):
    return REGISTRY.get_sample_value("nexo_outgoing_calls_total", {"target": "email", "outcome": outcome}) or 0


def test_each_e_mail_is_counted_as_an_outgoing_call(release, environments, people, settings):
    settings.APPROVAL_EMAILS = True
    promotion = transitions.request_promotion(release, environments["production"], people["rita"])
    before = sent_emails("ok")

    approval_notices.notify_awaiting(promotion.pk)

    assert sent_emails("ok") == before + 3 == before + len(mail.outbox)


def test_a_mail_server_out_of_reach_is_counted_and_the_job_fails_to_be_retried(release, environments, people, settings):
    settings.APPROVAL_EMAILS = True
    mail_server_down(settings)
    promotion = transitions.request_promotion(release, environments["production"], people["rita"])
    before = sent_emails("error")

    with pytest.raises(ConnectionRefusedError):
        approval_notices.notify_awaiting(promotion.pk)

    assert sent_emails("error") == before + 1


def test_a_mail_server_that_takes_the_connection_and_never_answers_fails_the_send(
    release, environments, people, settings
):
    """By default: the job fails (to be tried again) rather than wait for as long as RQ lets it run."""
    assert settings.EMAIL_TIMEOUT == settings.HTTP_TIMEOUT_SECONDS
    settings.APPROVAL_EMAILS = True
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    promotion = transitions.request_promotion(release, environments["production"], people["rita"])
    with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel takes the connection; nobody answers
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", silent.getsockname()[1]
        with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
            approval_notices.notify_awaiting(promotion.pk)


def test_approvers_are_e_mailed_once_the_mail_server_is_back_and_slack_is_not_told_twice(
    release, environments, people, settings, slack_api
):
    settings.APPROVAL_EMAILS = True
    mail_server_down(settings)
    promotion = transitions.request_promotion(release, environments["production"], people["rita"])
    with pytest.raises(ConnectionRefusedError):  # Slack took the message, the mail server was down
        approval_notices.notify_awaiting(promotion.pk)
    assert ApprovalNotice.objects.get(promotion=promotion).emailed_at is None

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"  # back for the job's retry
    approval_notices.notify_awaiting(promotion.pk)

    assert sorted(message.to[0] for message in mail.outbox) == [
        "lead@nexo.example",
        "sam@nexo.example",
        "sara@nexo.example",
    ]
    assert len(slack_api.called("chat.postMessage")) == 1
    assert ApprovalNotice.objects.get(promotion=promotion).emailed_at is not None
    approval_notices.notify_awaiting(promotion.pk)  # once more (a reconciler's second look): nothing again
    assert len(mail.outbox) == 3


def test_a_reminder_marked_while_the_e_mails_go_out_is_not_undone(
    release, environments, people, settings, slack_api, monkeypatch
):
    """The job that e-mails the approvers after a mail server outage may meet the reconciler marking
    the promotion's reminder: the reminder stays marked, or the approvers would get it twice."""
    settings.APPROVAL_EMAILS = True
    mail_server_down(settings)
    promotion = transitions.request_promotion(release, environments["production"], people["rita"])
    with pytest.raises(ConnectionRefusedError):  # Slack took the message, the mail server was down
        approval_notices.notify_awaiting(promotion.pk)
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    an_hour_later = promotion.requested_at + timedelta(minutes=61)
    reminded = []
    eligible_approvers = approval_notices.eligible_approvers

    def the_reconciler_runs_meanwhile(promotion):
        reminded.extend(approval_notices.remind_due(now=an_hour_later))
        return eligible_approvers(promotion)

    monkeypatch.setattr(approval_notices, "eligible_approvers", the_reconciler_runs_meanwhile)
    approval_notices.notify_awaiting(promotion.pk)
    monkeypatch.undo()

    assert reminded == [promotion.pk]
    notice = ApprovalNotice.objects.get(promotion=promotion)
    assert (notice.reminded_at, notice.emailed_at is not None) == (an_hour_later, True)
    assert approval_notices.remind_due(now=an_hour_later + timedelta(minutes=5)) == [], "reminded once"


@pytest.fixture
def reminder(release, environments, people, slack_api, settings):
    """The reminder owed for Rita's production request, whose approvers were told in Slack and by e-mail."""
    settings.APPROVAL_EMAILS = True
    promotion = transitions.request_promotion(release, environments["production"], people["rita"])
    deliver_notice(Notice.objects.get(kind="approval_request").pk)
    mail.outbox.clear()
    approval_notices.remind_due(now=promotion.requested_at + timedelta(minutes=61))
    return Notice.objects.get(kind="approval_reminder")


def test_a_reminder_slack_refuses_is_e_mailed_all_the_same(reminder, slack_api):
    slack_api.errors["chat.postMessage"] = "thread_not_found"  # the message was deleted
    deliver_notice(reminder.pk)

    reminder.refresh_from_db()
    assert reminder.last_error == "Slack refused chat.postMessage: thread_not_found"
    assert reminder.given_up_at is not None
    assert sorted(address for message in mail.outbox for address in message.to) == [
        "lead@nexo.example",
        "sam@nexo.example",
        "sara@nexo.example",
    ]


def test_a_reminder_is_posted_in_the_thread_once_while_the_mail_server_is_down(reminder, slack_api, settings):
    mail_server_down(settings)
    for _ in range(3):  # three tries during the outage
        deliver_notice(reminder.pk)
        Notice.objects.filter(pk=reminder.pk).update(next_attempt_at=timezone.now())
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"  # back
    deliver_notice(reminder.pk)

    reminder.refresh_from_db()
    assert (reminder.attempts, reminder.sent_at is not None) == (4, True)
    assert len([post for post in slack_api.called("chat.postMessage") if post.get("thread_ts")]) == 1
    assert len(mail.outbox) == 3


def test_nothing_is_sent_when_neither_slack_nor_e_mail_is_configured(release, environments, people, settings):
    settings.APPROVAL_EMAILS = False
    settings.SLACK_BOT_TOKEN = ""
    transitions.request_promotion(release, environments["production"], people["rita"])
    assert queues.get_queue().jobs == []


def test_the_message_shows_each_approval_then_the_outcome(
    waiting, people, slack_api, django_capture_on_commit_callbacks
):
    assert decide(transitions.approve, waiting, people["sam"], captured=django_capture_on_commit_callbacks) == [
        "update_message"
    ]
    [first] = slack_api.called("chat.update")
    assert (first["channel"], first["ts"]) == (CHANNEL, "1503435957.000200")
    assert "awaits approval (1/2)" in first["text"]
    assert "Approvers: lead sara" in first["text"], "Sam decided already"
    decide(transitions.approve, waiting, people["sara"], captured=django_capture_on_commit_callbacks)
    last = slack_api.called("chat.update")[-1]
    assert ":white_check_mark: Approved by sam, sara; approved." in last["text"]
    assert [block["type"] for block in last["blocks"]] == ["section"], "no buttons once decided"


def test_a_rejection_is_shown_with_its_comment(waiting, people, slack_api, django_capture_on_commit_callbacks):
    decide(
        transitions.reject,
        waiting,
        people["lead"],
        "not during the freeze",
        captured=django_capture_on_commit_callbacks,
    )
    assert ":x: Rejected by lead: not during the freeze" in slack_api.called("chat.update")[-1]["text"]


def test_a_rejection_comment_longer_than_a_slack_section_still_takes_the_buttons_away(
    waiting, people, slack_api, django_capture_on_commit_callbacks
):
    """A comment of 2,000 "<" (8,000 characters once escaped) or a long GitHub review: Slack refuses a
    section over 3,000 characters, and the message would keep its Approve and Reject buttons."""
    comment = "<" * 1000 + " & " + "x" * 997
    decide(transitions.reject, waiting, people["lead"], comment, captured=django_capture_on_commit_callbacks)

    [update] = slack_api.called("chat.update")[-1:]
    assert [block["type"] for block in update["blocks"]] == ["section"], "no buttons left"
    section = update["blocks"][0]["text"]["text"]
    assert len(section) <= 3000
    assert ":x: Rejected by lead: &lt;&lt;" in section
    assert "…" in section, "cut, and says so"
    assert not Notice.objects.exclude(sent_at__isnull=False).exists(), "Slack took it"


def test_a_reminder_after_the_configured_time_once_to_those_who_have_not_decided(
    waiting, people, slack_api, settings, django_capture_on_commit_callbacks
):
    settings.APPROVAL_REMINDER_MINUTES = 30
    decide(transitions.approve, waiting, people["sam"], captured=django_capture_on_commit_callbacks)
    mail.outbox.clear()
    assert approval_notices.remind_due(now=waiting.requested_at + timedelta(minutes=29)) == []
    with django_capture_on_commit_callbacks(execute=True):
        assert approval_notices.remind_due(now=waiting.requested_at + timedelta(minutes=31)) == [waiting.pk]
    assert run_queued_jobs() == ["remind"]
    reminder = slack_api.called("chat.postMessage")[-1]
    assert reminder["thread_ts"] == "1503435957.000200"
    assert "Still waiting after" in reminder["text"]
    assert "awaits approval (1/2)" in reminder["text"]
    assert reminder["text"].endswith("lead sara")
    assert sorted(message.to[0] for message in mail.outbox) == ["lead@nexo.example", "sara@nexo.example"]
    assert approval_notices.remind_due(now=waiting.requested_at + timedelta(hours=5)) == [], "once"


def test_an_approval_given_before_the_message_is_posted_updates_it_once_it_is(
    release, environments, people, slack_api, settings
):
    """The update of a decision made while the request's job still sends its e-mails (the message's id
    is not saved yet) is tried again, not marked sent with nothing updated."""
    settings.APPROVAL_EMAILS = True
    promotion = transitions.request_promotion(release, environments["production"], people["rita"])
    transitions.approve(promotion, people["sam"], "")
    update = Notice.objects.get(kind="approval_update")
    deliver_notice(update.pk)
    update.refresh_from_db()
    assert (update.sent_at, update.attempts) == (None, 1)
    assert update.last_error == (
        f"MessageNotPostedYet: The approval message of promotion {promotion.pk} is not posted yet"
    )

    deliver_notice(Notice.objects.get(kind="approval_request").pk)
    Notice.objects.filter(pk=update.pk).update(next_attempt_at=timezone.now())
    deliver_notice(update.pk)

    update.refresh_from_db()
    assert update.sent_at is not None
    [updated] = slack_api.called("chat.update")
    assert "awaits approval (1/2)" in updated["text"]


def test_slack_busy_is_retried_and_a_refusal_is_not(waiting, slack_api):
    slack_api.rate_limited.add("chat.update")
    with pytest.raises(slack.SlackUnavailable, match="retry after 30 s"):
        approval_notices.update_message(waiting.pk)
    slack_api.rate_limited.clear()
    slack_api.errors["chat.update"] = "message_not_found"
    approval_notices.update_message(waiting.pk)  # logged, not raised: retrying would not help


def test_approvers_are_e_mailed_while_slack_is_down_and_told_on_slack_once_it_is_back(
    release, environments, people, slack_api, settings
):
    settings.APPROVAL_EMAILS = True
    slack_api.rate_limited.add("chat.postMessage")  # Slack's outage: the first try posts nothing
    transitions.request_promotion(release, environments["production"], people["rita"])
    notice = Notice.objects.get(kind="approval_request")
    deliver_notice(notice.pk)
    notice.refresh_from_db()
    assert (notice.sent_at, notice.attempts) == (None, 1)
    assert ApprovalNotice.objects.get().slack_ts == ""
    assert sorted(address for message in mail.outbox for address in message.to) == [
        "lead@nexo.example",
        "sam@nexo.example",
        "sara@nexo.example",
    ]

    slack_api.rate_limited.clear()  # Slack is back by the next try
    Notice.objects.filter(pk=notice.pk).update(next_attempt_at=timezone.now())
    deliver_notice(notice.pk)

    notice.refresh_from_db()
    assert notice.sent_at is not None
    assert ApprovalNotice.objects.get().slack_ts
    assert len(mail.outbox) == 3, "e-mailed once"


def test_approvers_are_e_mailed_when_slack_refuses_the_message_for_good(
    release, environments, people, slack_api, settings
):
    settings.APPROVAL_EMAILS = True
    slack_api.errors["chat.postMessage"] = "channel_not_found"  # a refusal: the notice is given up
    transitions.request_promotion(release, environments["production"], people["rita"])
    notice = Notice.objects.get(kind="approval_request")
    deliver_notice(notice.pk)

    notice.refresh_from_db()
    assert notice.given_up_at is not None
    assert notice.last_error == "Slack refused chat.postMessage: channel_not_found"
    assert len(mail.outbox) == 3
