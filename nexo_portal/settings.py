"""Settings for the Nexo Release Portal, read from environment variables (12-factor).

Defaults make a first run work on a laptop (SQLite, local Redis, DEBUG off unless asked);
production refuses to start when a secret it needs is missing.
"""

import os
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


class Env(environ.Env):
    """django-environ, reading "a, b" as "a,b": the spaces people put after the commas of a list, or
    around its key=value pairs, are not part of a host name, an address, a team or a secret."""

    @classmethod
    def parse_value(cls, value, cast):
        if cast is list:
            return [item.strip() for item in value.split(",") if item.strip()]
        if cast is dict:
            pairs = dict(item.split("=", 1) for item in value.split(",") if item.strip())
            return {key.strip(): item.strip() for key, item in pairs.items()}
        return super().parse_value(value, cast)


env = Env()

DEBUG = env.bool("DEBUG", default=False)

# A key that is only ever used with DEBUG on; production must bring its own.
_DEVELOPMENT_SECRET_KEY = "insecure-development-key-never-use-in-production"
SECRET_KEY = env.str("SECRET_KEY", default=_DEVELOPMENT_SECRET_KEY if DEBUG else "")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_filters",
    "nexo_portal.apps.JobQueueConfig",  # django_rq
    "social_django",
    "axes",
    "nexo_portal",
    "environments",
    "releases",
    "releases.dora",
    "audit",
]

MIDDLEWARE = [
    # First: the request id, user and promotion of every log line and span the request leads to.
    "nexo_portal.lib.middleware.RequestContext",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # After the user is known (the 400 page shows who is signed in), before any view reads the input.
    "nexo_portal.lib.middleware.RefuseUnreadableInput",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "nexo_portal.auth.PortalLoginRequiredMiddleware",
    "nexo_portal.auth.SignInErrorMiddleware",
    # Password sign-ins as a user name guessed from many addresses wait (nexo_portal/sign_in_delay.py).
    "nexo_portal.sign_in_delay.SignInDelayMiddleware",
    # Last, as django-axes asks: it turns a locked-out sign-in into its lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "nexo_portal.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "nexo_portal.context_processors.sign_in",
                "nexo_portal.context_processors.waiting",
            ],
        },
    },
]

WSGI_APPLICATION = "nexo_portal.wsgi.application"

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'var' / 'db.sqlite3'}"),
}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
# Keep connections for a minute (web requests and RQ jobs reuse them), checked before reuse.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# A database that takes the connection and never answers fails the connection after this long, instead
# of holding the request (/healthz answers 503), the job or the reconciler's round for good. A
# connect_timeout in DATABASE_URL's query string wins.
DATABASE_CONNECT_TIMEOUT_SECONDS = env.int("DATABASE_CONNECT_TIMEOUT_SECONDS", default=5)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", DATABASE_CONNECT_TIMEOUT_SECONDS)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The demo's web server, worker and reconciler write to one file. SQLite's default transaction
    # takes the write lock at its first write and fails at once ("database is locked") when another
    # writer holds it: IMMEDIATE takes it at BEGIN, where a writer waits up to `timeout` seconds;
    # WAL lets pages read meanwhile.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        transaction_mode="IMMEDIATE", timeout=20, init_command="PRAGMA journal_mode=WAL;"
    )
# The role the portal runs as, when migrations run as another (the tables' owner): `migrate`
# grants it what the portal needs and no more — the audit log only SELECT and INSERT, so it can
# neither change nor truncate the log, nor disable its trigger (docs/deploy.md).
DATABASE_RUNTIME_ROLE = env.str("DATABASE_RUNTIME_ROLE", default="")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
FORMS_URLFIELD_ASSUME_HTTPS = True

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

