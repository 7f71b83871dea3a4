"""Migrations keep the release before working while they run: the release step migrates while the
old processes still serve (docs/deploy.md, Upgrading), and those insert rows without the columns
they do not know."""

from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.db import migrations
from django.db.migrations.loader import MigrationLoader
from django.db.models import NOT_PROVIDED, GeneratedField

# The first migration of each app held to the rule. Some before these add columns NOT NULL without a
# database default (the last: audit 0008, environments 0010, nexo_portal 0006, releases 0020), so an
# install that has not applied them stops its old processes before migrating (docs/deploy.md). Never
# move these forward: give the new column a db_default, or null=True.
HELD_FROM = {"audit": "0009", "environments": "0011", "nexo_portal": "0007", "releases": "0021"}


def project_apps():
    base = Path(settings.BASE_DIR).resolve()
    return {
        config.label
        for config in apps.get_app_configs()
        if Path(config.path).resolve().is_relative_to(base) and "site-packages" not in Path(config.path).parts
    }


def added_columns():
    """(app, migration, model, field name, field) of every AddField held to the rule, but those on a
    model the same migration creates (no process of an earlier release uses its table)."""
    loader = MigrationLoader(None, ignore_no_migrations=True)
    ours = project_apps()
    for (app, name), migration in sorted(loader.disk_migrations.items()):
        if app not in ours or name < HELD_FROM.get(app, ""):
            continue
        created = set()
        for operation in migration.operations:
            if isinstance(operation, migrations.CreateModel):
                created.add(operation.name_lower)
            elif isinstance(operation, migrations.AddField) and operation.model_name_lower not in created:
                yield app, name, operation.model_name, operation.name, operation.field


def test_every_column_a_migration_adds_may_be_null_or_has_a_database_default():
    added = list(added_columns())
    assert set(HELD_FROM) <= project_apps()
    assert ("releases", "promotion", "applied_health") in {(app, model, field) for app, _, model, field, _ in added}
    missing = [
        f"{app} {name}: {model}.{field_name}"
        for app, name, model, field_name, field in added
        if not (field.null or field.many_to_many or isinstance(field, GeneratedField))
        and field.db_default is NOT_PROVIDED
    ]
    assert not missing, (
        "These migrations add a column NOT NULL without a database default. The processes of the release before, "
        "which run while the release step migrates, insert rows without it and fail (IntegrityError): give each "
        "field db_default= (keeping default= for the ORM), or null=True.\n" + "\n".join(missing)
    )
