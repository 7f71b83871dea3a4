"""The Argo CD client against a server speaking Argo CD's API: reading, syncing, waiting, and every way it fails."""

import socket

import git
import pytest
import requests

from environments.argocd import (
    ApplicationStatus,
    ArgoCD,
    ArgoCDDeployFailed,
    ArgoCDError,
    ArgoCDRefused,
    ArgoCDTimeout,
    ArgoCDUnavailable,
    same_revision,
)
from tests.servers.argocd import OPERATION_IN_PROGRESS, Outcome, fake_sha

REVISION = fake_sha("promote(nexo-be): develop → 2026.02.7")


class FakeClock:
    """Time that passes only when the code under test sleeps; `at(moment, action)` runs an action then."""

    def __init__(self):
        self.now = 0.0
        self.sleeps = []
        self._actions = []

    def __call__(self):
        return self.now

    def at(self, moment, action):
        self._actions.append((moment, action))

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds
        for due in [due for due in self._actions if due[0] <= self.now]:
            self._actions.remove(due)
            due[1]()


@pytest.fixture
def clock(argocd_server):
    """A fake clock that the Argo CD test server reads too."""
    clock = FakeClock()
    argocd_server.clock = clock
    return clock


@pytest.fixture
def argocd(argocd_server):
    return ArgoCD.from_settings()


def wait(argocd, clock, name, revision=REVISION, **options):
    """wait_until_deployed on the fake clock, without jitter unless the test brings its own."""
    options.setdefault("timeout", 600)
    options.setdefault("poll_seconds", 5)
    options.setdefault("jitter", lambda: 0.0)
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
    assert isinstance(error, ArgoCDRefused)
    assert (error.http_status, error.code, error.message) == (401, 16, argocd_message)
    assert argocd_message in str(error)
    assert "ARGOCD_TOKEN is missing, expired or revoked" in str(error)


def test_an_unknown_application_is_permission_denied_and_the_error_says_it_may_not_exist(argocd):
    with pytest.raises(ArgoCDRefused) as raised:
        argocd.get_application("nexo-ghost-develop")

    error = raised.value
    assert (error.http_status, error.code, error.message) == (403, 7, "permission denied")
    assert "reading application nexo-ghost-develop" in str(error)
    assert "application nexo-ghost-develop does not exist" in str(error)
    assert "argocd_app_template" in str(error)


def test_an_argocd_that_reveals_missing_applications_answers_not_found(argocd_server, argocd):
    argocd_server.hide_missing_applications = False

    with pytest.raises(ArgoCDRefused) as raised:
        argocd.sync("nexo-ghost-develop", REVISION)

    error = raised.value
    assert (error.http_status, error.code) == (404, 5)
    assert 'applications.argoproj.io "nexo-ghost-develop" not found' in str(error)
    assert "no application named nexo-ghost-develop" in str(error)
    assert "argocd_app_template" in str(error)


def test_sync_while_another_operation_is_in_progress_is_a_transient_error(argocd_server, argocd):
    argocd_server.app("nexo-be-develop", busy_syncs=1)

    with pytest.raises(ArgoCDUnavailable) as raised:
        argocd.sync("nexo-be-develop", REVISION)

    error = raised.value
    assert (error.http_status, error.code, error.message) == (400, 9, OPERATION_IN_PROGRESS)
    assert error.is_transient
    assert error.is_operation_in_progress
    assert len(argocd_server.sync_requests) == 1


def test_the_test_server_answers_another_operation_in_progress_as_argocd_does(argocd_server):
    argocd_server.app("nexo-be-develop", busy_syncs=1)

    response = requests.post(
        f"{argocd_server.url}/api/v1/applications/nexo-be-develop/sync",
        json={"name": "nexo-be-develop", "revision": REVISION},
        headers={"Authorization": f"Bearer {argocd_server.token}"},
        timeout=5,
    )

    # util/argo's ErrAnotherOperationInProgress (gRPC FailedPrecondition) through grpc-gateway v1.
    assert response.status_code == 400
    assert response.json() == {"error": OPERATION_IN_PROGRESS, "code": 9, "message": OPERATION_IN_PROGRESS}


