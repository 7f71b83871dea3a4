"""The portal runs as DATABASE_RUNTIME_ROLE, which `migrate` (run as the tables' owner) grants what the
portal needs: connected as that role, the audit log can be read and appended to, and nothing else —
not emptied, changed, or stripped of its trigger — while the pipeline works as usual."""

import os
from datetime import timedelta

import psycopg
import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection, connections
from django.utils import timezone

from audit import checkpoints
from audit import log as audit
from audit.models import AuditAction, AuditEvent
from releases import transitions
from releases.models import Promotion, PromotionKind, PromotionState
from tests.factories import make_release


def runtime_credentials():
    role = settings.DATABASE_RUNTIME_ROLE
    if not role:
        pytest.fail(
            "DATABASE_RUNTIME_ROLE is not set: ./scripts/test sets it to nexo_app and creates that role "
            "(scripts/lib.sh), so that the test database is migrated with its grants."
        )
    return role, os.environ.get("DATABASE_RUNTIME_PASSWORD", role)


@pytest.fixture
def as_runtime(transactional_db):
    """A connection of its own to the test database, as the runtime role."""
    role, password = runtime_credentials()
    database = connection.settings_dict
    with psycopg.connect(
        host=database["HOST"],
        port=database["PORT"],
        dbname=database["NAME"],
        user=role,
        password=password,
        autocommit=True,
    ) as runtime:
        yield runtime


@pytest.mark.parametrize(
    "statement",
    [
        "TRUNCATE audit_auditevent",
        "ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only",
        "ALTER TABLE audit_auditevent DISABLE TRIGGER ALL",
        "DROP TRIGGER audit_event_append_only ON audit_auditevent",
        "DELETE FROM audit_auditevent",
        "UPDATE audit_auditevent SET actor = 'mallory'",
        "SELECT id FROM audit_auditevent FOR UPDATE",
    ],
)
def test_the_runtime_role_cannot_empty_change_or_unprotect_the_audit_log(as_runtime, statement):
    events = [audit.record(AuditAction.RELEASE_REGISTERED, actor="ci", version=f"2026.02.{n}") for n in (1, 2)]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        as_runtime.execute(statement)
    assert list(AuditEvent.objects.order_by("id").values_list("hash", "actor")) == [
        (event.hash, "ci") for event in events
    ]
    assert audit.verify_chain().ok


def test_the_runtime_role_reads_and_appends_to_the_audit_log_and_writes_the_others(as_runtime):
    assert as_runtime.execute("SELECT current_user").fetchone() == (settings.DATABASE_RUNTIME_ROLE,)
    as_runtime.execute(
        "INSERT INTO audit_auditevent (created_at, action, actor, service, environment, version, message, data,"
        " previous_hash, hash, seal) VALUES (now(), 'release.registered', 'ci', '', '', '', '', '{}', %s, %s, '')",
        ["0" * 64, "1" * 64],
    )
    assert as_runtime.execute("SELECT count(*) FROM audit_auditevent").fetchone() == (1,)
    as_runtime.execute("UPDATE audit_chainverification SET ok = ok")
    as_runtime.execute("DELETE FROM releases_promotion")


def test_what_the_runtime_role_writes_into_the_last_verification_neither_silences_nor_postpones_the_next(
    as_runtime, settings
):
    """The watch runs as the runtime role and keeps its last result in a row that role may write; a
    break must be alerted even when someone using that role (without the key) wrote it down as
    alerted already, and verified far ahead."""
    settings.AUDIT_WITNESS = ""
    head = [audit.record(AuditAction.RELEASE_REGISTERED, actor="ci", version=f"2026.02.{n}") for n in (1, 2)][-1]
    now = timezone.now()
    assert checkpoints.watch(now=now).ok

    forged = AuditEvent(created_at=now, action=AuditAction.PROMOTION_APPROVED, actor="mallory", previous_hash=head.hash)
    forged.hash = audit.compute_hash(head.hash, forged.hashed_fields())
    forged_id = as_runtime.execute(
        "INSERT INTO audit_auditevent (created_at, action, actor, service, environment, version, message, data,"
        " previous_hash, hash, seal) VALUES (%s, %s, 'mallory', '', '', '', '', '{}', %s, %s, '') RETURNING id",
        [forged.created_at, forged.action, forged.previous_hash, forged.hash],
    ).fetchone()[0]
    as_runtime.execute(
        "UPDATE audit_chainverification SET alerted = %s, checked_at = now() + interval '1 year'",
        [f"forged at {forged_id}"],
    )

    alerts = []
    verification = checkpoints.watch(alert=alerts.append, now=now + timedelta(hours=1))
    assert verification is not None
    assert (verification.problem, verification.broken_at) == (audit.FORGED, forged_id)
    assert alerts == [verification.summary]
    checkpoints.watch(alert=alerts.append, now=now + timedelta(hours=2))
    assert len(alerts) == 1  # once, as ever


