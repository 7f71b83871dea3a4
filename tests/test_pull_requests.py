"""Promotion by pull request: a GitHub stand-in speaking the REST API (tests/servers/github.py) with
the real bare GitOps repository behind it, a real RQ worker, real PostgreSQL and Redis."""

import json
from datetime import timedelta
from pathlib import Path

import git
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core import mail
from django.test import Client
from django.utils import timezone
from social_django.models import UserSocialAuth

from audit.models import AuditAction, AuditEvent
from environments.models import ChangeFreeze, DeliveryMode
from nexo_portal.lib import queues
from releases import approval_notices, confirmations, github_events, transitions
from releases.gitops import values
from releases.models import Promotion, PromotionState, PullRequestState, RunStatus, Step, StepRun
from releases.policy import PromotionError
from releases.reconciler import reconcile
from tests.factories import make_release, make_user
from tests.gitops import PERSON

REPOSITORY = "nexo-org/nexo-gitops"
WEBHOOK_SECRET = "webhook-secret-0123456789"


@pytest.fixture
def github(pipeline, github_server, settings, sam, sara, lead, rita, paulo):
    """The stand-in holding the GitOps repository, production delivered by pull request, and the
    portal's people signed in with GitHub (sam and sara as sam-gh and sara-gh)."""
    github_server.add_repository(REPOSITORY, pipeline.gitops.bare)
    github_server.add_account("nexo-portal-bot")
    for team in ("sre-team", "platform-leads"):
        github_server.add_team("nexo-org", team)
    settings.GITOPS_GITHUB_REPOSITORY = REPOSITORY
    settings.GITOPS_GITHUB_API_URL = github_server.api_url
    settings.GITOPS_GITHUB_TOKEN = github_server.issue_token("nexo-portal-bot", ["repo"])
    settings.GITHUB_WEBHOOK_SECRET = WEBHOOK_SECRET
    for user in (sam, sara, rita):
        account = github_server.add_account(f"{user.username}-gh")
        UserSocialAuth.objects.create(user=user, provider="github-org", uid=str(account.id))
    github_server.add_account("stranger")
    production = pipeline.environments["production"]
    production.delivery_mode = DeliveryMode.PULL_REQUEST
    production.save()
    github_server.repository = github_server.repositories[REPOSITORY]
    return github_server


@pytest.fixture
def release(pipeline, github, paulo):
    """nexo-be 2026.02.1 verified in staging (develop → qa automatically, staging approved by paulo)."""
    service = pipeline.add_service("nexo-be", tag="2026.01.45")
    release = make_release(service, "2026.02.1", changelog="- fix: authentication timeout")
    transitions.request_promotion(release, pipeline.environments["develop"], None, kind="auto")
    pipeline.run_jobs()
    staging = transitions.request_promotion(release, pipeline.environments["staging"], paulo)
    transitions.approve(staging, make_staging_approver())
    pipeline.run_jobs()
    staging.refresh_from_db()
    assert staging.state == PromotionState.VERIFIED
    return release


def make_staging_approver():
    return make_user("pat", groups=["platform-team"])


def request_production(pipeline, release, rita):
    promotion = transitions.request_promotion(release, pipeline.environments["production"], rita)
    pipeline.run_jobs()
    promotion.refresh_from_db()
    return promotion


def fresh(promotion):
    promotion.refresh_from_db()
    return promotion


def actions(promotion):
    return list(AuditEvent.objects.filter(promotion_id=promotion.pk).values_list("action", flat=True))


def test_a_production_promotion_opens_a_pull_request_named_after_it(pipeline, github, release, rita):
    promotion = request_production(pipeline, release, rita)

    assert promotion.state == PromotionState.AWAITING_APPROVAL
    assert (promotion.pr_number, promotion.pr_state) == (1, PullRequestState.OPEN)
    assert promotion.pr_branch == "promote/nexo-be-prod-2026.02.1"
    assert promotion.pr_url == f"{github.url}/{REPOSITORY}/pull/1"
    pull = github.repository.pulls[1]
    assert pull.title == "promote(nexo-be): production → 2026.02.1"
    assert (pull.head, pull.base) == ("promote/nexo-be-prod-2026.02.1", "main")
    assert pull.labels == ["production-deploy"]
    assert pull.requested_teams == ["sre-team", "platform-leads"]
    for section in ("## Changelog", "fix: authentication timeout", "## Validation", "Verified in staging"):
        assert section in pull.body
    assert '`image.tag` = "2026.01.45" (previous version)' in pull.body
    assert "Requested by rita." in pull.body
    # The branch holds the one-line change; main is untouched until the merge.
    path = "helm/nexo-be/values-prod.yaml"
    assert github.repository.git("show", f"{pull.head}:{path}").stdout.count('tag: "2026.02.1"') == 1
    assert values.read_value(pipeline.gitops.read(path), "image.tag", path) == "2026.01.45"
    assert promotion.pr_head_sha == github.repository.sha(pull.head)
    assert AuditAction.PULL_REQUEST_OPENED in actions(promotion)


def test_the_approvers_slack_message_links_the_pull_request_once_it_is_open(pipeline, github, release, rita, slack_api):
    promotion = request_production(pipeline, release, rita)

    posted, updated = slack_api.called("chat.postMessage")[0], slack_api.called("chat.update")[-1]
    assert "Pull request" not in posted["text"], "told before the pull request was opened"
    text = updated["blocks"][0]["text"]["text"]
    assert f"Review <{promotion.pr_url}|Pull request #1>: its approving reviews count too." in text
    buttons = {element["action_id"]: element for element in updated["blocks"][1]["elements"]}
    assert buttons["pull_request"]["url"] == promotion.pr_url
    assert {"approve", "reject", "open"} <= set(buttons), "the portal's own buttons stay"


def test_the_reminder_e_mail_links_the_pull_request(pipeline, github, release, rita, sara, settings):
    settings.APPROVAL_EMAILS = True
    sara.email = "sara@nexo.example"
    sara.save(update_fields=["email"])
    promotion = request_production(pipeline, release, rita)
    mail.outbox.clear()

    approval_notices.remind(promotion.pk)

    [reminder] = [message for message in mail.outbox if message.to == ["sara@nexo.example"]]
    assert f"Pull request #1, whose approving reviews count too: {promotion.pr_url}" in reminder.body


