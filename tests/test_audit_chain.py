"""The audit log is append-only, every event is chained to the one before and sealed, and its
tail is anchored outside the database: tampering as the tables' owner is found and named."""

import threading
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, connections, transaction
from django.utils import timezone

from audit import checkpoints
from audit import log as audit
from audit.models import GENESIS_HASH, AuditAction, AuditEvent

pytestmark = pytest.mark.django_db


def record_some(count=3):
    return [
        audit.record(
            AuditAction.PROMOTION_REQUESTED,
            actor="alice",
            service="nexo-be",
            environment="qa",
            version=f"2026.02.{n}",
            message=f"request {n}",
            data={"n": n, "approvers": ["bob"]},
        )
        for n in range(1, count + 1)
    ]


def test_events_are_chained_from_the_genesis_hash():
    first, second, third = record_some()
    assert first.previous_hash == GENESIS_HASH
    assert second.previous_hash == first.hash
    assert third.previous_hash == second.hash


def test_verify_passes_on_an_untouched_log():
    record_some(5)
    report = audit.verify_chain()
    assert report.ok
    assert report.checked == 5


def test_verify_passes_on_an_empty_log():
    assert audit.verify_chain().ok


def test_orm_refuses_to_update_or_delete_an_event():
    event = record_some(1)[0]
    event.message = "edited"
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        event.delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.filter(pk=event.pk).update(message="edited")
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().delete()


def test_database_refuses_update_and_delete_even_in_raw_sql():
    event = record_some(1)[0]
    for statement in [
        "UPDATE audit_auditevent SET message = 'x' WHERE id = %s",
        "DELETE FROM audit_auditevent WHERE id = %s",
    ]:
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement, [event.pk])
    assert AuditEvent.objects.get(pk=event.pk).message == event.message


