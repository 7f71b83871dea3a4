"""The GitOps repository as the portal writes to it: one cached working copy per host,
every use serialised across workers by a Redis lock, pushes retried when someone else
pushed first, and commits found again by their `Promotion-Id:` trailer so a retried job
never commits twice.

Every failure is a `GitOpsError` whose message says why. Two kinds tell the caller what to do:

- `GitOpsUnavailable` is transient: the same step may well work in a moment, so the pipeline
  reschedules it instead of failing the promotion. Raised when the remote cannot be reached
  (connection refused, host not resolved, no answer within GITOPS_NETWORK_TIMEOUT_SECONDS, the
  connection dropped, "Could not read from remote repository", a repository path missing for a
  moment, HTTP 5xx or 429 from an HTTPS remote), when the Redis lock cannot be taken or renewed
  (Redis down, or another worker held it for longer than the wait), and when every push attempt
  was rejected because others kept pushing first.
- Anything else is permanent until a person acts: credentials refused (HTTP 401/403, SSH
  "Permission denied", repository not found), `PushRefused` for a push the remote's rules decline
  (branch protection, a pre-receive hook), `FileMissing` for a file not on the branch even as
  just fetched, a branch that does not exist, an unusable working copy, and whatever git says
  that is not known to be transient.

`PushRejected` (someone else pushed first) never leaves `commit_and_push()`: it fetches,
re-applies the change and pushes again. Nothing here sleeps to wait for a remote to return.
"""

import hashlib
import logging
import re
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import git
from django.conf import settings
from redis.exceptions import LockError, RedisError

from nexo_portal.lib.errors import Unavailable
from nexo_portal.lib.queues import redis_connection

from .values import ValuesFileError, read_value

logger = logging.getLogger(__name__)

# Working copies opened by this process, by path. A worker runs one job after another on the same
# copy, and opening it again (reading its config, checking its remote) costs ~0.5 ms a job.
_opened = {}

# A worker has nobody to type a password: git fails at once ("terminal prompts disabled") instead of
# waiting on a terminal that is not there.
_NEVER_PROMPT = {"GIT_TERMINAL_PROMPT": "0"}

# The remote could not lock the branch because the lock file is there: a push under way on the
# server, or one cut off there (its process or disk gone) that left the file behind for good.
_BRANCH_LOCKED = re.compile(r"Unable to create '([^']*\.lock)': File exists")
# Someone else moved the branch first (or is updating it right now): fetch, re-apply, push again.
_BEHIND = re.compile(
    r"\[rejected\]|non-fast-forward|fetch first|stale info|cannot lock ref|failed to update ref|incorrect old value",
    re.I,
)
# The remote took the push and its rules declined it: branch protection, a pre-receive hook.
_DECLINED = re.compile(r"\[remote rejected\]|hook declined|GH006|protected branch", re.I)
# The remote answered and refused who we are; checked first, as SSH adds "Could not read from
# remote repository" to "Permission denied (publickey)".
_AUTH_REFUSED = re.compile(
    r"Authentication failed|could not read (?:Username|Password)|Permission denied \(|Host key verification failed"
    r"|returned error: 40[13]\b|HTTP 40[13]\b|Repository not found|repository '[^']*' not found",
    re.I,
)
# The remote could not be reached or is overloaded: may work in a moment.
_UNREACHABLE = re.compile(
    r"Could not resolve host|Temporary failure in name resolution|Failed to connect|Couldn't connect to server"
    r"|Connection refused|Connection reset|Connection timed out|Operation timed out|Network is unreachable"
    r"|No route to host|did not complete in \d+ secs|Could not read from remote repository"
    r"|remote end hung up unexpectedly|early EOF|unexpected disconnect|does not appear to be a git repository"
    r"|returned error: (?:5\d\d|429)\b|HTTP (?:5\d\d|429)\b|SSL_ERROR_SYSCALL",
    re.I,
)
# Of those, the ones said before a connection to the remote was made: a push that failed so sent
# nothing. A connection reset or timed out may have been cut after the remote took the commit.
_NEVER_REACHED = re.compile(
    r"Could not resolve host|Temporary failure in name resolution|Failed to connect|Couldn't connect to server"
    r"|Connection refused|Network is unreachable|No route to host|does not appear to be a git repository",
    re.I,
)


class GitOpsError(Exception):
    """The GitOps repository could not be read or written; the message says why.

    `not_landed`: raised by `commit_and_push()` after its push failed, the commit is known not to be
    on the branch (the remote was never reached, refused it, or was read afterwards without it).
    """

    not_landed = False


class GitOpsUnavailable(GitOpsError, Unavailable):
    """The remote or the lock could not be had just now; the same step may work in a moment."""


class PushRejected(GitOpsError):
    """Someone else pushed first."""


class PushRefused(GitOpsError):
    """The remote's rules (branch protection, a pre-receive hook) declined the push; pushing again will not help."""


