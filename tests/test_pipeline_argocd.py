"""The sync step against a server speaking Argo CD's API (it cannot run here): real worker, Git and PostgreSQL."""

import contextlib
import logging
import re
import threading
import time

import pytest

from audit.models import AuditAction, AuditEvent
from releases import transitions
from releases.gitops.repo import GitOpsRepository, contains_commit
from releases.models import (
    Deployment,
    Hold,
    Promotion,
    PromotionKind,
    PromotionState,
    RunStatus,
    Step,
    StepRun,
    StepStatus,
)
from tests.factories import make_release
from tests.servers.argocd import Outcome


@pytest.fixture
def argocd(pipeline, argocd_server, settings):
    settings.ARGOCD_POLL_SECONDS = 0.01
    settings.ARGOCD_SYNC_TIMEOUT_SECONDS = 5
    return argocd_server


def promote_to_develop(pipeline, service, version):
    promotion = transitions.request_promotion(
        make_release(service, version), pipeline.environments["develop"], None, kind=PromotionKind.AUTO
    )
    pipeline.run_jobs()
    promotion.refresh_from_db()
    return promotion


def a_later_commit(pipeline, then=None):
    """`head()` for the Argo CD test server: at its first call another service's promotion is pushed
    after ours (and `then()` runs), and that commit is the head ever after; `head.made` holds it."""
    made = []

    def head():
        if not made:
            pipeline.gitops.write(
                "helm/nexo-fe/values-develop.yaml",
                'image:\n  tag: "2026.02.7"\n',
                "promote(nexo-fe): develop → 2026.02.7",
            )
            made.append(pipeline.gitops.head())
            if then:
                then()
        return made[0]

    head.made = made
    return head


def test_a_manual_sync_reported_at_a_later_commit_that_contains_ours_is_deployed(pipeline, argocd):
    """Argo CD reports status.sync.revision as the branch head it compared with: once another service's
    promotion pushed after ours, that commit, Synced (nothing of this application changed in it)."""
    service = pipeline.add_service("nexo-be")
    pipeline.environments["qa"].auto_promote = False
    pipeline.environments["qa"].save()
    head = a_later_commit(pipeline)
    pushed_after = head.made

    argocd.app("nexo-be-develop", head=head, reports_branch_head=True)
    promotion = promote_to_develop(pipeline, service, "2026.02.1")

    assert promotion.state == PromotionState.VERIFIED, promotion.error
    assert pushed_after != [promotion.gitops_commit_sha]
    assert pipeline.gitops.head() == pushed_after[0]


def test_sync_asks_argo_cd_for_our_commit_and_waits_for_synced_and_healthy(pipeline, argocd):
    service = pipeline.add_service("nexo-be")
    for name in ("develop", "qa"):
        argocd.app(f"nexo-be-{name}")
    promotion = promote_to_develop(pipeline, service, "2026.02.1")
    assert promotion.state == PromotionState.VERIFIED
    assert promotion.sync_status == StepStatus.PASSED
    sync = next(r for r in argocd.sync_requests if r.path.endswith("/nexo-be-develop/sync"))
    assert sync.json["revision"] == promotion.gitops_commit_sha
    assert sync.headers["Authorization"] == f"Bearer {argocd.token}"
    deployment = Deployment.objects.get(promotion=promotion)
    assert deployment.health == "Healthy"
    assert Promotion.objects.get(environment=pipeline.environments["qa"]).state == PromotionState.VERIFIED


def test_another_operation_in_progress_is_waited_out(pipeline, argocd):
    service = pipeline.add_service("nexo-be")
    argocd.app("nexo-be-develop", busy_syncs=2)
    pipeline.environments["qa"].auto_promote = False
    pipeline.environments["qa"].save()
    promotion = promote_to_develop(pipeline, service, "2026.02.1")
    assert promotion.state == PromotionState.VERIFIED
    assert len(argocd.sync_requests) == 3


@pytest.mark.parametrize(
    ("outcome", "complaint"),
    [
        (Outcome.DEGRADED, 'is Degraded (Deployment "nexo-be-develop" exceeded its progress deadline); the sync'),
        (Outcome.SYNC_FAILS, "ended in phase Failed: one or more objects failed to apply"),
        (Outcome.NEVER_FINISHES, "did not run revision"),
    ],
)
def test_a_failed_sync_fails_the_promotion_with_argo_cds_own_message(pipeline, argocd, settings, outcome, complaint):
    settings.ARGOCD_SYNC_TIMEOUT_SECONDS = 0.5
    service = pipeline.add_service("nexo-be")
    argocd.app("nexo-be-develop", outcome=outcome)
    promotion = promote_to_develop(pipeline, service, "2026.02.1")
    assert promotion.state == PromotionState.FAILED
    assert promotion.failed_step == "sync"
    assert promotion.sync_status == StepStatus.FAILED
    assert complaint in promotion.error
    assert not Deployment.objects.exists()


def test_a_bad_token_fails_with_argo_cds_unauthenticated_message(pipeline, argocd, settings):
    settings.ARGOCD_TOKEN = "not-the-token"
    service = pipeline.add_service("nexo-be")
    argocd.app("nexo-be-develop")
    promotion = promote_to_develop(pipeline, service, "2026.02.1")
    assert promotion.state == PromotionState.FAILED
    assert "invalid session" in promotion.error


def test_an_unknown_application_fails_and_says_it_may_not_exist(pipeline, argocd):
    service = pipeline.add_service("nexo-be")
    promotion = promote_to_develop(pipeline, service, "2026.02.1")
    assert promotion.state == PromotionState.FAILED
    assert "nexo-be-develop" in promotion.error
    assert "permission denied" in promotion.error


