"""The pipeline end to end: real PostgreSQL, real Redis, a real RQ worker and real bare Git repositories."""

import os
import shutil
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from audit import log as audit
from audit.models import AuditAction, AuditEvent
from environments.models import ChangeFreeze
from releases import jobs, policy, transitions
from releases.gitops import values
from releases.gitops.repo import GitOpsError, GitOpsRepository, GitOpsUnavailable
from releases.models import (
    CheckResult,
    Deployment,
    Hold,
    Promotion,
    PromotionKind,
    PromotionState,
    RunStatus,
    Service,
    Step,
    StepRun,
    StepStatus,
)
from releases.policy import PromotionError
from releases.reconciler import reconcile
from tests.factories import hex_for, make_release, make_user
from tests.history import ran


@pytest.fixture
def people(transactional_db, rita, paulo, sam, lead):
    return {"rita": rita, "paulo": paulo, "sam": sam, "lead": lead}


def trailers(commit):
    return dict(line.split(": ", 1) for line in commit.message.strip().split("\n\n")[-1].splitlines() if ": " in line)


def state_of(promotion):
    promotion.refresh_from_db()
    return promotion.state


def develop_only(pipeline):
    """nexo-be in the GitOps repository, with qa not promoting itself: a develop promotion ends there."""
    pipeline.environments["qa"].auto_promote = False
    pipeline.environments["qa"].save()
    return pipeline.add_service("nexo-be")


def test_full_path_from_develop_to_production_with_auto_promotion_to_qa(pipeline, people):
    service = pipeline.add_service("nexo-be")
    release = make_release(service, "2026.02.1", changelog="- feat: rate limiting")
    env = pipeline.environments

    develop = transitions.request_promotion(release, env["develop"], None, kind=PromotionKind.AUTO)
    pipeline.run_jobs()
    assert state_of(develop) == PromotionState.VERIFIED
    qa = Promotion.objects.get(environment=env["qa"])
    assert (qa.kind, qa.state) == (PromotionKind.AUTO, PromotionState.VERIFIED)

    staging = transitions.request_promotion(release, env["staging"], people["rita"])
    transitions.approve(staging, people["paulo"], "load test passed")
    pipeline.run_jobs()
    assert state_of(staging) == PromotionState.VERIFIED

    production = transitions.request_promotion(release, env["production"], people["rita"])
    transitions.approve(production, people["sam"])
    pipeline.run_jobs()
    assert state_of(production) == PromotionState.AWAITING_APPROVAL  # one approval of two
    transitions.approve(production, people["lead"])
    pipeline.run_jobs()
    production.refresh_from_db()
    assert production.state == PromotionState.VERIFIED
    assert production.sync_status == StepStatus.NOT_CONFIGURED
    assert production.verification_status == StepStatus.NOT_CONFIGURED
    for step in (
        "approved_at",
        "commit_started_at",
        "committed_at",
        "sync_started_at",
        "deployed_at",
        "verification_started_at",
        "finished_at",
    ):
        assert getattr(production, step) is not None, step

    for environment in env.values():
        text = pipeline.gitops.read(service.values_path(environment))
        assert 'tag: "2026.02.1"' in text
        assert Deployment.objects.current().get(service=service, environment=environment).release == release

    commit = pipeline.gitops.commits("helm/nexo-be/values-prod.yaml")[0]
    assert commit.hexsha == production.gitops_commit_sha
    assert commit.summary == "promote(nexo-be): production → 2026.02.1"
    assert "Requested by rita." in commit.message
    assert "Approved by sam, lead." in commit.message
    # The audit chain's head as the commit was written: the event just before "commit started".
    started = AuditEvent.objects.get(promotion_id=production.pk, action=AuditAction.PROMOTION_COMMIT_STARTED)
    head = AuditEvent.objects.get(hash=started.previous_hash)
    assert trailers(commit) == {
        "Promotion-Id": str(production.pk),
        "Release-Digest": release.image_digest,
        "Audit-Head": f"{head.pk}:{head.hash} mac={audit.head_mac(head.pk, head.hash)}",
    }
    assert pipeline.gitops.commits("helm/nexo-be/values-qa.yaml")[0].summary == "auto-promote(nexo-be): qa → 2026.02.1"
    assert len(pipeline.gitops.commits()) == 2 + 4  # the repository's start, the values files, four promotions
    assert audit.verify_chain().ok


def test_the_commit_changes_only_the_tag_line_of_a_commented_values_file(pipeline):
    service = pipeline.add_service("nexo-be", tag="2026.01.9")
    before = pipeline.gitops.read("helm/nexo-be/values-develop.yaml")
    transitions.request_promotion(make_release(service, "2026.02.1"), pipeline.environments["develop"], None)
    pipeline.run_jobs()
    after = pipeline.gitops.read("helm/nexo-be/values-develop.yaml")
    assert after == before.replace('tag: "2026.01.9"', 'tag: "2026.02.1"')
    assert after != before


def test_a_push_rejected_because_someone_else_pushed_is_fetched_reapplied_and_retried(pipeline, monkeypatch):
    service = develop_only(pipeline)
    original_push = GitOpsRepository.push
    calls = []

    def someone_pushes_first(repository):
        calls.append(1)
        if len(calls) == 1:
            pipeline.gitops.write("helm/nexo-be/NOTES.md", "someone else was faster\n")
        return original_push(repository)

    monkeypatch.setattr(GitOpsRepository, "push", someone_pushes_first)
    promotion = transitions.request_promotion(
        make_release(service, "2026.02.1"), pipeline.environments["develop"], None
    )
    pipeline.run_jobs()
    promotion.refresh_from_db()
    assert len(calls) == 2
    assert promotion.state == PromotionState.VERIFIED
    history = pipeline.gitops.commits()
    assert history[0].hexsha == promotion.gitops_commit_sha
    assert history[1].summary == "chore: edit values by hand"  # the other push is kept, ours is on top
    assert pipeline.gitops.read("helm/nexo-be/NOTES.md") == "someone else was faster\n"


def test_a_retried_commit_job_finds_its_own_commit_and_never_commits_twice(pipeline):
    service = pipeline.add_service("nexo-be")
    release = make_release(service, "2026.02.1")
    promotion = transitions.start_commit(transitions.request_promotion(release, pipeline.environments["develop"], None))
    pipeline.redis.flushdb()  # the first job's record is gone, as if the worker died after pushing
    from releases.gitops import message, values

    repository = GitOpsRepository()
    with repository.locked():
        pushed = repository.commit_and_push(
            "helm/nexo-be/values-develop.yaml",
            lambda text: values.set_value(text, "image.tag", "2026.02.1"),
            message.promotion_message(promotion, []),
            trailer=("Promotion-Id", promotion.pk),
        )
    commits_before = len(pipeline.gitops.commits())

    from releases.jobs import commit_promotion

    commit_promotion(promotion.pk)
    commit_promotion(promotion.pk)
    promotion.refresh_from_db()
    assert promotion.gitops_commit_sha == pushed
    assert len(pipeline.gitops.commits()) == commits_before
    assert [trailers(c).get("Promotion-Id") for c in pipeline.gitops.commits()].count(str(promotion.pk)) == 1