# --- Security: safe by default, relaxed only for local HTTP development -------------------
SECURE_HTTPS = env.bool("SECURE_HTTPS", default=not DEBUG)
SESSION_COOKIE_SECURE = SECURE_HTTPS
CSRF_COOKIE_SECURE = SECURE_HTTPS
# Served over HTTPS: plain HTTP is redirected and browsers are told to stay on HTTPS for a year.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=SECURE_HTTPS)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000 if SECURE_HTTPS else 0)
# Behind a load balancer that ends TLS, trust its X-Forwarded-Proto (and only then), or every
# request looks like plain HTTP: redirect loops, refused sign-ins, http:// OAuth callbacks.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("BEHIND_TLS_PROXY", default=False) else None
# Load-balancer and kubelet probes, and Prometheus scraping a pod, speak plain HTTP to the pod.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_HTTPONLY = True
SESSION_ENGINE = "nexo_portal.sessions"
# A sign-in lasts a working day, not Django's two weeks: GitHub teams become groups only at sign-in,
# so someone taken out of a team (or the organization) keeps its approvals at most this long.
SESSION_COOKIE_AGE = env.int("SESSION_HOURS", default=12) * 3600
SESSION_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"

# Content-Security-Policy (django-csp): the portal's pages and the admin load scripts, styles and
# images from the portal only, run no inline or eval'd script, and are never framed. Swagger UI
# and the RQ dashboard come with inline scripts of their own and are left out; ReDoc keeps it,
# with inline styles and a blob: worker allowed (nexo_portal/api_urls.py).
CONTENT_SECURITY_POLICY = {
    "EXCLUDE_URL_PREFIXES": ["/api/v1/docs/", "/admin/rq/"],
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'none'"],
        # Signing in with GitHub posts here and is redirected to GitHub (see below for its URL).
        "form-action": ["'self'"],
    },
}

# How often the board and a promotion's timeline refresh themselves while open.
LIVE_REFRESH_SECONDS = env.int("LIVE_REFRESH_SECONDS", default=5)
# The board rows each process keeps as rendered, in MB of HTML (~3.4 KB a row; with their keys about
# three times that in memory): 8 MB is ~2,400 rows, twelve full 200-service boards of readers in
# different groups (readers in the same groups share rows but where a promotion is).
BOARD_KEPT_ROWS_MB = env.int("BOARD_KEPT_ROWS_MB", default=8)

# --- Queue --------------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
RQ_QUEUES = {
    "default": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 3600},
}
RQ_SHOW_ADMIN_LINK = True
# Transitions enqueue their next job in their own transaction.on_commit hook, where a Redis
# outage is caught and left to the reconciler; django-rq must not defer the enqueue again.
RQ = {"COMMIT_MODE": "auto", "WORKER_CLASS": "releases.worker.PortalWorker"}
# Pipeline steps (releases/steps.py): a worker renews its lease on a step while it works; a step
# whose lease expired lost its worker and is started again by the reconciler, which looks every
# RECONCILE_SECONDS. A killed worker's promotion goes on within lease + reconcile interval.
PIPELINE_LEASE_SECONDS = env.int("PIPELINE_LEASE_SECONDS", default=30)
RECONCILE_SECONDS = env.int("RECONCILE_SECONDS", default=30)
# How long a step keeps retrying transient errors (Git, Redis or the database unreachable), with
# backoff, before its promotion fails; and how many crashes of one step fail it.
PIPELINE_RETRY_SECONDS = env.int("PIPELINE_RETRY_SECONDS", default=600)
PIPELINE_MAX_CRASHES = env.int("PIPELINE_MAX_CRASHES", default=3)
# The cache holds short-lived counters (API throttling) that every web worker must share.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "nexo-portal",
    },
}

