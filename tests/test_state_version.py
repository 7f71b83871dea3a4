"""The state version (releases/state.py): every source of change that a live page shows moves it on,
once committed, and writes nobody sees do not; an unchanged board or timeline answers 304.

These tests commit for real (transactional): the triggers run at the commit, as in production.
"""

import json
import sqlite3
import time
from datetime import timedelta

import pytest
import time_machine
from django.apps import apps
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone

from audit import log as audit_log
from audit.models import AuditAction
from environments.models import ChangeFreeze
from releases import jobs, reconciler, state, transitions
from releases.deployment_events import signature_for
from releases.models import (
    CheckResult,
    Deployment,
    Hold,
    PromotionState,
    SampleCheck,
    StepRun,
    VerificationSample,
)
from tests.factories import make_release, make_service
from tests.history import ran

pytestmark = pytest.mark.django_db(transaction=True)

BOARD = {"HX-Request": "true", "HX-Target": "board"}


@pytest.fixture
def nexo_be(environments):
    return make_service("nexo-be", team="backend-team")


@pytest.fixture
def verified_in_staging(environments, nexo_be):
    release = make_release(nexo_be, "2026.02.1")
    for name in ("develop", "qa", "staging"):
        ran(release, environments[name])
    return release


@pytest.fixture
def minute_start():
    """Start the test at the next minute's first second: the tag changes with the minute, and a test
    that compares two tags must not straddle one (forward, so nothing written before is in the future)."""
    with time_machine.travel(timezone.now().replace(second=0, microsecond=0) + timedelta(minutes=1), tick=True):
        yield


def moves_on(change):
    """Run `change` (committed by itself) and say whether the state version moved on."""
    before = state.current()
    change()
    return state.current() > before


# --- the page's side: 304 while nothing changed, 200 once anything did ----------------------------------------


def test_an_unchanged_board_refresh_is_a_304_with_no_body_and_a_change_brings_it_back(
    client, environments, verified_in_staging, rita, minute_start
):
    client.force_login(rita)
    first = client.get("/", headers=BOARD)
    assert first.status_code == 200
    tag = first["ETag"]
    assert tag.startswith('W/"')
    assert f'data-etag="{tag.replace(chr(34), "&quot;")}"' in first.content.decode()

    again = client.get("/", headers={**BOARD, "If-None-Match": tag})
    assert again.status_code == 304
    assert again.content == b""
    assert again["ETag"] == tag
    headers = "".join(f"{name}: {value}\r\n" for name, value in again.items())
    assert len(headers) < 1024

    transitions.request_promotion(verified_in_staging, environments["production"], rita)
    changed = client.get("/", headers={**BOARD, "If-None-Match": tag})
    assert changed.status_code == 200
    assert changed["ETag"] != tag
    assert "awaiting approval 0/2" in changed.content.decode()


def test_the_tag_is_the_readers_own_and_follows_the_filters(client, environments, nexo_be, rita, sam, minute_start):
    client.force_login(rita)
    mine = client.get("/", headers=BOARD)["ETag"]
    filtered = client.get("/?team=backend-team", headers=BOARD)["ETag"]
    client.force_login(sam)
    theirs = client.get("/", headers=BOARD)["ETag"]
    assert len({mine, filtered, theirs}) == 3
    # Their tag answers nothing for her: what she may do differs.
    client.force_login(rita)
    assert client.get("/", headers={**BOARD, "If-None-Match": theirs}).status_code == 200


def test_the_full_page_is_never_answered_304(client, environments, nexo_be, rita):
    client.force_login(rita)
    tag = client.get("/", headers=BOARD)["ETag"]
    response = client.get("/", headers={"If-None-Match": tag})
    assert response.status_code == 200
    assert "<html" in response.content.decode()


def test_an_idle_page_is_shown_afresh_once_a_minute(client, environments, nexo_be, rita, minute_start):
    """The page's relative times ("3 min ago") move on with the clock though no state does."""
    client.force_login(rita)
    tag = client.get("/", headers=BOARD)["ETag"]
    with time_machine.travel(timezone.now() + timedelta(seconds=61), tick=False):
        response = client.get("/", headers={**BOARD, "If-None-Match": tag})
    assert response.status_code == 200
    assert response["ETag"] != tag


def test_an_unchanged_promotion_timeline_is_a_304_until_it_moves(
    client, environments, verified_in_staging, rita, sam, minute_start
):
    promotion = transitions.request_promotion(verified_in_staging, environments["production"], rita)
    headers = {"HX-Request": "true", "HX-Target": "promotion-live"}
    client.force_login(rita)
    tag = client.get(promotion.get_absolute_url(), headers=headers)["ETag"]
    assert client.get(promotion.get_absolute_url(), headers={**headers, "If-None-Match": tag}).status_code == 304
    transitions.approve(promotion, sam, "canary is clean")
    moved = client.get(promotion.get_absolute_url(), headers={**headers, "If-None-Match": tag})
    assert moved.status_code == 200
    assert "canary is clean" in moved.content.decode()