def test_a_commit_found_by_its_trailer_is_recorded_with_the_message_and_time_it_was_pushed_with(pipeline, monkeypatch):
    service = develop_only(pipeline)
    record = transitions.mark_committed
    killed = []

    def killed_after_the_push(promotion, *args, **kwargs):
        if not killed:
            killed.append(promotion.pk)
            raise RuntimeError("SIGKILL between the push and recording it")
        return record(promotion, *args, **kwargs)

    monkeypatch.setattr(transitions, "mark_committed", killed_after_the_push)
    promotion = transitions.request_promotion(
        make_release(service, "2026.02.1"), pipeline.environments["develop"], None
    )
    pipeline.run_jobs()
    promotion.refresh_from_db()
    assert killed == [promotion.pk]
    assert promotion.state == PromotionState.VERIFIED, promotion.error
    [pushed] = [c for c in pipeline.gitops.commits() if trailers(c).get("Promotion-Id") == str(promotion.pk)]
    assert promotion.gitops_commit_sha == pushed.hexsha
    # What the promotion page shows (the Audit-Head trailer that vouches for the log included) is the commit.
    assert promotion.gitops_commit_message == pushed.message
    # When it was pushed, not when the retry found it: the commit's stage leaves out the crash.
    assert promotion.committed_at == pushed.committed_datetime


def test_an_unreachable_remote_is_retried_then_fails_the_promotion_with_the_reason_and_writes_nothing(
    pipeline, settings, tmp_path
):
    settings.PIPELINE_RETRY_SECONDS = 0  # no time to wait it out
    service = pipeline.add_service("nexo-be")
    settings.GITOPS_REPO_URL = str(tmp_path / "no-such-repository.git")
    promotion = transitions.request_promotion(
        make_release(service, "2026.02.1"), pipeline.environments["develop"], None
    )
    pipeline.run_jobs()
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.FAILED
    assert promotion.failed_step == "commit"
    assert promotion.error.startswith("Still failing after 0 min of retries: Cannot reach the GitOps repository")
    assert "no-such-repository.git" in promotion.error
    assert promotion.gitops_commit_sha == ""
    assert not Deployment.objects.exists()
    assert AuditEvent.objects.filter(action=AuditAction.PROMOTION_FAILED, promotion_id=promotion.pk).exists()


def test_a_gitops_repository_gone_past_the_retry_budget_fails_its_promotion_saying_nothing_was_written(
    pipeline, settings, client, rita
):
    """The worker's working copy knows the branch, so the first attempt commits and pushes without a
    fetch: the promotion is committing when the push finds the repository gone."""
    service = develop_only(pipeline)
    first = transitions.request_promotion(make_release(service, "2026.02.1"), pipeline.environments["develop"], None)
    pipeline.run_jobs()
    assert state_of(first) == PromotionState.VERIFIED
    head = pipeline.gitops.head()
    settings.PIPELINE_RETRY_SECONDS = 0  # no time to wait it out
    with pipeline.gitops.away():
        promotion = transitions.request_promotion(
            make_release(service, "2026.02.2"), pipeline.environments["develop"], None
        )
        pipeline.run_jobs()
    promotion.refresh_from_db()
    assert (promotion.state, promotion.failed_step) == (PromotionState.FAILED, "commit")
    assert promotion.commit_started_at is not None, "it was committing when the push failed"
    assert "does not appear to be a git repository" in promotion.error
    assert pipeline.gitops.head() == head
    client.force_login(rita)
    page = client.get(promotion.get_absolute_url()).content.decode()
    assert (
        "Nothing was written to the GitOps repository: no commit of this promotion is on main, the branch "
        "Argo CD follows, and Argo CD was not asked to sync."
    ) in page


def test_a_promotion_whose_push_was_cut_off_does_not_claim_nothing_was_written(
    pipeline, settings, client, rita, monkeypatch
):
    service = develop_only(pipeline)
    first = transitions.request_promotion(make_release(service, "2026.02.1"), pipeline.environments["develop"], None)
    pipeline.run_jobs()
    assert state_of(first) == PromotionState.VERIFIED
    settings.PIPELINE_RETRY_SECONDS = 0

    def cut_off(repository):
        raise GitOpsUnavailable(f"Cannot reach the GitOps repository {repository}: the remote end hung up unexpectedly")

    monkeypatch.setattr(GitOpsRepository, "push", cut_off)
    with pipeline.gitops.away():  # and nothing can be read afterwards to tell
        promotion = transitions.request_promotion(
            make_release(service, "2026.02.2"), pipeline.environments["develop"], None
        )
        pipeline.run_jobs()
    promotion.refresh_from_db()
    assert (promotion.state, promotion.failed_step, promotion.push_may_have_landed) == (
        PromotionState.FAILED,
        "commit",
        True,
    )
    client.force_login(rita)
    page = client.get(promotion.get_absolute_url()).content.decode()
    assert "Nothing was written" not in page
    assert "Whether its commit reached the GitOps repository is not known" in page


def freeze(environment, hours=1, reason="Year-end freeze"):
    now = timezone.now()
    return ChangeFreeze.objects.create(
        environment=environment,
        starts_at=now - timedelta(minutes=1),
        ends_at=now + timedelta(hours=hours),
        reason=reason,
    )


def waiting_commit(promotion):
    """The promotion's open commit run, if it is scheduled for later."""
    return StepRun.objects.filter(
        promotion=promotion, step=Step.COMMIT, status=RunStatus.QUEUED, run_after__gt=timezone.now()
    ).first()