# --- GitOps repository ------------------------------------------------------------------------
GITOPS_REPO_URL = env.str("GITOPS_REPO_URL", default=str(BASE_DIR / "var" / "gitops.git"))
# A GitOps commit on the forge's web pages, {sha} filled in, e.g.
# https://github.com/nexo-org/nexo-gitops/commit/{sha}; blank: commits are shown without a link.
GITOPS_COMMIT_URL_TEMPLATE = env.str("GITOPS_COMMIT_URL_TEMPLATE", default="")
GITOPS_BRANCH = env.str("GITOPS_BRANCH", default="main")
# One working copy per repository URL and host, shared by the host's workers under the Redis lock.
GITOPS_WORKDIR = env.str("GITOPS_WORKDIR", default=str(BASE_DIR / "var" / "gitops-workdirs"))
GITOPS_AUTHOR_NAME = env.str("GITOPS_AUTHOR_NAME", default="Nexo Release Portal")
GITOPS_AUTHOR_EMAIL = env.str("GITOPS_AUTHOR_EMAIL", default="release-portal@nexo.invalid")
GITOPS_PUSH_ATTEMPTS = env.int("GITOPS_PUSH_ATTEMPTS", default=5)
# A clone, fetch or push that takes longer is stopped.
GITOPS_NETWORK_TIMEOUT_SECONDS = env.int("GITOPS_NETWORK_TIMEOUT_SECONDS", default=60)
# The repository lock's lifetime: renewed by a thread every third of it while held, so it only
# bounds how long a killed worker keeps the others out.
GITOPS_LOCK_SECONDS = env.int("GITOPS_LOCK_SECONDS", default=15)

# --- Audit log ---------------------------------------------------------------------------------
# Seals every audit event and signs the checkpoints of its chain (audit/log.py). Keep it out of the
# database's reach, and keep it: events sealed with an earlier key no longer check.
_DEVELOPMENT_AUDIT_KEY = "insecure-development-audit-key-never-use-in-production"
AUDIT_CHECKPOINT_KEY = env.str("AUDIT_CHECKPOINT_KEY", default=_DEVELOPMENT_AUDIT_KEY if DEBUG else "")
# Where checkpoints go besides the log output, and are read back from to verify the chain
# (audit/checkpoints.py): a class, by its dotted path; empty for the log output only.
AUDIT_WITNESS = env.str("AUDIT_WITNESS", default="releases.gitops.witness.GitOpsWitness")
# The GitOps witness's branch, which Argo CD never follows; the file of audit.checkpoints.FileWitness.
AUDIT_CHECKPOINT_BRANCH = env.str("AUDIT_CHECKPOINT_BRANCH", default="nexo-audit-checkpoints")
AUDIT_WITNESS_FILE = env.str("AUDIT_WITNESS_FILE", default="")
if AUDIT_WITNESS == "audit.checkpoints.FileWitness" and not AUDIT_WITNESS_FILE:
    # Without it the witness is the working directory, which can be neither read nor appended to.
    raise ImproperlyConfigured(
        "AUDIT_WITNESS is audit.checkpoints.FileWitness, which needs AUDIT_WITNESS_FILE: the file to append the "
        "audit chain's checkpoints to, on storage the database's administrators cannot write (docs/deploy.md)."
    )
# How often the chain is verified against the witness, and a checkpoint taken when it holds.
AUDIT_VERIFY_SECONDS = env.int("AUDIT_VERIFY_SECONDS", default=600)
# The first audit event the portal sealed, for a log begun before seals existed: the events before it
# may have none. 0: every event must be sealed. In the environment, as the database's owner could
# otherwise move it (audit/log.py).
AUDIT_SEALED_FROM = env.int("AUDIT_SEALED_FROM", default=0)

