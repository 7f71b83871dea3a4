"""The GitOps working copy's lock, network limits and failures, against real Git and Redis."""

import json
import os
import shutil
import socket
import subprocess
import time

import pytest
import redis

from releases.gitops import values
from releases.gitops.repo import (
    FileMissing,
    GitOpsError,
    GitOpsRepository,
    GitOpsUnavailable,
    PushRefused,
    PushRejected,
    push_error,
    remote_error,
)
from tests.gitops import GitOpsRemote, silent_git_host
from tests.servers.loopback import LoopbackServer, Response

VALUES_PATH = "helm/nexo-be/values-develop.yaml"


def closed_port():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        return unused.getsockname()[1]


def promote(repository, tag, path=VALUES_PATH, promotion_id=1, **options):
    """commit_and_push() as the commit job calls it: image.tag changed, the Promotion-Id trailer."""
    options.setdefault("look_for_trailer", False)
    return repository.commit_and_push(
        path,
        lambda text: values.set_value(text, "image.tag", tag, path),
        f"promote: develop → {tag}\n\nPromotion-Id: {promotion_id}\n",
        trailer=("Promotion-Id", promotion_id),
        **options,
    )


@pytest.fixture
def remote(tmp_path):
    remote = GitOpsRemote(tmp_path)
    remote.write(VALUES_PATH, 'image:\n  tag: "2026.02.1"\n')
    return remote


@pytest.fixture
def repository(remote, tmp_path, redis_connection):
    """A worker's working copy of `remote`, fetched once, as a worker keeps it between jobs."""
    repository = GitOpsRepository(url=remote.url, workdir=str(tmp_path / "work"))
    with repository.locked():
        repository.sync()
    return repository


@pytest.fixture
def silent_server():
    with silent_git_host() as url:
        yield url


def test_a_git_host_that_hangs_is_given_up_on_after_the_network_timeout(
    silent_server, settings, tmp_path, redis_connection
):
    settings.GITOPS_NETWORK_TIMEOUT_SECONDS = 1
    repository = GitOpsRepository(url=silent_server, workdir=str(tmp_path))
    with pytest.raises(GitOpsUnavailable, match="Cannot reach the GitOps repository") as failure, repository.locked():
        repository.sync()
    assert "did not complete in 1 secs" in str(failure.value), "stopped by the timeout, not by a refusal"


def test_the_lock_is_renewed_before_each_network_call(settings, tmp_path, redis_connection):
    remote = GitOpsRemote(tmp_path)
    repository = GitOpsRepository(url=remote.url, workdir=str(tmp_path / "work"), lock_timeout=30)
    with repository.locked():
        redis_connection.pexpire(repository.lock_name, 1000)  # as if most of its lifetime were spent
        repository.sync()
        assert redis_connection.pttl(repository.lock_name) > 20_000, "the fetch renewed the lock to its full lifetime"


def test_the_lock_is_renewed_while_held_for_longer_than_its_lifetime(tmp_path, redis_connection):
    """A push that takes longer than GITOPS_LOCK_SECONDS (a remote struggling) must not let another worker in."""
    remote = GitOpsRemote(tmp_path)
    repository = GitOpsRepository(url=remote.url, workdir=str(tmp_path / "work"), lock_timeout=1)
    another_worker = GitOpsRepository(url=remote.url, workdir=str(tmp_path / "other"), lock_timeout=1, lock_wait=0)
    with repository.locked():
        time.sleep(2.5)  # as a slow git call would, with no renewal before it
        assert redis_connection.exists(repository.lock_name), "the lock outlived its lifetime while held"
        with pytest.raises(GitOpsUnavailable, match="waiting for another worker"), another_worker.locked():
            pytest.fail("another worker took the lock while it was held")
        repository.sync()  # still ours: no "Lost the lock"
    assert not redis_connection.exists(repository.lock_name), "released at the end of the block"


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


# --- transient or permanent -------------------------------------------------------------------


