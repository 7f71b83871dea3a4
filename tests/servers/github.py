"""A GitHub for the tests: the OAuth web flow and the REST endpoints that sign-in uses.

It speaks GitHub's own wire format, as documented on docs.github.com ("Authorizing OAuth
apps", "Troubleshooting OAuth app access token request errors", REST "Users", "Emails",
"Organization members", "Teams", "Using pagination"): the same paths, JSON fields,
status codes, headers and error bodies. One server plays both halves the way GitHub
Enterprise Server lays them out: the web at `url`, the REST API under `api_url` (/api/v3/).

Not modelled: the consent page (the account in `browser_login` approves at once, or
refuses when `denies_authorization` is set), code expiry after ten minutes, rate limits.
"""

import json
import re
import secrets
import threading
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
        self._codes = {}
        self._tokens = {}  # access token -> (login, scopes)
        self._ids = count(1000)
        self._organization_ids = {}
        self._lock = threading.Lock()
        self._httpd = None

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

        class Handler(GitHubHandler):
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
        ]
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
