"""The audit chain's witness in the GitOps repository, and the periodic watch: checkpoints written to
their own branch and the log, a break alerted once in Slack, and the audit page's "chain verified at"."""

import logging
import re
from datetime import timedelta

import django_rq
import git
import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from audit import checkpoints
from audit import log as audit
from audit.models import AuditAction, AuditEvent, ChainVerification
from releases.audit_watch import watch_audit_chain
from releases.gitops import repo
from releases.gitops.message import audit_head_value, checkpoint_message
from releases.gitops.witness import NEWEST, GitOpsWitness
from tests.test_audit_chain import recompute_from

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
        message=f"promote(nexo-be): qa → 2026.02.5\n\nAudit-Head: {audit_head_value(events[-1].pk, events[-1].hash)}\n",
    )
    tamper("DELETE FROM audit_auditevent WHERE id > %s", [events[2].pk])
    report, unread = checkpoints.verify(witness)
    assert unread == ""
    assert (report.problem, report.broken_at) == (audit.TAIL_DELETED, events[-1].pk)
    sha = gitops.head()
    assert f"the Audit-Head trailer of commit {sha[:12]} vouches for this event" in report.reason


def test_a_trailer_without_the_portals_mac_is_named_and_the_watch_goes_on_with_the_real_anchors(witness, gitops):
    """Anyone who may push to the GitOps branch can write an `Audit-Head:` trailer; one the portal did
    not sign is said, and vouches for nothing: no false break, and checkpoints are still taken."""
    events = record(4)
    gone = events[-1].pk + 50
    gitops.write("notes.txt", "x\n", message=f"chore: notes\n\nAudit-Head: {gone}:{'f' * 64}\n")
    unknown_event = gitops.head()
    bad_mac = f"{events[1].pk}:{'e' * 64} mac={'0' * 64}"
    gitops.write("notes.txt", "y\n", message=f"chore: more notes\n\nAudit-Head: {bad_mac}\n")
    other_hash = gitops.head()

    verification = watch_audit_chain()

    assert verification.ok, verification.summary
    assert verification.vouched_through == events[-1].pk
    assert len(checkpoint_commits(gitops)) == 1
    assert (
        f"The Audit-Head trailer of commit {unknown_event[:12]} names event {gone}, which the log does not hold, "
        "and does not carry the portal's MAC: it vouches for nothing." in verification.summary
    )
    assert f"commit {other_hash[:12]} names event {events[1].pk}, with a hash it does not have," in verification.summary

    # The real anchors go on vouching: the checkpoint just taken finds the tail deleted under it.
    tamper("DELETE FROM audit_auditevent WHERE id > %s", [events[1].pk])
    report, unread = checkpoints.verify(witness)
    assert (unread, report.problem, report.broken_at) == ("", audit.TAIL_DELETED, events[-1].pk)


def test_forged_trailers_pushed_on_top_do_not_push_the_signed_one_out_of_reach(witness, gitops):
    """Anyone who may push can bury the portal's trailers under commits of their own; the witness reads on
    past what it did not sign, so the trailer it did still catches a rewrite of the events it vouches for."""
    events = record(6)
    signed_head = audit_head_value(events[-1].pk, events[-1].hash)
    gitops.write("notes.txt", "x\n", message=f"promote(nexo-be): qa → 2026.02.5\n\nAudit-Head: {signed_head}\n")
    signed = gitops.head()
    gitops.push_empty_commits(
        f"chore: notes {n}\n\nAudit-Head: {events[-1].pk}:{'e' * 64}{' mac=' + '0' * 64 if n % 2 else ''}\n"
        for n in range(NEWEST + 50)
    )

    recompute_from(events[2].pk, actor="mallory")
    report, unread = checkpoints.verify(witness)

    assert (unread, report.problem, report.broken_at) == ("", audit.REWRITTEN, events[-1].pk)
    assert f"the Audit-Head trailer of commit {signed[:12]} vouches for" in report.reason


def test_forged_checkpoints_pushed_on_top_do_not_push_the_signed_one_out_of_reach(witness, gitops):
    events = record(6)
    checkpoints.take_checkpoint(witness, audit.head(), timezone.now())
    [signed] = checkpoint_commits(gitops)
    gitops.push_empty_commits(
        (
            checkpoint_message(checkpoints.checkpoint_line(events[-1].pk, "f" * 64, timezone.now(), key="not the key"))
            for _ in range(NEWEST + 50)
        ),
        branch=BRANCH,
    )

    tamper("DELETE FROM audit_auditevent WHERE id > %s", [events[2].pk])
    report, unread = checkpoints.verify(witness)

    assert (unread, report.problem, report.broken_at) == ("", audit.TAIL_DELETED, events[-1].pk)
    assert re.search(
        rf"the checkpoint of \S+ \S+ in commit {signed.hexsha[:12]} of the branch {BRANCH} ", report.reason
    )