def test_a_second_sync_of_the_same_revision_joins_the_running_operation(argocd_server, argocd):
    argocd_server.app("nexo-be-develop", outcome=Outcome.NEVER_FINISHES)
    argocd.sync("nexo-be-develop", REVISION)
    argocd.get_application("nexo-be-develop")  # the controller picks the operation up

    application = argocd.sync("nexo-be-develop", REVISION)

    assert application["status"]["operationState"]["syncResult"]["revision"] == REVISION
    assert len(argocd_server.sync_requests) == 2


# --- terminating a sync that does not finish ------------------------------------------------------


def test_terminating_our_running_sync_ends_it_failed_and_frees_the_application(argocd_server, argocd):
    application = argocd_server.app("nexo-be-develop", stuck_syncs=1)
    argocd.sync("nexo-be-develop", REVISION)
    argocd.get_application("nexo-be-develop")  # the controller picks the operation up

    assert argocd.terminate_sync("nexo-be-develop", REVISION) is True

    [terminate] = argocd_server.terminate_requests
    assert terminate.path == "/api/v1/applications/nexo-be-develop/operation"
    assert terminate.headers["Authorization"] == f"Bearer {argocd_server.token}"
    # Terminating until the controller gets to it: still an operation in progress.
    assert argocd.get_application("nexo-be-develop")["status"]["operationState"]["phase"] == "Terminating"
    with pytest.raises(ArgoCDUnavailable) as busy:
        argocd.sync("nexo-be-develop", fake_sha("rollback"))
    assert busy.value.is_operation_in_progress
    state = argocd.get_application("nexo-be-develop")["status"]["operationState"]
    assert (state["phase"], state["message"]) == ("Failed", "Operation terminated")
    argocd.sync("nexo-be-develop", fake_sha("rollback"))
    assert application.operation.revision == fake_sha("rollback")


def test_a_sync_terminated_with_errors_fails_our_wait_with_argo_cds_words(argocd_server, argocd, clock):
    argocd_server.app("nexo-be-develop", stuck_syncs=1, termination_fails=True)
    argocd.sync("nexo-be-develop", REVISION)
    argocd.get_application("nexo-be-develop")
    assert argocd.terminate_sync("nexo-be-develop", REVISION) is True

    with pytest.raises(ArgoCDDeployFailed) as raised:
        wait(argocd, clock, "nexo-be-develop")

    assert "phase Error" in str(raised.value)
    assert raised.value.message == "Operation termination had errors"


def test_someone_elses_running_sync_is_never_terminated(argocd_server, argocd):
    argocd_server.app("nexo-be-develop", outcome=Outcome.NEVER_FINISHES)
    argocd.sync("nexo-be-develop", fake_sha("a person's sync"))
    argocd.get_application("nexo-be-develop")

    assert argocd.terminate_sync("nexo-be-develop", REVISION) is False
    assert argocd.terminate_sync("nexo-be-develop", REVISION, includes=lambda seen: True) is False, (
        "a person's sync of a later commit, though it contains ours: only auto-sync's is ours"
    )
    assert argocd_server.terminate_requests == []


def test_there_is_nothing_to_terminate_once_the_sync_finished(argocd_server, argocd):
    argocd_server.app("nexo-be-develop", instant=True)
    argocd.sync("nexo-be-develop", REVISION)
    argocd.get_application("nexo-be-develop")

    assert argocd.terminate_sync("nexo-be-develop", REVISION) is False
    assert argocd_server.terminate_requests == []


