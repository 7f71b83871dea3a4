"""The database role the portal runs as, DATABASE_RUNTIME_ROLE, granted what it needs by `migrate`,
which runs as the tables' owner: every table to read and write, but the audit log only to read and
append to.

A role that does not own a table may not ALTER it, so it can neither disable nor drop the audit
log's append-only trigger, and without TRUNCATE, UPDATE and DELETE it cannot empty or change the
log either: the log holds against the portal's own database credentials, not only its code.
"""

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections
from psycopg import sql

from audit.models import AuditEvent

# Tables the portal may only read and append to.
APPEND_ONLY = [AuditEvent]


def refuse_the_owner(role, using="default"):
    """Refuse `role` as the runtime role when it is the role migrate connects as, or owns the tables:
    revoking from it what the portal does not need would take from the owner what migrations need
    (REFERENCES to add a foreign key, TRIGGER, TRUNCATE), and migrate would not notice."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT %s = current_user OR EXISTS (SELECT FROM pg_tables WHERE schemaname = current_schema()"
            " AND tableowner = %s)",
            [role, role],
        )
        (owner,) = cursor.fetchone()
    if owner:
        raise ImproperlyConfigured(
            f"DATABASE_RUNTIME_ROLE={role} owns the portal's tables (or is the role migrate connects as): "
            "granting it only what the portal needs would take from it what migrations need. Set it to the "
            "role the web processes, workers and reconciler connect as, another than the owner (docs/deploy.md), "
            "or leave it unset to run them all as the owner."
        )


def refuse_the_owner_before_migrate(using="default", **kwargs):
    """pre_migrate: a wrong DATABASE_RUNTIME_ROLE is refused before anything is migrated."""
    from django.conf import settings

    if settings.DATABASE_RUNTIME_ROLE:
        refuse_the_owner(settings.DATABASE_RUNTIME_ROLE, using)


def grant_runtime_role(role, using="default"):
    """Grant `role` the portal's privileges on every table and sequence of the current schema (again:
    tables added since are included); nothing outside PostgreSQL."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return
    refuse_the_owner(role, using)
    grants = [
        "GRANT USAGE ON SCHEMA {schema} TO {role}",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}",
        "REVOKE TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA {schema} FROM {role}",
        "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role}",
        *(f"REVOKE UPDATE, DELETE ON {{schema}}.{{{model.__name__}}} FROM {{role}}" for model in APPEND_ONLY),
    ]
    tables = {model.__name__: sql.Identifier(model._meta.db_table) for model in APPEND_ONLY}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_schema()")
            schema = sql.Identifier(cursor.fetchone()[0])
            for grant in grants:
                cursor.execute(sql.SQL(grant).format(schema=schema, role=sql.Identifier(role), **tables))
    except DatabaseError as error:
        raise ImproperlyConfigured(
            f"Could not grant the portal's privileges to DATABASE_RUNTIME_ROLE={role}: {error}".strip()
            + " Create the role first (docs/deploy.md), and run migrate as the owner of the tables."
        ) from error


def grant_after_migrate(using="default", **kwargs):
    """post_migrate: when DATABASE_RUNTIME_ROLE is set, (re)grant it after every migrate."""
    from django.conf import settings

    if settings.DATABASE_RUNTIME_ROLE:
        grant_runtime_role(settings.DATABASE_RUNTIME_ROLE, using)