def test_a_flood_of_thousands_is_read_through_to_the_signed_anchors_beneath(witness, gitops, monkeypatch):
    monkeypatch.setattr(repo, "MAX_LOG_PAGE", 700)  # read in pages up to the longest, and past it
    events = record(2)
    checkpoints.take_checkpoint(witness, audit.head(), timezone.now())
    gitops.write("notes.txt", "x\n", message=f"chore: notes\n\nAudit-Head: {audit_head_value(*audit.head())}\n")
    gitops.push_empty_commits(f"chore: {n}\n\nAudit-Head: {n}:{'e' * 64}\n" for n in range(3000))
    forged = checkpoints.checkpoint_line(events[0].pk, "f" * 64, timezone.now(), key="not the key")
    gitops.push_empty_commits([checkpoint_message(forged)] * 3000, branch=BRANCH)

    anchors = witness.anchors()

    assert [(anchor.event_id, anchor.hash) for anchor in anchors if anchor.signed] == [
        (events[-1].pk, events[-1].hash)
    ] * 2
    assert len([anchor for anchor in anchors if not anchor.signed]) == 6000


def test_the_verification_says_how_many_unsigned_trailers_it_skipped_and_logs_it_once(witness, gitops, caplog):
    """An SRE learns that someone pushes trailers the portal did not sign, from the report and the log,
    without a warning for each of thousands."""
    events = record(3)
    checkpoints.take_checkpoint(witness, audit.head(), timezone.now())
    gitops.write("notes.txt", "x\n", message=f"chore: notes\n\nAudit-Head: {audit_head_value(*audit.head())}\n")
    gitops.push_empty_commits(f"chore: {n}\n\nAudit-Head: {events[-1].pk + n + 1}:{'e' * 64}\n" for n in range(250))
    forged = checkpoints.checkpoint_line(events[0].pk, "f" * 64, timezone.now(), key="not the key")
    gitops.push_empty_commits([checkpoint_message(forged)] * 50, branch=BRANCH)

    verification = watch_audit_chain()

    assert verification.ok, verification.summary
    skipped = (
        "Skipped 300 commit trailers and checkpoints without the portal's MAC, which vouch for nothing: someone "
        "who may push to the witness wrote them, unless they are Audit-Head trailers from before the portal "
        "signed its own."
    )
    assert skipped in verification.summary
    warnings = [
        record.getMessage()
        for record in caplog.records
        if record.name == "audit.checkpoints" and record.levelno == logging.WARNING
    ]
    assert f"Audit chain: {skipped}" in warnings
    assert len(warnings) == audit.MAX_LATER_PROBLEMS + 1  # the first contradictions named, and the count


def test_the_watch_checkpoints_a_new_head_to_the_log_and_the_witness(witness, gitops, caplog):
    record(3)
    caplog.set_level(logging.INFO, logger="audit.checkpoints")
    verification = watch_audit_chain()
    head = audit.head()
    assert verification.ok
    assert (verification.vouched_through, verification.unvouched, verification.witness_error) == (head[0], 0, "")
    [commit] = checkpoint_commits(gitops)
    [line] = [r.getMessage() for r in caplog.records if r.name == "audit.checkpoints"]
    assert f"Audit-Checkpoint: {line}" in commit.message
    assert line.startswith(f"audit-checkpoint v1 event={head[0]} hash={head[1]} at=")

    # Nothing new since: verified again, vouched for by that checkpoint, and no second commit.
    again = watch_audit_chain(now=timezone.now() + timedelta(hours=1))
    assert (again.ok, again.vouched_through) == (True, head[0])
    assert len(checkpoint_commits(gitops)) == 1


def test_the_watch_waits_for_its_interval(witness, settings):
    settings.AUDIT_VERIFY_SECONDS = 600
    now = timezone.now()
    assert watch_audit_chain(now=now) is not None
    assert watch_audit_chain(now=now + timedelta(seconds=599)) is None
    assert watch_audit_chain(now=now + timedelta(seconds=601)) is not None


def test_an_unreadable_witness_is_said_and_no_checkpoint_vouches_for_what_was_not_compared(witness, settings, tmp_path):
    record(2)
    settings.GITOPS_REPO_URL = str(tmp_path / "gone.git")
    verification = watch_audit_chain()
    assert verification.ok
    assert verification.vouched_through is None
    assert verification.witness_error.startswith("The witness could not be read, so the tail was not checked:")


