"""The promotion page, the release page and the audit log: what they show, to whom, and the export."""

import json
import re
from datetime import timedelta

import pytest
import time_machine
from django.test import Client
from django.utils import timezone

from audit import log as audit
from audit.models import AuditAction, AuditEvent
from environments.models import ChangeFreeze
from releases import transitions
from releases.models import (
    CheckResult,
    Deployment,
    Promotion,
    PromotionKind,
    PromotionState,
    SampleCheck,
    StepStatus,
    VerificationSample,
)
from tests.factories import make_release, make_service
from tests.history import action_link, cell_html, ran, verified_up_to_staging

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(environments, rita, sam, lead, viewer):
    history = verified_up_to_staging(
        environments,
        service_fields={"source_repo_url": "https://github.com/nexo-org/nexo-be"},
        release_fields={"changelog": "- feat: rate limiting\n- fix: auth timeout"},
    )
    return {**history, "rita": rita, "sam": sam, "lead": lead, "viewer": viewer}


def page_for(user, url, **kwargs):
    client = Client()
    client.force_login(user)
    return client.get(url, **kwargs)


def step(page, key):
    """The <li> of one timeline step."""
    start = page.index(f'data-step="{key}"')
    return page[page.rindex("<li", 0, start) : page.index("</li>", start)]


def step_status(page, key):
    li = step(page, key)
    return li.split('class="step ', 1)[1].split('"', 1)[0]


# --- the promotion page -------------------------------------------------------------------------


def test_a_waiting_promotion_shows_the_timeline_up_to_the_approvals(world):
    promotion = transitions.request_promotion(world["release"], world["env"]["production"], world["rita"])
    transitions.approve(promotion, world["sam"], "canary looks clean")
    page = page_for(world["viewer"], promotion.get_absolute_url()).content.decode()
    assert [
        step_status(page, key) for key in ("requested", "approvals", "commit", "sync", "healthy", "soak", "outcome")
    ] == [
        "done",
        "current",
        "pending",
        "pending",
        "pending",
        "pending",
        "pending",
    ]
    approvals = step(page, "approvals")
    assert "Approvals 1/2" in approvals
    assert "<strong>sam</strong> approved" in approvals
    assert "<blockquote>canary looks clean</blockquote>" in approvals
    assert "by rita" in step(page, "requested")
    assert 'hx-trigger="every 5s"' in page  # it is live while active


@pytest.mark.parametrize(
    ("environment", "note"),
    [("develop", "automatic, when the build was registered"), ("qa", "automatic, after verification in develop")],
)
def test_an_automatic_promotion_says_what_started_it(world, environment, note):
    promotion = ran(world["release"], world["env"][environment], kind=PromotionKind.AUTO)
    requested = step(page_for(world["viewer"], promotion.get_absolute_url()).content.decode(), "requested")
    assert f'<div class="muted small">{note}</div>' in requested
    assert "in the environment before" not in requested


def test_a_verified_promotion_shows_every_step_done_with_the_commit_and_no_refresh(world):
    promotion = ran(
        world["release"],
        world["env"]["production"],
        gitops_commit_sha="a" * 40,
        gitops_commit_message="promote(nexo-be): production → 2026.02.1\n\nRequested by rita.",
        verification_started_at=timezone.now() - timedelta(minutes=30),
        verdict_at=timezone.now(),
    )
    page = page_for(world["viewer"], promotion.get_absolute_url()).content.decode()
    assert {step_status(page, key) for key in ("requested", "commit", "sync", "healthy", "soak", "outcome")} == {"done"}
    assert "a" * 40 in step(page, "commit")
    assert "promote(nexo-be): production → 2026.02.1" in step(page, "commit")
    assert "hx-trigger" not in page.split('id="promotion-live"', 1)[1].split(">", 1)[0]


