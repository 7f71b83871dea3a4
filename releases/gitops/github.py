"""GitHub's REST API for the GitOps repository's pull requests: open, label, ask for reviewers,
read reviews and checks, merge, comment and close (docs/pull-requests.md).

Authenticates with a token (GITOPS_GITHUB_TOKEN) or as a GitHub App installation: a JWT signed
with the App's private key buys an installation token (`POST /app/installations/{id}/access_tokens`),
kept until a minute before it expires. Every refusal is a `GitHubError` carrying GitHub's own
`message` (and the first validation error's); no answer, 5xx, 429 and secondary rate limits are
`GitHubUnavailable`, which the pipeline retries with backoff.
"""

import hashlib
import logging
import re
import threading
import time
from datetime import datetime
from pathlib import Path

import jwt
import requests
from django.conf import settings
from redis.exceptions import RedisError

from nexo_portal.lib import metrics, queues
from nexo_portal.lib.errors import Unavailable
from nexo_portal.lib.http import describe_failure, excerpt, retry_after

API_VERSION = "2022-11-28"
# Conclusions of a check run that block a merge (GitHub's own list of failing conclusions).
FAILING_CONCLUSIONS = {"failure", "cancelled", "timed_out", "action_required", "startup_failure", "stale"}

logger = logging.getLogger(__name__)

_installation_tokens = {}  # (api url, installation id) -> (token, expires at as Unix seconds)
_tokens_lock = threading.Lock()


