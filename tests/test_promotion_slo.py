"""Promotion SLOs: per environment target time, success rate and rollback rate over a window (page, API,
CSV) with the time of each stage; a promotion active past its target marked on the board and alerted once."""

import csv
import io
from datetime import timedelta
from importlib import import_module

import pytest
from django.apps import apps as django_apps
from django.core.exceptions import ValidationError
from django.utils import timezone
from prometheus_client import REGISTRY

from audit.models import AuditAction, AuditEvent
from environments.defaults import ensure_default_environments
from environments.models import Environment
from nexo_portal.models import ApiToken
from releases import slo
from releases.board import build_board
from releases.models import Promotion, PromotionKind, PromotionState
from tests.factories import make_release, make_service
from tests.history import ran

pytestmark = pytest.mark.django_db

NOW = timezone.now()


def promotion(release, environment, *, minutes, state=PromotionState.VERIFIED, stages=(1, 2, 3), **fields):
    """Requested `minutes` ago; approval waited stages[0], commit took stages[1], sync stages[2] minutes and
    the soak the rest, ending now."""
    requested = NOW - timedelta(minutes=minutes)
    approved = requested + timedelta(minutes=stages[0])
    committed = approved + timedelta(minutes=stages[1])
    deployed = committed + timedelta(minutes=stages[2])
    return Promotion.objects.create(
        release=release,
        environment=environment,
        state=state,
        requested_at=requested,
        approved_at=approved,
        committed_at=committed,
        deployed_at=deployed,
        finished_at=NOW,
        **fields,
    )


@pytest.fixture
def history(environments):
    service = make_service("nexo-be", team="backend-team")
    other = make_service("nexo-fe", team="frontend-team")
    staging, production = environments["staging"], environments["production"]
    releases = [make_release(service, f"2026.03.{build}") for build in range(1, 8)]
    # staging (60 min): three verified (one slow, held up by its approval), one failed, one rejected
    promotion(releases[0], staging, minutes=20, stages=(2, 1, 2))
    promotion(releases[1], staging, minutes=25, stages=(4, 1, 2))
    promotion(releases[2], staging, minutes=90, stages=(70, 1, 4))
    promotion(releases[3], staging, minutes=40, state=PromotionState.FAILED, failed_step="sync")
    promotion(releases[4], staging, minutes=5, state=PromotionState.REJECTED, stages=(1, 1, 1))
    # production: one verified and later rolled back, one rollback deployment; another team's service
    promotion(releases[0], production, minutes=50, state=PromotionState.ROLLED_BACK, stages=(10, 1, 5))
    promotion(releases[5], production, minutes=30, kind=PromotionKind.ROLLBACK, stages=(1, 1, 2))
    promotion(make_release(other, "2026.03.1"), production, minutes=45, stages=(5, 1, 5))
    # outside the window
    promotion(releases[6], staging, minutes=60 * 24 * 40, state=PromotionState.FAILED, failed_step="sync")
    return {"service": service, "other": other, "env": environments}


def by_environment(report):
    return {row.environment.name: row for row in report.environments}


def test_the_default_targets_are_the_reference_docs(environments):
    targets = {
        name: (
            e.promotion_slo_minutes,
            float(e.promotion_slo_success_percent),
            None if e.promotion_slo_rollback_percent is None else float(e.promotion_slo_rollback_percent),
        )
        for name, e in ensure_default_environments().items()
    }
    assert targets == {
        "develop": (10, 99.0, None),
        "qa": (15, 98.0, None),
        "staging": (60, 98.0, None),
        "production": (60, 99.9, 5.0),
    }


def test_every_default_target_is_longer_than_its_environments_soak(environments):
    """The target counts the soak: one no longer than the soak is missed by every promotion."""
    for environment in Environment.objects.all():
        longest_soak = max(environment.verification_window, environment.rollback_verification_window)
        assert timedelta(minutes=environment.promotion_slo_minutes) > longest_soak, environment.name
        environment.full_clean()


@pytest.mark.parametrize(
    ("target", "window", "rollback_window", "problem"),
    [
        (30, timedelta(minutes=30), timedelta(minutes=2), "no longer than the soak window (30m)"),
        (20, timedelta(minutes=30), timedelta(minutes=2), "no longer than the soak window (30m)"),
        (10, timedelta(minutes=5), timedelta(minutes=15), "no longer than the rollback soak (15m)"),
    ],
)
def test_a_target_no_longer_than_a_soak_is_refused_saying_what_to_change(
    environments, target, window, rollback_window, problem
):
    staging = Environment.objects.get(name="staging")
    staging.promotion_slo_minutes = target
    staging.verification_window, staging.rollback_verification_window = window, rollback_window

    with pytest.raises(ValidationError) as refused:
        staging.full_clean()

    [message] = refused.value.message_dict["promotion_slo_minutes"]
    assert f"A target of {target} min is {problem}" in message
    assert "every promotion here would miss it" in message
    assert "Make the target longer than the soak" in message