def test_a_promotion_that_failed_to_commit_marks_that_step_and_skips_the_rest(world):
    promotion = transitions.request_promotion(world["release"], world["env"]["production"], world["rita"])
    transitions.approve(promotion, world["sam"])
    transitions.approve(promotion, world["lead"])
    transitions.start_commit(promotion)
    transitions.fail(promotion, "commit", "Cannot reach the GitOps repository")
    page = page_for(world["viewer"], promotion.get_absolute_url()).content.decode()
    assert step_status(page, "commit") == "failed"
    assert [step_status(page, key) for key in ("sync", "healthy", "soak")] == ["skipped"] * 3
    assert "Failed at commit" in step(page, "outcome")
    assert "Cannot reach the GitOps repository" in page


def failed_at_commit(world, paulo):
    """nexo-be 2026.02.1 → staging, approved by paulo, failed at its commit before anything was written."""
    staging = world["env"]["staging"]
    Deployment.objects.filter(environment=staging).delete()  # verified up to qa only
    Promotion.objects.filter(environment=staging).delete()
    promotion = transitions.request_promotion(world["release"], staging, world["rita"])
    transitions.approve(promotion, paulo, "canary is clean")
    transitions.start_commit(promotion)
    transitions.note_push_not_landed(promotion)
    return transitions.fail(promotion, "commit", "Still failing after 3 min of retries: Cannot reach the GitOps …")


def confirmation_of(link):
    """Where an action's link leads, without where it comes back to."""
    return re.search(r'href="([^"?]*)', link).group(1)


def actions_of(page):
    return page.split('id="actions-title"', 1)[1].split("<h2>Details</h2>", 1)[0]


def test_a_promotion_that_failed_before_it_ran_offers_its_release_again_as_the_board_does(world, paulo):
    promotion = failed_at_commit(world, paulo)
    page = page_for(world["rita"], promotion.get_absolute_url()).content.decode()
    assert "nothing more can be done" not in page
    actions = actions_of(page)
    again = action_link(actions, "request")
    assert ">Promote 2026.02.1 again</a>" in again
    offered = action_link(cell_html(page_for(world["rita"], "/"), "nexo-be", "staging"), "request")
    assert ">Promote 2026.02.1 again</a>" in offered
    # The same action as the board's, to the same confirmation.
    assert (
        confirmation_of(again)
        == confirmation_of(offered)
        == "/services/nexo-be/environments/staging/promote/2026.02.1/"
    )
    assert "2026.02.1 was failed at commit just now here" in actions
    # The approval is not carried over: a new request is decided anew, and the page says so.
    assert "the approval given to this one (paulo) does not carry over" in actions
    assert "Nothing was written to the GitOps repository" in page


def test_a_failed_promotion_offers_its_release_again_only_to_who_may_request_it(world, paulo):
    promotion = failed_at_commit(world, paulo)
    page = page_for(world["viewer"], promotion.get_absolute_url()).content.decode()
    actions = actions_of(page)
    assert action_link(actions, "request") is None
    assert '<span class="button unavailable">Promote 2026.02.1 again</span>' in actions
    assert 'data-action="request">Only members of backend-team or platform-team may request' in actions


def test_a_failed_promotion_offers_nothing_once_its_place_has_moved_on(world, paulo):
    promotion = failed_at_commit(world, paulo)
    newer = make_release(world["service"], "2026.02.2")
    ran(newer, world["env"]["qa"])  # staging is offered 2026.02.2 now, as the board says
    assert (
        action_link(actions_of(page_for(world["rita"], promotion.get_absolute_url()).content.decode()), "request")
        is None
    )
    transitions.request_promotion(newer, world["env"]["staging"], world["rita"])
    page = page_for(world["rita"], promotion.get_absolute_url()).content.decode()
    assert "nothing more can be done to it here" in page


def test_the_soak_shows_its_progress_and_the_samples_taken(world):
    now = timezone.now()
    promotion = ran(
        world["release"],
        world["env"]["production"],
        state=PromotionState.VERIFYING,
        verification_started_at=now - timedelta(minutes=15),
        verdict_at=now + timedelta(minutes=15),
        verification_status=StepStatus.RUNNING,
    )
    VerificationSample.objects.create(
        promotion=promotion,
        kind=SampleCheck.ERROR_RATE,
        target="sum(rate(…))",
        value=0.002,
        ok=True,
        detail="0.2000% ≤ 1.00%",
    )
    VerificationSample.objects.create(
        promotion=promotion, kind=SampleCheck.HEALTH_URL, target="https://be/health", ok=None, detail="no data: timeout"
    )
    with time_machine.travel(now, tick=False):  # halfway, however long the page takes on a busy machine
        page = page_for(world["viewer"], promotion.get_absolute_url()).content.decode()
    soak = step(page, "soak")
    assert step_status(page, "soak") == "current"
    assert '<progress max="100" value="50"' in soak
    assert "15 min of 30 min, 15 min left" in soak
    assert "2 samples taken: Error rate: 1 ok; Health URL: 1 no data." in soak
    assert "0.2000% ≤ 1.00%" in page
    assert "no data: timeout" in page