class BranchTaken(GitOpsError):
    """A pull request's branch exists already, and not with this promotion's commit."""


class FileMissing(GitOpsError):
    """The file is not on the branch, as just fetched."""


@dataclass(frozen=True)
class FileAt:
    """A file as a commit holds it: git's mode (0o100644 for a plain file) and its text."""

    mode: int
    text: str


@dataclass
class BranchCommit:
    """A commit of a pull request's branch that is not on the branch Argo CD follows."""

    sha: str
    author: str  # "Name <address>", as the commit says: anyone may write any
    author_email: str
    subject: str
    trailer_values: list  # the values of its trailers of the key asked for
    paths: list  # the files it changes against its first parent
    is_merge: bool


@dataclass
class BranchChanges:
    """What a pull request's branch changes at `head` against its merge base with the branch Argo CD
    follows: what merging it would bring, whatever happened to that branch since."""

    head: str
    base: str  # the merge base; "" when the two share no history
    paths: list  # the files that differ between `base` and `head`
    commits: list = field(default_factory=list)  # BranchCommit, newest first, at most MAX_BRANCH_COMMITS
    more_commits: int = 0  # beyond those


# The most commits of a pull request's branch `branch_changes` reads one by one; more are counted.
MAX_BRANCH_COMMITS = 20


def _not_utf8(relative_path, error):
    """Helm reads values files as UTF-8; a person's editor may save another encoding (a Latin-1 comment
    from Windows). A values file error fails a promotion and is a drift."""
    return ValuesFileError(
        f"{relative_path} is not UTF-8 text (byte {error.object[error.start]:#x} at offset {error.start}): "
        "save it as UTF-8."
    )


def redact(url):
    """The URL without any credentials, safe to show and log."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return url


def commit_url(repository_url, sha):
    """The web page of commit `sha` of the GitOps repository (GitHub's and GitLab's address scheme), or
    None when the repository is not on a web host (a path on disk, say)."""
    match = re.fullmatch(r"git@([\w.-]+):(.+?)(?:\.git)?/?", repository_url)
    if match:
        host, path = match.groups()
    else:
        parts = urlsplit(repository_url)
        if parts.scheme not in ("https", "http", "ssh") or not parts.hostname:
            return None
        host, path = parts.hostname, parts.path.strip("/").removesuffix(".git")
    if not path or not sha:
        return None
    return f"https://{host}/{path}/commit/{sha}"


def _git_message(error):
    text = (getattr(error, "stderr", "") or str(error)).strip()
    text = text.replace("stderr: ", "").strip("' \n")
    return re.sub(r"(https?://)[^/@\s]+@", r"\1", text)


def _push_message(error):
    """What git said of a failed push: the remote's and git's own lines without the generic ones,
    then why the ref was refused, from `--porcelain`'s "!\tHEAD:refs/heads/main\t[rejected] (fetch first)"."""
    said = [line.strip() for line in _git_message(error).splitlines()]
    said = [line for line in said if line and not line.startswith(("hint:", "error: failed to push some refs"))]
    stdout = str(getattr(error, "stdout", "") or "").replace("stdout: ", "").strip("' \n")
    said += [line.split("\t")[-1].strip() for line in stdout.splitlines() if line.startswith("!")]
    return " ".join(said)


def remote_error(repository, doing, message):
    """The error for a fetch or push that failed with git's `message`: GitOpsUnavailable when the
    remote could not be reached, a plain GitOpsError when it answered and refused us or said
    something this does not know."""
    if _AUTH_REFUSED.search(message):
        return GitOpsError(f"The GitOps repository {repository} refused the portal's credentials: {message}")
    if _UNREACHABLE.search(message):
        return GitOpsUnavailable(f"Cannot reach the GitOps repository {repository}: {message}")
    return GitOpsError(f"Cannot {doing} the GitOps repository {repository}: {message}")


def push_error(repository, branch, message):
    """The error for a push to `branch` that failed with git's `message` (stderr and refused refs)."""
    locked = _BRANCH_LOCKED.search(message)
    if locked:
        return GitOpsUnavailable(
            f"The GitOps repository {repository} holds a lock on its branch '{branch}' ({locked.group(0)}): "
            "another push is under way there, or one that was cut off left the lock behind; if this lasts, "
            f"the repository's operator removes {locked.group(1)}."
        )
    if _BEHIND.search(message):
        return PushRejected(message)
    if _DECLINED.search(message) and "unpacker error" not in message:
        return PushRefused(
            f"The GitOps repository {repository} refused the push to '{branch}': {message}; "
            "set the environment's delivery mode to pull request (docs/pull-requests.md) to promote through reviews."
        )
    return remote_error(repository, "push to", message)


# The most commits one `git log` of trailers reads: past it, a history flooded with commits that carry
# them is read in pages of this size rather than held whole in memory.
MAX_LOG_PAGE = 10_000


