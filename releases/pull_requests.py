"""Promotion by pull request: the branch, the pull request, its reviews and its merge (docs/pull-requests.md).

In an environment whose delivery mode is "pull request", a promotion's one-line values change is
pushed on a branch of its own (`promote/nexo-be-prod-2026.02.1`) and a pull request is opened
while it awaits approval. Approving reviews count with the portal's approvals under the portal's
policy; every approval binds to the pull request's head commit, so a push by anyone else voids
them, and a head carrying anything but the portal's own change is never merged (`check_head`): the
promotion fails saying who pushed what. At quorum the commit step merges the pull request instead of
pushing, and the pipeline goes on with the merge commit. GitHub's state is read (`sync`) on every
webhook delivery and by the reconciler's poll; both land here, so a missed or replayed delivery
changes only latency.

Every state change goes through releases/transitions.py.
"""

import difflib
import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from social_django.models import UserSocialAuth

from audit import log as audit

from . import policy, transitions
from .gitops import message as gitops_message
from .gitops import values
from .gitops.github import GitHub, GitHubError, GitHubUnavailable, not_configured_reason
from .gitops.repo import BranchTaken, FileAt, GitOpsError, GitOpsRepository, GitOpsUnavailable
from .models import CheckResult, Promotion, PromotionKind, PromotionState, PullRequestState
from .policy import PromotionError

logger = logging.getLogger(__name__)

# The social-auth backend of GitHub sign-in (nexo_portal/github.py): how a reviewer is a portal user.
SOCIAL_AUTH_PROVIDER = "github-org"


class PullRequestError(Exception):
    """The pull request cannot be opened or merged; the message says why (GitHub's own words where it spoke)."""


def branch_name(promotion, suffix=""):
    """promote/nexo-be-prod-2026.02.1, as the reference docs name a promotion's branch (rollback/… for a rollback)."""
    environment = promotion.environment
    prefix = "rollback" if promotion.kind == PromotionKind.ROLLBACK else "promote"
    name = (
        f"{prefix}/{promotion.service.name}-{environment.branch_name or environment.name}-{promotion.release.version}"
    )
    return name + suffix


def title(promotion):
    """promote(nexo-be): production → 2026.02.1"""
    return gitops_message.subject(promotion)


def body(promotion, previous_version):
    """The pull request's description: changelog, validation, rollback plan, people."""
    release, environment = promotion.release, promotion.environment
    lines = [
        f"The Nexo Release Portal promotes **{promotion.service.name} {release.version}** to **{environment.name}**."
    ]
    if settings.PORTAL_URL:
        lines.append(f"Promotion #{promotion.pk}: {settings.PORTAL_URL.rstrip('/')}{promotion.get_absolute_url()}")
    lines += gitops_message.changelog(promotion) or ["", "## Changelog", "(none given at registration)"]
    lines += ["", "## Validation"]
    lines += _validation(promotion)
    lines += ["", "## Rollback plan", "1. Revert this pull request (or roll back from the portal, which opens one)."]
    if previous_version:
        lines.append(f'2. OR: set `{promotion.service.image_tag_key}` = "{previous_version}" (previous version).')
    else:
        lines.append("2. Nothing ran here before this release: there is no previous version to return to.")
    required = policy.approvals_required(promotion)
    groups = policy.describe_groups(environment.approver_groups.all())
    lines += [
        "",
        "## Approval",
        f"Requested by {promotion.requester_name()}.",
        f"Needs {required} approval(s) from {groups}, given in the portal or as approving reviews here; "
        "approvals bind to the head commit, so a push to this branch voids them. The portal merges its own "
        "change alone: a push of anything else ends the promotion and closes this pull request.",
    ]
    approvers = promotion.approver_names()
    if approvers:
        lines.append(f"Approved so far by {', '.join(approvers)}.")
    if promotion.is_emergency:
        lines.append(f"Break-glass: {promotion.emergency_reason}")
    return "\n".join(lines) + "\n"


