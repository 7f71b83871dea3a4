import json
from datetime import timedelta
from io import StringIO
from pathlib import Path

import git
import jsonschema
import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command

from audit.log import verify_chain
from audit.models import AuditAction, AuditEvent
from environments.models import Environment
from releases import verification
from releases.audit_export import promotion_records, step_records
from releases.gitops.values import read_value
from releases.models import Approval, CheckResult, Deployment, Promotion, PromotionState, Release, Service

pytestmark = pytest.mark.django_db

COUNTED = [Environment, Service, Release, Promotion, Approval, Deployment, CheckResult, User, Group, AuditEvent]


@pytest.fixture
def gitops_path(tmp_path, settings):
    settings.GITOPS_REPO_URL = str(tmp_path / "gitops.git")
    return tmp_path / "gitops.git"


def seed():
    call_command("seed_demo", force=True, stdout=StringIO())


def test_seed_demo_refuses_a_portal_running_with_debug_off_unless_forced(gitops_path, settings):
    from django.contrib.auth.models import User
    from django.core.management.base import CommandError

    settings.DEBUG = False
    with pytest.raises(CommandError, match="password is published in the README"):
        call_command("seed_demo", stdout=StringIO())
    assert not User.objects.filter(username="admin").exists()


def test_seed_demo_creates_the_demo_world(gitops_path):
    seed()
    assert list(Environment.objects.values_list("name", flat=True)) == ["develop", "qa", "staging", "production"]
    assert set(Service.objects.values_list("name", flat=True)) == {"nexo-be", "nexo-fe", "nexo-auth"}
    assert {"platform-team", "sre-team", "platform-leads"} <= set(Group.objects.values_list("name", flat=True))
    production = Environment.objects.get(name="production")
    assert production.required_approvals == 2
    assert set(production.approver_groups.values_list("name", flat=True)) == {"sre-team", "platform-leads"}
    assert User.objects.get(username="sam").check_password("nexo-demo-2026")
    assert Promotion.objects.filter(state="awaiting_approval", environment=production).count() == 1


def test_seed_demo_twice_duplicates_nothing(gitops_path):
    seed()
    counts = {model: model.objects.count() for model in COUNTED}
    commits = len(list(git.Repo(gitops_path).iter_commits()))
    seed()
    assert {model: model.objects.count() for model in COUNTED} == counts
    assert len(list(git.Repo(gitops_path).iter_commits())) == commits


def test_gitops_repository_agrees_with_current_deployments(gitops_path):
    seed()
    repo = git.Repo(gitops_path)
    for deployment in Deployment.objects.current().select_related("service", "environment", "release"):
        path = deployment.service.values_path(deployment.environment)
        text = repo.git.show(f"main:{path}")
        assert "# Managed by GitOps" in text
        assert read_value(text, "image.tag", path) == deployment.release.version
        assert repo.commit(deployment.gitops_commit_sha).message.startswith(("promote(", "auto-promote("))
    files = repo.git.ls_tree("-r", "--name-only", "main").splitlines()
    assert sorted(path for path in files if path.endswith("values-prod.yaml")) == [
        "helm/nexo-auth/values-prod.yaml",
        "helm/nexo-be/values-prod.yaml",
        "helm/nexo-fe/values-prod.yaml",
    ]
    assert len(files) == 12


def test_releases_verified_where_ci_checks_are_required_have_their_passing_results(gitops_path, settings):
    settings.PROMETHEUS_URL = settings.ARGOCD_URL = ""
    seed()
    verified = Promotion.objects.filter(state=PromotionState.VERIFIED, environment__name="qa")
    assert verified.count() > 0
    assert Environment.objects.get(name="qa").required_checks == ["e2e", "performance", "security"]
    for promotion in verified.select_related("release", "environment", "service"):
        # What a rollback to this release in qa would be judged on, besides its own soak.
        verdict = verification.verdict(promotion)
        assert verdict.passed, (promotion, verdict.summary)
        assert "e2e passed; performance passed; security passed" in verdict.summary
        assert all(
            result.reported_at <= promotion.finished_at
            for result in CheckResult.objects.filter(release=promotion.release, environment=promotion.environment)
        )


PIPELINE_STEPS = [
    AuditAction.PROMOTION_COMMIT_STARTED,
    AuditAction.PROMOTION_COMMITTED,
    AuditAction.PROMOTION_SYNCING,
    AuditAction.PROMOTION_DEPLOYED,
    AuditAction.PROMOTION_VERIFYING,
    AuditAction.PROMOTION_VERIFIED,
]