def test_a_verification_keeps_the_newest_event_it_read_and_the_lowest_it_found_broken(witness):
    """A rewrite with every later hash recomputed is reported at the checkpoint it contradicts, the head;
    the seals fail from the event rewritten on, and that is where nothing is vouched for from."""
    events = record(6)
    intact = checkpoints.watch()
    assert (intact.checked_through, intact.broken_from) == (events[-1].pk, None)

    recompute_from(events[2].pk, actor="paulo")
    broken = checkpoints.watch(force=True)
    assert (broken.problem, broken.broken_at) == (audit.REWRITTEN, events[-1].pk)
    assert (broken.broken_from, broken.checked_through) == (events[2].pk, events[-1].pk)

    # Both are signed: a row moved to say the break begins later is not the portal's.
    ChainVerification.objects.update(broken_from=events[4].pk)
    assert not checkpoints.signed_by_portal(ChainVerification.latest())


def hourly_watch(django_capture_on_commit_callbacks):
    """The reconciler's watch of the chain, an hour later at each call, its alerts enqueued."""
    later = timezone.now()

    def watch():
        nonlocal later
        later += timedelta(hours=1)
        with django_capture_on_commit_callbacks(execute=True):
            return watch_audit_chain(now=later)

    return watch


def test_a_break_is_alerted_once_and_again_only_when_it_breaks_differently(
    witness, slack_server, django_capture_on_commit_callbacks
):
    events = record(6)
    queue = django_rq.get_queue("default")
    watch = hourly_watch(django_capture_on_commit_callbacks)

    assert watch().ok
    tamper("DELETE FROM audit_auditevent WHERE id > %s", [events[3].pk])
    first = watch()
    second = watch()
    assert (first.ok, second.ok, first.problem) == (False, False, audit.TAIL_DELETED)
    assert second.broken_since == first.broken_since == first.checked_at
    assert len(queue.jobs) == 1
    queue.jobs[0].perform()
    [message] = slack_server.messages
    assert message["text"].startswith(":rotating_light: The audit log's chain is broken")
    assert f"breaks at event {events[-1].pk} (tail deleted)" in message["text"]
    assert "<https://portal.nexo.example/audit/|Open the audit log>" in message["blocks"][1]["elements"][0]["text"]

    tamper("TRUNCATE audit_auditevent", [])
    assert watch().problem == audit.TRUNCATED
    assert len(queue.jobs) == 2


def test_after_a_known_break_a_new_one_is_alerted_and_every_failed_run_logs_an_error(
    witness, slack_server, django_capture_on_commit_callbacks, caplog
):
    events = record(6)
    queue = django_rq.get_queue("default")
    watch = hourly_watch(django_capture_on_commit_callbacks)

    assert watch().ok
    tamper("UPDATE audit_auditevent SET message = 'typo fixed' WHERE id = %s", [events[1].pk])  # an old, known break
    caplog.set_level(logging.ERROR, logger="audit.checkpoints")
    first, again = watch(), watch()
    assert (first.problem, len(queue.jobs)) == (audit.EDITED, 1)
    assert again.summary == first.summary

    # Weeks later, someone appends an approval without the portal's key.
    record(2)
    head = audit.head()
    forged = AuditEvent(created_at=timezone.now(), action=AuditAction.PROMOTION_APPROVED, actor="mallory")
    forged.previous_hash = head[1]
    forged.hash = audit.compute_hash(head[1], forged.hashed_fields())
    forged.save()
    third = watch()

    assert (third.problem, third.broken_at) == (audit.EDITED, events[1].pk)  # the first break is still first
    assert f"event {forged.pk} (forged)" in third.summary
    assert len(queue.jobs) == 2
    errors = [r.getMessage() for r in caplog.records if r.name == "audit.checkpoints" and r.levelno == logging.ERROR]
    assert errors == [first.summary, again.summary, third.summary]


def test_the_audit_page_says_when_the_chain_was_verified_and_whether_it_holds(client, viewer, witness):
    client.force_login(viewer)
    assert "The chain has not been verified yet" in client.get(reverse("audit:log")).content.decode()

    events = record(3)
    verification = watch_audit_chain()
    page = client.get(reverse("audit:log")).content.decode()
    assert f'Chain verified at <time datetime="{verification.checked_at.isoformat()}' in page
    assert f"intact, 3 events, vouched for by checkpoints and GitOps commits through #{events[-1].pk}" in page

    tamper("DELETE FROM audit_auditevent WHERE id = %s", [events[-1].pk])
    watch_audit_chain(now=timezone.now() + timedelta(hours=1))
    page = client.get(reverse("audit:log")).content.decode()
    assert "<strong>The chain is broken</strong>" in page
    assert "(tail deleted)" in page
    assert ChainVerification.objects.count() == 1


