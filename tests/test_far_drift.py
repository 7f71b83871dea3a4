"""Drift as the reference docs define it: a place more builds behind develop than its environment allows
(drift_alert_builds, 20 by default), on the board and the matrix, and said in Slack and the audit log once
per crossing; its end is audited once too."""

from datetime import timedelta

import pytest
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from audit.models import AuditAction, AuditEvent
from nexo_portal.models import ApiToken
from releases import reconciler
from releases.board import build_board
from releases.models import Deployment
from releases.reconciler import builds_behind_first, detect_far_behind
from tests.factories import make_release, make_service
from tests.history import ran


@pytest.fixture
def issue_scenario(environments, redis_connection):
    """The issue's case: production and staging on build 7, develop on build 36 of the same month."""
    service = make_service("nexo-be", team="backend-team")
    releases = {build: make_release(service, f"2026.03.{build}") for build in range(1, 37)}
    earlier = timezone.now() - timedelta(days=2)
    for name in ("develop", "qa", "staging", "production"):
        ran(releases[7], environments[name], at=earlier)
    ran(releases[36], environments["develop"])
    return {"service": service, "releases": releases, "env": environments}


def pipeline_runs_the_alerts():
    import django_rq

    from releases.worker import PortalWorker

    queue = django_rq.get_queue("default")
    PortalWorker([queue], connection=queue.connection).work(burst=True)


def cell(user, environment):
    row = build_board(user).rows[0]
    return next(c for c in row.cells if c.environment.name == environment)


def test_production_far_behind_develop_is_flagged_though_its_neighbour_is_level(issue_scenario, viewer):
    production = cell(viewer, "production")
    assert production.builds_behind == 0  # staging runs the same build: no neighbour drift
    assert production.builds_behind_first == 29
    assert production.far_behind.label == "29 builds behind develop"
    assert "more than 20 builds" in production.far_behind.title
    assert cell(viewer, "develop").far_behind is None


def test_the_threshold_is_the_environments_and_zero_turns_it_off(issue_scenario, viewer):
    production = issue_scenario["env"]["production"]
    production.drift_alert_builds = 30
    production.save()
    assert cell(viewer, "production").far_behind is None
    production.drift_alert_builds = 0
    production.save()
    assert cell(viewer, "production").far_behind is None


def test_the_board_and_the_matrix_show_it(issue_scenario, client, viewer):
    client.force_login(viewer)
    page = client.get("/").content.decode()
    assert "29 builds behind develop" in page
    _token, plain = ApiToken.objects.issue(name="ci-read", scopes=["read"], all_services=True)
    body = client.get("/api/v1/matrix/", HTTP_AUTHORIZATION=f"Bearer {plain}").json()
    cells = {c["environment"]: c for c in body[0]["environments"]}
    assert (cells["production"]["builds_behind"], cells["production"]["drift_warning"]) == (0, False)
    assert (cells["production"]["builds_behind_first"], cells["production"]["far_behind"]) == (29, True)
    assert (cells["develop"]["builds_behind_first"], cells["develop"]["far_behind"]) == (None, False)


