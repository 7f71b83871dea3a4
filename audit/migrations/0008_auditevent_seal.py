from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0007_promotion_deferred"),
    ]

    operations = [
        # A new column with a default: PostgreSQL changes no row, so the append-only trigger is not asked.
        migrations.AddField(
            model_name="auditevent",
            name="seal",
            field=models.CharField(blank=True, editable=False, max_length=64),
        ),
    ]