def tamper(statement, params):
    """What someone with owner rights could do: switch the trigger off and change history."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only")
        cursor.execute(statement, params)
        cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_append_only")


def test_verify_detects_an_edited_row():
    events = record_some(4)
    tamper("UPDATE audit_auditevent SET actor = 'mallory' WHERE id = %s", [events[1].pk])
    report = audit.verify_chain()
    assert not report.ok
    assert report.broken_at == events[1].pk
    assert "edited" in report.reason


def test_verify_detects_a_removed_row():
    events = record_some(4)
    tamper("DELETE FROM audit_auditevent WHERE id = %s", [events[2].pk])
    report = audit.verify_chain()
    assert not report.ok
    assert report.broken_at == events[3].pk
    assert "removed" in report.reason


def test_verify_detects_edited_data_even_when_the_hash_is_recomputed_for_that_row():
    events = record_some(3)
    forged = dict(events[0].hashed_fields(), actor="mallory")
    forged_hash = audit.compute_hash(events[0].previous_hash, forged)
    tamper("UPDATE audit_auditevent SET actor = 'mallory', hash = %s WHERE id = %s", [forged_hash, events[0].pk])
    report = audit.verify_chain()
    assert report.broken_at == events[1].pk


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_keep_one_unbroken_chain():
    start = threading.Barrier(10)
    errors = []

    def write(n):
        try:
            start.wait()
            for i in range(5):
                audit.record(AuditAction.RELEASE_REGISTERED, actor=f"writer{n}", version=f"2026.01.{i + 1}")
        except Exception as error:
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    report = audit.verify_chain()
    assert report.ok
    assert report.checked == 50


@pytest.mark.django_db(transaction=True)
def test_concurrent_chain_transactions_of_several_events_keep_one_unbroken_chain():
    # Each transaction reads the head once, with the lock, and links its later events without a read.
    start = threading.Barrier(6)
    errors = []

    def write(n):
        try:
            start.wait()
            for i in range(4):
                with audit.chain_transaction():
                    for j in range(3):
                        audit.record(AuditAction.RELEASE_REGISTERED, actor=f"writer{n}", version=f"2026.01.{i}{j}")
        except Exception as error:
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    report = audit.verify_chain()
    assert report.ok, report.summary()
    assert report.checked == 72


def record_then_fail():
    with transaction.atomic():
        audit.record(AuditAction.RELEASE_REGISTERED, actor="ci", version="2026.02.2")
        raise RuntimeError("the change it described failed")


def test_an_event_rolled_back_with_its_savepoint_is_not_linked_to(django_assert_num_queries):
    with audit.chain_transaction():
        kept = audit.record(AuditAction.RELEASE_REGISTERED, actor="ci", version="2026.02.1")
        with pytest.raises(RuntimeError):
            record_then_fail()
        after = audit.record(AuditAction.RELEASE_REGISTERED, actor="ci", version="2026.02.3")
        with django_assert_num_queries(1):  # no savepoint closed since: the head is known
            audit.record(AuditAction.RELEASE_REGISTERED, actor="ci", version="2026.02.4")

    assert after.previous_hash == kept.hash
    assert list(AuditEvent.objects.order_by("id").values_list("version", flat=True)) == [
        "2026.02.1",
        "2026.02.3",
        "2026.02.4",
    ]
    assert audit.verify_chain().ok


def test_the_verify_command_says_intact_or_names_the_first_broken_event():
    events = record_some(3)
    out = StringIO()
    call_command("verify_audit_chain", "--no-witness", stdout=out)
    assert "intact: 3 events checked" in out.getvalue()
    tamper("UPDATE audit_auditevent SET actor = 'mallory' WHERE id = %s", [events[1].pk])
    with pytest.raises(CommandError, match=rf"breaks at event {events[1].pk} \(edited\): its content does not match"):
        call_command("verify_audit_chain", "--no-witness")


# --- anchored outside the database: seals, checkpoints, trailers -----------------------------------


@pytest.fixture
def witness(tmp_path, settings):
    """Checkpoints in a file the database cannot reach, as AUDIT_WITNESS."""
    settings.AUDIT_WITNESS = "audit.checkpoints.FileWitness"
    settings.AUDIT_WITNESS_FILE = str(tmp_path / "checkpoints.log")
    return checkpoints.FileWitness()


def checkpoint(witness):
    return checkpoints.take_checkpoint(witness, audit.head(), timezone.now())


def test_the_verify_command_does_not_say_intact_when_the_witness_cannot_be_read(witness, tmp_path, settings):
    """What the witness vouches for was not checked: that is no pass, and not a break either (exit 2)."""
    record_some(3)
    checkpoint(witness)
    settings.AUDIT_WITNESS_FILE = str(tmp_path)  # a directory: "Cannot read …: Is a directory"
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError) as refused:
        call_command("verify_audit_chain", stdout=out, stderr=err)
    assert refused.value.returncode == 2
    assert str(refused.value).startswith(
        f"The witness could not be read, so the tail was not checked: Cannot read {tmp_path}"
    )
    assert "--no-witness" in str(refused.value)
    assert "intact" not in out.getvalue() + err.getvalue() + str(refused.value)


def verify(witness):
    report, unread = checkpoints.verify(witness)
    assert unread == ""
    return report


def test_each_event_is_sealed_with_the_key_that_stays_out_of_the_database(settings):
    [event] = record_some(1)
    assert event.seal == audit.seal_of(event.hash)
    assert settings.AUDIT_CHECKPOINT_KEY not in str(AuditEvent.objects.values().get(pk=event.pk))
    assert event.seal != audit.seal_of(event.hash, key="another key")


def test_verify_against_checkpoints_passes_and_counts_what_only_seals_vouch_for(witness):
    record_some(5)
    checkpoint(witness)
    newer = record_some(2)
    report = verify(witness)
    assert report.ok, report.summary()
    assert (report.checked, report.anchors, report.unvouched) == (7, 1, 2)
    assert report.vouched_through == newer[0].pk - 1
    assert f"vouches for event {report.vouched_through}, and the 2 after it are vouched for by their seals only" in (
        report.summary()
    )


def test_deleting_the_newest_events_is_a_deleted_tail(witness):
    events = record_some(15)
    checkpoint(witness)
    tamper("DELETE FROM audit_auditevent WHERE id > %s", [events[4].pk])
    report = verify(witness)
    assert (report.problem, report.broken_at) == (audit.TAIL_DELETED, events[-1].pk)
    assert f"the events after {events[4].pk} were deleted" in report.reason
    assert "checkpoint of" in report.reason


def test_a_deleted_tail_stays_found_after_the_portal_writes_on(witness):
    events = record_some(6)
    checkpoint(witness)
    tamper("DELETE FROM audit_auditevent WHERE id > %s", [events[2].pk])
    record_some(3)
    report = verify(witness)
    assert (report.problem, report.broken_at) == (audit.TAIL_DELETED, events[-1].pk)
    assert "the portal has written on from there since" in report.reason


@pytest.mark.parametrize("written_on", [0, 3], ids=["empty", "written-on"])
def test_truncating_the_log_is_truncation(witness, written_on):
    events = record_some(4)
    checkpoint(witness)
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE audit_auditevent")
    record_some(written_on)  # a fresh chain from the genesis hash, as if nothing had been before
    report = verify(witness)
    assert (report.problem, report.broken_at) == (audit.TRUNCATED, events[-1].pk)
    assert "the log was truncated" in report.summary()


def recompute_from(event_id, **changes):
    """Rewrite one event and recompute every hash after it, as an owner of the table could (not the seals:
    their key is not in the database)."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only")
        before = AuditEvent.objects.filter(id__lt=event_id).order_by("-id").values_list("hash", flat=True).first()
        previous = before or GENESIS_HASH
        for event in AuditEvent.objects.filter(id__gte=event_id).order_by("id"):
            fields = dict(event.hashed_fields(), **(changes if event.pk == event_id else {}))
            new_hash = audit.compute_hash(previous, fields)
            cursor.execute(
                "UPDATE audit_auditevent SET actor = %s, previous_hash = %s, hash = %s WHERE id = %s",
                [fields["actor"], previous, new_hash, event.pk],
            )
            previous = new_hash
        cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_append_only")


