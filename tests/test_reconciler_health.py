"""The board's Argo CD health kept current by the reconciler: one list of Argo CD's applications a
round, a write only where the health changed, the last known health kept while Argo CD is away."""

import logging
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from environments.models import Environment
from nexo_portal.lib.dates import exact_time
from releases import argocd_health, transitions
from releases.models import Deployment
from releases.reconciler import reconcile, refresh_argocd_health
from tests.factories import make_release, make_service
from tests.history import cell_html, ran

pytestmark = pytest.mark.django_db

LIST = "/api/v1/applications"


@pytest.fixture
def running(environments, redis_connection):
    """nexo-be 2026.02.1, verified an hour ago in develop and in qa, Healthy then in both."""
    service = make_service("nexo-be", team="backend-team")
    release = make_release(service, "2026.02.1")
    for name in ("develop", "qa"):
        ran(release, environments[name], at=timezone.now() - timedelta(hours=1))
    Deployment.objects.update(health="Healthy")
    return {"service": service, "release": release, "env": environments}


def deployment_in(environment):
    return Deployment.objects.current().get(environment__name=environment)


def list_requests(argocd_server):
    return [request for request in argocd_server.requests if request.path == LIST]


def test_a_round_shows_an_application_gone_degraded_after_it_was_verified(running, argocd_server, viewer, client):
    argocd_server.app("nexo-be-develop")
    argocd_server.app("nexo-be-qa", later_health="Degraded")  # its pods crash-loop an hour after the soak
    client.force_login(viewer)
    assert ">Healthy</span>" in cell_html(client.get("/"), "nexo-be", "qa")

    round_ = reconcile()

    qa = deployment_in("qa")
    assert round_["argocd_health"] == [qa.pk]
    assert qa.health == "Degraded"
    since = exact_time(qa.health_checked_at)
    board = client.get("/")
    assert f'<span class="badge bad" title="Argo CD health since {since}">Degraded</span>' in cell_html(
        board, "nexo-be", "qa"
    )
    assert ">Healthy</span>" in cell_html(board, "nexo-be", "develop")
    assert len(list_requests(argocd_server)) == 1, "one list for every place, not a request per application"
    assert argocd_server.requests[0].query["fields"] == [
        "metadata.resourceVersion,items.metadata.name,items.status.health.status,items.status.sync.status"
    ]


def test_argocd_out_of_reach_keeps_the_last_known_health_and_the_round_goes_on(running, argocd_server, caplog):
    """What the round does besides (here: a place far behind develop is flagged) is not held up."""
    Environment.objects.filter(name="qa").update(drift_alert_builds=1)
    make_release(running["service"], "2026.02.2")
    ran(make_release(running["service"], "2026.02.3"), running["env"]["develop"])
    Deployment.objects.current().update(health="Healthy")
    argocd_server.app("nexo-be-qa", later_health="Degraded")
    argocd_server.stop()

    with caplog.at_level(logging.WARNING, logger="releases.reconciler"):
        round_ = reconcile()

    assert round_["argocd_health"] == []
    assert round_["far_behind"] == [deployment_in("qa").pk]
    assert {deployment_in(name).health for name in ("develop", "qa")} == {"Healthy"}
    assert deployment_in("qa").health_checked_at is None
    [skipped] = [record for record in caplog.records if "Argo CD health" in record.getMessage()]
    assert skipped.levelno == logging.WARNING
    assert "not refreshed this round" in skipped.getMessage()
    assert "connection refused" in skipped.getMessage()
    assert "the board keeps the health last seen" in skipped.getMessage()


def test_a_round_that_finds_every_health_unchanged_writes_nothing(running, argocd_server):
    argocd_server.app("nexo-be-develop")
    argocd_server.app("nexo-be-qa")

    with CaptureQueriesContext(connection) as queries:
        assert refresh_argocd_health() == []

    assert len(list_requests(argocd_server)) == 1  # it did ask, and found nothing new
    assert [query["sql"] for query in queries if not query["sql"].startswith("SELECT")] == []
    assert {deployment_in(name).health_checked_at for name in ("develop", "qa")} == {None}


def test_only_the_place_whose_health_changed_is_written_once(running, argocd_server):
    argocd_server.app("nexo-be-develop")
    argocd_server.app("nexo-be-qa", later_health="Progressing")

    with CaptureQueriesContext(connection) as queries:
        assert refresh_argocd_health() == [deployment_in("qa").pk]
    assert len([query for query in queries if query["sql"].startswith("UPDATE")]) == 1
    checked_at = deployment_in("qa").health_checked_at

    assert refresh_argocd_health() == []  # the next round finds it as it left it
    assert deployment_in("qa").health_checked_at == checked_at