def test_a_sync_that_finished_between_the_read_and_the_terminate_is_not_an_error(argocd_server, argocd, monkeypatch):
    argocd_server.app("nexo-be-develop", running_polls=1)
    argocd.sync("nexo-be-develop", REVISION)
    running = argocd.get_application("nexo-be-develop")
    assert running["status"]["operationState"]["phase"] == "Running"
    argocd.get_application("nexo-be-develop")  # …and then it finished
    monkeypatch.setattr(ArgoCD, "get_application", lambda self, name, refresh=None: running)

    assert argocd.terminate_sync("nexo-be-develop", REVISION) is False

    [terminate] = argocd_server.terminate_requests
    assert terminate.method == "DELETE"  # answered InvalidArgument "No operation is in progress"


def test_a_token_without_the_sync_permission_cannot_terminate_and_is_told_so(argocd_server, argocd):
    application = argocd_server.app("nexo-be-develop", stuck_syncs=1)
    argocd.sync("nexo-be-develop", REVISION)
    argocd.get_application("nexo-be-develop")
    application.denied_actions = frozenset({"sync"})

    with pytest.raises(ArgoCDRefused, match="lacks the RBAC permission to sync application nexo-be-develop"):
        argocd.terminate_sync("nexo-be-develop", REVISION)

    assert argocd.get_application("nexo-be-develop")["status"]["operationState"]["phase"] == "Running"


def test_a_refused_sync_other_than_operation_in_progress_is_not_retried(argocd_server, argocd, clock):
    argocd_server.app("nexo-be-develop", auto_sync=True)

    with pytest.raises(ArgoCDRefused) as raised:
        wait(argocd, clock, "nexo-be-develop")

    assert raised.value.code == 9
    assert f"Cannot sync to {REVISION}: auto-sync currently set to main" in str(raised.value)
    assert len(argocd_server.sync_requests) == 1
    assert clock.sleeps == []


def test_a_degraded_application_reads_as_one_statement_from_the_resources_health(argocd_server, argocd, clock):
    argocd_server.app("nexo-be-develop", outcome=Outcome.DEGRADED)

    with pytest.raises(ArgoCDDeployFailed) as raised:
        wait(argocd, clock, "nexo-be-develop")

    assert str(raised.value) == (
        'Argo CD application nexo-be-develop is Degraded (Deployment "nexo-be-develop" exceeded its progress '
        f"deadline); the sync to {REVISION[:12]} itself succeeded."
    )
    assert raised.value.message == 'Deployment "nexo-be-develop" exceeded its progress deadline'
    assert raised.value.applied_health == "Degraded", "its manifests were applied: they run, unhealthy"


def test_a_degraded_application_without_health_messages_never_borrows_the_syncs_message(argocd_server, argocd, clock):
    # As with controller.resource.health.persist=false: status.resources carry no health at all.
    argocd_server.app("nexo-be-develop", outcome=Outcome.DEGRADED, persist_resource_health=False)

    with pytest.raises(ArgoCDDeployFailed) as raised:
        wait(argocd, clock, "nexo-be-develop")

    assert "successfully synced" not in str(raised.value)
    assert str(raised.value) == (
        "Argo CD application nexo-be-develop is Degraded (Argo CD gave no health message for its resources); "
        f"the sync to {REVISION[:12]} itself succeeded."
    )


def test_a_failed_sync_fails_with_argocds_operation_message(argocd_server, argocd, clock):
    argocd_server.app("nexo-be-develop", outcome=Outcome.SYNC_FAILS)

    with pytest.raises(ArgoCDDeployFailed) as raised:
        wait(argocd, clock, "nexo-be-develop")

    assert "phase Failed" in str(raised.value)
    assert "one or more objects failed to apply" in raised.value.message
    assert raised.value.applied_health == "", "applying it failed"


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


def test_an_application_syncs_in_the_fixed_time_the_server_is_given(argocd_server, argocd, clock):
    argocd_server.app("nexo-be-develop", sync_seconds=12)
    seen = []

    wait(argocd, clock, "nexo-be-develop", on_status=seen.append)

    assert clock.now == 15
    assert [(s.phase, s.health) for s in seen] == [("Running", "Progressing")] * 3 + [("Succeeded", "Healthy")]