def test_the_soak_tells_a_sample_that_could_not_be_taken_from_one_without_data(world):
    now = timezone.now()
    promotion = ran(
        world["release"],
        world["env"]["production"],
        state=PromotionState.VERIFYING,
        verification_started_at=now - timedelta(minutes=1),
        verdict_at=now + timedelta(minutes=29),
        verification_status=StepStatus.RUNNING,
    )
    for ok, detail in [
        (True, "Healthy, running 9f8e7d6c5b4a"),
        (None, "error: Argo CD answered HTTP 503 for nexo-be-production"),
        (None, "no data: health Unknown: Argo CD could not assess it"),
    ]:
        VerificationSample.objects.create(
            promotion=promotion, kind=SampleCheck.ARGOCD_HEALTH, target="nexo-be-production", ok=ok, detail=detail
        )

    page = page_for(world["viewer"], promotion.get_absolute_url()).content.decode()

    assert "3 samples taken: Argo CD health: 1 ok, 1 error, 1 no data." in step(page, "soak")
    assert '<span class="muted small">1 ok, 1 error, 1 no data</span>' in page, "the chart's summary"
    assert '<span class="badge warn">error</span> error: Argo CD answered HTTP 503' in page, "the table"
    assert 'class="error"' in page, "the chart's mark"


def test_the_promotion_page_shows_its_audit_events_in_order(world):
    promotion = transitions.request_promotion(world["release"], world["env"]["production"], world["rita"])
    transitions.reject(promotion, world["sam"], "error budget spent")
    page = page_for(world["viewer"], promotion.get_absolute_url()).content.decode()
    events = page.split('id="events-title"', 1)[1]
    assert events.index("Promotion requested") < events.index("Promotion rejected")
    assert "error budget spent" in page


@pytest.mark.parametrize(
    ("who", "allowed", "refused"),
    [
        ("sam", {"approve", "reject", "cancel"}, {}),
        ("rita", {"cancel"}, {"approve": "You requested this promotion", "reject": "You requested this promotion"}),
        (
            "viewer",
            set(),
            {
                "approve": "Only members of platform-leads or sre-team may approve",
                "cancel": "Only the requester, an approver of this environment",
            },
        ),
    ],
)
def test_each_person_sees_the_actions_they_may_take_and_why_not_the_others(world, who, allowed, refused):
    promotion = transitions.request_promotion(world["release"], world["env"]["production"], world["rita"])
    page = page_for(world[who], promotion.get_absolute_url()).content.decode()
    actions = page.split('id="actions-title"', 1)[1].split("</ul>", 1)[0]
    for kind in allowed:
        assert action_link(actions, kind), kind
    for kind, reason in refused.items():
        assert action_link(actions, kind) is None
        assert f'data-action="{kind}">{reason}' in actions


def test_a_finished_promotion_that_still_runs_offers_only_a_rollback(world):
    older = ran(world["release"], world["env"]["production"], at=timezone.now() - timedelta(days=1))
    newer = ran(make_release(world["service"], "2026.02.2"), world["env"]["production"])
    running = page_for(world["sam"], newer.get_absolute_url()).content.decode()
    actions = running.split('id="actions-title"', 1)[1].split("</ul>", 1)[0]
    assert "/services/nexo-be/environments/production/rollback/" in action_link(actions, "rollback")
    assert action_link(actions, "approve") is None
    assert action_link(actions, "cancel") is None
    replaced = page_for(world["sam"], older.get_absolute_url()).content.decode()
    assert "nothing more can be done to it here" in replaced
    stranger = page_for(world["viewer"], newer.get_absolute_url()).content.decode()
    assert 'data-action="rollback">Only members of backend-team' in stranger