# --- every source of change ---------------------------------------------------------------------------------


def test_a_transition_moves_it_on(environments, verified_in_staging, rita, sam):
    promotion = transitions.request_promotion(verified_in_staging, environments["production"], rita)
    assert moves_on(lambda: transitions.approve(promotion, sam, ""))
    assert moves_on(lambda: transitions.cancel(promotion, rita, "not today"))


def test_deployment_health_from_an_argo_cd_webhook_moves_it_on(environments, nexo_be, settings):
    settings.ARGOCD_WEBHOOK_SECRET = secret = "argocd-notifications-shared-secret"
    ran(make_release(nexo_be, "2026.02.1"), environments["develop"])

    def deliver_degraded():
        body = json.dumps(
            {
                "trigger": "on-deployed",
                "application": "nexo-be-develop",
                "revision": "c" * 40,
                "sync_status": "Synced",
                "health_status": "Degraded",
                "phase": "Succeeded",
                "message": "",
            }
        ).encode()
        stamp = str(int(time.time()))
        response = Client().post(
            "/api/v1/webhooks/argocd/",
            body,
            content_type="application/json",
            HTTP_X_NEXO_TIMESTAMP=stamp,
            HTTP_X_NEXO_SIGNATURE=f"sha256={signature_for(secret, stamp, body)}",
        )
        assert response.status_code == 202, response.content

    assert moves_on(deliver_degraded)
    assert Deployment.objects.current().get().health == "Degraded"


def test_deployment_health_from_polling_argo_cd_moves_it_on(
    environments, nexo_be, argocd_server, settings, redis_connection
):
    settings.ARGOCD_POLL_SECONDS, settings.ARGOCD_SYNC_TIMEOUT_SECONDS = 0.01, 5
    argocd_server.app("nexo-be-develop")
    promotion = transitions.request_promotion(make_release(nexo_be, "2026.02.1"), environments["develop"], None)
    promotion = transitions.mark_committed(transitions.start_commit(promotion), "c" * 40, "promote(nexo-be)")
    assert moves_on(lambda: jobs.sync_promotion(promotion.pk))
    assert Deployment.objects.current().get().health == "Healthy"


def test_deployment_health_the_reconciler_finds_changed_moves_it_on_and_unchanged_does_not(
    environments, nexo_be, argocd_server
):
    ran(make_release(nexo_be, "2026.02.1"), environments["develop"])
    argocd_server.app("nexo-be-develop")
    assert moves_on(reconciler.refresh_argocd_health)
    assert not moves_on(reconciler.refresh_argocd_health), "a round that finds it as it was"
    argocd_server.app("nexo-be-develop", later_health="Degraded")
    assert moves_on(reconciler.refresh_argocd_health)
    assert Deployment.objects.current().get().health == "Degraded"


def test_a_hold_placed_and_lifted_moves_it_on(environments, nexo_be, rita):
    def place():
        return Hold.objects.create(service=nexo_be, environment=environments["qa"], reason="rolled back")

    assert moves_on(place)
    hold = Hold.objects.get()
    assert moves_on(lambda: transitions.lift_hold(hold, rita, "fixed"))


def test_a_freeze_moves_it_on(environments):
    def freeze():
        ChangeFreeze.objects.create(
            environment=environments["production"],
            starts_at=timezone.now(),
            ends_at=timezone.now() + timedelta(hours=2),
            reason="quarter close",
        )

    assert moves_on(freeze)
    assert moves_on(lambda: ChangeFreeze.objects.all().delete())


def test_an_admin_edit_moves_it_on(client, environments, nexo_be, admin_user):
    client.force_login(admin_user)
    production = environments["production"]

    def edit():
        response = client.post(
            f"/admin/auth/group/{production.approver_groups.first().pk}/change/",
            {"name": "sre-team-renamed", "permissions": []},
        )
        assert response.status_code == 302, response.content

    assert moves_on(edit)
    assert moves_on(lambda: production.approver_groups.clear())
    production.required_approvals = 1
    assert moves_on(production.save)


def test_group_membership_moves_it_on(environments, viewer):
    from django.contrib.auth.models import Group

    assert moves_on(lambda: viewer.groups.add(Group.objects.get(name="sre-team")))


