"""The promotion board: what each cell says, what it offers to whom, filters, refresh and query count."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from environments.models import ChangeFreeze
from nexo_portal.lib.dates import exact_time
from releases import steps, transitions
from releases.board import build_board
from releases.models import Deployment, Hold, Promotion, PromotionState, RunStatus, Step, StepRun, StepStatus
from tests.factories import make_release, make_service, make_user
from tests.history import action_link, cell_html, ran

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(environments, rita, sam, lead, paulo, viewer):
    return {"rita": rita, "sam": sam, "lead": lead, "paulo": paulo, "viewer": viewer}


@pytest.fixture
def nexo_be(environments):
    return make_service("nexo-be", team="backend-team")


def signed_in(client, user):
    client.force_login(user)
    return client


def board_cell(user, service, environment, **filters):
    board = build_board(user, **filters)
    row = next(row for row in board.rows if row.service.name == service)
    return next(cell for cell in row.cells if cell.environment.name == environment)


def test_columns_follow_the_pipeline_and_each_cell_says_what_runs_there(client, environments, people, nexo_be):
    release = make_release(nexo_be, "2026.02.1")
    ran(release, environments["develop"], at=timezone.now() - timedelta(hours=3))
    response = signed_in(client, people["viewer"]).get("/")
    assert response.status_code == 200
    page = response.content.decode()
    headers = [page.index(f">{name}\n") for name in ("develop", "qa", "staging", "production")]
    assert headers == sorted(headers)
    develop = cell_html(response, "nexo-be", "develop")
    assert "2026.02.1" in develop
    assert "deployed <time" in develop
    assert "3 h ago" in develop
    assert '<span class="badge ok">verified</span>' in develop
    assert "not deployed" in cell_html(response, "nexo-be", "production")


def test_a_soaking_deployment_shows_the_time_left_and_a_progress_bar(client, environments, people, nexo_be):
    now = timezone.now()
    ran(
        make_release(nexo_be, "2026.02.1"),
        environments["develop"],
        state=PromotionState.VERIFYING,
        verification_started_at=now - timedelta(minutes=10),
        verdict_at=now + timedelta(minutes=20),
        verification_status=StepStatus.RUNNING,
    )
    cell = cell_html(signed_in(client, people["viewer"]).get("/"), "nexo-be", "develop")
    assert "soaking, 19 min left" in cell or "soaking, 20 min left" in cell
    assert '<progress max="100" value="33"' in cell


def test_a_soak_whose_verdict_is_overdue_says_so_as_its_page_does(client, environments, people, nexo_be):
    """Its worker was killed during the soak and none runs: the window ended 50 s ago. The promotion page
    says "verdict overdue since …"; the cell does not say "soak over, verdict next" beside it."""
    now = timezone.now()
    soaking = ran(
        make_release(nexo_be, "2026.02.1"),
        environments["develop"],
        state=PromotionState.VERIFYING,
        at=now - timedelta(seconds=75),
        verification_started_at=now - timedelta(seconds=70),
        verdict_at=now - timedelta(seconds=50),
        verification_status=StepStatus.RUNNING,
    )
    steps.schedule(soaking, Step.VERIFY, at=now - timedelta(seconds=55))
    signed_in(client, people["viewer"])
    overdue = f"verdict overdue since {timezone.localtime(soaking.verdict_at):%H:%M:%S}"

    cell = cell_html(client.get("/"), "nexo-be", "develop")

    assert overdue in cell
    assert "verdict next" not in cell
    assert overdue in client.get(soaking.get_absolute_url()).content.decode()


def test_a_soak_just_over_says_its_verdict_comes_next(environments, people, nexo_be):
    """Its last round runs at the verdict's time: late is 15 s past it, for the board as for the page."""
    now = timezone.now()
    ran(
        make_release(nexo_be, "2026.02.1"),
        environments["develop"],
        state=PromotionState.VERIFYING,
        verification_started_at=now - timedelta(seconds=25),
        verdict_at=now - timedelta(seconds=5),
        verification_status=StepStatus.RUNNING,
    )
    assert board_cell(people["viewer"], "nexo-be", "develop").verification.label == "soak over, verdict next"