def _validation(promotion):
    release, previous = promotion.release, promotion.environment.previous()
    if previous is None:
        return ["- First environment of the pipeline: nothing to validate before it."]
    lines = []
    verified = (
        Promotion.objects.filter(release=release, environment=previous, state=PromotionState.VERIFIED)
        .order_by("-finished_at")
        .first()
    )
    if verified:
        window = verified.verification_window
        lines.append(
            f"- ✅ Verified in {previous.name} at {timezone.localtime(verified.finished_at):%Y-%m-%d %H:%M %Z} "
            f"(soak of {int(window.total_seconds() // 60)} min, promotion #{verified.pk})"
        )
    elif promotion.is_emergency:
        lines.append(f"- ⚠️ Not verified in {previous.name}: break-glass promotion")
    for result in CheckResult.objects.filter(release=release).newest_per_check():
        mark = "✅" if result.passed else "❌"
        summary = f": {result.summary}" if result.summary else ""
        lines.append(f"- {mark} CI check {result.name} ({result.environment.name}){summary}")
    return lines or [f"- No verification recorded in {previous.name}."]


def client():
    github = GitHub.from_settings()
    if github is None:
        raise PullRequestError(not_configured_reason())
    return github


# --- opening -------------------------------------------------------------------------------------


def open_for(promotion):
    """Push the promotion's branch and open its pull request (labels, reviewers); record it. Idempotent:
    a retried job finds its branch by the `Promotion-Id:` trailer and GitHub's open pull request from it."""
    github = client()
    service, environment, release = promotion.service, promotion.environment, promotion.release
    path, key = service.values_path(environment), service.image_tag_key
    held = {}

    def change(text):
        held["previous"] = values.read_value(text, key, path)
        return values.set_value(text, key, release.version, path)

    def message():
        return gitops_message.promotion_message(
            promotion, promotion.approver_names(), values_held=held.get("previous"), audit_head=audit.head()
        )

    repository = GitOpsRepository()
    trailer = (gitops_message.PROMOTION_TRAILER, promotion.pk)
    branch = promotion.pr_branch or branch_name(promotion)
    try:
        with repository.locked():
            try:
                head = repository.push_change_to_branch(path, change, message, branch, trailer)
            except BranchTaken:
                branch = branch_name(promotion, f"-{promotion.pk}")
                head = repository.push_change_to_branch(path, change, message, branch, trailer)
    except GitOpsUnavailable:
        raise  # tried again by the step, with backoff
    except (GitOpsError, values.ValuesFileError) as error:
        raise PullRequestError(str(error)) from error
    previous = gitops_message.replaced_version(promotion, held.get("previous"))
    pull = github.open_pull_request(
        head=branch, base=repository.branch, title=title(promotion), body=body(promotion, previous)
    )
    # Labels and reviewer teams are niceties: what GitHub refuses of them, even for a moment (a secondary
    # rate limit), is said in the audit event. The pull request is open on GitHub: it is recorded now,
    # so that whatever ends the promotion closes it.
    notes = []
    if environment.pull_request_labels:
        try:
            github.add_labels(pull["number"], environment.pull_request_labels)
        except GitHubError as error:
            notes.append(str(error))
    if environment.pull_request_reviewer_teams:
        try:
            github.request_reviewers(pull["number"], team_reviewers=environment.pull_request_reviewer_teams)
        except GitHubError as error:
            notes.append(str(error))
    try:
        return transitions.record_pull_request(
            promotion,
            number=pull["number"],
            url=pull["html_url"],
            branch=branch,
            head_sha=head,  # the portal's own commit: a later head was pushed by someone else
            notes=notes,
        )
    except PromotionError:
        # Cancelled, superseded or rejected while GitHub opened it: recorded, and closed by a job the
        # reconciler repeats until GitHub takes it.
        transitions.record_orphan_pull_request(
            promotion, number=pull["number"], url=pull["html_url"], branch=branch, head_sha=head
        )
        raise


def close_marker(promotion):
    """What the portal's closing comment on the promotion's pull request carries, unseen, to be found by
    the next try. Found on GitHub rather than recorded in the portal: a comment GitHub made but whose
    answer was lost (a timeout, a worker killed before its transaction committed) is found too, and the
    retries' reasons are worded differently (the job's, the reconciler's), so the text could not tell."""
    return f"<!-- nexo-portal:close:{promotion.pk} -->"