class GitOpsRepository:
    def __init__(self, url=None, branch=None, workdir=None, lock_timeout=None, lock_wait=300, network_timeout=None):
        self.url = url or settings.GITOPS_REPO_URL
        self.branch = branch or settings.GITOPS_BRANCH
        key = hashlib.sha1(self.url.encode()).hexdigest()[:16]
        self.path = Path(workdir or settings.GITOPS_WORKDIR) / f"{key}-{socket.gethostname()}"
        self.lock_name = f"nexo:gitops-lock:{key}"
        self.lock_timeout = lock_timeout or settings.GITOPS_LOCK_SECONDS
        self.lock_wait = lock_wait
        self.network_timeout = network_timeout or settings.GITOPS_NETWORK_TIMEOUT_SECONDS
        self._repo = None
        self._lock = None
        self._untidy = False

    def __str__(self):
        return redact(self.url)

    @contextmanager
    def locked(self):
        """Hold the repository for the block: one writer at a time across every worker.

        A thread renews the lock every third of its lifetime while the block runs, so a git call
        that takes longer than the lifetime (a slow push while the remote struggles) does not let
        another worker in; a worker that dies stops renewing and frees it within the lifetime.
        """
        # Not thread-local: the renewing thread must hold the same token as the block.
        lock = redis_connection().lock(
            self.lock_name, timeout=self.lock_timeout, blocking_timeout=self.lock_wait, thread_local=False
        )
        try:
            acquired = lock.acquire()
        except RedisError as error:
            raise GitOpsUnavailable(f"Cannot take the lock on {self}: Redis did not answer ({error}).") from error
        if not acquired:
            raise GitOpsUnavailable(
                f"Timed out after {self.lock_wait} s waiting for another worker to finish with {self}."
            )
        self._lock = lock
        self._clear_abandoned_git_locks()
        released = threading.Event()
        renewer = threading.Thread(
            target=self._keep_renewing, args=(lock, released), name=f"renew-{self.lock_name}", daemon=True
        )
        renewer.start()
        try:
            yield self
            self._tidy()
        finally:
            released.set()
            renewer.join()
            self._lock = None
            try:
                lock.release()
            except Exception:
                logger.warning("GitOps lock %s had expired before release", self.lock_name)

    def _clear_abandoned_git_locks(self):
        """Remove the lock files a git killed with its worker left in the working copy.

        Called with the repository's lock just taken: whoever held it before either finished (its git
        calls done) or was killed, and then its lock expired a lifetime after it was last renewed, at
        least two thirds of a lifetime after the git it had started. A git lock file (index.lock,
        refs/…/main.lock) older than half a lifetime is a dead process's (git holds one for a moment),
        and until it is gone git refuses every command here, failing every promotion on this host.
        """
        git_dir = self.path / ".git"
        if not git_dir.is_dir():
            return
        abandoned_before = time.time() - self.lock_timeout / 2
        for lock_file in [*git_dir.glob("*.lock"), *(git_dir / "refs").rglob("*.lock")]:
            try:
                if lock_file.stat().st_mtime < abandoned_before:
                    lock_file.unlink()
                    logger.warning("Removed %s, left by a git process killed in %s", lock_file.name, self.path)
            except FileNotFoundError:
                continue

    def _keep_renewing(self, lock, released):
        """Renew `lock` to its full lifetime every third of it until `released`; stop once it is lost
        (the next git call then finds it lost and stops before touching the remote)."""
        every = max(self.lock_timeout / 3, 0.1)
        while not released.wait(every):
            try:
                lock.reacquire()
            except LockError as error:
                logger.warning("GitOps lock %s was lost while held: %s", self.lock_name, error or type(error).__name__)
                return
            except RedisError as error:
                logger.warning("Could not renew the GitOps lock %s (trying again): %s", self.lock_name, error)

    def _before_long_call(self):
        """Renew the lock to its full lifetime before a clone, fetch, push or housekeeping (each
        stopped after `network_timeout`), so it cannot expire while this worker still uses the
        working copy."""
        if self._lock is not None:
            try:
                self._lock.reacquire()
            except (LockError, RedisError) as error:
                raise GitOpsUnavailable(
                    f"Lost the lock on {self} ({error or type(error).__name__}); stopping before touching the remote."
                ) from error
        return {"kill_after_timeout": self.network_timeout}

    # --- working copy -----------------------------------------------------------------------

    def _working_copy(self):
        if self._repo is None:
            opened = _opened.get(self.path)
            self._repo = opened if opened is not None and (self.path / ".git").is_dir() else self._open()
            _opened[self.path] = self._repo
        return self._repo

    def _open(self):
        try:
            if (self.path / ".git").is_dir():
                repo = git.Repo(self.path)
                repo.git.update_environment(**_NEVER_PROMPT)
                if "origin" not in {remote.name for remote in repo.remotes}:
                    repo.create_remote("origin", self.url)
                elif repo.remotes.origin.url != self.url:
                    repo.remotes.origin.set_url(self.url)
                return repo
            # An empty repository with the remote; the first sync() fetches it. (A clone cannot be
            # given a time limit: GitPython runs it as a process it does not watch.)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            repo = git.Repo.init(self.path)
            repo.git.update_environment(**_NEVER_PROMPT)
            repo.create_remote("origin", self.url)
            return repo
        except git.GitError as error:
            raise GitOpsError(
                f"Cannot prepare the working copy of {self} in {self.path}: {_git_message(error)}"
            ) from error

    def sync(self):
        """Fetch and make the working copy exactly the remote branch (local leftovers dropped)."""
        repo = self._working_copy()
        try:
            repo.git.fetch(
                "origin",
                f"+refs/heads/{self.branch}:refs/remotes/origin/{self.branch}",
                "--prune",
                **self._before_long_call(),
            )
        except git.GitCommandError as error:
            if "couldn't find remote ref" in _git_message(error).lower():
                raise GitOpsError(f"The branch '{self.branch}' does not exist in {self}.") from error
            raise remote_error(self, "read", _git_message(error)) from error
        return self._reset()

    def _reset(self):
        """The working copy becomes the branch as last fetched; a failed attempt's local commit is dropped."""
        repo = self._working_copy()
        try:
            repo.git.reset("--hard", "-q", f"origin/{self.branch}")
        except git.GitCommandError as error:
            raise GitOpsError(
                f"Cannot set the working copy of {self} to its branch '{self.branch}': {_git_message(error)}"
            ) from error
        return repo

    def read(self, relative_path):
        file = self._file(relative_path)
        if not file.is_file():
            raise FileNotFoundError(relative_path)
        try:
            return file.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise _not_utf8(relative_path, error) from None

    def tag_at(self, revision, relative_path, key_path):
        """The tag at `key_path` of the values file `relative_path` as commit `revision` holds it (one this
        working copy has, as `includes()` leaves it), None where none is written; read from git's objects,
        so the working copy is not touched. Must be called inside `locked()`. FileNotFoundError when the
        file is not there at that revision, ValuesFileError when it cannot be read."""
        return read_value(self.file_at(revision, relative_path).text, key_path, relative_path)

    def file_at(self, revision, relative_path):
        """The file `relative_path` as commit `revision` holds it (a `FileAt`), read from git's objects, so
        the working copy is not touched. Must be called inside `locked()`. FileNotFoundError when it is not
        a file there, ValuesFileError when it is not UTF-8."""
        try:
            tree = self._working_copy().commit(revision).tree
        except (ValueError, git.ODBError, git.GitCommandError) as error:
            raise GitOpsError(f"Cannot read {revision[:12]} in {self}: {_git_message(error)}") from error
        try:
            blob = tree / relative_path
        except KeyError:
            raise FileNotFoundError(relative_path) from None
        if blob.type != "blob":
            raise FileNotFoundError(relative_path)
        try:
            return FileAt(blob.mode, blob.data_stream.read().decode("utf-8"))
        except UnicodeDecodeError as error:
            raise _not_utf8(relative_path, error) from None

    def read_latest(self, relative_path):
        """(text, commit): the file as the branch holds it now, fetched first, and the commit read.

        Takes the lock: pages call it with a short `lock_wait`, and say so when a worker holds it.
        """
        with self.locked():
            self.sync()
            return self.read(relative_path), self.head()

    def head(self):
        return self._working_copy().head.commit.hexsha

    def includes(self, revision, commit):
        """Whether `revision` is `commit` or a later commit of the repository built on it.

        Must be called inside `locked()`: a revision this working copy has not seen yet is
        fetched first. A revision still unknown after that (or not a commit) includes nothing.
        """
        repo = self._working_copy()
        try:
            # Another host may have pushed ours, or Argo CD may have seen a later commit: fetch
            # whenever either one is new to this working copy.
            if not (self._knows(revision) and self._knows(commit)):
                self.sync()
                if not (self._knows(revision) and self._knows(commit)):
                    return False
            return repo.is_ancestor(commit, revision)
        except git.GitCommandError as error:
            raise GitOpsError(
                f"Cannot compare {revision[:12]} with {commit[:12]} in {self}: {_git_message(error)}"
            ) from error

    def _knows(self, revision):
        try:
            self._working_copy().git.cat_file("-e", f"{revision}^{{commit}}")
        except git.GitCommandError:
            return False
        return True

    def _file(self, relative_path):
        file = (self.path / relative_path).resolve()
        if self.path.resolve() not in file.parents:
            raise GitOpsError(f"{relative_path} points outside the GitOps repository.")
        return file

    # --- finding and making commits ---------------------------------------------------------------

    def find_commit_with_trailer(self, key, value, since=None):
        """The SHA of the commit on the branch (as last fetched) whose message has the trailer `key: value`."""
        args = [
            f"origin/{self.branch}",
            "--fixed-strings",
            f"--grep={key}: {value}",
            f"--format=%H %(trailers:key={key},valueonly,separator=%x2C)",
        ]
        if since is not None:
            args.append(f"--since={since.isoformat()}")
        for line in self._working_copy().git.log(*args).splitlines():
            sha, _, values = line.partition(" ")
            if str(value) in values.split(","):
                return sha
        return None

    def message_and_time_of(self, sha):
        """The message of commit `sha` (one this working copy has fetched or written) and when it was committed."""
        commit = self._working_copy().commit(sha)
        return commit.message, commit.committed_datetime

    def commit_and_push(
        self,
        relative_path,
        change,
        message,
        trailer,
        attempts=None,
        since=None,
        look_for_trailer=True,
        before_push=None,
    ):
        """Apply `change(text) -> text` to one file, commit, push; return the commit SHA.

        Must be called inside `locked()`. With `look_for_trailer` (a retried job), the branch is
        fetched first and, if a commit carrying `trailer` is already there, that commit is
        returned and nothing is written. Otherwise the first attempt trusts the branch as last
        fetched — every push from the portal goes through this lock, so it is usually current —
        and a push rejected because someone else pushed is fetched, re-applied and retried, up
        to `attempts` times in all (with `look_for_trailer`, after looking for the trailer again).
        A change made on a stale copy cannot land (the remote takes only a push built on its
        branch's tip), but a stale copy could miss a file or key that a person added a moment
        ago: such a miss is reported only once a fresh fetch shows it too.

        `before_push()` is called once, while git writes the first commit; if it raises, nothing
        is pushed and the exception goes on (the local commit is dropped by the next use).
        `message` may be a callable, asked after `change` ran on the file as it is now.
        """
        attempts = attempts or settings.GITOPS_PUSH_ATTEMPTS
        trailer_key, trailer_value = trailer
        last_rejection = None
        for attempt in range(1, attempts + 1):
            fetched = attempt > 1 or look_for_trailer or not self._has_branch()
            self._fresh_working_copy(fetch=fetched)
            if look_for_trailer:
                existing = self.find_commit_with_trailer(trailer_key, trailer_value, since=since)
                if existing:
                    logger.info("GitOps commit for %s: %s already pushed as %s", self, trailer, existing)
                    return existing
            changed = self._changed(relative_path, change, fetched)
            self._pushed_marker().unlink(missing_ok=True)
            self._file(relative_path).write_text(changed)
            sha = self._commit(message() if callable(message) else message, meanwhile=before_push)
            before_push = None
            try:
                self.push()
            except PushRejected as rejection:
                # This attempt pushed nothing, but a retried job keeps looking for its commit on the
                # branch just fetched: the push of a worker killed mid-way (git goes on without it)
                # may be what got in first.
                last_rejection = rejection
                logger.info(
                    "GitOps push to %s rejected (attempt %s of %s: %s); fetching and retrying",
                    self,
                    attempt,
                    attempts,
                    rejection,
                )
                continue
            except GitOpsError as failure:
                if _NEVER_REACHED.search(str(failure)):
                    failure.not_landed = True
                    raise
                # The connection may have dropped after the remote took the commit: look before failing.
                landed = self._landed(trailer_key, trailer_value, since, failure)
                if landed:
                    return landed
                failure.not_landed = True
                raise
            self._pushed_marker().write_text(sha)
            return sha
        gave_up = GitOpsUnavailable(f"Gave up after {attempts} pushes to {self} were rejected: {last_rejection}")
        gave_up.not_landed = True
        raise gave_up

    def _changed(self, relative_path, change, fetched):
        """The file's text after `change`; a miss on a copy not fetched for this attempt (no such
        file, or `change` raising ValuesFileError: no such key) is tried again on a fresh fetch."""
        try:
            return self._apply(relative_path, change)
        except (FileMissing, ValuesFileError) as miss:
            if fetched:
                raise
            logger.info("GitOps: fetching %s before believing a miss: %s", self, miss)
        self.sync()
        return self._apply(relative_path, change)

    def _apply(self, relative_path, change):
        try:
            original = self.read(relative_path)
        except FileNotFoundError:
            raise FileMissing(f"{relative_path} does not exist in {self} on branch {self.branch}.") from None
        return change(original)

    def _commit(self, message, meanwhile=None):
        """`git commit -a` with `message`, calling `meanwhile()` while git writes it; the new SHA."""
        repo = self._working_copy()
        message_file = Path(repo.git_dir) / "NEXO_COMMIT_MSG"
        message_file.write_text(message)
        # `git commit` would start `git maintenance run --auto` and wait for it before returning;
        # _tidy() runs the same housekeeping once the push is done, so the push does not wait.
        self._untidy = True
        writing = repo.git(c="maintenance.auto=false").commit(
            "-q",
            "-a",
            "--allow-empty",
            "--no-verify",
            "-F",
            str(message_file),
            f"--author={settings.GITOPS_AUTHOR_NAME} <{settings.GITOPS_AUTHOR_EMAIL}>",
            env={
                "GIT_COMMITTER_NAME": settings.GITOPS_AUTHOR_NAME,
                "GIT_COMMITTER_EMAIL": settings.GITOPS_AUTHOR_EMAIL,
            },
            as_process=True,
        )
        try:
            if meanwhile is not None:
                meanwhile()
            writing.wait()
        except git.GitCommandError as error:
            raise GitOpsError(f"Cannot commit in the working copy of {self}: {_git_message(error)}") from error
        except BaseException:
            # Let git finish whatever stops this job (a refusal, RQ's timeout): GitPython would kill
            # it otherwise, and a commit killed half-way leaves index.lock behind.
            writing.proc.wait()
            raise
        return git.SymbolicReference.dereference_recursive(repo, "HEAD")

    def _landed(self, trailer_key, trailer_value, since, failure):
        """After a push that failed without a rejection: the commit on the branch carrying our trailer, or None."""
        try:
            self.sync()
        except GitOpsError as error:
            # A retried job looks for its commit first, so it is as transient as the read that failed.
            unknown = GitOpsUnavailable if isinstance(error, GitOpsUnavailable) else GitOpsError
            again = "" if str(error) == str(failure) else f" ({error})"
            raise unknown(
                f"{failure} The repository could not be read afterwards either{again}, so whether the commit "
                "landed is unknown; the reconciler flags the values file if it did."
            ) from error
        existing = self.find_commit_with_trailer(trailer_key, trailer_value, since=since)
        if existing:
            logger.warning(
                "GitOps push to %s reported a failure but %s landed as %s", self, (trailer_key, trailer_value), existing
            )
        return existing

    def _fresh_working_copy(self, fetch):
        """The working copy at the branch's tip, fetched or as last known.

        After a successful push the working copy is clean and at the branch's tip; a marker
        file records that, so the next job need not even reset. Anything else is reset.
        """
        if fetch:
            return self.sync()
        repo = self._working_copy()
        marker = self._pushed_marker()
        head = git.SymbolicReference.dereference_recursive(repo, "HEAD")
        if marker.exists() and marker.read_text() == head == self._remote_tip():
            return repo
        return self._reset()

    def _pushed_marker(self):
        return Path(self._working_copy().git_dir) / "NEXO_PUSHED"

    def _remote_tip(self):
        return git.SymbolicReference.dereference_recursive(self._working_copy(), f"refs/remotes/origin/{self.branch}")

    def _has_branch(self):
        """Whether the branch was fetched before, without running git."""
        try:
            return bool(self._remote_tip())
        except ValueError:
            return False

    def _tidy(self):
        """Git's own housekeeping (packing loose objects once there are many) after our commits."""
        if not self._untidy:
            return
        self._untidy = False
        try:
            self._working_copy().git.maintenance("run", "--auto", "--quiet", **self._before_long_call())
        except (git.GitCommandError, GitOpsError) as error:
            logger.warning("git maintenance in %s failed (the next commit tries again): %s", self.path, error)

    # --- another branch, beside the working copy ------------------------------------------------

    def fetch_branch(self, branch):
        """Fetch `branch` alone; its SHA, or None when the remote has no such branch.

        Must be called inside `locked()`. The working copy and `self.branch` are left as they are.
        """
        repo = self._working_copy()
        try:
            repo.git.fetch("origin", f"+refs/heads/{branch}:refs/remotes/origin/{branch}", **self._before_long_call())
        except git.GitCommandError as error:
            if "couldn't find remote ref" in _git_message(error).lower():
                return None
            raise remote_error(self, "read", _git_message(error)) from error
        return repo.git.rev_parse(f"refs/remotes/origin/{branch}")

    def branch_changes(self, branch, trailer_key, head=None):
        """What `branch` (a pull request's) changes at `head` (default: its tip, as fetched now) against its
        merge base with the branch Argo CD follows: a `BranchChanges`, its commits with the values of their
        `trailer_key:` trailers. Both branches are fetched first; the working copy is left as it is. Must be
        called inside `locked()`.

        GitOpsError when `branch` does not exist; GitOpsUnavailable when `head` is not in it as fetched
        (pushed over since whoever named it looked: asked again, it is the next head's turn)."""
        repo = self._working_copy()
        followed = f"refs/remotes/origin/{self.branch}"
        try:
            repo.git.fetch(
                "origin",
                f"+refs/heads/{self.branch}:{followed}",
                f"+refs/heads/{branch}:refs/remotes/origin/{branch}",
                **self._before_long_call(),
            )
        except git.GitCommandError as error:
            message = _git_message(error)
            if "couldn't find remote ref" in message.lower():
                raise GitOpsError(f"The branch '{branch}' or '{self.branch}' does not exist in {self}.") from error
            raise remote_error(self, "read", message) from error
        head = head or repo.git.rev_parse(f"refs/remotes/origin/{branch}")
        if not self._knows(head):
            raise GitOpsUnavailable(
                f"{head[:12]} is not on the branch '{branch}' of {self} as just fetched: it was pushed over since."
            )
        try:
            base = repo.git.merge_base(followed, head)
        except git.GitCommandError:  # exit status 1: no common ancestor
            base = ""
        if base:
            paths = repo.git.diff("--name-only", "--no-renames", "-z", base, head)
        else:
            paths = repo.git.ls_tree("-r", "--name-only", "-z", head)
        changes = BranchChanges(head=head, base=base, paths=[path for path in paths.split("\0") if path])
        ahead = int(repo.git.rev_list("--count", head, f"^{followed}"))
        shas = repo.git.rev_list(f"--max-count={MAX_BRANCH_COMMITS}", head, f"^{followed}").split()
        changes.more_commits = ahead - len(shas)
        for sha in shas:
            commit = repo.commit(sha)
            listed = repo.git.diff_tree(
                "--no-commit-id", "--name-only", "--no-renames", "-r", "-z", "-m", "--first-parent", "--root", sha
            )
            trailers = repo.git.log("-1", f"--format=%(trailers:key={trailer_key},valueonly,separator=%x2C)", sha)
            changes.commits.append(
                BranchCommit(
                    sha=sha,
                    author=f"{commit.author.name} <{commit.author.email}>",
                    author_email=commit.author.email or "",
                    subject=commit.summary if isinstance(commit.summary, str) else commit.summary.decode(),
                    trailer_values=[value.strip() for value in trailers.split(",") if value.strip()],
                    paths=sorted({path for path in listed.split("\0") if path}),
                    is_merge=len(commit.parents) > 1,
                )
            )
        return changes

    def push_message(self, branch, message, parent):
        """Push to `branch` a commit of `message` alone (an empty tree) on `parent`, or as its first
        commit when `parent` is None; its SHA. Built from git's objects, so the working copy is not
        touched. Must be called inside `locked()`; PushRejected when the branch moved past `parent`.
        """
        repo = self._working_copy()
        author = {
            f"GIT_{who}_{what}": value
            for who in ("AUTHOR", "COMMITTER")
            for what, value in (("NAME", settings.GITOPS_AUTHOR_NAME), ("EMAIL", settings.GITOPS_AUTHOR_EMAIL))
        }
        try:
            tree = repo.git.hash_object("-t", "tree", "-w", "/dev/null")
            sha = repo.git.commit_tree(tree, *(["-p", parent] if parent else []), "-m", message, env=author)
        except git.GitCommandError as error:
            raise GitOpsError(f"Cannot commit in the working copy of {self}: {_git_message(error)}") from error
        try:
            repo.git.push("--porcelain", "origin", f"{sha}:refs/heads/{branch}", **self._before_long_call())
        except git.GitCommandError as error:
            raise push_error(self, branch, _push_message(error)) from error
        return sha

    def push_change_to_branch(self, relative_path, change, message, branch, trailer):
        """Apply `change(text) -> text` to one file of the branch Argo CD follows, commit it on top of
        that branch's tip and push it as `branch` (a pull request's); its SHA. Must be called inside
        `locked()`. If `branch` exists already with a tip carrying `trailer` (a retried job), that
        tip is returned and nothing is pushed; a `branch` someone else owns raises BranchTaken.
        The working copy is set back to the followed branch by its next use.
        """
        trailer_key, trailer_value = trailer
        existing = self.fetch_branch(branch)
        if existing:
            repo = self._working_copy()
            trailers = repo.git.log("-1", f"--format=%(trailers:key={trailer_key},valueonly)", existing)
            if str(trailer_value) in trailers.split():
                return existing
            raise BranchTaken(f"The branch '{branch}' already exists in {self} and is not this promotion's.")
        self.sync()
        changed = self._apply(relative_path, change)
        self._pushed_marker().unlink(missing_ok=True)
        self._file(relative_path).write_text(changed)
        sha = self._commit(message() if callable(message) else message)
        repo = self._working_copy()
        try:
            repo.git.push("--porcelain", "origin", f"HEAD:refs/heads/{branch}", **self._before_long_call())
        except git.GitCommandError as error:
            failure = push_error(self, branch, _push_message(error))
            if isinstance(failure, PushRejected):  # created meanwhile: ours if it carries our trailer
                return self.push_change_to_branch(relative_path, change, message, branch, trailer)
            raise failure from error
        return sha

    def trailer_values(self, key, branch=None, first_page=100):
        """(SHA, value) of every `key:` trailer on `branch` (default: the branch Argo CD follows), as last
        fetched, newest first, read as they are asked for: the caller stops where it has what it needs.

        The commits carrying one are read a page at a time, the first of `first_page` commits, each next
        one twice as long up to MAX_LOG_PAGE commits: reading through thousands of commits someone pushed
        with such a trailer costs about twice reading them once, and no more than a page is held at a time.
        """
        ref, skip, page = f"refs/remotes/origin/{branch or self.branch}", 0, first_page
        while True:
            log = self._working_copy().git.log(
                ref,
                f"--skip={skip}",
                f"--max-count={page}",
                "--fixed-strings",
                f"--grep={key}: ",
                f"--format=%H %(trailers:key={key},valueonly,unfold,separator=%x1F)",
                "-z",
            )
            commits = [entry for entry in log.split("\0") if entry.strip()]
            for entry in commits:
                sha, _, values = entry.strip().partition(" ")
                yield from ((sha, value.strip()) for value in values.split("\x1f") if value.strip())
            if len(commits) < page:
                return
            skip, page = skip + page, min(2 * page, MAX_LOG_PAGE)

    def push(self):
        repo = self._working_copy()
        try:
            repo.git.push("--porcelain", "origin", f"HEAD:refs/heads/{self.branch}", **self._before_long_call())
        except git.GitCommandError as error:
            raise push_error(self, self.branch, _push_message(error)) from error


