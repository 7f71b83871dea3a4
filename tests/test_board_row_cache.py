"""The board reuses rows it rendered before while everything they show is the same.

Each test renders a busy board (so its rows are kept), changes one thing a person would see, and
renders it again: the rows must be exactly those of a board rendered from nothing, and the change
must show, so that a key missing what a row depends on fails here as a stale row.
"""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.utils import timezone

from environments.models import ChangeFreeze, Environment
from releases import reconciler, transitions
from releases.board import build_board
from releases.models import Deployment, Hold, Promotion, PromotionState, RunStatus, Service, Step, StepRun, StepStatus
from releases.templatetags import board_cells
from tests.factories import make_release, make_service, make_user
from tests.history import cell_html, ran

pytestmark = pytest.mark.django_db


def rows(user, now):
    """The board's rows as `user` sees them at `now`, through the rendered rows kept so far."""
    return board_cells.board_rows(build_board(User.objects.get(pk=user.pk), now=now).rows)


def fresh_rows(user, now):
    board_cells._forget_rendered_rows()
    return rows(user, now)


@pytest.fixture
def board(environments, rita, sam, paulo, settings):
    """nexo-be soaking in develop, running in qa and staging and awaiting approval for production;
    nexo-fe with a request into staging rejected; nexo-api running in develop, nothing else."""
    settings.ARGOCD_URL = "https://argocd.example.com"
    now = timezone.now()
    backend = make_service("nexo-be", team="backend-team")
    first, second, third = (make_release(backend, f"2026.02.{build}") for build in (1, 2, 3))
    ran(
        third,
        environments["develop"],
        state=PromotionState.VERIFYING,
        at=now - timedelta(minutes=5),
        verification_started_at=now - timedelta(minutes=5),
        verdict_at=now + timedelta(minutes=25),
        verification_status=StepStatus.RUNNING,
    )
    ran(second, environments["qa"], at=now - timedelta(minutes=40))
    ran(first, environments["staging"], at=now - timedelta(days=3))
    waiting = transitions.request_promotion(first, environments["production"], rita)

    frontend = make_service("nexo-fe", team="frontend-team")
    shipped, rejected = make_release(frontend, "2026.02.1"), make_release(frontend, "2026.02.2")
    ran(shipped, environments["develop"], at=now - timedelta(hours=2))
    ran(shipped, environments["staging"], at=now - timedelta(hours=1))
    ran(rejected, environments["develop"], at=now - timedelta(minutes=30))
    ran(rejected, environments["qa"], at=now - timedelta(minutes=20))
    refused = transitions.request_promotion(rejected, environments["staging"], make_user("fiona", ["frontend-team"]))
    transitions.reject(refused, paulo, "the error budget is spent")

    quiet = make_service("nexo-api", team="backend-team")  # runs, and nothing waits or stopped there
    ran(make_release(quiet, "2026.02.1"), environments["develop"], at=now - timedelta(hours=5))
    return {"now": now, "backend": backend, "frontend": frontend, "waiting": waiting, "env": environments}


def _health(board):
    Deployment.objects.filter(service=board["backend"], environment=board["env"]["qa"]).update(health="Degraded")


def _approval(board):
    transitions.approve(board["waiting"], User.objects.get(username="sam"), "looks good")


def _rejection(board):
    transitions.reject(board["waiting"], User.objects.get(username="sam"), "not during the sale")


def _hold(board):
    Hold.objects.create(
        service=board["frontend"], environment=board["env"]["staging"], reason="Rolled back", placed_by="pipeline"
    )


def _freeze(board):
    ChangeFreeze.objects.create(
        environment=board["env"]["staging"],
        starts_at=board["now"] - timedelta(hours=1),
        ends_at=board["now"] + timedelta(hours=5),
        reason="quarter close",
    )


def _approver_group_renamed(board):
    Group.objects.filter(name="sre-team").update(name="site-reliability")


def _team_renamed(board):
    Group.objects.filter(name="frontend-team").update(name="web-team")


def _new_build(board):
    make_release(board["backend"], "2026.02.4")


def _drift_threshold(board):
    Environment.objects.filter(name="staging").update(drift_warning_builds=0)


def _deployment_replaced(board):
    ran(make_release(board["frontend"], "2026.02.3"), board["env"]["develop"])