def test_a_release_degraded_in_develop_is_rolled_back_to_the_last_verified_one(pipeline, argocd):
    service = pipeline.add_service("nexo-be")
    pipeline.environments["qa"].auto_promote = False
    pipeline.environments["qa"].save()
    application = argocd.app("nexo-be-develop")
    good = promote_to_develop(pipeline, service, "2026.02.1")
    assert good.state == PromotionState.VERIFIED
    application.outcome = Outcome.DEGRADED
    bad = promote_to_develop(pipeline, service, "2026.02.2")
    rollback = Promotion.objects.get(kind=PromotionKind.ROLLBACK)
    assert rollback.release == good.release
    assert rollback.rolls_back == bad
    # The rollback's own sync went Degraded too in this stand-in, so it failed; nothing rolls back a rollback.
    assert rollback.state == PromotionState.FAILED
    assert Promotion.objects.filter(kind=PromotionKind.ROLLBACK).count() == 1
    rollback_commit = pipeline.gitops.commits("helm/nexo-be/values-develop.yaml")[0]
    assert rollback_commit.summary == "rollback(nexo-be): develop → 2026.02.1"
    # What the rollback takes out (what GitOps held: its sync failed, so it never ran), not where it goes back to.
    assert "Previous version: 2026.02.2." in rollback_commit.message
    assert not AuditEvent.objects.filter(action=AuditAction.DRIFT_DETECTED).exists(), "its own commit, not a hand edit"
    # The automatic rollback could not finish: automatic promotions into develop stop, saying why.
    hold = Hold.objects.active().get(service=service, environment=pipeline.environments["develop"])
    assert hold.reason.startswith("The automatic rollback to 2026.02.1 failed at sync: Argo CD application")


def test_a_rollback_to_the_tag_gitops_holds_already_says_what_it_replaces_and_why_it_changes_no_file(
    pipeline, argocd, rita
):
    """The tester's bad day: a rollback whose commit set the tag but whose sync failed, then a rollback to
    the same release asked again."""
    service = pipeline.add_service("nexo-be")
    pipeline.environments["qa"].auto_promote = False
    pipeline.environments["qa"].save()
    develop = pipeline.environments["develop"]
    application = argocd.app("nexo-be-develop")
    releases = {
        version: make_release(service, version, changelog=f"- feat: what {version} brought")
        for version in ("2026.02.1", "2026.02.2", "2026.02.3")
    }
    for version in releases:
        transitions.request_promotion(releases[version], develop, None, kind=PromotionKind.AUTO)
        pipeline.run_jobs()
    application.outcome = Outcome.DEGRADED
    first = transitions.request_rollback(service, develop, rita, release=releases["2026.02.1"])
    pipeline.run_jobs()
    first.refresh_from_db()
    assert (first.state, first.failed_step) == (PromotionState.FAILED, "sync")
    path = "helm/nexo-be/values-develop.yaml"
    assert 'tag: "2026.02.1"' in pipeline.gitops.read(path)  # its commit is there; 2026.02.3 still runs

    application.outcome = Outcome.HEALTHY
    again = transitions.request_rollback(service, develop, rita, release=releases["2026.02.1"])
    pipeline.run_jobs()
    again.refresh_from_db()
    assert again.state == PromotionState.VERIFIED, again.error
    assert again.previous_release == releases["2026.02.3"]  # the API's previous_version
    commit = pipeline.gitops.commits()[0]
    assert commit.hexsha == again.gitops_commit_sha
    assert commit.summary == "rollback(nexo-be): develop → 2026.02.1"
    assert not commit.stats.files, "nothing to change in the values file"
    message = commit.message
    assert "Previous version: 2026.02.3." in message
    assert (
        f"{path} already holds 2026.02.1 (committed by promotion #{first.pk}, failed at sync): this commit "
        "changes no file, and gives Argo CD a revision of this rollback's own to sync."
    ) in message
    # A rollback's changelog is what it takes out, newest first; not the changelog of where it goes back to.
    changelog = message.split("## Changelog\n", 1)[1].split("\n\nPromotion-Id:", 1)[0]
    assert changelog == (
        "Taken out by this rollback, newest first:\n\n"
        "### 2026.02.3\n- feat: what 2026.02.3 brought\n\n"
        "### 2026.02.2\n- feat: what 2026.02.2 brought"
    )


def test_argo_cd_refusing_the_token_fails_without_an_automatic_rollback_and_holds(pipeline, argocd, settings):
    service = pipeline.add_service("nexo-be")
    pipeline.environments["qa"].auto_promote = False
    pipeline.environments["qa"].save()
    argocd.app("nexo-be-develop")
    good = promote_to_develop(pipeline, service, "2026.02.1")
    assert good.state == PromotionState.VERIFIED
    settings.ARGOCD_TOKEN = "expired-token"
    bad = promote_to_develop(pipeline, service, "2026.02.2")
    assert bad.state == PromotionState.FAILED
    assert "ARGOCD_TOKEN" in bad.error
    assert not Promotion.objects.filter(kind=PromotionKind.ROLLBACK).exists()  # not through what refused us
    summaries = [commit.summary for commit in pipeline.gitops.commits("helm/nexo-be/values-develop.yaml")]
    assert not any(summary.startswith("rollback(") for summary in summaries)
    hold = Hold.objects.active().get(service=service, environment=pipeline.environments["develop"])
    assert "was not rolled back automatically through what refused the portal" in hold.reason
    assert "ARGOCD_TOKEN" in hold.reason