def test_without_a_witness_each_new_head_is_checkpointed_to_the_log_once(settings, caplog):
    settings.AUDIT_WITNESS = ""
    caplog.set_level(logging.INFO, logger="audit.checkpoints")
    record(2)
    later = timezone.now()
    for _ in range(2):
        later += timedelta(hours=1)
        assert watch_audit_chain(now=later).ok
    record(1)
    watch_audit_chain(now=later + timedelta(hours=1))
    lines = [r.getMessage() for r in caplog.records if r.name == "audit.checkpoints"]
    assert len(lines) == 2
    assert lines[-1].startswith(f"audit-checkpoint v1 event={audit.head()[0]} ")


def test_each_reconciler_round_runs_the_watch_at_its_interval(witness, gitops, settings):
    from releases.reconciler import reconcile

    record(2)
    first = reconcile()
    assert first["audit_chain"].startswith("The audit chain is intact: 2 events checked")
    assert ChainVerification.latest().vouched_through == audit.head()[0]
    assert len(checkpoint_commits(gitops)) == 1

    record(1)
    assert reconcile()["audit_chain"] is None  # AUDIT_VERIFY_SECONDS have not passed
    settings.AUDIT_VERIFY_SECONDS = 0
    assert "3 events checked" in reconcile()["audit_chain"]
    assert len(checkpoint_commits(gitops)) == 2


# The last migration of a portal whose verifications were not signed yet.
BEFORE_SIGNED_VERIFICATIONS = "0021_drift_back_within_limit_action"


def upgrade_from_before_signed_verifications():
    """Migrate the audit app back to before verifications were signed, which drops the row's MAC, and
    forward again, as the release step of an upgrade does."""
    try:
        call_command("migrate", "audit", BEFORE_SIGNED_VERIFICATIONS, verbosity=0)
    finally:
        call_command("migrate", "audit", verbosity=0)


@pytest.mark.django_db(transaction=True)
def test_upgrading_keeps_a_known_break_known_and_when_it_began(settings):
    settings.AUDIT_WITNESS = ""
    events = record(4)
    tamper("UPDATE audit_auditevent SET message = 'typo fixed' WHERE id = %s", [events[1].pk])
    alerts = []
    days_ago = timezone.now() - timedelta(days=3)
    known = checkpoints.watch(alert=alerts.append, now=days_ago)
    assert (known.problem, alerts) == (audit.EDITED, [known.summary])

    upgrade_from_before_signed_verifications()

    after = checkpoints.watch(alert=alerts.append)
    assert (after.problem, after.broken_since) == (audit.EDITED, days_ago)
    assert len(alerts) == 1


@pytest.mark.django_db(transaction=True)
def test_an_upgrade_migrated_without_the_key_leaves_the_last_verification_unsigned(settings):
    settings.AUDIT_WITNESS = ""
    record(2)
    checkpoints.watch()
    settings.AUDIT_CHECKPOINT_KEY = ""
    upgrade_from_before_signed_verifications()
    assert ChainVerification.objects.values_list("mac", flat=True).get() == ""


# The last migration of a portal whose verifications did not say where they read and broke.
BEFORE_EXTENT = "0024_sign_the_last_verification"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("edited", "broken_from"),
    [
        ([1], 1),  # its only problem: where it broke
        ([3, 1], 0),  # a later one may lie before the first reported: from the first event until it is verified again
    ],
)
def test_upgrading_says_where_a_known_break_begins_and_claims_nothing_it_did_not_read(settings, edited, broken_from):
    settings.AUDIT_WITNESS = ""
    events = record(4)
    for index in edited:
        tamper("UPDATE audit_auditevent SET message = 'typo fixed' WHERE id = %s", [events[index].pk])
    checkpoints.watch()
    try:
        call_command("migrate", "audit", BEFORE_EXTENT, verbosity=0)
    finally:
        call_command("migrate", "audit", verbosity=0)

    upgraded = ChainVerification.latest()
    assert checkpoints.signed_by_portal(upgraded)
    assert (upgraded.broken_from, upgraded.checked_through) == (events[broken_from].pk, None)


@pytest.mark.django_db(transaction=True)
def test_upgrading_takes_an_intact_chain_as_read_through_its_checkpoint(settings):
    settings.AUDIT_WITNESS = ""
    events = record(2)
    checkpoints.watch()
    try:
        call_command("migrate", "audit", BEFORE_EXTENT, verbosity=0)
    finally:
        call_command("migrate", "audit", verbosity=0)

    upgraded = ChainVerification.latest()
    assert checkpoints.signed_by_portal(upgraded)
    assert (upgraded.ok, upgraded.checked_through, upgraded.broken_from) == (True, events[-1].pk, None)