# How long asking whether a commit contains ours waits for the GitOps lock: a worker holding it through
# a slow remote would otherwise keep a poll of the sync (up to the lock's 300 s) past the sync's
# deadline, or a round of the soak past its slot. Not answered in time, it is asked again next time.
CONTAINS_LOCK_WAIT_SECONDS = 5


# Answers of contains_commit, final once given (a commit's ancestors and files do not change), kept by
# the process: a soak asks again each round about the same branch head, and each asking takes the GitOps
# lock and runs git. By question: whether the revision contains the commit, and if so what its values file
# names instead of the release's tag (None: the tag itself).
_CONTAINS_ANSWERS: dict[tuple[str, str, str, str, str], tuple[bool, str | None]] = {}
_CONTAINS_ANSWERS_KEPT = 4096


def contains_commit(sha, path, key, tag):
    """`includes(revision)`: whether a revision Argo CD reports runs what commit `sha` wrote: it is `sha`
    or a later commit built on it, and there the values file `path` still names `tag` at `key`. A `git
    revert` of `sha` pushed on the branch, or another tag written over it by hand, makes a later commit
    that contains `sha` and runs another release. For the sync's wait and the soak's samples; git
    answers once per revision and process.

    `includes.unanswered`: the revision it was last asked about, when Git could not tell (the GitOps
    remote out of reach, or its lock busy: `includes.why_unanswered`), else None.
    `includes.overwritten`: the revision it was last asked about, when that contains `sha` but its values
    file names something else (`includes.names_instead`: that tag, "no tag", or why none can be read),
    else None."""

    def includes(revision):
        question = (revision, sha, path, key, tag)
        if question not in _CONTAINS_ANSWERS:
            repository = GitOpsRepository(lock_wait=CONTAINS_LOCK_WAIT_SECONDS)
            try:
                with repository.locked():
                    contained = repository.includes(revision, sha)
                    instead = _named_instead(repository, revision, path, key, tag) if contained else None
            except GitOpsError as error:
                logger.warning(
                    "Could not tell whether %s contains %s (asked again next time): %s", revision, sha, error
                )
                includes.unanswered, includes.why_unanswered = revision, str(error)
                includes.overwritten = includes.names_instead = None
                return False
            # Final either way: includes() fetched if either commit was new here, and commits do not change.
            if len(_CONTAINS_ANSWERS) >= _CONTAINS_ANSWERS_KEPT:
                _CONTAINS_ANSWERS.clear()
            _CONTAINS_ANSWERS[question] = contained, instead
        contained, instead = _CONTAINS_ANSWERS[question]
        includes.unanswered = None
        includes.overwritten, includes.names_instead = (revision, instead) if instead is not None else (None, None)
        return contained and instead is None

    includes.unanswered = includes.why_unanswered = None
    includes.overwritten = includes.names_instead = None
    return includes


def _named_instead(repository, revision, path, key, tag):
    """What the values file `path` names at `key` in `revision` instead of `tag`, in words for the soak's
    sample and the sync's error; None when it names `tag`."""
    try:
        named = repository.tag_at(revision, path, key)
    except FileNotFoundError:
        return f"nothing ({path} is not there)"
    except ValuesFileError as error:
        return f"nothing readable ({error})"
    if named == tag:
        return None
    return named or "no tag"