def test_a_sync_request_while_argocd_is_down_is_asked_again_until_it_is_back(argocd_server, argocd, clock):
    argocd_server.app("nexo-be-develop", instant=True)
    argocd_server.stop()
    clock.at(2.5, argocd_server.start)
    retried = []

    status = wait(argocd, clock, "nexo-be-develop", poll_seconds=1, on_retry=lambda *retry: retried.append(retry))

    assert status.is_deployed(REVISION)
    assert clock.sleeps == [1, 2]
    assert [delay for _, delay in retried] == [1, 2]
    assert all("connection refused" in str(error) for error, _ in retried)
    assert len(argocd_server.sync_requests) == 1


def test_argocd_going_away_and_coming_back_on_the_same_port_is_waited_out(argocd_server, argocd):
    """Real time: the server refuses connections for a second, then answers again at the same address."""
    argocd_server.app("nexo-be-develop", instant=True)
    argocd_server.down_for(1.0)
    retried = []

    status = argocd.wait_until_deployed(
        "nexo-be-develop", REVISION, timeout=30, poll_seconds=0.2, on_retry=lambda error, _: retried.append(error)
    )

    assert status.is_deployed(REVISION)
    assert retried
    assert all(error.http_status is None for error in retried)
    assert argocd_server.url == argocd.base_url
    assert len(argocd_server.sync_requests) == 1


def test_argocd_dropping_a_kept_alive_connection_is_a_refused_connection_next(argocd_server, argocd):
    argocd_server.app("nexo-be-develop")
    argocd.get_application("nexo-be-develop")  # leaves a connection in the session's pool

    argocd_server.stop()

    with pytest.raises(ArgoCDUnavailable) as raised:
        argocd.get_application("nexo-be-develop")
    assert "connection refused" in str(raised.value)
    argocd_server.start()
    assert argocd.get_application("nexo-be-develop")["metadata"]["name"] == "nexo-be-develop"


def test_another_operation_in_progress_is_asked_again_until_argocd_takes_the_sync(argocd_server, argocd, clock):
    argocd_server.app("nexo-be-develop", instant=True)
    argocd_server.busy_for("nexo-be-develop", 2)
    retried = []

    status = wait(argocd, clock, "nexo-be-develop", poll_seconds=0.5, on_retry=lambda error, _: retried.append(error))

    assert status.is_deployed(REVISION)
    assert clock.sleeps == [0.5, 1, 2]
    assert len(argocd_server.sync_requests) == 4
    assert all(error.is_operation_in_progress for error in retried)


def test_argocd_answering_503_is_asked_again_until_it_serves(argocd_server, argocd, clock):
    argocd_server.app("nexo-be-develop", instant=True)
    argocd_server.unavailable_for(3)
    retried = []

    status = wait(argocd, clock, "nexo-be-develop", poll_seconds=1, on_retry=lambda error, _: retried.append(error))

    assert status.is_deployed(REVISION)
    assert [(error.http_status, error.code) for error in retried] == [(503, 14), (503, 14)]


def test_backoff_doubles_from_the_poll_interval_up_to_its_cap_until_the_deadline(argocd_server, clock):
    argocd = ArgoCD(f"http://127.0.0.1:{closed_port()}", "token")

    with pytest.raises(ArgoCDTimeout):
        wait(argocd, clock, "nexo-be-develop", timeout=300, poll_seconds=5)

    assert clock.sleeps == [5, 10, 20] + [30] * 8 + [25]


def test_jitter_shortens_each_backoff_by_up_to_a_quarter(argocd_server, clock):
    argocd = ArgoCD(f"http://127.0.0.1:{closed_port()}", "token")

    with pytest.raises(ArgoCDTimeout):
        wait(argocd, clock, "nexo-be-develop", timeout=30, poll_seconds=4, jitter=lambda: 1.0)

    assert clock.sleeps == [3, 6, 12, 9]