@pytest.mark.parametrize("push_failed", [False, True], ids=["approved", "committing"])
def test_an_approved_promotion_held_by_a_freeze_says_it_waits_for_its_end(world, push_failed):
    promotion = transitions.request_promotion(world["release"], world["env"]["production"], world["rita"])
    transitions.approve(promotion, world["sam"])
    promotion = transitions.approve(promotion, world["lead"])
    if push_failed:  # its commit written before the freeze, the push refused by a Git outage
        transitions.start_commit(promotion)
    assert 'data-waits="freeze"' not in page_for(world["viewer"], promotion.get_absolute_url()).content.decode()

    ends_at = timezone.now() + timedelta(hours=2)
    ChangeFreeze.objects.create(
        environment=world["env"]["production"],
        starts_at=timezone.now() - timedelta(minutes=1),
        ends_at=ends_at,
        reason="Year-end freeze",
    )
    page = page_for(world["viewer"], promotion.get_absolute_url()).content.decode()
    waits = page.split('data-waits="freeze">', 1)[1].split("</dd>", 1)[0]
    assert waits.startswith("until the freeze of production ends at <time")
    assert f">{timezone.localtime(ends_at):%Y-%m-%d %H:%M}</time> (Year-end freeze)." in waits
    assert "It was approved before the freeze began; its GitOps commit is made when the freeze ends" in waits


@pytest.mark.parametrize("push_failed", [False, True], ids=["approved", "committing"])
def test_the_timeline_of_a_promotion_held_by_a_freeze_says_its_commit_waits_for_the_end(world, push_failed):
    promotion = transitions.request_promotion(world["release"], world["env"]["production"], world["rita"])
    transitions.approve(promotion, world["sam"])
    promotion = transitions.approve(promotion, world["lead"])
    if push_failed:  # its commit written before the freeze, the push refused by a Git outage
        transitions.start_commit(promotion)
    page = page_for(world["viewer"], promotion.get_absolute_url()).content.decode()
    assert "waits for the freeze" not in step(page, "commit")

    ends_at = timezone.now() + timedelta(hours=2)
    ChangeFreeze.objects.create(
        environment=world["env"]["production"],
        starts_at=timezone.now() - timedelta(minutes=1),
        ends_at=ends_at,
        reason="Year-end freeze",
    )
    page = page_for(world["viewer"], promotion.get_absolute_url()).content.decode()
    assert step_status(page, "commit") == "current"
    assert "queued for a worker" not in step(page, "commit")
    assert f"waits for the freeze of production to end at {timezone.localtime(ends_at):%Y-%m-%d %H:%M}" in step(
        page, "commit"
    )


def test_htmx_refreshes_only_the_live_part_of_the_promotion_page(world):
    promotion = transitions.request_promotion(world["release"], world["env"]["production"], world["rita"])
    response = page_for(
        world["viewer"], promotion.get_absolute_url(), headers={"HX-Request": "true", "HX-Target": "promotion-live"}
    )
    page = response.content.decode()
    assert page.startswith(f"<title>Promotion #{promotion.pk}: nexo-be 2026.02.1 → production · Nexo Release Portal")
    assert '<div id="promotion-live"' in page
    assert "<html" not in page


def test_an_unknown_promotion_is_404(world):
    assert page_for(world["viewer"], "/promotions/999999/").status_code == 404


# --- the release page ---------------------------------------------------------------------------


