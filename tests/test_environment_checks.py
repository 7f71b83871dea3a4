"""`manage.py check --database default` (and `migrate`, which runs it) names the environments their
own form would refuse as they stand: rows saved before a rule, or made unfit by a change elsewhere."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core import checks
from django.core.management import call_command
from django.db.migrations.recorder import MigrationRecorder

from environments.models import Environment
from tests.factories import make_service

pytestmark = pytest.mark.django_db


def environment_warnings():
    return [issue for issue in checks.run_checks(databases=["default"]) if issue.id.startswith("environments.")]


def test_check_names_an_environment_whose_soak_a_services_own_query_needs_more_of(environments):
    make_service("nexo-be", team="backend-team", prometheus_query_template="sum(rate(x[2m]))")
    Environment.objects.filter(name="qa").update(verification_window=timedelta(minutes=1))
    output = StringIO()

    call_command("check", databases=["default"], stdout=StringIO(), stderr=output)

    assert (
        "qa: (environments.W001) The environment's form would refuse it as it stands. Verification window: "
        "nexo-be's own error-rate query: The query's 2m range is longer than the soak window (1m)"
    ) in output.getvalue()
    assert "HINT: Correct qa in the admin (Environments), or the services whose own queries it names." in (
        output.getvalue()
    )


def test_check_names_every_problem_of_an_environment_in_one_warning(environments):
    Environment.objects.filter(name="production").update(sample_interval_seconds=3600, required_checks=["E2E"])

    [warning] = environment_warnings()

    assert warning.obj == environments["production"]
    assert "Sample interval seconds: A sample every 3600 seconds is longer than the soak window (30m)" in warning.msg
    assert "Required checks: “E2E” is not a check name" in warning.msg


def test_check_names_an_environment_whose_promotion_target_its_soak_fills(environments):
    """Saved before the rule: staging's old default target, 30 minutes beside its 30-minute soak."""
    Environment.objects.filter(name="staging").update(promotion_slo_minutes=30)

    [warning] = environment_warnings()

    assert warning.obj == environments["staging"]
    assert "Promotion slo minutes: A target of 30 min is no longer than the soak window (30m)" in warning.msg


def test_check_says_nothing_of_environments_their_form_accepts(environments):
    make_service("nexo-be", team="backend-team", prometheus_query_template="sum(rate(x[2m]))")

    assert environment_warnings() == []


def test_check_without_the_database_asks_it_nothing(environments, django_assert_num_queries):
    """runserver and a plain `manage.py check` run the checks too, and may run where no database answers."""
    Environment.objects.filter(name="qa").update(verification_window=timedelta(seconds=1))

    with django_assert_num_queries(0):
        issues = checks.run_checks()

    assert not [issue for issue in issues if issue.id.startswith("environments.")]


def test_check_waits_for_the_migrations_migrate_runs_it_before(environments):
    """`migrate` runs the checks before it applies anything: on a new database the tables are not
    there yet, and after an upgrade the models may ask for columns not yet added."""
    Environment.objects.filter(name="qa").update(verification_window=timedelta(seconds=1))
    latest = MigrationRecorder.Migration.objects.filter(app="environments").order_by("-name").first()
    latest.delete()  # as if the release being deployed brought it; the test's transaction puts it back

    assert environment_warnings() == []