class GitHubError(Exception):
    """GitHub refused or could not do what was asked; the message says what GitHub said."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class GitHubUnavailable(GitHubError, Unavailable):
    """GitHub could not be reached or asked to slow down: the same call may work in a moment, not
    before `retry_after` seconds when GitHub named a wait (a rate limit)."""

    def __init__(self, message, status=None, *, retry_after=None):
        super().__init__(message, status)
        self.retry_after = retry_after


def is_configured():
    return bool(settings.GITOPS_GITHUB_REPOSITORY and (settings.GITOPS_GITHUB_TOKEN or settings.GITOPS_GITHUB_APP_ID))


def not_configured_reason():
    return (
        "Pull-request delivery is not configured: set GITOPS_GITHUB_REPOSITORY and GITOPS_GITHUB_TOKEN "
        "(or GITOPS_GITHUB_APP_ID, GITOPS_GITHUB_APP_INSTALLATION_ID and GITOPS_GITHUB_APP_PRIVATE_KEY)."
    )


def app_jwt(app_id, private_key, now=None):
    """The JWT a GitHub App signs to ask for installation tokens: issued a minute ago (clock drift), valid 9 min."""
    now = int(now or time.time())
    return jwt.encode({"iat": now - 60, "exp": now + 540, "iss": str(app_id)}, private_key, algorithm="RS256")


class GitHub:
    def __init__(self, api_url, repository, *, token="", app_id="", installation_id="", private_key="", timeout=10):
        self.api_url = api_url.rstrip("/") + "/"
        self.repository = repository
        self.owner = repository.partition("/")[0]
        self.token = token
        self.app_id = app_id
        self.installation_id = installation_id
        self.private_key = private_key
        self.timeout = timeout
        self.session = requests.Session()

    @classmethod
    def from_settings(cls):
        """The client for GITOPS_GITHUB_*, or None when pull-request delivery is not configured."""
        if not is_configured():
            return None
        private_key = settings.GITOPS_GITHUB_APP_PRIVATE_KEY
        if not private_key and settings.GITOPS_GITHUB_APP_PRIVATE_KEY_FILE:
            private_key = Path(settings.GITOPS_GITHUB_APP_PRIVATE_KEY_FILE).read_text()
        return cls(
            settings.GITOPS_GITHUB_API_URL,
            settings.GITOPS_GITHUB_REPOSITORY,
            token=settings.GITOPS_GITHUB_TOKEN,
            app_id=settings.GITOPS_GITHUB_APP_ID,
            installation_id=settings.GITOPS_GITHUB_APP_INSTALLATION_ID,
            private_key=private_key,
            timeout=settings.HTTP_TIMEOUT_SECONDS,
        )

    # --- authentication ------------------------------------------------------------------------

    def _access_token(self):
        if self.token:
            return self.token
        cache_key = (self.api_url, str(self.installation_id))
        with _tokens_lock:
            cached = _installation_tokens.get(cache_key)
        if cached and cached[1] - 60 > time.time():
            return cached[0]
        answer = self._call(
            "POST",
            f"app/installations/{self.installation_id}/access_tokens",
            bearer=app_jwt(self.app_id, self.private_key),
            doing="get an installation token for the GitHub App",
        )
        expires_at = datetime.fromisoformat(answer["expires_at"].replace("Z", "+00:00")).timestamp()
        with _tokens_lock:
            _installation_tokens[cache_key] = (answer["token"], expires_at)
        return answer["token"]

    # --- the calls --------------------------------------------------------------------------------

    # --- the rate limit, shared by every process ------------------------------------------------------

    def _limit_key(self):
        """One key per budget: GitHub counts a token's requests, or an App installation's."""
        who = (
            f"{self.api_url} app {self.app_id} {self.installation_id}"
            if self.app_id
            else f"{self.api_url} {self.token}"
        )
        return "nexo:github-rate-limited-until:" + hashlib.sha256(who.encode()).hexdigest()[:24]

    def _wait_left(self):
        """Seconds left of a wait GitHub asked of any process of the portal, or None."""
        try:
            until = queues.redis_connection().get(self._limit_key())
        except RedisError:
            return None  # without Redis, each process learns the limit on its own
        left = float(until) - time.time() if until else 0
        return max(round(left), 1) if left > 0 else None

    def _remember_wait(self, seconds):
        try:
            queues.redis_connection().set(self._limit_key(), time.time() + seconds, ex=seconds)
        except RedisError as error:
            logger.warning("Could not share GitHub's rate limit with the other processes: %s", error)

    def _call(self, method, path, *, json=None, params=None, bearer=None, doing):
        left = self._wait_left()
        if left:
            # Asking while rate limited "may result in the banning of your integration" (GitHub's docs).
            raise GitHubUnavailable(
                f"Cannot {doing}: GitHub rate limited the portal; not asking again for {left} s", retry_after=left
            )
        url = self.api_url + path
        headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "Authorization": f"Bearer {bearer or self._access_token()}",
        }
        try:
            with metrics.outgoing_call("github", method) as call:
                response = self.session.request(
                    method, url, json=json, params=params, headers=headers, timeout=self.timeout
                )
                call.status = response.status_code
        except requests.RequestException as error:
            raise GitHubUnavailable(
                f"Cannot {doing}: GitHub did not answer ({describe_failure(error, self.timeout)})."
            ) from error
        if response.status_code < 300:
            return response.json() if response.content else {}
        said = _github_message(response)
        failure = f"Cannot {doing}: GitHub answered {response.status_code}: {said}"
        if _rate_limited(response, said):
            wait = rate_limit_wait(response)
            self._remember_wait(wait)
            raise GitHubUnavailable(f"{failure} (GitHub asks to wait {wait} s)", response.status_code, retry_after=wait)
        if response.status_code >= 500:
            raise GitHubUnavailable(failure, response.status_code)
        raise GitHubError(failure, response.status_code)

    def _repo(self, path):
        return f"repos/{self.repository}/{path}"

    def open_pull_request(self, *, head, base, title, body):
        """The pull request from `head` into `base`: opened now, or the open one a retried job opened before."""
        try:
            return self._call(
                "POST",
                self._repo("pulls"),
                json={"title": title, "head": head, "base": base, "body": body, "maintainer_can_modify": False},
                doing=f"open a pull request from {head} into {base}",
            )
        except GitHubError as error:
            if error.status != 422 or "already exists" not in str(error):
                raise
        existing = self._call(
            "GET",
            self._repo("pulls"),
            params={"head": f"{self.owner}:{head}", "base": base, "state": "open"},
            doing=f"find the pull request from {head}",
        )
        if not existing:
            raise GitHubError(f"GitHub says a pull request from {head} exists, but lists none open.")
        return existing[0]

    def add_labels(self, number, labels):
        return self._call(
            "POST",
            self._repo(f"issues/{number}/labels"),
            json={"labels": list(labels)},
            doing=f"label pull request #{number}",
        )

    def request_reviewers(self, number, *, reviewers=(), team_reviewers=()):
        return self._call(
            "POST",
            self._repo(f"pulls/{number}/requested_reviewers"),
            json={"reviewers": list(reviewers), "team_reviewers": list(team_reviewers)},
            doing=f"ask for reviewers on pull request #{number}",
        )

    def pull_request(self, number):
        return self._call("GET", self._repo(f"pulls/{number}"), doing=f"read pull request #{number}")

    def _every_page(self, path, *, doing):
        found, page = [], 1
        while True:
            chunk = self._call("GET", self._repo(path), params={"per_page": 100, "page": page}, doing=doing)
            found += chunk
            if len(chunk) < 100:
                return found
            page += 1

    def reviews(self, number):
        """Every review of the pull request, oldest first (all pages)."""
        return self._every_page(f"pulls/{number}/reviews", doing=f"read the reviews of pull request #{number}")

    def comments(self, number):
        """Every comment of the pull request's conversation, oldest first (all pages)."""
        return self._every_page(f"issues/{number}/comments", doing=f"read the comments of pull request #{number}")

    def failing_checks(self, ref):
        """(failing, pending): the names of the check runs and commit statuses of `ref` that failed or are not done."""
        runs = self._call(
            "GET",
            self._repo(f"commits/{ref}/check-runs"),
            params={"per_page": 100},
            doing=f"read the checks of {ref[:12]}",
        )
        failing, pending = [], []
        for run in runs.get("check_runs", []):
            if run.get("status") != "completed":
                pending.append(run["name"])
            elif run.get("conclusion") in FAILING_CONCLUSIONS:
                failing.append(f"{run['name']} ({run['conclusion']})")
        combined = self._call(
            "GET", self._repo(f"commits/{ref}/status"), doing=f"read the commit statuses of {ref[:12]}"
        )
        for status in combined.get("statuses", []):
            if status.get("state") in ("failure", "error"):
                failing.append(f"{status['context']} ({status['state']})")
            elif status.get("state") == "pending":
                pending.append(status["context"])
        return failing, pending

    def close_pull_request(self, number, comment, *, marker):
        """Say why on the pull request, then close it (its branch stays, for the record).

        `marker` ends the comment, unseen (an HTML comment). A comment already holding it is an earlier
        try's, which GitHub took before refusing the close or whose answer never came back: the pull
        request is then only closed, not told again.
        """
        if not any(marker in (found.get("body") or "") for found in self.comments(number)):
            self._call(
                "POST",
                self._repo(f"issues/{number}/comments"),
                json={"body": f"{comment}\n\n{marker}"},
                doing=f"comment on pull request #{number}",
            )
        return self._call(
            "PATCH", self._repo(f"pulls/{number}"), json={"state": "closed"}, doing=f"close pull request #{number}"
        )

    def merge(self, number, *, sha, method, title=None):
        """Merge at `sha` (GitHub refuses with 409 if the head moved); the merge commit's SHA.

        GitHub's 405 "Base branch was modified. Review and try the merge again." (another merge landed
        on the base in the same instant), and branch protection's 'Required status check "…" is
        expected.' (CI has not reported it yet: a fast quorum, a rollback needing no approval) are
        GitHubUnavailable: asked again, it merges. A required check that failed stays a refusal."""
        body = {"sha": sha, "merge_method": method}
        if title:
            body["commit_title"] = title
        doing = f"merge pull request #{number}"
        try:
            answer = self._call("PUT", self._repo(f"pulls/{number}/merge"), json=body, doing=doing)
        except GitHubError as refusal:
            if refusal.status == 405 and _NOT_YET_MERGEABLE.search(str(refusal)):
                raise GitHubUnavailable(str(refusal), refusal.status) from refusal
            raise
        return answer["sha"]