def close_on_github(promotion_id, reason):
    """The RQ job after a promotion ended in the portal (rejected, cancelled, superseded, failed) with its
    pull request open: comment why and close it, so nobody merges what the portal will not deploy. Tried
    again (its own retries, the reconciler's) until closed, commenting once."""
    promotion = Promotion.objects.select_related(*transitions.FIXED_RELATIONS).filter(pk=promotion_id).first()
    if promotion is None or promotion.pr_state != PullRequestState.OPEN or promotion.is_active:
        return
    github = client()
    pull = github.pull_request(promotion.pr_number)  # asked again every round the reconciler queues it
    if pull.get("merged"):
        by = (pull.get("merged_by") or {}).get("login") or "someone"
        logger.warning("Pull request #%s of ended promotion %s was merged by %s", promotion.pr_number, promotion.pk, by)
        transitions.note_merged_after_the_end(promotion, by, str(pull.get("merge_commit_sha") or ""))
        return
    if pull["state"] != "closed":
        github.close_pull_request(promotion.pr_number, reason, marker=close_marker(promotion))
    transitions.mark_pull_request_closed(promotion)


# --- what the pull request carries ------------------------------------------------------------------

# A webhook's delivery (GitHub waits 10 s for the answer) or a page waits this long for a worker that holds
# the GitOps repository; the merge step waits as long as its pushes do.
READ_LOCK_WAIT_SECONDS = 5
# A commit's subject is quoted up to this many characters.
SUBJECT_QUOTED = 72


@dataclass
class HeadCheck:
    """What the head of a promotion's pull request changes against its merge base with the branch Argo CD
    follows, held against the portal's own change (`check_head`)."""

    head: str
    path: str
    diff: str  # the promotion's values file, merge base → head
    refused: str = ""  # why the portal will not merge it; "" when it carries the portal's change alone
    commits: list = field(default_factory=list)  # the branch's commits that are not the portal's


def check_head(promotion, head=None, *, pushed_by=None, repository=None):
    """Whether the head of the promotion's pull request (`head`, default its branch's tip) carries the
    portal's change alone: against its merge base with the branch Argo CD follows, it changes no file but
    the promotion's values file, and that file is the merge base's with the image tag set (what open_for
    pushed), byte for byte and mode. Held against the merge base, not the followed branch's tip: GitHub's
    "Update branch" merges that branch into the head, bringing only what is on it already, and passes.

    `pushed_by`: who pushed, when a webhook said so, for the refusal's words. GitOpsUnavailable when the
    branch cannot be read now; PullRequestError when it cannot be read at all."""
    service, environment, release = promotion.service, promotion.environment, promotion.release
    path, key = service.values_path(environment), service.image_tag_key
    repository = repository or GitOpsRepository()
    try:
        with repository.locked():
            changes = repository.branch_changes(promotion.pr_branch, gitops_message.PROMOTION_TRAILER, head)
            before = _file_or_none(repository, changes.base, path)
            after = _file_or_none(repository, changes.head, path)
    except GitOpsUnavailable:
        raise
    except (GitOpsError, values.ValuesFileError) as error:
        raise PullRequestError(
            f"Cannot read the branch of pull request #{promotion.pr_number} to see what it carries: {error}"
        ) from error
    try:
        ours = FileAt(before.mode, values.set_value(before.text, key, release.version, path)) if before else None
    except values.ValuesFileError as error:
        raise PullRequestError(
            f"{path} at {changes.base[:7]}, where pull request #{promotion.pr_number} branches off "
            f"{repository.branch}, cannot take the tag: {error}"
        ) from error
    check = HeadCheck(
        head=changes.head,
        path=path,
        diff="".join(
            difflib.unified_diff(
                (before.text if before else "").splitlines(keepends=True),
                (after.text if after else "").splitlines(keepends=True),
                f"a/{path}",
                f"b/{path}",
            )
        ),
    )
    others = [changed for changed in changes.paths if changed != path]
    own_file_differs = path in changes.paths and after != ours
    if not (others or own_file_differs):
        return check
    # A commit that says it is the portal's and is not (the portal's own, amended) leaves none: all are named.
    theirs = [commit for commit in changes.commits if not _portals(commit, promotion)] or changes.commits
    check.commits = [commit for commit in theirs if not commit.is_merge] or theirs
    check.refused = _refusal(promotion, repository.branch, changes, check.commits, others, own_file_differs, pushed_by)
    return check