def test_an_argo_cd_url_answering_json_of_something_else_fails_at_once_and_holds(
    pipeline, argocd, health_server, settings
):
    service = pipeline.add_service("nexo-be")
    pipeline.environments["qa"].auto_promote = False
    pipeline.environments["qa"].save()
    argocd.app("nexo-be-develop")
    good = promote_to_develop(pipeline, service, "2026.02.1")
    assert good.state == PromotionState.VERIFIED
    # ARGOCD_URL moved to a gateway's health endpoint: JSON, but no Application.
    for path in ("/api/v1/applications/nexo-be-develop", "/api/v1/applications/nexo-be-develop/sync"):
        health_server.answer(path, 200, '{"status": "UP"}')
    settings.ARGOCD_URL = health_server.url
    bad = promote_to_develop(pipeline, service, "2026.02.2")
    assert bad.state == PromotionState.FAILED
    assert "an answer that is not Argo CD's API" in bad.error
    assert "ARGOCD_URL" in bad.error
    assert not Promotion.objects.filter(kind=PromotionKind.ROLLBACK).exists()  # not through what refused us
    hold = Hold.objects.active().get(service=service, environment=pipeline.environments["develop"])
    assert "ARGOCD_URL" in hold.reason


def test_argo_cd_down_at_the_sync_request_is_waited_out(pipeline, argocd):
    service = pipeline.add_service("nexo-be")
    pipeline.environments["qa"].auto_promote = False
    pipeline.environments["qa"].save()
    argocd.app("nexo-be-develop")
    argocd.down_for(1.5)
    promotion = promote_to_develop(pipeline, service, "2026.02.1")
    assert promotion.state == PromotionState.VERIFIED
    assert not Hold.objects.exists()


def test_argo_cd_unreachable_until_the_deadline_fails_and_holds_instead_of_rolling_back(pipeline, argocd, settings):
    service = pipeline.add_service("nexo-be")
    pipeline.environments["qa"].auto_promote = False
    pipeline.environments["qa"].save()
    argocd.app("nexo-be-develop")
    assert promote_to_develop(pipeline, service, "2026.02.1").state == PromotionState.VERIFIED
    settings.ARGOCD_SYNC_TIMEOUT_SECONDS = 1
    argocd.down_for(30)
    try:
        bad = promote_to_develop(pipeline, service, "2026.02.2")
    finally:
        argocd.start()
    assert bad.state == PromotionState.FAILED
    assert "did not answer" in bad.error
    assert not Promotion.objects.filter(kind=PromotionKind.ROLLBACK).exists()
    assert Hold.objects.active().filter(service=service, environment=pipeline.environments["develop"]).exists()


def test_an_auto_sync_application_is_only_refreshed_never_synced(pipeline, argocd):
    service = pipeline.add_service("nexo-be")
    pipeline.environments["develop"].argocd_auto_sync = True
    pipeline.environments["develop"].save()
    pipeline.environments["qa"].auto_promote = False
    pipeline.environments["qa"].save()
    argocd.app("nexo-be-develop", auto_sync=True, head=pipeline.gitops.head)
    promotion = promote_to_develop(pipeline, service, "2026.02.1")
    assert promotion.state == PromotionState.VERIFIED
    assert argocd.sync_requests == []
    assert any(
        request.query.get("refresh") == ["normal"] or request.query.get("refresh") == "normal"
        for request in argocd.requests
    )


def auto_syncing_develop(pipeline):
    pipeline.environments["develop"].argocd_auto_sync = True
    pipeline.environments["develop"].save()
    pipeline.environments["qa"].auto_promote = False
    pipeline.environments["qa"].save()


def test_an_auto_sync_application_that_reports_a_later_commit_containing_ours_is_deployed(pipeline, argocd):
    """Another service's commit lands before Argo CD looks: it syncs the branch head, ours included."""
    service = pipeline.add_service("nexo-be")
    auto_syncing_develop(pipeline)
    head_after_someone_else_pushed = a_later_commit(pipeline)
    later = head_after_someone_else_pushed.made

    argocd.app("nexo-be-develop", auto_sync=True, head=head_after_someone_else_pushed)
    promotion = promote_to_develop(pipeline, service, "2026.02.1")
    assert promotion.state == PromotionState.VERIFIED, promotion.error
    assert later
    assert later[0] != promotion.gitops_commit_sha
    assert pipeline.gitops.commits()[1].hexsha == promotion.gitops_commit_sha, "ours is the later commit's parent"
    assert argocd.sync_requests == []


def test_a_later_commit_git_cannot_read_to_the_end_fails_the_sync_without_a_rollback(pipeline, argocd, settings):
    """Argo CD runs a later commit of the branch, and the GitOps remote is out of reach from then on:
    whether it contains ours cannot be told. No rollback through the same remote: a hold says why."""
    service = pipeline.add_service("nexo-be")
    auto_syncing_develop(pipeline)
    settings.ARGOCD_SYNC_TIMEOUT_SECONDS = 1
    outage = contextlib.ExitStack()
    head_then_the_remote_away = a_later_commit(pipeline, then=lambda: outage.enter_context(pipeline.gitops.away()))
    later = head_then_the_remote_away.made

    argocd.app("nexo-be-develop", auto_sync=True, head=head_then_the_remote_away)
    with outage:
        promotion = promote_to_develop(pipeline, service, "2026.02.1")

    assert (promotion.state, promotion.failed_step) == (PromotionState.FAILED, "sync")
    assert f"could not be read to tell whether {later[0][:12]}, which Argo CD reports, contains" in promotion.error
    assert "(Cannot reach the GitOps repository" in promotion.error, "and why not"
    assert not Promotion.objects.filter(kind=PromotionKind.ROLLBACK).exists()
    assert Hold.objects.active().filter(service=service, environment=pipeline.environments["develop"]).exists()


def reverted_before_argo_cd_looked(pipeline):
    """`head()` for the Argo CD test server: at its first call someone reverts the branch's newest commit
    (ours, just pushed) with `git revert`, and the revert is the head ever after; `head.made` holds it."""
    made = []

    def head():
        if not made:
            made.append(pipeline.gitops.revert(pipeline.gitops.head()))
        return made[0]

    head.made = made
    return head


