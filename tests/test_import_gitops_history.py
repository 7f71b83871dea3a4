"""manage.py import_gitops_history on a real bare Git repository with a crafted history."""

from datetime import UTC, date, datetime
from io import StringIO
from pathlib import Path

import git
import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, transaction

from audit.models import AuditAction, AuditEvent
from releases.dora import metrics as dora
from releases.gitops import values as values_file
from releases.management.commands.import_gitops_history import is_rollback_message
from releases.models import Deployment, DeploymentSource, Incident, IncidentSource, Release
from tests.factories import make_release, make_service

pytestmark = pytest.mark.django_db

UTC = UTC
DIGEST = "sha256:" + "ab" * 32
VALUES = """\
# Helm values for nexo-be.
replicaCount: 2   # the PodDisruptionBudget needs two

image:
  repository: ghcr.io/nexo-org/nexo-be
  tag: ""
  pullPolicy: IfNotPresent
"""
DEVELOP = "helm/nexo-be/values-develop.yaml"
PRODUCTION = "helm/nexo-be/values-prod.yaml"


def at(day, hour):
    return datetime(2026, 1, day, hour, 0, tzinfo=UTC)


class GitOpsRepository:
    """A bare repository on disk and a working copy that writes its history commit by commit."""

    def __init__(self, root):
        self.bare = root / "gitops.git"
        git.Repo.init(self.bare, bare=True, initial_branch="main")
        self.work = git.Repo.init(root / "work", initial_branch="main")
        self.author = git.Actor("Platform Team", "platform@nexo.invalid")
        self.commits = {}

    def _write(self, path, text):
        file = Path(self.work.working_tree_dir) / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text)
        self.work.index.add([str(file)])

    def commit(self, name, message, when, tags=None, texts=None):
        for path, text in (texts or {}).items():
            self._write(path, text)
        for path, tag in (tags or {}).items():
            current = (Path(self.work.working_tree_dir) / path).read_text()
            self._write(path, values_file.set_value(current, "image.tag", tag, path))
        stamp = when.strftime("%Y-%m-%dT%H:%M:%S%z")
        sha = self.work.index.commit(
            message, author=self.author, committer=self.author, author_date=stamp, commit_date=stamp
        ).hexsha
        self.commits[name] = sha
        return sha

    def push(self):
        self.work.git.push(str(self.bare), "HEAD:refs/heads/main")


@pytest.fixture
def service(environments):
    return make_service("nexo-be")


@pytest.fixture
def repository(tmp_path, service, environments):
    """The crafted history; comments give what each commit must become."""
    repo = GitOpsRepository(tmp_path)
    repo.commit("initial", "chore: initial Helm values", at(5, 9), texts={DEVELOP: VALUES, PRODUCTION: VALUES})
    repo.commit(
        "develop-1",
        f"auto-promote(nexo-be): develop → 2026.01.1\n\nRelease-Digest: {DIGEST}\n",
        at(5, 10),
        tags={DEVELOP: "2026.01.1"},
    )
    repo.commit(
        "prod-1",
        f"promote(nexo-be): production → 2026.01.1\n\nPromotion-Id: 999\nRelease-Digest: {DIGEST}\n",
        at(6, 10),
        tags={PRODUCTION: "2026.01.1"},
    )
    repo.commit(
        "replicas",
        "chore: three replicas in production",
        at(7, 10),
        texts={
            PRODUCTION: (Path(repo.work.working_tree_dir) / PRODUCTION)
            .read_text()
            .replace("replicaCount: 2", "replicaCount: 3")
        },
    )
    repo.commit("prod-2", "promote(nexo-be): production → 2026.01.2", at(8, 10), tags={PRODUCTION: "2026.01.2"})
    repo.commit(
        "rollback-message", "rollback(nexo-be): production → 2026.01.1", at(8, 11), tags={PRODUCTION: "2026.01.1"}
    )
    repo.commit("prod-3", "promote(nexo-be): production → 2026.01.3", at(9, 10), tags={PRODUCTION: "2026.01.3"})
    repo.commit("backwards", "chore: pin nexo-be to 2026.01.2 in production", at(9, 12), tags={PRODUCTION: "2026.01.2"})
    repo.commit(
        "hotfix",
        "promote(nexo-be): production → 2026.01.4-hotfix-auth",
        at(12, 10),
        tags={PRODUCTION: "2026.01.4-hotfix-auth"},
    )
    repo.commit("not-calver", "chore: try the latest image in develop", at(13, 10), tags={DEVELOP: "latest"})
    repo.commit(
        "revert",
        'Revert "promote(nexo-be): production → 2026.01.4-hotfix-auth"\n\nThis reverts commit abc.\n',
        at(14, 10),
        tags={PRODUCTION: "2026.01.2"},
    )
    repo.commit(
        "portal",
        "promote(nexo-be): production → 2026.01.5\n\nPromotion-Id: 7\n",
        at(15, 10),
        tags={PRODUCTION: "2026.01.5"},
    )
    repo.push()
    # The last one was made by the portal: its release is registered and its deployment recorded.
    registered = make_release(service, "2026.01.5", committed_at=at(15, 7))
    Deployment.objects.record(
        release=registered,
        environment=environments["production"],
        deployed_at=at(15, 10),
        gitops_commit_sha=repo.commits["portal"],
    )
    return repo


