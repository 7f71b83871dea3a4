"""Approvals are not thrown away silently: only whoever may cancel a promotion that has approvals may
replace it with a newer request, the approvers are told (Slack, e-mail), and the audit says who
discarded which approvals."""

import pytest
from django.core import mail
from django.utils import timezone

from audit.models import AuditAction, AuditEvent
from nexo_portal.lib import queues
from releases import alerts, transitions
from releases.jobs import deliver_notice
from releases.models import Notice, NoticeKind, PromotionState
from releases.policy import PromotionError
from tests.factories import make_release, make_service
from tests.history import action_link, cell_html
from tests.test_api import assert_error, token_client, verified_through

pytestmark = pytest.mark.django_db


@pytest.fixture
def waiting(environments, redis_connection, rita, sam, sara):
    """Rita's production request for nexo-be 2026.02.1, approved by Sam (1 of 2); 2026.02.2 verified too."""
    sam.email = "sam@nexo.example"
    sam.save(update_fields=["email"])
    service = make_service("nexo-be", team="backend-team")
    first, second = make_release(service, "2026.02.1"), make_release(service, "2026.02.2")
    verified_through(first, "develop", "qa", "staging", environments=environments)
    verified_through(second, "develop", "qa", "staging", environments=environments)
    promotion = transitions.request_promotion(first, environments["production"], rita)
    transitions.approve(promotion, sam, "looks good")
    return promotion


def test_a_ci_token_that_may_not_cancel_it_cannot_supersede_a_promotion_with_approvals(waiting):
    response = token_client("promote").post(
        "/api/v1/promotions/",
        {"service": "nexo-be", "version": "2026.02.2", "environment": "production"},
        format="json",
    )
    assert_error(response, 403, text=f"Promotion #{waiting.pk} (nexo-be 2026.02.1 → production) already has 1/2")
    assert "(sam)" in response.json()["message"]
    waiting.refresh_from_db()
    assert waiting.state == PromotionState.AWAITING_APPROVAL
    assert [approval.user.username for approval in waiting.approvals.all()] == ["sam"]


def test_someone_who_may_request_but_not_cancel_cannot_supersede_it(waiting, environments, viewer):
    # Viewer belongs to no team: production's requester group makes her someone who may request there.
    environments["production"].requester_groups.create(name="release-managers")
    viewer.groups.add(environments["production"].requester_groups.get())
    release = waiting.service.releases.get(version="2026.02.2")
    with pytest.raises(PromotionError, match="only its requester, an approver of production or an administrator"):
        transitions.request_promotion(release, environments["production"], viewer)


def test_the_confirmation_says_who_may_not_supersede_it_before_they_try(client, waiting, environments, viewer):
    environments["production"].requester_groups.create(name="release-managers")
    viewer.groups.add(environments["production"].requester_groups.get())
    client.force_login(viewer)

    page = client.get("/services/nexo-be/environments/production/promote/2026.02.2/").content.decode()

    assert "is superseded by this one" not in page
    assert "You cannot do this:" in page
    assert f"Promotion #{waiting.pk} (nexo-be 2026.02.1 → production) already has 1/2 approvals (sam)" in page


def test_the_board_offers_the_newer_release_as_unavailable_to_who_may_not_supersede_it(
    client, waiting, environments, viewer
):
    environments["production"].requester_groups.create(name="release-managers")
    viewer.groups.add(environments["production"].requester_groups.get())
    why = f"Promotion #{waiting.pk} (nexo-be 2026.02.1 → production) already has 1/2 approvals (sam)"

    client.force_login(viewer)
    promote = action_link(cell_html(client.get("/"), "nexo-be", "production"), "request")
    assert "Promote 2026.02.2" in promote
    assert "unavailable" in promote
    assert why in promote

    client.force_login(waiting.requested_by)  # rita may withdraw her own request, so she may replace it
    promote = action_link(cell_html(client.get("/"), "nexo-be", "production"), "request")
    assert "unavailable" not in promote


