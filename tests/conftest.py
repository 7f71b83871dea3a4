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


from tests.servers.argocd import argocd_server  # noqa: F401, E402
from tests.servers.health import health_server  # noqa: F401, E402
from tests.servers.prometheus import configured_prometheus, prometheus, prometheus_errors  # noqa: F401, E402