def _file_or_none(repository, revision, path):
    if not revision:
        return None
    try:
        return repository.file_at(revision, path)
    except FileNotFoundError:
        return None


def _portals(commit, promotion):
    """Whether `commit` says it is the portal's for `promotion` (a push may say so falsely: only what a
    commit changes is checked, this only keeps the portal's own commit out of the refusal's words)."""
    return commit.author_email == settings.GITOPS_AUTHOR_EMAIL and str(promotion.pk) in commit.trailer_values


def _refusal(promotion, base_branch, changes, commits, others, own_file_differs, pushed_by):
    """The sentence that stops a promotion whose pull request carries what the portal did not write."""
    path, key = promotion.service.values_path(promotion.environment), promotion.service.image_tag_key
    what = []
    if others:
        what.append(f"changes {', '.join(others)}")
    if own_file_differs:
        what.append(f"changes {path} beyond {key} → {promotion.release.version}")
    named = []
    for commit in commits:
        subject = commit.subject if len(commit.subject) <= SUBJECT_QUOTED else commit.subject[:SUBJECT_QUOTED] + "…"
        touched = ", ".join(commit.paths) or "no file"
        named.append(f"{commit.sha[:7]} “{subject}” by {commit.author}, touching {touched}")
    if changes.more_commits:
        named.append(f"{changes.more_commits} more commit{'s' if changes.more_commits != 1 else ''}")
    who = f"{pushed_by} pushed" if pushed_by else "Someone other than the portal pushed"
    return (
        f"Pull request #{promotion.pr_number} carries changes the portal did not write, so it is not merged: "
        f"against {base_branch}, its head {changes.head[:7]} {' and '.join(what)}. "
        f"{who} {'; '.join(named) or changes.head[:7]}. "
        "The portal merges only its own change; request the promotion again for a pull request of its own."
    )


# --- reading GitHub's state ------------------------------------------------------------------------


def github_user(account):
    """The portal user a GitHub account (a review's `user`) signed in as, or None.

    By GitHub's numeric id, which social-auth stores as the sign-in's uid, never by login: a login
    can be renamed and then taken by someone else, and anyone may own one spelled like a portal user
    name."""
    if not account or account.get("id") is None:
        return None
    found = (
        UserSocialAuth.objects.filter(provider=SOCIAL_AUTH_PROVIDER, uid=str(account["id"]))
        .select_related("user")
        .first()
    )
    return found.user if found else None


def sync(promotion, *, sender=None):
    """Apply what GitHub says now of the promotion's pull request: closed, merged, pushed to, reviewed.

    `sender`: who caused the event, when a webhook said so (its payload is only a hint: GitHub is
    asked). Returns the promotion, fresh.
    """
    if not promotion.pr_number or promotion.state not in (PromotionState.AWAITING_APPROVAL, PromotionState.APPROVED):
        return promotion
    github = client()
    pull = github.pull_request(promotion.pr_number)
    if pull["state"] == "closed" and not pull.get("merged"):
        by = (sender or {}).get("login") or "someone on GitHub"
        return transitions.close_pull_request(promotion, closed_by=by)
    if pull.get("merged") and promotion.state == PromotionState.AWAITING_APPROVAL:
        return _merged_before_quorum(promotion, pull)
    head = pull["head"]["sha"]
    if head != promotion.pr_head_sha:
        pushed_by = (sender or {}).get("login")
        try:
            check = check_head(
                promotion, head, pushed_by=pushed_by, repository=GitOpsRepository(lock_wait=READ_LOCK_WAIT_SECONDS)
            )
        except GitOpsUnavailable as error:
            # Nothing is noted and no review counted before the push is seen: the next poll asks again.
            raise PullRequestError(f"Pull request #{promotion.pr_number} was pushed to; {error}") from error
        if check.refused:
            return transitions.refuse_foreign_head(
                promotion, head, check.refused, pushed_by=pushed_by, commits=check.commits
            )
        promotion = transitions.note_branch_pushed(promotion, head, pushed_by=pushed_by)
    reviews = github.reviews(promotion.pr_number)
    promotion = _void_dismissed(promotion, reviews)
    if promotion.state != PromotionState.AWAITING_APPROVAL:
        return promotion
    for review in reviews:
        promotion = _apply_review(promotion, review, head)
        if promotion.state != PromotionState.AWAITING_APPROVAL:
            break
    return promotion


