"""A break of the audit chain, once investigated, is acknowledged by a person on the staff with
`manage.py acknowledge_audit_break`: recorded in the log with who and why, it is left out of later
verifications for as long as what it concerns stays as it was, and checkpoints are taken again."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from audit import checkpoints
from audit import log as audit
from audit.models import AuditAction, AuditEvent
from tests.factories import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def olga(db):
    """Olga, on the staff: looks after the portal, and investigates what its audit log says."""
    return make_user("olga", is_staff=True)


@pytest.fixture
def watch(tmp_path, settings):
    """The reconciler's watch against a witness in a file, an hour later at each call; the alerts it sends."""
    settings.AUDIT_WITNESS = "audit.checkpoints.FileWitness"
    settings.AUDIT_WITNESS_FILE = str(tmp_path / "checkpoints.log")
    later = timezone.now()
    alerts = []

    def run():
        nonlocal later
        later += timedelta(hours=1)
        return checkpoints.watch(alert=alerts.append, now=later)

    run.alerts = alerts
    return run


def record(count):
    return [
        audit.record(AuditAction.RELEASE_REGISTERED, actor="ci", service="nexo-be", version=f"2026.02.{n}")
        for n in range(count)
    ]


def tamper(statement, params):
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only")
        cursor.execute(statement, params)
        cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_append_only")


def acknowledge(by="olga", reason="Restored from the backup of March 3: a DBA fixed a typo by hand."):
    """The command as an operator runs it: once to see the code, then with it."""
    with pytest.raises(CommandError, match=r"run again with --confirm (\w+)") as first:
        call_command("acknowledge_audit_break", "--by", by, "--reason", reason)
    code = str(first.value).rsplit(" ", 1)[-1]
    out = StringIO()
    call_command("acknowledge_audit_break", "--by", by, "--reason", reason, "--confirm", code, stdout=out)
    return out.getvalue()


def test_an_acknowledged_break_is_recorded_left_out_and_checkpointed_over(olga, watch):
    events = record(5)
    assert watch().ok
    tamper("UPDATE audit_auditevent SET message = 'typo fixed' WHERE id = %s", [events[1].pk])
    broken = watch()
    assert (broken.problem, broken.broken_at, len(watch.alerts)) == (audit.EDITED, events[1].pk, 1)
    record(1)
    assert not watch().ok
    assert len(checkpoints.FileWitness().anchors()) == 1  # no checkpoint of the broken chain

    said = acknowledge()

    acknowledgment = AuditEvent.objects.get(action=AuditAction.CHAIN_BREAK_ACKNOWLEDGED)
    assert f"Acknowledged 1 problem as event {acknowledgment.pk}, by olga." in said
    assert (acknowledgment.actor, acknowledgment.message) == (
        "olga",
        "Restored from the backup of March 3: a DBA fixed a typo by hand.",
    )
    assert acknowledgment.data["problems"] == [[events[1].pk, audit.EDITED]]
    verification = watch()
    assert verification.ok, verification.summary
    assert verification.summary.startswith(
        f"The audit chain is intact but for 1 known problem, acknowledged by olga (event {acknowledgment.pk}): "
    )
    assert verification.vouched_through == acknowledgment.pk  # checkpointed again
    assert len(checkpoints.FileWitness().anchors()) == 2
    assert len(watch.alerts) == 1


def test_a_change_since_to_what_was_acknowledged_or_anything_else_is_a_break_again(olga, watch):
    events = record(5)
    assert watch().ok
    tamper("UPDATE audit_auditevent SET message = 'typo fixed' WHERE id = %s", [events[1].pk])
    watch()
    acknowledge()
    assert watch().ok

    tamper("UPDATE audit_auditevent SET message = 'typo fixed, and more' WHERE id = %s", [events[1].pk])
    again = watch()
    assert (again.problem, again.broken_at) == (audit.EDITED, events[1].pk)

    tamper("UPDATE audit_auditevent SET message = 'typo fixed' WHERE id = %s", [events[1].pk])
    assert watch().ok
    tamper("UPDATE audit_auditevent SET actor = 'mallory' WHERE id = %s", [events[3].pk])
    other = watch()
    assert (other.problem, other.broken_at, other.summary.count("known problem")) == (audit.EDITED, events[3].pk, 1)
    assert len(watch.alerts) == 3