def test_one_approval_in_the_portal_and_one_review_on_github_merge_and_deploy(pipeline, github, release, rita, sam):
    promotion = request_production(pipeline, release, rita)
    transitions.approve(promotion, sam, "looks good")
    github.repository.review(1, "sara-gh", "APPROVED", "LGTM from SRE")
    reconcile()  # the poll reads the review; the merge follows
    pipeline.run_jobs()

    promotion = fresh(promotion)
    assert promotion.state == PromotionState.VERIFIED
    assert promotion.pr_state == PullRequestState.MERGED
    pull = github.repository.pulls[1]
    assert pull.merged
    assert pull.merged_by == "nexo-portal-bot"
    assert promotion.gitops_commit_sha == pull.merge_commit_sha == github.repository.sha("main")
    path = "helm/nexo-be/values-prod.yaml"
    assert values.read_value(pipeline.gitops.read(path), "image.tag", path) == "2026.02.1"
    approvals = {a.user.username: (a.github_review_id is not None, a.head_sha) for a in promotion.approvals.all()}
    assert approvals == {"sam": (False, promotion.pr_head_sha), "sara": (True, promotion.pr_head_sha)}
    review = AuditEvent.objects.get(promotion_id=promotion.pk, action=AuditAction.PROMOTION_APPROVED, actor="sara")
    assert review.data["via"]["via"] == "GitHub"
    assert review.data["comment"] == "LGTM from SRE"
    assert AuditAction.PULL_REQUEST_MERGED in actions(promotion)


def test_a_review_by_the_requester_or_by_someone_unknown_does_not_count(pipeline, github, release, rita, sam):
    promotion = request_production(pipeline, release, rita)
    github.repository.review(1, "rita-gh", "APPROVED")
    github.repository.review(1, "stranger", "APPROVED")
    transitions.approve(promotion, sam)
    reconcile()
    reconcile()  # each review is said once, not at every poll

    promotion = fresh(promotion)
    assert promotion.state == PromotionState.AWAITING_APPROVAL
    assert [a.user.username for a in promotion.approvals.all()] == ["sam"]
    ignored = AuditEvent.objects.filter(promotion_id=promotion.pk, action=AuditAction.PULL_REQUEST_REVIEW_IGNORED)
    messages = sorted(event.message for event in ignored)
    assert len(messages) == 2
    assert "rita-gh" in messages[0]
    assert "You requested this promotion" in messages[0]
    assert "stranger" in messages[1]
    assert "no portal user has signed in with this GitHub account" in messages[1]


def test_a_github_account_named_like_a_portal_user_does_not_approve_as_them(pipeline, github, release, rita, sam):
    """sam signed in as sam-gh; whoever holds the GitHub login "sam" (a second account, a login freed by
    a rename) is not sam: people are told apart by GitHub's numeric id, never by name."""
    promotion = request_production(pipeline, release, rita)
    github.add_account("sam")
    github.repository.review(1, "sam", "APPROVED")
    transitions.approve(promotion, sam)
    reconcile()

    promotion = fresh(promotion)
    assert promotion.state == PromotionState.AWAITING_APPROVAL
    assert [a.user.username for a in promotion.approvals.all()] == ["sam"]
    ignored = AuditEvent.objects.get(promotion_id=promotion.pk, action=AuditAction.PULL_REQUEST_REVIEW_IGNORED)
    assert "no portal user has signed in with this GitHub account" in ignored.message


PATH = "helm/nexo-be/values-prod.yaml"


def push_to_the_branch(pipeline, promotion, edits, message, author=("Someone Else", "someone@example.com")):
    """Someone other than the portal pushes a commit to the promotion's pull request, editing each file of
    `edits` (path → function of its text); the commit's SHA."""
    scratch = pipeline.gitops.scratch
    scratch.remotes.origin.fetch()
    scratch.git.checkout("-B", "tamper", f"origin/{promotion.pr_branch}")
    for path, edit in edits.items():
        file = Path(scratch.working_dir) / path
        file.write_text(edit(file.read_text()))
        scratch.index.add([path])
    person = git.Actor(*author)
    scratch.index.commit(message, author=person, committer=person)
    scratch.remotes.origin.push(f"HEAD:refs/heads/{promotion.pr_branch}")
    return scratch.head.commit.hexsha


