"""Whom each promotion counts as requested by for separation of duties (issue #19): the person who
asked, or the person who created the API token it came through; filled in for the promotions already
there."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models
from django.db.models import F, Subquery


def fill_in(apps, schema_editor):
    Promotion = apps.get_model("releases", "Promotion")
    ApiToken = apps.get_model("nexo_portal", "ApiToken")
    Promotion.objects.filter(requested_by__isnull=False).update(accountable_requester=F("requested_by"))
    tokens = Promotion.objects.filter(requested_by__isnull=True, requested_via__startswith="api-token:")
    for promotion_id, via in tokens.values_list("pk", "requested_via"):
        created_by = ApiToken.objects.filter(name=via.removeprefix("api-token:")).values_list("created_by", flat=True)
        Promotion.objects.filter(pk=promotion_id).update(accountable_requester=Subquery(created_by[:1]))


class Migration(migrations.Migration):
    dependencies = [
        ("releases", "0008_step_runs"),
        ("nexo_portal", "0001_api_token"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="promotion",
            name="accountable_requester",
            field=models.ForeignKey(
                blank=True,
                help_text=(
                    "Whom the request counts as for separation of duties: the person who asked, or the person who "
                    "created the API token it came through. They may not approve or reject it."
                ),
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.RunPython(fill_in, migrations.RunPython.noop),
    ]
