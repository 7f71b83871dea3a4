"""The state version and the triggers that bump it (releases/state.py)."""

from django.conf import settings
from django.db import migrations, models

from releases import state


def forwards(apps, schema_editor):
    state.install(schema_editor)


def backwards(apps, schema_editor):
    state.uninstall(schema_editor)


class Migration(migrations.Migration):
    dependencies = [
        ("releases", "0011_approval_notices_and_slack_identities"),
        ("environments", "0006_soak_limits"),
        ("audit", "0010_lock_chain_and_read_head"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="StateVersion",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("version", models.BigIntegerField(default=0)),
            ],
            options={
                "constraints": [models.CheckConstraint(condition=models.Q(("id", 1)), name="state_version_single_row")],
            },
        ),
        migrations.RunPython(forwards, backwards),
    ]