def test_an_upgrade_lengthens_the_old_default_staging_target_only_where_nobody_changed_it(environments):
    """The old default (30 min against a 30-minute soak) could not be met; a target someone chose stays."""
    lengthen = import_module("environments.migrations.0014_staging_target_longer_than_its_soak")
    Environment.objects.filter(name="staging").update(promotion_slo_minutes=30)
    chosen = Environment.objects.create(name="staging-eu", position=5, promotion_slo_minutes=30)
    Environment.objects.filter(pk=chosen.pk).update(verification_window=timedelta(minutes=30))

    lengthen.lengthen_the_old_default_staging_target(django_apps, schema_editor=None)

    targets = dict(Environment.objects.values_list("name", "promotion_slo_minutes"))
    assert targets == {"develop": 10, "qa": 15, "staging": 60, "production": 60, "staging-eu": 30}


def test_an_upgrade_leaves_a_staging_target_beside_a_soak_someone_changed(environments):
    lengthen = import_module("environments.migrations.0014_staging_target_longer_than_its_soak")
    Environment.objects.filter(name="staging").update(
        promotion_slo_minutes=30, verification_window=timedelta(minutes=10)
    )

    lengthen.lengthen_the_old_default_staging_target(django_apps, schema_editor=None)

    assert Environment.objects.get(name="staging").promotion_slo_minutes == 30


def test_a_target_beside_a_soak_of_zero_is_accepted(environments):
    develop = Environment.objects.get(name="develop")
    develop.promotion_slo_minutes = 1
    develop.verification_window = develop.rollback_verification_window = timedelta(0)

    develop.full_clean()


def test_success_rate_time_within_target_and_the_time_of_each_stage(history):
    staging = by_environment(slo.report(30, now=NOW))["staging"]
    assert (staging.requested, staging.verified, staging.failed) == (5, 3, 1)
    assert staging.success_percent == 75.0
    assert staging.success_met is False
    assert (staging.within_target, staging.within_target_percent) == (2, 66.67)
    assert staging.median_minutes == 25.0
    assert staging.stage_median_minutes == {"waiting_for_approval": 4.0, "commit": 1.0, "sync": 2.0, "soak": 15.0}
    assert staging.slowest_stage == "soak"


def test_production_rollback_rate_against_its_target(history):
    production = by_environment(slo.report(30, now=NOW))["production"]
    assert (production.verified, production.failed) == (3, 0)  # rolled back after verifying: it was verified
    assert (production.deployments, production.rollbacks, production.rollback_percent) == (3, 1, 33.33)
    assert production.rollback_target == 5.0
    assert production.rollback_met is False


def test_a_report_limited_to_services_counts_only_theirs(history):
    production = by_environment(slo.report(30, services=[history["other"].pk], now=NOW))["production"]
    assert (production.requested, production.verified, production.rollbacks) == (1, 1, 0)


def test_the_api_gives_the_report_and_a_service_token_sees_its_services_only(history, client):
    _token, plain = ApiToken.objects.issue(name="ci-fe", scopes=["read"], services=[history["other"]])
    body = client.get("/api/v1/slo/?days=30", HTTP_AUTHORIZATION=f"Bearer {plain}").json()
    assert body["days"] == 30
    rows = {row["environment"]: row for row in body["environments"]}
    assert list(rows) == ["develop", "qa", "staging", "production"]
    assert rows["staging"]["requested"] == 0
    assert (rows["production"]["requested"], rows["production"]["rollback_target_percent"]) == (1, 5.0)
    assert set(rows["production"]["stage_median_minutes"]) == {"waiting_for_approval", "commit", "sync", "soak"}


@pytest.mark.parametrize("days", ["0", "367", "week", "-3", "²", "9" * 5000])
def test_a_bad_window_is_refused_saying_what_to_send(history, client, viewer, days):
    _token, plain = ApiToken.objects.issue(name="ci-read", scopes=["read"], all_services=True)
    response = client.get(f"/api/v1/slo/?days={days}", HTTP_AUTHORIZATION=f"Bearer {plain}")
    assert response.status_code == 400
    client.force_login(viewer)
    page = client.get(f"/slo/?days={days}")
    assert page.status_code == 400
    assert "days must be a whole number of days from 1 to 366" in page.content.decode()
    export = client.get(f"/slo/export.csv?days={days}")
    assert export.status_code == 400
    assert "days must be a whole number of days from 1 to 366" in export.content.decode()


def test_the_page_shows_each_environment_against_its_targets(history, client, viewer):
    client.force_login(viewer)
    response = client.get("/slo/?days=30")
    assert response.status_code == 200
    page = response.content.decode()
    assert '<tr data-environment="staging">' in page
    assert "75.0 %" in page
    assert "2/3 (66.67 %)" in page
    assert "1/3 (33.33 %)" in page


