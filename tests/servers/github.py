"""A GitHub for the tests: the OAuth web flow and the REST endpoints that sign-in uses.

It speaks GitHub's own wire format, as documented on docs.github.com ("Authorizing OAuth
apps", "Troubleshooting OAuth app access token request errors", REST "Users", "Emails",
"Organization members", "Teams", "Using pagination"): the same paths, JSON fields,
status codes, headers and error bodies. One server plays both halves the way GitHub
Enterprise Server lays them out: the web at `url`, the REST API under `api_url` (/api/v3/).

Pull requests (REST "Pulls", "Reviews", "Review requests", "Labels", "Check runs", "Commit
statuses", "Apps: create an installation access token") are served for repositories added with
`add_repository`, each backed by a real bare Git repository: branches, heads and merges are the
bare repository's own, and a merge really merges in it (GitPython, `git merge-tree`).

Not modelled: the consent page (the account in `browser_login` approves at once, or
refuses when `denies_authorization` is set), code expiry after ten minutes, rate limits.
"""

import json
import re
import secrets
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

DOCS = "https://docs.github.com"
AUTHORIZATION_ERRORS = "/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/"
TOKEN_ERRORS = "/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/"
ERROR_URIS = {
    "redirect_uri_mismatch": f"{AUTHORIZATION_ERRORS}#redirect-uri-mismatch",
    "access_denied": f"{AUTHORIZATION_ERRORS}#access-denied",
    "incorrect_client_credentials": f"{TOKEN_ERRORS}#incorrect-client-credentials",
    "bad_verification_code": f"{TOKEN_ERRORS}#bad-verification-code",
    "token_redirect_uri_mismatch": f"{TOKEN_ERRORS}#redirect-uri-mismatch2",
}
# Scopes that let a token see private organization membership and teams.
ORG_READ_SCOPES = {"read:org", "write:org", "admin:org"}
EMAIL_SCOPES = {"user", "user:email"}


@dataclass
class Account:
    login: str
    id: int
    name: str | None = None
    email: str | None = None  # the public profile address; null unless the person made one public
    emails: list = field(default_factory=list)  # what GET /user/emails lists


@dataclass
class Team:
    organization: str
    slug: str
    id: int
    name: str
    members: set = field(default_factory=set)


@dataclass
class Grant:
    login: str
    redirect_uri: str
    scopes: list


class GitHubServer:
    def __init__(self, *, client_id, client_secret, callback_url):
        self.client_id = client_id
        self.client_secret = client_secret
        self.callback_url = callback_url
        self.accounts = {}
        self.members = {}  # organization -> {login: is public}
        self.teams = []
        self.browser_login = None  # who is signed in to GitHub in the browser
        self.denies_authorization = False
        self.requests = []  # (method, path) of every request, in order
        # Set: the repository API answers as when the token's hourly budget is spent (403, remaining 0).
        self.rate_limited = False
        self._codes = {}
        self._tokens = {}  # access token -> (login, scopes)
        self._ids = count(1000)
        self._organization_ids = {}
        self._lock = threading.Lock()
        self._httpd = None
        self.repositories = {}  # "owner/name" -> Repository
        self.apps = {}  # app id -> (public key PEM, installation id, bot login)

    # --- what a test sets up -------------------------------------------------------------
    def add_account(self, login, *, name=None, email=None, emails=None, organizations=()):
        account = Account(login=login, id=next(self._ids), name=name, email=email)
        account.emails = (
            emails
            if emails is not None
            else [{"email": f"{login}@users.noreply.github.com", "primary": True, "verified": True, "visibility": None}]
        )
        self.accounts[login] = account
        for organization in organizations:
            self.add_member(organization, login)
        return account

    def add_member(self, organization, login, *, public=False):
        self.members.setdefault(organization, {})[login] = public

    def remove_member(self, organization, login):
        self.members.get(organization, {}).pop(login, None)

    def add_team(self, organization, slug, members=(), name=None):
        team = Team(organization, slug, next(self._ids), name or slug.replace("-", " ").title(), set(members))
        self.teams.append(team)
        return team

    def team(self, organization, slug):
        return next(team for team in self.teams if (team.organization, team.slug) == (organization, slug))

    def add_repository(self, full_name, bare_path, *, default_branch="main"):
        repository = Repository(full_name, str(bare_path), default_branch)
        self.repositories[full_name] = repository
        return repository

    def add_app(self, app_id, public_key_pem, installation_id, bot_login):
        """A GitHub App installed on the repositories; its installation tokens act as `bot_login`."""
        if bot_login not in self.accounts:
            self.add_account(bot_login)
        self.apps[str(app_id)] = (public_key_pem, str(installation_id), bot_login)

    # --- running ---------------------------------------------------------------------------
    @property
    def url(self):
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def api_url(self):
        return f"{self.url}/api/v3/"

    @contextmanager
    def running(self):
        server = self

        class Handler(PullRequestsHandler):
            github = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._httpd.shutdown()
            self._httpd.server_close()
            thread.join()

    # --- state shared with the handler -----------------------------------------------------
    def issue_code(self, login, redirect_uri, scopes):
        code = secrets.token_hex(10)
        with self._lock:
            self._codes[code] = Grant(login, redirect_uri, scopes)
        return code

    def redeem_code(self, code):
        """Codes are single-use: the first exchange consumes it."""
        with self._lock:
            return self._codes.pop(code, None)

    def issue_token(self, login, scopes):
        token = "gho_" + secrets.token_urlsafe(27)[:36]
        with self._lock:
            self._tokens[token] = (login, scopes)
        return token

    def token_owner(self, token):
        with self._lock:
            return self._tokens.get(token)

    def is_member(self, organization, login):
        return login in self.members.get(organization, {})

    def is_public_member(self, organization, login):
        return self.members.get(organization, {}).get(login, False)

    def organization_id(self, organization):
        return self._organization_ids.setdefault(organization, next(self._ids))

    def teams_of(self, login):
        return [team for team in self.teams if login in team.members]


