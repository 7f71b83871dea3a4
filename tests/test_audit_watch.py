"""The audit chain's witness in the GitOps repository: checkpoints written to a branch of their own,
and the trailers of the commits on the branch Argo CD follows."""

import git
import pytest
from django.utils import timezone

from audit import checkpoints
from audit import log as audit
from audit.models import AuditAction
from releases.gitops.witness import GitOpsWitness

pytestmark = pytest.mark.django_db

BRANCH = "nexo-audit-checkpoints"
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"  # git's: the checkpoints change no file


@pytest.fixture
def witness(gitops, redis_connection, settings):
    settings.AUDIT_WITNESS = "releases.gitops.witness.GitOpsWitness"
    settings.AUDIT_CHECKPOINT_BRANCH = BRANCH
    return GitOpsWitness()


def record(count):
    return [
        audit.record(AuditAction.RELEASE_REGISTERED, actor="ci", service="nexo-be", version=f"2026.02.{n}")
        for n in range(count)
    ]


def tamper(statement, params):
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only")
        cursor.execute(statement, params)
        cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_append_only")


def checkpoint_commits(gitops):
    return list(git.Repo(gitops.bare).iter_commits(BRANCH))


def test_checkpoints_are_commits_of_their_own_on_a_branch_argo_cd_does_not_follow(witness, gitops):
    followed = gitops.head()
    first = record(2)[-1]
    checkpoints.take_checkpoint(witness, audit.head(), timezone.now())
    second = record(1)[-1]
    checkpoints.take_checkpoint(witness, audit.head(), timezone.now())

    assert gitops.head() == followed
    newest, oldest = checkpoint_commits(gitops)
    assert (oldest.parents, newest.parents) == ((), (oldest,))  # no history shared with main
    assert newest.tree.hexsha == oldest.tree.hexsha == EMPTY_TREE
    assert newest.summary == f"audit checkpoint: event {second.pk}"
    assert f"Audit-Checkpoint: audit-checkpoint v1 event={second.pk} hash={second.hash} at=" in newest.message
    assert {(anchor.event_id, anchor.hash) for anchor in witness.anchors()} == {
        (first.pk, first.hash),
        (second.pk, second.hash),
    }


def test_a_commit_trailer_on_the_followed_branch_vouches_and_is_named(witness, gitops):
    events = record(6)
    gitops.write(
        "notes.txt",
        "x\n",
        message=f"promote(nexo-be): qa → 2026.02.5\n\nAudit-Head: {events[-1].pk}:{events[-1].hash}\n",
    )
    tamper("DELETE FROM audit_auditevent WHERE id > %s", [events[2].pk])
    report, unread = checkpoints.verify(witness)
    assert unread == ""
    assert (report.problem, report.broken_at) == (audit.TAIL_DELETED, events[-1].pk)
    sha = gitops.head()
    assert f"the Audit-Head trailer of commit {sha[:12]} vouches for this event" in report.reason