@pytest.mark.django_db(transaction=True)  # the worker sends the notices the rounds committed
def test_a_crossing_is_audited_and_said_in_slack_once(issue_scenario, slack_server, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        flagged = detect_far_behind()
    env = issue_scenario["env"]
    far = Deployment.objects.current().filter(environment__in=[env["qa"], env["staging"], env["production"]])
    assert sorted(flagged) == sorted(far.values_list("pk", flat=True))
    events = AuditEvent.objects.filter(action=AuditAction.DRIFT_FAR_BEHIND)
    assert events.count() == 3
    production = events.get(environment="production")
    assert production.data == {"builds_behind": 29, "behind": "develop", "threshold": 20}
    assert "2026.03.7, 29 builds behind develop" in production.message

    with django_capture_on_commit_callbacks(execute=True):
        assert detect_far_behind() == []  # the same crossing: nothing new
    assert events.count() == 3

    pipeline_runs_the_alerts()
    texts = [message["text"] for message in slack_server.messages]
    assert len(texts) == 3
    [said] = [text for text in texts if "in production" in text]
    assert "nexo-be in production is 29 builds behind develop" in said
    assert "https://portal.nexo.example/?service=nexo-be" in said


def test_a_place_back_within_the_limit_may_cross_again(issue_scenario):
    env = issue_scenario["env"]
    detect_far_behind()
    production = Deployment.objects.current().get(environment=env["production"])
    assert production.far_behind_since is not None
    env["production"].drift_alert_builds = 40
    env["production"].save()
    detect_far_behind()
    production.refresh_from_db()
    assert production.far_behind_since is None
    env["production"].drift_alert_builds = 20
    env["production"].save()
    detect_far_behind()
    assert AuditEvent.objects.filter(action=AuditAction.DRIFT_FAR_BEHIND, environment="production").count() == 2


def test_a_place_back_within_the_limit_is_audited_once_with_when_it_was_far_behind(issue_scenario):
    env = issue_scenario["env"]
    detect_far_behind()
    since = Deployment.objects.current().get(environment=env["production"]).far_behind_since
    env["production"].drift_alert_builds = 40
    env["production"].save()

    detect_far_behind()
    detect_far_behind()

    [back] = AuditEvent.objects.filter(action=AuditAction.DRIFT_BACK_WITHIN_LIMIT)
    assert (back.service, back.environment, back.version) == ("nexo-be", "production", "2026.03.7")
    assert back.message == "nexo-be in production runs 2026.03.7, 29 builds behind develop: back within 40"
    assert back.data == {
        "builds_behind": 29,
        "behind": "develop",
        "threshold": 40,
        "far_behind_since": DjangoJSONEncoder().default(since),
    }


def test_far_behind_alerts_turned_off_end_the_crossing_in_the_audit_log(issue_scenario):
    env = issue_scenario["env"]
    detect_far_behind()
    env["staging"].drift_alert_builds = 0
    env["staging"].save()

    detect_far_behind()

    [back] = AuditEvent.objects.filter(action=AuditAction.DRIFT_BACK_WITHIN_LIMIT)
    assert back.message == (
        "nexo-be in staging runs 2026.03.7, 29 builds behind develop: far-behind alerts are turned off there"
    )


def test_two_reconcilers_that_saw_the_flag_record_its_end_once(issue_scenario, monkeypatch):
    env = issue_scenario["env"]
    detect_far_behind()
    env["production"].drift_alert_builds = 40
    env["production"].save()
    seen = builds_behind_first()  # read by both before either clears the flag
    monkeypatch.setattr(reconciler, "builds_behind_first", lambda: seen)

    detect_far_behind()
    detect_far_behind()

    assert AuditEvent.objects.filter(action=AuditAction.DRIFT_BACK_WITHIN_LIMIT).count() == 1
    assert Deployment.objects.current().get(environment=env["production"]).far_behind_since is None


def test_qa_behind_develop_says_it_once_where_its_neighbour_is_the_first_environment(issue_scenario, client, viewer):
    """qa's environment before is develop: the drift line ("29 builds behind develop: worth a promotion")
    and the far-behind badge ("29 builds behind develop") said the same thing one under the other."""
    from tests.history import cell_html

    client.force_login(viewer)
    qa = cell_html(client.get("/"), "nexo-be", "qa")

    assert qa.count("builds behind develop") == 1, qa
    assert '<div class="drift warn" title="develop runs 2026.03.36;' in qa
    assert "the alert is set at more than 20 builds" in qa  # what the badge's title said
    # The matrix keeps both facts.
    _token, plain = ApiToken.objects.issue(name="ci-read", scopes=["read"], all_services=True)
    body = client.get("/api/v1/matrix/", HTTP_AUTHORIZATION=f"Bearer {plain}").json()
    cells = {c["environment"]: c for c in body[0]["environments"]}
    assert (cells["qa"]["drift"], cells["qa"]["far_behind"]) == ("29 builds behind develop: worth a promotion", True)


def test_a_promotion_back_within_the_limit_ends_the_crossing_once_naming_the_new_release(issue_scenario):
    """The usual end of a crossing: a newer build promoted there. It makes a new deployment, and the
    flag stayed on the one it replaced, where nothing looked at it: the end went unrecorded."""
    env, releases = issue_scenario["env"], issue_scenario["releases"]
    detect_far_behind()
    since = Deployment.objects.current().get(environment=env["production"]).far_behind_since

    ran(releases[35], env["production"])
    detect_far_behind()
    detect_far_behind()

    [back] = AuditEvent.objects.filter(action=AuditAction.DRIFT_BACK_WITHIN_LIMIT)
    assert (back.service, back.environment, back.version) == ("nexo-be", "production", "2026.03.35")
    assert back.data["far_behind_since"] == DjangoJSONEncoder().default(since)
    assert back.data["builds_behind"] == 1
    assert back.message == "nexo-be in production runs 2026.03.35, 1 build behind develop: back within 20"
    assert not Deployment.objects.filter(environment=env["production"], far_behind_since__isnull=False).exists()


@pytest.mark.django_db(transaction=True)  # the worker sends the notices the rounds committed
def test_a_promotion_still_far_behind_continues_the_crossing_without_a_new_alert(
    issue_scenario, slack_server, django_capture_on_commit_callbacks
):
    env, releases = issue_scenario["env"], issue_scenario["releases"]
    with django_capture_on_commit_callbacks(execute=True):
        detect_far_behind()
    since = Deployment.objects.current().get(environment=env["production"]).far_behind_since

    ran(releases[10], env["production"])  # 26 builds behind develop: still more than 20
    with django_capture_on_commit_callbacks(execute=True):
        assert detect_far_behind() == []

    assert AuditEvent.objects.filter(action=AuditAction.DRIFT_FAR_BEHIND, environment="production").count() == 1
    assert not AuditEvent.objects.filter(action=AuditAction.DRIFT_BACK_WITHIN_LIMIT).exists()
    assert Deployment.objects.current().get(environment=env["production"]).far_behind_since == since
    pipeline_runs_the_alerts()
    assert len([m for m in slack_server.messages if "in production" in m["text"]]) == 1


def test_a_reconciler_that_read_the_place_before_a_promotion_flags_it_once(issue_scenario, monkeypatch):
    """A round reads the deployments, a promotion replaces one, the round goes on with what it read: the
    flag must not land on the replaced deployment, or the new one is flagged (and alerted) again."""
    env, releases = issue_scenario["env"], issue_scenario["releases"]
    seen = builds_behind_first()
    ran(releases[10], env["production"])
    monkeypatch.setattr(reconciler, "builds_behind_first", lambda: seen)
    detect_far_behind()
    monkeypatch.undo()

    detect_far_behind()

    [far] = AuditEvent.objects.filter(action=AuditAction.DRIFT_FAR_BEHIND, environment="production")
    assert far.version == "2026.03.10"
    assert Deployment.objects.filter(environment=env["production"], far_behind_since__isnull=False).count() == 1


def test_a_reconciler_that_read_the_place_before_a_promotion_records_the_end_once(issue_scenario, monkeypatch):
    env, releases = issue_scenario["env"], issue_scenario["releases"]
    detect_far_behind()
    env["production"].drift_alert_builds = 40
    env["production"].save()
    seen = builds_behind_first()  # production 2026.03.7 flagged, now within 40
    ran(releases[35], env["production"])
    monkeypatch.setattr(reconciler, "builds_behind_first", lambda: seen)
    detect_far_behind()
    monkeypatch.undo()

    detect_far_behind()

    [back] = AuditEvent.objects.filter(action=AuditAction.DRIFT_BACK_WITHIN_LIMIT)
    assert back.version == "2026.03.35"
    assert not Deployment.objects.filter(environment=env["production"], far_behind_since__isnull=False).exists()


def test_an_alert_set_at_one_build_says_build_not_builds(issue_scenario, viewer):
    production = issue_scenario["env"]["production"]
    production.drift_alert_builds = 1
    production.drift_warning_builds = 1
    production.save()
    staging = issue_scenario["env"]["staging"]
    ran(issue_scenario["releases"][9], staging)  # production two builds behind staging

    cell_there = cell(viewer, "production")
    assert cell_there.far_behind.title.endswith("the alert is set at more than 1 build")
    assert cell_there.drift.title.endswith("more than 1 build behind is worth a promotion")


@pytest.mark.parametrize(("behind", "said"), [(1, "1 build behind develop"), (29, "29 builds behind develop")])
def test_the_slack_alert_counts_builds_in_the_singular_and_the_plural(behind, said):
    from releases.alerts import far_behind_message

    message = far_behind_message("nexo-be", "production", "2026.03.7", behind, "develop", 0)
    older = said.replace("behind develop", "older than what develop runs")
    assert f"nexo-be in production is {said}" in message["text"]
    assert f"production runs 2026.03.7, {older}" in message["text"]