def test_what_the_runtime_role_writes_into_the_last_verification_is_not_shown_as_the_portals(
    as_runtime, settings, client, viewer
):
    """Someone using the runtime role (without the key) marks a broken chain's last verification intact and
    fresh: the audit page says the row is not the portal's, not that the chain holds."""
    settings.AUDIT_WITNESS = ""
    head = [audit.record(AuditAction.RELEASE_REGISTERED, actor="ci", version=f"2026.02.{n}") for n in (1, 2)][-1]
    forged = AuditEvent(created_at=timezone.now(), action=AuditAction.PROMOTION_APPROVED, actor="mallory")
    forged.previous_hash = head.hash
    forged.hash = audit.compute_hash(head.hash, forged.hashed_fields())
    as_runtime.execute(
        "INSERT INTO audit_auditevent (created_at, action, actor, service, environment, version, message, data,"
        " previous_hash, hash, seal) VALUES (%s, %s, 'mallory', '', '', '', '', '{}', %s, %s, '')",
        [forged.created_at, forged.action, forged.previous_hash, forged.hash],
    )
    assert not checkpoints.watch().ok
    as_runtime.execute(
        "UPDATE audit_chainverification SET ok = true, problem = '', broken_at = NULL, broken_since = NULL,"
        " summary = 'The audit chain is intact.', checked_at = now()"
    )

    client.force_login(viewer)
    page = client.get("/audit/").content.decode()
    assert "The last verification on record is not signed by the portal: it may have been altered" in page
    assert f"the next check, within {settings.RECONCILE_SECONDS} seconds, replaces it" in page
    assert "Chain verified at" not in page
    assert "intact" not in page


@pytest.fixture
def portal_as_runtime_role(pipeline):
    """The portal itself (web code, jobs, the worker) connected as the runtime role; the owner again after."""
    role, password = runtime_credentials()
    database = connection.settings_dict
    owner = database["USER"], database["PASSWORD"]
    connections.close_all()
    database["USER"], database["PASSWORD"] = role, password
    yield pipeline
    connections.close_all()
    database["USER"], database["PASSWORD"] = owner


def test_the_pipeline_runs_as_the_runtime_role(portal_as_runtime_role):
    pipeline = portal_as_runtime_role
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        assert cursor.fetchone() == (settings.DATABASE_RUNTIME_ROLE,)
    service = pipeline.add_service("nexo-be")
    release = make_release(service, "2026.02.1")
    develop = transitions.request_promotion(release, pipeline.environments["develop"], None, kind=PromotionKind.AUTO)
    pipeline.run_jobs()
    develop.refresh_from_db()
    assert develop.state == PromotionState.VERIFIED
    assert Promotion.objects.get(environment__name="qa").state == PromotionState.VERIFIED
    assert audit.verify_chain().ok


@pytest.mark.django_db
def test_migrate_refuses_a_runtime_role_that_owns_the_tables_and_leaves_the_owner_its_privileges(settings):
    """Revoking TRUNCATE, REFERENCES and TRIGGER from the owner would make later migrations that add a
    foreign key fail: migrate says so instead (the test's transaction undoes whatever it did)."""
    owner = connection.settings_dict["USER"]
    settings.DATABASE_RUNTIME_ROLE = owner
    with pytest.raises(ImproperlyConfigured, match=f"DATABASE_RUNTIME_ROLE={owner} owns the portal's tables"):
        call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT has_table_privilege(%s, 'releases_promotion', privilege)"
            " FROM unnest(ARRAY['TRUNCATE', 'REFERENCES', 'TRIGGER']) AS privilege",
            [owner],
        )
        assert [allowed for (allowed,) in cursor.fetchall()] == [True, True, True]
