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
        ("releases", "0015_slo_breach_and_far_behind"),
        ("environments", "0010_promotion_slos_and_drift_alert"),
        ("audit", "0013_far_behind_action"),
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