def _void_dismissed(promotion, reviews, *, merging=False):
    dismissed = {review["id"] for review in reviews if review.get("state") == "DISMISSED"}
    if promotion.approvals.filter(github_review_id__in=dismissed).exists():
        promotion = transitions.void_dismissed_reviews(promotion, dismissed, merging=merging)
    return promotion


def _merged_before_quorum(promotion, pull):
    """Someone merged the pull request on GitHub before the portal's quorum: the change is on the branch
    Argo CD follows, outside the policy. The promotion fails saying so; the drift check flags the file."""
    by = (pull.get("merged_by") or {}).get("login") or "someone"
    given, required = policy.approvals_given(promotion), policy.approvals_required(promotion)
    error = (
        f"Pull request #{promotion.pr_number} was merged on GitHub by {by} as {str(pull.get('merge_commit_sha'))[:7]} "
        f"before the portal's approvals ({given}/{required}): the change is on the branch Argo CD follows "
        "without the policy's approval. Check what runs there; roll back, or request the promotion again."
    )
    promotion = transitions.note_pull_request_merged(promotion)
    return transitions.fail(promotion, "commit", error, from_states=[PromotionState.AWAITING_APPROVAL])


def _apply_review(promotion, review, head):
    state = review.get("state")
    if review["id"] in promotion.pr_reviews_seen or state not in ("APPROVED", "CHANGES_REQUESTED"):
        return promotion
    login = (review.get("user") or {}).get("login", "?")
    via = {"via": "GitHub", "review": review["id"], "url": review.get("html_url", ""), "login": login}
    if state == "APPROVED" and review.get("commit_id") != head:
        return transitions.ignore_review(
            promotion, review["id"], login, f"it approved {str(review.get('commit_id'))[:7]}, not the head {head[:7]}"
        )
    user = github_user(review.get("user"))
    if user is None:
        return transitions.ignore_review(
            promotion, review["id"], login, "no portal user has signed in with this GitHub account"
        )
    words = (review.get("body") or "").strip()
    try:
        if state == "APPROVED":
            return transitions.approve(promotion, user, words, via=via, head_sha=head, github_review_id=review["id"])
        return transitions.reject(
            promotion, user, words or f"Changes requested on GitHub by {login}", via=via, github_review_id=review["id"]
        )
    except PromotionError as refusal:
        return transitions.ignore_review(promotion, review["id"], login, str(refusal))


# --- merging --------------------------------------------------------------------------------------