@dataclass
class Review:
    id: int
    login: str
    state: str  # APPROVED, CHANGES_REQUESTED, COMMENTED, DISMISSED
    body: str
    commit_id: str
    submitted_at: str


@dataclass
class PullRequest:
    number: int
    title: str
    body: str
    head: str
    base: str
    author: str
    state: str = "open"
    merged: bool = False
    merge_commit_sha: str | None = None
    merged_by: str | None = None
    labels: list = field(default_factory=list)
    comments: list = field(default_factory=list)  # (login, body), oldest first
    commented_at: list = field(default_factory=list)  # when each comment was made, as GitHub writes times
    requested_teams: list = field(default_factory=list)
    requested_reviewers: list = field(default_factory=list)
    reviews: list = field(default_factory=list)


class Repository:
    """A repository on the stand-in: a real bare Git repository and its pull requests."""

    def __init__(self, full_name, bare, default_branch):
        self.full_name = full_name
        self.bare = bare
        self.default_branch = default_branch
        self.pulls = {}
        self.check_runs = {}  # sha -> [{"name", "status", "conclusion"}]
        self.statuses = {}  # sha -> [{"context", "state"}]
        self.protection_message = None  # set: every merge is refused with 405 and this message
        self.mergeable_unknown = False  # GitHub still computing: `mergeable` is null
        self.merges_failing = 0  # the next this many merges answer 502, as in one of GitHub's incidents
        # The next this many label requests hit a secondary rate limit (403, Retry-After).
        self.labels_rate_limited = 0
        self.closes_failing = 0  # the next this many pull request updates answer 502
        # The next this many pull request updates hit a secondary rate limit (403, Retry-After), as
        # content-creating requests in quick succession do: the comment before the close went through.
        self.closes_rate_limited = 0
        # The next this many merges answer 405 "Base branch was modified": another merge landed on the
        # base in the same instant (GitHub asks to try again).
        self.merges_racing = 0
        self._numbers = count(1)

    def git(self, *args, check=True):
        result = subprocess.run(["git", "--git-dir", self.bare, *args], capture_output=True, text=True)
        if check and result.returncode:
            raise RuntimeError(result.stderr)
        return result

    def sha(self, branch):
        result = self.git("rev-parse", "--verify", "-q", f"refs/heads/{branch}", check=False)
        return result.stdout.strip() or None

    def merge_tree(self, pull):
        """(tree, conflicts): git's merge of the head into the base, without touching any ref."""
        result = self.git("merge-tree", "--write-tree", self.sha(pull.base), self.sha(pull.head), check=False)
        return result.stdout.split()[0], result.returncode == 1

    # --- what a test does on GitHub's side ---------------------------------------------------------
    def review(self, number, login, state, body="", commit_id=None):
        """`login` submits a review (APPROVED, CHANGES_REQUESTED, COMMENTED) on the head, or on `commit_id`."""
        pull = self.pulls[number]
        review = Review(
            id=900000 + sum(len(p.reviews) for p in self.pulls.values()) + 1,
            login=login,
            state=state,
            body=body,
            commit_id=commit_id or self.sha(pull.head),
            submitted_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        pull.reviews.append(review)
        return review

    def close(self, number):
        self.pulls[number].state = "closed"

    def dismiss(self, number, review_id):
        next(review for review in self.pulls[number].reviews if review.id == review_id).state = "DISMISSED"

    def merge_by_hand(self, number, login):
        """A person presses the merge button on GitHub."""
        return self.merge(self.pulls[number], login, "merge")

    def open(self, *, title, body, head, base, author):
        pull = PullRequest(next(self._numbers), title, body, head, base, author)
        self.pulls[pull.number] = pull
        return pull

    def merge(self, pull, login, method, commit_title=None):
        """Really merge in the bare repository, as GitHub's merge button: a merge commit, or a squash."""
        import git as gitpython

        tree, conflicts = self.merge_tree(pull)
        if conflicts:
            raise ValueError("conflicts")
        base, head = self.sha(pull.base), self.sha(pull.head)
        repo = gitpython.Repo(self.bare)
        message = commit_title or f"Merge pull request #{pull.number} from {pull.head}"
        parents = ["-p", base] + (["-p", head] if method == "merge" else [])
        env = {"GIT_AUTHOR_NAME": login, "GIT_AUTHOR_EMAIL": f"{login}@users.noreply.github.com"}
        env |= {"GIT_COMMITTER_NAME": "GitHub", "GIT_COMMITTER_EMAIL": "noreply@github.com"}
        sha = repo.git.commit_tree(tree, *parents, "-m", message, env=env)
        repo.git.update_ref(f"refs/heads/{pull.base}", sha, base)
        pull.state, pull.merged, pull.merge_commit_sha, pull.merged_by = "closed", True, sha, login
        return sha


def split_scopes(raw):
    # GitHub documents a space-delimited list and also accepts commas (social-core sends commas).
    return [scope for scope in re.split(r"[\s,]+", raw or "") if scope]


def redirect_uri_matches(redirect_uri, callback_url):
    """GitHub's rule: same host and port as the registered callback, path inside its path."""
    given, registered = urlsplit(redirect_uri), urlsplit(callback_url)
    return (given.scheme, given.netloc) == (registered.scheme, registered.netloc) and given.path.startswith(
        registered.path
    )


def add_query(url, params):
    return f"{url}{'&' if urlsplit(url).query else '?'}{urlencode(params)}"


class GitHubHandler(BaseHTTPRequestHandler):
    github: GitHubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass  # the tests assert on github.requests instead

    # --- plumbing ------------------------------------------------------------------------
    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def _dispatch(self, method):
        parts = urlsplit(self.path)
        self.query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        self.github.requests.append((method, parts.path))
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        routes = [
            ("GET", r"/login/oauth/authorize", self.authorize),
            ("POST", r"/login/oauth/access_token", self.access_token),
            ("GET", r"/api/v3/user", self.user),
            ("GET", r"/api/v3/user/emails", self.user_emails),
            ("GET", r"/api/v3/user/teams", self.user_teams),
            ("GET", r"/api/v3/orgs/(?P<org>[^/]+)/members/(?P<username>[^/]+)", self.check_membership),
            ("GET", r"/api/v3/orgs/(?P<org>[^/]+)/public_members/(?P<username>[^/]+)", self.check_public_membership),
            ("POST", r"/api/v3/app/installations/(?P<installation>[^/]+)/access_tokens", self.installation_token),
            ("POST", rf"{REPO}/pulls", self.create_pull),
            ("GET", rf"{REPO}/pulls", self.list_pulls),
            ("GET", rf"{REPO}/pulls/(?P<number>\d+)", self.get_pull),
            ("GET", rf"{REPO}/pulls/(?P<number>\d+)/reviews", self.list_reviews),
            ("POST", rf"{REPO}/pulls/(?P<number>\d+)/requested_reviewers", self.request_reviewers),
            ("PUT", rf"{REPO}/pulls/(?P<number>\d+)/merge", self.merge_pull),
            ("POST", rf"{REPO}/issues/(?P<number>\d+)/labels", self.add_labels),
            ("GET", rf"{REPO}/issues/(?P<number>\d+)/comments", self.list_comments),
            ("POST", rf"{REPO}/issues/(?P<number>\d+)/comments", self.add_comment),
            ("PATCH", rf"{REPO}/pulls/(?P<number>\d+)", self.update_pull),
            ("GET", rf"{REPO}/commits/(?P<ref>[^/]+)/check-runs", self.check_runs),
            ("GET", rf"{REPO}/commits/(?P<ref>[^/]+)/status", self.combined_status),
        ]
        if self.github.rate_limited and parts.path.startswith("/api/v3/repos/"):
            body = {
                "message": "API rate limit exceeded for installation ID 44213.",
                "documentation_url": f"{DOCS}/rest/overview/rate-limits-for-the-rest-api",
            }
            reset = str(int(time.time()) + 3600)
            headers = [("x-ratelimit-limit", "5000"), ("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", reset)]
            return self.send_json(HTTPStatus.FORBIDDEN, body, headers)
        for route_method, pattern, handler in routes:
            match = re.fullmatch(pattern, parts.path)
            if match and route_method == method:
                return handler(**match.groupdict())
        if parts.path.startswith("/api/v3/"):
            return self.api_error(HTTPStatus.NOT_FOUND, "Not Found", f"{DOCS}/rest")
        return self.send(HTTPStatus.NOT_FOUND, b"<html><body><h1>404</h1></body></html>", "text/html; charset=utf-8")

    def send(self, status, body=b"", content_type=None, headers=()):
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status, payload, headers=()):
        body = json.dumps(payload).encode()
        headers = [("X-GitHub-Media-Type", "github.v3; format=json"), *headers]
        self.send(status, body, "application/json; charset=utf-8", headers)

    def api_error(self, status, message, documentation_url):
        self.send_json(status, {"message": message, "documentation_url": documentation_url, "status": str(int(status))})

    def redirect(self, location):
        self.send(HTTPStatus.FOUND, headers=[("Location", location)])

    # --- the OAuth web flow ------------------------------------------------------------------
    def authorize(self):
        github, query = self.github, self.query
        if query.get("client_id") != github.client_id:
            return self.send(
                HTTPStatus.NOT_FOUND, b"<html><body><h1>404</h1></body></html>", "text/html; charset=utf-8"
            )
        redirect_uri = query.get("redirect_uri") or github.callback_url
        state = {"state": query["state"]} if "state" in query else {}
        if not redirect_uri_matches(redirect_uri, github.callback_url):
            return self.redirect(
                add_query(
                    github.callback_url,
                    {
                        "error": "redirect_uri_mismatch",
                        "error_description": (
                            "The redirect_uri MUST match the registered callback URL for this application."
                        ),
                        "error_uri": ERROR_URIS["redirect_uri_mismatch"],
                        **state,
                    },
                )
            )
        if github.browser_login is None:
            return self.send(
                HTTPStatus.OK, b"<html><body><h1>Sign in to GitHub</h1></body></html>", "text/html; charset=utf-8"
            )
        if github.denies_authorization:
            return self.redirect(
                add_query(
                    redirect_uri,
                    {
                        "error": "access_denied",
                        "error_description": "The user has denied your application access.",
                        "error_uri": ERROR_URIS["access_denied"],
                        **state,
                    },
                )
            )
        code = github.issue_code(github.browser_login, redirect_uri, split_scopes(query.get("scope")))
        self.redirect(add_query(redirect_uri, {"code": code, **state}))

    def access_token(self):
        github = self.github
        form = {key: values[-1] for key, values in parse_qs(self.body.decode()).items()}
        params = {**self.query, **form}
        if params.get("client_id") != github.client_id or params.get("client_secret") != github.client_secret:
            return self.token_response(
                {
                    "error": "incorrect_client_credentials",
                    "error_description": "The client_id and/or client_secret passed are incorrect.",
                    "error_uri": ERROR_URIS["incorrect_client_credentials"],
                }
            )
        grant = github.redeem_code(params.get("code", ""))
        if grant is None:
            return self.token_response(
                {
                    "error": "bad_verification_code",
                    "error_description": "The code passed is incorrect or expired.",
                    "error_uri": ERROR_URIS["bad_verification_code"],
                }
            )
        if params.get("redirect_uri") and params["redirect_uri"] != grant.redirect_uri:
            return self.token_response(
                {
                    "error": "redirect_uri_mismatch",
                    "error_description": (
                        "The redirect_uri MUST match the registered callback URL for this application."
                    ),
                    "error_uri": ERROR_URIS["token_redirect_uri_mismatch"],
                }
            )
        token = github.issue_token(grant.login, grant.scopes)
        self.token_response({"access_token": token, "token_type": "bearer", "scope": ",".join(grant.scopes)})

    def token_response(self, payload):
        """Errors too come back as 200; the format follows the Accept header (form-encoded by default)."""
        if "application/json" in self.headers.get("Accept", ""):
            return self.send_json(HTTPStatus.OK, payload)
        self.send(HTTPStatus.OK, urlencode(payload).encode(), "application/x-www-form-urlencoded; charset=utf-8")

    # --- the REST API ----------------------------------------------------------------------
    def authenticated(self, documentation_url):
        """The (account, scopes) of the `Authorization: token|Bearer` header, or None after a 401."""
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            self.api_error(HTTPStatus.UNAUTHORIZED, "Requires authentication", documentation_url)
            return None
        owner = self.github.token_owner(token.strip()) if scheme.lower() in {"token", "bearer"} else None
        if owner is None:
            self.api_error(HTTPStatus.UNAUTHORIZED, "Bad credentials", f"{DOCS}/rest")
            return None
        login, scopes = owner
        return self.github.accounts[login], scopes

    def scope_headers(self, scopes, accepted=""):
        return [("X-OAuth-Scopes", ", ".join(scopes)), ("X-Accepted-OAuth-Scopes", accepted)]

    def user(self):
        caller = self.authenticated(f"{DOCS}/rest/users/users#get-the-authenticated-user")
        if caller is None:
            return
        account, scopes = caller
        self.send_json(HTTPStatus.OK, self.user_json(account), self.scope_headers(scopes))

    def user_json(self, account):
        api = self.github.api_url
        return {
            "login": account.login,
            "id": account.id,
            "node_id": f"U_{account.id}",
            "avatar_url": f"{self.github.url}/avatars/u/{account.id}",
            "url": f"{api}users/{account.login}",
            "html_url": f"{self.github.url}/{account.login}",
            "type": "User",
            "site_admin": False,
            "name": account.name,
            "company": None,
            "email": account.email,
        }

    def user_emails(self):
        documentation_url = f"{DOCS}/rest/users/emails#list-email-addresses-for-the-authenticated-user"
        caller = self.authenticated(documentation_url)
        if caller is None:
            return
        account, scopes = caller
        if not EMAIL_SCOPES & set(scopes):
            return self.api_error(HTTPStatus.NOT_FOUND, "Not Found", documentation_url)
        self.send_json(HTTPStatus.OK, account.emails, self.scope_headers(scopes, "user, user:email"))

    def check_membership(self, org, username):
        """204 member / 404 not, when the caller can see the organization's members; otherwise
        404 about oneself, or 302 to the public membership check about someone else."""
        documentation_url = f"{DOCS}/rest/orgs/members#check-organization-membership-for-a-user"
        caller = self.authenticated(documentation_url)
        if caller is None:
            return
        account, scopes = caller
        caller_sees_members = self.github.is_member(org, account.login) and ORG_READ_SCOPES & set(scopes)
        if caller_sees_members:
            if self.github.is_member(org, username):
                return self.send(HTTPStatus.NO_CONTENT, headers=self.scope_headers(scopes))
            return self.api_error(
                HTTPStatus.NOT_FOUND, "User does not exist or is not a member of the organization", documentation_url
            )
        if username.lower() == account.login.lower():
            return self.api_error(
                HTTPStatus.NOT_FOUND, "User does not exist or is not a member of the organization", documentation_url
            )
        self.redirect(f"{self.github.api_url}orgs/{org}/public_members/{username}")

    def check_public_membership(self, org, username):
        if self.github.is_public_member(org, username):
            return self.send(HTTPStatus.NO_CONTENT)
        self.api_error(
            HTTPStatus.NOT_FOUND,
            "Not Found",
            f"{DOCS}/rest/orgs/members#check-public-organization-membership-for-a-user",
        )

    def user_teams(self):
        caller = self.authenticated(f"{DOCS}/rest/teams/teams#list-teams-for-the-authenticated-user")
        if caller is None:
            return
        account, scopes = caller
        per_page = min(max(int(self.query.get("per_page", 30)), 1), 100)
        page = max(int(self.query.get("page", 1)), 1)
        teams = self.github.teams_of(account.login)
        last_page = max((len(teams) + per_page - 1) // per_page, 1)
        chunk = teams[(page - 1) * per_page : page * per_page]
        headers = self.scope_headers(scopes, "read:org, repo, user")
        links = self.pagination_links("user/teams", page, last_page, per_page)
        if links:
            headers.append(("Link", links))
        self.send_json(HTTPStatus.OK, [self.team_json(team) for team in chunk], headers)

    def pagination_links(self, path, page, last_page, per_page):
        def link(number, rel):
            return f'<{self.github.api_url}{path}?{urlencode({"per_page": per_page, "page": number})}>; rel="{rel}"'

        links = []
        if page > 1:
            links += [link(page - 1, "prev")]
        if page < last_page:
            links += [link(page + 1, "next"), link(last_page, "last")]
        if page > 1:
            links += [link(1, "first")]
        return ", ".join(links)

    def team_json(self, team):
        api, web = self.github.api_url, self.github.url
        return {
            "id": team.id,
            "node_id": f"T_{team.id}",
            "url": f"{api}teams/{team.id}",
            "html_url": f"{web}/orgs/{team.organization}/teams/{team.slug}",
            "name": team.name,
            "slug": team.slug,
            "description": "",
            "privacy": "closed",
            "notification_setting": "notifications_enabled",
            "permission": "pull",
            "members_url": f"{api}teams/{team.id}/members{{/member}}",
            "repositories_url": f"{api}teams/{team.id}/repos",
            "parent": None,
            "members_count": len(team.members),
            "repos_count": 0,
            "organization": {
                "login": team.organization,
                "id": self.github.organization_id(team.organization),
                "node_id": f"O_{team.organization}",
                "url": f"{api}orgs/{team.organization}",
                "description": "",
            },
        }


REPO = r"/api/v3/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)"
PULLS_DOCS = f"{DOCS}/rest/pulls/pulls"
VALIDATION_FAILED = "Validation Failed"


class PullRequestsHandler(GitHubHandler):
    """The REST endpoints of pull requests, reviews, labels, checks and App installation tokens."""

    def json_body(self):
        try:
            body = json.loads(self.body or b"{}")
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def repository(self, owner, name, documentation_url):
        """The caller's account and the repository, or None after a 401/404 answer."""
        caller = self.authenticated(documentation_url)
        if caller is None:
            return None
        repository = self.github.repositories.get(f"{owner}/{name}")
        if repository is None:
            self.api_error(HTTPStatus.NOT_FOUND, "Not Found", documentation_url)
            return None
        return caller[0], repository

    def validation_failed(self, documentation_url, errors):
        self.send_json(
            HTTPStatus.UNPROCESSABLE_ENTITY,
            {"message": VALIDATION_FAILED, "errors": errors, "documentation_url": documentation_url, "status": "422"},
        )

    def installation_token(self, installation):
        import jwt

        header = self.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip()
        documentation_url = f"{DOCS}/rest/apps/apps#create-an-installation-access-token-for-an-app"
        try:
            issuer = str(jwt.decode(token, options={"verify_signature": False})["iss"])
            public_key, installed_on, bot = self.github.apps[issuer]
            jwt.decode(token, public_key, algorithms=["RS256"], options={"require": ["iat", "exp", "iss"]})
        except Exception:
            return self.api_error(HTTPStatus.UNAUTHORIZED, "A JSON web token could not be decoded", f"{DOCS}/rest")
        if installed_on != installation:
            return self.api_error(HTTPStatus.NOT_FOUND, "Not Found", documentation_url)
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        access = "ghs_" + secrets.token_urlsafe(27)[:36]
        with self.github._lock:
            self.github._tokens[access] = (bot, ["repo"])
        self.send_json(HTTPStatus.CREATED, {"token": access, "expires_at": expires, "permissions": {}})

    def pull_json(self, repository, pull):
        api, web = self.github.api_url, self.github.url
        head_sha, base_sha = repository.sha(pull.head), repository.sha(pull.base)
        mergeable, mergeable_state = None, "unknown"
        if pull.state == "open" and not repository.mergeable_unknown and head_sha and base_sha:
            conflicts = repository.merge_tree(pull)[1]
            mergeable, mergeable_state = not conflicts, "dirty" if conflicts else "clean"
        owner = repository.full_name.split("/")[0]
        return {
            "url": f"{api}repos/{repository.full_name}/pulls/{pull.number}",
            "id": 500000 + pull.number,
            "number": pull.number,
            "html_url": f"{web}/{repository.full_name}/pull/{pull.number}",
            "state": pull.state,
            "title": pull.title,
            "body": pull.body,
            "user": self.user_json(self.github.accounts[pull.author]),
            "labels": [{"name": label} for label in pull.labels],
            "requested_teams": [{"slug": slug} for slug in pull.requested_teams],
            "requested_reviewers": [{"login": login} for login in pull.requested_reviewers],
            "head": {"label": f"{owner}:{pull.head}", "ref": pull.head, "sha": head_sha},
            "base": {"label": f"{owner}:{pull.base}", "ref": pull.base, "sha": base_sha},
            "merged": pull.merged,
            "mergeable": mergeable,
            "mergeable_state": mergeable_state,
            "merge_commit_sha": pull.merge_commit_sha,
            "merged_by": self.user_json(self.github.accounts[pull.merged_by]) if pull.merged_by else None,
        }

    def find_pull(self, repository, number, documentation_url):
        pull = repository.pulls.get(int(number))
        if pull is None:
            self.api_error(HTTPStatus.NOT_FOUND, "Not Found", documentation_url)
        return pull

    def create_pull(self, owner, name):
        documentation_url = f"{PULLS_DOCS}#create-a-pull-request"
        found = self.repository(owner, name, documentation_url)
        if found is None:
            return
        account, repository = found
        body = self.json_body()
        if body is None:
            return self.api_error(HTTPStatus.BAD_REQUEST, "Problems parsing JSON", documentation_url)
        missing = [key for key in ("title", "head", "base") if not body.get(key)]
        if missing:
            return self.validation_failed(
                documentation_url,
                [{"resource": "PullRequest", "field": key, "code": "missing_field"} for key in missing],
            )
        head = body["head"].split(":")[-1]
        for key, branch in (("head", head), ("base", body["base"])):
            if repository.sha(branch) is None:
                return self.validation_failed(
                    documentation_url, [{"resource": "PullRequest", "field": key, "code": "invalid"}]
                )
        if any(pull.head == head and pull.state == "open" for pull in repository.pulls.values()):
            return self.validation_failed(
                documentation_url,
                [
                    {
                        "resource": "PullRequest",
                        "code": "custom",
                        "message": f"A pull request already exists for {owner}:{head}.",
                    }
                ],
            )
        pull = repository.open(
            title=body["title"], body=body.get("body") or "", head=head, base=body["base"], author=account.login
        )
        self.send_json(HTTPStatus.CREATED, self.pull_json(repository, pull))

    def list_pulls(self, owner, name):
        found = self.repository(owner, name, f"{PULLS_DOCS}#list-pull-requests")
        if found is None:
            return
        repository = found[1]
        state, head = self.query.get("state", "open"), self.query.get("head", "").split(":")[-1]
        pulls = [
            pull
            for pull in repository.pulls.values()
            if (state == "all" or pull.state == state) and (not head or pull.head == head)
        ]
        self.send_json(HTTPStatus.OK, [self.pull_json(repository, pull) for pull in pulls])

    def get_pull(self, owner, name, number):
        documentation_url = f"{PULLS_DOCS}#get-a-pull-request"
        found = self.repository(owner, name, documentation_url)
        if found is None:
            return
        pull = self.find_pull(found[1], number, documentation_url)
        if pull is not None:
            self.send_json(HTTPStatus.OK, self.pull_json(found[1], pull))

    def list_reviews(self, owner, name, number):
        documentation_url = f"{DOCS}/rest/pulls/reviews#list-reviews-for-a-pull-request"
        found = self.repository(owner, name, documentation_url)
        if found is None:
            return
        repository = found[1]
        pull = self.find_pull(repository, number, documentation_url)
        if pull is None:
            return
        per_page = min(max(int(self.query.get("per_page", 30)), 1), 100)
        page = max(int(self.query.get("page", 1)), 1)
        chunk = pull.reviews[(page - 1) * per_page : page * per_page]
        self.send_json(
            HTTPStatus.OK,
            [
                {
                    "id": review.id,
                    "node_id": f"PRR_{review.id}",
                    "user": self.user_json(self.github.accounts[review.login]),
                    "body": review.body,
                    "state": review.state,
                    "html_url": f"{self.github.url}/{repository.full_name}/pull/{pull.number}"
                    f"#pullrequestreview-{review.id}",
                    "commit_id": review.commit_id,
                    "submitted_at": review.submitted_at,
                    "author_association": "MEMBER",
                }
                for review in chunk
            ],
        )

    def request_reviewers(self, owner, name, number):
        documentation_url = f"{DOCS}/rest/pulls/review-requests#request-reviewers-for-a-pull-request"
        found = self.repository(owner, name, documentation_url)
        if found is None:
            return
        repository = found[1]
        pull = self.find_pull(repository, number, documentation_url)
        if pull is None:
            return
        body = self.json_body() or {}
        organization = repository.full_name.split("/")[0]
        slugs = {team.slug for team in self.github.teams if team.organization == organization}
        unknown = [slug for slug in body.get("team_reviewers", []) if slug not in slugs]
        unknown += [login for login in body.get("reviewers", []) if login not in self.github.accounts]
        if unknown:
            return self.validation_failed(
                documentation_url,
                [
                    "Reviews may only be requested from collaborators. One or more of the teams you specified is "
                    f"not a collaborator of the {repository.full_name} repository."
                ],
            )
        pull.requested_teams += body.get("team_reviewers", [])
        pull.requested_reviewers += body.get("reviewers", [])
        self.send_json(HTTPStatus.CREATED, self.pull_json(repository, pull))

    def add_labels(self, owner, name, number):
        documentation_url = f"{DOCS}/rest/issues/labels#add-labels-to-an-issue"
        found = self.repository(owner, name, documentation_url)
        if found is None:
            return
        pull = self.find_pull(found[1], number, documentation_url)
        if pull is None:
            return
        if found[1].labels_rate_limited:
            found[1].labels_rate_limited -= 1
            return self.secondary_rate_limit()
        body = self.json_body() or {}
        for label in body.get("labels", []):
            if label not in pull.labels:
                pull.labels.append(label)
        self.send_json(HTTPStatus.OK, [{"name": label, "color": "ededed", "default": False} for label in pull.labels])

    def secondary_rate_limit(self):
        message = (
            "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you "
            "reach out to GitHub Support for help, please include the request ID 4C1E:2F05:1D3A8B:3B5E1C:6756A1F2."
        )
        body = {
            "message": message,
            "documentation_url": f"{DOCS}/rest/using-the-rest-api/rate-limits-for-the-rest-api",
        }
        self.send(HTTPStatus.FORBIDDEN, json.dumps(body).encode(), "application/json", [("Retry-After", "60")])

    def comment_json(self, repository, pull, index):
        api, web = self.github.api_url, self.github.url
        comment_id, (login, body), at = 700000 + index + 1, pull.comments[index], pull.commented_at[index]
        return {
            "id": comment_id,
            "node_id": f"IC_{comment_id}",
            "url": f"{api}repos/{repository.full_name}/issues/comments/{comment_id}",
            "html_url": f"{web}/{repository.full_name}/pull/{pull.number}#issuecomment-{comment_id}",
            "issue_url": f"{api}repos/{repository.full_name}/issues/{pull.number}",
            "body": body,
            "user": self.user_json(self.github.accounts[login]),
            "created_at": at,
            "updated_at": at,
            "author_association": "NONE",
        }

    def list_comments(self, owner, name, number):
        documentation_url = f"{DOCS}/rest/issues/comments#list-issue-comments"
        found = self.repository(owner, name, documentation_url)
        if found is None:
            return
        repository = found[1]
        pull = self.find_pull(repository, number, documentation_url)
        if pull is None:
            return
        per_page = min(max(int(self.query.get("per_page", 30)), 1), 100)
        page = max(int(self.query.get("page", 1)), 1)
        last_page = max((len(pull.comments) + per_page - 1) // per_page, 1)
        indexes = range(len(pull.comments))[(page - 1) * per_page : page * per_page]
        links = self.pagination_links(
            f"repos/{repository.full_name}/issues/{pull.number}/comments", page, last_page, per_page
        )
        self.send_json(
            HTTPStatus.OK,
            [self.comment_json(repository, pull, index) for index in indexes],
            [("Link", links)] if links else [],
        )

    def add_comment(self, owner, name, number):
        documentation_url = f"{DOCS}/rest/issues/comments#create-an-issue-comment"
        found = self.repository(owner, name, documentation_url)
        if found is None:
            return
        account, repository = found
        pull = self.find_pull(repository, number, documentation_url)
        if pull is None:
            return
        body = self.json_body() or {}
        if not body.get("body"):
            return self.validation_failed(
                documentation_url, [{"resource": "IssueComment", "field": "body", "code": "missing_field"}]
            )
        pull.comments.append((account.login, body["body"]))
        pull.commented_at.append(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        self.send_json(HTTPStatus.CREATED, self.comment_json(repository, pull, len(pull.comments) - 1))

    def update_pull(self, owner, name, number):
        documentation_url = f"{PULLS_DOCS}#update-a-pull-request"
        found = self.repository(owner, name, documentation_url)
        if found is None:
            return
        repository = found[1]
        pull = self.find_pull(repository, number, documentation_url)
        if pull is None:
            return
        if repository.closes_failing:
            repository.closes_failing -= 1
            return self.send(HTTPStatus.BAD_GATEWAY, b"<html><body>502 Bad Gateway</body></html>", "text/html")
        if repository.closes_rate_limited:
            repository.closes_rate_limited -= 1
            return self.secondary_rate_limit()
        body = self.json_body() or {}
        if body.get("state") not in (None, "open", "closed"):
            return self.validation_failed(
                documentation_url, [{"resource": "PullRequest", "field": "state", "code": "invalid"}]
            )
        if body.get("state") and not pull.merged:
            pull.state = body["state"]
        self.send_json(HTTPStatus.OK, self.pull_json(repository, pull))

    def resolve(self, repository, ref):
        return repository.sha(ref) or ref

    def check_runs(self, owner, name, ref):
        found = self.repository(owner, name, f"{DOCS}/rest/checks/runs#list-check-runs-for-a-git-reference")
        if found is None:
            return
        runs = found[1].check_runs.get(self.resolve(found[1], ref), [])
        self.send_json(
            HTTPStatus.OK,
            {
                "total_count": len(runs),
                "check_runs": [
                    {"id": index + 1, "name": run["name"], "status": run["status"], "conclusion": run.get("conclusion")}
                    for index, run in enumerate(runs)
                ],
            },
        )

    def combined_status(self, owner, name, ref):
        found = self.repository(
            owner, name, f"{DOCS}/rest/commits/statuses#get-the-combined-status-for-a-specific-reference"
        )
        if found is None:
            return
        statuses = found[1].statuses.get(self.resolve(found[1], ref), [])
        states = {status["state"] for status in statuses}
        state = (
            "failure"
            if states & {"failure", "error"}
            else "pending"
            if "pending" in states or not statuses
            else "success"
        )
        self.send_json(
            HTTPStatus.OK,
            {"state": state, "sha": self.resolve(found[1], ref), "total_count": len(statuses), "statuses": statuses},
        )

    def merge_pull(self, owner, name, number):
        documentation_url = f"{PULLS_DOCS}#merge-a-pull-request"
        found = self.repository(owner, name, documentation_url)
        if found is None:
            return
        account, repository = found
        pull = self.find_pull(repository, number, documentation_url)
        if pull is None:
            return
        body = self.json_body() or {}
        method = body.get("merge_method", "merge")
        if method not in ("merge", "squash", "rebase"):
            return self.validation_failed(
                documentation_url, [{"resource": "PullRequest", "field": "merge_method", "code": "invalid"}]
            )
        if pull.state != "open":
            return self.api_error(HTTPStatus.METHOD_NOT_ALLOWED, "Pull Request is not mergeable", documentation_url)
        if body.get("sha") and body["sha"] != repository.sha(pull.head):
            return self.api_error(
                HTTPStatus.CONFLICT, "Head branch was modified. Review and try the merge again.", documentation_url
            )
        if repository.protection_message:
            return self.api_error(HTTPStatus.METHOD_NOT_ALLOWED, repository.protection_message, documentation_url)
        if repository.merges_racing:
            repository.merges_racing -= 1
            return self.api_error(
                HTTPStatus.METHOD_NOT_ALLOWED,
                "Base branch was modified. Review and try the merge again.",
                documentation_url,
            )
        if repository.merges_failing:
            repository.merges_failing -= 1
            return self.send(HTTPStatus.BAD_GATEWAY, b"<html><body>502 Bad Gateway</body></html>", "text/html")
        try:
            sha = repository.merge(
                pull, account.login, "squash" if method == "rebase" else method, body.get("commit_title")
            )
        except ValueError:
            return self.api_error(HTTPStatus.METHOD_NOT_ALLOWED, "Pull Request is not mergeable", documentation_url)
        self.send_json(HTTPStatus.OK, {"sha": sha, "merged": True, "message": "Pull Request successfully merged"})


GITHUB_ORGANIZATION = "nexo-org"


@pytest.fixture
def github_server(settings):
    """A running GitHub test server (tests/servers/github.py), with the portal's sign-in pointed
    at it as if it were GitHub Enterprise, for members of the nexo-org organization."""
    server = GitHubServer(
        client_id="Iv1.0123456789abcdef",
        client_secret="test-client-secret-0123456789abcdef01234567",
        callback_url="http://testserver/accounts/complete/github-org/",
    )
    with server.running():
        settings.SOCIAL_AUTH_GITHUB_ORG_KEY = server.client_id
        settings.SOCIAL_AUTH_GITHUB_ORG_SECRET = server.client_secret
        settings.SOCIAL_AUTH_GITHUB_ORG_NAME = GITHUB_ORGANIZATION
        settings.SOCIAL_AUTH_GITHUB_ORG_URL = server.url
        settings.SOCIAL_AUTH_GITHUB_ORG_API_URL = server.api_url
        yield server