def test_a_middle_event_rewritten_with_every_later_hash_recomputed_is_a_rewrite(witness):
    events = record_some(8)
    checkpoint(witness)
    recompute_from(events[3].pk, actor="mallory")
    assert audit.verify_chain().problem != audit.REMOVED  # the chain itself holds together
    report = verify(witness)
    assert (report.problem, report.broken_at) == (audit.REWRITTEN, events[-1].pk)
    assert "rewritten and the hashes recomputed" in report.reason


def test_an_event_removed_with_the_hashes_after_it_recomputed_is_a_rewrite(witness):
    events = record_some(6)
    checkpoint(witness)
    checkpoints.take_checkpoint(witness, (events[3].pk, events[3].hash), timezone.now())
    tamper("DELETE FROM audit_auditevent WHERE id = %s", [events[3].pk])
    recompute_from(events[4].pk)
    report = verify(witness)
    assert (report.problem, report.broken_at) == (audit.REWRITTEN, events[3].pk)


def forge(**fields):
    """An event appended through the ORM, correctly chained, by someone without the portal's key."""
    head = AuditEvent.objects.order_by("-id").first()
    event = AuditEvent(created_at=timezone.now(), action=AuditAction.PROMOTION_APPROVED, actor="mallory", **fields)
    event.previous_hash = head.hash
    event.hash = audit.compute_hash(head.hash, event.hashed_fields())
    event.save()
    return event


def test_an_event_appended_through_the_orm_without_the_key_is_forged(witness):
    record_some(3)
    checkpoint(witness)
    record_some(2)
    forged = forge(service="nexo-be", environment="production", message="approved")
    record_some(1)  # the portal writes on after it: still chained, still found
    report = verify(witness)
    assert (report.problem, report.broken_at) == (audit.FORGED, forged.pk)
    assert "does not hold AUDIT_CHECKPOINT_KEY" in report.reason
    assert audit.verify_chain().problem == audit.FORGED  # seals need no witness