@pytest.mark.parametrize(
    ("state", "status", "expected"),
    [
        (PromotionState.FAILED, StepStatus.FAILED, "failed at verification"),
        (PromotionState.VERIFIED, StepStatus.NOT_CONFIGURED, "verified, nothing checked"),
        (PromotionState.ROLLED_BACK, StepStatus.PASSED, "rolled back"),
    ],
)
def test_the_verification_state_of_what_runs_is_said_plainly(environments, people, nexo_be, state, status, expected):
    ran(
        make_release(nexo_be, "2026.02.1"),
        environments["develop"],
        state=state,
        verification_status=status,
        failed_step="verification" if state == PromotionState.FAILED else "",
    )
    assert board_cell(people["viewer"], "nexo-be", "develop").verification.label == expected


def test_a_deployment_imported_from_gitops_history_is_not_called_verified(environments, people, nexo_be):
    release = make_release(nexo_be, "2026.02.1")
    Deployment.objects.create(
        service=nexo_be, environment=environments["develop"], release=release, deployed_at=timezone.now()
    )
    assert board_cell(people["viewer"], "nexo-be", "develop").verification.label == "not verified here"


def test_builds_behind_counts_the_releases_in_between_across_months_and_warns_past_the_threshold(
    client, environments, people, nexo_be
):
    january = [make_release(nexo_be, f"2026.01.{build}") for build in range(1, 31)]
    february = [make_release(nexo_be, f"2026.02.{build}") for build in range(1, 3)]
    start = timezone.now() - timedelta(days=2)
    ran(january[0], environments["staging"], at=start)
    ran(january[25], environments["qa"], at=start + timedelta(hours=1))
    ran(february[1], environments["develop"], at=start + timedelta(hours=2))

    qa = board_cell(people["viewer"], "nexo-be", "qa")
    assert qa.builds_behind == 6  # 2026.01.27 … 2026.01.30, 2026.02.1, 2026.02.2
    assert (qa.drift.label, qa.drift.tone) == ("6 builds behind develop", "")
    staging = board_cell(people["viewer"], "nexo-be", "staging")
    assert staging.builds_behind == 25
    assert (staging.drift.label, staging.drift.tone) == (
        "25 builds behind qa: worth a promotion",
        "warn",
    )  # threshold: 20
    assert board_cell(people["viewer"], "nexo-be", "develop").drift is None
    assert 'class="drift warn"' in cell_html(signed_in(client, people["viewer"]).get("/"), "nexo-be", "staging")


def test_an_environment_ahead_of_the_one_before_says_so(environments, people, nexo_be):
    old, new = make_release(nexo_be, "2026.02.1"), make_release(nexo_be, "2026.02.2")
    ran(new, environments["qa"], at=timezone.now() - timedelta(hours=1))
    ran(old, environments["develop"])
    qa = board_cell(people["viewer"], "nexo-be", "qa")
    assert qa.builds_behind == -1
    assert qa.drift.label == "ahead of develop"


def test_one_build_ahead_is_said_in_the_singular(environments, people, nexo_be):
    old, new = make_release(nexo_be, "2026.02.1"), make_release(nexo_be, "2026.02.2")
    ran(new, environments["qa"], at=timezone.now() - timedelta(hours=1))
    ran(old, environments["develop"])
    assert board_cell(people["viewer"], "nexo-be", "qa").drift.title == "1 build newer than develop"


def test_the_request_offers_the_newest_release_verified_in_the_environment_before(environments, people, nexo_be):
    older, newer, newest = (make_release(nexo_be, f"2026.02.{build}") for build in (1, 2, 3))
    start = timezone.now() - timedelta(days=1)
    ran(older, environments["qa"], at=start)
    ran(newer, environments["qa"], at=start + timedelta(hours=1))
    ran(
        newest,
        environments["qa"],
        state=PromotionState.FAILED,
        failed_step="verification",
        at=start + timedelta(hours=2),
    )
    ran(older, environments["staging"], at=start + timedelta(hours=3))

    staging = board_cell(people["rita"], "nexo-be", "staging")
    assert staging.candidate.version == "2026.02.2"  # 2026.02.3 failed in qa: not a candidate
    request = next(action for action in staging.actions if action.kind == "request")
    assert request.label == "Promote 2026.02.2"
    assert request.allowed
    assert request.url.startswith("/services/nexo-be/environments/staging/promote/2026.02.2/?next=")