CHANGES = {
    "Argo CD reports another health": (_health, timedelta(0)),
    "an approver approves": (_approval, timedelta(0)),
    "an approver rejects": (_rejection, timedelta(0)),
    "a hold is placed": (_hold, timedelta(0)),
    "a freeze starts": (_freeze, timedelta(0)),
    "the approver group is renamed": (_approver_group_renamed, timedelta(0)),
    "the owning team is renamed": (_team_renamed, timedelta(0)),
    "a newer build is registered": (_new_build, timedelta(0)),
    "the drift threshold is lowered": (_drift_threshold, timedelta(0)),
    "another release is deployed": (_deployment_replaced, timedelta(0)),
    "a minute passes": (None, timedelta(seconds=61)),
    "the soak moves on": (None, timedelta(minutes=3)),
    "the waiting promotion passes its target": (None, timedelta(minutes=61)),
    "a day passes": (None, timedelta(days=1)),
}


@pytest.mark.parametrize("change", CHANGES)
def test_after_a_change_every_row_is_as_if_rendered_from_nothing(board, paulo, change):
    before = rows(paulo, board["now"])
    assert rows(paulo, board["now"]) == before  # rendered alike from the kept rows
    mutate, later = CHANGES[change]
    if mutate:
        mutate(board)
    now = board["now"] + later
    after = rows(paulo, now)
    assert after == fresh_rows(paulo, now)
    assert after != before, "the change should show on the board"


def test_a_step_tried_again_and_its_next_try_coming_due_render_the_row_again(board, paulo):
    promotion = board["waiting"]
    Promotion.objects.filter(pk=promotion.pk).update(state=PromotionState.COMMITTING)
    StepRun.objects.create(promotion=promotion, step=Step.COMMIT, created_at=board["now"])
    committing = rows(paulo, board["now"])
    assert "committing</span>" in committing
    now = board["now"]
    StepRun.objects.filter(promotion=promotion).update(
        status=RunStatus.RETRY, started_at=now, finished_at=now, error="GitOpsUnavailable: Cannot reach the GitOps …"
    )
    StepRun.objects.create(
        promotion=promotion, step=Step.COMMIT, created_at=now, run_after=now + timedelta(seconds=50), troubled_since=now
    )
    retrying = rows(paulo, now)
    assert retrying == fresh_rows(paulo, now)
    assert "committing — GitOps unreachable, next try" in retrying
    due = rows(paulo, now + timedelta(seconds=51))
    assert due == fresh_rows(paulo, now + timedelta(seconds=51))
    assert "committing — GitOps unreachable, trying again" in due


def test_each_reader_gets_the_rows_their_own_groups_and_requests_give(board, rita, sam, paulo):
    now = board["now"]
    for reader in (rita, sam, paulo):
        rows(reader, now)
    seen = {reader.username: rows(reader, now) for reader in (rita, sam, paulo)}
    for reader in (rita, sam, paulo):
        assert seen[reader.username] == fresh_rows(reader, now)
    assert len(set(seen.values())) == 3
    # The requester may not approve her own request; the SRE may.
    assert "You requested this promotion" in seen["rita"]
    assert "You requested this promotion" not in seen["sam"]


def test_readers_in_the_same_groups_share_rows_but_not_where_who_they_are_decides(board, rita, monkeypatch):
    """Rita requested the production promotion; Rosa is in Rita's groups. The row without promotions
    is rendered once for both; the rows with one are each reader's own."""
    rosa = make_user("rosa", ["backend-team"])
    mine = rows(rita, board["now"])
    rendered = []
    render = board_cells._board_row
    monkeypatch.setattr(board_cells, "_board_row", lambda row: rendered.append(row.service.name) or render(row))
    hers = rows(rosa, board["now"])
    assert sorted(rendered) == ["nexo-be", "nexo-fe"]
    assert hers == fresh_rows(rosa, board["now"])
    assert "You requested this promotion" in mine
    assert "You requested this promotion" not in hers
    assert _row(mine, "nexo-api") == _row(hers, "nexo-api")


