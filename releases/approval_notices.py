"""Approvers are told what awaits them: a Slack message and e-mails when a promotion awaits approval,
a reminder after APPROVAL_REMINDER_MINUTES, and the message updated once it is decided.

- **Slack** (releases/slack.py, with SLACK_BOT_TOKEN and SLACK_APPROVALS_CHANNEL): one message in the
  channel names the approver groups, mentions the eligible approvers whose Slack identity is known
  (`SlackIdentity`), links to the promotion and carries Approve and Reject buttons
  (releases/slack_interactions.py). Every approval, rejection, cancellation or supersession
  updates it (chat.update): the counts while it waits, then the outcome without buttons.
- **E-mail** (Django's mail settings, when APPROVAL_EMAILS is on): one message to each eligible
  approver who has an address.
- **Reminder**: the reconciler (`remind_due()`) hands a reminder to the approvers who have not
  decided once a promotion has waited APPROVAL_REMINDER_MINUTES, once: a reply in the message's
  thread and an e-mail.

Eligible approvers: active members of the environment's approver groups, other than whoever the
request counts as (policy.accountable_person_id) and those who already decided. Each message is a
`Notice` owed in the transaction of the change it reports (releases/notices.py, the outbox), so a
Redis outage only delays it; its sender takes ids, returns quietly when the promotion has moved on,
and is tried again when Slack is busy.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from nexo_portal.lib import mail

from . import notices, policy, slack
from .models import ApprovalDecision, ApprovalNotice, Notice, NoticeKind, Promotion, PromotionState, SlackIdentity

logger = logging.getLogger(__name__)

APPROVE, REJECT = "approve", "reject"


class MessageNotPostedYet(Exception):
    """An update for an approval message whose request is still owed: the update is tried again."""


def is_enabled():
    return slack.is_configured() or settings.APPROVAL_EMAILS


def enqueue_awaiting(promotion):
    """Owe the approvers the news that `promotion` awaits them, in the request's transaction."""
    if is_enabled():
        notices.owe(NoticeKind.APPROVAL_REQUEST, promotion.pk)


def enqueue_update(promotion):
    """Owe `promotion`'s Slack message an update, in the transaction of the decision on it."""
    if slack.is_configured():
        notices.owe(NoticeKind.APPROVAL_UPDATE, promotion.pk)


# --- who and what -------------------------------------------------------------------------------------


def _promotion(promotion_id):
    return (
        Promotion.objects.with_details()
        .select_related("superseded_by__release")
        .prefetch_related("approvals__user", "environment__approver_groups")
        .filter(pk=promotion_id)
        .first()
    )


def eligible_approvers(promotion):
    """The people who may still decide on `promotion`, by user name."""
    decided = {approval.user_id for approval in promotion.approvals.all()}
    excluded = decided | {promotion.requested_by_id, promotion.accountable_requester_id}
    groups = list(promotion.environment.approver_groups.all())
    people = get_user_model().objects.filter(is_active=True, groups__in=groups).distinct().order_by("username")
    return [person for person in people if person.pk not in excluded]


def _link(promotion):
    return f"{settings.PORTAL_URL.rstrip('/')}{promotion.get_absolute_url()}" if settings.PORTAL_URL else ""


def _pull_request(promotion):
    """(label, url) of the promotion's pull request once it is open (pull-request delivery), else None."""
    if not promotion.pr_url:
        return None
    return f"Pull request #{promotion.pr_number}", promotion.pr_url


def _what(promotion):
    kind = "rollback of " if promotion.is_rollback else ""
    emergency = " (break-glass)" if promotion.is_emergency else ""
    return f"{kind}{promotion.service.name} {promotion.release.version} → {promotion.environment.name}{emergency}"


def _mentions(people):
    identities = dict(
        SlackIdentity.objects.filter(user__in=[person.pk for person in people]).values_list("user_id", "slack_user_id")
    )
    return " ".join(
        f"<@{identities[person.pk]}>" if person.pk in identities else person.get_username() for person in people
    )


def _escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# Slack refuses a message whose section text is over 3,000 characters, and the decided message would
# never replace the one with the buttons: a person's comment (up to 2,000 characters, a GitHub review
# any length, up to five times as long once escaped) is cut to this many first. The page has it whole.
COMMENT_IN_SLACK = 400