def test_argocd_down_until_the_deadline_times_out_saying_it_did_not_answer(argocd_server, argocd, clock):
    argocd_server.app("nexo-be-develop")
    argocd_server.stop()

    with pytest.raises(ArgoCDTimeout) as raised:
        wait(argocd, clock, "nexo-be-develop", timeout=600)

    error = raised.value
    assert str(error).startswith("Argo CD did not answer for 600 s: connection refused.")
    assert f"application nexo-be-develop to run revision {REVISION[:12]} Synced and Healthy" in str(error)
    assert isinstance(error.last_error, ArgoCDUnavailable)
    assert clock.now == 600


def test_an_outage_in_the_middle_of_the_wait_says_how_long_and_what_was_seen_before(argocd_server, argocd, clock):
    argocd_server.app("nexo-be-develop", outcome=Outcome.NEVER_FINISHES)
    clock.at(10, argocd_server.stop)

    with pytest.raises(ArgoCDTimeout) as raised:
        wait(argocd, clock, "nexo-be-develop", timeout=60)

    assert str(raised.value).startswith("Argo CD did not answer for 50 s: connection refused.")
    assert "it last showed sync OutOfSync" in str(raised.value)
    assert "operation Running (waiting for healthy state of apps/Deployment/nexo-be-develop)" in str(raised.value)


def test_another_operation_until_the_deadline_times_out_with_argocds_words(argocd_server, argocd, clock):
    argocd_server.app("nexo-be-develop")
    argocd_server.busy_for("nexo-be-develop", 1000)

    with pytest.raises(ArgoCDTimeout) as raised:
        wait(argocd, clock, "nexo-be-develop", timeout=60)

    assert str(raised.value).startswith(
        f"Argo CD refused to sync application nexo-be-develop for 60 s: {OPERATION_IN_PROGRESS}."
    )
    assert raised.value.last_error.is_operation_in_progress


@pytest.mark.parametrize(
    ("setup", "status", "words"),
    [
        (
            lambda server: setattr(server, "token", "rotated-token"),
            401,
            ["did not accept the portal's token", "ARGOCD_TOKEN is missing, expired or revoked"],
        ),
        (
            lambda server: server.app("nexo-be-develop", denied_actions={"sync"}),
            403,
            ["lacks the RBAC permission to sync application nexo-be-develop", "argocd_app_template"],
        ),
        (
            lambda server: None,  # no such application, and Argo CD will not say so
            403,
            ["application nexo-be-develop does not exist", "argocd_app_template"],
        ),
        (
            lambda server: setattr(server, "hide_missing_applications", False),
            404,
            ["no application named nexo-be-develop", "argocd_app_template"],
        ),
    ],
    ids=["401", "403-rbac", "403-missing", "404"],
)
def test_a_refusal_fails_at_once_saying_what_to_fix(argocd_server, argocd, clock, setup, status, words):
    setup(argocd_server)

    with pytest.raises(ArgoCDRefused) as raised:
        wait(argocd, clock, "nexo-be-develop")

    assert raised.value.http_status == status
    assert not raised.value.is_transient
    for word in words:
        assert word in str(raised.value)
    assert len(argocd_server.requests) == 1
    assert clock.sleeps == []


def test_a_refusal_after_an_outage_still_fails_at_once(argocd_server, argocd, clock):
    argocd_server.app("nexo-be-develop", denied_actions={"get"})
    argocd_server.stop()
    clock.at(5, argocd_server.start)

    with pytest.raises(ArgoCDRefused) as raised:
        wait(argocd, clock, "nexo-be-develop", auto_sync=True)

    assert "permission to get application nexo-be-develop" in str(raised.value)
    assert clock.now == 5


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


def test_an_unreachable_argocd_is_a_transient_error_that_says_why():
    argocd = ArgoCD(f"http://127.0.0.1:{closed_port()}", "token")

    with pytest.raises(ArgoCDUnavailable) as raised:
        argocd.get_application("nexo-be-develop")

    assert raised.value.is_transient
    assert raised.value.http_status is None
    assert "Could not reach Argo CD" in str(raised.value)
    assert "connection refused" in str(raised.value)


