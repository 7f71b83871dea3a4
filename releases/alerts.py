"""Alerts: a promotion that failed is said in Slack, with what happened next; so is an audit chain
that the periodic verification found broken (once per break: audit/checkpoints.py), and approvals
that a newer request discarded (in Slack, and with APPROVAL_EMAILS by e-mail to each approver who
has an address).

In an environment that rolls back by itself (qa) the alert says which release it went back to;
elsewhere (staging, production) the failure is alert-only and the alert says nobody rolled
back. The failure is on the board, the promotion page and in the audit log either way; without
SLACK_WEBHOOK_URL nothing more is sent.

Slack's incoming webhooks take one JSON message per POST and answer 200 with the text `ok`, or
an error status with a plain-text code: 400 `invalid_payload` / `no_text`, 403
`action_prohibited` / `invalid_token`, 404 `no_service` / `channel_not_found`, 410
`channel_is_archived`, 429 with `Retry-After`, 500 `rollup_error`. A 429, a 5xx or no answer is
worth another try (RQ retries the job); any other refusal will not change by retrying, so it is
logged for whoever configured the webhook.
"""

import logging

import requests
from django.conf import settings
from django.db import transaction
from django.urls import reverse
from redis.exceptions import RedisError
from rq import Retry

from nexo_portal.lib import mail, metrics, queues
from nexo_portal.lib.http import describe_failure, excerpt

from .models import PIPELINE, ApprovalDecision, Hold, Promotion, PromotionKind, PromotionState

logger = logging.getLogger(__name__)

RETRY_INTERVALS = [10, 60, 300]


class AlertNotDelivered(Exception):
    """Slack did not take the alert this time; RQ tries again."""


def is_configured():
    return bool(settings.SLACK_WEBHOOK_URL)


def enqueue_failure_alert(promotion):
    """Once the failure is committed, have a worker tell Slack (if it is configured)."""
    if not is_configured():
        return

    def send():
        try:
            queues.get_queue().enqueue(
                send_failure_alert, promotion.pk, retry=Retry(max=len(RETRY_INTERVALS), interval=RETRY_INTERVALS)
            )
        except RedisError as error:
            logger.warning("Could not enqueue the Slack alert for promotion %s: %s", promotion.pk, error)

    transaction.on_commit(send)


def _reason(error, timeout):
    if isinstance(error, requests.Timeout):
        return f"no answer within {timeout:g} s"
    if isinstance(error, requests.ConnectionError):
        reason = describe_failure(error, timeout)
        return reason if "/" not in reason else "the connection failed"
    return f"the request could not be made ({type(error).__name__}); check SLACK_WEBHOOK_URL"