def test_an_auto_sync_application_that_synced_a_revert_of_ours_is_not_taken_for_ours(pipeline, argocd, settings):
    """Ours was reverted on the branch before Argo CD looked: it syncs the revert, Synced and Healthy. The
    revert contains our commit, but its values file names the release before: ours is not what runs."""
    service = pipeline.add_service("nexo-be", tag="2026.01.9")
    auto_syncing_develop(pipeline)
    settings.ARGOCD_SYNC_TIMEOUT_SECONDS = 1
    head_reverted = reverted_before_argo_cd_looked(pipeline)
    application = argocd.app("nexo-be-develop", auto_sync=True, head=head_reverted)

    promotion = promote_to_develop(pipeline, service, "2026.02.1")

    [revert] = head_reverted.made
    assert application.deployed_revision == revert, "Argo CD synced the revert"
    assert (promotion.state, promotion.failed_step) == (PromotionState.FAILED, "sync")
    assert not Deployment.objects.filter(promotion=promotion).exists()


def test_a_sync_that_found_ours_reverted_says_so_and_holds_instead_of_rolling_back(pipeline, argocd, settings):
    """develop rolls back a failed sync by itself; here someone outside the portal chose what runs (a revert,
    or a tag of their own written by hand), and a rollback would commit over it: a hold says why."""
    service = pipeline.add_service("nexo-be")
    auto_syncing_develop(pipeline)
    application = argocd.app("nexo-be-develop", auto_sync=True, head=pipeline.gitops.head)
    assert promote_to_develop(pipeline, service, "2026.02.1").state == PromotionState.VERIFIED
    settings.ARGOCD_SYNC_TIMEOUT_SECONDS = 1
    application.head = reverted_before_argo_cd_looked(pipeline)

    promotion = promote_to_develop(pipeline, service, "2026.02.2")

    [revert] = application.head.made
    assert (promotion.state, promotion.failed_step) == (PromotionState.FAILED, "sync")
    assert (
        f"Argo CD reports {revert[:12]}, which contains {promotion.gitops_commit_sha[:12]} but whose values file "
        "names 2026.02.1, not this release's 2026.02.2: it was changed on the branch since (a revert, a tag "
        "written by hand)."
    ) in promotion.error
    assert not Promotion.objects.filter(kind=PromotionKind.ROLLBACK).exists()
    assert (
        Hold.objects.active()
        .get(service=service, environment=pipeline.environments["develop"])
        .reason.startswith(
            "2026.02.2 failed at sync and was not rolled back automatically as something outside the portal made "
            "Argo CD run another revision, which a rollback would sync over: "
        )
    )


def test_an_auto_sync_application_still_on_an_earlier_commit_is_not_taken_for_ours(pipeline, argocd, settings):
    service = pipeline.add_service("nexo-be")
    auto_syncing_develop(pipeline)
    before_ours = pipeline.gitops.head()
    argocd.app("nexo-be-develop", auto_sync=True, head=lambda: before_ours)
    settings.ARGOCD_SYNC_TIMEOUT_SECONDS = 0.5
    promotion = promote_to_develop(pipeline, service, "2026.02.1")
    assert promotion.state == PromotionState.FAILED
    assert promotion.failed_step == "sync"
    assert f"did not run revision {promotion.gitops_commit_sha[:12]}" in promotion.error
    assert before_ours[:12] in promotion.error


def test_without_argo_cd_the_sync_step_says_not_configured(pipeline):
    service = pipeline.add_service("nexo-be")
    promotion = promote_to_develop(pipeline, service, "2026.02.1")
    assert promotion.sync_status == StepStatus.NOT_CONFIGURED
    assert Deployment.objects.get(promotion=promotion).health == ""


def test_a_sync_job_that_times_out_after_the_promotion_moved_on_does_not_fail_it(pipeline, argocd, monkeypatch):
    """A run of the sync step whose lease expired while it waited: meanwhile the Argo CD Notifications
    event marked the promotion deployed and its soak began. Its timeout must not fail that soak."""
    from environments.argocd import ArgoCD, ArgoCDTimeout
    from releases.jobs import sync_promotion

    service = pipeline.add_service("nexo-be")
    argocd.app("nexo-be-develop")
    promotion = transitions.request_promotion(
        make_release(service, "2026.02.1"), pipeline.environments["develop"], None, kind=PromotionKind.AUTO
    )
    transitions.mark_committed(transitions.start_commit(promotion), "c" * 40, "promote(nexo-be): develop → 2026.02.1")

    def carried_on_meanwhile(self, *args, **kwargs):
        transitions.mark_deployed(Promotion.objects.get(pk=promotion.pk), health="Healthy")  # the webhook's event
        raise ArgoCDTimeout("Argo CD application nexo-be-develop did not run the revision within 5 s.")

    monkeypatch.setattr(ArgoCD, "wait_until_deployed", carried_on_meanwhile)
    sync_promotion(promotion.pk)

    promotion.refresh_from_db()
    assert promotion.state == PromotionState.DEPLOYED
    assert promotion.error == ""