def test_a_repository_away_for_a_moment_is_unavailable_and_the_retried_commit_lands_once(remote, repository):
    head = remote.head()
    with remote.away(), repository.locked():
        with pytest.raises(GitOpsUnavailable, match="does not appear to be a git repository"):
            repository.sync()
        with pytest.raises(GitOpsUnavailable, match="does not appear to be a git repository") as failure:
            promote(repository, "2026.02.2")
    # The push never reached a repository: nothing landed, and there is nothing to look for.
    assert failure.value.not_landed
    assert "unknown" not in str(failure.value)
    with repository.locked():
        # The step tried again, as a resumed job does: it looks for its commit before writing one.
        sha = promote(repository, "2026.02.2", look_for_trailer=True)
    assert remote.read(VALUES_PATH) == 'image:\n  tag: "2026.02.2"\n'
    assert [commit.hexsha for commit in remote.commits()][:2] == [sha, head]


def cut_off(repository, monkeypatch):
    """The push's connection drops: whether the remote took the commit first, git cannot tell."""

    def dropped():
        raise GitOpsUnavailable(f"Cannot reach the GitOps repository {repository}: the remote end hung up unexpectedly")

    monkeypatch.setattr(repository, "push", dropped)


def test_a_push_cut_off_while_the_repository_cannot_be_read_may_have_landed(remote, repository, monkeypatch):
    cut_off(repository, monkeypatch)
    with (
        repository.locked(),
        remote.away(),
        pytest.raises(GitOpsUnavailable, match="whether the commit landed is unknown") as failure,
    ):
        promote(repository, "2026.02.2")
    assert not failure.value.not_landed


def test_a_push_cut_off_and_not_found_on_the_branch_read_afterwards_did_not_land(remote, repository, monkeypatch):
    cut_off(repository, monkeypatch)
    with repository.locked(), pytest.raises(GitOpsUnavailable, match="hung up unexpectedly") as failure:
        promote(repository, "2026.02.2")
    assert failure.value.not_landed
    assert remote.read(VALUES_PATH) == 'image:\n  tag: "2026.02.1"\n'


def test_pushes_rejected_every_time_are_known_not_to_have_landed(remote, repository, monkeypatch):
    push = repository.push

    def someone_always_pushes_first():
        remote.write("helm/nexo-be/NOTES.md", f"pushed first at {time.monotonic()}\n")
        push()

    monkeypatch.setattr(repository, "push", someone_always_pushes_first)
    with repository.locked(), pytest.raises(GitOpsUnavailable, match="were rejected") as failure:
        promote(repository, "2026.02.2", attempts=2)
    assert failure.value.not_landed


@pytest.fixture
def git_host():
    """An HTTPS-style Git host on loopback that answers every request with one status, set per test."""
    answer = {"status": 503}

    def respond(request):
        headers = {"WWW-Authenticate": 'Basic realm="git"'} if answer["status"] == 401 else {}
        return Response(answer["status"], b"", headers)

    server = LoopbackServer(respond)
    server.answer = answer
    yield server
    server.close()


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_a_git_host_that_is_down_or_overloaded_is_unavailable(git_host, status, tmp_path, redis_connection):
    git_host.answer["status"] = status
    repository = GitOpsRepository(url=f"{git_host.url}/nexo-gitops.git", workdir=str(tmp_path))
    with pytest.raises(GitOpsUnavailable, match=f"returned error: {status}"), repository.locked():
        repository.sync()


@pytest.mark.parametrize("status", [401, 403])
def test_a_git_host_that_refuses_the_credentials_is_a_permanent_failure(git_host, status, tmp_path, redis_connection):
    git_host.answer["status"] = status
    url = f"{git_host.url.replace('http://', 'http://portal:s3cret-token@')}/nexo-gitops.git"
    repository = GitOpsRepository(url=url, workdir=str(tmp_path))
    with pytest.raises(GitOpsError, match="refused the portal's credentials") as failure, repository.locked():
        repository.sync()
    assert not isinstance(failure.value, GitOpsUnavailable)
    assert "s3cret-token" not in str(failure.value)


def test_a_git_host_that_refuses_connections_is_unavailable(tmp_path, redis_connection):
    repository = GitOpsRepository(url=f"http://127.0.0.1:{closed_port()}/nexo-gitops.git", workdir=str(tmp_path))
    with pytest.raises(GitOpsUnavailable, match="Cannot reach the GitOps repository"), repository.locked():
        repository.sync()


