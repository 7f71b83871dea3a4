"""The GitOps working copy's lock and network limits, against real Git and Redis."""

import json
import socket
import threading

import pytest

from releases.gitops.repo import GitOpsError, GitOpsRepository
from tests.gitops import GitOpsRemote


@pytest.fixture
def silent_server():
    """A TCP server that accepts connections and never answers: a Git host that hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held, stop = [], threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/nexo-gitops.git"
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    listener.close()


def test_a_git_host_that_hangs_is_given_up_on_after_the_network_timeout(
    silent_server, settings, tmp_path, redis_connection
):
    settings.GITOPS_NETWORK_TIMEOUT_SECONDS = 1
    repository = GitOpsRepository(url=silent_server, workdir=str(tmp_path))
    with pytest.raises(GitOpsError, match="Cannot reach the GitOps repository") as failure, repository.locked():
        repository.sync()
    assert "did not complete in 1 secs" in str(failure.value), "stopped by the timeout, not by a refusal"


def test_the_lock_is_renewed_before_each_network_call(settings, tmp_path, redis_connection):
    remote = GitOpsRemote(tmp_path)
    repository = GitOpsRepository(url=remote.url, workdir=str(tmp_path / "work"), lock_timeout=30)
    with repository.locked():
        redis_connection.pexpire(repository.lock_name, 1000)  # as if most of its lifetime were spent
        repository.sync()
        assert redis_connection.pttl(repository.lock_name) > 20_000, "the fetch renewed the lock to its full lifetime"


def test_includes_fetches_when_our_commit_was_pushed_from_another_host(tmp_path, redis_connection):
    remote = GitOpsRemote(tmp_path)
    this_host = GitOpsRepository(url=remote.url, workdir=str(tmp_path / "host-a"))
    with this_host.locked():
        this_host.sync()  # this host's copy, as of now
    before = remote.head()
    remote.write(
        "helm/nexo-be/values-develop.yaml", 'image:\n  tag: "2026.02.1"\n', "promote(nexo-be): develop → 2026.02.1"
    )
    ours = remote.head()  # pushed by another host
    remote.write(
        "helm/nexo-fe/values-develop.yaml", 'image:\n  tag: "2026.02.7"\n', "promote(nexo-fe): develop → 2026.02.7"
    )
    later = remote.head()
    with this_host.locked():
        # Argo CD's revision is known here, ours is not: fetch rather than fail the comparison.
        assert this_host.includes(before, ours) is False
        assert this_host.includes(later, ours) is True
        assert this_host.includes("0" * 40, ours) is False  # a revision the repository does not have


def git_commands(trace):
    """The git commands run so far, by name, as git itself traced them."""
    if not trace.exists():
        return []
    return [event["name"] for event in map(json.loads, trace.read_text().splitlines()) if event["event"] == "cmd_name"]


def test_git_housekeeping_waits_until_the_push_is_done(tmp_path, redis_connection, monkeypatch):
    remote = GitOpsRemote(tmp_path)
    remote.write("helm/nexo-be/values-develop.yaml", 'image:\n  tag: "2026.02.1"\n')
    repository = GitOpsRepository(url=remote.url, workdir=str(tmp_path / "work"))
    trace = tmp_path / "git-trace.json"
    with repository.locked():
        repository.sync()
        monkeypatch.setenv("GIT_TRACE2_EVENT", str(trace))
        repository.commit_and_push(
            "helm/nexo-be/values-develop.yaml",
            lambda text: text.replace("2026.02.1", "2026.02.2"),
            "promote(nexo-be): develop → 2026.02.2\n\nPromotion-Id: 1\n",
            trailer=("Promotion-Id", 1),
            look_for_trailer=False,
        )
        until_pushed = git_commands(trace)
    assert "commit" in until_pushed
    assert "push" in until_pushed
    assert "maintenance" not in until_pushed, "the commit did not start git's housekeeping before the push"
    assert git_commands(trace)[len(until_pushed) :] == ["maintenance"], "it ran once the repository was released"
    assert remote.read("helm/nexo-be/values-develop.yaml") == 'image:\n  tag: "2026.02.2"\n'