def test_the_release_page_shows_its_journey_identity_and_changelog(world):
    CheckResult.objects.create(
        release=world["release"],
        environment=world["env"]["qa"],
        name="e2e",
        passed=True,
        url="https://ci.example/run/7",
        reported_by="api-token:ci",
    )
    waiting = transitions.request_promotion(world["release"], world["env"]["production"], world["rita"])
    page = page_for(world["viewer"], world["release"].get_absolute_url()).content.decode()
    journey = page.split('id="journey-title"', 1)[1].split("</ol>", 1)[0]
    for name in ("develop", "qa", "staging"):
        stop = journey.split(f'data-environment="{name}"', 1)[1].split("</li>\n    <li", 1)[0]
        assert "running now" in stop
        assert "verified" in stop
    production = journey.split('data-environment="production"', 1)[1]
    assert "awaiting approval" in production
    assert f"#{waiting.pk}" in production
    assert "running now" not in production
    assert "e2e passed" in journey
    assert "https://ci.example/run/7" in journey
    release = world["release"]
    assert f'href="https://github.com/nexo-org/nexo-be/commit/{release.commit_sha}"' in page
    assert release.image_digest in page
    assert f"ghcr.io/nexo-org/nexo-be@{release.image_digest}" in page
    for tag in release.tags():
        assert f'<code class="tag">{tag}</code>' in page
    # The changelog is markdown, rendered (tests/test_what_ships.py tests its sanitising).
    assert "<ul>\n<li>feat: rate limiting</li>\n<li>fix: auth timeout</li>\n</ul>" in page


def test_the_release_page_keeps_a_changelogs_lines_and_folds_a_long_one(world):
    """A changelog of "feat: …" and "fix: …" lines was one paragraph, and one of 120 lines made the page
    some 8,000 px tall."""
    release = world["release"]
    release.changelog = "feat: rate limiting\nfix: auth timeout"
    release.save()
    long = make_release(world["service"], "2026.02.2", changelog="\n".join(f"- fix {n}" for n in range(1, 121)))

    short_page = page_for(world["viewer"], release.get_absolute_url()).content.decode()
    long_page = page_for(world["viewer"], long.get_absolute_url()).content.decode()

    assert "feat: rate limiting<br>\nfix: auth timeout" in short_page
    assert "<details" not in short_page.split('id="changelog-title"', 1)[1]
    changelog = long_page.split('id="changelog-title"', 1)[1].split("</section>", 1)[0]
    shown, folded = changelog.split("<details", 1)
    assert "<li>fix 12</li>" in shown
    assert "<summary>108 more lines</summary>" in folded
    assert "<li>fix 120</li>" in folded


def test_the_release_page_shows_the_newest_result_of_a_rerun_check_as_the_verdict_does(world):
    earlier = timezone.now() - timedelta(hours=1)
    CheckResult.objects.create(
        release=world["release"],
        environment=world["env"]["qa"],
        name="e2e",
        passed=False,
        reported_by="api-token:ci",
        reported_at=earlier,
    )
    CheckResult.objects.create(
        release=world["release"], environment=world["env"]["qa"], name="e2e", passed=True, reported_by="api-token:ci"
    )
    page = page_for(world["viewer"], world["release"].get_absolute_url()).content.decode()
    assert "e2e passed" in page
    assert "e2e failed" not in page
    assert "(1 earlier run)" in page


def test_an_unknown_release_is_404(world):
    assert page_for(world["viewer"], "/services/nexo-be/releases/2030.01.1/").status_code == 404


# --- the audit log ----------------------------------------------------------------------------------


@pytest.fixture
def history(world):
    promotion = transitions.request_promotion(world["release"], world["env"]["production"], world["rita"])
    transitions.approve(promotion, world["sam"], "ok")
    other = make_service("nexo-fe", team="frontend-team")
    audit.record(
        AuditAction.RELEASE_REGISTERED,
        actor="api-token:ci",
        service=other.name,
        version="2026.02.9",
        message="registered",
    )
    return promotion


def listed_actions(response):
    return [event.action for event in response.context["page"].object_list]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, [AuditAction.RELEASE_REGISTERED, AuditAction.PROMOTION_APPROVED, AuditAction.PROMOTION_REQUESTED]),
        ({"service": "nexo-fe"}, [AuditAction.RELEASE_REGISTERED]),
        ({"environment": "production"}, [AuditAction.PROMOTION_APPROVED, AuditAction.PROMOTION_REQUESTED]),
        ({"actor": "SA"}, [AuditAction.PROMOTION_APPROVED]),
        ({"action": AuditAction.PROMOTION_REQUESTED}, [AuditAction.PROMOTION_REQUESTED]),
        ({"since": "2000-01-01", "until": "2000-01-02"}, []),
    ],
)
def test_the_audit_log_filters_by_service_environment_actor_action_and_date(world, history, filters, expected):
    response = page_for(world["viewer"], "/audit/", data=filters)
    assert response.status_code == 200
    assert listed_actions(response) == expected