def test_the_csv_has_every_promotion_of_the_window_with_the_minutes_of_each_stage(history, client, viewer):
    client.force_login(viewer)
    response = client.get("/slo/export.csv?days=30")
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="promotion-slo-30d.csv"'
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 8
    slow = next(row for row in rows if row["version"] == "2026.03.3" and row["environment"] == "staging")
    assert (slow["waiting_for_approval_minutes"], slow["commit_minutes"], slow["sync_minutes"]) == (
        "70.0",
        "1.0",
        "4.0",
    )
    assert (slow["soak_minutes"], slow["total_minutes"]) == ("15.0", "90.0")
    failed = next(row for row in rows if row["state"] == "failed")
    assert (failed["environment"], failed["total_minutes"]) == ("staging", "40.0")


def test_an_active_promotion_past_its_target_is_marked_on_the_board_and_in_the_matrix(environments, viewer, client):
    service = make_service("nexo-be", team="backend-team")
    staging = environments["staging"]
    Promotion.objects.create(
        release=make_release(service, "2026.03.1"),
        environment=staging,
        state=PromotionState.AWAITING_APPROVAL,
        requested_at=timezone.now() - timedelta(minutes=75),
    )
    cell = next(c for c in build_board(viewer).rows[0].cells if c.environment.name == "staging")
    assert cell.overdue.label == "past its 60 min target"
    client.force_login(viewer)
    assert "past its 60 min target" in client.get("/").content.decode()
    _token, plain = ApiToken.objects.issue(name="ci-read", scopes=["read"], all_services=True)
    body = client.get("/api/v1/matrix/", HTTP_AUTHORIZATION=f"Bearer {plain}").json()
    cells = {c["environment"]: c for c in body[0]["environments"]}
    assert (cells["staging"]["overdue"], cells["production"]["overdue"]) == (True, False)


@pytest.mark.django_db(transaction=True)
def test_a_breach_is_audited_and_alerted_once(
    environments, redis_connection, slack_server, django_capture_on_commit_callbacks
):
    import django_rq

    from releases.worker import PortalWorker

    service = make_service("nexo-be", team="backend-team")
    late = Promotion.objects.create(
        release=make_release(service, "2026.03.1"),
        environment=environments["production"],
        state=PromotionState.AWAITING_APPROVAL,
        requested_at=timezone.now() - timedelta(minutes=61),
    )
    Promotion.objects.create(
        release=make_release(service, "2026.03.2"),
        environment=environments["staging"],
        state=PromotionState.VERIFYING,
        requested_at=timezone.now() - timedelta(minutes=29),
    )
    breaches = REGISTRY.get_sample_value("nexo_promotion_slo_breaches_total", {"environment": "production"}) or 0
    with django_capture_on_commit_callbacks(execute=True):
        assert slo.find_breaches() == [late.pk]
    with django_capture_on_commit_callbacks(execute=True):
        assert slo.find_breaches() == []
    queue = django_rq.get_queue("default")
    PortalWorker([queue], connection=queue.connection).work(burst=True)

    late.refresh_from_db()
    assert late.slo_breached_at is not None
    [event] = AuditEvent.objects.filter(action=AuditAction.PROMOTION_SLO_BREACHED)
    assert (event.promotion_id, event.actor, event.environment) == (late.pk, "system", "production")
    assert event.message == (
        "nexo-be 2026.03.1 → production active for 61 min, past its 60 min target (awaiting approval)"
    )
    assert event.data == {"state": "awaiting_approval", "active_minutes": 61, "target_minutes": 60}
    [message] = slack_server.messages
    assert "nexo-be 2026.03.1 → production is past its 60 min promotion target" in message["text"]
    assert f"https://portal.nexo.example/promotions/{late.pk}/" in message["text"]
    assert REGISTRY.get_sample_value("nexo_promotion_slo_breaches_total", {"environment": "production"}) == breaches + 1


def test_the_targets_are_edited_in_the_admin(environments, admin_client):
    production = environments["production"]
    page = admin_client.get(f"/admin/environments/environment/{production.pk}/change/").content.decode()
    for field in ("promotion_slo_minutes", "promotion_slo_success_percent", "promotion_slo_rollback_percent"):
        assert f'name="{field}"' in page
    assert 'name="drift_alert_builds"' in page


def test_a_history_from_ran_counts_as_verified_within_target(environments):
    service = make_service("nexo-be", team="backend-team")
    ran(make_release(service, "2026.03.1"), environments["develop"])
    develop = by_environment(slo.report(1))["develop"]
    assert (develop.verified, develop.within_target, develop.success_met) == (1, 1, True)