def test_a_push_declined_by_branch_protection_is_refused_at_once(remote, repository, tmp_path, monkeypatch):
    remote.protect("error: GH006: Protected branch update failed for refs/heads/main.")
    head = remote.head()
    trace = tmp_path / "git-trace.json"
    monkeypatch.setenv("GIT_TRACE2_EVENT", str(trace))
    with pytest.raises(PushRefused) as refusal, repository.locked():
        promote(repository, "2026.02.2")
    message = str(refusal.value)
    assert "GH006: Protected branch update failed" in message
    assert "pre-receive hook declined" in message
    assert message.endswith(
        "set the environment's delivery mode to pull request (docs/pull-requests.md) to promote through reviews."
    )
    assert git_commands(trace).count("push") == 1, "a refusal is not retried as if someone had pushed first"
    assert remote.head() == head


def test_a_push_behind_someone_elses_is_fetched_reapplied_and_pushed_on_top(remote, repository):
    def someone_pushes_meanwhile():
        remote.write("helm/nexo-be/NOTES.md", "pushed while the portal was committing\n")

    with repository.locked():
        sha = promote(repository, "2026.02.2", before_push=someone_pushes_meanwhile)
    history = remote.commits()
    assert history[0].hexsha == sha
    assert history[1].summary == "chore: edit values by hand"
    assert remote.read(VALUES_PATH) == 'image:\n  tag: "2026.02.2"\n'
    assert remote.read("helm/nexo-be/NOTES.md") == "pushed while the portal was committing\n"


def test_a_retried_commit_that_finds_its_own_commit_pushed_meanwhile_does_not_push_it_again(remote, repository):
    # A worker killed in the middle of a slow push leaves git pushing on its own; the retried job
    # may fetch before that push lands and be rejected because of it.
    def the_killed_workers_push_lands():
        remote.write(VALUES_PATH, 'image:\n  tag: "2026.02.2"\n', "promote: develop → 2026.02.2\n\nPromotion-Id: 7\n")

    with repository.locked():
        sha = promote(
            repository, "2026.02.2", promotion_id=7, look_for_trailer=True, before_push=the_killed_workers_push_lands
        )
    ours = [commit.hexsha for commit in remote.commits() if "Promotion-Id: 7" in commit.message]
    assert ours == [sha] == [remote.head()]
    assert remote.read(VALUES_PATH) == 'image:\n  tag: "2026.02.2"\n'


@pytest.mark.parametrize("left", [".git/index.lock", ".git/refs/remotes/origin/main.lock"])
def test_a_lock_file_left_by_a_git_killed_with_its_worker_is_cleared(remote, repository, left):
    # The worker's whole process group SIGKILLed (an OOM kill, systemd stopping the service) while git
    # wrote: git's own lock file stays in the working copy the next worker on the host uses.
    stale = repository.path / left
    stale.write_text("")
    # The youngest it can be when the next worker has the lock: the killed one renewed it a third of
    # its lifetime before git started, at the most.
    written = time.time() - repository.lock_timeout * 2 / 3
    os.utime(stale, (written, written))
    with repository.locked():
        sha = promote(repository, "2026.02.2", look_for_trailer=True)
    assert remote.head() == sha
    assert remote.read(VALUES_PATH) == 'image:\n  tag: "2026.02.2"\n'
    assert not stale.exists()


# What remotes this suite cannot run say, word for word (GitHub, GitLab, OpenSSH, curl).
TRANSIENT = [
    "ssh: connect to host github.com port 22: Connection refused\nfatal: Could not read from remote repository.",
    "kex_exchange_identification: read: Connection reset by peer\nfatal: Could not read from remote repository.",
    "ssh: Could not resolve hostname github.com: Temporary failure in name resolution",
    "fatal: unable to access 'https://github.com/o/r.git/': Could not resolve host: github.com",
    "fatal: unable to access 'https://g/': Failed to connect to g port 443 after 2 ms: Couldn't connect to server",
    "error: RPC failed; HTTP 502 curl 22 The requested URL returned error: 502",
    "fatal: unable to access 'https://gitlab.com/o/r.git/': The requested URL returned error: 429",
    "fatal: the remote end hung up unexpectedly\nfatal: early EOF",
]
PERMANENT = [
    "git@github.com: Permission denied (publickey).\nfatal: Could not read from remote repository.",
    "ERROR: Repository not found.\nfatal: Could not read from remote repository.",
    "Host key verification failed.\nfatal: Could not read from remote repository.",
    "remote: Invalid username or token.\nfatal: Authentication failed for 'https://github.com/o/r.git/'",
    "fatal: unable to access 'https://github.com/o/r.git/': The requested URL returned error: 403",
    "fatal: repository 'https://github.com/o/r.git/' not found",
    "fatal: bad object refs/remotes/origin/main",
]