def update_the_branch(pipeline, promotion):
    """GitHub's "Update branch": main moved (someone raised the memory limit in the promotion's values file,
    far from the tag), and is merged into the pull request's branch by a person; the merge's SHA."""
    pipeline.gitops.write(PATH, pipeline.gitops.read(PATH).replace("memory: 512Mi", "memory: 1Gi"))
    scratch = pipeline.gitops.scratch
    scratch.remotes.origin.fetch()
    scratch.git.checkout("-B", "update", f"origin/{promotion.pr_branch}")
    someone = {f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER") for what, value in PERSON.items()}
    scratch.git.merge("--no-ff", "-m", f"Merge branch 'main' into {promotion.pr_branch}", "origin/main", env=someone)
    scratch.remotes.origin.push(f"HEAD:refs/heads/{promotion.pr_branch}")
    return scratch.head.commit.hexsha


def synchronize(pipeline, sender, delivery="d-push"):
    """GitHub's signed `pull_request` delivery of a push to pull request #1."""
    body = json.dumps(
        {
            "action": "synchronize",
            "pull_request": {"number": 1},
            "repository": {"full_name": REPOSITORY},
            "sender": {"login": sender},
        }
    ).encode()
    return deliver(pipeline, "pull_request", body, delivery=delivery)


def test_a_pull_request_github_would_not_label_is_recorded_and_closed_by_a_cancel(pipeline, github, release, rita):
    """A secondary rate limit on the labels: the pull request is open on GitHub, so the portal records it
    at once (the label is a nicety, said in the audit), and a cancel meanwhile still closes it. Before,
    the step retried with the pull request unrecorded, and a cancel left it open on GitHub for good."""
    github.repository.labels_rate_limited = 100
    promotion = transitions.request_promotion(release, pipeline.environments["production"], rita)
    pipeline.run_jobs(
        until=lambda: (
            fresh(promotion).pr_number is not None
            or StepRun.objects.filter(promotion=promotion, status=RunStatus.RETRY).exists()
        )
    )

    promotion = fresh(promotion)
    assert (promotion.pr_number, promotion.pr_state) == (1, PullRequestState.OPEN)
    opened = AuditEvent.objects.get(promotion_id=promotion.pk, action=AuditAction.PULL_REQUEST_OPENED)
    assert "secondary rate limit" in opened.message
    github.requests.clear()
    transitions.cancel(promotion, rita, "wrong release")
    pipeline.run_jobs(until=lambda: True)  # the close job's first try, within GitHub's minute of quiet
    assert github.repository.pulls[1].state == "open"
    assert github.requests == [], "GitHub asked for a minute of quiet (Retry-After: 60)"

    github_waited_for(pipeline)
    queues.get_queue().empty()
    Promotion.objects.filter(pk=promotion.pk).update(updated_at=timezone.now() - timedelta(minutes=11))
    reconcile()
    pipeline.run_jobs()
    assert github.repository.pulls[1].state == "closed"
    assert fresh(promotion).pr_state == PullRequestState.CLOSED


def github_waited_for(pipeline):
    """The wait GitHub asked for has passed (its marker, shared by the portal's processes, expired)."""
    pipeline.redis.delete(*pipeline.redis.keys("nexo:github-rate-limited-until:*"))


def test_a_promotion_cancelled_while_github_opened_its_pull_request_closes_it(
    pipeline, github, release, rita, monkeypatch
):
    from releases.gitops.github import GitHub

    opened = GitHub.open_pull_request

    def rita_cancels_meanwhile(self, **fields):
        pull = opened(self, **fields)
        transitions.cancel(Promotion.objects.get(environment__name="production"), rita, "wrong release")
        return pull

    monkeypatch.setattr(GitHub, "open_pull_request", rita_cancels_meanwhile)
    github.repository.closes_failing = 1  # and GitHub fails the first close: the reconciler's turn
    promotion = request_production(pipeline, release, rita)

    assert (promotion.state, promotion.pr_number) == (PromotionState.CANCELLED, 1), "recorded, to be closed"
    Promotion.objects.filter(pk=promotion.pk).update(updated_at=timezone.now() - timedelta(minutes=11))
    queues.get_queue().empty()  # the close job's own retries, given up on
    reconcile()
    pipeline.run_jobs()

    pull = github.repository.pulls[1]
    assert pull.state == "closed"
    assert fresh(promotion).pr_state == PullRequestState.CLOSED
    assert pull.comments == [  # once, though the first close failed after the comment
        (
            "nexo-portal-bot",
            f"Closed by the Nexo Release Portal: promotion #{promotion.pk} was cancelled while this pull request "
            f"was opened\n\n<!-- nexo-portal:close:{promotion.pk} -->",
        )
    ]


def test_a_pull_request_github_did_not_close_in_time_is_closed_by_the_reconciler(pipeline, github, release, rita):
    """Rejected while GitHub was out for longer than the close job's three retries (or Redis was
    down when it was queued): the reconciler asks again, every ten minutes, until it is closed."""
    promotion = request_production(pipeline, release, rita)
    transitions.cancel(promotion, rita, "wrong release")
    queues.get_queue().empty()  # the close job, given up on
    Promotion.objects.filter(pk=promotion.pk).update(updated_at=timezone.now() - timedelta(minutes=5))
    reconcile()
    pipeline.run_jobs()
    assert github.repository.pulls[1].state == "open", "not yet: the job may still be retrying"

    Promotion.objects.filter(pk=promotion.pk).update(updated_at=timezone.now() - timedelta(minutes=11))
    reconcile()
    pipeline.run_jobs()

    assert github.repository.pulls[1].state == "closed"
    assert fresh(promotion).pr_state == PullRequestState.CLOSED
    assert github.repository.pulls[1].comments == [
        (
            "nexo-portal-bot",
            f"Closed by the Nexo Release Portal: promotion #{promotion.pk} is cancelled\n\n"
            f"<!-- nexo-portal:close:{promotion.pk} -->",
        )
    ]


def test_a_close_github_refused_after_the_comment_is_retried_without_commenting_again(pipeline, github, release, rita):
    """GitHub took the portal's comment, then refused the close with a secondary rate limit (as it meets
    content-creating requests in quick succession). The retry finds the comment by its marker and only
    closes: one comment on the pull request, not one per try."""
    promotion = request_production(pipeline, release, rita)
    github.repository.closes_rate_limited = 1
    transitions.cancel(promotion, rita, "wrong release")
    pipeline.run_jobs(until=lambda: True)  # the close job's first try
    pull = github.repository.pulls[1]
    assert (pull.state, len(pull.comments)) == ("open", 1)

    github_waited_for(pipeline)
    pipeline.run_jobs()  # the close job's own retry

    assert pull.state == "closed"
    assert fresh(promotion).pr_state == PullRequestState.CLOSED
    assert pull.comments == [
        (
            "nexo-portal-bot",
            "Closed by the Nexo Release Portal: cancelled by rita: wrong release\n\n"
            f"<!-- nexo-portal:close:{promotion.pk} -->",
        )
    ]


def test_github_refusing_the_portals_token_fails_the_promotion_with_githubs_words(
    pipeline, github, release, rita, settings
):
    """A revoked token is the portal's setup, said at once: not a crash retried until it "crashed 3
    times in a row", with a stack trace in the worker's log."""
    settings.GITOPS_GITHUB_TOKEN = "ghp_revoked0000000000000000000000000000"
    promotion = request_production(pipeline, release, rita)

    assert (promotion.state, promotion.failed_step) == (PromotionState.FAILED, "commit")
    assert "GitHub answered 401: Bad credentials" in promotion.error
    assert "crashed" not in promotion.error
    assert not StepRun.objects.filter(promotion=promotion, status=RunStatus.CRASHED).exists()


def test_a_pull_request_merged_by_hand_before_the_portal_closed_it_is_said_not_closed(pipeline, github, release, rita):
    """Cancelled while GitHub was out; someone merged the pull request before the portal could close it:
    no "Closed by the portal" comment on a merged pull request, and the audit log says what happened."""
    promotion = request_production(pipeline, release, rita)
    transitions.cancel(promotion, rita, "wrong release")
    queues.get_queue().empty()  # the close job, lost in the outage
    github.repository.merge_by_hand(1, "sara-gh")
    Promotion.objects.filter(pk=promotion.pk).update(updated_at=timezone.now() - timedelta(minutes=11))

    reconcile()
    pipeline.run_jobs()

    promotion = fresh(promotion)
    assert promotion.pr_state == PullRequestState.MERGED
    assert github.repository.pulls[1].comments == []
    merged = AuditEvent.objects.get(promotion_id=promotion.pk, action=AuditAction.PULL_REQUEST_MERGED)
    assert "was merged on GitHub by sara-gh" in merged.message
    assert "after the promotion was cancelled" in merged.message


def test_the_reconcilers_round_stops_asking_github_once_it_is_rate_limited(pipeline, github, release, rita):
    """The token's hourly budget spent (403, x-ratelimit-remaining 0): one refused read ends the round's
    polling, instead of spending a request on every open pull request, every round, for the hour."""
    request_production(pipeline, release, rita)
    other = make_release(pipeline.add_service("nexo-fe", tag="2026.01.3"), "2026.02.1")
    transitions.request_promotion(other, pipeline.environments["develop"], None, kind="auto")
    pipeline.run_jobs()
    staging = transitions.request_promotion(other, pipeline.environments["staging"], rita)
    transitions.approve(staging, make_user("pat-fe", groups=["platform-team"]))
    pipeline.run_jobs()
    request_production(pipeline, other, rita)
    assert Promotion.objects.filter(pr_state=PullRequestState.OPEN).count() == 2
    github.rate_limited = True
    github.requests.clear()

    reconcile()

    reads = [path for method, path in github.requests if method == "GET" and "/pulls/" in path]
    assert len(reads) == 1, reads


def test_a_merge_github_rate_limits_waits_for_the_reset_asking_nothing_meanwhile(
    pipeline, github, release, rita, sam, sara, client
):
    """The token's hourly budget spent (403, x-ratelimit-remaining 0, reset in an hour): GitHub's docs
    say not to ask again before the reset, or the integration may be banned. The merge is tried again
    after the reset, not every 5–60 s of the backoff, and no other process asks meanwhile."""
    promotion = request_production(pipeline, release, rita)
    github.rate_limited = True
    transitions.approve(promotion, sam)
    transitions.approve(promotion, sara)
    pipeline.run_jobs(until=lambda: StepRun.objects.filter(promotion=promotion, status=RunStatus.RETRY).exists())

    retried = StepRun.objects.get(promotion=promotion, status=RunStatus.RETRY)
    assert "API rate limit exceeded" in retried.error
    next_try = StepRun.objects.filter(promotion=promotion).open().get()
    assert next_try.run_after > timezone.now() + timedelta(minutes=59)
    client.force_login(rita)
    page = client.get(promotion.get_absolute_url()).content.decode()
    assert "Next try at" in page
    github.requests.clear()
    reconcile()  # the poll of open pull requests, in another process
    assert github.requests == []

    github.rate_limited = False  # the reset has come
    github_waited_for(pipeline)
    StepRun.objects.filter(pk=next_try.pk).update(run_after=timezone.now() - timedelta(minutes=1))
    reconcile()  # hands RQ the run it holds scheduled for an hour from now
    pipeline.run_jobs()

    assert fresh(promotion).state == PromotionState.VERIFIED
    assert github.repository.pulls[1].merged


def test_an_update_branch_push_voids_the_approvals_and_still_merges(pipeline, github, release, rita, sam, sara):
    """GitHub's "Update branch" brings into the pull request only what is on main already: the head still
    carries the portal's change alone, so the promotion goes on (approvals bind to the head: given again),
    and main gets both the tag and what was merged into it meanwhile."""
    promotion = request_production(pipeline, release, rita)
    transitions.approve(promotion, sam)
    update_the_branch(pipeline, promotion)

    assert synchronize(pipeline, "mallory").status_code == 202

    promotion = fresh(promotion)
    assert promotion.state == PromotionState.AWAITING_APPROVAL
    assert promotion.pr_head_sha == github.repository.sha(promotion.pr_branch)
    assert promotion.approvals.count() == 0
    pushed = AuditEvent.objects.get(promotion_id=promotion.pk, action=AuditAction.PULL_REQUEST_PUSHED)
    assert "mallory pushed" in pushed.message
    assert "the approvals of sam were voided" in pushed.message
    # A review of the old head does not count either; approvals on the new head do.
    github.repository.review(1, "sara-gh", "APPROVED", commit_id=pushed.data["previous_head"])
    reconcile()
    assert fresh(promotion).approvals.count() == 0
    transitions.approve(promotion, sam)
    transitions.approve(promotion, sara)
    pipeline.run_jobs()
    promotion = fresh(promotion)
    assert promotion.state == PromotionState.VERIFIED, promotion.error
    assert github.repository.pulls[1].merged
    merged = pipeline.gitops.read(PATH)
    assert values.read_value(merged, "image.tag", PATH) == "2026.02.1"
    assert "memory: 1Gi" in merged


def test_main_moving_on_beside_the_pull_request_does_not_stop_it(pipeline, github, release, rita, sam, sara):
    """Another change lands on main while the pull request waits (not merged into its branch): held against
    main's tip, the head would seem to undo it; held against the merge base, it carries the portal's change
    alone, and the merge keeps both."""
    promotion = request_production(pipeline, release, rita)
    pipeline.gitops.write(PATH, pipeline.gitops.read(PATH).replace("memory: 512Mi", "memory: 1Gi"))

    promotion = approve_twice(pipeline, promotion, sam, sara)

    assert promotion.state == PromotionState.VERIFIED, promotion.error
    merged = pipeline.gitops.read(PATH)
    assert values.read_value(merged, "image.tag", PATH) == "2026.02.1"
    assert "memory: 1Gi" in merged


def test_a_push_after_a_merge_github_failed_voids_the_approvals_instead_of_sticking(
    pipeline, github, release, rita, sam, sara
):
    """GitHub answered the merge with a 502 (nothing merged), and someone updated the branch before the
    retry: the approvals were given on another commit, so the promotion awaits approval again, as an
    approved one would. Before, it stayed committing for good, retried and never merged, and could not be
    cancelled."""
    promotion = request_production(pipeline, release, rita)
    github.repository.merges_failing = 1
    transitions.approve(promotion, sam)
    transitions.approve(promotion, sara)
    pipeline.run_jobs(until=lambda: StepRun.objects.filter(promotion=promotion, status=RunStatus.RETRY).exists())
    assert fresh(promotion).state == PromotionState.COMMITTING

    update_the_branch(pipeline, promotion)
    pipeline.run_jobs()

    promotion = fresh(promotion)
    assert promotion.state == PromotionState.AWAITING_APPROVAL
    assert promotion.commit_started_at is None
    assert promotion.approvals.count() == 0
    assert promotion.pr_head_sha == github.repository.sha(promotion.pr_branch)
    assert not StepRun.objects.filter(promotion=promotion).open().exists()
    assert not github.repository.pulls[1].merged
    pushed = AuditEvent.objects.get(promotion_id=promotion.pk, action=AuditAction.PULL_REQUEST_PUSHED)
    assert "the approvals of sam, sara were voided" in pushed.message
    transitions.approve(promotion, sam)
    transitions.approve(promotion, sara)
    pipeline.run_jobs()
    assert fresh(promotion).state == PromotionState.VERIFIED


def test_a_push_carrying_changes_the_portal_did_not_write_is_never_merged(pipeline, github, release, rita, sam, sara):
    """The tester's report: sara pushed to the pull request another image repository for nexo-be and
    another production tag for nexo-fe, then approved on GitHub. Before, the push only voided sam's
    approval; sara's review and a new approval made the quorum, and main got both changes."""
    frontend = pipeline.add_service("nexo-fe", team="frontend-team", tag="2026.01.3")
    frontends = frontend.values_path(pipeline.environments["production"])
    promotion = request_production(pipeline, release, rita)
    transitions.approve(promotion, sam)
    tweak = push_to_the_branch(
        pipeline,
        promotion,
        {
            PATH: lambda text: text.replace("ghcr.io/nexo-org/nexo-be", "evil.example/backdoored-be"),
            frontends: lambda text: text.replace('tag: "2026.01.3"', 'tag: "2025.09.1"'),
        },
        "tweak",
        author=("Sara", "sara@nexo.example"),
    )

    assert synchronize(pipeline, "sara-gh").status_code == 202
    github.repository.review(1, "sara-gh", "APPROVED", "LGTM")  # her own push, at its head
    reconcile()
    pipeline.run_jobs()  # the close job

    promotion = fresh(promotion)
    assert (promotion.state, promotion.failed_step) == (PromotionState.FAILED, "commit")
    assert promotion.error.startswith(
        "Pull request #1 carries changes the portal did not write, so it is not merged: against main, its head "
        f"{tweak[:7]} changes {frontends} and changes {PATH} beyond image.tag → 2026.02.1. "
        f"sara-gh pushed {tweak[:7]} “tweak” by Sara <sara@nexo.example>, touching {PATH}, {frontends}."
    )
    pull = github.repository.pulls[1]
    assert (pull.merged, pull.state) == (False, "closed")
    assert promotion.error in pull.comments[-1][1]
    main = pipeline.gitops.read(PATH)
    assert "ghcr.io/nexo-org/nexo-be" in main
    assert "evil.example" not in main
    assert values.read_value(main, "image.tag", PATH) == "2026.01.45"
    assert values.read_value(pipeline.gitops.read(frontends), "image.tag", frontends) == "2026.01.3"
    assert [approval.user.username for approval in promotion.approvals.all()] == ["sam"]
    pushed = AuditEvent.objects.get(promotion_id=promotion.pk, action=AuditAction.PULL_REQUEST_PUSHED)
    assert f"sara-gh pushed {tweak[:7]} to pull request #1, carrying changes the portal did not write" in pushed.message
    assert pushed.data["foreign_commits"] == [
        {"sha": tweak, "author": "Sara <sara@nexo.example>", "subject": "tweak", "paths": [PATH, frontends]}
    ]
    with pytest.raises(PromotionError):
        transitions.approve(promotion, sara)


def test_the_approve_dialog_and_the_page_show_what_the_pull_request_carries(pipeline, github, release, rita, sam):
    """The diff an approver sees is the pull request's, read from its head; a push it will not merge is said
    there at once, before any webhook. Before, both showed the one-line diff read from main."""
    promotion = request_production(pipeline, release, rita)
    client = Client()
    client.force_login(sam)
    approve = f"/promotions/{promotion.pk}/approve/"

    dialog = client.get(approve, headers={"HX-Request": "true", "HX-Target": "dialog-body"}).content.decode()
    assert '<span class="add">+  tag: &quot;2026.02.1&quot;</span>' in dialog
    assert f'Read from the head of pull request #1, <span class="mono">{promotion.pr_head_sha[:12]}</span>' in dialog

    scaled_down = push_to_the_branch(
        pipeline, promotion, {PATH: lambda text: text.replace("replicaCount: 2", "replicaCount: 0")}, "save money"
    )
    refused = (
        "Pull request #1 carries changes the portal did not write, so it is not merged: against main, its head "
        f"{scaled_down[:7]} changes {PATH} beyond image.tag → 2026.02.1."
    )
    dialog = client.get(approve, headers={"HX-Request": "true", "HX-Target": "dialog-body"}).content.decode()
    assert refused in dialog
    assert refused in client.get(promotion.get_absolute_url()).content.decode()


def test_the_dialogs_say_a_pull_request_is_opened_and_merged_not_a_commit_pushed(
    pipeline, github, release, rita, sam, sara
):
    """Before, the request and approve dialogs said "pushes one commit" in pull-request delivery too."""
    production = pipeline.environments["production"]
    requesting = confirmations.for_request(release, production, rita).consequences
    assert (
        f"The portal sets image.tag to 2026.02.1 in {PATH} on the branch promote/nexo-be-prod-2026.02.1 and opens "
        "a pull request, “promote(nexo-be): production → 2026.02.1”; it merges it once approved, and only while it "
        "carries that change alone."
    ) in requesting
    assert not [line for line in requesting if "pushes one commit" in line]

    promotion = request_production(pipeline, release, rita)
    transitions.approve(promotion, sam)
    approving = confirmations.for_approve(fresh(promotion), sara).consequences
    assert "Yours is approval 2 of 2: the portal merges pull request #1 as soon as you approve." in approving
    assert (
        f"Pull request #1 (promote/nexo-be-prod-2026.02.1) sets image.tag to 2026.02.1 in {PATH}; the portal merges "
        "it once approved, and only while it carries that change alone."
    ) in approving
    assert not [line for line in approving if "pushes one commit" in line]


def test_a_push_nobody_told_the_portal_of_is_refused_at_the_merge(pipeline, github, release, rita, sam, sara):
    """No webhook came (or the poll had not run): the quorum is reached on the head the portal knows, and
    the merge step finds another head, whose values file scales the service to nothing."""
    promotion = request_production(pipeline, release, rita)
    transitions.approve(promotion, sam)
    scaled_down = push_to_the_branch(
        pipeline, promotion, {PATH: lambda text: text.replace("replicaCount: 2", "replicaCount: 0")}, "save money"
    )
    transitions.approve(promotion, sara)
    pipeline.run_jobs()

    promotion = fresh(promotion)
    assert (promotion.state, promotion.failed_step) == (PromotionState.FAILED, "commit")
    assert f"its head {scaled_down[:7]} changes {PATH} beyond image.tag → 2026.02.1." in promotion.error
    assert (
        f"Someone other than the portal pushed {scaled_down[:7]} “save money” by Someone Else "
        f"<someone@example.com>, touching {PATH}." in promotion.error
    )
    pull = github.repository.pulls[1]
    assert (pull.merged, pull.state) == (False, "closed")
    main = pipeline.gitops.read(PATH)
    assert "replicaCount: 2" in main
    assert values.read_value(main, "image.tag", PATH) == "2026.01.45"


def test_changes_requested_rejects_the_promotion_in_the_reviewers_words(pipeline, github, release, rita):
    promotion = request_production(pipeline, release, rita)
    github.repository.review(1, "sara-gh", "CHANGES_REQUESTED", "Wait for the incident review first.")
    reconcile()

    promotion = fresh(promotion)
    assert promotion.state == PromotionState.REJECTED
    rejection = promotion.approvals.get()
    assert (rejection.user.username, rejection.comment) == ("sara", "Wait for the incident review first.")


def test_changes_requested_by_someone_who_approved_rejects_instead_of_being_ignored(
    pipeline, github, release, rita, sam
):
    """sam approved in the portal, then requested changes on GitHub ("wait, found a bug"). That review
    was ignored as "already decided", and sara's approving review merged the pull request with sam's
    request for changes standing. His latest review supersedes his approval, as on GitHub: rejected."""
    promotion = request_production(pipeline, release, rita)
    transitions.approve(promotion, sam, "looks good")
    github.repository.review(1, "sam-gh", "CHANGES_REQUESTED", "wait, found a bug")
    reconcile()
    github.repository.review(1, "sara-gh", "APPROVED", "LGTM")
    reconcile()
    pipeline.run_jobs()

    promotion = fresh(promotion)
    assert promotion.state == PromotionState.REJECTED
    rejection = promotion.approvals.get()
    assert (rejection.user.username, rejection.decision, rejection.comment) == ("sam", "reject", "wait, found a bug")
    rejected = AuditEvent.objects.get(promotion_id=promotion.pk, action=AuditAction.PROMOTION_REJECTED)
    assert rejected.message == (
        "nexo-be 2026.02.1 → production rejected by sam in GitHub; this withdraws the approval they gave earlier"
    )
    assert rejected.data["withdrawn_approval"]["comment"] == "looks good"
    assert AuditAction.PULL_REQUEST_REVIEW_IGNORED not in actions(promotion)
    pull = github.repository.pulls[1]
    assert (pull.state, pull.merged) == ("closed", False)


def test_closing_the_pull_request_cancels_the_promotion(pipeline, github, release, rita):
    promotion = request_production(pipeline, release, rita)
    github.repository.close(1)
    body = json.dumps(
        {
            "action": "closed",
            "pull_request": {"number": 1},
            "repository": {"full_name": REPOSITORY},
            "sender": {"login": "sara-gh"},
        }
    ).encode()
    assert deliver(pipeline, "pull_request", body).status_code == 202

    promotion = fresh(promotion)
    assert (promotion.state, promotion.pr_state) == (PromotionState.CANCELLED, PullRequestState.CLOSED)
    cancelled = AuditEvent.objects.get(promotion_id=promotion.pk, action=AuditAction.PROMOTION_CANCELLED)
    assert "closed on GitHub by sara-gh" in cancelled.message


def approve_twice(pipeline, promotion, sam, sara):
    transitions.approve(promotion, sam)
    transitions.approve(promotion, sara)
    pipeline.run_jobs()
    return fresh(promotion)


def test_failing_checks_refuse_the_merge_with_their_names(pipeline, github, release, rita, sam, sara):
    promotion = request_production(pipeline, release, rita)
    github.repository.check_runs[promotion.pr_head_sha] = [
        {"name": "helm-lint", "status": "completed", "conclusion": "success"},
        {"name": "kubeconform", "status": "completed", "conclusion": "failure"},
    ]
    promotion = approve_twice(pipeline, promotion, sam, sara)

    assert (promotion.state, promotion.failed_step) == (PromotionState.FAILED, "commit")
    assert "Checks failed on" in promotion.error
    assert "kubeconform (failure)" in promotion.error
    assert not github.repository.pulls[1].merged
    assert github.repository.pulls[1].state == "closed"  # nobody merges what the portal will not deploy


def test_branch_protection_refusing_the_merge_says_what_github_said(pipeline, github, release, rita, sam, sara):
    promotion = request_production(pipeline, release, rita)
    github.repository.protection_message = "At least 2 approving reviews are required by reviewers with write access."
    promotion = approve_twice(pipeline, promotion, sam, sara)

    assert promotion.state == PromotionState.FAILED
    assert promotion.error == (
        "GitHub refused to merge pull request #1: Cannot merge pull request #1: GitHub answered 405: "
        "At least 2 approving reviews are required by reviewers with write access."
    )


def test_a_merge_racing_another_on_the_base_branch_is_tried_again(pipeline, github, release, rita, sam, sara):
    """GitHub's 405 "Base branch was modified. Review and try the merge again.": another pull request
    merged into the base in the same instant, as when several services promote at once."""
    promotion = request_production(pipeline, release, rita)
    github.repository.merges_racing = 1
    promotion = approve_twice(pipeline, promotion, sam, sara)

    assert promotion.state == PromotionState.VERIFIED, promotion.error
    assert github.repository.pulls[1].merged
    retried = StepRun.objects.get(promotion=promotion, step=Step.COMMIT, status=RunStatus.RETRY)
    assert "Base branch was modified" in retried.error


def test_a_required_check_not_reported_yet_is_waited_for_not_failed(pipeline, github, release, rita, sam, sara):
    """Branch protection requires a check that CI has not reported yet (the quorum was fast, or a rollback
    needed no approval): GitHub's 405 "Required status check … is expected." is asked again, not a failure."""
    promotion = request_production(pipeline, release, rita)
    github.repository.protection_message = 'Required status check "kubeconform" is expected.'
    transitions.approve(promotion, sam)
    transitions.approve(promotion, sara)
    pipeline.run_jobs(until=lambda: StepRun.objects.filter(promotion=promotion, status=RunStatus.RETRY).exists())
    assert fresh(promotion).state in (PromotionState.APPROVED, PromotionState.COMMITTING)

    github.repository.protection_message = None  # CI reported, green
    for run in StepRun.objects.filter(promotion=promotion).open():
        StepRun.objects.filter(pk=run.pk).update(run_after=timezone.now())
    pipeline.run_jobs()

    assert fresh(promotion).state == PromotionState.VERIFIED
    assert github.repository.pulls[1].merged


def test_a_base_that_moved_in_a_conflicting_way_is_not_merged(pipeline, github, release, rita, sam, sara):
    promotion = request_production(pipeline, release, rita)
    path = "helm/nexo-be/values-prod.yaml"
    pipeline.gitops.write(path, pipeline.gitops.read(path).replace('tag: "2026.01.45"', 'tag: "2026.01.46"'))
    promotion = approve_twice(pipeline, promotion, sam, sara)

    assert promotion.state == PromotionState.FAILED
    assert "GitHub cannot merge pull request #1 (mergeable_state: dirty)" in promotion.error


def deliver(pipeline, event, body, *, signature=None, delivery="d-1"):
    return Client().post(
        "/api/v1/webhooks/github/",
        body,
        content_type="application/json",
        headers={
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": signature or github_events.signature_for(WEBHOOK_SECRET, body),
        },
    )


def test_webhook_deliveries_are_verified_and_replays_change_nothing(pipeline, github, release, rita, sam):
    promotion = request_production(pipeline, release, rita)
    github.repository.review(1, "sara-gh", "APPROVED", "ok")
    body = json.dumps(
        {"action": "submitted", "pull_request": {"number": 1}, "repository": {"full_name": REPOSITORY}}
    ).encode()

    forged = deliver(pipeline, "pull_request_review", body, signature="sha256=" + "0" * 64)
    assert forged.status_code == 401
    assert fresh(promotion).approvals.count() == 0

    assert deliver(pipeline, "pull_request_review", body).json()["outcome"].endswith("awaiting approval")
    assert [a.user.username for a in fresh(promotion).approvals.all()] == ["sara"]
    replay = deliver(pipeline, "pull_request_review", body)
    assert replay.json() == {"outcome": "ignored: this delivery was handled already"}
    # Even under a new delivery id, the review is acted on once.
    deliver(pipeline, "pull_request_review", body, delivery="d-2")
    assert fresh(promotion).approvals.count() == 1
    assert actions(promotion).count(AuditAction.PROMOTION_APPROVED) == 1


def test_a_github_app_installation_token_is_used_when_configured(pipeline, github, release, rita, settings):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    github.add_app("4242", public_pem, "77", "nexo-portal[bot]")
    settings.GITOPS_GITHUB_TOKEN = ""
    settings.GITOPS_GITHUB_APP_ID = "4242"
    settings.GITOPS_GITHUB_APP_INSTALLATION_ID = "77"
    settings.GITOPS_GITHUB_APP_PRIVATE_KEY = private_pem

    promotion = request_production(pipeline, release, rita)

    assert promotion.pr_number == 1
    assert github.repository.pulls[1].author == "nexo-portal[bot]"
    assert ("POST", "/api/v3/app/installations/77/access_tokens") in github.requests


def test_direct_mode_environments_are_unchanged(pipeline, github, release, paulo, rita):
    staging = Promotion.objects.get(release=release, environment=pipeline.environments["staging"])
    assert staging.pr_number is None
    assert staging.pr_url == ""
    assert github.repository.pulls == {}


def test_the_promotion_page_the_board_the_audit_export_and_the_api_show_the_pull_request(
    pipeline, github, release, rita, client
):
    promotion = request_production(pipeline, release, rita)
    client.force_login(rita)
    link = f'href="{promotion.pr_url}"'

    page = client.get(promotion.get_absolute_url()).content.decode()
    assert link in page
    assert "promote/nexo-be-prod-2026.02.1" in page
    board = client.get("/").content.decode()
    assert f'{link} rel="noopener">PR #1 (open)</a>' in board
    exported = json.loads(b"".join(client.get("/audit/export.json", {"per": "step"}).streaming_content))
    opened = next(record for record in exported if record["event"] == AuditAction.PULL_REQUEST_OPENED)
    assert opened["pr_url"] == promotion.pr_url
    api = client.get(f"/api/v1/promotions/{promotion.pk}/").json()
    assert (api["pr_url"], api["pr_number"], api["pr_state"]) == (promotion.pr_url, 1, "open")


def test_rejecting_in_the_portal_closes_the_pull_request_saying_why(pipeline, github, release, rita, sam):
    promotion = request_production(pipeline, release, rita)
    transitions.reject(promotion, sam, "Not during the sale.")
    pipeline.run_jobs()

    assert fresh(promotion).pr_state == PullRequestState.CLOSED
    pull = github.repository.pulls[1]
    assert pull.state == "closed"
    assert not pull.merged
    assert pull.comments == [
        (
            "nexo-portal-bot",
            "Closed by the Nexo Release Portal: rejected by sam: Not during the sale.\n\n"
            f"<!-- nexo-portal:close:{promotion.pk} -->",
        )
    ]


def promote_to_production(pipeline, github, release, rita, sam, sara):
    """`release` through develop, qa and staging, then production by pull request; the promotion."""
    transitions.request_promotion(release, pipeline.environments["develop"], None, kind="auto")
    pipeline.run_jobs()
    staging = transitions.request_promotion(release, pipeline.environments["staging"], rita)
    transitions.approve(staging, make_user("pat-" + release.version.replace(".", ""), groups=["platform-team"]))
    pipeline.run_jobs()
    production = request_production(pipeline, release, rita)
    return approve_twice(pipeline, production, sam, sara)


def test_a_rollback_there_is_a_pull_request_to_the_previous_version(pipeline, github, release, rita, sam, sara):
    first = approve_twice(pipeline, request_production(pipeline, release, rita), sam, sara)
    assert first.state == PromotionState.VERIFIED
    second = promote_to_production(pipeline, github, make_release(release.service, "2026.02.2"), rita, sam, sara)
    assert second.state == PromotionState.VERIFIED

    rollback = transitions.request_rollback(release.service, pipeline.environments["production"], sam)
    pipeline.run_jobs()
    rollback = fresh(rollback)
    assert rollback.pr_branch == "rollback/nexo-be-prod-2026.02.1"
    pull = github.repository.pulls[rollback.pr_number]
    assert pull.title == "rollback(nexo-be): production → 2026.02.1"
    assert '`image.tag` = "2026.02.2" (previous version)' in pull.body
    # What it takes out, as its commit says; not the changelog of 2026.02.1, which it goes back to.
    assert "## Changelog\nTaken out by this rollback, newest first:\n\n### 2026.02.2\n" in pull.body
    assert "fix: authentication timeout" not in pull.body
    github.repository.review(rollback.pr_number, "sara-gh", "APPROVED")
    reconcile()
    pipeline.run_jobs()

    assert fresh(rollback).state == PromotionState.VERIFIED
    assert fresh(second).state == PromotionState.ROLLED_BACK
    path = "helm/nexo-be/values-prod.yaml"
    assert values.read_value(pipeline.gitops.read(path), "image.tag", path) == "2026.02.1"


def test_a_review_dismissed_on_github_no_longer_counts(pipeline, github, release, rita, sam):
    promotion = request_production(pipeline, release, rita)
    review = github.repository.review(1, "sara-gh", "APPROVED")
    reconcile()
    assert fresh(promotion).approvals.count() == 1
    github.repository.dismiss(1, review.id)
    reconcile()

    promotion = fresh(promotion)
    assert promotion.approvals.count() == 0
    transitions.approve(promotion, sam)
    assert fresh(promotion).state == PromotionState.AWAITING_APPROVAL  # one of two
    voided = AuditEvent.objects.get(promotion_id=promotion.pk, action=AuditAction.PULL_REQUEST_REVIEW_IGNORED)
    assert "dismissed on GitHub" in voided.message


def approved_with_checks_running(pipeline, github, release, rita, sam):
    """A production promotion approved by sam in the portal and sara-gh on GitHub, its merge waiting for
    a check still running: the promotion, and sara-gh's review."""
    promotion = request_production(pipeline, release, rita)
    github.repository.check_runs[promotion.pr_head_sha] = [{"name": "kubeconform", "status": "in_progress"}]
    transitions.approve(promotion, sam)
    review = github.repository.review(1, "sara-gh", "APPROVED")
    reconcile()
    pipeline.run_jobs(until=lambda: StepRun.objects.filter(promotion=promotion, status=RunStatus.RETRY).exists())
    return promotion, review


def test_a_review_dismissed_after_the_quorum_is_not_merged_on(pipeline, github, release, rita, sam):
    """Quorum reached, the merge waits for checks still running; meanwhile the review that made the
    quorum is dismissed on GitHub. The merge step reads the reviews last: no quorum, no merge."""
    promotion, review = approved_with_checks_running(pipeline, github, release, rita, sam)
    assert fresh(promotion).state == PromotionState.APPROVED

    github.repository.dismiss(1, review.id)
    github.repository.check_runs[promotion.pr_head_sha] = [
        {"name": "kubeconform", "status": "completed", "conclusion": "success"}
    ]
    for run in StepRun.objects.filter(promotion=promotion).open():
        StepRun.objects.filter(pk=run.pk).update(run_after=timezone.now())  # its backoff over
    pipeline.run_jobs()

    promotion = fresh(promotion)
    assert promotion.state == PromotionState.AWAITING_APPROVAL
    assert [a.user.username for a in promotion.approvals.all()] == ["sam"]
    assert not github.repository.pulls[1].merged
    assert not StepRun.objects.filter(promotion=promotion).open().exists()
    voided = AuditEvent.objects.get(promotion_id=promotion.pk, action=AuditAction.PULL_REQUEST_REVIEW_IGNORED)
    assert "dismissed on GitHub" in voided.message


def test_a_dismissal_webhook_racing_the_merge_leaves_the_committing_promotion_to_it(
    pipeline, github, release, rita, sam
):
    """The webhook read the promotion approved; the worker then started the merge (committing). Only
    the merge step may take a committing promotion back: GitHub may be merging it right now."""
    from releases import pull_requests

    promotion, review = approved_with_checks_running(pipeline, github, release, rita, sam)
    read_by_the_webhook = fresh(promotion)
    assert read_by_the_webhook.state == PromotionState.APPROVED
    transitions.start_commit(fresh(promotion))  # the worker, a moment later
    github.repository.dismiss(1, review.id)

    pull_requests.sync(read_by_the_webhook)

    promotion = fresh(promotion)
    assert promotion.state == PromotionState.COMMITTING
    assert promotion.approvals.count() == 2
    assert StepRun.objects.filter(promotion=promotion).open().exists(), "the merge step's run stands"


def test_a_merge_on_github_before_the_quorum_fails_the_promotion_saying_so(pipeline, github, release, rita, sam):
    promotion = request_production(pipeline, release, rita)
    transitions.approve(promotion, sam)
    github.repository.merge_by_hand(1, "sara-gh")
    reconcile()

    promotion = fresh(promotion)
    assert (promotion.state, promotion.failed_step) == (PromotionState.FAILED, "commit")
    assert "was merged on GitHub by sara-gh" in promotion.error
    assert "before the portal's approvals (1/2)" in promotion.error
    assert promotion.pr_state == PullRequestState.MERGED


def test_a_merge_github_failed_before_a_freeze_began_waits_for_its_end(pipeline, github, release, rita, sam, sara):
    promotion = request_production(pipeline, release, rita)
    github.repository.merges_failing = 1  # GitHub answers 502 to the merge: the commit step is retried
    transitions.approve(promotion, sam)
    transitions.approve(promotion, sara)
    pipeline.run_jobs(until=lambda: StepRun.objects.filter(promotion=promotion, status=RunStatus.RETRY).exists())
    assert fresh(promotion).state == PromotionState.COMMITTING
    now = timezone.now()
    frozen = ChangeFreeze.objects.create(
        environment=pipeline.environments["production"],
        starts_at=now - timedelta(minutes=1),
        ends_at=now + timedelta(hours=1),
        reason="Year-end freeze",
    )

    def waits_for_the_freeze():
        run = StepRun.objects.filter(promotion=promotion, step=Step.COMMIT, status=RunStatus.QUEUED).first()
        return run is not None and run.run_after == frozen.ends_at

    pipeline.run_jobs(until=lambda: waits_for_the_freeze() or fresh(promotion).state != PromotionState.COMMITTING)
    assert not github.repository.pulls[1].merged  # nothing entered the frozen environment
    assert waits_for_the_freeze()

    frozen.delete()
    pipeline.run_jobs(until=lambda: fresh(promotion).state not in (PromotionState.COMMITTING, PromotionState.SYNCING))
    assert github.repository.pulls[1].merged
    assert fresh(promotion).gitops_commit_sha == github.repository.pulls[1].merge_commit_sha