# --- Argo CD and Prometheus (unset means "not configured", never a silent pass) -----------
ARGOCD_URL = env.str("ARGOCD_URL", default="")
ARGOCD_TOKEN = env.str("ARGOCD_TOKEN", default="")
ARGOCD_SYNC_TIMEOUT_SECONDS = env.int("ARGOCD_SYNC_TIMEOUT_SECONDS", default=600)
ARGOCD_POLL_SECONDS = env.float("ARGOCD_POLL_SECONDS", default=5.0)
ARGOCD_VERIFY_TLS = env.bool("ARGOCD_VERIFY_TLS", default=True)
ARGOCD_WEBHOOK_SECRET = env.str("ARGOCD_WEBHOOK_SECRET", default="")
# Argo CD's web UI, for links to an application (often ARGOCD_URL itself); blank: no link.
ARGOCD_UI_URL = env.str("ARGOCD_UI_URL", default="")
PROMETHEUS_URL = env.str("PROMETHEUS_URL", default="")
# The shortest range a query's {range} is filled with (releases/verification.py): rate() needs two
# scrapes in its window, so this is at least twice the scrape interval. Samples wait until then.
VERIFICATION_MIN_RANGE_SECONDS = env.int("VERIFICATION_MIN_RANGE_SECONDS", default=30)
# PagerDuty V3 webhook subscriptions, one signing secret each; none set refuses every delivery. An
# incident is filed under the environment of the subscription whose secret signed it (the URL is not
# signed, so it decides nothing): INCIDENT_WEBHOOK_SECRET's is INCIDENT_WEBHOOK_ENVIRONMENT (default:
# DORA's, production), and INCIDENT_WEBHOOK_SECRETS adds more, as environment=secret,environment=secret.
INCIDENT_WEBHOOK_SECRET = env.str("INCIDENT_WEBHOOK_SECRET", default="")
INCIDENT_WEBHOOK_ENVIRONMENT = env.str("INCIDENT_WEBHOOK_ENVIRONMENT", default="")
INCIDENT_WEBHOOK_SECRETS = env.dict("INCIDENT_WEBHOOK_SECRETS", default={})
HTTP_TIMEOUT_SECONDS = env.float("HTTP_TIMEOUT_SECONDS", default=10.0)
# Failed promotions are said in Slack (an incoming webhook); unset, they are on the board only.
SLACK_WEBHOOK_URL = env.str("SLACK_WEBHOOK_URL", default="")
# Approvers told what awaits them (releases/approval_notices.py): a Slack app's bot token posts to
# SLACK_APPROVALS_CHANNEL and updates the message when it is decided; its buttons call back to
# /api/v1/slack/interactions/, signed with SLACK_SIGNING_SECRET. E-mails go through EMAIL_URL
# (on by default once EMAIL_URL is set). A reminder follows after APPROVAL_REMINDER_MINUTES (0: none).
SLACK_BOT_TOKEN = env.str("SLACK_BOT_TOKEN", default="")
SLACK_APPROVALS_CHANNEL = env.str("SLACK_APPROVALS_CHANNEL", default="")
SLACK_SIGNING_SECRET = env.str("SLACK_SIGNING_SECRET", default="")
SLACK_API_URL = env.str("SLACK_API_URL", default="https://slack.com/api/")
APPROVAL_EMAILS = env.bool("APPROVAL_EMAILS", default="EMAIL_URL" in os.environ)
APPROVAL_REMINDER_MINUTES = env.int("APPROVAL_REMINDER_MINUTES", default=60)
# The portal's own address, for links in alerts, e.g. https://portal.nexo.example
PORTAL_URL = env.str("PORTAL_URL", default="")
if PORTAL_URL and not PORTAL_URL.lower().startswith(("http://", "https://")):
    # Alerts and e-mails make links of it: only an http(s) address is a link worth sending.
    raise ImproperlyConfigured(
        "PORTAL_URL must be the portal's http:// or https:// address, e.g. https://portal.example."
    )