def test_a_freeze_that_began_after_the_approval_holds_the_commit_until_it_is_lifted(pipeline, people):
    service = develop_only(pipeline)
    head = pipeline.gitops.head()
    # Approved (develop needs no approval) while the worker is down; the freeze begins before it is back.
    promotion = transitions.request_promotion(
        make_release(service, "2026.02.1"), pipeline.environments["develop"], people["rita"]
    )
    assert state_of(promotion) == PromotionState.APPROVED
    frozen = freeze(pipeline.environments["develop"])

    pipeline.run_jobs(until=lambda: waiting_commit(promotion) is not None)
    assert state_of(promotion) == PromotionState.APPROVED
    assert pipeline.gitops.head() == head  # nothing entered the frozen environment
    assert waiting_commit(promotion).run_after == frozen.ends_at
    [held] = AuditEvent.objects.filter(action=AuditAction.PROMOTION_COMMIT_HELD, promotion_id=promotion.pk)
    assert held.message.endswith(f"{timezone.localtime(frozen.ends_at):%Y-%m-%d %H:%M %Z}: Year-end freeze")
    assert held.data == {"ends_at": frozen.ends_at.isoformat(), "reason": "Year-end freeze"}

    frozen.ends_at = timezone.now() + timedelta(hours=3)  # extended: it waits for the new end
    frozen.save()
    pipeline.run_jobs(until=lambda: (run := waiting_commit(promotion)) is not None and run.run_after == frozen.ends_at)
    assert state_of(promotion) == PromotionState.APPROVED
    assert pipeline.gitops.head() == head

    frozen.delete()  # lifted early: the commit goes now, not three hours from now
    pipeline.run_jobs(until=lambda: state_of(promotion) == PromotionState.VERIFIED)
    promotion.refresh_from_db()
    assert pipeline.gitops.head() == promotion.gitops_commit_sha != head


def test_a_freeze_moved_to_another_environment_lets_the_commit_it_held_go(pipeline, people):
    """Moved in the admin (the wrong environment picked): the commit it held goes now, not at its end."""
    service = develop_only(pipeline)
    promotion = transitions.request_promotion(
        make_release(service, "2026.02.1"), pipeline.environments["develop"], people["rita"]
    )
    frozen = freeze(pipeline.environments["develop"])
    pipeline.run_jobs(until=lambda: waiting_commit(promotion) is not None)

    frozen.environment = pipeline.environments["production"]
    frozen.save()
    pipeline.run_jobs(until=lambda: state_of(promotion) == PromotionState.VERIFIED)
    promotion.refresh_from_db()
    assert pipeline.gitops.head() == promotion.gitops_commit_sha


def test_a_break_glass_promotion_approved_during_a_freeze_is_committed(pipeline, people):
    service = pipeline.add_service("nexo-be")
    release = make_release(service, "2026.02.1")
    for name in ("develop", "qa", "staging"):
        ran(release, pipeline.environments[name])
    production = pipeline.environments["production"]
    freeze(production, reason="Black Friday")
    promotion = transitions.request_promotion(
        release, production, people["rita"], is_emergency=True, reason="payments are down"
    )
    transitions.approve(promotion, people["sam"])
    transitions.approve(promotion, people["lead"])
    pipeline.run_jobs(until=lambda: state_of(promotion) == PromotionState.VERIFIED)
    assert pipeline.gitops.head() == Promotion.objects.get(pk=promotion.pk).gitops_commit_sha


def test_a_commit_whose_push_failed_before_a_freeze_began_is_held_until_it_ends(pipeline, people):
    service = develop_only(pipeline)
    with GitOpsRepository().locked() as repository:
        repository.sync()  # a worker's working copy from its earlier commits: the first try does not fetch
    head = pipeline.gitops.head()
    promotion = transitions.request_promotion(
        make_release(service, "2026.02.1"), pipeline.environments["develop"], people["rita"]
    )
    with pipeline.gitops.away():  # the Git outage: the commit is written here, its push fails
        pipeline.run_jobs(until=lambda: StepRun.objects.filter(promotion=promotion, status=RunStatus.RETRY).exists())
    assert state_of(promotion) == PromotionState.COMMITTING
    frozen = freeze(pipeline.environments["develop"])

    pipeline.run_jobs(
        until=lambda: (
            ((run := waiting_commit(promotion)) is not None and run.run_after == frozen.ends_at)
            or state_of(promotion) not in (PromotionState.APPROVED, PromotionState.COMMITTING)
        )
    )
    assert pipeline.gitops.head() == head  # nothing entered the frozen environment
    assert waiting_commit(promotion).run_after == frozen.ends_at

    frozen.delete()
    pipeline.run_jobs(until=lambda: state_of(promotion) == PromotionState.VERIFIED)
    promotion.refresh_from_db()
    assert pipeline.gitops.head() == promotion.gitops_commit_sha != head
    assert [trailers(c).get("Promotion-Id") for c in pipeline.gitops.commits()].count(str(promotion.pk)) == 1


def held_committing(pipeline, people, service, version="2026.02.3"):
    """`service` runs 2026.02.2 in develop (2026.02.1 before it); `version`'s push failed in a Git
    outage, then a freeze began: its retry is held, committing, until the freeze ends. Returns (the
    promotion, the freeze)."""
    develop = pipeline.environments["develop"]
    for earlier in ("2026.02.1", "2026.02.2"):
        running = transitions.request_promotion(make_release(service, earlier), develop, people["rita"])
        pipeline.run_jobs(until=lambda: state_of(running) == PromotionState.VERIFIED)  # noqa: B023
    with GitOpsRepository().locked() as repository:
        repository.sync()  # a worker's working copy from its earlier commits: the first try does not fetch
    promotion = transitions.request_promotion(make_release(service, version), develop, people["rita"])
    with pipeline.gitops.away():
        pipeline.run_jobs(until=lambda: StepRun.objects.filter(promotion=promotion, status=RunStatus.RETRY).exists())
    frozen = freeze(develop, hours=72)
    pipeline.run_jobs(until=lambda: (run := waiting_commit(promotion)) is not None and run.run_after == frozen.ends_at)
    assert state_of(promotion) == PromotionState.COMMITTING
    return promotion, frozen


def test_a_commit_held_by_a_freeze_after_its_push_failed_may_be_cancelled_to_roll_back(pipeline, people):
    """A Git outage, then a three-day freeze: the held commit would keep everything else out, a
    rollback included. An approver cancels it (nothing of it is on the branch), then rolls back."""
    service = develop_only(pipeline)
    develop = pipeline.environments["develop"]
    promotion, _ = held_committing(pipeline, people, service)
    head = pipeline.gitops.head()
    with pytest.raises(PromotionError, match=r"waits for the change freeze until .*: cancel it first"):
        transitions.request_rollback(service, develop, people["rita"])
    assert policy.offered_decisions(promotion, people["rita"]) == [("cancel", None)]

    held = waiting_commit(promotion)
    transitions.cancel(Promotion.objects.get(pk=promotion.pk), people["rita"], "the freeze outlasts it")
    assert state_of(promotion) == PromotionState.CANCELLED
    assert not StepRun.objects.filter(promotion=promotion, status__in=RunStatus.open()).exists()

    rollback = transitions.request_rollback(service, develop, people["rita"])  # rollbacks pass freezes
    for approver in ("sam", "lead"):
        if state_of(rollback) == PromotionState.AWAITING_APPROVAL:
            transitions.approve(rollback, people[approver])
    pipeline.run_jobs(until=lambda: state_of(rollback) == PromotionState.VERIFIED)
    jobs.run_step(held.pk)  # RQ hands the withdrawn retry over at the freeze's end: it does nothing
    assert state_of(promotion) == PromotionState.CANCELLED
    assert [trailers(c).get("Promotion-Id") for c in pipeline.gitops.commits()].count(str(promotion.pk)) == 0
    assert pipeline.gitops.head() != head