def test_nothing_is_offered_where_the_environment_already_runs_the_newest_verified_release(
    environments, people, nexo_be
):
    release = make_release(nexo_be, "2026.02.1")
    ran(release, environments["develop"])
    ran(release, environments["qa"])
    assert board_cell(people["rita"], "nexo-be", "qa").candidate is None
    assert [a.kind for a in board_cell(people["rita"], "nexo-be", "qa").actions] == ["rollback"]


def test_the_first_environment_offers_the_newest_registered_build(environments, people, nexo_be):
    make_release(nexo_be, "2026.02.1")
    make_release(nexo_be, "2026.02.2")
    develop = board_cell(people["rita"], "nexo-be", "develop")
    assert develop.candidate.version == "2026.02.2"


def test_a_promotion_waiting_for_approval_shows_how_many_it_has_of_how_many(client, environments, people, nexo_be):
    release = make_release(nexo_be, "2026.02.1")
    for name in ("develop", "qa", "staging"):
        ran(release, environments[name])
    promotion = transitions.request_promotion(release, environments["production"], people["rita"])
    transitions.approve(promotion, people["sam"], "looks good")
    cell = cell_html(signed_in(client, people["viewer"]).get("/"), "nexo-be", "production")
    assert f'<a href="/promotions/{promotion.pk}/">2026.02.1</a>' in cell
    assert "awaiting approval 1/2" in cell


@pytest.mark.parametrize(
    ("state", "label"),
    [
        (PromotionState.APPROVED, "approved, commit queued"),
        (PromotionState.COMMITTING, "committing"),
        (PromotionState.SYNCING, "syncing"),
    ],
)
def test_a_promotion_on_its_way_shows_its_step_and_blocks_a_new_request(environments, people, nexo_be, state, label):
    release = make_release(nexo_be, "2026.02.1")
    ran(release, environments["develop"])
    promotion = transitions.request_promotion(release, environments["qa"], people["rita"])
    type(promotion).objects.filter(pk=promotion.pk).update(state=state)
    newer = make_release(nexo_be, "2026.02.2")
    ran(newer, environments["develop"])
    qa = board_cell(people["rita"], "nexo-be", "qa")
    assert qa.waiting_label == label
    request = next(action for action in qa.actions if action.kind == "request")
    assert request.label == "Promote 2026.02.2"
    assert not request.allowed
    # Why not, as the promotion page of a failed one says it of its own request (actions.request_action).
    assert request.why_not.startswith(f"nexo-be 2026.02.1 → qa is already {label.split(',')[0]} (promotion #")


def tried_again(promotion, error, *, status=RunStatus.RETRY, next_try=None):
    """The promotion's step ran and ended as `status` with `error`; the next run waits for `next_try`."""
    now = timezone.now()
    run = StepRun.objects.get(promotion=promotion, status=RunStatus.QUEUED)
    StepRun.objects.filter(pk=run.pk).update(status=status, started_at=now, finished_at=now, error=error)
    return StepRun.objects.create(
        promotion=promotion,
        step=run.step,
        run_after=next_try or now,
        created_at=now,
        troubled_since=now if status == RunStatus.RETRY else None,
    )


def committing_in_qa(nexo_be, rita, environments):
    release = make_release(nexo_be, "2026.02.1")
    ran(release, environments["develop"])
    promotion = transitions.request_promotion(release, environments["qa"], rita)  # no approval needed: queued
    Promotion.objects.filter(pk=promotion.pk).update(state=PromotionState.COMMITTING)
    return promotion