def run(repo, *arguments):
    out, err = StringIO(), StringIO()
    call_command(
        "import_gitops_history", "--repo", str(repo.bare), "--branch", "main", *arguments, stdout=out, stderr=err
    )
    return out.getvalue(), err.getvalue()


def timeline(environment):
    return [
        (deployment.release.version, deployment.deployed_at, deployment.is_change, deployment.is_rollback)
        for deployment in Deployment.objects.filter(environment__name=environment)
        .select_related("release")
        .order_by("deployed_at")
    ]


def test_import_creates_the_deployments_the_history_shows(repository):
    out, err = run(repository)

    assert timeline("production") == [
        ("2026.01.1", at(6, 10), True, False),
        ("2026.01.2", at(8, 10), True, False),
        ("2026.01.1", at(8, 11), False, True),  # rollback by commit message
        ("2026.01.3", at(9, 10), True, False),
        ("2026.01.2", at(9, 12), False, True),  # rollback: the version went backwards
        ("2026.01.4-hotfix-auth", at(12, 10), True, False),
        ("2026.01.2", at(14, 10), False, True),  # git revert
        ("2026.01.5", at(15, 10), True, False),  # recorded by the portal, left alone
    ]
    assert timeline("develop") == [("2026.01.1", at(5, 10), True, False)]
    assert "Imported 8 deployment(s) (3 rollback(s))" in out
    assert "1 already recorded" in out
    assert f"{DEVELOP} at {repository.commits['not-calver'][:10]}: tag 'latest' is not a CalVer version" in err


def test_imported_deployments_are_marked_and_chained(repository):
    run(repository)

    imported = Deployment.objects.filter(source=DeploymentSource.IMPORT)
    production = Deployment.objects.filter(environment__name="production").order_by("deployed_at")
    assert imported.count() == 8
    assert set(imported.values_list("gitops_commit_sha", flat=True)) >= {
        repository.commits["prod-1"],
        repository.commits["revert"],
    }
    assert [d.replaced_at for d in production] == [d.deployed_at for d in production[1:]] + [None]
    assert AuditEvent.objects.filter(action=AuditAction.DEPLOYMENT_IMPORTED).count() == 8


def test_imported_releases_know_only_what_git_shows(repository, service):
    run(repository)

    first = Release.objects.get(service=service, version="2026.01.1")
    second = Release.objects.get(service=service, version="2026.01.2")
    hotfix = Release.objects.get(service=service, version="2026.01.4-hotfix-auth")
    assert (first.is_imported, first.commit_sha, first.committed_at, first.image_digest) == (True, "", None, DIGEST)
    assert second.image_digest == ""
    assert hotfix.is_hotfix
    assert hotfix.fixes == second
    assert Release.objects.get(service=service, version="2026.01.5").is_imported is False