@pytest.mark.parametrize(
    ("message", "kind"), [(m, GitOpsUnavailable) for m in TRANSIENT] + [(m, GitOpsError) for m in PERMANENT]
)
def test_what_a_remote_says_decides_whether_a_failure_is_transient(message, kind):
    assert type(remote_error("git@github.com:o/r.git", "read", message)) is kind


# A push's stderr, then its refused ref as `git push --porcelain` prints it.
PUSHES = [
    (
        "remote: error: GH006: Protected branch update failed for refs/heads/main. "
        "refs/heads/main:refs/heads/main [remote rejected] (protected branch hook declined)",
        PushRefused,
    ),
    (
        "remote: GitLab: You are not allowed to push code to protected branches on this project. "
        "HEAD:refs/heads/main [remote rejected] (pre-receive hook declined)",
        PushRefused,
    ),
    ("error: failed to push some refs HEAD:refs/heads/main [rejected] (fetch first)", PushRejected),
    ("error: failed to push some refs HEAD:refs/heads/main [rejected] (non-fast-forward)", PushRejected),
    (
        "HEAD:refs/heads/main [remote rejected] (cannot lock ref 'refs/heads/main': is at 1a2b but expected 3c4d)",
        PushRejected,
    ),
    (
        "remote: error: cannot lock ref 'refs/heads/main': Unable to create '/srv/git/r.git/./refs/heads/main.lock': "
        "File exists. HEAD:refs/heads/main [remote rejected] (failed to update ref)",
        GitOpsUnavailable,
    ),
    (
        "remote: Permission to o/r.git denied to nexo-portal.\n"
        "fatal: unable to access 'https://github.com/o/r.git/': The requested URL returned error: 403",
        GitOpsError,
    ),
    ("error: RPC failed; HTTP 503 curl 22 The requested URL returned error: 503", GitOpsUnavailable),
]


@pytest.mark.parametrize(("message", "kind"), PUSHES)
def test_what_a_remote_says_about_a_push_decides_what_happens_next(message, kind):
    assert type(push_error("git@github.com:o/r.git", "main", message)) is kind


def test_a_branch_the_remote_holds_locked_is_transient_and_says_so_after_one_push(remote, repository, caplog):
    """A push cut off while the server updated the branch (its disk or process gone) leaves
    refs/heads/main.lock there: every push is refused until its operator removes it. That is
    not someone pushing first: no quick re-push, the step waits and tries again later."""
    head = remote.head()
    stale_lock = remote.bare / "refs" / "heads" / "main.lock"
    stale_lock.write_text(head + "\n")
    with (
        pytest.raises(GitOpsUnavailable, match=r"holds a lock on its branch 'main'.*main\.lock") as failure,
        repository.locked(),
    ):
        promote(repository, "2026.02.7")
    assert "File exists" in str(failure.value), "git's own words are kept"
    assert "rejected (attempt" not in caplog.text, "not retried as if someone had pushed first"
    assert remote.head() == head

    stale_lock.unlink()  # what the operator does
    with repository.locked():
        sha = promote(repository, "2026.02.7", look_for_trailer=True)
    assert remote.head() == sha
    assert remote.read(VALUES_PATH) == 'image:\n  tag: "2026.02.7"\n'


# --- the lock when Redis is away -----------------------------------------------------------------------


def test_the_lock_cannot_be_taken_while_redis_is_down_and_that_is_transient(remote, tmp_path, settings):
    queue = settings.RQ_QUEUES["default"]
    settings.RQ_QUEUES = {**settings.RQ_QUEUES, "default": {**queue, "URL": f"redis://127.0.0.1:{closed_port()}/0"}}
    repository = GitOpsRepository(url=remote.url, workdir=str(tmp_path / "work"))
    with (
        pytest.raises(GitOpsUnavailable, match=r"Cannot take the lock on .* Redis did not answer"),
        repository.locked(),
    ):
        pytest.fail("the block ran without the lock")


