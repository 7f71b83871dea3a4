"""What a promotion ships: the releases between the one running and the one promoted, with their
changelogs, the commit range, the CI results, the image and the values-file diff of the commit.

Shown on the approve dialog and the promotion page, so an approver sees what they let through.
Nothing here changes state; the values diff is worked out by the same code the commit job runs
(`gitops.values`), on the file as the GitOps branch holds it now, or, once a pull request is open,
by the code the merge step runs (`pull_requests.check_head`): what the pull request's head changes.
"""

from dataclasses import dataclass, field

from . import links, pull_requests
from .gitops import values
from .gitops.repo import GitOpsError, GitOpsRepository
from .models import CheckResult, PromotionState, PullRequestState, Release

# Releases listed at most; more are counted ("and 12 older ones").
MAX_RELEASES = 30
# A page waits this long for a worker that holds the GitOps repository, then says so instead.
VALUES_LOCK_WAIT_SECONDS = 5
# A page waits this long for the Git host (not GITOPS_NETWORK_TIMEOUT_SECONDS, a worker's patience):
# on a bad day the approver sees everything else and a sentence instead of the diff.
VALUES_NETWORK_TIMEOUT_SECONDS = 3
BEFORE_COMMIT = (PromotionState.AWAITING_APPROVAL, PromotionState.APPROVED)


@dataclass
class ValuesDiff:
    path: str
    diff: str = ""
    read_at: str = ""
    error: str = ""
    pull_request: int | None = None  # read from this pull request's head, not from the GitOps branch

    def lines(self):
        """(kind, line) for each line of the diff: kind is "add", "remove", "hunk" or "", for colour."""
        kinds = {"+": "add", "-": "remove", "@": "hunk"}
        return [
            ("" if line.startswith(("+++", "---")) else kinds.get(line[:1], ""), line)
            for line in self.diff.splitlines()
        ]


@dataclass
class WhatShips:
    release: Release
    running: Release | None
    going_back: bool
    releases: list = field(default_factory=list)
    more_releases: int = 0
    base_sha: str = ""
    head_sha: str = ""
    compare_url: str = ""
    checks: list = field(default_factory=list)
    required_checks: list = field(default_factory=list)
    values: ValuesDiff | None = None
    # When `running` ran, as the page says it: "now" until the GitOps commit, "before" once the
    # promotion went out, "when it was requested" for one that ended without going out.
    running_when: str = "now"


def _between(running, release):
    """The releases after `running` up to `release` (or, going back, those taken out), newest first."""
    newer, older = (running, release) if running.is_newer_than(release) else (release, running)
    return Release.objects.newer_than(older).exclude(pk__in=Release.objects.newer_than(newer)).newest_first()


def values_diff(promotion):
    """The diff the promotion's GitOps commit will make to the values file, read from the branch now; with
    its pull request open, what the pull request's head changes, as its merge would bring it."""
    if promotion.pr_state == PullRequestState.OPEN:
        return _pull_request_diff(promotion)
    service, environment, release = promotion.service, promotion.environment, promotion.release
    path = service.values_path(environment)
    result = ValuesDiff(path=path)
    try:
        text, result.read_at = _page_repository().read_latest(path)
        result.diff = values.diff(text, service.image_tag_key, release.version, path)
    except FileNotFoundError:
        result.error = f"{path} is not in the GitOps repository: the commit will fail until it is added."
    except (GitOpsError, values.ValuesFileError) as error:
        result.error = f"The values diff cannot be shown now: {error}"
    if not result.error and not result.diff:
        result.error = f"{path} already holds {release.version}: the commit changes nothing in it."
    return result


def _pull_request_diff(promotion):
    """The pull request's values diff; a head carrying more than the portal's change says so instead,
    in the words that stop the promotion at its merge (or as soon as the push is noticed)."""
    path = promotion.service.values_path(promotion.environment)
    result = ValuesDiff(path=path, pull_request=promotion.pr_number)
    try:
        check = pull_requests.check_head(promotion, repository=_page_repository())
    except (GitOpsError, pull_requests.PullRequestError) as error:
        result.error = f"The values diff of pull request #{promotion.pr_number} cannot be shown now: {error}"
        return result
    result.diff, result.read_at, result.error = check.diff, check.head, check.refused
    if not result.error and not result.diff:
        result.error = f"{path} already holds {promotion.release.version}: the pull request changes nothing in it."
    return result


def _page_repository():
    return GitOpsRepository(lock_wait=VALUES_LOCK_WAIT_SECONDS, network_timeout=VALUES_NETWORK_TIMEOUT_SECONDS)


def what_ships(promotion, *, with_values_diff=True):
    release, running = promotion.release, promotion.previous_release
    shipped = WhatShips(release=release, running=running, going_back=bool(running and running.is_newer_than(release)))
    if promotion.committed_at or promotion.deployed_at:
        shipped.running_when = "before"
    elif not promotion.is_active:
        shipped.running_when = "when it was requested"
    if running is None:
        shipped.releases = [release]
    elif running.pk != release.pk:
        between = list(_between(running, release).select_related("service")[: MAX_RELEASES + 1])
        shipped.releases, shipped.more_releases = between[:MAX_RELEASES], 0
        if len(between) > MAX_RELEASES:
            shipped.more_releases = _between(running, release).count() - MAX_RELEASES
    if running and running.commit_sha and release.commit_sha:
        shipped.base_sha, shipped.head_sha = (
            (release.commit_sha, running.commit_sha) if shipped.going_back else (running.commit_sha, release.commit_sha)
        )
        shipped.compare_url = links.compare(promotion.service, shipped.base_sha, shipped.head_sha)
    shipped.checks = sorted(
        CheckResult.objects.filter(release=release).select_related("environment").newest_per_check(),
        key=lambda check: (check.environment.position, check.name),
    )
    shipped.required_checks = list(promotion.environment.required_checks or [])
    if with_values_diff and promotion.state in BEFORE_COMMIT:
        shipped.values = values_diff(promotion)
    return shipped
