"""The audit log is append-only and every event is chained to the one before."""

import threading

import pytest
from django.db import DatabaseError, connection, connections, transaction

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


def test_the_verify_command_says_intact_or_names_the_first_broken_event():
    from io import StringIO

    from django.core.management import call_command
    from django.core.management.base import CommandError

    events = record_some(3)
    out = StringIO()
    call_command("verify_audit_chain", stdout=out)
    assert "intact: 3 events checked" in out.getvalue()
    tamper("UPDATE audit_auditevent SET actor = 'mallory' WHERE id = %s", [events[1].pk])
    with pytest.raises(CommandError, match=rf"breaks at event {events[1].pk}: its content does not match its hash"):
        call_command("verify_audit_chain")