def test_todays_events_are_inside_a_date_range_ending_today(world, history):
    today = timezone.localdate().isoformat()
    response = page_for(world["viewer"], "/audit/", data={"since": today, "until": today})
    assert len(listed_actions(response)) == 3


def test_a_date_range_that_ends_before_it_starts_is_a_400_that_says_so(world, history):
    response = page_for(world["viewer"], "/audit/", data={"since": "2026-02-10", "until": "2026-02-01"})
    assert response.status_code == 400
    assert "The end date is before the start date." in response.content.decode()


def test_dates_at_the_end_of_the_calendar_are_a_400_not_a_500(world, history):
    response = page_for(world["viewer"], "/audit/", data={"until": "9999-12-31"})
    assert response.status_code == 400
    assert "Give a date between 1970-01-01 and 2999-12-31." in response.content.decode()


def test_the_audit_log_pages_through_long_histories_and_keeps_its_filters(world):
    for number in range(60):
        audit.record(
            AuditAction.RELEASE_REGISTERED, actor="api-token:ci", service="nexo-be", version=f"2026.02.{number + 1}"
        )
    first = page_for(world["viewer"], "/audit/", data={"service": "nexo-be"})
    assert len(first.context["page"].object_list) == 50
    assert 'href="?service=nexo-be&amp;page=2"' in first.content.decode()
    second = page_for(world["viewer"], "/audit/", data={"service": "nexo-be", "page": 2})
    assert len(second.context["page"].object_list) == 10


def audit_log_of_two_pages(world):
    for number in range(60):
        audit.record(
            AuditAction.RELEASE_REGISTERED, actor="api-token:ci", service="nexo-be", version=f"2026.02.{number + 1}"
        )
    assert page_for(world["viewer"], "/audit/").context["page"].paginator.num_pages == 2


@pytest.mark.parametrize("asked", ["0", "-1", "3", "2147483648", "9" * 40, "abc", "2.0", " 2", "last"])
def test_a_page_of_the_audit_log_that_does_not_exist_is_a_404_naming_those_that_do(world, asked):
    audit_log_of_two_pages(world)
    response = page_for(world["viewer"], "/audit/", data={"service": "nexo-be", "page": asked})
    assert response.status_code == 404
    page = response.content.decode()
    assert "give a page number from 1 to 2." in page
    assert 'href="/audit/?service=nexo-be">First page</a>' in page
    assert 'name="service"' in page  # the filters stay, to be changed


@pytest.mark.parametrize(("asked", "number"), [("", 1), ("1", 1), ("02", 2)])
def test_the_audit_log_pages_that_exist_are_given_by_their_number(world, asked, number):
    audit_log_of_two_pages(world)
    response = page_for(world["viewer"], "/audit/", data={"page": asked})
    assert response.status_code == 200
    assert response.context["page"].number == number


def test_an_audit_log_of_one_page_says_it_has_only_that_one(world):
    response = page_for(world["viewer"], "/audit/", data={"page": "2"})
    assert response.status_code == 404
    assert "There is no page 2: this list has only page 1." in response.content.decode()


def test_an_empty_audit_log_says_so(world):
    response = page_for(world["viewer"], "/audit/")
    assert "Nothing has been recorded yet." in response.content.decode()


def test_the_audit_log_shows_the_comments_of_rejections_and_cancellations(world):
    rejected = transitions.request_promotion(world["release"], world["env"]["production"], world["rita"])
    transitions.reject(rejected, world["sam"], "error budget <spent>")
    cancelled = transitions.request_promotion(world["release"], world["env"]["production"], world["rita"])
    transitions.cancel(cancelled, world["rita"], "wrong release, sorry")

    page = page_for(world["viewer"], "/audit/").content.decode()

    assert '<blockquote class="comment">“error budget &lt;spent&gt;”</blockquote>' in page
    assert '<blockquote class="comment">“wrong release, sorry”</blockquote>' in page