def test_a_promotion_whose_step_is_tried_again_says_why_and_when(client, environments, people, nexo_be, settings):
    settings.TIME_ZONE = "Europe/Lisbon"
    promotion = committing_in_qa(nexo_be, people["rita"], environments)
    assert board_cell(people["rita"], "nexo-be", "qa").waiting_label == "committing"
    error = (
        "GitOpsUnavailable: Cannot reach the GitOps repository /srv/gitops.git: fatal: /srv/gitops.git does not "
        "appear to be a git repository"
    )
    next_try = timezone.now() + timedelta(seconds=40)
    tried_again(promotion, error, next_try=next_try)
    qa = board_cell(people["rita"], "nexo-be", "qa")
    assert qa.waiting_label == f"committing — GitOps unreachable, next try {timezone.localtime(next_try):%H:%M}"
    assert qa.waiting_title == f"Tried again after: {error}"
    # What the promotion page lists, from the same runs.
    page = signed_in(client, people["rita"]).get(promotion.get_absolute_url()).content.decode()
    assert error in page
    assert "Next try at" in page


@pytest.mark.parametrize(
    ("status", "error", "words"),
    [
        (
            RunStatus.RETRY,
            "GitOpsUnavailable: Cannot take the lock on main: Redis did not answer",
            "GitOps unavailable",
        ),
        (RunStatus.RETRY, "RegistryUnavailable: ghcr.io answered 503", "registry unavailable"),
        (RunStatus.RETRY, "OperationalError: server closed the connection unexpectedly", "database unavailable"),
        (RunStatus.RETRY, "interrupted: could not connect to server", "database unavailable"),
        (RunStatus.CRASHED, "ValueError: invalid literal for int()", "crashed"),
        (RunStatus.CRASHED, "its worker host:12 stopped renewing its lease", "its worker stopped"),
    ],
)
def test_a_step_tried_again_is_said_in_a_few_words_on_the_board(environments, people, nexo_be, status, error, words):
    promotion = committing_in_qa(nexo_be, people["rita"], environments)
    tried_again(promotion, error, status=status)  # due now: a worker is about to take it
    assert board_cell(people["rita"], "nexo-be", "qa").waiting_label == f"committing — {words}, trying again"


def test_a_step_tried_again_costs_the_board_no_query(client, environments, people, nexo_be):
    promotion = committing_in_qa(nexo_be, people["rita"], environments)
    signed_in(client, people["rita"])
    with CaptureQueriesContext(connection) as before:
        client.get("/")
    tried_again(promotion, "GitOpsUnavailable: Cannot reach the GitOps repository x: Connection refused")
    with CaptureQueriesContext(connection) as after:
        page = client.get("/").content.decode()
    assert "committing — GitOps unreachable, trying again" in page
    assert len(after) == len(before)


def test_a_step_that_went_well_after_a_retry_is_not_said_to_be_retried(environments, people, nexo_be):
    promotion = committing_in_qa(nexo_be, people["rita"], environments)
    run = tried_again(promotion, "GitOpsUnavailable: Cannot reach the GitOps repository x: Connection refused")
    StepRun.objects.filter(pk=run.pk).update(status=RunStatus.DONE, started_at=timezone.now())
    StepRun.objects.create(promotion=promotion, step=Step.SYNC)
    Promotion.objects.filter(pk=promotion.pk).update(state=PromotionState.COMMITTED)
    assert board_cell(people["rita"], "nexo-be", "qa").waiting_label == "committed, sync next"


def test_a_rejected_request_stays_visible_with_who_rejected_it(environments, people, nexo_be):
    release = make_release(nexo_be, "2026.02.1")
    for name in ("develop", "qa", "staging"):
        ran(release, environments[name])
    promotion = transitions.request_promotion(release, environments["production"], people["rita"])
    transitions.reject(promotion, people["sam"], "error budget is spent")
    production = board_cell(people["viewer"], "nexo-be", "production")
    assert production.waiting is None
    assert production.stopped_label == "rejected by sam just now"


def test_the_requester_sees_approve_as_unavailable_and_why(client, environments, people, nexo_be):
    release = make_release(nexo_be, "2026.02.1")
    for name in ("develop", "qa", "staging"):
        ran(release, environments[name])
    transitions.request_promotion(release, environments["production"], people["rita"])
    cell = cell_html(signed_in(client, people["rita"]).get("/"), "nexo-be", "production")
    approve = action_link(cell, "approve")
    assert "unavailable" in approve
    assert "You requested this promotion; another approver from platform-leads or sre-team must approve it." in approve
    assert action_link(cell, "reject") is None
    assert "unavailable" not in action_link(cell, "cancel")  # the requester may withdraw it


