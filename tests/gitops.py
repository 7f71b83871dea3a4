"""A real bare GitOps repository on disk for tests, with values files shaped like the real chart's."""

import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import git

VALUES = """\
# Helm values for {service} in {environment}.
# Managed by GitOps: image.tag is written by the Nexo Release Portal.

replicaCount: 2   # keep two for the PodDisruptionBudget

image:
  repository: ghcr.io/nexo-org/{service}
  # The release running here; request a promotion instead of editing it.
  tag: "{tag}"
  pullPolicy: IfNotPresent

env:
    - name: NEXO_ENVIRONMENT
      value: '{environment}'
resources: {{limits: {{cpu: 500m, memory: 512Mi}}}}
"""


# Who pushes by hand in these tests (git refuses to commit from the command line without a name).
PERSON = {"NAME": "Someone Else", "EMAIL": "someone@example.com"}


class GitOpsRemote:
    """A bare repository plus a scratch clone used to play 'someone else' pushing."""

    def __init__(self, root, branch="main"):
        self.bare = Path(root) / "gitops.git"
        self.branch = branch
        git.Repo.init(self.bare, bare=True, initial_branch=branch)
        self.scratch = git.Repo.init(Path(root) / "someone-else", initial_branch=branch)
        self.scratch.create_remote("origin", str(self.bare))
        (Path(self.scratch.working_dir) / "README.md").write_text("# nexo-gitops\n")
        self.scratch.index.add(["README.md"])
        self.scratch.index.commit("chore: start the GitOps repository")
        self.scratch.remotes.origin.push(f"HEAD:refs/heads/{branch}")

    @property
    def url(self):
        return str(self.bare)

    def _pull(self):
        self.scratch.remotes.origin.fetch()
        self.scratch.git.reset("--hard", f"origin/{self.branch}")

    def write(self, path, text, message="chore: edit values by hand", encoding="utf-8"):
        """Commit and push a file as another person would, outside the portal (and their editor's encoding)."""
        self._pull()
        file = Path(self.scratch.working_dir) / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text, encoding=encoding)
        self.scratch.index.add([path])
        self.scratch.index.commit(message)
        self.scratch.remotes.origin.push(f"HEAD:refs/heads/{self.branch}")

    def remove(self, path, message="chore: remove values by hand"):
        """Delete a file on the branch, committed and pushed as another person would."""
        self._pull()
        self.scratch.index.remove([path], working_tree=True)
        self.scratch.index.commit(message)
        self.scratch.remotes.origin.push(f"HEAD:refs/heads/{self.branch}")

    def revert(self, sha):
        """`git revert` of commit `sha`, pushed on the branch as a person would: the SHA of the revert."""
        self._pull()
        someone = {f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER") for what, value in PERSON.items()}
        self.scratch.git.revert("--no-edit", sha, env=someone)
        self.scratch.remotes.origin.push(f"HEAD:refs/heads/{self.branch}")
        return self.scratch.head.commit.hexsha

    def add_service(self, service, environments, tag=""):
        self._pull()
        for environment in environments:
            path = service.values_path(environment)
            file = Path(self.scratch.working_dir) / path
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(VALUES.format(service=service.name, environment=environment.name, tag=tag))
            self.scratch.index.add([path])
        self.scratch.index.commit(f"chore: values for {service.name}")
        self.scratch.remotes.origin.push(f"HEAD:refs/heads/{self.branch}")

    def push_empty_commits(self, messages, branch=None):
        """Push a commit per message, each changing no file, on top of `branch` (default: the one Argo CD
        follows), in one push: someone flooding the repository, thousands of commits in a second."""
        branch = branch or self.branch
        self.scratch.remotes.origin.fetch(f"+refs/heads/{branch}:refs/remotes/origin/{branch}")
        stream = [f"reset refs/heads/flood\nfrom refs/remotes/origin/{branch}\n\n".encode()]
        for message in messages:
            data = message.encode()
            stream.append(b"commit refs/heads/flood\ncommitter Mallory <mallory@example.com> %d +0000\n" % time.time())
            stream.append(b"data %d\n%s\n" % (len(data), data))
        subprocess.run(
            ["git", "fast-import", "--quiet", "--force"],
            cwd=self.scratch.working_dir,
            input=b"".join(stream),
            check=True,
        )
        self.scratch.remotes.origin.push(f"refs/heads/flood:refs/heads/{branch}")

    def read(self, path):
        return subprocess.run(
            ["git", "--git-dir", str(self.bare), "show", f"{self.branch}:{path}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def commits(self, path=None):
        """Commits on the branch, newest first, as GitPython Commit objects."""
        repo = git.Repo(self.bare)
        return list(repo.iter_commits(self.branch, paths=path) if path else repo.iter_commits(self.branch))

    def head(self):
        return git.Repo(self.bare).commit(self.branch).hexsha

    @contextmanager
    def away(self):
        """The repository gone from its path for the block, as a remote's disk or mount is for a moment.

        A push the server was taking as the path went cannot remove its ref locks (git removes them by
        the path, which was gone) and leaves them behind: the server is then stuck until its operator
        removes them (tests/test_gitops_repository.py has the portal's side of that). The
        repository comes back here as a server that was looked after would, without them.
        """
        aside = self.bare.with_name(self.bare.name + ".away")
        self.bare.rename(aside)
        try:
            yield
        finally:
            for orphan in aside.rglob("*.lock"):  # refs/heads/main.lock, HEAD.lock (HEAD names main)
                orphan.unlink()
            aside.rename(self.bare)

    def protect(self, *lines):
        """Decline every push with `lines` on stderr, as a protected branch's pre-receive hook does."""
        hook = self.bare / "hooks" / "pre-receive"
        hook.write_text("#!/bin/sh\n" + "".join(f"echo '{line}' >&2\n" for line in lines) + "exit 1\n")
        hook.chmod(0o755)


@contextmanager
def silent_git_host():
    """The URL of a TCP server that accepts connections and never answers: a Git host that hangs."""
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
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/nexo-gitops.git"
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        listener.close()