def _excerpt(text, limit=COMMENT_IN_SLACK):
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _summary(promotion):
    given, required = policy.approvals_given(promotion), policy.approvals_required(promotion)
    approvers = _escape(policy.from_approvers(promotion.environment))
    return (
        f"{_escape(_what(promotion))} awaits approval ({given}/{required}){approvers}. "
        f"Requested by {_escape(promotion.requester_name())}."
    )


def _outcome(promotion):
    """What became of a promotion that no longer waits, in one sentence."""
    approvers = [a.user.get_username() for a in promotion.approvals.all() if a.decision == ApprovalDecision.APPROVE]
    rejection = next((a for a in promotion.approvals.all() if a.decision == ApprovalDecision.REJECT), None)
    if promotion.state == PromotionState.REJECTED and rejection:
        return f":x: Rejected by {rejection.user.get_username()}: {_escape(_excerpt(rejection.comment))}"
    if promotion.state == PromotionState.CANCELLED:
        return ":heavy_multiplication_x: Cancelled."
    if promotion.state == PromotionState.SUPERSEDED and promotion.superseded_by_id:
        newer = promotion.superseded_by
        return f":arrow_right: Superseded by {newer.release.version} (promotion #{newer.pk})."
    return (
        f":white_check_mark: Approved by {', '.join(approvers) or 'policy'}; {promotion.get_state_display().lower()}."
    )


def awaiting_message(promotion):
    """The Slack message (text and blocks) of a promotion that awaits approval, with its buttons."""
    link = _link(promotion)
    waiting_for = eligible_approvers(promotion)
    text = f":hourglass_flowing_sand: {_summary(promotion)}"
    if waiting_for:
        text += f"\nApprovers: {_mentions(waiting_for)}"
    pull_request = _pull_request(promotion)
    if pull_request:
        text += f"\nReview <{pull_request[1]}|{pull_request[0]}>: its approving reviews count too."
    buttons = [
        {
            "type": "button",
            "action_id": APPROVE,
            "text": {"type": "plain_text", "text": "Approve"},
            "style": "primary",
            "value": str(promotion.pk),
        },
        {
            "type": "button",
            "action_id": REJECT,
            "text": {"type": "plain_text", "text": "Reject…"},
            "style": "danger",
            "value": str(promotion.pk),
        },
    ]
    if link:
        buttons.append(
            {"type": "button", "action_id": "open", "text": {"type": "plain_text", "text": "Open"}, "url": link}
        )
    if pull_request:
        label, url = pull_request
        buttons.append(
            {"type": "button", "action_id": "pull_request", "text": {"type": "plain_text", "text": label}, "url": url}
        )
    return {
        "text": text + (f"\n{link}" if link else ""),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "actions", "block_id": f"promotion-{promotion.pk}", "elements": buttons},
        ],
    }


def decided_message(promotion):
    """The Slack message once the promotion no longer waits: the outcome, no buttons."""
    link = _link(promotion)
    what = _escape(_what(promotion))
    text = f"{what}\n{_outcome(promotion)}" + (f" <{link}|Open the promotion>" if link else "")
    return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}


def current_message(promotion):
    if promotion.state == PromotionState.AWAITING_APPROVAL:
        return awaiting_message(promotion)
    return decided_message(promotion)


def _email(people, subject, body):
    """Whether the e-mails went (False: e-mails are off)."""
    if not settings.APPROVAL_EMAILS:
        return False
    mail.send_each(subject, body, [person.email for person in people if person.email])
    return True


def _email_body(promotion, opening):
    link, pull_request = _link(promotion), _pull_request(promotion)
    return (
        f"{opening}\n\n{_what(promotion)}, requested by {promotion.requester_name()}, needs "
        f"{policy.approvals_required(promotion)} approval(s){policy.from_approvers(promotion.environment)}; "
        f"it has {policy.approvals_given(promotion)}."
        + (f"\n\nApprove or reject it: {link}" if link else "")
        + (f"\n\n{pull_request[0]}, whose approving reviews count too: {pull_request[1]}" if pull_request else "")
    )


# --- the jobs -----------------------------------------------------------------------------------------