def test_an_sre_may_approve_and_reject_but_a_platform_engineer_may_not_in_production(
    client, environments, people, nexo_be
):
    release = make_release(nexo_be, "2026.02.1")
    for name in ("develop", "qa", "staging"):
        ran(release, environments[name])
    transitions.request_promotion(release, environments["production"], people["rita"])
    sre_cell = cell_html(signed_in(client, people["sam"]).get("/"), "nexo-be", "production")
    assert "unavailable" not in action_link(sre_cell, "approve")
    assert "unavailable" not in action_link(sre_cell, "reject")
    platform_cell = cell_html(signed_in(client, people["paulo"]).get("/"), "nexo-be", "production")
    assert "Only members of platform-leads or sre-team may approve promotions into production." in action_link(
        platform_cell, "approve"
    )


def test_someone_outside_every_group_sees_requests_as_unavailable_and_no_rollback(
    client, environments, people, nexo_be
):
    release = make_release(nexo_be, "2026.02.1")
    ran(release, environments["develop"])
    cell = cell_html(signed_in(client, people["viewer"]).get("/"), "nexo-be", "qa")
    assert "unavailable" in action_link(cell, "request")
    assert '· <span class="why">why not?</span></summary>' in cell  # folded behind one "why not?"
    assert action_link(cell_html(client.get("/"), "nexo-be", "develop"), "rollback") is None


def test_a_rollback_nobody_else_could_approve_is_unavailable_and_says_why_until_someone_could(
    client, environments, rita, nexo_be
):
    # Nobody is in platform-team, staging's approver group: a rollback rita asked for there would wait forever.
    release = make_release(nexo_be, "2026.02.1")
    for name in ("develop", "qa", "staging"):
        promotion = ran(release, environments[name])
    why = (
        "A rollback in staging needs one approval from platform-team, and nobody other than you can give one: "
        "it could never be approved."
    )
    signed_in(client, rita)
    rollback = action_link(cell_html(client.get("/"), "nexo-be", "staging"), "rollback")
    assert "unavailable" in rollback
    assert why in rollback
    page = client.get(promotion.get_absolute_url()).content.decode()
    assert action_link(page, "rollback") is None
    assert '<span class="button unavailable">Roll back…</span>' in page
    assert why in page

    make_user("paulo", groups=["platform-team"])  # a platform engineer could approve it
    assert "unavailable" not in action_link(cell_html(client.get("/"), "nexo-be", "staging"), "rollback")
    page = client.get(promotion.get_absolute_url()).content.decode()
    assert "unavailable" not in action_link(page, "rollback")
    assert why not in page


def test_a_frozen_environment_without_break_glass_refuses_requests_on_the_board(client, environments, people, nexo_be):
    release = make_release(nexo_be, "2026.02.1")
    ran(release, environments["develop"])
    ran(release, environments["qa"])
    ChangeFreeze.objects.create(
        environment=environments["staging"],
        starts_at=timezone.now() - timedelta(hours=1),
        ends_at=timezone.now() + timedelta(hours=5),
        reason="quarter close",
    )
    response = signed_in(client, people["rita"]).get("/")
    assert '<span class="policy">quarter close</span>' in response.content.decode()
    assert "unavailable" in action_link(cell_html(response, "nexo-be", "staging"), "request")


def test_a_frozen_environment_that_allows_break_glass_offers_the_request_as_break_glass_only(
    client, environments, people, nexo_be
):
    release = make_release(nexo_be, "2026.02.1")
    for name in ("develop", "qa", "staging"):
        ran(release, environments[name])
    promote = action_link(cell_html(signed_in(client, people["sam"]).get("/"), "nexo-be", "production"), "request")
    assert "primary" in promote

    ends_at = timezone.now() + timedelta(hours=5)
    ChangeFreeze.objects.create(
        environment=environments["production"],
        starts_at=timezone.now() - timedelta(hours=1),
        ends_at=ends_at,
        reason="Year-end freeze",
    )
    assert environments["production"].allows_break_glass
    promote = action_link(cell_html(client.get("/"), "nexo-be", "production"), "request")
    assert "unavailable" not in promote  # an incident may still need it
    assert "primary" not in promote
    assert ">Promote 2026.02.1 (break-glass)</a>" in promote
    assert f"frozen until {timezone.localtime(ends_at):%Y-%m-%d %H:%M %Z}: Year-end freeze." in promote
    assert "Only a break-glass promotion may enter now." in promote


