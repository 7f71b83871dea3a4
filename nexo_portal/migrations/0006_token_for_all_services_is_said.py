"""A token is for all services by a flag of its own, no longer because its list of services is empty:
deleting a service empties that list, and turned a token limited to it into one for every service.

The tokens limited to none today were made for all services and are marked so, except those whose
creation (the audit event keeps the services it named) was limited to services deleted since: they
now act on none.
"""

from django.db import migrations, models


def keep_all_services(apps, schema_editor):
    ApiToken = apps.get_model("nexo_portal", "ApiToken")
    AuditEvent = apps.get_model("audit", "AuditEvent")
    for token in ApiToken.objects.filter(services=None):
        created = (
            AuditEvent.objects.filter(action="token.created", data__token=token.name, data__prefix=token.prefix)
            .order_by("-pk")
            .first()
        )
        if created is None or not created.data.get("services"):
            ApiToken.objects.filter(pk=token.pk).update(all_services=True)


class Migration(migrations.Migration):
    dependencies = [
        ("nexo_portal", "0005_trust_policy_repository_id"),
        ("releases", "0020_notice_parts_done"),
        ("audit", "0017_hold_updated_action"),
    ]

    operations = [
        migrations.AddField(
            model_name="apitoken",
            name="all_services",
            field=models.BooleanField(
                default=False,
                help_text="It may act on and read every service, those added later too. Otherwise: the services selected.",
            ),
        ),
        migrations.AlterField(
            model_name="apitoken",
            name="services",
            field=models.ManyToManyField(
                blank=True,
                help_text=(
                    "The services it may act on and read (releases, promotions, matrix, audit log, DORA), "
                    "unless it is for all services."
                ),
                related_name="api_tokens",
                to="releases.service",
            ),
        ),
        migrations.RunPython(keep_all_services, migrations.RunPython.noop),
    ]