def test_a_ci_result_moves_it_on(environments, nexo_be, rita):
    from tests.test_api import token_client

    release = make_release(nexo_be, "2026.02.1")
    client = token_client("report")

    def report():
        response = client.post(
            "/api/v1/verifications/",
            {"service": "nexo-be", "version": release.version, "environment": "qa", "check": "e2e", "passed": True},
            format="json",
        )
        assert response.status_code == 201, response.content

    assert moves_on(report)
    assert CheckResult.objects.count() == 1


def test_a_soak_sample_and_a_promotions_audit_event_move_it_on(environments, nexo_be):
    promotion = ran(make_release(nexo_be, "2026.02.1"), environments["develop"], state=PromotionState.VERIFYING)
    assert moves_on(
        lambda: VerificationSample.objects.create(
            promotion=promotion, kind=SampleCheck.ERROR_RATE, target="q", ok=True, taken_at=timezone.now()
        )
    )

    def event(about):
        with transaction.atomic():
            audit_log.record(AuditAction.DRIFT_DETECTED, promotion=about, message="an event")

    assert moves_on(lambda: event(promotion))
    assert not moves_on(lambda: event(None))  # an event of no promotion is on no live page


def test_writes_nobody_sees_leave_it_alone(environments, nexo_be, rita):
    promotion = ran(make_release(nexo_be, "2026.02.1"), environments["develop"])
    run = StepRun.objects.create(promotion=promotion, step="verify", status="running")
    run.lease_expires_at = timezone.now() + timedelta(minutes=1)
    assert not moves_on(lambda: run.save(update_fields=["lease_expires_at"]))  # a lease renewed
    run.status = "done"
    assert moves_on(lambda: run.save(update_fields=["status"]))
    deployment = Deployment.objects.current().get()
    assert not moves_on(lambda: Deployment.objects.filter(pk=deployment.pk).update(health=deployment.health))
    rita.last_login = timezone.now()
    assert not moves_on(lambda: rita.save(update_fields=["last_login"]))


def test_one_transaction_moves_it_on_once_and_only_when_it_commits(environments, nexo_be):
    before = state.current()
    with transaction.atomic():
        make_release(nexo_be, "2026.02.1")
        make_release(nexo_be, "2026.02.2")
        assert state.current() == before  # not before the commit
    assert state.current() == before + 1

    def rolled_back():
        with transaction.atomic():
            make_release(nexo_be, "2026.02.3")
            raise RuntimeError

    with pytest.raises(RuntimeError):
        rolled_back()
    assert state.current() == before + 1


def test_every_table_of_the_apps_is_watched_or_says_why_not():
    tables = {
        model._meta.db_table
        for label in ("releases", "environments")
        for model in apps.get_app_config(label).get_models(include_auto_created=True)
    }
    assert tables - set(state.WATCHED) - set(state.NOT_WATCHED) == set()
    with connection.cursor() as cursor:
        cursor.execute("SELECT tgrelid::regclass::text FROM pg_trigger WHERE tgname LIKE '%_state_version'")
        triggered = {row[0] for row in cursor.fetchall()}
    assert triggered == set(state.WATCHED) | set(state.WATCHED_INSERTS)


def test_the_sqlite_triggers_of_the_demo_count_the_same_changes():
    class Editor:
        class connection:  # the shape of a schema editor's
            vendor = "sqlite"

        def __init__(self, database):
            self.database = database

        def execute(self, statement, params=None):
            self.database.execute(statement)

    database = sqlite3.connect(":memory:")
    database.execute("CREATE TABLE releases_stateversion (id integer PRIMARY KEY, version integer)")
    for table in [*state.WATCHED, *state.WATCHED_INSERTS]:
        columns = "username, is_active, is_superuser, last_login" if table == "auth_user" else "status, error, lease"
        database.execute(f"CREATE TABLE {table} (id integer PRIMARY KEY, promotion_id integer, {columns})")
    state.install(Editor(database))

    def version():
        row = database.execute("SELECT version FROM releases_stateversion").fetchone()
        return row[0] if row else 0

    database.execute("INSERT INTO releases_promotion (id, status) VALUES (1, 'awaiting')")
    first = version()
    assert first > 0
    database.execute("UPDATE releases_promotion SET status = 'approved'")
    assert version() == first + 1
    database.execute("INSERT INTO releases_steprun (id, status, lease) VALUES (1, 'running', 1)")
    database.execute("UPDATE releases_steprun SET lease = 2")
    assert version() == first + 2  # the insert, not the lease
    database.execute("INSERT INTO audit_auditevent (id, promotion_id) VALUES (1, NULL)")
    assert version() == first + 2
    database.execute("INSERT INTO audit_auditevent (id, promotion_id) VALUES (2, 1)")
    assert version() == first + 3