@pytest.mark.parametrize(
    ("push_failed", "state", "label"),
    [(False, "approved", "approved, commit queued"), (True, "committing", "committing")],
    ids=["approved", "committing"],
)
def test_an_approved_promotion_held_by_a_freeze_says_it_waits_for_the_freeze(
    client, environments, people, nexo_be, push_failed, state, label
):
    release = make_release(nexo_be, "2026.02.1")
    for name in ("develop", "qa", "staging"):
        ran(release, environments[name])
    promotion = transitions.request_promotion(release, environments["production"], people["rita"])
    transitions.approve(promotion, people["sam"])
    promotion = transitions.approve(promotion, people["lead"])
    if push_failed:  # its commit written before the freeze, the push refused by a Git outage
        transitions.start_commit(promotion)
    assert board_cell(people["viewer"], "nexo-be", "production").waiting_label == label

    ends_at = timezone.now() + timedelta(hours=2)
    ChangeFreeze.objects.create(
        environment=environments["production"],
        starts_at=timezone.now() - timedelta(minutes=1),
        ends_at=ends_at,
        reason="Year-end freeze",
    )
    production = cell_html(signed_in(client, people["viewer"]).get("/"), "nexo-be", "production")
    assert f">{state}, waits for the freeze</span>" in production
    assert f"waits until {timezone.localtime(ends_at):%Y-%m-%d %H:%M %Z} (Year-end freeze)" in production


def test_a_hold_after_a_rollback_is_shown(environments, people, nexo_be):
    ran(make_release(nexo_be, "2026.02.1"), environments["qa"])
    Hold.objects.create(
        service=nexo_be, environment=environments["qa"], reason="Rolled back to 2026.02.1", placed_by="pipeline"
    )
    assert board_cell(people["viewer"], "nexo-be", "qa").hold_reason == "Rolled back to 2026.02.1"


def test_a_hold_where_nothing_was_ever_deployed_is_shown_with_its_lift(client, environments, people, nexo_be):
    """A new service whose first sync into develop failed: the automatic rollback cannot start, develop is
    held, and every later build silently waits. The hold rode on the deployment row, so the cell said only
    "not deployed" (and, for a day, the failure) with a bright Promote button."""
    develop = environments["develop"]
    now = timezone.now()
    first = Promotion.objects.create(
        release=make_release(nexo_be, "2026.02.1"),
        environment=develop,
        state=PromotionState.SYNCING,
        requested_at=now,
        approved_at=now,
        commit_started_at=now,
        committed_at=now,
        sync_started_at=now,
        gitops_commit_sha="c" * 40,
    )
    transitions.fail(first, "sync", "ComparisonError: helm template failed")
    hold = Hold.objects.active().get(service=nexo_be, environment=develop)

    cell = cell_html(signed_in(client, people["rita"]).get("/"), "nexo-be", "develop")

    assert "not deployed" in cell
    assert "automatic promotions on hold: The automatic rollback of 2026.02.1 could not start" in cell
    assert f"/holds/{hold.pk}/lift/" in action_link(cell, "lift")


def test_why_a_place_is_held_or_failed_is_readable_without_hovering(client, environments, people, nexo_be):
    ran(make_release(nexo_be, "2026.02.1"), environments["qa"])
    Hold.objects.create(
        service=nexo_be, environment=environments["qa"], reason="Rolled back to 2026.02.1", placed_by="pipeline"
    )
    ran(
        make_release(nexo_be, "2026.02.2"),
        environments["develop"],
        state=PromotionState.FAILED,
        verification_status=StepStatus.FAILED,
        failed_step="verification",
        error="error rate 7.2% over 5% in 3 of 4 samples",
    )
    page = signed_in(client, people["viewer"]).get("/")
    assert "automatic promotions on hold: Rolled back to 2026.02.1" in cell_html(page, "nexo-be", "qa")
    assert '<div class="small reason">error rate 7.2% over 5% in 3 of 4 samples</div>' in cell_html(
        page, "nexo-be", "develop"
    )