def test_imported_history_gives_dora_figures(repository, environments):
    run(repository)

    figures = dora.report(environment=environments["production"], start=date(2026, 1, 1), end=date(2026, 1, 31)).overall

    # Changes .1 .2 .3 hotfix .5; rollbacks 3; failed .2 (rolled back, and the hotfix's target), .3, the hotfix.
    assert (figures.change_deployments, figures.rollbacks, figures.failed_deployments) == (5, 3, 3)
    assert figures.hotfix_deployments == 1
    assert figures.rework_rate == pytest.approx(4 / 8)
    # .2 recovered by its rollback after 1 h (before the hotfix), .3 after 2 h, the hotfix after 48 h.
    assert figures.recovery_median == pytest.approx(2 * 3600)
    assert figures.without_commit_time == 4
    assert figures.lead_time_samples == 1
    assert Incident.objects.filter(source=IncidentSource.ROLLBACK).count() == 3
    assert Incident.objects.filter(source=IncidentSource.HOTFIX).count() == 1


def test_import_is_idempotent(repository):
    run(repository)
    before = (Deployment.objects.count(), Release.objects.count(), Incident.objects.count(), AuditEvent.objects.count())

    out, _ = run(repository)

    assert (
        Deployment.objects.count(),
        Release.objects.count(),
        Incident.objects.count(),
        AuditEvent.objects.count(),
    ) == before
    assert "Imported 0 deployment(s)" in out
    assert "9 already recorded" in out


def test_dry_run_writes_nothing(repository):
    deployments = Deployment.objects.count()

    out, _ = run(repository, "--dry-run")

    assert "Would import 8 deployment(s)" in out
    assert Deployment.objects.count() == deployments
    assert not Release.objects.filter(is_imported=True).exists()


def test_import_can_be_limited_to_one_environment(repository):
    run(repository, "--environment", "develop")

    assert timeline("develop") == [("2026.01.1", at(5, 10), True, False)]
    assert Deployment.objects.filter(environment__name="production").count() == 1


def test_values_file_naming_a_ci_tag_uses_the_registered_release(tmp_path, service, environments):
    registered = make_release(service, "2026.02.1", committed_at=datetime(2026, 2, 1, 8, tzinfo=UTC))
    repo = GitOpsRepository(tmp_path)
    repo.commit("initial", "chore: values", datetime(2026, 2, 1, 9, tzinfo=UTC), texts={PRODUCTION: VALUES})
    repo.commit(
        "ci-tag",
        "promote(nexo-be): production → 2026.02.1",
        datetime(2026, 2, 1, 10, tzinfo=UTC),
        tags={PRODUCTION: f"2026.02.1-{registered.short_sha}"},
    )
    repo.push()

    run(repo)

    assert Deployment.objects.get().release == registered
    assert Release.objects.count() == 1


@pytest.mark.parametrize(
    ("message", "parents", "expected"),
    [
        ("rollback(nexo-be): production → 2026.01.45", 1, True),
        ('Revert "promote(nexo-be): production → 2026.02.1"', 1, True),
        ("Rollback: checkout errors", 1, True),
        ("promote(nexo-be): production → 2026.02.1\n\n## Rollback Plan\n1. Revert this PR", 1, False),
        ("Merge pull request #123 from nexo-org/rollback-be\n\nrollback(nexo-be): production → 2026.01.45", 2, True),
        ("Merge pull request #124 from nexo-org/promote-be\n\npromote(nexo-be): production → 2026.02.1", 2, False),
    ],
)
def test_rollback_recognised_by_commit_message(message, parents, expected):
    class Commit:
        pass

    commit = Commit()
    commit.message, commit.parents = message, [object()] * parents

    assert is_rollback_message(commit) is expected


def test_unknown_service_or_unreachable_repository_is_explained(repository, tmp_path):
    with pytest.raises(CommandError, match="There is no service called ghost"):
        run(repository, "--service", "ghost")
    with pytest.raises(CommandError, match="Could not clone branch main of"):
        call_command("import_gitops_history", "--repo", str(tmp_path / "missing.git"), stdout=StringIO())


def test_history_the_portal_wrote_is_already_recorded(tmp_path, settings):
    settings.GITOPS_REPO_URL = str(tmp_path / "gitops.git")
    call_command("seed_demo", force=True, stdout=StringIO())
    deployments = Deployment.objects.count()

    out = StringIO()
    call_command("import_gitops_history", stdout=out, stderr=StringIO())
    out = out.getvalue()

    assert Deployment.objects.count() == deployments
    assert "Imported 0 deployment(s)" in out
    assert f"{deployments} already recorded" in out