def test_a_held_commit_whose_retry_a_worker_runs_now_is_not_cancelled(pipeline, people):
    service = develop_only(pipeline)
    promotion, _ = held_committing(pipeline, people, service)
    StepRun.objects.filter(promotion=promotion, status=RunStatus.QUEUED).update(status=RunStatus.RUNNING)  # claimed

    with pytest.raises(PromotionError, match="its GitOps commit is being pushed right now; roll back once"):
        transitions.cancel(Promotion.objects.get(pk=promotion.pk), people["rita"])
    assert state_of(promotion) == PromotionState.COMMITTING
    assert StepRun.objects.get(promotion=promotion, status=RunStatus.RUNNING)


def test_the_promotion_is_saved_as_committing_before_its_commit_is_pushed(pipeline, monkeypatch):
    service = develop_only(pipeline)
    original_push = GitOpsRepository.push
    at_push = []

    def push(repository):
        at_push.append(Promotion.objects.values_list("state", "commit_started_at").get(pk=promotion.pk))
        return original_push(repository)

    monkeypatch.setattr(GitOpsRepository, "push", push)
    promotion = transitions.request_promotion(
        make_release(service, "2026.02.1"), pipeline.environments["develop"], None
    )
    pipeline.run_jobs()
    [(state, commit_started_at)] = at_push
    assert state == PromotionState.COMMITTING
    assert commit_started_at is not None


def test_a_promotion_cancelled_while_git_writes_its_commit_is_never_pushed(pipeline, people, monkeypatch):
    service = develop_only(pipeline)
    release = make_release(service, "2026.02.1")
    head = pipeline.gitops.head()
    start_commit = transitions.start_commit

    def cancelled_first(promotion):
        transitions.cancel(Promotion.objects.get(pk=promotion.pk), people["rita"], "wrong build")
        return start_commit(promotion)

    monkeypatch.setattr(transitions, "start_commit", cancelled_first)
    cancelled = transitions.request_promotion(release, pipeline.environments["develop"], people["rita"])
    pipeline.run_jobs()
    assert state_of(cancelled) == PromotionState.CANCELLED
    assert pipeline.gitops.head() == head
    assert not AuditEvent.objects.filter(
        action=AuditAction.PROMOTION_COMMIT_STARTED, promotion_id=cancelled.pk
    ).exists()

    monkeypatch.setattr(transitions, "start_commit", start_commit)
    again = transitions.request_promotion(release, pipeline.environments["develop"], people["rita"])
    pipeline.run_jobs()  # the abandoned local commit left nothing (no index.lock) in the way
    assert state_of(again) == PromotionState.VERIFIED, again.error
    assert pipeline.gitops.head() == again.gitops_commit_sha != head


def test_a_bad_values_file_found_while_the_promotion_is_cancelled_leaves_it_cancelled(pipeline, people, monkeypatch):
    service = develop_only(pipeline)
    head = pipeline.gitops.head()

    def cancelled_then_unreadable(text, key_path, value, path):
        transitions.cancel(Promotion.objects.get(pk=promotion.pk), people["rita"], "wrong build")
        raise values.ValuesFileError(f"{path} is not valid YAML: (as if)")

    monkeypatch.setattr(values, "set_value", cancelled_then_unreadable)
    promotion = transitions.request_promotion(
        make_release(service, "2026.02.1"), pipeline.environments["develop"], people["rita"]
    )
    pipeline.run_jobs()
    assert state_of(promotion) == PromotionState.CANCELLED
    assert promotion.error == ""
    assert pipeline.gitops.head() == head
    assert not pipeline.redis.zcard("rq:failed:default"), "the job did not crash"


def test_a_duplicate_commit_job_that_fails_late_leaves_what_the_other_one_did(
    pipeline, settings, tmp_path, monkeypatch
):
    service = develop_only(pipeline)
    promotion = transitions.request_promotion(
        make_release(service, "2026.02.1"), pipeline.environments["develop"], None
    )
    loaded_while_approved = jobs._load(promotion.pk, PromotionState.APPROVED)
    jobs.commit_promotion(promotion.pk)  # the first job commits it; its sync is on its way
    assert state_of(promotion) == PromotionState.COMMITTED

    monkeypatch.setattr(jobs, "_load", lambda promotion_id, *states: loaded_while_approved)

    def refused(*args, **kwargs):
        raise GitOpsError("the remote declined the push")  # the duplicate fails for good

    monkeypatch.setattr(GitOpsRepository, "commit_and_push", refused)
    jobs.commit_promotion(promotion.pk)
    promotion.refresh_from_db()
    assert (promotion.state, promotion.error) == (PromotionState.COMMITTED, "")


def test_committed_at_is_when_the_push_returned(pipeline, monkeypatch):
    service = develop_only(pipeline)
    original_push, original_mark = GitOpsRepository.push, transitions.mark_committed
    pushed, marked = [], []

    def push(repository):
        original_push(repository)
        pushed.append(timezone.now())

    def mark_committed(*args, **kwargs):
        marked.append(timezone.now())
        return original_mark(*args, **kwargs)

    monkeypatch.setattr(GitOpsRepository, "push", push)
    monkeypatch.setattr(transitions, "mark_committed", mark_committed)
    promotion = transitions.request_promotion(
        make_release(service, "2026.02.1"), pipeline.environments["develop"], None
    )
    pipeline.run_jobs()
    promotion.refresh_from_db()
    assert pushed[0] <= promotion.committed_at <= marked[0]


def test_a_working_copy_removed_between_jobs_is_made_again(pipeline, settings):
    service = develop_only(pipeline)
    first = transitions.request_promotion(make_release(service, "2026.02.1"), pipeline.environments["develop"], None)
    pipeline.run_jobs()
    assert state_of(first) == PromotionState.VERIFIED
    shutil.rmtree(settings.GITOPS_WORKDIR)  # as an operator clearing a worker's disk would
    second = transitions.request_promotion(make_release(service, "2026.02.2"), pipeline.environments["develop"], None)
    pipeline.run_jobs()
    assert state_of(second) == PromotionState.VERIFIED, second.error
    assert 'tag: "2026.02.2"' in pipeline.gitops.read("helm/nexo-be/values-develop.yaml")