def test_a_failure_the_hold_tells_is_told_once(client, environments, people, nexo_be):
    """The error was printed under "failed at verification" and again in the hold placed for it."""
    staging = environments["staging"]
    staging.rollback_on_failed_verification = True
    staging.save()
    ran(make_release(nexo_be, "2026.02.1"), staging, at=timezone.now() - timedelta(hours=1))
    failing = ran(make_release(nexo_be, "2026.02.2"), staging, state=PromotionState.VERIFYING)
    transitions.fail(failing, "verification", "error rate 7.2% over 5% in 3 of 4 samples", roll_back=False)
    hold = Hold.objects.active().get(service=nexo_be, environment=staging)
    assert hold.reason.endswith(": error rate 7.2% over 5% in 3 of 4 samples")  # told by the hold

    cell = cell_html(signed_in(client, people["viewer"]).get("/"), "nexo-be", "staging")

    shown = re.sub(r"<[^>]+>", " ", cell)  # what is read without hovering
    assert shown.count("error rate 7.2% over 5% in 3 of 4 samples") == 1, shown
    assert "automatic promotions on hold: 2026.02.2 failed at verification" in cell
    assert "failed at verification</span>" in cell


def test_health_comes_from_argo_cd_or_the_board_says_it_is_not_configured(
    client, environments, people, nexo_be, settings
):
    release = make_release(nexo_be, "2026.02.1")
    deployed = ran(release, environments["develop"]).deployed_at
    Deployment.objects.filter(release=release).update(health="Degraded")
    settings.ARGOCD_URL = ""
    response = signed_in(client, people["viewer"]).get("/")
    assert "Argo CD is not configured:" in response.content.decode()
    settings.ARGOCD_URL = "https://argocd.example"
    response = client.get("/")
    assert "Argo CD is not configured:" not in response.content.decode()
    badge = f'<span class="badge bad" title="Argo CD health since {exact_time(deployed)}">Degraded</span>'
    assert badge in cell_html(response, "nexo-be", "develop")


def test_health_says_since_when_argo_cd_has_reported_it(client, environments, people, nexo_be, settings):
    """Recorded at the deployment, and again each time the reconciler or a webhook finds it changed."""
    settings.ARGOCD_URL = "https://argocd.example"
    ran(make_release(nexo_be, "2026.02.1"), environments["develop"], at=timezone.now() - timedelta(days=2))
    changed = timezone.now() - timedelta(minutes=7)
    Deployment.objects.update(health="Degraded", health_checked_at=changed)
    cell = cell_html(signed_in(client, people["viewer"]).get("/"), "nexo-be", "develop")
    assert f'title="Argo CD health since {exact_time(changed)}">Degraded</span>' in cell


def test_filters_by_team_and_by_service_keep_every_choice_available(client, environments, people, nexo_be):
    make_service("nexo-fe", team="frontend-team")
    make_service("nexo-auth", team="backend-team")
    signed_in(client, people["viewer"])
    by_team = client.get("/", {"team": "backend-team"})
    assert [row.service.name for row in by_team.context["board"].rows] == ["nexo-auth", "nexo-be"]
    assert by_team.context["board"].service_names == ["nexo-auth", "nexo-be", "nexo-fe"]
    assert by_team.context["board"].teams == ["backend-team", "frontend-team"]
    by_service = client.get("/", {"service": "nexo-fe"})
    assert [row.service.name for row in by_service.context["board"].rows] == ["nexo-fe"]
    assert '<div id="board" hx-get="/?service=nexo-fe"' in by_service.content.decode()  # the refresh keeps the filter


def test_a_filter_that_matches_nothing_says_so(client, people, nexo_be):
    make_service("nexo-fe", team="frontend-team")
    response = signed_in(client, people["viewer"]).get("/", {"team": "backend-team", "service": "nexo-fe"})
    assert response.status_code == 200
    assert "No service matches these filters." in response.content.decode()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"team": "no-such-team"}, "No team owns a service under the name “no-such-team”."),
        ({"service": "nexo-bee"}, "There is no service called “nexo-bee”."),
        ({"team": "backend-team", "service": "nexo-bee"}, "There is no service called “nexo-bee”."),
    ],
)
def test_a_filter_naming_a_team_or_service_that_does_not_exist_is_a_404_that_names_it(
    client, people, nexo_be, query, message
):
    response = signed_in(client, people["viewer"]).get("/", query)
    assert response.status_code == 404
    page = response.content.decode()
    assert message in page
    assert "No service matches these filters." not in page
    assert '<select id="filter-team" name="team">' in page  # the filters stay, to pick one that exists
    assert 'hx-trigger="every' not in page  # nothing to refresh: a refresh would only fail
    assert "refreshes by itself" not in page


