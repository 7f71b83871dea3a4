from django.db import migrations, models


def emailed_when_notified(apps, schema_editor):
    """Notices written before: the approvers were e-mailed right after the row was, as far as anyone knows."""
    ApprovalNotice = apps.get_model("releases", "ApprovalNotice")
    ApprovalNotice.objects.update(emailed_at=models.F("notified_at"))


class Migration(migrations.Migration):
    dependencies = [
        ("releases", "0018_notices"),
    ]

    operations = [
        migrations.AddField(
            model_name="approvalnotice",
            name="emailed_at",
            field=models.DateTimeField(
                blank=True,
                help_text="When the approvers were e-mailed (empty: not yet, or e-mails are off).",
                null=True,
            ),
        ),
        migrations.RunPython(emailed_when_notified, migrations.RunPython.noop),
    ]