# --- GitHub sign-in ---------------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    # First: refuses any sign-in for a user name and address locked out after repeated failures.
    "axes.backends.AxesStandaloneBackend",
    "nexo_portal.github.GitHubOrganizationOAuth2",
    # Local accounts: break-glass staff once GitHub sign-in is configured, everyone in the demo.
    "django.contrib.auth.backends.ModelBackend",
]
# Password guessing (django-axes): after SIGN_IN_FAILURE_LIMIT failures for one user name from one
# address, that pair may not sign in for SIGN_IN_LOCKOUT_MINUTES; a success clears the count.
AXES_FAILURE_LIMIT = env.int("SIGN_IN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("SIGN_IN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_CLIENT_IP_CALLABLE = "nexo_portal.auth.client_address"
# Guessing spread over many addresses (nexo_portal/sign_in_delay.py): past SIGN_IN_USER_FAILURE_LIMIT
# failures for one user name from anywhere, each sign-in as it waits 1, 2, 4 … seconds after the last
# failure, at most SIGN_IN_USER_MAX_DELAY_SECONDS: a delay, not a lock. The count ends after
# SIGN_IN_USER_WINDOW_MINUTES without a failure; a browser that signed in as that person is not delayed.
SIGN_IN_USER_FAILURE_LIMIT = env.int("SIGN_IN_USER_FAILURE_LIMIT", default=10)
SIGN_IN_USER_MAX_DELAY_SECONDS = env.int("SIGN_IN_USER_MAX_DELAY_SECONDS", default=60)
SIGN_IN_USER_WINDOW_MINUTES = env.int("SIGN_IN_USER_WINDOW_MINUTES", default=15)
SOCIAL_AUTH_GITHUB_ORG_KEY = env.str("GITHUB_OAUTH_KEY", default="")
SOCIAL_AUTH_GITHUB_ORG_SECRET = env.str("GITHUB_OAUTH_SECRET", default="")
SOCIAL_AUTH_GITHUB_ORG_NAME = env.str("GITHUB_ORG", default="")
# github.com by default; for GitHub Enterprise Server e.g. https://github.example and https://github.example/api/v3.
SOCIAL_AUTH_GITHUB_ORG_URL = env.str("GITHUB_URL", default="https://github.com")
SOCIAL_AUTH_GITHUB_ORG_API_URL = env.str("GITHUB_API_URL", default="https://api.github.com")
CONTENT_SECURITY_POLICY["DIRECTIVES"]["form-action"].append(SOCIAL_AUTH_GITHUB_ORG_URL)
# read:org (membership and teams) is the backend's default scope; user:email finds a private e-mail address.
SOCIAL_AUTH_GITHUB_ORG_SCOPE = ["user:email"]
SOCIAL_AUTH_URL_NAMESPACE = "social"
SOCIAL_AUTH_LOGIN_ERROR_URL = "/accounts/login/"
SOCIAL_AUTH_RAISE_EXCEPTIONS = False
SOCIAL_AUTH_REQUESTS_TIMEOUT = HTTP_TIMEOUT_SECONDS
SOCIAL_AUTH_PIPELINE = [
    "social_core.pipeline.social_auth.social_details",
    "social_core.pipeline.social_auth.social_names",
    "social_core.pipeline.social_auth.social_uid",
    "social_core.pipeline.social_auth.auth_allowed",
    "social_core.pipeline.social_auth.social_user",
    "nexo_portal.github.refuse_deactivated_account",
    # A GitHub login that matches a local user name gets a suffixed name, never that account.
    "social_core.pipeline.user.get_username",
    "social_core.pipeline.user.create_user",
    "social_core.pipeline.social_auth.associate_user",
    # No load_extra_data: the GitHub access token is needed only during sign-in, and not
    # storing it means the database holds no GitHub credentials.
    "social_core.pipeline.user.user_details",
    "nexo_portal.github.sync_team_groups",
]
# GitHub team -> Django group, refreshed at every sign-in, e.g. "sre=sre-team,platform-leads=platform-leads".
# A bare team slug is a team of GITHUB_ORG; "other-org/slug" names another organization.
GITHUB_TEAM_GROUPS = env.dict("GITHUB_TEAM_GROUPS", default={})

# --- Pull requests on the GitOps repository (docs/pull-requests.md) ------------------------------
# For environments whose delivery mode is "pull request". The repository as owner/name on GitHub,
# the REST API's base (GitHub Enterprise Server: https://github.example/api/v3), and either a token
# (fine-grained or classic, with contents, pull requests and issues write) or a GitHub App
# installed on the repository: its id, the installation's id and its private key (PEM text, or a file).
GITOPS_GITHUB_REPOSITORY = env.str("GITOPS_GITHUB_REPOSITORY", default="")
GITOPS_GITHUB_API_URL = env.str("GITOPS_GITHUB_API_URL", default=SOCIAL_AUTH_GITHUB_ORG_API_URL)
GITOPS_GITHUB_TOKEN = env.str("GITOPS_GITHUB_TOKEN", default="")
GITOPS_GITHUB_APP_ID = env.str("GITOPS_GITHUB_APP_ID", default="")
GITOPS_GITHUB_APP_INSTALLATION_ID = env.str("GITOPS_GITHUB_APP_INSTALLATION_ID", default="")
GITOPS_GITHUB_APP_PRIVATE_KEY = env.str("GITOPS_GITHUB_APP_PRIVATE_KEY", default="", multiline=True)
GITOPS_GITHUB_APP_PRIVATE_KEY_FILE = env.str("GITOPS_GITHUB_APP_PRIVATE_KEY_FILE", default="")
# merge, squash or rebase: how the portal merges a pull request at quorum.
GITOPS_GITHUB_MERGE_METHOD = env.str("GITOPS_GITHUB_MERGE_METHOD", default="merge")
# The secret of the repository's webhook (pull_request, pull_request_review events) at /webhooks/github/.
GITHUB_WEBHOOK_SECRET = env.str("GITHUB_WEBHOOK_SECRET", default="")

# --- REST API -----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # First, so that DRF answers an unauthenticated call with 401 and WWW-Authenticate: Bearer.
        "nexo_portal.tokens.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": ["nexo_portal.tokens.ApiTokenRateThrottle"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "nexo_portal.lib.ordering.StrictOrderingFilter",
    ],
    # Django REST framework's own, refusing control characters and over-deep JSON (nexo_portal.lib.text).
    "DEFAULT_PARSER_CLASSES": [
        "nexo_portal.lib.parsers.JSONParser",
        "nexo_portal.lib.parsers.FormParser",
        "nexo_portal.lib.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "nexo_portal.api_pagination.Pagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "nexo_portal.lib.api.exception_handler",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
}
# Calls per API token, e.g. "600/minute"; counted in Redis so every web worker shares the count.
API_TOKEN_THROTTLE_RATE = env.str("API_TOKEN_THROTTLE_RATE", default="600/minute")
# GitHub Actions sign in with their OIDC ID token instead of a stored secret (docs/api.md): empty
# OIDC_AUDIENCE turns it off. The audience is what the workflow asks for, e.g. the portal's URL.
OIDC_ISSUER = env.str("OIDC_ISSUER", default="https://token.actions.githubusercontent.com")
OIDC_AUDIENCE = env.str("OIDC_AUDIENCE", default="")
OIDC_LEEWAY_SECONDS = env.int("OIDC_LEEWAY_SECONDS", default=30)
# How long the issuer's discovery document and keys are cached; an unknown key id fetches the
# keys again, at most once per OIDC_JWKS_REFRESH_COOLDOWN_SECONDS.
OIDC_JWKS_CACHE_SECONDS = env.int("OIDC_JWKS_CACHE_SECONDS", default=300)
OIDC_JWKS_REFRESH_COOLDOWN_SECONDS = env.float("OIDC_JWKS_REFRESH_COOLDOWN_SECONDS", default=30)
# The image registries (docs/configuration.md): hosts reached over plain HTTP, and host=user:password
# for the token the portal asks a registry for (e.g. ghcr.io=nexo-portal:<read:packages token>).
REGISTRY_INSECURE_HOSTS = env.list("REGISTRY_INSECURE_HOSTS", default=[])
REGISTRY_CREDENTIALS = env.dict("REGISTRY_CREDENTIALS", default={})
# The Sigstore trusted_root.json that attestations are verified against, offline (releases/attestations.py);
# blank: the public-good root (Fulcio, Rekor, CT log) the sigstore library ships, never refreshed.
SIGSTORE_TRUSTED_ROOT = env.str("SIGSTORE_TRUSTED_ROOT", default="")
SPECTACULAR_SETTINGS = {
    "TITLE": "Nexo Release Portal API",
    "DESCRIPTION": (
        "Register builds, promote releases through develop → qa → staging → production, and read what ran where."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Like the rest of the API: people signed in or a token (any scope), never anonymous.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # System fonts: ReDoc's own (Montserrat, Roboto) would come from a font CDN (templates/drf_spectacular/redoc.html).
    "REDOC_UI_SETTINGS": {
        "theme": {
            "typography": {
                "fontFamily": "system-ui, -apple-system, 'Segoe UI', sans-serif",
                "headings": {"fontFamily": "system-ui, -apple-system, 'Segoe UI', sans-serif"},
            }
        }
    },
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {"StepStatusEnum": "releases.models.StepStatus"},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "nexo_portal.api_schema.add_error_responses",
        "nexo_portal.api_schema.describe_query_parameters",
        "nexo_portal.api_schema.describe_body_text",
        "nexo_portal.api_schema.add_links",
    ],
    # Django's slug converter, with the pattern it matches.
    "PATH_CONVERTER_OVERRIDES": {"slug": {"type": "string", "pattern": "^[-a-zA-Z0-9_]+$"}},
}

# Errors: a 500 is mailed to ERROR_EMAILS (Django's mail_admins handler, DEBUG off) through EMAIL_URL,
# e.g. smtp+tls://user:password@smtp.example:587; without ERROR_EMAILS only the log has them.
ADMINS = [("Nexo Release Portal operators", address) for address in env.list("ERROR_EMAILS", default=[])]
SERVER_EMAIL = env.str("SERVER_EMAIL", default="release-portal@nexo.invalid")
vars().update(env.email_url("EMAIL_URL", default="smtp://localhost:25"))
# A mail server that takes the connection and never answers fails the send (retried later) instead
# of holding a worker and its notice for as long as RQ lets a job run.
EMAIL_TIMEOUT = env.float("EMAIL_TIMEOUT", default=HTTP_TIMEOUT_SECONDS)

# --- Observability (docs/observability.md) ----------------------------------------------------
# Log lines: "text" (the default, for people) or "json" (one object per line, for Loki-style tools),
# both with the request, user, promotion, service, environment and job they belong to; secrets redacted.
LOG_FORMAT = env.str("LOG_FORMAT", default="text")
if LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be text or json, not {LOG_FORMAT!r}.")
# The root logger's level: Python's names, in any case.
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
if LOG_LEVEL not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
    raise ImproperlyConfigured(
        f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL (in any case), not {env.str('LOG_LEVEL')!r}."
    )
# Where every process on the host counts its metrics (prometheus_client reads it from the environment,
# nexo_portal/lib/metrics.py). Not created here: it must be the one directory all of them share,
# emptied before they start, and a missing one is more likely a volume not mounted or an entrypoint
# step left out than a directory to make in a process's own file system.
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default="")
if PROMETHEUS_MULTIPROC_DIR and not Path(PROMETHEUS_MULTIPROC_DIR).is_dir():
    raise ImproperlyConfigured(
        f"PROMETHEUS_MULTIPROC_DIR is {PROMETHEUS_MULTIPROC_DIR}, which is not a directory: create it, empty, "
        "before the portal's processes start, where all of them on this host see it (docs/observability.md), "
        "or unset it to have each process count alone."
    )
