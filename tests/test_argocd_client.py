"""The Argo CD client against a server speaking Argo CD's API: reading, syncing, waiting, and every way it fails."""

import socket

import git
import pytest

from environments.argocd import ApplicationStatus, ArgoCD, ArgoCDError, ArgoCDTimeout, same_revision
from tests.servers.argocd import Outcome, fake_sha

REVISION = fake_sha("promote(nexo-be): develop → 2026.02.7")


class FakeClock:
    """Time that passes only when the code under test sleeps."""

    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def argocd(argocd_server):
    return ArgoCD.from_settings()


def wait(argocd, clock, name, revision=REVISION, **options):
    options.setdefault("timeout", 600)
    options.setdefault("poll_seconds", 5)
    return argocd.wait_until_deployed(name, revision, sleep=clock.sleep, clock=clock, **options)


def closed_port():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        return unused.getsockname()[1]


def test_get_application_sends_the_bearer_token_and_returns_argocds_json(argocd_server, argocd):
    argocd_server.app("nexo-be-develop")

    application = argocd.get_application("nexo-be-develop")

    assert application["metadata"]["name"] == "nexo-be-develop"
    assert application["status"]["sync"]["status"] == "Synced"
    request = argocd_server.requests[-1]
    assert (request.method, request.path) == ("GET", "/api/v1/applications/nexo-be-develop")
    assert request.headers["Authorization"] == f"Bearer {argocd_server.token}"
    assert request.query == {}


def test_get_application_with_refresh_asks_argocd_to_compare_with_git(argocd_server, argocd):
    argocd_server.app("nexo-be-develop")

    argocd.get_application("nexo-be-develop", refresh="normal")

    assert argocd_server.requests[-1].query == {"refresh": ["normal"]}


def test_sync_posts_an_application_sync_request_for_the_revision(argocd_server, argocd):
    argocd_server.app("nexo-be-develop")

    application = argocd.sync("nexo-be-develop", REVISION)

    assert application["operation"]["sync"]["revision"] == REVISION
    [request] = argocd_server.sync_requests
    assert request.path == "/api/v1/applications/nexo-be-develop/sync"
    assert request.json == {"name": "nexo-be-develop", "revision": REVISION, "prune": False}
    assert request.headers["Authorization"] == f"Bearer {argocd_server.token}"


def test_wait_until_deployed_syncs_then_polls_until_synced_succeeded_and_healthy(argocd_server, argocd, clock):
    argocd_server.app("nexo-be-develop", running_polls=2, progressing_polls=1)
    seen = []

    status = wait(argocd, clock, "nexo-be-develop", on_status=seen.append)

    assert status.is_deployed(REVISION)
    assert [(s.phase, s.sync_status, s.health) for s in seen] == [
        ("Running", "OutOfSync", "Progressing"),
        ("Running", "OutOfSync", "Progressing"),
        ("Succeeded", "Synced", "Progressing"),
        ("Succeeded", "Synced", "Healthy"),
    ]
    assert len(argocd_server.sync_requests) == 1
    assert clock.sleeps == [5, 5, 5]


def test_an_instant_application_is_deployed_on_the_first_poll(argocd_server, argocd, clock):
    argocd_server.app("nexo-be-develop", instant=True)
    seen = []

    wait(argocd, clock, "nexo-be-develop", on_status=seen.append)

    assert len(seen) == 1
    assert seen[0].is_deployed(REVISION)
    assert clock.sleeps == []


@pytest.mark.parametrize(
    ("token", "argocd_message"),
    [("", "no session information"), ("stolen-or-expired", "invalid session: failed to verify the token")],
)
def test_a_rejected_token_says_so_with_argocds_message(argocd_server, token, argocd_message):
    argocd_server.app("nexo-be-develop")
    argocd = ArgoCD(argocd_server.url, token)

    with pytest.raises(ArgoCDError) as raised:
        argocd.get_application("nexo-be-develop")

    error = raised.value
    assert (error.http_status, error.code, error.message) == (401, 16, argocd_message)
    assert argocd_message in str(error)
    assert "ARGOCD_TOKEN" in str(error)


