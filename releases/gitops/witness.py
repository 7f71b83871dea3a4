"""The GitOps repository as the audit chain's witness (audit/checkpoints.py, AUDIT_WITNESS).

Checkpoints are commits of their own on AUDIT_CHECKPOINT_BRANCH (`nexo-audit-checkpoints`): each
changes no file and carries its line in an `Audit-Checkpoint:` trailer. The branch shares no
history with the one Argo CD follows, so nothing is synced or shown as drift because of it. The
`Audit-Head:` trailers of the promotion commits on that branch vouch too, when they carry the
portal's MAC. Protect both branches against force pushes on the remote: what they hold is then
out of reach of anyone who can only write to the database.
"""

from django.conf import settings

from audit.checkpoints import WitnessUnavailable, head_anchor, parse_checkpoints

from .message import AUDIT_HEAD_TRAILER, CHECKPOINT_TRAILER, checkpoint_message, parse_audit_head
from .repo import GitOpsError, GitOpsRepository, GitOpsUnavailable, PushRejected

# How far back the latest checkpoints and trailers are read: the newest one vouches for everything
# before it, the older ones say where a rewrite began.
NEWEST = 100


class GitOpsWitness:
    def __init__(self, repository=None):
        self.repository = repository or GitOpsRepository()
        self.branch = settings.AUDIT_CHECKPOINT_BRANCH

    def __str__(self):
        return f"the branch {self.branch} of {self.repository}"

    def write(self, line):
        """Commit `line` on the checkpoint branch (creating it the first time) and push it."""
        try:
            with self.repository.locked():
                for _ in range(settings.GITOPS_PUSH_ATTEMPTS):
                    parent = self.repository.fetch_branch(self.branch)
                    try:
                        self.repository.push_message(self.branch, checkpoint_message(line), parent)
                        return
                    except PushRejected:
                        continue
                raise GitOpsUnavailable(f"every push to {self} was rejected: others kept pushing first")
        except GitOpsError as error:
            raise WitnessUnavailable(str(error)) from error

    def anchors(self):
        """The newest checkpoints on the checkpoint branch and `Audit-Head:` trailers on the branch
        Argo CD follows, both fetched now."""
        try:
            with self.repository.locked():
                self.repository.sync()
                heads = self.repository.trailer_values(AUDIT_HEAD_TRAILER, NEWEST)
                has_checkpoints = self.repository.fetch_branch(self.branch) is not None
                checkpoints = (
                    self.repository.trailer_values(CHECKPOINT_TRAILER, NEWEST, branch=self.branch)
                    if has_checkpoints
                    else []
                )
        except GitOpsError as error:
            raise WitnessUnavailable(str(error)) from error
        anchors = [
            head_anchor(*head, f"the {AUDIT_HEAD_TRAILER} trailer of commit {sha[:12]}")
            for sha, value in heads
            if (head := parse_audit_head(value))
        ]
        return anchors + parse_checkpoints("\n".join(line for _, line in checkpoints), str(self))
