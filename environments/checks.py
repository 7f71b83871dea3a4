"""`manage.py check --database default`, and `migrate` before it migrates: the environments their own
form would refuse as they stand, saved before a rule or made unfit by a change elsewhere (a service's
own error-rate query), so an operator finds them without opening each one."""

from django.core import checks
from django.core.exceptions import ValidationError
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor

from .models import Environment


@checks.register(checks.Tags.database)
def environments_their_form_would_refuse(app_configs, databases=None, **kwargs):
    # Without --database a check may not query (runserver, a plain `check`); and `migrate` checks
    # before migrating, when the tables may lack what the models ask for, or be missing.
    if DEFAULT_DB_ALIAS not in (databases or ()):
        return []
    executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
    if executor.migration_plan(executor.loader.graph.leaf_nodes()):
        return []
    warnings = []
    for environment in Environment.objects.in_pipeline_order():
        try:
            environment.full_clean(validate_unique=False, validate_constraints=False)
        except ValidationError as refused:
            problems = " ".join(
                f"{_label(field)}{message}" for field, messages in refused.message_dict.items() for message in messages
            )
            warnings.append(
                checks.Warning(
                    f"The environment's form would refuse it as it stands. {problems}",
                    hint=f"Correct {environment.name} in the admin (Environments), or the services whose own "
                    "queries it names.",
                    obj=environment,
                    id="environments.W001",
                )
            )
    return warnings


def _label(field):
    if field == "__all__":
        return ""
    return f"{Environment._meta.get_field(field).verbose_name.capitalize()}: "
