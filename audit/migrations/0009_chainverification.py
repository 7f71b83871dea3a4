from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0008_auditevent_seal"),
    ]

    operations = [
        migrations.CreateModel(
            name="ChainVerification",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("checked_at", models.DateTimeField()),
                ("ok", models.BooleanField()),
                ("problem", models.CharField(blank=True, max_length=20)),
                ("broken_at", models.BigIntegerField(blank=True, null=True)),
                ("summary", models.TextField()),
                ("events_checked", models.PositiveIntegerField(default=0)),
                ("vouched_through", models.BigIntegerField(blank=True, null=True)),
                ("unvouched", models.PositiveIntegerField(default=0)),
                ("witness_error", models.TextField(blank=True)),
                ("broken_since", models.DateTimeField(blank=True, null=True)),
                ("alerted", models.CharField(blank=True, max_length=100)),
            ],
        ),
    ]