def test_an_acknowledged_deleted_tail_stays_known_as_the_portal_writes_past_it(olga, watch):
    events = record(6)
    assert watch().ok  # a checkpoint of the newest
    tamper("DELETE FROM audit_auditevent WHERE id > %s", [events[2].pk])
    assert watch().problem == audit.TAIL_DELETED
    acknowledge()
    record(5)  # past the event the checkpoint vouches for
    assert watch().ok
    assert watch().ok
    assert len(watch.alerts) == 1


def test_an_acknowledged_forged_event_stays_known_once_a_checkpoint_covers_it(olga, watch):
    record(2)
    head = AuditEvent.objects.order_by("-id").first()
    forged = AuditEvent(created_at=timezone.now(), action=AuditAction.PROMOTION_APPROVED, actor="mallory")
    forged.previous_hash = head.hash
    forged.hash = audit.compute_hash(head.hash, forged.hashed_fields())
    forged.save()
    assert (watch().problem, len(watch.alerts)) == (audit.FORGED, 1)
    acknowledge("olga", "Appended by a test script run against production by mistake; the approval never happened.")
    assert watch().vouched_through > forged.pk  # the checkpoint taken now vouches for the chain through it
    assert watch().ok
    assert len(watch.alerts) == 1


def test_removing_the_acknowledgment_brings_the_break_back(olga, watch):
    events = record(3)
    tamper("UPDATE audit_auditevent SET message = 'typo fixed' WHERE id = %s", [events[0].pk])
    acknowledge()
    tamper("DELETE FROM audit_auditevent WHERE action = %s", [AuditAction.CHAIN_BREAK_ACKNOWLEDGED])
    report = audit.verify_chain()
    assert (report.problem, report.broken_at) == (audit.EDITED, events[0].pk)


def test_the_code_acknowledges_only_the_problems_it_was_given_for(olga, watch):
    events = record(4)
    tamper("UPDATE audit_auditevent SET message = 'typo fixed' WHERE id = %s", [events[0].pk])
    with pytest.raises(CommandError, match=r"--confirm (\w+)") as first:
        call_command("acknowledge_audit_break", "--by", "olga", "--reason", "typo")
    code = str(first.value).rsplit(" ", 1)[-1]
    tamper("UPDATE audit_auditevent SET actor = 'mallory' WHERE id = %s", [events[2].pk])
    with pytest.raises(CommandError, match="The problems are not those the code was given for"):
        call_command("acknowledge_audit_break", "--by", "olga", "--reason", "typo", "--confirm", code)
    assert not AuditEvent.objects.filter(action=AuditAction.CHAIN_BREAK_ACKNOWLEDGED).exists()


def test_only_a_person_on_the_staff_acknowledges_a_break(rita, watch):
    tamper("UPDATE audit_auditevent SET message = 'x' WHERE id = %s", [record(2)[0].pk])
    with pytest.raises(CommandError, match="rita is not an active staff account"):
        call_command("acknowledge_audit_break", "--by", "rita", "--reason", "typo")


def test_an_intact_chain_has_nothing_to_acknowledge(olga, watch):
    record(2)
    out = StringIO()
    call_command("acknowledge_audit_break", "--by", "olga", "--reason", "just in case", stdout=out)
    assert out.getvalue().startswith("Nothing to acknowledge. The audit chain is intact")
    assert not AuditEvent.objects.filter(action=AuditAction.CHAIN_BREAK_ACKNOWLEDGED).exists()