def merge(promotion):
    """The commit step of a promotion delivered by pull request: (open it if the promotion needed no
    approval,) check it, merge it at the approved head, and return the merge commit's SHA.

    Raises PullRequestError with the reason when it cannot be merged (checks failing, conflicts,
    branch protection: GitHub's own message), GitHubUnavailable when it is worth asking again
    (GitHub out of reach, mergeability or checks not known yet), PromotionError when the
    promotion moved on (its approvals voided by a push), policy.HeldByFreeze when a freeze keeps
    it out of its environment (not merged yet).
    """
    github = client()
    if not promotion.pr_number:
        promotion = open_for(promotion)
    pull = github.pull_request(promotion.pr_number)
    if pull.get("merged"):
        return promotion, pull["merge_commit_sha"]
    if pull["state"] == "closed":
        raise PullRequestError(f"Pull request #{promotion.pr_number} was closed on GitHub without being merged.")
    head = pull["head"]["sha"]
    # Every time, whatever head the portal knows: GitHub merges `head` (the merge call names it), and a
    # push nobody told the portal of, or one noted before the portal looked at what pushes carry, is here.
    check = check_head(promotion, head)
    if check.refused:
        transitions.refuse_foreign_head(promotion, head, check.refused, commits=check.commits, merging=True)
        raise PromotionError(check.refused)
    if head != promotion.pr_head_sha:
        transitions.note_branch_pushed(promotion, head, pushed_by=None, merging=True)
        raise PromotionError(f"Pull request #{promotion.pr_number} was pushed to: its approvals were voided.")
    if pull.get("mergeable") is None:
        raise GitHubUnavailable(f"GitHub is still working out whether pull request #{promotion.pr_number} can merge.")
    if pull["mergeable"] is False:
        raise PullRequestError(
            f"GitHub cannot merge pull request #{promotion.pr_number} (mergeable_state: "
            f"{pull.get('mergeable_state', 'unknown')}): the base branch moved in a way that conflicts with it. "
            "Cancel and request the promotion again."
        )
    failing, pending = github.failing_checks(head)
    if failing:
        raise PullRequestError(f"Checks failed on {head[:7]}: {', '.join(failing)}; not merging.")
    if pending:
        raise GitHubUnavailable(f"Checks still running on {head[:7]}: {', '.join(pending)}.")
    # Reviews last: one dismissed on GitHub while the merge waited (checks running) may have made the quorum.
    promotion = _void_dismissed(promotion, github.reviews(promotion.pr_number), merging=True)
    if promotion.state == PromotionState.AWAITING_APPROVAL:
        raise PromotionError(
            f"Reviews of pull request #{promotion.pr_number} were dismissed: it awaits approval again."
        )
    # A freeze may have begun since the commit step looked, or, for a retry, since a merge GitHub did not answer.
    policy.raise_if_frozen(promotion)
    if promotion.state == PromotionState.APPROVED:
        promotion = transitions.start_commit(promotion)
    try:
        sha = github.merge(
            promotion.pr_number, sha=head, method=settings.GITOPS_GITHUB_MERGE_METHOD, title=title(promotion)
        )
    except GitHubUnavailable:
        raise
    except GitHubError as refusal:
        raise PullRequestError(f"GitHub refused to merge pull request #{promotion.pr_number}: {refusal}") from refusal
    return promotion, sha


# An ended promotion whose pull request is still open: closing it failed longer than the close job's own
# retries (GitHub out for a while), or could not be queued (Redis down then). Asked again this often.
CLOSE_AGAIN_EVERY = timedelta(minutes=10)


def _close_again(now):
    left_open = Promotion.objects.filter(
        pr_state=PullRequestState.OPEN, updated_at__lt=now - CLOSE_AGAIN_EVERY
    ).exclude(state__in=PromotionState.active())
    for promotion in left_open:
        transitions.close_pull_request_again(promotion, now)


def poll(now=None):
    """The reconciler's fallback for missed webhooks: read every open promotion pull request once.
    Returns the ids of the promotions whose pull request changed them. Ended promotions whose pull
    request is still open have it closed again."""
    now = now or timezone.now()
    _close_again(now)
    changed = []
    waiting = Promotion.objects.filter(
        state=PromotionState.AWAITING_APPROVAL, pr_state=PullRequestState.OPEN
    ).select_related(*transitions.FIXED_RELATIONS)
    for promotion in waiting:
        try:
            after = sync(promotion)
        except GitHubUnavailable as error:
            # Out of reach or rate limited: the other pull requests would meet the same, and asking
            # would spend the budget that the merges need. The next round asks again.
            logger.warning(
                "GitHub did not answer for pull request #%s; polling stops for this round: %s",
                promotion.pr_number,
                error,
            )
            break
        except (GitHubError, PullRequestError, PromotionError) as error:
            logger.warning(
                "Could not read pull request #%s of promotion %s: %s", promotion.pr_number, promotion.pk, error
            )
            continue
        if after.state != promotion.state or after.pr_head_sha != promotion.pr_head_sha:
            changed.append(promotion.pk)
    unopened = Promotion.objects.filter(
        state=PromotionState.AWAITING_APPROVAL,
        environment__delivery_mode="pull_request",
        pr_number__isnull=True,
        updated_at__lt=now - timedelta(minutes=2),
    ).values_list("pk", flat=True)
    for promotion_id in unopened:
        transitions.schedule_pull_request(promotion_id)
    return changed
