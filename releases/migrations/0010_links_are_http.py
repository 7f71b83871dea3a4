"""Stored links are http(s) only (issue #19): the database refuses any other scheme. A link stored
before with another scheme (a PagerDuty `javascript:` html_url) is emptied first: it was never a
link worth following, and the constraint could not be added over it."""

from django.db import migrations, models

import nexo_portal.lib.inert

LINKS = [("Service", "source_repo_url"), ("Incident", "external_url"), ("CheckResult", "url")]


def empty_other_schemes(apps, schema_editor):
    for model_name, field in LINKS:
        model = apps.get_model("releases", model_name)
        rows = model.objects.exclude(**{field: ""}).exclude(
            **{f"{field}__iregex": nexo_portal.lib.inert.HTTP_URL_REGEX}
        )
        rows.update(**{field: ""})


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("environments", "0006_soak_limits"),
        ("releases", "0009_promotion_accountable_requester"),
    ]

    operations = [
        migrations.RunPython(empty_other_schemes, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="checkresult",
            name="url",
            field=models.URLField(
                blank=True,
                help_text="http(s) only.",
                max_length=500,
                validators=[nexo_portal.lib.inert.validate_http_url],
            ),
        ),
        migrations.AlterField(
            model_name="incident",
            name="external_url",
            field=models.URLField(
                blank=True, help_text="http(s) only.", validators=[nexo_portal.lib.inert.validate_http_url]
            ),
        ),
        migrations.AlterField(
            model_name="service",
            name="source_repo_url",
            field=models.URLField(
                blank=True,
                help_text="http(s), e.g. https://github.com/nexo-org/nexo-be",
                validators=[nexo_portal.lib.inert.validate_http_url],
            ),
        ),
        migrations.AddConstraint(
            model_name="checkresult",
            constraint=models.CheckConstraint(
                condition=models.Q(("url", ""), ("url__iregex", "^https?://"), _connector="OR"),
                name="check_result_url_is_http",
            ),
        ),
        migrations.AddConstraint(
            model_name="incident",
            constraint=models.CheckConstraint(
                condition=models.Q(("external_url", ""), ("external_url__iregex", "^https?://"), _connector="OR"),
                name="incident_url_is_http",
            ),
        ),
        migrations.AddConstraint(
            model_name="service",
            constraint=models.CheckConstraint(
                condition=models.Q(("source_repo_url", ""), ("source_repo_url__iregex", "^https?://"), _connector="OR"),
                name="service_repo_url_is_http",
            ),
        ),
    ]
