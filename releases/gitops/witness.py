"""The GitOps repository as the audit chain's witness (audit/checkpoints.py, AUDIT_WITNESS).

Checkpoints are commits of their own on AUDIT_CHECKPOINT_BRANCH (`nexo-audit-checkpoints`): each
changes no file and carries its line in an `Audit-Checkpoint:` trailer. The branch shares no
history with the one Argo CD follows, so nothing is synced or shown as drift because of it. The
`Audit-Head:` trailers of the promotion commits on that branch vouch too, when they carry the
portal's MAC. Protect both branches against force pushes on the remote: what they hold is then
out of reach of anyone who can only write to the database. Anyone who may push can still add
trailers and checkpoints without that MAC, as many as they like: they are read past, never
counted among the newest the portal signed, so they cannot push those out of what is verified.
"""

from django.conf import settings

from audit.checkpoints import WitnessUnavailable, checkpoint_anchor, head_anchor

from .message import AUDIT_HEAD_TRAILER, CHECKPOINT_TRAILER, checkpoint_message, parse_audit_head
from .repo import GitOpsError, GitOpsRepository, GitOpsUnavailable, PushRejected

# How many of the latest checkpoints and trailers the portal signed are read, of each: the newest one
# vouches for everything before it, the older ones say where a rewrite began. Those it did not sign
# are read past, however many someone pushed, and do not count.
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
        """The newest NEWEST checkpoints the portal signed on the checkpoint branch and `Audit-Head:`
        trailers it signed on the branch Argo CD follows, both fetched now, and those it did not sign
        that came after them (they vouch for nothing, and say someone else writes trailers)."""
        try:
            with self.repository.locked():
                self.repository.sync()
                anchors = self._newest_signed(AUDIT_HEAD_TRAILER, None, self._head_anchor)
                if self.repository.fetch_branch(self.branch) is not None:
                    anchors += self._newest_signed(CHECKPOINT_TRAILER, self.branch, self._checkpoint_anchor)
        except GitOpsError as error:
            raise WitnessUnavailable(str(error)) from error
        return anchors

    def _newest_signed(self, key, branch, anchor_of):
        """The anchors of the `key:` trailers on `branch`, newest first, through the NEWEST-th that is
        signed: forged ones pushed on top cannot push the portal's own out of what is read."""
        anchors, signed = [], 0
        for sha, value in self.repository.trailer_values(key, branch, first_page=NEWEST):
            anchor = anchor_of(sha, value)
            if anchor is None:
                continue
            anchors.append(anchor)
            signed += anchor.signed
            if signed == NEWEST:
                break
        return anchors

    def _head_anchor(self, sha, value):
        head = parse_audit_head(value)
        return head and head_anchor(*head, f"the {AUDIT_HEAD_TRAILER} trailer of commit {sha[:12]}")

    def _checkpoint_anchor(self, sha, line):
        return checkpoint_anchor(line, f"commit {sha[:12]} of {self}")