def test_a_sync_still_running_at_the_deadline_is_terminated_and_the_rollback_syncs(pipeline, argocd, settings):
    """Argo CD keeps our sync Running (a hook job that never completes). At the deadline the portal
    terminates it, as Argo CD's Terminate button does: else the automatic rollback's sync would be
    refused ("another operation is already in progress") until it timed out too."""
    service = pipeline.add_service("nexo-be")
    pipeline.environments["qa"].auto_promote = False
    pipeline.environments["qa"].save()
    application = argocd.app("nexo-be-develop")
    good = promote_to_develop(pipeline, service, "2026.02.1")
    assert good.state == PromotionState.VERIFIED
    settings.ARGOCD_SYNC_TIMEOUT_SECONDS = 1
    application.stuck_syncs = 1

    bad = promote_to_develop(pipeline, service, "2026.02.2")

    assert (bad.state, bad.failed_step) == (PromotionState.ROLLED_BACK, "sync")
    assert "Argo CD was asked to terminate its sync, still running, so that the rollback can sync." in bad.error
    assert [request.path for request in argocd.terminate_requests] == ["/api/v1/applications/nexo-be-develop/operation"]
    rollback = Promotion.objects.get(kind=PromotionKind.ROLLBACK)
    assert rollback.release == good.release
    assert rollback.state == PromotionState.VERIFIED, rollback.error
    assert application.deployed_revision == rollback.gitops_commit_sha


def test_a_sync_that_finished_but_never_got_healthy_is_not_terminated(pipeline, argocd, settings):
    """Our sync Succeeded and the pods stay Progressing to the deadline: no operation runs, none is
    terminated (a DELETE would be refused, or end someone else's)."""
    service = pipeline.add_service("nexo-be")
    pipeline.environments["qa"].auto_promote = False
    pipeline.environments["qa"].save()
    settings.ARGOCD_SYNC_TIMEOUT_SECONDS = 0.5
    argocd.app("nexo-be-develop", progressing_polls=10_000)

    promotion = promote_to_develop(pipeline, service, "2026.02.1")

    assert (promotion.state, promotion.failed_step) == (PromotionState.FAILED, "sync")
    assert "terminate" not in promotion.error
    assert argocd.terminate_requests == []


def test_whether_argo_cds_commit_contains_ours_is_not_waited_for_behind_a_busy_gitops_lock(pipeline):
    """Another worker holds the GitOps lock (its push hanging on a slow remote): a poll of the sync does
    not wait minutes for it. The question counts as not answered and is asked again at the next poll."""
    service = pipeline.add_service("nexo-be", tag="2026.02.1")
    ours = pipeline.gitops.head()
    includes = contains_commit(ours, service.values_path(pipeline.environments["develop"]), "image.tag", "2026.02.1")
    answers = []
    with GitOpsRepository().locked():
        asking = threading.Thread(target=lambda: answers.append(includes(ours)))
        asking.start()
        asking.join(timeout=60)
        assert not asking.is_alive(), "still waiting for the lock another worker holds"
    assert answers == [False]
    assert includes.unanswered == ours
    assert includes(ours) is True, "answered once the lock is free"
    assert includes.unanswered is None


def test_a_revision_found_not_to_run_ours_is_not_asked_of_git_again(pipeline):
    """Both facts are fixed for a revision (it contains our commit; its values file names another tag):
    once answered, a poll or a round of the soak asking again gets the answer without the GitOps lock."""
    service = pipeline.add_service("nexo-be", tag="2026.02.1")
    path = service.values_path(pipeline.environments["develop"])
    pipeline.gitops.write(path, 'image:\n  tag: "2026.02.2"\n', "promote(nexo-be): develop → 2026.02.2")
    ours = pipeline.gitops.head()
    revert = pipeline.gitops.revert(ours)
    includes = contains_commit(ours, path, "image.tag", "2026.02.2")
    assert includes(revert) is False
    assert (includes.overwritten, includes.names_instead) == (revert, "2026.02.1")
    assert includes(ours) is True, "our own commit names our tag"
    assert includes.overwritten is None

    with GitOpsRepository().locked():  # another worker's push, hanging
        asked_again = contains_commit(ours, path, "image.tag", "2026.02.2")
        assert asked_again(revert) is False
        assert asked_again.unanswered is None, "answered without waiting for the lock"
        assert (asked_again.overwritten, asked_again.names_instead) == (revert, "2026.02.1")
        assert asked_again(ours) is True


def test_where_people_decide_a_sync_still_running_at_the_deadline_is_left_to_them(pipeline, argocd, settings):
    """No automatic rollback follows (staging, production): a long hook, a database migration say, is
    not the portal's to stop. The promotion fails at its deadline; Argo CD's operation runs on."""
    service = pipeline.add_service("nexo-be")
    develop = pipeline.environments["develop"]
    develop.rollback_on_failed_verification = False
    develop.save()
    pipeline.environments["qa"].auto_promote = False
    pipeline.environments["qa"].save()
    settings.ARGOCD_SYNC_TIMEOUT_SECONDS = 0.5
    application = argocd.app("nexo-be-develop", stuck_syncs=1)

    promotion = promote_to_develop(pipeline, service, "2026.02.1")

    assert (promotion.state, promotion.failed_step) == (PromotionState.FAILED, "sync")
    assert "terminate" not in promotion.error
    assert argocd.terminate_requests == []
    assert application.phase() == "Running"


def test_a_sync_job_whose_promotion_moved_on_at_its_deadline_terminates_nothing(pipeline, argocd, monkeypatch):
    """The Argo CD Notifications event failed the promotion meanwhile and its rollback is on its way:
    a run of the step reaching its deadline afterwards leaves Argo CD alone."""
    from environments.argocd import ArgoCD, ArgoCDTimeout
    from releases.jobs import sync_promotion

    service = pipeline.add_service("nexo-be")
    argocd.app("nexo-be-develop", stuck_syncs=1)
    promotion = transitions.request_promotion(
        make_release(service, "2026.02.1"), pipeline.environments["develop"], None, kind=PromotionKind.AUTO
    )
    sha = pipeline.gitops.head()
    transitions.mark_committed(transitions.start_commit(promotion), sha, "promote(nexo-be): develop → 2026.02.1")

    def failed_meanwhile(self, name, revision, **options):
        self.sync(name, revision)
        self.get_application(name)  # Argo CD runs it, stuck
        transitions.fail(Promotion.objects.get(pk=promotion.pk), "sync", "Argo CD: sync failed")  # the event
        raise ArgoCDTimeout(f"Argo CD application {name} did not run revision {revision[:12]} within 5 s.")

    monkeypatch.setattr(ArgoCD, "wait_until_deployed", failed_meanwhile)
    sync_promotion(promotion.pk)

    promotion.refresh_from_db()
    assert promotion.error == "Argo CD: sync failed"
    assert argocd.terminate_requests == []