def test_an_unknown_application_is_permission_denied_and_the_error_says_it_may_not_exist(argocd):
    with pytest.raises(ArgoCDError) as raised:
        argocd.get_application("nexo-ghost-develop")

    error = raised.value
    assert (error.http_status, error.code, error.message) == (403, 7, "permission denied")
    assert "reading application nexo-ghost-develop" in str(error)
    assert "does not exist" in str(error)


def test_an_argocd_that_reveals_missing_applications_answers_not_found(argocd_server, argocd):
    argocd_server.hide_missing_applications = False

    with pytest.raises(ArgoCDError) as raised:
        argocd.sync("nexo-ghost-develop", REVISION)

    error = raised.value
    assert (error.http_status, error.code) == (404, 5)
    assert 'applications.argoproj.io "nexo-ghost-develop" not found' in str(error)
    assert "application name template" in str(error)


def test_sync_retries_while_another_operation_is_in_progress_then_succeeds(argocd_server, argocd, clock):
    argocd_server.app("nexo-be-develop", busy_syncs=2)

    application = argocd.sync("nexo-be-develop", REVISION, retry_seconds=3, sleep=clock.sleep)

    assert application["operation"]["sync"]["revision"] == REVISION
    assert len(argocd_server.sync_requests) == 3
    assert clock.sleeps == [3, 3]


def test_sync_gives_up_after_a_bounded_number_of_attempts_with_argocds_message(argocd_server, argocd, clock):
    argocd_server.app("nexo-be-develop", busy_syncs=100)

    with pytest.raises(ArgoCDError) as raised:
        argocd.sync("nexo-be-develop", REVISION, attempts=3, retry_seconds=3, sleep=clock.sleep)

    error = raised.value
    assert (error.http_status, error.code, error.message) == (400, 9, "another operation is already in progress")
    assert "another operation is already in progress" in str(error)
    assert len(argocd_server.sync_requests) == 3


def test_a_second_sync_of_the_same_revision_joins_the_running_operation(argocd_server, argocd, clock):
    argocd_server.app("nexo-be-develop", outcome=Outcome.NEVER_FINISHES)
    argocd.sync("nexo-be-develop", REVISION)
    argocd.get_application("nexo-be-develop")  # the controller picks the operation up

    application = argocd.sync("nexo-be-develop", REVISION, sleep=clock.sleep)

    assert application["status"]["operationState"]["syncResult"]["revision"] == REVISION
    assert len(argocd_server.sync_requests) == 2
    assert clock.sleeps == []


def test_a_refused_sync_other_than_operation_in_progress_is_not_retried(argocd_server, argocd, clock):
    argocd_server.app("nexo-be-develop", auto_sync=True)

    with pytest.raises(ArgoCDError) as raised:
        argocd.sync("nexo-be-develop", REVISION, sleep=clock.sleep)

    assert raised.value.code == 9
    assert f"Cannot sync to {REVISION}: auto-sync currently set to main" in str(raised.value)
    assert len(argocd_server.sync_requests) == 1


def test_a_degraded_application_reads_as_one_statement_from_the_resources_health(argocd_server, argocd, clock):
    argocd_server.app("nexo-be-develop", outcome=Outcome.DEGRADED)

    with pytest.raises(ArgoCDError) as raised:
        wait(argocd, clock, "nexo-be-develop")

    assert str(raised.value) == (
        'Argo CD application nexo-be-develop is Degraded (Deployment "nexo-be-develop" exceeded its progress '
        f"deadline); the sync to {REVISION[:12]} itself succeeded."
    )
    assert raised.value.message == 'Deployment "nexo-be-develop" exceeded its progress deadline'


def test_a_degraded_application_without_health_messages_never_borrows_the_syncs_message(argocd_server, argocd, clock):
    # As with controller.resource.health.persist=false: status.resources carry no health at all.
    argocd_server.app("nexo-be-develop", outcome=Outcome.DEGRADED, persist_resource_health=False)

    with pytest.raises(ArgoCDError) as raised:
        wait(argocd, clock, "nexo-be-develop")

    assert "successfully synced" not in str(raised.value)
    assert str(raised.value) == (
        "Argo CD application nexo-be-develop is Degraded (Argo CD gave no health message for its resources); "
        f"the sync to {REVISION[:12]} itself succeeded."
    )