def test_a_push_that_fails_for_good_leaves_no_commit_behind(pipeline):
    service = pipeline.add_service("nexo-be")
    hook = pipeline.gitops.bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'branch main is protected' >&2\nexit 1\n")
    hook.chmod(0o755)
    head = pipeline.gitops.head()
    promotion = transitions.request_promotion(
        make_release(service, "2026.02.1"), pipeline.environments["develop"], None
    )
    pipeline.run_jobs()
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.FAILED
    assert "branch main is protected" in promotion.error
    assert pipeline.gitops.head() == head
    # The worker's working copy is back in step with the remote on the next use.
    repository = GitOpsRepository()
    with repository.locked():
        repository.sync()
        assert repository.head() == head


def test_a_push_that_reports_a_failure_after_the_remote_took_the_commit_carries_on(pipeline, monkeypatch):
    service = develop_only(pipeline)
    original_push = GitOpsRepository.push

    def connection_drops_after_the_push(repository):
        original_push(repository)
        raise GitOpsError("Cannot push to the GitOps repository: Connection reset by peer")

    monkeypatch.setattr(GitOpsRepository, "push", connection_drops_after_the_push)
    promotion = transitions.request_promotion(
        make_release(service, "2026.02.1"), pipeline.environments["develop"], None
    )
    pipeline.run_jobs()
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.VERIFIED, promotion.error
    assert pipeline.gitops.head() == promotion.gitops_commit_sha
    assert [trailers(c).get("Promotion-Id") for c in pipeline.gitops.commits()].count(str(promotion.pk)) == 1


@pytest.mark.parametrize(
    ("values_text", "complaint"),
    [
        (None, "helm/nexo-be/values-develop.yaml does not exist in"),
        ("image:\n  repository: ghcr.io/x\n", "helm/nexo-be/values-develop.yaml has no key 'image.tag'"),
    ],
)
def test_a_missing_values_file_or_key_fails_naming_the_file_and_key(pipeline, values_text, complaint):
    service = pipeline.add_service("nexo-be")
    if values_text is None:
        pipeline.gitops._pull()
        pipeline.gitops.scratch.index.remove(["helm/nexo-be/values-develop.yaml"], working_tree=True)
        pipeline.gitops.scratch.index.commit("chore: remove the develop values")
        pipeline.gitops.scratch.remotes.origin.push("HEAD:refs/heads/main")
    else:
        pipeline.gitops.write("helm/nexo-be/values-develop.yaml", values_text)
    head = pipeline.gitops.head()
    promotion = transitions.request_promotion(
        make_release(service, "2026.02.1"), pipeline.environments["develop"], None
    )
    pipeline.run_jobs()
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.FAILED
    assert complaint in promotion.error
    assert pipeline.gitops.head() == head