def test_deleting_events_no_checkpoint_vouches_for_yet_goes_unnoticed_as_documented(witness):
    """The honest limit: after the newest anchor, only seals vouch, and a seal cannot say an event is missing."""
    events = record_some(5)
    checkpoint(witness)
    record_some(3)
    tamper("DELETE FROM audit_auditevent WHERE id > %s", [events[-1].pk])
    report = verify(witness)
    assert report.ok
    assert report.unvouched == 0


def test_tampering_after_a_first_break_is_found_too(witness):
    """A first break (an old row edited) does not hide what comes after it: a row removed further on,
    a forged event appended, and a vouched event deleted are each named, the first break still first."""
    events = record_some(8)
    checkpoint(witness)
    tamper("UPDATE audit_auditevent SET message = 'typo fixed' WHERE id = %s", [events[1].pk])
    tamper("DELETE FROM audit_auditevent WHERE id = %s", [events[4].pk])
    forged = forge(service="nexo-be", environment="production", message="approved")
    record_some(1)

    report = verify(witness)

    assert (report.problem, report.broken_at) == (audit.EDITED, events[1].pk)
    assert report.later == [(events[5].pk, audit.REMOVED), (forged.pk, audit.FORGED)]
    assert f"also at event {events[5].pk} (removed) and event {forged.pk} (forged)" in report.summary()

    tamper("DELETE FROM audit_auditevent WHERE id > %s", [events[6].pk])  # the vouched head, and all after it
    report = verify(witness)
    assert (report.problem, report.broken_at) == (audit.EDITED, events[1].pk)
    assert report.later == [(events[5].pk, audit.REMOVED), (events[-1].pk, audit.TAIL_DELETED)]


def test_a_checkpoint_without_the_portals_hmac_vouches_for_nothing(witness, caplog):
    events = record_some(3)
    forged = checkpoints.checkpoint_line(events[-1].pk + 5, "f" * 64, timezone.now(), key="not the portal's key")
    witness.write(forged)
    assert checkpoints.FileWitness().anchors() == []
    assert "does not carry the portal's HMAC" in caplog.text
    assert verify(witness).ok


def test_events_from_before_seals_are_checked_by_chain_and_anchors_only(witness, settings):
    events = record_some(4)
    tamper("UPDATE audit_auditevent SET seal = '' WHERE id <= %s", [events[1].pk])
    settings.AUDIT_SEALED_FROM = events[2].pk
    checkpoint(witness)
    report = verify(witness)
    assert report.ok, report.summary()
    assert report.unsealed == 2
    tamper("UPDATE audit_auditevent SET seal = '' WHERE id = %s", [events[3].pk])
    assert verify(witness).problem == audit.EDITED  # unsealed after a sealed one, under a checkpoint


@pytest.mark.parametrize(
    ("written_on", "said"),
    [
        (0, "it has no seal, yet the portal sealed every event it recorded"),
        (1, "otherwise their seals were stripped: investigate"),
    ],
    ids=["as-left", "portal-wrote-on"],
)
def test_a_rewrite_under_stripped_seals_is_found_even_without_a_witness(written_on, said):
    """Without their seals every event would pass for one from before seals existed, and a rewrite with
    recomputed hashes would hold together, the more so once the portal seals its next event on top (which
    makes it look like a log begun before seals: the break says both)."""
    events = record_some(4)
    tamper("UPDATE audit_auditevent SET seal = ''", [])
    recompute_from(events[1].pk, actor="mallory")
    record_some(written_on)
    report = audit.verify_chain()
    assert (report.problem, report.broken_at) == (audit.FORGED, events[0].pk)
    assert said in report.reason