def test_an_unreachable_argocd_while_waiting_for_auto_sync_times_out_with_the_reason(argocd_server, clock):
    argocd = ArgoCD(f"http://127.0.0.1:{closed_port()}", "token")

    with pytest.raises(ArgoCDTimeout) as raised:
        wait(argocd, clock, "nexo-be-develop", auto_sync=True, timeout=30, poll_seconds=10)

    assert str(raised.value).startswith("Argo CD did not answer for 30 s: connection refused.")
    assert clock.sleeps == [10, 20]


def test_an_answer_that_is_not_argocds_api_says_to_check_the_url(health_server):
    health_server.answer("/api/v1/applications/nexo-be-develop", 200, "<html>Welcome to nginx!</html>")
    argocd = ArgoCD(health_server.url, "token")

    with pytest.raises(ArgoCDRefused) as raised:
        argocd.get_application("nexo-be-develop")

    assert "Welcome to nginx!" in str(raised.value)
    assert "ARGOCD_URL" in str(raised.value)


@pytest.mark.parametrize("body", ['{"status": "UP"}', '{"message": "Welcome to the gateway"}'])
def test_json_that_is_not_an_application_says_to_check_the_url(health_server, body):
    # What a health endpoint or an API gateway at the wrong address answers: JSON, but no Application.
    health_server.answer("/api/v1/applications/nexo-be-develop", 200, body)
    argocd = ArgoCD(health_server.url, "token")

    with pytest.raises(ArgoCDRefused) as raised:
        argocd.get_application("nexo-be-develop")

    assert "an answer that is not Argo CD's API" in str(raised.value)
    assert "ARGOCD_URL" in str(raised.value)


def test_a_proxy_answering_bad_gateway_is_transient(health_server):
    health_server.answer("/api/v1/applications/nexo-be-develop", 502, "<html>502 Bad Gateway</html>")
    argocd = ArgoCD(health_server.url, "token")

    with pytest.raises(ArgoCDUnavailable) as raised:
        argocd.get_application("nexo-be-develop")

    assert raised.value.http_status == 502
    assert "502 Bad Gateway" in str(raised.value)


# --- listing every application at once --------------------------------------------------------------


HEALTH_FIELDS = ["metadata.name", "status.health.status"]


def test_list_applications_asks_for_the_fields_it_needs_and_returns_the_items(argocd_server, argocd):
    argocd_server.app("nexo-fe-develop")
    argocd_server.app("nexo-be-develop", later_health="Degraded")

    items = argocd.list_applications(fields=HEALTH_FIELDS)

    assert items == [
        {"metadata": {"name": "nexo-be-develop"}, "status": {"health": {"status": "Degraded"}}},
        {"metadata": {"name": "nexo-fe-develop"}, "status": {"health": {"status": "Healthy"}}},
    ]
    [request] = argocd_server.requests
    assert (request.method, request.path) == ("GET", "/api/v1/applications")
    assert request.query == {"fields": ["metadata.resourceVersion,items.metadata.name,items.status.health.status"]}
    assert request.headers["Authorization"] == f"Bearer {argocd_server.token}"


def test_list_applications_without_fields_returns_whole_applications(argocd_server, argocd):
    argocd_server.app("nexo-be-develop")

    [item] = argocd.list_applications()

    assert ApplicationStatus.from_application(item).health == "Healthy"
    assert item["spec"]["project"] == "default"


def test_an_argocd_with_no_application_the_token_may_read_lists_none(argocd_server, argocd):
    argocd_server.app("nexo-be-production", denied_actions=frozenset({"get"}))

    assert argocd.list_applications(fields=HEALTH_FIELDS) == []


