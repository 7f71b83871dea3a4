"""One statement that takes the chain's lock and then reads its head, for audit.log.

A plain `SELECT pg_advisory_xact_lock(…), (SELECT hash …)` would read the head with the snapshot
taken before it waited for the lock, and could miss an event committed meanwhile. A volatile
PL/pgSQL function takes a new snapshot for each statement inside it, so the head it returns is
the one after the lock was granted. It runs with its caller's privileges: reading the table.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION audit_lock_chain_and_read_head(lock_key bigint) RETURNS varchar AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    RETURN (SELECT hash FROM audit_auditevent ORDER BY id DESC LIMIT 1);
END;
$$ LANGUAGE plpgsql VOLATILE;
"""

DROP = "DROP FUNCTION IF EXISTS audit_lock_chain_and_read_head(bigint);"


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("audit", "0009_chainverification")]

    operations = [migrations.RunPython(forwards, backwards)]