@pytest.mark.parametrize("checkpointed", [False, True], ids=["no-witness", "checkpointed"])
def test_a_log_begun_before_seals_without_AUDIT_SEALED_FROM_says_which_id_to_set_or_to_investigate(
    witness, settings, checkpointed
):
    """An installation upgraded from a portal that sealed its events, but not its oldest ones, without
    AUDIT_SEALED_FROM: a break (seals stripped from the oldest events look the same), but one that says
    what to set if they are from before seals, and what to do if not."""
    events = record_some(5)
    tamper("UPDATE audit_auditevent SET seal = '' WHERE id < %s", [events[2].pk])
    if checkpointed:
        checkpoint(witness)
    report = verify(witness)
    assert report.broken_at == events[0].pk
    assert report.problem == (audit.EDITED if checkpointed else audit.FORGED)
    assert report.reason == (
        f"events {events[0].pk}–{events[1].pk} carry no seal and all come before the first sealed event "
        f"{events[2].pk}: if this installation recorded them before seals existed (before the portal's audit "
        f"migration 0008_auditevent_seal), set AUDIT_SEALED_FROM={events[2].pk} (docs/deploy.md); otherwise "
        "their seals were stripped: investigate"
    )
    assert report.later == []

    settings.AUDIT_SEALED_FROM = events[2].pk
    assert verify(witness).ok


@pytest.mark.parametrize(
    "other",
    ["a wrong seal among them", "AUDIT_SEALED_FROM already set"],
)
def test_only_seal_less_events_before_the_first_sealed_one_are_said_to_be_perhaps_from_before_seals(settings, other):
    events = record_some(5)
    tamper("UPDATE audit_auditevent SET seal = '' WHERE id < %s", [events[3].pk])
    if other == "a wrong seal among them":
        tamper("UPDATE audit_auditevent SET seal = %s WHERE id = %s", ["0" * 64, events[1].pk])
    else:
        settings.AUDIT_SEALED_FROM = events[1].pk
    report = audit.verify_chain()
    assert not report.ok
    assert "AUDIT_SEALED_FROM=" not in report.summary()


def test_seals_stripped_under_a_checkpoint_are_a_break_too(witness):
    events = record_some(4)
    checkpoint(witness)
    record_some(3)
    tamper("UPDATE audit_auditevent SET seal = ''", [])
    recompute_from(events[-1].pk + 2, actor="mallory")  # after the checkpoint: only seals vouched for it
    report = verify(witness)
    assert (report.problem, report.broken_at) == (audit.EDITED, events[0].pk)
    assert "its seal was removed although the checkpoint" in report.reason


@pytest.mark.parametrize("written_on", [0, 1], ids=["as-left", "portal-wrote-on"])
def test_deleting_every_sealed_event_of_a_log_begun_before_seals_is_a_deleted_tail(settings, written_on):
    """Once its sealed events are gone, the events from before seals could be rewritten, and the portal's
    next event would seal them as they are; the first event the portal sealed must be there."""
    events = record_some(4)
    tamper("UPDATE audit_auditevent SET seal = '' WHERE id < %s", [events[2].pk])
    settings.AUDIT_SEALED_FROM = events[2].pk
    assert audit.verify_chain().ok
    tamper("DELETE FROM audit_auditevent WHERE id >= %s", [events[2].pk])
    recompute_from(events[0].pk, actor="mallory")
    record_some(written_on)
    report = audit.verify_chain()
    assert (report.problem, report.broken_at) == (audit.TAIL_DELETED, events[2].pk)
    assert f"the events from {events[2].pk} on were deleted" in report.reason


def test_a_key_that_is_not_the_one_the_events_were_sealed_with_is_named(settings):
    record_some(2)
    settings.AUDIT_CHECKPOINT_KEY = "a new key"
    report = audit.verify_chain()
    assert report.problem == audit.FORGED
    assert "AUDIT_CHECKPOINT_KEY is not the key the portal sealed them with" in report.reason


def test_the_verify_command_reads_the_witness_and_checkpoints_copied_from_the_log(witness):
    events = record_some(4)
    line = checkpoints.take_checkpoint(None, audit.head(), timezone.now())  # the log output only
    tamper("DELETE FROM audit_auditevent WHERE id > %s", [events[1].pk])
    call_command("verify_audit_chain", stdout=StringIO())  # the witness holds nothing yet
    with pytest.raises(CommandError, match=r"\(tail deleted\).*checkpoint of .* in the command line"):
        call_command("verify_audit_chain", "--checkpoint", line)
    with pytest.raises(CommandError, match="not a checkpoint the portal wrote"):
        call_command("verify_audit_chain", "--checkpoint", line.replace("mac=", "mac=0")[:-1])
