"""The state version: one number that moves on with every committed change a live page shows, so a
refresh of an unchanged board or timeline answers 304 Not Modified instead of rendering it again.

Database triggers keep it, not the code that writes: transitions, Argo CD webhooks and polling,
holds, freezes, CI results, the admin, a management command or a hand-written SQL fix all bump it
alike, and nothing can forget to. On PostgreSQL they are constraint triggers deferred to the commit,
bumping once per transaction: the counter row is locked only in the moment before the commit (no
deadlock with the transaction's other locks), and the new number becomes visible together with the
change. A page reads the version first and its data after, so a number is never paired with data
older than it. SQLite (the demo) has per-row triggers in the same transaction, which is enough with
its single writer.

Pages also show time (ages, soak progress, a freeze that starts at a set time): their tags carry the
minute too (`etag`), so an idle page is rendered again at most once a minute.
"""

import hashlib
import time

from django.db import connection

TABLE = "releases_stateversion"

# Every table behind the board, a promotion's page and the waiting count, and what counts as a
# change: None is any change of the row; an update condition leaves out writes nobody sees.
WATCHED = {
    "releases_service": None,
    "releases_release": None,
    "releases_promotion": None,
    "releases_approval": None,
    "releases_deployment": None,
    "releases_hold": None,
    "releases_verificationsample": None,
    "releases_checkresult": None,
    # A worker renews its lease every few seconds; the page shows only how the run ended.
    "releases_steprun": "OLD.status IS DISTINCT FROM NEW.status OR OLD.error IS DISTINCT FROM NEW.error",
    "environments_environment": None,
    "environments_environment_approver_groups": None,
    "environments_environment_requester_groups": None,
    "environments_changefreeze": None,
    "auth_group": None,
    "auth_user_groups": None,
    # Signing in updates last_login; who a person is and may be is what pages show.
    "auth_user": (
        "OLD.username IS DISTINCT FROM NEW.username OR OLD.is_active IS DISTINCT FROM NEW.is_active"
        " OR OLD.is_superuser IS DISTINCT FROM NEW.is_superuser"
    ),
}
# Append-only: only the events of a promotion appear on a live page (its timeline).
WATCHED_INSERTS = {"audit_auditevent": "NEW.promotion_id IS NOT NULL"}

# Tables of the watched apps that no live page shows, and why (tests/test_state_version.py holds
# every table of releases and environments to one list or the other).
NOT_WATCHED = {
    "releases_buildcounter": "allocates build numbers; the release row it numbers is watched",
    "releases_deploymentevent": "DORA's record of deployments; the deployment itself is watched",
    "releases_incident": "DORA's incidents, shown only on the DORA report",
    "releases_slackidentity": "who someone is on Slack, shown nowhere live",
    "releases_approvalnotice": "when approvers were told, shown nowhere live",
    "releases_notice": "alerts and notices owed or sent, shown nowhere live",
    # Written every round: watched, it would make every open board fetch itself anew every 30 s.
    "releases_reconcilerround": "when the reconciler last ended a round, shown only on /metrics",
    TABLE: "the counter itself",
}

FUNCTION = "releases_bump_state_version"

# Starting from the clock rather than from 1: a database restored or emptied never hands out a
# number an open page already holds.
_PG_UPSERT = (
    f"INSERT INTO {TABLE} (id, version) VALUES (1, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint) "
    f"ON CONFLICT (id) DO UPDATE SET version = {TABLE}.version + 1"
)
_SQLITE_UPSERT = (
    f"INSERT INTO {TABLE} (id, version) VALUES (1, CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)) "
    f"ON CONFLICT (id) DO UPDATE SET version = version + 1"
)

_PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger AS $$
BEGIN
    -- Deferred to the commit, every changed row of the transaction lands here: bump once.
    IF current_setting('nexo.state_bumped_in', true) IS DISTINCT FROM txid_current()::text THEN
        PERFORM set_config('nexo.state_bumped_in', txid_current()::text, true);
        {_PG_UPSERT};
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
"""


def _pg_triggers(table, update_condition, inserts_only=False, insert_condition=None):
    name = f"{table}_state_version"
    when_insert = f" WHEN ({insert_condition})" if insert_condition else ""
    events = "INSERT" if inserts_only else "INSERT OR DELETE"
    statements = [
        f"CREATE CONSTRAINT TRIGGER {name} AFTER {events} ON {table} DEFERRABLE INITIALLY DEFERRED "
        f"FOR EACH ROW{when_insert} EXECUTE FUNCTION {FUNCTION}()"
    ]
    if not inserts_only:
        condition = update_condition or "OLD.* IS DISTINCT FROM NEW.*"
        statements.append(
            f"CREATE CONSTRAINT TRIGGER {name}_update AFTER UPDATE ON {table} DEFERRABLE INITIALLY DEFERRED "
            f"FOR EACH ROW WHEN ({condition}) EXECUTE FUNCTION {FUNCTION}()"
        )
    return statements


def _sqlite_triggers(table, update_condition, inserts_only=False, insert_condition=None):
    events = ["INSERT"] if inserts_only else ["INSERT", "DELETE", "UPDATE"]
    statements = []
    for event in events:
        condition = insert_condition if event == "INSERT" else update_condition if event == "UPDATE" else None
        when = f" WHEN {condition.replace('IS DISTINCT FROM', 'IS NOT')}" if condition else ""
        statements.append(
            f"CREATE TRIGGER {table}_state_version_{event.lower()} AFTER {event} ON {table} FOR EACH ROW{when} "
            f"BEGIN {_SQLITE_UPSERT}; END"
        )
    return statements


def install(schema_editor):
    """Create the triggers (a migration runs this once; new watched tables need a migration too)."""
    postgres = schema_editor.connection.vendor == "postgresql"
    statements = [_PG_FUNCTION] if postgres else []
    build = _pg_triggers if postgres else _sqlite_triggers
    for table, condition in WATCHED.items():
        statements += build(table, condition)
    for table, condition in WATCHED_INSERTS.items():
        statements += build(table, None, inserts_only=True, insert_condition=condition)
    for statement in statements:
        schema_editor.execute(statement, params=None)


def uninstall(schema_editor):
    postgres = schema_editor.connection.vendor == "postgresql"
    for table in [*WATCHED, *WATCHED_INSERTS]:
        if postgres:
            for suffix in ("", "_update"):
                schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_state_version{suffix} ON {table}", params=None)
        else:
            for event in ("insert", "delete", "update"):
                schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_state_version_{event}", params=None)
    if postgres:
        schema_editor.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}()", params=None)


def current():
    """The version now (0 before the first change). Read it before the data it stands for."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT version FROM {TABLE} WHERE id = 1")
        row = cursor.fetchone()
    return row[0] if row else 0


def etag(request, *parts):
    """A weak entity tag for what `request` is shown at the current version, this minute.

    `parts`: whatever else the page depends on (the person is in already: their groups decide
    what they may do, and the waiting count is theirs).
    """
    key = "|".join(
        str(part) for part in (current(), int(time.time() // 60), request.user.pk, request.get_full_path(), *parts)
    )
    return 'W/"' + hashlib.blake2b(key.encode(), digest_size=12).hexdigest() + '"'


def not_modified(request, tag):
    """Whether the client already holds what `tag` stands for."""
    held = request.headers.get("If-None-Match", "")
    return held == "*" or tag in (candidate.strip() for candidate in held.split(","))
