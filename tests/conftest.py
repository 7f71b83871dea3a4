import pytest
from django.db import connection

from environments.defaults import ensure_default_environments


def pytest_configure(config):
    from django.conf import settings

    # Password hashing is deliberately slow; tests need it correct, not slow.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    if connection.vendor != "postgresql":
        pytest.exit(
            "The test suite runs on PostgreSQL: run ./scripts/test, or set DATABASE_URL to a PostgreSQL database.",
            returncode=2,
        )


@pytest.fixture
def environments(db):
    return ensure_default_environments()


@pytest.fixture
def redis_connection():
    """The real Redis of REDIS_URL, emptied before the test so queues start clean."""
    from django_rq import get_connection

    redis = get_connection("default")
    redis.flushdb()
    yield redis
    redis.flushdb()


@pytest.fixture(scope="session", autouse=True)
def collected_static_files(tmp_path_factory):
    """Build the static files as production does (hashed, compressed), once per test run."""
    from django.conf import settings
    from django.core.management import call_command

    settings.STATIC_ROOT = tmp_path_factory.mktemp("static")
    call_command("collectstatic", interactive=False, verbosity=0)


GITHUB_ORGANIZATION = "nexo-org"


@pytest.fixture
def github_server(settings):
    """A running GitHub test server (tests/servers/github.py), with the portal's sign-in pointed
    at it as if it were GitHub Enterprise, for members of the nexo-org organization."""
    from tests.servers.github import GitHubServer

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