def notify_awaiting(promotion_id):
    """Post the approval message and e-mail the eligible approvers (once per promotion)."""
    promotion = _promotion(promotion_id)
    if promotion is None or promotion.state != PromotionState.AWAITING_APPROVAL:
        return
    notice = ApprovalNotice.objects.filter(promotion=promotion).first() or ApprovalNotice(promotion=promotion)
    # Each way of telling is marked once it is done, so that a retry after an outage of one (Slack,
    # the mail server) does what it missed and does not repeat what the other did. (A mail server
    # that fails half-way through the approvers sends the first ones their e-mail again.) Only the
    # fields this job sets are saved: the reconciler may mark the reminder meanwhile (remind_due).
    slack_failed = None
    if slack.is_configured() and not notice.slack_ts:
        try:
            answer = slack.call(
                "chat.postMessage", channel=settings.SLACK_APPROVALS_CHANNEL, **awaiting_message(promotion)
            )
        except (slack.SlackUnavailable, slack.SlackRefused) as error:
            slack_failed = error  # the e-mails go all the same, before the job is retried or given up
        else:
            notice.slack_channel, notice.slack_ts = answer["channel"], answer["ts"]
            _save(notice, "slack_channel", "slack_ts")
    if notice.emailed_at is None and _email(
        eligible_approvers(promotion),
        f"Approval needed: {_what(promotion)}",
        _email_body(promotion, "A promotion awaits your approval."),
    ):
        notice.emailed_at = timezone.now()
        _save(notice, "emailed_at")
    if slack_failed:
        raise slack_failed


def _save(notice, *fields):
    """Insert a new notice whole; of one already there, update only `fields`."""
    notice.save(update_fields=fields if notice.pk else None)


def update_message(promotion_id):
    """Show the promotion's state in its Slack message (counts while it waits, else the outcome);
    Slack's refusal, logged, if it refused."""
    promotion = _promotion(promotion_id)
    notice = ApprovalNotice.objects.filter(promotion_id=promotion_id).exclude(slack_ts="").first()
    if promotion is None or not slack.is_configured():
        return None
    if notice is None:
        # Decided from the message while its job was still sending the e-mails (its id is saved with
        # them): the update waits for it, or the message would show the buttons for good.
        if Notice.objects.owed().filter(kind=NoticeKind.APPROVAL_REQUEST, args=[promotion_id]).exists():
            raise MessageNotPostedYet(f"The approval message of promotion {promotion_id} is not posted yet")
        return None
    try:
        slack.call("chat.update", channel=notice.slack_channel, ts=notice.slack_ts, **current_message(promotion))
    except slack.SlackRefused as refusal:
        logger.error("Slack would not update the approval message of promotion %s: %s", promotion_id, refusal)
        return str(refusal)
    return None


def remind(promotion_id):
    """Remind the approvers who have not decided, in the message's thread and by e-mail."""
    promotion = _promotion(promotion_id)
    if promotion is None or promotion.state != PromotionState.AWAITING_APPROVAL:
        return
    waiting_for = eligible_approvers(promotion)
    notice = ApprovalNotice.objects.filter(promotion=promotion).first()

    def post():
        if notice and notice.slack_ts and slack.is_configured():
            minutes = int((timezone.now() - promotion.requested_at).total_seconds() // 60)
            text = f":bell: Still waiting after {minutes} min: {_summary(promotion)} {_mentions(waiting_for)}"
            slack.call("chat.postMessage", channel=notice.slack_channel, thread_ts=notice.slack_ts, text=text.strip())

    def email():
        _email(
            waiting_for,
            f"Reminder: approval needed for {_what(promotion)}",
            _email_body(promotion, "A promotion still awaits your approval."),
        )

    notices.send_parts(slack=post, email=email)


def remind_due(now=None):
    """For the reconciler: hand a reminder for each promotion waiting longer than APPROVAL_REMINDER_MINUTES
    whose approvers were told and not yet reminded. Returns their ids."""
    if not settings.APPROVAL_REMINDER_MINUTES:
        return []
    now = now or timezone.now()
    due = now - timedelta(minutes=settings.APPROVAL_REMINDER_MINUTES)
    with transaction.atomic():
        due = list(
            ApprovalNotice.objects.select_for_update(skip_locked=True).filter(
                reminded_at__isnull=True,
                promotion__state=PromotionState.AWAITING_APPROVAL,
                promotion__requested_at__lte=due,
            )
        )
        ApprovalNotice.objects.filter(pk__in=[notice.pk for notice in due]).update(reminded_at=now)
        for notice in due:
            notices.owe(NoticeKind.APPROVAL_REMINDER, notice.promotion_id)
    return [notice.promotion_id for notice in due]