# /metrics answers only `Authorization: Bearer <METRICS_TOKEN>`; unset, it answers 404 and serves nothing.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"()": "nexo_portal.lib.logs.TextFormatter"},
        "json": {"()": "nexo_portal.lib.logs.JsonFormatter"},
    },
    "filters": {
        "require_debug_false": {"()": "django.utils.log.RequireDebugFalse"},
        "context": {"()": "nexo_portal.lib.logs.AddContext"},
        "redact_secrets": {"()": "nexo_portal.lib.logs.RedactSecrets"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["context", "redact_secrets"],
        },
        "mail_admins": {
            "class": "django.utils.log.AdminEmailHandler",
            "level": "ERROR",
            "filters": ["require_debug_false"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django's default gives this logger a console handler of its own with DEBUG on, and its
        # records reach the root's console too: every warning was printed twice. Keep only its
        # 500 mails, and let LOG_LEVEL (the root's level) apply to Django's records as to ours.
        "django": {"handlers": ["mail_admins"], "level": "NOTSET"},
        "django.db.backends": {"level": "WARNING"},
        # Checkpoints of the audit chain are one of its witnesses: logged whatever LOG_LEVEL says.
        "audit.checkpoints": {"level": "INFO"},
        "axes": {"level": "WARNING"},  # lockouts, not every start-up and cleared count
        # Requests for host names the portal does not serve (scanners, probes by IP) get a 400;
        # a traceback for each of them would bury what matters.
        "django.security.DisallowedHost": {"handlers": [], "propagate": False},
    },
}


# A signing key is as strong as it is long and random: production refuses shorter ones.
_KEY_MIN_LENGTH = 32


def _key_problem(name, value, what):
    """What to set the key `name` to, when `value` will not do in production; "" when it will."""
    make_one = "generate one with `python -c 'import secrets; print(secrets.token_urlsafe(50))'`"
    if not value:
        return f"{name} ({what}; {make_one})"
    if value in (_DEVELOPMENT_SECRET_KEY, _DEVELOPMENT_AUDIT_KEY):
        return f"{name} to a key of its own, not the development key published with the portal's source ({make_one})"
    if len(value) < _KEY_MIN_LENGTH:
        return f"{name} to a key of at least {_KEY_MIN_LENGTH} characters, not {len(value)} ({make_one})"
    return ""


def _refuse_unsafe_production_settings():
    """Production (DEBUG off) must bring its secrets; say exactly which one is missing or unsafe."""
    if DEBUG:
        return
    missing = []
    if problem := _key_problem("SECRET_KEY", SECRET_KEY, "a long random string"):
        missing.append(problem)
    if not ALLOWED_HOSTS:
        missing.append("ALLOWED_HOSTS (the host names the portal is served on, comma-separated)")
    if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        missing.append(
            "DATABASE_URL (a postgres:// URL: the audit log's append-only trigger and lock need PostgreSQL; "
            "SQLite is for the demo, with DEBUG=1)"
        )
    audit_key = "a long random string, kept where the database's administrators cannot read it: it seals the audit log"
    if problem := _key_problem("AUDIT_CHECKPOINT_KEY", AUDIT_CHECKPOINT_KEY, audit_key):
        missing.append(problem)
    if ARGOCD_URL and not ARGOCD_TOKEN:
        missing.append("ARGOCD_TOKEN (ARGOCD_URL is set, so the bearer token for it is required)")
    if SOCIAL_AUTH_GITHUB_ORG_KEY and not (SOCIAL_AUTH_GITHUB_ORG_SECRET and SOCIAL_AUTH_GITHUB_ORG_NAME):
        missing.append("GITHUB_OAUTH_SECRET and GITHUB_ORG (GITHUB_OAUTH_KEY is set, so sign-in needs both)")
    if GITOPS_GITHUB_MERGE_METHOD not in ("merge", "squash", "rebase"):
        missing.append("GITOPS_GITHUB_MERGE_METHOD as merge, squash or rebase")
    if GITOPS_GITHUB_APP_ID and not (
        GITOPS_GITHUB_APP_INSTALLATION_ID and (GITOPS_GITHUB_APP_PRIVATE_KEY or GITOPS_GITHUB_APP_PRIVATE_KEY_FILE)
    ):
        missing.append(
            "GITOPS_GITHUB_APP_INSTALLATION_ID and GITOPS_GITHUB_APP_PRIVATE_KEY (GITOPS_GITHUB_APP_ID is set)"
        )
    if missing:
        raise ImproperlyConfigured(
            "The portal is running with DEBUG off and cannot start safely. Set: " + "; ".join(missing)
        )


_refuse_unsafe_production_settings()