def test_the_pipeline_does_not_supersede_approvals_it_defers(waiting, environments):
    release = waiting.service.releases.get(version="2026.02.2")
    promotion, waits = transitions.request_automatic_promotion(release, environments["production"])
    assert promotion is None
    assert waits.startswith(f"Promotion #{waiting.pk} (nexo-be 2026.02.1 → production) already has 1/2 approvals")
    waiting.refresh_from_db()
    assert waiting.state == PromotionState.AWAITING_APPROVAL


def test_whoever_may_cancel_it_supersedes_it_and_the_audit_names_the_discarded_approvals(
    waiting, environments, rita, django_capture_on_commit_callbacks
):
    release = waiting.service.releases.get(version="2026.02.2")
    with django_capture_on_commit_callbacks(execute=True):
        newer = transitions.request_promotion(release, environments["production"], rita)
    waiting.refresh_from_db()
    assert waiting.state == PromotionState.SUPERSEDED
    assert waiting.superseded_by == newer
    event = AuditEvent.objects.get(action=AuditAction.PROMOTION_SUPERSEDED, promotion_id=waiting.pk)
    assert event.actor == "rita"
    assert event.message.endswith(f"superseded by promotion #{newer.pk}; the approvals of sam were discarded")
    assert event.data["superseded_by"] == newer.pk
    assert [(given["approver"], given["comment"]) for given in event.data["discarded_approvals"]] == [
        ("sam", "looks good")
    ]
    notice = Notice.objects.get(kind=NoticeKind.DISCARDED_APPROVALS)
    assert notice.args == [waiting.pk]
    [job] = queues.get_queue().jobs
    assert (job.func_name, job.args) == ("releases.jobs.deliver_notice", (notice.pk,))


def test_the_approvers_are_told_by_e_mail_and_in_slack(waiting, environments, rita, slack_server, settings):
    settings.APPROVAL_EMAILS = True
    release = waiting.service.releases.get(version="2026.02.2")
    newer = transitions.request_promotion(release, environments["production"], rita)
    alerts.send_discarded_approvals_notice(waiting.pk)
    [message] = mail.outbox
    assert message.to == ["sam@nexo.example"]
    assert message.subject == f"Your approval of nexo-be 2026.02.1 → production (promotion #{waiting.pk}) was discarded"
    assert f"rita requested 2026.02.2 (promotion #{newer.pk})" in message.body
    assert f"https://portal.nexo.example/promotions/{newer.pk}/" in message.body
    [posted] = slack_server.messages
    assert "Approvals discarded: nexo-be 2026.02.1 → production was superseded" in posted["text"]
    assert "The approvals of sam were discarded" in posted["text"]


def test_the_approvers_are_e_mailed_once_however_long_slack_is_down(
    waiting, environments, rita, slack_server, settings
):
    """The e-mails go at the first try; the retries that follow Slack's outage post only to Slack."""
    settings.APPROVAL_EMAILS = True
    slack_server.answer(500, "internal_error")
    transitions.request_promotion(waiting.service.releases.get(version="2026.02.2"), environments["production"], rita)
    notice = Notice.objects.get(kind=NoticeKind.DISCARDED_APPROVALS)
    for _ in range(3):  # three tries during the outage
        deliver_notice(notice.pk)
        Notice.objects.filter(pk=notice.pk).update(next_attempt_at=timezone.now())
    slack_server.answer(200, "ok")
    deliver_notice(notice.pk)

    notice.refresh_from_db()
    assert (notice.attempts, notice.sent_at is not None) == (4, True)
    assert [message.to for message in mail.outbox] == [["sam@nexo.example"]]
    assert slack_server.posted == 4
    assert len(slack_server.messages) == 1


def test_a_promotion_without_approvals_is_still_superseded_by_any_requester(environments, redis_connection, rita):
    service = make_service("nexo-be", team="backend-team")
    first, second = make_release(service, "2026.02.1"), make_release(service, "2026.02.2")
    for release in (first, second):
        verified_through(release, "develop", "qa", environments=environments)
    waiting = transitions.request_promotion(first, environments["staging"], rita)
    response = token_client("promote").post(
        "/api/v1/promotions/", {"service": "nexo-be", "version": "2026.02.2", "environment": "staging"}, format="json"
    )
    assert response.status_code == 201, response.content
    waiting.refresh_from_db()
    assert waiting.state == PromotionState.SUPERSEDED