# What GitHub says to a merge (405) that may succeed when asked again.
_NOT_YET_MERGEABLE = re.compile(
    r"base branch was modified|required status checks? .*(?:is|are) (?:expected|pending|in progress)", re.I
)


def _rate_limited(response, said):
    """GitHub's primary or secondary rate limit: 429, or 403 with no requests left, a `Retry-After`
    or a message saying so ("API rate limit exceeded", "You have exceeded a secondary rate limit")."""
    if response.status_code == 429:
        return True
    return response.status_code == 403 and (
        response.headers.get("x-ratelimit-remaining") == "0"
        or "Retry-After" in response.headers
        or "rate limit" in said.lower()
    )


def rate_limit_wait(response, *, at_most=3600):
    """The seconds GitHub's documentation says to wait before asking again after a rate limit: its
    `Retry-After`; else, with no requests left, until `x-ratelimit-reset`; else at least a minute.
    Asking again sooner "may result in the banning of your integration"."""
    asked = retry_after(response, at_most=at_most)
    if asked is not None:
        return asked
    reset = response.headers.get("x-ratelimit-reset", "")
    if response.headers.get("x-ratelimit-remaining") == "0" and reset.isascii() and reset.isdigit():
        return min(max(int(reset) - int(time.time()), 1), at_most)
    return 60


def _github_message(response):
    """GitHub's `message`, with the first validation error's own message or code (422s)."""
    try:
        body = response.json()
    except ValueError:
        return excerpt(response.text) or response.reason
    if not isinstance(body, dict):
        return excerpt(response.text)
    message = str(body.get("message") or response.reason)
    errors = body.get("errors") or []
    if errors and isinstance(errors[0], dict):
        detail = errors[0].get("message") or " ".join(
            str(errors[0].get(key)) for key in ("resource", "field", "code") if errors[0].get(key)
        )
        message = f"{message}: {detail}"
    elif errors:
        message = f"{message}: {errors[0]}"
    return message