def test_an_auto_sync_stuck_on_a_later_commit_containing_ours_is_terminated_and_rolled_back(pipeline, argocd, settings):
    """Auto-sync follows the branch: another service pushed after ours, and Argo CD's own sync of that
    head (ours included) hangs. It is ours to terminate, so that the rollback's commit can be synced."""
    service = pipeline.add_service("nexo-be")
    auto_syncing_develop(pipeline)
    application = argocd.app("nexo-be-develop", auto_sync=True, head=pipeline.gitops.head)
    good = promote_to_develop(pipeline, service, "2026.02.1")
    assert good.state == PromotionState.VERIFIED, good.error
    settings.ARGOCD_SYNC_TIMEOUT_SECONDS = 1
    pushed = []

    def someone_else_pushes_after_ours():
        if not pushed:
            pipeline.gitops.write(
                "helm/nexo-fe/values-develop.yaml", 'image:\n  tag: "2026.02.7"\n', "promote(nexo-fe)"
            )
            pushed.append(pipeline.gitops.head())
        return pipeline.gitops.head()

    application.head = someone_else_pushes_after_ours
    application.stuck_syncs = 1

    bad = promote_to_develop(pipeline, service, "2026.02.2")

    assert bad.failed_step == "sync"
    assert "Argo CD was asked to terminate its sync" in bad.error
    assert [request.path for request in argocd.terminate_requests] == ["/api/v1/applications/nexo-be-develop/operation"]
    rollback = Promotion.objects.get(kind=PromotionKind.ROLLBACK)
    assert rollback.state == PromotionState.VERIFIED, rollback.error
    assert pushed
    assert pushed[0] != bad.gitops_commit_sha


def degraded_once_deployed(monkeypatch, application, version):
    """The pods of `version` go Degraded once its sync is done (in its soak), and stay so whatever
    Argo CD syncs next (a rollback's manifests apply, and come up Degraded too)."""
    mark_deployed = transitions.mark_deployed

    def and_then_degraded(promotion, **kwargs):
        promotion = mark_deployed(promotion, **kwargs)
        if promotion.release.version == version:
            application.later_health = "Degraded"
        return promotion

    monkeypatch.setattr(transitions, "mark_deployed", and_then_degraded)


def test_a_soak_and_a_rollback_that_came_up_degraded_leave_the_place_degraded_not_healthy(
    pipeline, argocd, monkeypatch, viewer, client
):
    """The tester's bad day: the soak sees the release Degraded, the automatic rollback's manifests are
    applied and come up Degraded too. The board and the matrix say what Argo CD last said, and the cell
    says the rollback was applied, not that the failed release runs Healthy."""
    from tests.history import cell_html

    service = pipeline.add_service("nexo-be")
    pipeline.environments["qa"].auto_promote = False
    pipeline.environments["qa"].save()
    application = argocd.app("nexo-be-develop")
    good = promote_to_develop(pipeline, service, "2026.02.1")
    assert good.state == PromotionState.VERIFIED
    degraded_once_deployed(monkeypatch, application, "2026.02.2")

    bad = promote_to_develop(pipeline, service, "2026.02.2")

    assert (bad.state, bad.failed_step) == (PromotionState.FAILED, "verification"), bad.error
    assert "Argo CD reported nexo-be-develop Degraded" in bad.error
    rollback = Promotion.objects.get(kind=PromotionKind.ROLLBACK)
    assert (rollback.state, rollback.failed_step) == (PromotionState.FAILED, "sync")
    assert rollback.error.endswith(f"the sync to {rollback.gitops_commit_sha[:12]} itself succeeded.")
    assert rollback.applied_health == "Degraded"
    # No deployment of the rollback was recorded (it never came up healthy); the place's shows Degraded.
    running = Deployment.objects.current().get()
    assert (running.release.version, running.health) == ("2026.02.2", "Degraded")
    assert running.health_checked_at is not None
    client.force_login(viewer)
    cell = cell_html(client.get("/"), "nexo-be", "develop")
    assert ">Degraded</span>" in cell
    assert ">Healthy</span>" not in cell
    assert "2026.02.1</a> rollback applied, came up Degraded" in cell
    [row] = client.get("/api/v1/matrix/").json()
    assert row["environments"][0]["health"] == "Degraded"
    assert "Argo CD applied it, and it came up Degraded" in client.get(rollback.get_absolute_url()).content.decode()


def test_a_sync_that_came_up_degraded_where_people_decide_shows_the_place_degraded(pipeline, argocd, viewer, client):
    """No rollback follows: Argo CD runs the new release's manifests, Degraded. What ran before stays
    the place's deployment (the new one never came up healthy), with the health Argo CD reports now."""
    from tests.history import cell_html

    service = pipeline.add_service("nexo-be")
    develop = pipeline.environments["develop"]
    develop.rollback_on_failed_verification = False
    develop.save()
    pipeline.environments["qa"].auto_promote = False
    pipeline.environments["qa"].save()
    application = argocd.app("nexo-be-develop")
    assert promote_to_develop(pipeline, service, "2026.02.1").state == PromotionState.VERIFIED
    application.outcome = Outcome.DEGRADED

    bad = promote_to_develop(pipeline, service, "2026.02.2")

    assert (bad.state, bad.failed_step, bad.applied_health) == (PromotionState.FAILED, "sync", "Degraded")
    running = Deployment.objects.current().get()
    assert (running.release.version, running.health) == ("2026.02.1", "Degraded")
    client.force_login(viewer)
    cell = cell_html(client.get("/"), "nexo-be", "develop")
    assert ">Degraded</span>" in cell
    assert "2026.02.2</a> applied, came up Degraded" in cell