def _mrkdwn(text, limit=2500):
    """Text from elsewhere (Argo CD, a probed service) as Slack shows it: no markup, no mentions."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if len(text) <= limit:
        return text
    text = text[: limit - 1]
    if text.rfind("&") > text.rfind(";"):  # do not end inside an entity
        text = text[: text.rfind("&")]
    return text + "…"


def failure_message(promotion):
    """The Slack message for a failed promotion: what failed, why, and what happened next."""
    what = f"{promotion.service.name} {promotion.release.version} → {promotion.environment.name}"

    # Only what the portal has seen: a rollback it requested is on its way, not done.
    rollback = (
        Promotion.objects.filter(rolls_back=promotion, kind=PromotionKind.ROLLBACK, requested_via=PIPELINE)
        .select_related("release")
        .first()
    )
    hold = Hold.objects.active().filter(service=promotion.service, environment=promotion.environment).first()
    if rollback and rollback.state in (PromotionState.VERIFIED, PromotionState.DEPLOYED, PromotionState.VERIFYING):
        next_step = f"Rolled back automatically to {rollback.release.version} (promotion #{rollback.pk})."
    elif rollback:
        next_step = (
            f"Rolling back automatically to {rollback.release.version} (promotion #{rollback.pk}, "
            f"{rollback.get_state_display().lower()} when this was sent)."
        )
    elif promotion.is_rollback:
        # Before the hold: one placed by an earlier rollback ("Rolled back to …") would read as if this one worked.
        running = promotion.previous_release.version if promotion.previous_release else "the release before it"
        next_step = f"This was a rollback; the portal last saw {running} deployed there. Someone should look now."
        if hold:
            next_step += f" Automatic promotions are on hold: {hold.reason}"
    elif hold and promotion.environment.rollback_on_failed_verification:
        next_step = f"Not rolled back automatically; automatic promotions are on hold: {hold.reason}"
    else:
        next_step = f"No automatic rollback in {promotion.environment.name}: someone should decide what to do."
    link = f"{settings.PORTAL_URL.rstrip('/')}{promotion.get_absolute_url()}" if settings.PORTAL_URL else ""
    headline = f":red_circle: {what} failed at {promotion.failed_step}"
    error = _mrkdwn(promotion.error)
    text = f"{headline}: {error}\n{next_step}" + (f"\n{link}" if link else "")
    blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{headline}*\n{error}"}},
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": next_step + (f" <{link}|Open the promotion>" if link else "")}],
        },
    ]
    return {"text": text[:3000], "blocks": blocks}


def send_failure_alert(promotion_id):
    """RQ job: post the failure of `promotion_id` to Slack."""
    promotion = Promotion.objects.with_details().filter(pk=promotion_id).first()
    if promotion is None or not is_configured():
        return
    _post(failure_message(promotion), f"for promotion {promotion_id}")


def _post(message, about):
    """Post `message` to the webhook; AlertNotDelivered when trying again may help."""
    timeout = settings.HTTP_TIMEOUT_SECONDS
    try:
        with metrics.outgoing_call("slack", "incoming webhook") as call:
            response = requests.post(settings.SLACK_WEBHOOK_URL, json=message, timeout=timeout)
            call.status = response.status_code
    except requests.RequestException as error:
        # The webhook's path is its secret: requests' own messages quote the URL, so neither they nor
        # the exception chain (which RQ logs and keeps with the failed job) may travel with this one.
        raise AlertNotDelivered(f"Slack did not answer: {_reason(error, timeout)}") from None
    if response.status_code == 200:
        return
    code = excerpt(response.text) or f"HTTP {response.status_code}"
    if response.status_code == 429:
        raise AlertNotDelivered(
            f"Slack is rate limiting ({code}); retry after {response.headers.get('Retry-After', '?')} s"
        )
    if response.status_code >= 500:
        raise AlertNotDelivered(f"Slack answered {response.status_code} {code}")
    logger.error(
        "Slack refused the alert %s with %s %s: check SLACK_WEBHOOK_URL and its channel",
        about,
        response.status_code,
        code,
    )


def enqueue_audit_chain_alert(summary):
    """Once the verification that found the audit chain broken is committed, have a worker say it in Slack."""
    if not is_configured():
        return

    def send():
        try:
            queues.get_queue().enqueue(
                send_audit_chain_alert, summary, retry=Retry(max=len(RETRY_INTERVALS), interval=RETRY_INTERVALS)
            )
        except RedisError as error:
            logger.warning("Could not enqueue the Slack alert on the audit chain: %s", error)

    transaction.on_commit(send)


def audit_chain_message(summary):
    """The Slack message for a broken audit chain: what the verification found, and where to look."""
    link = f"{settings.PORTAL_URL.rstrip('/')}{reverse('audit:log')}" if settings.PORTAL_URL else ""
    headline = ":rotating_light: The audit log's chain is broken"
    advice = "Its chain no longer matches the checkpoints kept outside the database: `manage.py verify_audit_chain`."
    text = f"{headline}\n{_mrkdwn(summary)}\n{advice}" + (f"\n{link}" if link else "")
    blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{headline}*\n{_mrkdwn(summary)}"}},
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": advice + (f" <{link}|Open the audit log>" if link else "")}],
        },
    ]
    return {"text": text[:3000], "blocks": blocks}


def send_audit_chain_alert(summary):
    """RQ job: post that the audit chain broke, as `summary` says, to Slack."""
    if is_configured():
        _post(audit_chain_message(summary), "on the audit chain")


def enqueue_discarded_approvals_notice(promotion):
    """Once the superseding request is committed, have a worker tell the approvers of `promotion`."""

    def send():
        try:
            queues.get_queue().enqueue(
                send_discarded_approvals_notice,
                promotion.pk,
                retry=Retry(max=len(RETRY_INTERVALS), interval=RETRY_INTERVALS),
            )
        except RedisError as error:
            logger.warning(
                "Could not enqueue the notice of discarded approvals of promotion %s: %s", promotion.pk, error
            )

    transaction.on_commit(send)


def discarded_approvals_notice(promotion):
    """What the approvers of a superseded promotion are told: (approvers, subject, text, Slack message)."""
    approvers = [
        approval.user for approval in promotion.approvals.all() if approval.decision == ApprovalDecision.APPROVE
    ]
    newer = promotion.superseded_by
    what = f"{promotion.service.name} {promotion.release.version} → {promotion.environment.name}"
    by = newer.requested_by.get_username() if newer.requested_by_id else newer.requested_via or PIPELINE
    names = ", ".join(user.get_username() for user in approvers)
    subject = f"Your approval of {what} (promotion #{promotion.pk}) was discarded"
    text = (
        f"{by} requested {newer.release.version} (promotion #{newer.pk}), which replaced {what} "
        f"(promotion #{promotion.pk}). The approvals of {names} were discarded; the new request needs its own."
    )
    link = f"{settings.PORTAL_URL.rstrip('/')}{newer.get_absolute_url()}" if settings.PORTAL_URL else ""
    headline = f":warning: Approvals discarded: {what} was superseded"
    slack = {
        "text": f"{headline}\n{_mrkdwn(text)}" + (f"\n{link}" if link else ""),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{headline}*\n{_mrkdwn(text)}"}},
            *(
                [{"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{link}|Open the new request>"}]}]
                if link
                else []
            ),
        ],
    }
    return approvers, subject, text + (f"\n\n{link}" if link else ""), slack


def send_discarded_approvals_notice(promotion_id):
    """RQ job: tell the approvers of superseded promotion `promotion_id` (Slack if configured, and e-mail)."""
    promotion = (
        Promotion.objects.with_details()
        .select_related("superseded_by__release", "superseded_by__requested_by")
        .prefetch_related("approvals__user")
        .filter(pk=promotion_id, superseded_by__isnull=False)
        .first()
    )
    if promotion is None:
        return
    approvers, subject, text, slack = discarded_approvals_notice(promotion)
    addresses = [user.email for user in approvers if user.email] if settings.APPROVAL_EMAILS else []
    mail.send_each(subject, text, addresses)
    if is_configured():
        _post(slack, f"on the discarded approvals of promotion {promotion_id}")


def _enqueue(job, *args, about):
    """Once the transaction commits, have a worker send `job(*args)` (if Slack is configured)."""
    if not is_configured():
        return

    def send():
        try:
            queues.get_queue().enqueue(job, *args, retry=Retry(max=len(RETRY_INTERVALS), interval=RETRY_INTERVALS))
        except RedisError as error:
            logger.warning("Could not enqueue the Slack alert %s: %s", about, error)

    transaction.on_commit(send)


def _link(path):
    return f"{settings.PORTAL_URL.rstrip('/')}{path}" if settings.PORTAL_URL else ""


def _simple_message(headline, text, link, link_text):
    return {
        "text": f"{headline}\n{_mrkdwn(text)}" + (f"\n{link}" if link else ""),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{headline}*\n{_mrkdwn(text)}"}},
            *([{"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{link}|{link_text}>"}]}] if link else []),
        ],
    }


def enqueue_slo_breach_alert(promotion):
    """A promotion active past its environment's target time (releases/slo.py): said once."""
    _enqueue(send_slo_breach_alert, promotion.pk, about=f"on the SLO of promotion {promotion.pk}")