def test_a_failed_sync_fails_with_argocds_operation_message(argocd_server, argocd, clock):
    argocd_server.app("nexo-be-develop", outcome=Outcome.SYNC_FAILS)

    with pytest.raises(ArgoCDError) as raised:
        wait(argocd, clock, "nexo-be-develop")

    assert not isinstance(raised.value, ArgoCDTimeout)
    assert "phase Failed" in str(raised.value)
    assert "one or more objects failed to apply" in raised.value.message


def test_a_sync_that_never_finishes_times_out_naming_the_last_state_seen(argocd_server, argocd, clock):
    argocd_server.app("nexo-be-develop", outcome=Outcome.NEVER_FINISHES)

    with pytest.raises(ArgoCDTimeout) as raised:
        wait(argocd, clock, "nexo-be-develop", timeout=60, poll_seconds=5)

    message = str(raised.value)
    assert "within 60 s" in message
    assert "sync OutOfSync" in message
    assert "operation Running" in message
    assert "health Progressing" in message
    assert clock.now == 60


def make_gitops_repository(path):
    """A bare repository with one commit on main, as Argo CD would watch; returns (bare, working copy)."""
    bare = git.Repo.init(path / "gitops.git", bare=True)
    work = git.Repo.clone_from(str(path / "gitops.git"), path / "work")
    commit_values(work, "2026.02.6")
    return bare, work


def commit_values(work, tag):
    with open(f"{work.working_tree_dir}/values-develop.yaml", "w") as values:
        values.write(f"image:\n  tag: {tag}\n")
    work.index.add(["values-develop.yaml"])
    author = git.Actor("Nexo Release Portal", "release-portal@nexo.invalid")
    commit = work.index.commit(f"promote(nexo-be): develop → {tag}", author=author, committer=author)
    work.remote().push("HEAD:refs/heads/main")
    return commit.hexsha


def test_an_auto_sync_application_is_only_refreshed_never_synced(argocd_server, argocd, clock, tmp_path):
    bare, work = make_gitops_repository(tmp_path)
    argocd_server.app("nexo-be-develop", auto_sync=True, head=lambda: bare.commit("main").hexsha)
    promoted = commit_values(work, "2026.02.7")

    status = wait(argocd, clock, "nexo-be-develop", promoted, auto_sync=True)

    assert status.revision == promoted
    assert argocd_server.sync_requests == []
    assert all(request.query == {"refresh": ["normal"]} for request in argocd_server.requests)
    [deployment] = argocd_server.app("nexo-be-develop").history
    assert deployment["revision"] == promoted
    assert deployment["initiatedBy"] == {"automated": True}


def test_an_unreachable_argocd_is_an_error_that_says_why(clock):
    argocd = ArgoCD(f"http://127.0.0.1:{closed_port()}", "token")

    with pytest.raises(ArgoCDError) as raised:
        argocd.get_application("nexo-be-develop")

    assert raised.value.http_status is None
    assert "Could not reach Argo CD" in str(raised.value)
    assert "connection refused" in str(raised.value)


def test_an_unreachable_argocd_while_waiting_for_auto_sync_times_out_with_the_reason(clock):
    argocd = ArgoCD(f"http://127.0.0.1:{closed_port()}", "token")

    with pytest.raises(ArgoCDTimeout) as raised:
        wait(argocd, clock, "nexo-be-develop", auto_sync=True, timeout=30, poll_seconds=10)

    assert "connection refused" in str(raised.value)
    assert clock.sleeps == [10, 10, 10]


def test_an_answer_that_is_not_argocds_api_says_to_check_the_url(health_server):
    health_server.answer("/api/v1/applications/nexo-be-develop", 200, "<html>Welcome to nginx!</html>")
    argocd = ArgoCD(health_server.url, "token")

    with pytest.raises(ArgoCDError) as raised:
        argocd.get_application("nexo-be-develop")

    assert "Welcome to nginx!" in str(raised.value)
    assert "ARGOCD_URL" in str(raised.value)