def test_argo_cd_out_of_reach_during_the_sync_is_said_on_the_promotion_page_and_in_the_log(
    pipeline, argocd, settings, viewer, client, caplog
):
    """The sync step asks again until ARGOCD_SYNC_TIMEOUT_SECONDS: meanwhile the page says why it waits,
    as the commit step's retries do, instead of an Argo CD sync merely "current"."""
    from django.db import connection

    settings.ARGOCD_SYNC_TIMEOUT_SECONDS = 60
    service = pipeline.add_service("nexo-be")
    pipeline.environments["qa"].auto_promote = False
    pipeline.environments["qa"].save()
    argocd.app("nexo-be-develop")
    argocd.stop()
    client.force_login(viewer)
    seen = {}

    def look_while_it_is_away():
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not seen:
                run = StepRun.objects.filter(step=Step.SYNC, status=RunStatus.RUNNING).exclude(error="").first()
                if run is not None:
                    seen["page"] = client.get(f"/promotions/{run.promotion_id}/").content.decode()
                time.sleep(0.05)
        finally:
            argocd.start()
            connection.close()

    watcher = threading.Thread(target=look_while_it_is_away)
    watcher.start()
    with caplog.at_level(logging.INFO, logger="releases.jobs"):
        promotion = promote_to_develop(pipeline, service, "2026.02.1")
    watcher.join()

    assert promotion.state == PromotionState.VERIFIED, promotion.error
    said = r"Argo CD unreachable since \d\d:\d\d:\d\d \(connection refused\); asking again until \d\d:\d\d:\d\d"
    assert re.search(said, seen.get("page", "")), "the promotion page, while Argo CD is away"
    logged = [record.getMessage() for record in caplog.records if record.name == "releases.jobs"]
    assert any(re.search(said, line) for line in logged), logged
    assert any("Argo CD answers again" in line for line in logged), logged
    assert not StepRun.objects.filter(step=Step.SYNC).exclude(error="").exists(), "nothing wrong once it answered"


DEVELOP_VALUES = "helm/nexo-be/values-develop.yaml"


def failed_at_sync_in_develop(pipeline, argocd):
    """nexo-be 2026.02.1 runs in develop, where people decide after a failure (no automatic rollback), and
    the promotion of 2026.02.2 failed at sync: its commit is on the branch, 2026.02.1 still runs."""
    service = pipeline.add_service("nexo-be")
    develop = pipeline.environments["develop"]
    develop.rollback_on_failed_verification = False
    develop.save()
    pipeline.environments["qa"].auto_promote = False
    pipeline.environments["qa"].save()
    application = argocd.app("nexo-be-develop")
    assert promote_to_develop(pipeline, service, "2026.02.1").state == PromotionState.VERIFIED
    application.outcome = Outcome.SYNC_FAILS
    return service, application


def drift_events():
    return AuditEvent.objects.filter(action__in=[AuditAction.DRIFT_DETECTED, AuditAction.DRIFT_RESOLVED])


def test_the_commit_of_a_promotion_whose_sync_failed_is_said_as_the_portals_own_not_as_drift(
    pipeline, argocd, viewer, client
):
    """The values file holds what the portal committed for a promotion that did not finish: the board,
    the matrix and the promotion's page say so, naming it, and the audit log records no drift."""
    from releases.reconciler import detect_drift
    from tests.history import cell_html

    service, _ = failed_at_sync_in_develop(pipeline, argocd)
    bad = promote_to_develop(pipeline, service, "2026.02.2")
    assert (bad.state, bad.failed_step, bad.applied_health) == (PromotionState.FAILED, "sync", "")

    assert detect_drift() == []
    assert detect_drift() == []

    running = Deployment.objects.current().get()
    assert (running.release.version, running.drifted_tag) == ("2026.02.1", "2026.02.2")
    assert running.drifted_tag_committed_by == bad
    assert not drift_events().exists()
    said = (
        f"{DEVELOP_VALUES} says 2026.02.2, committed by the portal for promotion #{bad.pk}, which failed at sync: "
        "2026.02.1 still runs, and a sync of the branch would apply 2026.02.2."
    )
    client.force_login(viewer)
    cell = cell_html(client.get("/"), "nexo-be", "develop")
    assert "outside the portal" not in cell
    assert f'<a class="badge warn" href="/promotions/{bad.pk}/" title="{said}">GitOps file says 2026.02.2</a>' in cell
    assert said in client.get(bad.get_absolute_url()).content.decode()
    [row] = client.get("/api/v1/matrix/").json()
    develop = row["environments"][0]
    assert (develop["gitops_tag"], develop["gitops_tag_promotion"]) == ("2026.02.2", bad.pk)