def test_who_deployed_or_held_a_place_does_not_make_its_row_the_readers_own(board, rita):
    """Rita requested what runs in nexo-api's qa and placed its hold; Rosa, in her groups, is staff and
    has a name, an e-mail and permissions. Nothing waits or stopped there: both see the same row."""
    api = Service.objects.get(name="nexo-api")
    ran(make_release(api, "2026.02.2"), board["env"]["qa"], requested_by=rita)
    Hold.objects.create(service=api, environment=board["env"]["qa"], reason="Rolled back", placed_by="rita")
    rosa = make_user("rosa", ["backend-team"], is_staff=True, first_name="Rosa", email="rosa@example.com")
    rosa.user_permissions.set(Permission.objects.all()[:20])
    mine, hers = fresh_rows(rita, board["now"]), fresh_rows(rosa, board["now"])
    assert _row(mine, "nexo-api") == _row(hers, "nexo-api")
    assert 'data-action="rollback"' in _row(hers, "nexo-api")
    assert 'data-action="lift"' in _row(hers, "nexo-api")


def _row(html, service):
    start = html.index(f'<tr data-service="{service}">')
    return html[start : html.index("</tr>", start)]


def test_joining_an_approver_group_changes_what_the_reader_may_do(board, paulo):
    before = rows(paulo, board["now"])
    paulo.groups.add(Group.objects.get(name="sre-team"))
    after = rows(paulo, board["now"])
    assert after == fresh_rows(paulo, board["now"])
    assert "Only members of platform-leads or sre-team may approve" in before
    assert "Only members of platform-leads or sre-team may approve" not in after


def test_a_change_renders_again_only_the_row_it_touched(board, paulo, monkeypatch):
    rows(paulo, board["now"])
    rendered = []
    render = board_cells._board_row
    monkeypatch.setattr(board_cells, "_board_row", lambda row: rendered.append(row.service.name) or render(row))
    _hold(board)
    rows(paulo, board["now"])
    assert rendered == ["nexo-fe"]


def test_settings_changes_forget_the_rendered_rows(board, paulo, settings):
    with_health = rows(paulo, board["now"])
    settings.ARGOCD_URL = ""
    without = rows(paulo, board["now"])
    assert without == fresh_rows(paulo, board["now"])
    assert "health unknown" in with_health
    assert "health unknown" not in without


def test_the_page_shows_a_change_to_one_row_among_rows_it_kept(client, board, paulo):
    client.force_login(paulo)
    assert "Degraded" not in cell_html(client.get("/"), "nexo-be", "qa")
    _health(board)
    assert "Degraded" in cell_html(client.get("/"), "nexo-be", "qa")


def test_a_health_the_reconciler_refreshed_renders_its_row_again_and_only_it(board, paulo, argocd_server, monkeypatch):
    """nexo-be's qa goes Degraded in Argo CD long after its verification; no other place is listed."""
    before = rows(paulo, board["now"])
    argocd_server.app("nexo-be-qa", later_health="Degraded")
    assert reconciler.refresh_argocd_health() == [
        Deployment.objects.current().get(service=board["backend"], environment=board["env"]["qa"]).pk
    ]
    rendered = []
    render = board_cells._board_row
    monkeypatch.setattr(board_cells, "_board_row", lambda row: rendered.append(row.service.name) or render(row))
    after = rows(paulo, board["now"])
    assert rendered == ["nexo-be"]
    assert after == fresh_rows(paulo, board["now"])
    assert ">Degraded</span>" in _row(after, "nexo-be")
    assert ">Degraded</span>" not in _row(before, "nexo-be")


def test_the_kept_rows_are_bounded_by_their_size(board, paulo, monkeypatch):
    kept = board_cells.LRUCache(maxsize=12_000, getsizeof=len)
    monkeypatch.setattr(board_cells, "_rendered_rows", kept)
    for minutes in range(0, 600, 61):  # every row changes its age each time
        rows(paulo, board["now"] + timedelta(minutes=minutes))
    assert 0 < kept.currsize <= 12_000
    assert len(kept) < 2 * 10  # the oldest rows made room for the newest


def test_no_row_is_kept_when_the_setting_says_none(client, board, paulo, settings):
    settings.BOARD_KEPT_ROWS_MB = 0
    client.force_login(paulo)
    assert "2026.02.2" in cell_html(client.get("/"), "nexo-be", "qa")
    assert len(board_cells._rendered_rows) == 0
    _health(board)
    assert "Degraded" in cell_html(client.get("/"), "nexo-be", "qa")
