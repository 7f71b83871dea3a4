"""Settings for the Nexo Release Portal, read from environment variables (12-factor).

Defaults make a first run work on a laptop (SQLite, local Redis, DEBUG off unless asked);
production refuses to start when a secret it needs is missing.
"""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

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
    "django_rq",
    "social_django",
    "nexo_portal",
    "environments",
    "releases",
    "audit",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "nexo_portal.auth.PortalLoginRequiredMiddleware",
    "social_django.middleware.SocialAuthExceptionMiddleware",
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
            ],
        },
    },
]

WSGI_APPLICATION = "nexo_portal.wsgi.application"

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'var' / 'db.sqlite3'}"),
}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=0))

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
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("BEHIND_TLS_PROXY", default=False) else None
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"

# --- Queue --------------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
RQ_QUEUES = {
    "default": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 3600},
}
RQ_SHOW_ADMIN_LINK = True

# --- GitOps repository ------------------------------------------------------------------------
GITOPS_REPO_URL = env.str("GITOPS_REPO_URL", default=str(BASE_DIR / "var" / "gitops.git"))
GITOPS_BRANCH = env.str("GITOPS_BRANCH", default="main")
# Each worker keeps its own working copy here, keyed by repository URL and process.
GITOPS_WORKDIR = env.str("GITOPS_WORKDIR", default=str(BASE_DIR / "var" / "gitops-workdirs"))
GITOPS_AUTHOR_NAME = env.str("GITOPS_AUTHOR_NAME", default="Nexo Release Portal")
GITOPS_AUTHOR_EMAIL = env.str("GITOPS_AUTHOR_EMAIL", default="release-portal@nexo.invalid")
GITOPS_PUSH_ATTEMPTS = env.int("GITOPS_PUSH_ATTEMPTS", default=5)

# --- Argo CD and Prometheus (unset means "not configured", never a silent pass) -----------
ARGOCD_URL = env.str("ARGOCD_URL", default="")
ARGOCD_TOKEN = env.str("ARGOCD_TOKEN", default="")
ARGOCD_SYNC_TIMEOUT_SECONDS = env.int("ARGOCD_SYNC_TIMEOUT_SECONDS", default=600)
ARGOCD_POLL_SECONDS = env.float("ARGOCD_POLL_SECONDS", default=5.0)
ARGOCD_VERIFY_TLS = env.bool("ARGOCD_VERIFY_TLS", default=True)
ARGOCD_WEBHOOK_SECRET = env.str("ARGOCD_WEBHOOK_SECRET", default="")
PROMETHEUS_URL = env.str("PROMETHEUS_URL", default="")
# Signing secret of the PagerDuty V3 webhook subscription; unset refuses every delivery.
INCIDENT_WEBHOOK_SECRET = env.str("INCIDENT_WEBHOOK_SECRET", default="")
HTTP_TIMEOUT_SECONDS = env.float("HTTP_TIMEOUT_SECONDS", default=10.0)

# --- GitHub sign-in ---------------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    "social_core.backends.github.GithubOrganizationOAuth2",
    "django.contrib.auth.backends.ModelBackend",
]
SOCIAL_AUTH_GITHUB_ORG_KEY = env.str("GITHUB_OAUTH_KEY", default="")
SOCIAL_AUTH_GITHUB_ORG_SECRET = env.str("GITHUB_OAUTH_SECRET", default="")
SOCIAL_AUTH_GITHUB_ORG_NAME = env.str("GITHUB_ORG", default="")
SOCIAL_AUTH_GITHUB_ORG_SCOPE = ["read:org", "user:email"]
SOCIAL_AUTH_URL_NAMESPACE = "social"
SOCIAL_AUTH_LOGIN_ERROR_URL = "/accounts/login/"
SOCIAL_AUTH_RAISE_EXCEPTIONS = False
# GitHub team slug -> Django group name, e.g. "sre=sre-team,platform=platform-team".
GITHUB_TEAM_GROUPS = env.dict("GITHUB_TEAM_GROUPS", default={})

# --- REST API -----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Nexo Release Portal API",
    "DESCRIPTION": "Register builds, promote releases through develop → qa → staging → production, and read what ran where.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}


def _refuse_unsafe_production_settings():
    """Production (DEBUG off) must bring its secrets; say exactly which one is missing."""
    if DEBUG:
        return
    missing = []
    if not SECRET_KEY:
        missing.append("SECRET_KEY (a long random string; generate one with `python -c 'import secrets; print(secrets.token_urlsafe(50))'`)")
    if not ALLOWED_HOSTS:
        missing.append("ALLOWED_HOSTS (the host names the portal is served on, comma-separated)")
    if ARGOCD_URL and not ARGOCD_TOKEN:
        missing.append("ARGOCD_TOKEN (ARGOCD_URL is set, so the bearer token for it is required)")
    if SOCIAL_AUTH_GITHUB_ORG_KEY and not (SOCIAL_AUTH_GITHUB_ORG_SECRET and SOCIAL_AUTH_GITHUB_ORG_NAME):
        missing.append("GITHUB_OAUTH_SECRET and GITHUB_ORG (GITHUB_OAUTH_KEY is set, so sign-in needs both)")
    if missing:
        raise ImproperlyConfigured(
            "The portal is running with DEBUG off and cannot start safely. Set: " + "; ".join(missing)
        )


_refuse_unsafe_production_settings()