def test_the_commit_of_an_automatic_rollback_whose_sync_failed_is_said_as_the_portals_own_not_as_drift(
    pipeline, argocd, monkeypatch, viewer, client
):
    from releases.reconciler import detect_drift

    service = pipeline.add_service("nexo-be")
    pipeline.environments["qa"].auto_promote = False
    pipeline.environments["qa"].save()
    application = argocd.app("nexo-be-develop")
    assert promote_to_develop(pipeline, service, "2026.02.1").state == PromotionState.VERIFIED
    degraded_once_deployed(monkeypatch, application, "2026.02.2")
    promote_to_develop(pipeline, service, "2026.02.2")
    rollback = Promotion.objects.get(kind=PromotionKind.ROLLBACK)
    assert (rollback.state, rollback.failed_step, rollback.applied_health) == (
        PromotionState.FAILED,
        "sync",
        "Degraded",
    )

    assert detect_drift() == []

    running = Deployment.objects.current().get()
    assert (running.release.version, running.drifted_tag) == ("2026.02.2", "2026.02.1")
    assert running.drifted_tag_committed_by == rollback
    assert not drift_events().exists()
    client.force_login(viewer)
    assert (
        f"{DEVELOP_VALUES} says 2026.02.1, committed by the portal for rollback #{rollback.pk}, which failed at "
        "sync: Argo CD applied it, and it came up Degraded."
    ) in client.get(rollback.get_absolute_url()).content.decode()


def test_a_hand_edit_the_portals_failed_commit_replaced_is_audited_as_ended_naming_the_commit(pipeline, argocd):
    from releases.reconciler import detect_drift

    service, _ = failed_at_sync_in_develop(pipeline, argocd)
    text = pipeline.gitops.read(DEVELOP_VALUES)
    pipeline.gitops.write(DEVELOP_VALUES, text.replace("2026.02.1", "hotfix-by-hand"))
    running = Deployment.objects.current().get()
    assert detect_drift() == [running.pk]
    bad = promote_to_develop(pipeline, service, "2026.02.2")

    assert detect_drift() == []
    assert detect_drift() == []

    [resolved] = AuditEvent.objects.filter(action=AuditAction.DRIFT_RESOLVED)
    assert resolved.message == (
        f"{DEVELOP_VALUES} no longer says 'hotfix-by-hand'. {DEVELOP_VALUES} says 2026.02.2, committed by the "
        f"portal for promotion #{bad.pk}, which failed at sync: 2026.02.1 still runs, and a sync of the branch "
        "would apply 2026.02.2."
    )
    assert resolved.data == {"expected": "2026.02.1", "was": "hotfix-by-hand", "committed_by": bad.pk}


def test_a_hand_edit_after_the_portals_failed_commit_is_drift(pipeline, argocd):
    from releases.reconciler import detect_drift

    service, _ = failed_at_sync_in_develop(pipeline, argocd)
    promote_to_develop(pipeline, service, "2026.02.2")
    detect_drift()
    text = pipeline.gitops.read(DEVELOP_VALUES)
    pipeline.gitops.write(DEVELOP_VALUES, text.replace("2026.02.2", "hotfix-by-hand"))
    running = Deployment.objects.current().get()

    assert detect_drift() == [running.pk]
    assert detect_drift() == [running.pk]

    running.refresh_from_db()
    assert (running.drifted_tag, running.drifted_tag_committed_by) == ("hotfix-by-hand", None)
    [detected] = drift_events()
    assert detected.message == f"{DEVELOP_VALUES} says 'hotfix-by-hand' but the portal deployed 2026.02.1"


def test_the_values_file_put_back_to_what_runs_after_the_portals_failed_commit_clears_it_unaudited(
    pipeline, argocd, viewer, client
):
    from releases.reconciler import detect_drift

    service, _ = failed_at_sync_in_develop(pipeline, argocd)
    bad = promote_to_develop(pipeline, service, "2026.02.2")
    detect_drift()
    text = pipeline.gitops.read(DEVELOP_VALUES)
    pipeline.gitops.write(DEVELOP_VALUES, text.replace("2026.02.2", "2026.02.1"))

    assert detect_drift() == []

    running = Deployment.objects.current().get()
    assert (running.drifted_tag, running.drifted_tag_committed_by, running.drift_detected_at) == ("", None, None)
    assert not drift_events().exists()
    client.force_login(viewer)
    assert "committed by the portal" not in client.get(bad.get_absolute_url()).content.decode()


def test_an_older_release_the_portal_once_committed_written_back_by_hand_is_drift(pipeline, argocd):
    """Only the portal's last commit in the place is its own state: going back to an earlier one by hand
    (a revert, a cherry-pick of an old commit) is a change made outside the portal."""
    from releases.reconciler import detect_drift

    service, application = failed_at_sync_in_develop(pipeline, argocd)
    application.outcome = Outcome.HEALTHY
    assert promote_to_develop(pipeline, service, "2026.02.2").state == PromotionState.VERIFIED
    text = pipeline.gitops.read(DEVELOP_VALUES)
    pipeline.gitops.write(DEVELOP_VALUES, text.replace("2026.02.2", "2026.02.1"))
    running = Deployment.objects.current().get()

    assert detect_drift() == [running.pk]

    [detected] = drift_events()
    assert detected.message == f"{DEVELOP_VALUES} says '2026.02.1' but the portal deployed 2026.02.2"


def test_a_failed_commit_flagged_as_drift_before_is_said_anew_as_the_portals_own(pipeline, argocd):
    """A flag raised before the drift check knew the portal's own commits (before an upgrade): the same tag,
    now known for the portal's, ends the drift in the audit log without saying the file changed."""
    from django.utils import timezone

    from releases.reconciler import detect_drift

    service, _ = failed_at_sync_in_develop(pipeline, argocd)
    bad = promote_to_develop(pipeline, service, "2026.02.2")
    Deployment.objects.current().update(drifted_tag="2026.02.2", drift_detected_at=timezone.now())

    assert detect_drift() == []

    [resolved] = AuditEvent.objects.filter(action=AuditAction.DRIFT_RESOLVED)
    assert resolved.message == (
        f"{DEVELOP_VALUES}: '2026.02.2' was taken for a change made outside the portal. {DEVELOP_VALUES} says "
        f"2026.02.2, committed by the portal for promotion #{bad.pk}, which failed at sync: 2026.02.1 still runs, "
        "and a sync of the branch would apply 2026.02.2."
    )