def test_applications_the_portal_does_not_know_are_ignored(running, argocd_server):
    argocd_server.app("nexo-be-develop")
    argocd_server.app("nexo-be-qa")
    argocd_server.app("billing-production", later_health="Missing")
    argocd_server.app("nexo-be-sandbox", later_health="Degraded")

    assert refresh_argocd_health() == []


def test_a_place_with_no_application_configured_is_skipped(running, argocd_server):
    Environment.objects.filter(name="qa").update(argocd_app_template="")
    argocd_server.app("nexo-be-develop", later_health="Degraded")
    argocd_server.app("nexo-be-qa", later_health="Degraded")

    assert refresh_argocd_health() == [deployment_in("develop").pk]
    assert deployment_in("qa").health == "Healthy"


def test_with_no_application_configured_anywhere_argocd_is_not_asked(running, argocd_server):
    Environment.objects.update(argocd_app_template="")

    assert refresh_argocd_health() == []
    assert argocd_server.requests == []


def test_without_argocd_configured_nothing_is_asked_or_changed(running, settings):
    settings.ARGOCD_URL = ""

    assert refresh_argocd_health() == []
    assert deployment_in("qa").health == "Healthy"


def test_an_application_argocd_does_not_list_keeps_its_health_and_is_named_in_the_log(running, argocd_server, caplog):
    argocd_server.app("nexo-be-develop")
    argocd_server.app("nexo-be-qa", later_health="Degraded", denied_actions=frozenset({"get"}))

    with caplog.at_level(logging.WARNING, logger="releases.reconciler"):
        assert refresh_argocd_health() == []

    assert deployment_in("qa").health == "Healthy"
    [unlisted] = caplog.records
    assert "nexo-be-qa" in unlisted.getMessage()
    assert "nexo-be-develop" not in unlisted.getMessage()


def test_a_place_rolling_out_another_release_is_left_to_its_sync(running, argocd_server):
    """What Argo CD reports there is the next release's rollout; the sync job records its health."""
    promotion = transitions.request_promotion(
        make_release(running["service"], "2026.02.2"), running["env"]["develop"], None
    )
    transitions.mark_committed(transitions.start_commit(promotion), "d" * 40, "promote(nexo-be)")
    argocd_server.app("nexo-be-develop", later_health="Progressing")
    argocd_server.app("nexo-be-qa")

    assert refresh_argocd_health() == []
    assert deployment_in("develop").health == "Healthy"


def test_a_place_gone_degraded_or_missing_is_a_warning_and_its_recovery_is_logged(running, argocd_server, caplog):
    argocd_server.app("nexo-be-develop", later_health="Missing")
    argocd_server.app("nexo-be-qa")

    with caplog.at_level(logging.INFO, logger="releases.argocd_health"):
        refresh_argocd_health()
    [missing] = caplog.records
    assert (missing.levelno, missing.getMessage()) == (
        logging.WARNING,
        "Argo CD reports nexo-be 2026.02.1 in develop Missing (it was Healthy)",
    )

    caplog.clear()
    argocd_server.app("nexo-be-develop", later_health="")
    with caplog.at_level(logging.INFO, logger="releases.argocd_health"):
        refresh_argocd_health()
    [healthy] = caplog.records
    assert (healthy.levelno, healthy.getMessage()) == (
        logging.INFO,
        "Argo CD reports nexo-be 2026.02.1 in develop Healthy (it was Missing)",
    )


def test_a_health_seen_before_the_one_written_does_not_overwrite_it(running):
    """A soak's sample and a round may write in either order: the later observation stands."""
    qa = deployment_in("qa")
    seen = timezone.now()
    assert argocd_health.note(qa, "Degraded", seen)

    assert not argocd_health.note(deployment_in("qa"), "Healthy", seen - timedelta(seconds=5))

    assert (deployment_in("qa").health, deployment_in("qa").health_checked_at) == ("Degraded", seen)
    assert argocd_health.note(deployment_in("qa"), "Healthy", seen + timedelta(seconds=5))


def test_an_application_out_of_sync_is_not_taken_for_the_release_the_portal_deployed(running, argocd_server, caplog):
    """After an `argocd app rollback` the health Argo CD reports is the older revision's: written on the
    portal's deployment, the board would show the release that was taken out as Healthy."""
    Deployment.objects.filter(environment__name="qa").update(health="Degraded")
    argocd_server.app("nexo-be-develop")
    application = argocd_server.app("nexo-be-qa").deployed("1" * 40, "2" * 40)
    application.rollback(application.history[0]["id"], by="sre@nexo.example")
    while application.in_progress():
        application.advance()

    with caplog.at_level(logging.INFO, logger="releases.reconciler"):
        assert refresh_argocd_health() == []

    assert deployment_in("qa").health == "Degraded"
    [skipped] = [record for record in caplog.records if "out of sync" in record.getMessage()]
    assert "nexo-be-qa" in skipped.getMessage()
    assert "the board keeps the health last seen" in skipped.getMessage()