def test_only_imported_releases_may_leave_commit_and_digest_blank(service):
    for fields in ({"commit_sha": ""}, {"image_digest": ""}):
        with pytest.raises(DatabaseError), transaction.atomic():
            make_release(service, "2026.03.1", **fields)

    imported = Release.objects.create(
        service=service, version="2026.03.1", commit_sha="", image_digest="", is_imported=True
    )
    assert imported.tags() == ["2026.03.1"]


# --- one rule with live recording: late hotfixes and promotions out of CalVer order ---------------------

JUNE = [
    # (name, message, tag, what it must become: (is_change, is_rollback))
    ("p6", "promote(nexo-be): production → 2026.06.6", "2026.06.6", (True, False)),
    ("p8", "promote(nexo-be): production → 2026.06.8", "2026.06.8", (True, False)),
    # A hotfix of 2026.06.8 built on the hotfix branch, numbered below it: a change that fixes .8.
    ("late-hotfix", "promote(nexo-be): production → 2026.06.7-hotfix", "2026.06.7-hotfix", (True, False)),
    ("p9", "promote(nexo-be): production → 2026.06.9", "2026.06.9", (True, False)),
    # 2026.06.5 never ran here: promoted out of order, a change, not a rollback blaming .9.
    ("p5", "promote(nexo-be): production → 2026.06.5", "2026.06.5", (True, False)),
    ("p10", "promote(nexo-be): production → 2026.06.10", "2026.06.10", (True, False)),
    # 2026.06.9 was live here and is older than .10: a rollback of .10.
    ("back", "chore: pin nexo-be to 2026.06.9", "2026.06.9", (False, True)),
    # .10 again, forwards, after it was rolled back: a change again.
    ("forward", "promote(nexo-be): production → 2026.06.10", "2026.06.10", (True, False)),
]


def june(day, hour=10):
    return datetime(2026, 6, day, hour, 0, tzinfo=UTC)


@pytest.fixture
def june_history(tmp_path, service):
    repo = GitOpsRepository(tmp_path)
    repo.commit("initial", "chore: initial Helm values", june(1, 9), texts={PRODUCTION: VALUES})
    for day, (name, message, tag, _) in enumerate(JUNE, start=2):
        repo.commit(name, message, june(day), tags={PRODUCTION: tag})
    repo.push()
    return repo


def test_late_hotfixes_and_out_of_order_promotions_are_changes_not_rollbacks(june_history, service, environments):
    out, _ = run(june_history, "--environment", "production")

    assert [(d.release.version, d.is_change, d.is_rollback) for d in Deployment.objects.order_by("deployed_at")] == [
        (tag, *expected) for _, _, tag, expected in JUNE
    ]
    assert "Imported 8 deployment(s) (1 rollback(s))" in out
    blamed = {
        (incident.source, incident.caused_by.release.version, incident.fixed_by.release.version)
        for incident in Incident.objects.select_related("caused_by__release", "fixed_by__release")
    }
    assert blamed == {
        (IncidentSource.HOTFIX, "2026.06.8", "2026.06.7-hotfix"),
        (IncidentSource.ROLLBACK, "2026.06.10", "2026.06.9"),
    }


def test_live_recording_classifies_the_same_history_the_same_way(service, environments):
    """The portal records the same sequence (the late hotfix registered as a hotfix of .8): same verdicts."""
    production = environments["production"]
    for day, (_, _, tag, _) in enumerate(JUNE, start=2):
        release = Release.objects.filter(service=service, version=tag).first()
        if release is None:
            fields = {"is_hotfix": True, "fixes": Release.objects.get(version="2026.06.8")} if "hotfix" in tag else {}
            release = make_release(service, tag, **fields)
        Deployment.objects.record(release=release, environment=production, deployed_at=june(day))

    assert [(d.is_change, d.is_rollback) for d in Deployment.objects.order_by("deployed_at")] == [
        expected for *_, expected in JUNE
    ]
    assert Incident.objects.get(source=IncidentSource.HOTFIX).caused_by.release.version == "2026.06.8"