def test_an_empty_portal_says_where_services_come_from(client, environments, people):
    response = signed_in(client, people["viewer"]).get("/")
    assert "No services yet." in response.content.decode()


def test_a_portal_with_services_and_no_environment_yet_shows_the_board(client, db, viewer):
    make_service("nexo-be", team="backend-team")
    response = signed_in(client, viewer).get("/")
    assert response.status_code == 200
    assert 'data-service="nexo-be"' in response.content.decode()


def test_the_htmx_refresh_gets_only_the_board_and_keeps_the_filters(client, people, nexo_be):
    signed_in(client, people["viewer"])
    response = client.get("/", {"team": "backend-team"}, headers={"HX-Request": "true", "HX-Target": "board"})
    page = response.content.decode()
    assert page.startswith("<title>Promotion board · Nexo Release Portal</title>")  # the tab title, kept current
    assert '<div id="board" hx-get="/?team=backend-team"' in page
    assert "<html" not in page
    assert 'hx-trigger="every 5s"' in page
    assert "HX-Request" in response["Vary"]
    assert "<html" in client.get("/").content.decode()


def fill(environments, numbers, rita):
    for number in numbers:
        service = make_service(f"svc-{number:03d}", team="backend-team")
        releases = [make_release(service, f"2026.02.{build}") for build in range(1, 4)]
        start = timezone.now() - timedelta(days=1)
        ran(releases[0], environments["production"], at=start)
        ran(releases[1], environments["staging"], at=start + timedelta(hours=1))
        ran(releases[1], environments["qa"], at=start + timedelta(hours=2))
        ran(releases[2], environments["develop"], at=start + timedelta(hours=3))
        transitions.request_promotion(releases[1], environments["production"], rita)


def test_the_query_count_does_not_grow_with_services_or_releases(
    client, django_assert_max_num_queries, environments, people
):
    signed_in(client, people["sam"])
    counts = []
    for numbers, total in ((range(0, 5), 5), (range(5, 50), 50)):
        fill(environments, numbers, people["rita"])
        # The board's, the session and the user (12), the state version, and what waits for the reader
        # (releases/waiting.py: the promotions awaiting approval with their approvals and approver groups).
        with CaptureQueriesContext(connection) as queries, django_assert_max_num_queries(14):
            response = client.get("/")
        assert len(response.context["board"].rows) == total
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_approvals_and_rejections_cost_the_board_no_query_per_promotion(client, environments, people, sara):
    """The board reads every waiting or stopped promotion's approvals in one query (prefetched into a
    list, policy.approvals_of), and its labels say what they count."""
    signed_in(client, people["sam"])
    fill(environments, range(0, 6), people["rita"])
    with CaptureQueriesContext(connection) as without_decisions:
        client.get("/")
    waiting = list(Promotion.objects.filter(state=PromotionState.AWAITING_APPROVAL).order_by("pk"))
    for promotion in waiting[:5]:
        transitions.approve(promotion, sara, "canary is clean")
    transitions.reject(waiting[5], sara, "not during the sale")
    with CaptureQueriesContext(connection) as with_decisions:
        page = client.get("/").content.decode()
    assert len(with_decisions) == len(without_decisions)
    assert page.count("awaiting approval 1/2") == 5
    assert "rejected by sara" in page


@pytest.mark.parametrize("query", ["team=%00", "service=nexo%00be"])
def test_a_nul_in_a_filter_is_a_400_page_that_says_so(client, viewer, query):
    client.force_login(viewer)
    response = client.get(f"/?{query}")
    assert response.status_code == 400
    assert "Contains the control character U+0000" in response.content.decode()
    assert response.templates[0].name == "400.html"