def test_the_history_is_in_the_audit_log_as_the_pipeline_would_have_written_it(gitops_path):
    seed()
    report = verify_chain()
    assert report.ok, report.reason
    # Incidents are recorded by Deployment.objects.record as the history is built, at that time;
    # everything else is written at the time it happened, in that order.
    events = list(AuditEvent.objects.exclude(action=AuditAction.INCIDENT_RECORDED).order_by("id"))
    assert [event.created_at for event in events] == sorted(event.created_at for event in events)
    assert sum(event.action == AuditAction.RELEASE_REGISTERED for event in events) == Release.objects.count()

    repo = git.Repo(gitops_path)
    for promotion in Promotion.objects.exclude(state=PromotionState.AWAITING_APPROVAL).prefetch_related("approvals"):
        actions = list(AuditEvent.objects.for_promotion(promotion).order_by("id").values_list("action", flat=True))
        approvals = [AuditAction.PROMOTION_APPROVED] * promotion.approvals.count()
        expected = [AuditAction.PROMOTION_REQUESTED, *approvals, *PIPELINE_STEPS]
        if promotion.state == PromotionState.ROLLED_BACK:
            expected.append(AuditAction.PROMOTION_ROLLED_BACK)
        assert actions == expected, promotion
        committed = AuditEvent.objects.for_promotion(promotion).get(action=AuditAction.PROMOTION_COMMITTED)
        assert committed.data["commit"] == promotion.gitops_commit_sha
        assert repo.commit(committed.data["commit"]).message.splitlines()[0].endswith(promotion.release.version)

    waiting = Promotion.objects.get(state=PromotionState.AWAITING_APPROVAL)
    assert list(AuditEvent.objects.for_promotion(waiting).values_list("action", "actor")) == [
        (AuditAction.PROMOTION_REQUESTED, "rita")
    ]


def test_the_audit_export_shows_the_seeded_ci_results_with_the_qa_verdicts(gitops_path):
    seed()
    verdicts = AuditEvent.objects.filter(action=AuditAction.PROMOTION_VERIFIED, environment="qa").order_by("id")
    records = list(step_records(verdicts))
    assert records
    for record in records:
        ci = {name: result for name, result in record["validation_results"].items() if not name.startswith("soak:")}
        assert ci == {"e2e": "passed", "performance": "passed", "security": "passed"}
    production = AuditEvent.objects.filter(action=AuditAction.PROMOTION_COMMITTED, environment="production")
    assert all(len(record["approvers"]) == 2 for record in step_records(production.order_by("id")))


def test_every_promotion_record_of_the_demo_log_fits_the_reference_schema(gitops_path):
    seed()
    schema = json.loads((Path(__file__).resolve().parent.parent / "docs" / "audit-record.schema.json").read_text())
    records = list(promotion_records(AuditEvent.objects.order_by("id")))
    assert records
    for record in records:
        jsonschema.validate(record, schema)


def test_soak_seconds_shortens_every_soak_also_of_environments_that_exist(gitops_path):
    seed()
    call_command("seed_demo", force=True, soak_seconds=30, stdout=StringIO())
    assert set(Environment.objects.values_list("verification_window", flat=True)) == {timedelta(seconds=30)}


def test_soak_seconds_leaves_every_environment_valid_sampling_several_times_a_soak(gitops_path):
    seed()
    call_command("seed_demo", force=True, soak_seconds=30, stdout=StringIO())
    for environment in Environment.objects.all():
        environment.full_clean()
        assert environment.sample_interval_seconds == 6


def test_soak_seconds_too_short_for_the_error_rate_query_is_refused_saying_how_long(gitops_path):
    from django.core.management.base import CommandError

    seed()
    with pytest.raises(CommandError) as refused:
        call_command("seed_demo", force=True, soak_seconds=20, stdout=StringIO())
    assert str(refused.value).startswith("--soak-seconds 20 does not fit develop: The query's {range} is at least 30s")
    assert "Lengthen the soak window to at least 30s." in str(refused.value)
    assert timedelta(seconds=20) not in Environment.objects.values_list("verification_window", flat=True)


def test_soak_seconds_as_long_as_a_promotion_target_is_refused_saying_so(gitops_path):
    """Every promotion would miss a target its soak fills: the demo's SLO page would show nothing else."""
    from django.core.management.base import CommandError

    seed()
    with pytest.raises(CommandError) as refused:
        call_command("seed_demo", force=True, soak_seconds=600, stdout=StringIO())
    assert str(refused.value).startswith(
        "--soak-seconds 600 does not fit develop: A target of 10 min is no longer than the soak window (10m)"
    )
    assert timedelta(seconds=600) not in Environment.objects.values_list("verification_window", flat=True)


def test_soak_seconds_zero_takes_a_single_round_of_samples(gitops_path):
    seed()
    call_command("seed_demo", force=True, soak_seconds=0, stdout=StringIO())
    assert set(Environment.objects.values_list("verification_window", flat=True)) == {timedelta(0)}


@pytest.mark.parametrize("seconds", [366 * 86400 + 1, 10**15])
def test_soak_seconds_beyond_what_an_environment_takes_is_refused_saying_so(gitops_path, seconds):
    from django.core.management.base import CommandError

    seed()
    with pytest.raises(CommandError, match="--soak-seconds must be from 0 to 31622400"):
        call_command("seed_demo", force=True, soak_seconds=seconds, stdout=StringIO())
    windows = Environment.objects.values_list("verification_window", flat=True)
    assert all(window.total_seconds() < seconds for window in windows)