def test_listing_does_not_move_a_running_sync_on(argocd_server, argocd):
    argocd_server.app("nexo-be-develop", running_polls=1)
    argocd.sync("nexo-be-develop", REVISION)

    argocd.list_applications()
    argocd.list_applications()

    assert argocd_server.app("nexo-be-develop").operation.polls == 0


def test_listing_with_a_rejected_token_says_what_to_fix(argocd_server):
    with pytest.raises(ArgoCDRefused) as raised:
        ArgoCD(argocd_server.url, "stolen-or-expired").list_applications()

    assert raised.value.http_status == 401
    assert "listing applications" in str(raised.value)
    assert "ARGOCD_TOKEN is missing, expired or revoked" in str(raised.value)


def test_listing_while_argocd_starts_is_a_transient_error(argocd_server, argocd):
    argocd_server.unavailable_for(60)

    with pytest.raises(ArgoCDUnavailable) as raised:
        argocd.list_applications()

    assert raised.value.http_status == 503
    assert "listing applications" in str(raised.value)


def test_listing_an_unreachable_argocd_is_a_transient_error_that_says_why():
    with pytest.raises(ArgoCDUnavailable) as raised:
        ArgoCD(f"http://127.0.0.1:{closed_port()}", "token").list_applications()

    assert "Could not reach Argo CD" in str(raised.value)
    assert "while listing applications: connection refused" in str(raised.value)


@pytest.mark.parametrize(
    "body",
    [
        "<html>Welcome to nginx!</html>",
        '{"status": "UP"}',
        '{"metadata": {}, "items": {"nexo-be-develop": {}}}',
        '{"metadata": {}, "items": [{"status": {"health": {"status": "Healthy"}}}]}',
    ],
)
def test_a_list_that_is_not_argocds_says_to_check_the_url(health_server, body):
    health_server.answer("/api/v1/applications", 200, body)

    with pytest.raises(ArgoCDRefused) as raised:
        ArgoCD(health_server.url, "token").list_applications()

    assert "while listing applications" in str(raised.value)
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


def history(*revisions):
    return [{"id": number, "revision": revision} for number, revision in enumerate(revisions)]


@pytest.mark.parametrize(
    ("overrides", "runs"),
    [
        ({"history": history(fake_sha("older"), REVISION)}, True),
        ({}, True),  # no history kept (revisionHistoryLimit): what it reports Synced runs
        # `argocd app rollback`: the branch's commit reported OutOfSync, the older one last in the history.
        ({"sync": "OutOfSync", "history": history(fake_sha("older"), REVISION, fake_sha("older"))}, False),
        # Synced at a commit of the branch after ours, deployed by an earlier sync (nothing of it changed since).
        ({"revision": fake_sha("later"), "history": history(REVISION)}, "includes"),
        # Our commit OutOfSync with the branch's newer one, not synced yet: ours still runs.
        ({"sync": "OutOfSync", "revision": fake_sha("later"), "history": history(REVISION)}, True),
    ],
)
def test_what_runs_is_the_synced_revision_else_the_one_deployed_last(overrides, runs):
    status = ApplicationStatus.from_application(application(**overrides))
    assert status.runs(REVISION) is (runs is True)
    assert status.runs(REVISION, includes=lambda seen: seen == fake_sha("later")) is bool(runs)


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


@pytest.mark.parametrize(
    ("details", "trouble"),
    [
        ({"message": "connection refused"}, ("Argo CD unreachable", "connection refused")),
        (
            {"http_status": 503, "code": 14, "message": "connection error"},
            ("Argo CD failing", "HTTP 503: connection error"),
        ),
        ({"http_status": 502}, ("Argo CD failing", "HTTP 502")),
        (
            {"http_status": 400, "code": 9, "message": "another operation is already in progress"},
            ("Argo CD busy with another operation", "another operation is already in progress"),
        ),
    ],
)
def test_a_transient_error_says_what_is_wrong_in_a_few_words(details, trouble):
    assert ArgoCDUnavailable("Could not reach Argo CD.", **details).trouble == trouble