def slo_breach_message(promotion):
    what = f"{promotion.service.name} {promotion.release.version} → {promotion.environment.name}"
    minutes = promotion.environment.promotion_slo_minutes
    headline = f":hourglass: {what} is past its {minutes} min promotion target"
    text = (
        f"Promotion #{promotion.pk}, requested by {promotion.requester_name()}, is "
        f"{promotion.get_state_display().lower()} and has been under way longer than the target for "
        f"{promotion.environment.name}."
    )
    return _simple_message(headline, text, _link(promotion.get_absolute_url()), "Open the promotion")


def send_slo_breach_alert(promotion_id):
    """RQ job: post that promotion `promotion_id` is past its target time."""
    promotion = Promotion.objects.with_details().filter(pk=promotion_id).first()
    if promotion is not None and is_configured():
        _post(slo_breach_message(promotion), f"on the SLO of promotion {promotion_id}")


def enqueue_far_behind_alert(deployment, behind, first):
    """A place more builds behind the first environment than its environment allows: said once per crossing."""
    _enqueue(
        send_far_behind_alert,
        deployment.service.name,
        deployment.environment.name,
        deployment.release.version,
        behind,
        first.name,
        deployment.environment.drift_alert_builds,
        about=f"on the drift of {deployment.service.name} in {deployment.environment.name}",
    )


def far_behind_message(service, environment, version, behind, first, threshold):
    headline = f":snail: {service} in {environment} is {behind} builds behind {first}"
    text = (
        f"{environment} runs {version}, {behind} builds older than what {first} runs "
        f"(the alert is set at more than {threshold}). Worth a promotion."
    )
    return _simple_message(headline, text, _link(reverse("releases:board") + f"?service={service}"), "Open the board")


def send_far_behind_alert(service, environment, version, behind, first, threshold):
    """RQ job: post that `service` in `environment` is far behind the first environment."""
    if is_configured():
        _post(
            far_behind_message(service, environment, version, behind, first, threshold),
            f"on the drift of {service} in {environment}",
        )