def test_a_lock_that_expired_meanwhile_stops_before_the_remote_and_is_transient(repository, redis_connection):
    with repository.locked():
        redis_connection.delete(repository.lock_name)  # as if it had expired and another worker could take it
        with pytest.raises(GitOpsUnavailable, match="Lost the lock"):
            repository.sync()


@pytest.fixture
def own_redis(settings):
    """A Redis server of this test's own, the queue's and lock's Redis for the test, to stop at will."""
    port = closed_port()
    server = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                server.kill()
                raise
            time.sleep(0.05)
    queue = settings.RQ_QUEUES["default"]
    settings.RQ_QUEUES = {**settings.RQ_QUEUES, "default": {**queue, "URL": f"redis://127.0.0.1:{port}/0"}}
    yield server
    server.kill()
    server.wait()


def test_redis_going_away_while_the_lock_is_held_is_transient(own_redis, remote, tmp_path):
    repository = GitOpsRepository(url=remote.url, workdir=str(tmp_path / "work"))
    with repository.locked():
        own_redis.kill()
        own_redis.wait()
        with pytest.raises(GitOpsUnavailable, match="Lost the lock"):
            repository.sync()


# --- deciding on a current copy ------------------------------------------------------------------------


def test_a_values_file_a_person_pushed_a_moment_ago_is_found_not_refused(remote, repository):
    remote.write("helm/nexo-fe/values-develop.yaml", 'image:\n  tag: "2026.02.6"\n', "chore: values for nexo-fe")
    with repository.locked():
        sha = promote(repository, "2026.02.7", path="helm/nexo-fe/values-develop.yaml")
    assert remote.head() == sha
    assert remote.read("helm/nexo-fe/values-develop.yaml") == 'image:\n  tag: "2026.02.7"\n'


def test_a_tag_key_a_person_added_a_moment_ago_is_found_not_refused(remote, tmp_path, redis_connection):
    remote.write(VALUES_PATH, "image:\n  repository: ghcr.io/nexo-org/nexo-be\n")
    repository = GitOpsRepository(url=remote.url, workdir=str(tmp_path / "work"))
    with repository.locked():
        repository.sync()
    remote.write(VALUES_PATH, 'image:\n  repository: ghcr.io/nexo-org/nexo-be\n  tag: "2026.02.1"\n')
    with repository.locked():
        promote(repository, "2026.02.2")
    assert remote.read(VALUES_PATH) == 'image:\n  repository: ghcr.io/nexo-org/nexo-be\n  tag: "2026.02.2"\n'


def test_a_values_file_missing_from_the_branch_as_just_fetched_is_reported_and_nothing_pushed(remote, repository):
    head = remote.head()
    missing = r"helm/nexo-fe/values-develop\.yaml does not exist in .* on branch main"
    with pytest.raises(FileMissing, match=missing), repository.locked():
        promote(repository, "2026.02.7", path="helm/nexo-fe/values-develop.yaml")
    assert remote.head() == head


def test_a_values_file_not_in_utf8_is_refused_saying_how_to_fix_it_and_nothing_pushed(remote, repository):
    """Helm reads values files as UTF-8: one a Windows editor saved in Latin-1 fails the promotion
    with what to do, as any values file error does, instead of crashing its step again and again."""
    remote.write(VALUES_PATH, '# Configuração\nimage:\n  tag: "2026.02.1"\n', encoding="latin-1")
    head = remote.head()
    refused = r"values-develop\.yaml is not UTF-8 text \(byte 0xe7 at offset 11\): save it as UTF-8"
    with pytest.raises(values.ValuesFileError, match=refused), repository.locked():
        promote(repository, "2026.02.2")
    assert remote.head() == head


def test_a_values_file_found_in_the_working_copy_is_committed_without_a_fetch(repository, tmp_path, monkeypatch):
    trace = tmp_path / "git-trace.json"
    monkeypatch.setenv("GIT_TRACE2_EVENT", str(trace))
    with repository.locked():
        promote(repository, "2026.02.2")
    assert "fetch" not in git_commands(trace), "the push itself proves the copy was current"
