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
worth another try; any other refusal will not change by retrying, so it is logged for whoever
configured the webhook and the alert is given up.

Each alert is a `Notice` owed in the transaction of the change it reports, and sent by a worker
once that commits (releases/notices.py, the outbox): Redis out of reach at that moment delays it,
the reconciler hands it over again, and a change rolled back sends nothing.
"""

import logging

import requests
from django.conf import settings
from django.urls import reverse

from nexo_portal.lib import mail, metrics
from nexo_portal.lib.http import describe_failure, excerpt, retry_after

from . import drift, notices
from .models import PIPELINE, ApprovalDecision, Hold, NoticeKind, Promotion, PromotionKind, PromotionState

logger = logging.getLogger(__name__)


class AlertNotDelivered(Exception):
    """Slack did not take the alert this time; the outbox tries again, not before `retry_after`
    seconds when Slack said so."""

    def __init__(self, message, retry_after=None):
        super().__init__(message)
        self.retry_after = retry_after


def is_configured():
    return bool(settings.SLACK_WEBHOOK_URL)


def enqueue_failure_alert(promotion):
    """Owe Slack (if it is configured) the failure, in its transaction; a worker sends it once that commits."""
    if is_configured():
        notices.owe(NoticeKind.FAILURE_ALERT, promotion.pk)


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
    """Post the failure of `promotion_id` to Slack; Slack's refusal, if it refused (_post)."""
    promotion = Promotion.objects.with_details().filter(pk=promotion_id).first()
    if promotion is None or not is_configured():
        return None
    return _post(failure_message(promotion), f"for promotion {promotion_id}")


def _post(message, about):
    """Post `message` to the webhook; AlertNotDelivered when trying again may help.

    Returns None once Slack took it, or, logged, the refusal that retrying will not change.
    """
    timeout = settings.HTTP_TIMEOUT_SECONDS
    try:
        with metrics.outgoing_call("slack", "incoming webhook") as call:
            response = requests.post(settings.SLACK_WEBHOOK_URL, json=message, timeout=timeout)
            call.status = response.status_code
    except requests.RequestException as error:
        # The webhook's path is its secret: requests' own messages quote the URL, so neither they nor
        # the exception chain may travel with this one, whose words are logged and kept on the notice.
        raise AlertNotDelivered(f"Slack did not answer: {_reason(error, timeout)}") from None
    if response.status_code == 200:
        return None
    code = excerpt(response.text) or f"HTTP {response.status_code}"
    if response.status_code == 429:
        raise AlertNotDelivered(
            f"Slack is rate limiting ({code}); retry after {response.headers.get('Retry-After', '?')} s",
            retry_after=retry_after(response),
        )
    if response.status_code >= 500:
        raise AlertNotDelivered(f"Slack answered {response.status_code} {code}")
    refusal = f"Slack refused the alert {about} with {response.status_code} {code}"
    logger.error("%s: check SLACK_WEBHOOK_URL and its channel", refusal)
    return refusal


def enqueue_audit_chain_alert(summary):
    """Owe Slack the broken audit chain, in the transaction of the verification that found it."""
    if is_configured():
        notices.owe(NoticeKind.AUDIT_CHAIN_ALERT, summary)


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
    """Post that the audit chain broke, as `summary` says, to Slack; Slack's refusal, if it refused."""
    if not is_configured():
        return None
    return _post(audit_chain_message(summary), "on the audit chain")


def enqueue_discarded_approvals_notice(promotion):
    """Owe the approvers of `promotion` the news, in the superseding request's transaction."""
    notices.owe(NoticeKind.DISCARDED_APPROVALS, promotion.pk)


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
    """Tell the approvers of superseded promotion `promotion_id` (Slack if configured, and e-mail);
    Slack's refusal, if it refused."""
    promotion = (
        Promotion.objects.with_details()
        .select_related("superseded_by__release", "superseded_by__requested_by")
        .prefetch_related("approvals__user")
        .filter(pk=promotion_id, superseded_by__isnull=False)
        .first()
    )
    if promotion is None:
        return None
    approvers, subject, text, slack = discarded_approvals_notice(promotion)
    addresses = [user.email for user in approvers if user.email] if settings.APPROVAL_EMAILS else []

    def email():
        mail.send_each(subject, text, addresses)

    def post():
        return _post(slack, f"on the discarded approvals of promotion {promotion_id}") if is_configured() else None

    return notices.send_parts(email=email, slack=post)


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
    if is_configured():
        notices.owe(NoticeKind.SLO_BREACH, promotion.pk)


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
    """Post that promotion `promotion_id` is past its target time; Slack's refusal, if it refused."""
    promotion = Promotion.objects.with_details().filter(pk=promotion_id).first()
    if promotion is None or not is_configured():
        return None
    return _post(slo_breach_message(promotion), f"on the SLO of promotion {promotion_id}")


def enqueue_far_behind_alert(deployment, behind, first):
    """A place more builds behind the first environment than its environment allows: said once per crossing."""
    if is_configured():
        notices.owe(
            NoticeKind.FAR_BEHIND,
            deployment.service.name,
            deployment.environment.name,
            deployment.release.version,
            behind,
            first.name,
            deployment.environment.drift_alert_builds,
        )


def far_behind_message(service, environment, version, behind, first, threshold):
    headline = f":snail: {service} in {environment} is {drift.builds_behind(behind, first)}"
    text = (
        f"{environment} runs {version}, {drift.builds(behind)} older than what {first} runs "
        f"(the alert is set at more than {threshold}). Worth a promotion."
    )
    return _simple_message(headline, text, _link(reverse("releases:board") + f"?service={service}"), "Open the board")


def send_far_behind_alert(service, environment, version, behind, first, threshold):
    """Post that `service` in `environment` is far behind the first environment; Slack's refusal, if it refused."""
    if not is_configured():
        return None
    return _post(
        far_behind_message(service, environment, version, behind, first, threshold),
        f"on the drift of {service} in {environment}",
    )
