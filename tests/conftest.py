import time
from datetime import timedelta

import pytest
from django.db import connection

from environments.defaults import ensure_default_environments
from tests.factories import make_user
from tests.gitops import GitOpsRemote
from tests.servers.argocd import argocd_server  # noqa: F401 - fixtures shared by every test module
from tests.servers.github import github_server  # noqa: F401
from tests.servers.health import health_server  # noqa: F401
from tests.servers.prometheus import configured_prometheus, prometheus, prometheus_errors  # noqa: F401
from tests.servers.slack import slack_api, slack_server  # noqa: F401


def pytest_configure(config):
    import os

    from django.conf import settings

    # Each xdist worker gets its own Redis database, counting down from REDIS_URL's (15, 14, … by default),
    # so flushing one never empties another's queue.
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    server, _, database = settings.REDIS_URL.rpartition("/")
    redis_url = f"{server}/{int(database or 0) - worker}"
    settings.RQ_QUEUES["default"]["URL"] = redis_url
    settings.CACHES["default"]["LOCATION"] = redis_url

    # Password hashing is deliberately slow; tests need it correct, not slow.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    if connection.vendor != "postgresql":
        pytest.exit(
            "The test suite runs on PostgreSQL: run ./scripts/test, or set DATABASE_URL to a PostgreSQL database.",
            returncode=2,
        )


@pytest.fixture(autouse=True)
def kept_board_rows_are_checked(monkeypatch):
    """Every board row taken from the kept rows is rendered afresh too and must be the same: a key
    that misses something a row shows fails whichever test shows it (releases/board.py, row_key)."""
    from releases.templatetags import board_cells

    kept_row, render = board_cells._kept_row, board_cells._board_row

    def checked(row):
        html = kept_row(row)
        fresh = render(row)
        assert html == fresh, f"The board kept a stale row for {row.service.name}: its key misses what changed."
        return html

    monkeypatch.setattr(board_cells, "_kept_row", checked)


@pytest.fixture
def environments(db):
    return ensure_default_environments()


# The people of the tests, built once here, each in the groups the default environments expect
# (environments/defaults.py): platform-team approves staging, sre-team and platform-leads approve
# production, and nexo-be, the service most tests promote, belongs to backend-team.


@pytest.fixture
def rita(db):
    """Rita, a backend developer: requests promotions of her team's services and approves none."""
    return make_user("rita", groups=["backend-team"])


@pytest.fixture
def sam(db):
    """Sam, an SRE: approves production."""
    return make_user("sam", groups=["sre-team"])


@pytest.fixture
def sara(db):
    """Sara, another SRE: the second approval production needs."""
    return make_user("sara", groups=["sre-team"])


@pytest.fixture
def paulo(db):
    """Paulo, a platform engineer: approves staging."""
    return make_user("paulo", groups=["platform-team"])


@pytest.fixture
def lead(db):
    """The platform lead: approves production."""
    return make_user("lead", groups=["platform-leads"])


@pytest.fixture
def viewer(db):
    """Signed in and in no group: sees the board and may act on nothing."""
    return make_user("viewer")


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
    from django.test.signals import setting_changed

    settings.STATIC_ROOT = tmp_path_factory.mktemp("static")
    # A module imported at collection may have built the storage already (schemathesis loading the
    # schema does): tell Django the setting changed, or every xdist worker collects into var/static.
    setting_changed.send(sender=type(settings), setting="STATIC_ROOT", value=settings.STATIC_ROOT, enter=True)
    call_command("collectstatic", interactive=False, verbosity=0)


@pytest.fixture
def gitops(tmp_path, settings):
    """A real bare GitOps repository the portal pushes to, and a private worker working copy."""
    remote = GitOpsRemote(tmp_path)
    settings.GITOPS_REPO_URL = remote.url
    settings.GITOPS_WORKDIR = str(tmp_path / "workdirs")
    return remote


@pytest.fixture
def pipeline(transactional_db, redis_connection, gitops, settings):
    """The four default environments with instant soaks, and a way to run the real RQ worker.

    Jobs are enqueued after commit, so pipeline tests use a transactional database.
    """
    environments = ensure_default_environments(
        verification_window=timedelta(0), rollback_verification_window=timedelta(0), sample_interval_seconds=1
    )
    environments["qa"].required_checks = []
    environments["qa"].save()
    return Pipeline(environments, gitops, redis_connection)


class Pipeline:
    def __init__(self, environments, gitops, redis):
        self.environments = environments
        self.gitops = gitops
        self.redis = redis

    def add_service(self, name, team="backend-team", tag=""):
        from tests.factories import make_service

        service = make_service(name, team=team)
        self.gitops.add_service(service, self.environments.values(), tag=tag)
        return service

    def run_jobs(self, until=None, timeout=30):
        """Run a real RQ worker in burst mode (with its scheduler) until nothing is left or `until()` holds."""
        import django_rq
        from rq.registry import ScheduledJobRegistry

        from releases.worker import PortalWorker

        queue = django_rq.get_queue("default")
        deadline = time.monotonic() + timeout
        while True:
            PortalWorker([queue], connection=queue.connection).work(burst=True, with_scheduler=True)
            if until is not None and until():
                return
            if until is None and not queue.count and not ScheduledJobRegistry(queue=queue).count:
                return
            if time.monotonic() > deadline:
                raise AssertionError("the pipeline did not get there in time")
            time.sleep(0.2)