def export(user, **filters):
    """The per-step export (`per=step`); the per-promotion one is tests/test_audit_export.py's."""
    client = Client()
    client.force_login(user)
    response = client.get("/audit/export.json", {"per": "step", **filters})
    return response, json.loads(b"".join(response.streaming_content)) if response.status_code == 200 else None


def test_the_export_has_the_shape_of_the_structured_audit_log(world, history):
    transitions.approve(history, world["lead"])
    response, records = export(world["viewer"], environment="production")
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"].startswith('attachment; filename="nexo-audit-')
    requested, first_approval, second_approval = records
    assert requested["event"] == "promotion.requested"
    assert {
        key: requested[key]
        for key in ("service", "version", "from_environment", "to_environment", "initiator", "approvers", "rollback")
    } == {
        "service": "nexo-be",
        "version": "2026.02.1",
        "from_environment": "staging",
        "to_environment": "production",
        "initiator": "rita",
        "approvers": [],
        "rollback": False,
    }
    assert requested["timestamp"].endswith("Z")
    # Fields the event did not record come from its promotion as it was then.
    assert (second_approval["initiator"], second_approval["approvers"]) == ("rita", ["sam", "lead"])
    assert first_approval["approvers"] == ["sam"]
    assert second_approval["from_environment"] == "staging"
    event = AuditEvent.objects.get(pk=requested["id"])
    assert (requested["hash"], requested["previous_hash"]) == (event.hash, event.previous_hash)


def test_the_export_gives_the_validation_results_of_a_verdict(world):
    promotion = transitions.request_promotion(world["release"], world["env"]["production"], world["rita"])
    CheckResult.objects.create(
        release=world["release"], environment=world["env"]["production"], name="smoke", passed=True, reported_by="ci"
    )
    CheckResult.objects.create(
        release=world["release"],
        environment=world["env"]["production"],
        name="load-test",
        passed=False,
        reported_by="ci",
    )
    audit.record(
        AuditAction.PROMOTION_VERIFIED,
        actor="pipeline",
        service="nexo-be",
        environment="production",
        version="2026.02.1",
        promotion=promotion,
        message="verified",
    )
    _, records = export(world["viewer"], action=AuditAction.PROMOTION_VERIFIED)
    assert records[0]["validation_results"] == {"smoke": "passed", "load-test": "failed"}


def test_a_rollback_is_exported_as_one(world, paulo):  # paulo could approve it
    newer = make_release(world["service"], "2026.02.2")
    ran(newer, world["env"]["staging"])
    transitions.request_rollback(world["service"], world["env"]["staging"], world["rita"], release=world["release"])
    _, records = export(world["viewer"], action=AuditAction.PROMOTION_REQUESTED)
    assert [(r["version"], r["rollback"]) for r in records] == [("2026.02.1", True)]
    assert records[0]["data"]["kind"] == PromotionKind.ROLLBACK


def test_an_export_with_bad_filters_is_a_400_with_the_errors(world):
    response, _ = export(world["viewer"], since="yesterday")
    assert response.status_code == 400
    assert response.json()["errors"]["since"][0]["message"] == "Enter a valid date."


# --- sign-in --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["/audit/", "/audit/export.json", "/services/nexo-be/environments/production/promote/2026.02.1/"]
)
def test_every_page_needs_sign_in(client, world, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_a_missing_page_is_a_friendly_404_inside_the_portal(world):
    response = page_for(world["viewer"], "/services/nexo-be/releases/2030.01.1/")
    page = response.content.decode()
    assert response.status_code == 404
    assert "<h1>Not found</h1>" in page
    assert "Back to the board" in page


def test_a_post_without_csrf_token_says_the_form_expired(world):
    client = Client(enforce_csrf_checks=True)
    client.force_login(world["sam"])
    response = client.post("/audit/")
    assert response.status_code == 403
    assert "The form expired" in response.content.decode()


def test_the_500_page_renders_without_any_context():
    from django.test import RequestFactory
    from django.views.defaults import server_error

    response = server_error(RequestFactory().get("/"))
    assert response.status_code == 500
    assert "Something went wrong" in response.content.decode()
