"""Slack alerts for failed promotions, against a server answering as Slack's incoming webhooks do."""

import logging

import pytest

from releases import alerts
from releases.models import PromotionState
from tests.factories import make_release, make_service
from tests.history import ran

pytestmark = pytest.mark.django_db


@pytest.fixture
def failed(environments):
    release = make_release(make_service("nexo-be", team="backend-team"), "2026.02.2")
    return ran(
        release,
        environments["staging"],
        state=PromotionState.FAILED,
        failed_step="sync",
        error='Argo CD application nexo-be-staging: Deployment.apps "nexo-be" is invalid',
    )


def test_a_failure_is_posted_with_its_reason_and_a_link(failed, slack_server):
    alerts.send_failure_alert(failed.pk)
    [message] = slack_server.messages
    assert message["text"].startswith(":red_circle: nexo-be 2026.02.2 → staging failed at sync: Argo CD application")
    assert '"nexo-be" is invalid' in message["text"]
    assert (
        f"<https://portal.nexo.example/promotions/{failed.pk}/|Open the promotion>"
        in message["blocks"][1]["elements"][0]["text"]
    )


@pytest.mark.parametrize(
    ("status", "code"), [(429, "rate_limited"), (500, "rollup_error"), (503, "service_unavailable")]
)
def test_slack_busy_or_failing_is_retried(failed, slack_server, status, code):
    slack_server.answer(status, code, **({"Retry-After": "30"} if status == 429 else {}))
    with pytest.raises(alerts.AlertNotDelivered, match=code):
        alerts.send_failure_alert(failed.pk)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:1/services/T0/B0/SECRETTOKEN", "connection refused"),
        ("hooks.slack.com/services/T0/B0/SECRETTOKEN", "check SLACK_WEBHOOK_URL"),
    ],
)
def test_slack_not_answering_is_retried_and_the_webhook_secret_goes_nowhere(failed, settings, url, reason):
    import traceback

    settings.SLACK_WEBHOOK_URL = url
    with pytest.raises(alerts.AlertNotDelivered, match=reason) as raised:
        alerts.send_failure_alert(failed.pk)
    # What RQ logs and keeps with the failed job: the whole chain.
    assert "SECRETTOKEN" not in "".join(traceback.format_exception(raised.value))


def test_text_from_elsewhere_is_shown_not_interpreted_and_fits_a_block(failed):
    failed.error = "probe answered <!channel> <https://evil.example|Open the promotion> & " + "x" * 5000
    message = alerts.failure_message(failed)
    section = message["blocks"][0]["text"]["text"]
    assert "<!channel>" not in section
    assert "&lt;!channel&gt;" in section
    assert "&amp;" in section
    assert len(section) <= 3000
    assert len(message["text"]) <= 3000
    failed.error = "<" * 2600  # escaping makes it four times longer
    section = alerts.failure_message(failed)["blocks"][0]["text"]["text"]
    assert len(section) <= 3000
    assert section.rstrip("…").endswith("&lt;")


@pytest.mark.parametrize(
    ("status", "code"), [(404, "no_service"), (410, "channel_is_archived"), (403, "action_prohibited")]
)
def test_a_refusal_that_retrying_cannot_change_is_logged_for_whoever_set_the_webhook(
    failed, slack_server, status, code
):
    slack_server.answer(status, code)
    records = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = records.append
    logging.getLogger("releases.alerts").addHandler(handler)
    try:
        alerts.send_failure_alert(failed.pk)  # no exception: RQ would retry it
    finally:
        logging.getLogger("releases.alerts").removeHandler(handler)
    [record] = records
    assert f"Slack refused the alert for promotion {failed.pk} with {status} {code}" in record.getMessage()
    assert "check SLACK_WEBHOOK_URL" in record.getMessage()


def test_without_a_webhook_nothing_is_queued(failed, settings, redis_connection):
    from django.db import transaction

    from nexo_portal.lib import queues

    settings.SLACK_WEBHOOK_URL = ""
    with transaction.atomic():
        alerts.enqueue_failure_alert(failed)
    assert queues.get_queue().count == 0


def test_where_the_automation_could_not_roll_back_the_alert_says_so_and_why(failed, environments):
    from releases.models import Hold

    environments["staging"].rollback_on_failed_verification = True
    environments["staging"].save()
    Hold.objects.create(
        service=failed.service,
        environment=environments["staging"],
        reason="The automatic rollback of 2026.02.2 could not start: no release older was verified in staging",
        placed_by="pipeline",
    )
    failed.refresh_from_db()
    text = alerts.failure_message(failed)["text"]
    assert "Not rolled back automatically; automatic promotions are on hold: The automatic rollback of" in text
    assert "Rolled back" not in text


def test_a_failed_automatic_rollback_says_so_even_where_an_older_hold_stands(environments):
    from releases.models import PIPELINE, Hold, PromotionKind

    service = make_service("nexo-be", team="backend-team")
    develop = environments["develop"]
    older, newer = make_release(service, "2026.02.1"), make_release(service, "2026.02.2")
    # develop is on hold since an earlier rollback; a person promoted 2026.02.2 anyway, its soak failed,
    # and the automatic rollback to 2026.02.1 failed in turn.
    Hold.objects.create(
        service=service, environment=develop, reason="Rolled back to 2026.02.1 by promotion #4", placed_by="pipeline"
    )
    bad = ran(newer, develop, state=PromotionState.FAILED, failed_step="verification", error="error rate 7 %")
    rollback = ran(
        older,
        develop,
        state=PromotionState.FAILED,
        kind=PromotionKind.ROLLBACK,
        requested_via=PIPELINE,
        rolls_back=bad,
        previous_release=newer,
        failed_step="verification",
        error="https://nexo-be.develop/health failed 1 time(s): HTTP 503",
    )
    text = alerts.failure_message(rollback)["text"]
    assert "This was a rollback; the portal last saw 2026.02.2 deployed there. Someone should look now." in text
    assert "Automatic promotions are on hold: Rolled back to 2026.02.1 by promotion #4" in text
    assert "Not rolled back automatically" not in text