def test_from_settings_is_none_when_argocd_is_not_configured(settings):
    settings.ARGOCD_URL = ""

    assert ArgoCD.from_settings() is None


def test_from_settings_uses_the_url_token_timeout_and_tls_settings(settings, argocd_server):
    settings.HTTP_TIMEOUT_SECONDS = 3.5
    settings.ARGOCD_VERIFY_TLS = False

    argocd = ArgoCD.from_settings()

    assert (argocd.base_url, argocd.timeout, argocd.verify) == (argocd_server.url, 3.5, False)
    argocd_server.app("nexo-be-develop")
    argocd.get_application("nexo-be-develop")
    assert argocd_server.requests[-1].headers["Authorization"] == f"Bearer {argocd_server.token}"


def application(
    sync="Synced", revision=REVISION, phase="Succeeded", health="Healthy", operation_revision=REVISION, **extra
):
    status = {"sync": {"status": sync, "revision": revision}, "health": {"status": health}, **extra}
    if phase:
        status["operationState"] = {"phase": phase, "message": "", "syncResult": {"revision": operation_revision}}
    return {"status": status}


@pytest.mark.parametrize(
    ("overrides", "deployed"),
    [
        ({}, True),
        ({"revision": fake_sha("older")}, False),
        ({"sync": "OutOfSync"}, False),
        ({"phase": "Running"}, False),
        ({"phase": ""}, False),
        ({"health": "Progressing"}, False),
        ({"health": "Degraded"}, False),
    ],
)
def test_is_deployed_needs_the_revision_synced_succeeded_and_healthy(overrides, deployed):
    assert ApplicationStatus.from_application(application(**overrides)).is_deployed(REVISION) is deployed


def test_is_deployed_accepts_an_abbreviated_revision():
    assert ApplicationStatus.from_application(application()).is_deployed(REVISION[:7])
    assert not ApplicationStatus.from_application(application()).is_deployed(REVISION[:6])


@pytest.mark.parametrize(
    ("overrides", "failed"),
    [
        ({"phase": "Failed", "sync": "OutOfSync"}, True),
        ({"phase": "Error", "sync": "OutOfSync"}, True),
        ({"phase": "Failed", "sync": "OutOfSync", "operation_revision": fake_sha("older")}, False),
        ({"health": "Degraded"}, True),
        ({"health": "Degraded", "phase": "Running"}, False),
        ({"health": "Degraded", "revision": fake_sha("older")}, False),
        ({"health": "Degraded", "sync": "OutOfSync"}, False),
    ],
)
def test_only_a_failure_of_our_revision_fails_the_wait(overrides, failed):
    status = ApplicationStatus.from_application(application(**overrides))
    assert bool(status.failure("nexo-be-develop", REVISION)) is failed


def test_the_message_is_the_most_useful_one_argocd_gave():
    degraded = application(
        health="Degraded",
        resources=[
            {"kind": "Service", "name": "nexo-be", "health": {"status": "Healthy"}},
            {
                "kind": "Deployment",
                "name": "nexo-be",
                "health": {"status": "Degraded", "message": "exceeded its progress deadline"},
            },
        ],
    )
    failed = application(phase="Failed", conditions=[{"type": "SyncError", "message": "retried 5 times"}])
    failed["status"]["operationState"]["message"] = "one or more objects failed to apply"
    with_condition = application(phase="", conditions=[{"type": "ComparisonError", "message": "repository not found"}])

    assert ApplicationStatus.from_application(degraded).message == "Deployment nexo-be: exceeded its progress deadline"
    assert ApplicationStatus.from_application(failed).message == "one or more objects failed to apply"
    assert ApplicationStatus.from_application(with_condition).message == "ComparisonError: repository not found"


def test_same_revision_compares_full_and_abbreviated_shas():
    assert same_revision(REVISION, REVISION.upper())
    assert same_revision(REVISION[:7], REVISION)
    assert not same_revision(REVISION, fake_sha("other"))
    assert not same_revision("", REVISION)