def test_concurrent_promotions_of_ten_services_by_two_workers_all_land(pipeline, tmp_path):
    services = [pipeline.add_service(f"svc-{n}") for n in range(10)]
    for service in services:
        transitions.request_promotion(make_release(service, "2026.02.1"), pipeline.environments["develop"], None)

    database = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{database['USER']}:{database['PASSWORD']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        "REDIS_URL": settings.RQ_QUEUES["default"]["URL"],
        "GITOPS_REPO_URL": settings.GITOPS_REPO_URL,
    }
    workers = [
        subprocess.Popen(
            [sys.executable, "manage.py", "rqworker", "--burst", "--with-scheduler", "default"],
            cwd=settings.BASE_DIR,
            env={**env, "GITOPS_WORKDIR": str(tmp_path / f"worker-{n}")},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for n in range(2)
    ]
    logs = [worker.communicate(timeout=240)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], logs
    assert all("Job OK" in log for log in logs), "both workers did work"
    assert not any("Traceback" in log for log in logs), logs

    promotions = Promotion.objects.all()
    assert promotions.count() == 20  # develop, then the automatic qa promotion
    assert set(promotions.values_list("state", flat=True)) == {PromotionState.VERIFIED}
    ids_in_history = [trailers(commit).get("Promotion-Id") for commit in pipeline.gitops.commits()]
    assert sorted(filter(None, ids_in_history), key=int) == [str(p.pk) for p in promotions.order_by("pk")]
    for service in services:
        for name in ("develop", "qa"):
            assert 'tag: "2026.02.1"' in pipeline.gitops.read(service.values_path(pipeline.environments[name]))


def test_failed_verification_rolls_back_by_itself_in_qa(pipeline, people, slack_server):
    service = pipeline.add_service("nexo-be")
    env = pipeline.environments
    env["qa"].required_checks = ["e2e"]
    env["qa"].save()
    good, bad = make_release(service, "2026.02.1"), make_release(service, "2026.02.2")
    for release, passed in ((good, True), (bad, False)):
        CheckResult.objects.create(
            release=release,
            environment=env["qa"],
            name="e2e",
            passed=passed,
            url="https://ci.example/run/1",
            reported_by="api-token:ci",
        )
        transitions.request_promotion(release, env["develop"], None, kind=PromotionKind.AUTO)
        pipeline.run_jobs()

    failed = Promotion.objects.get(environment=env["qa"], release=bad)
    assert failed.state == PromotionState.ROLLED_BACK
    assert failed.failed_step == "verification"
    assert "e2e failed (https://ci.example/run/1)" in failed.error
    rollback = Promotion.objects.get(environment=env["qa"], kind=PromotionKind.ROLLBACK)
    assert (rollback.release, rollback.state, rollback.requested_via) == (good, PromotionState.VERIFIED, "pipeline")
    assert 'tag: "2026.02.1"' in pipeline.gitops.read("helm/nexo-be/values-qa.yaml")
    assert pipeline.gitops.commits("helm/nexo-be/values-qa.yaml")[0].summary == "rollback(nexo-be): qa → 2026.02.1"
    assert Hold.objects.active().filter(service=service, environment=env["qa"]).exists()
    [alert] = slack_server.messages
    assert alert["text"].startswith(":red_circle: nexo-be 2026.02.2 → qa failed at verification: e2e failed")
    # Sent when the rollback was requested: the alert says it is on its way, not that it is done.
    assert f"Rolling back automatically to 2026.02.1 (promotion #{rollback.pk}, " in alert["text"]
    assert "Rolled back automatically" not in alert["text"]


def test_failed_verification_in_staging_only_alerts(pipeline, people, slack_server):
    service = pipeline.add_service("nexo-be")
    env = pipeline.environments
    env["staging"].required_checks = ["load-test"]
    env["staging"].save()
    good, bad = make_release(service, "2026.02.1"), make_release(service, "2026.02.2")
    for release, passed in ((good, True), (bad, False)):
        CheckResult.objects.create(
            release=release, environment=env["staging"], name="load-test", passed=passed, reported_by="ci"
        )
        transitions.request_promotion(release, env["develop"], None, kind=PromotionKind.AUTO)
        pipeline.run_jobs()
        promotion = transitions.request_promotion(release, env["staging"], people["rita"])
        transitions.approve(promotion, people["paulo"])
        pipeline.run_jobs()
    failed = Promotion.objects.get(environment=env["staging"], release=bad)
    assert failed.state == PromotionState.FAILED
    assert "load-test failed" in failed.error
    assert not Promotion.objects.filter(kind=PromotionKind.ROLLBACK).exists()
    [alert] = slack_server.messages
    assert alert["text"].startswith(":red_circle: nexo-be 2026.02.2 → staging failed at verification: load-test failed")
    assert "No automatic rollback in staging: someone should decide what to do." in alert["text"]
    assert f"https://portal.nexo.example/promotions/{failed.pk}/" in alert["text"]
    assert alert["blocks"][0]["type"] == "section"
    assert 'tag: "2026.02.2"' in pipeline.gitops.read("helm/nexo-be/values-staging.yaml")


def test_reconciler_flags_gitops_drift_once_and_clears_it_once_when_fixed(pipeline):
    from releases.reconciler import detect_drift

    service = pipeline.add_service("nexo-be")
    transitions.request_promotion(make_release(service, "2026.02.1"), pipeline.environments["develop"], None)
    pipeline.run_jobs()
    assert detect_drift() == []
    original = pipeline.gitops.read("helm/nexo-be/values-develop.yaml")
    pipeline.gitops.write("helm/nexo-be/values-develop.yaml", original.replace("2026.02.1", "hotfix-by-hand"))

    deployment = Deployment.objects.current().get(service=service, environment=pipeline.environments["develop"])
    assert detect_drift() == [deployment.pk]
    assert detect_drift() == [deployment.pk]
    deployment.refresh_from_db()
    assert deployment.drifted_tag == "hotfix-by-hand"
    events = AuditEvent.objects.filter(action=AuditAction.DRIFT_DETECTED)
    assert events.count() == 1
    assert "says 'hotfix-by-hand' but the portal deployed 2026.02.1" in events.get().message

    pipeline.gitops.write("helm/nexo-be/values-develop.yaml", original)
    assert detect_drift() == []
    assert detect_drift() == []
    deployment.refresh_from_db()
    assert (deployment.drifted_tag, deployment.drift_detected_at) == ("", None)
    [resolved] = AuditEvent.objects.filter(action=AuditAction.DRIFT_RESOLVED)
    assert "says 2026.02.1 again, as the portal deployed (it said 'hotfix-by-hand')" in resolved.message
    assert resolved.data == {"expected": "2026.02.1", "was": "hotfix-by-hand"}


def test_two_reconcilers_audit_one_drift_once(pipeline, monkeypatch):
    """A rolling update runs two for a moment: the second flags the drift between the first one's
    reading of the values file and its writing of the flag."""
    import threading

    from django.db import connections

    from releases.reconciler import detect_drift

    deployment = deployed_in_develop(pipeline)
    pipeline.gitops.write(DEVELOP_VALUES, pipeline.gitops.read(DEVELOP_VALUES).replace("2026.02.1", "hotfix-by-hand"))
    lock_chain, found = audit.lock_chain, {}

    def other_reconciler():
        try:
            found["drifted"] = detect_drift()
        finally:
            connections.close_all()

    def lock_chain_after_the_other_reconciler():
        monkeypatch.setattr(audit, "lock_chain", lock_chain)
        other = threading.Thread(target=other_reconciler)
        other.start()
        other.join(timeout=30)
        lock_chain()

    monkeypatch.setattr(audit, "lock_chain", lock_chain_after_the_other_reconciler)
    assert detect_drift() == [deployment.pk]
    assert found["drifted"] == [deployment.pk]
    assert AuditEvent.objects.filter(action=AuditAction.DRIFT_DETECTED).count() == 1


def test_a_tag_written_by_hand_while_a_promotion_was_in_flight_is_said_when_the_commit_replaces_it(pipeline):
    """The drift check skips places with a promotion in flight (an approval may wait days for a freeze's
    end): a hand fix made meanwhile was overwritten with no trace but the commit message's previous
    version."""
    service = pipeline.add_service("nexo-be")
    develop = pipeline.environments["develop"]
    transitions.request_promotion(make_release(service, "2026.02.1"), develop, None)
    pipeline.run_jobs()
    promotion = transitions.request_promotion(make_release(service, "2026.02.2"), develop, None)
    original = pipeline.gitops.read("helm/nexo-be/values-develop.yaml")
    pipeline.gitops.write("helm/nexo-be/values-develop.yaml", original.replace("2026.02.1", "2026.02.1-hotfix"))

    pipeline.run_jobs()

    promotion.refresh_from_db()
    assert promotion.state == PromotionState.VERIFIED
    event = AuditEvent.objects.get(action=AuditAction.DRIFT_DETECTED, promotion_id=promotion.pk)
    assert event.message == (
        "helm/nexo-be/values-develop.yaml said '2026.02.1-hotfix', written there by hand over 2026.02.1; "
        f"the commit {promotion.gitops_commit_sha[:7]} of nexo-be 2026.02.2 → develop replaced it"
    )
    assert (event.data["expected"], event.data["found"]) == ("2026.02.1", "2026.02.1-hotfix")
    assert AuditEvent.objects.filter(action=AuditAction.DRIFT_DETECTED).count() == 1  # the first commit: none


DEVELOP_VALUES = "helm/nexo-be/values-develop.yaml"


def deployed_in_develop(pipeline):
    """nexo-be 2026.02.1 verified in develop (and nowhere else): its current deployment there."""
    service = develop_only(pipeline)
    transitions.request_promotion(make_release(service, "2026.02.1"), pipeline.environments["develop"], None)
    pipeline.run_jobs()
    return Deployment.objects.current().get(service=service, environment=pipeline.environments["develop"])


class StopTheLoop(Exception):
    """Raised by the loop's sleep once the rounds a test wants have run."""


def reconcile_loop(monkeypatch, settings, rounds):
    """`manage.py reconcile --loop`, stopped after `rounds` rounds by its sleep; the sleeps it slept."""
    from django.core.management import call_command

    from releases.management.commands import reconcile as reconcile_command

    settings.RECONCILE_SECONDS = 0
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        if len(slept) == rounds:
            raise StopTheLoop

    monkeypatch.setattr(reconcile_command, "time", type("Clock", (), {"sleep": staticmethod(sleep)}))
    with pytest.raises(StopTheLoop):
        call_command("reconcile", "--loop")
    return slept


def test_a_values_file_saved_in_latin_1_is_drift_said_once_and_the_reconcile_loop_goes_on(
    pipeline, settings, monkeypatch
):
    """A comment saved by a Windows editor ("# Configuração") is not UTF-8: the place is flagged
    unreadable and audited once, and the loop lives on to its next round."""
    deployment = deployed_in_develop(pipeline)
    original = pipeline.gitops.read(DEVELOP_VALUES)
    pipeline.gitops.write(
        DEVELOP_VALUES, original.replace("# Helm values", "# Configuração: values"), encoding="latin-1"
    )
    assert len(reconcile_loop(monkeypatch, settings, rounds=2)) == 2, "two rounds ran"
    deployment.refresh_from_db()
    assert deployment.drifted_tag.startswith(f"(unreadable: {DEVELOP_VALUES} is not UTF-8 text")
    [event] = AuditEvent.objects.filter(action=AuditAction.DRIFT_DETECTED)
    assert "save it as UTF-8" in event.message


def test_the_reconcile_loop_outlives_a_round_that_fails(settings, monkeypatch):
    from django.core.management import call_command

    from releases.management.commands import reconcile as reconcile_command

    def failing_round():
        raise RuntimeError("a bug the round did not expect")

    monkeypatch.setattr(reconcile_command, "reconcile", failing_round)
    assert len(reconcile_loop(monkeypatch, settings, rounds=2)) == 2, "it failed twice and went on"
    with pytest.raises(RuntimeError, match="a bug"):
        call_command("reconcile")  # one round, as cron runs it, says what went wrong


@pytest.mark.parametrize("cleared", ['tag: ""', "tag: ~", "tag:"])
def test_a_tag_cleared_by_hand_is_flagged_as_no_tag_and_audited_once(pipeline, cleared):
    """Helm then runs the chart's appVersion, not the build the portal deployed: a drift like any other."""
    from releases.reconciler import detect_drift

    deployment = deployed_in_develop(pipeline)
    pipeline.gitops.write(DEVELOP_VALUES, pipeline.gitops.read(DEVELOP_VALUES).replace('tag: "2026.02.1"', cleared))

    assert detect_drift() == [deployment.pk]
    assert detect_drift() == [deployment.pk]
    deployment.refresh_from_db()
    assert deployment.drifted_tag == "(no tag)"
    [event] = AuditEvent.objects.filter(action=AuditAction.DRIFT_DETECTED)
    assert "says '(no tag)' but the portal deployed 2026.02.1" in event.message


@pytest.mark.parametrize("by_hand", ["a tag of 200 characters", "a values file moved to a long path"])
def test_a_drift_longer_than_its_field_is_flagged_cut_and_audited_once(pipeline, by_hand):
    from releases.reconciler import detect_drift

    deployment = deployed_in_develop(pipeline)
    if by_hand == "a tag of 200 characters":
        tag = "hotfix-" + "x" * 193
        pipeline.gitops.write(DEVELOP_VALUES, pipeline.gitops.read(DEVELOP_VALUES).replace("2026.02.1", tag))
        expected = tag[:150]
    else:
        template = "helm/{service}/" + "a-directory-with-a-long-name/" * 6 + "values-{environment}.yaml"
        Service.objects.filter(pk=deployment.service_id).update(values_path_template=template)
        path = template.replace("{service}", "nexo-be").replace("{environment}", "develop")
        expected = f"(missing file {path})"[:150]

    assert detect_drift() == [deployment.pk]
    assert detect_drift() == [deployment.pk]
    deployment.refresh_from_db()
    assert (len(deployment.drifted_tag), deployment.drifted_tag) == (150, expected)
    assert AuditEvent.objects.filter(action=AuditAction.DRIFT_DETECTED).count() == 1


def test_a_duty_of_the_reconciler_that_fails_does_not_keep_the_others_from_running(pipeline, monkeypatch):
    from releases import reconciler

    def broken():
        raise RuntimeError("a bug in the drift check")

    monkeypatch.setattr(reconciler, "detect_drift", broken)
    round_ = reconcile()
    assert round_["drifted"] == []
    assert round_["audit_chain"], "the round went on to its last duty"


def test_a_promotion_takes_the_drift_flag_off_the_deployment_it_replaces(pipeline):
    """The flag says what the values file holds where it differs from the place's current deployment: left
    on the deployment a promotion replaced, it said so of a release that no longer runs, for ever."""
    from releases.reconciler import detect_drift

    deployment = deployed_in_develop(pipeline)
    pipeline.gitops.write(DEVELOP_VALUES, pipeline.gitops.read(DEVELOP_VALUES).replace("2026.02.1", "hotfix-by-hand"))
    assert detect_drift() == [deployment.pk]
    transitions.request_promotion(make_release(deployment.service, "2026.02.2"), pipeline.environments["develop"], None)
    pipeline.run_jobs()

    assert detect_drift() == []

    assert not Deployment.objects.exclude(drifted_tag="").exists()
    deployment.refresh_from_db()
    assert (deployment.drifted_tag, deployment.drift_detected_at) == ("", None)


def test_a_drift_check_that_read_the_place_before_a_promotion_flags_only_the_new_deployment(pipeline, monkeypatch):
    """A round reads the deployments, a promotion replaces one, the round goes on with what it read: the
    flag must not land on the replaced deployment, or the same difference is audited twice."""
    from releases.reconciler import detect_drift

    deployment = deployed_in_develop(pipeline)
    pipeline.gitops.write(DEVELOP_VALUES, pipeline.gitops.read(DEVELOP_VALUES).replace("2026.02.1", "hotfix-by-hand"))
    lock_chain = audit.lock_chain

    def a_promotion_lands_first():
        monkeypatch.setattr(audit, "lock_chain", lock_chain)
        ran(make_release(deployment.service, "2026.02.2"), pipeline.environments["develop"])
        lock_chain()

    monkeypatch.setattr(audit, "lock_chain", a_promotion_lands_first)
    detect_drift()

    [current] = Deployment.objects.current()
    assert detect_drift() == [current.pk]
    assert list(Deployment.objects.exclude(drifted_tag="").values_list("pk", flat=True)) == [current.pk]
    [detected] = AuditEvent.objects.filter(action=AuditAction.DRIFT_DETECTED)
    assert detected.message == f"{DEVELOP_VALUES} says 'hotfix-by-hand' but the portal deployed 2026.02.2"


def test_the_drift_check_skips_while_a_worker_holds_the_gitops_lock(pipeline):
    """A worker pushing a promotion that the reconciler did not see in flight yet is not drift."""
    import threading

    from django.db import connections

    from releases.reconciler import detect_drift

    service = pipeline.add_service("nexo-be")
    pipeline.environments["qa"].auto_promote = False
    pipeline.environments["qa"].save()
    transitions.request_promotion(make_release(service, "2026.02.1"), pipeline.environments["develop"], None)
    pipeline.run_jobs()
    path = "helm/nexo-be/values-develop.yaml"
    found = {}

    def reconciler_round():
        try:
            found["drifted"] = detect_drift()
        finally:
            connections.close_all()

    with GitOpsRepository().locked():  # the committing worker
        check = threading.Thread(target=reconciler_round)
        check.start()
        time.sleep(1)
        # Meanwhile the next promotion is requested and its commit pushed by the lock's holder.
        promotion = transitions.request_promotion(
            make_release(service, "2026.02.2"), pipeline.environments["develop"], None
        )
        pipeline.gitops.write(path, pipeline.gitops.read(path).replace("2026.02.1", "2026.02.2"))
    check.join(timeout=30)

    assert found["drifted"] == []
    assert detect_drift() == [], "in flight once the lock is free"
    assert state_of(promotion) in PromotionState.in_flight()
    assert not AuditEvent.objects.filter(action=AuditAction.DRIFT_DETECTED).exists()


def test_a_job_for_a_promotion_that_moved_on_does_nothing(pipeline, people):
    from releases.jobs import commit_promotion, sync_promotion

    service = pipeline.add_service("nexo-be")
    release = make_release(service, "2026.02.1")
    promotion = transitions.request_promotion(release, pipeline.environments["develop"], None)
    transitions.cancel(promotion, make_user("admin", is_superuser=True))
    head = pipeline.gitops.head()
    commit_promotion(promotion.pk)
    sync_promotion(promotion.pk)
    assert state_of(promotion) == PromotionState.CANCELLED
    assert pipeline.gitops.head() == head


def test_a_build_that_waited_for_a_freeze_of_qa_goes_there_when_the_freeze_ends(pipeline, people):
    service = pipeline.add_service("nexo-be")
    qa = pipeline.environments["qa"]
    frozen = freeze(qa)
    develop = transitions.request_promotion(
        make_release(service, "2026.02.1"), pipeline.environments["develop"], None, kind=PromotionKind.AUTO
    )
    pipeline.run_jobs()
    assert state_of(develop) == PromotionState.VERIFIED
    assert AuditEvent.objects.filter(action=AuditAction.PROMOTION_DEFERRED, environment="qa").count() == 1
    reconcile()
    assert not Promotion.objects.filter(environment=qa).exists()  # it waits while the freeze lasts

    ChangeFreeze.objects.filter(pk=frozen.pk).update(ends_at=timezone.now())  # the freeze is over
    reconcile()
    pipeline.run_jobs()
    assert Promotion.objects.get(environment=qa).state == PromotionState.VERIFIED
    reconcile()  # once: nothing more goes, and the wait is not audited again
    assert Promotion.objects.filter(environment=qa).count() == 1
    assert AuditEvent.objects.filter(action=AuditAction.PROMOTION_DEFERRED, environment="qa").count() == 1


@pytest.mark.parametrize("ended", ["by itself", "shortened"])
def test_a_build_that_waited_a_whole_weekend_freeze_goes_when_it_ends(pipeline, people, ended):
    """Deferred once, on Friday evening, more than a day before the freeze ends: still found."""
    service = pipeline.add_service("nexo-be")
    qa = pipeline.environments["qa"]
    friday, now = timezone.now() - timedelta(hours=60), timezone.now()
    frozen = ChangeFreeze.objects.create(
        environment=qa,
        starts_at=friday,
        ends_at=now + timedelta(hours=1) if ended == "shortened" else now - timedelta(minutes=1),
        reason="Weekend freeze",
    )
    release = make_release(service, "2026.02.1")
    ran(release, pipeline.environments["develop"], at=friday + timedelta(minutes=5))
    with audit.chain_transaction():  # as transitions._defer recorded it then
        audit.record(
            AuditAction.PROMOTION_DEFERRED,
            actor=transitions.PIPELINE,
            service=service.name,
            environment="qa",
            version=release.version,
            message=f"nexo-be {release.version} waits to enter qa: qa is frozen",
            data={"reason": "qa is frozen"},
            at=friday + timedelta(minutes=15),
        )
    if ended == "shortened":  # on Monday morning, an hour early
        with audit.chain_transaction():
            frozen.ends_at = now
            frozen.save()
            frozen.audit(AuditAction.FREEZE_CHANGED, people["lead"])

    reconcile()
    pipeline.run_jobs()
    assert Promotion.objects.get(environment=qa).state == PromotionState.VERIFIED


def test_a_build_that_waited_for_a_freeze_moved_to_another_environment_goes_now(pipeline, people, admin_client):
    """A freeze put on qa by mistake, moved to production in the admin: the build it kept out of qa goes
    there at the reconciler's next round, not never (qa's history names no freeze that ended)."""
    service = pipeline.add_service("nexo-be")
    qa, production = pipeline.environments["qa"], pipeline.environments["production"]
    frozen = freeze(qa)
    develop = transitions.request_promotion(
        make_release(service, "2026.02.1"), pipeline.environments["develop"], None, kind=PromotionKind.AUTO
    )
    pipeline.run_jobs()
    assert state_of(develop) == PromotionState.VERIFIED
    assert not Promotion.objects.filter(environment=qa).exists()

    starts, ends = (timezone.localtime(moment) for moment in (frozen.starts_at, frozen.ends_at))
    moved = admin_client.post(
        f"/admin/environments/changefreeze/{frozen.pk}/change/",
        {
            "environment": production.pk,
            "starts_at_0": f"{starts:%Y-%m-%d}",
            "starts_at_1": f"{starts:%H:%M:%S}",
            "ends_at_0": f"{ends:%Y-%m-%d}",
            "ends_at_1": f"{ends:%H:%M:%S}",
            "reason": frozen.reason,
        },
    )
    assert moved.status_code == 302, moved.content.decode()[:2000]
    assert AuditEvent.objects.get(action=AuditAction.FREEZE_CHANGED).data["moved_from"] == "qa"

    reconcile()
    pipeline.run_jobs()
    assert Promotion.objects.get(environment=qa).state == PromotionState.VERIFIED


def test_the_newest_build_registered_while_develop_was_busy_goes_there_once_it_is_free(pipeline, people):
    from releases.registration import register_build

    service = develop_only(pipeline)
    first, older, newest = (
        register_build(
            service, commit_sha=hex_for(name), image_digest="sha256:" + hex_for(name, length=64), actor=people["rita"]
        )
        for name in ("first", "older", "newest")
    )
    assert first.promotion is not None
    assert (older.promotion, newest.promotion) == (None, None)  # develop is busy with the first
    assert "develop is already approved" in newest.waits

    pipeline.run_jobs(until=lambda: Promotion.objects.filter(release=newest.release, state="verified").exists())
    assert state_of(first.promotion) == PromotionState.VERIFIED
    assert not Promotion.objects.filter(release=older.release).exists()  # only the newest goes
    assert Deployment.objects.current().get(service=service).release == newest.release
