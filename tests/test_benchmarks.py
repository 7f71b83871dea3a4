"""Every benchmark of bench/ still runs end to end, in miniature, and prints its figures.

The figures themselves are only meaningful at full size on the project's machine
(`./scripts/bench NAME`); this keeps the benchmarks from rotting as the schema moves on.
Each runs in a fresh database of its own, never the full-size data sets the benchmarks keep,
named after the suite's database (TEST_DATABASE_URL) so that two suites on one server never
share one, and dropped afterwards; and in this test worker's Redis database, never another's.
"""

import os
import subprocess
import sys

import psycopg
import pytest
from django.conf import settings
from psycopg import sql

MINIATURES = {
    "api": (
        ["--seconds", "1", "--connections", "2"],
        {},
        ["GET /healthz:", "POST /api/v1/releases/:", "ratio registrations / healthz:"],
    ),
    "board": (["--requests", "3"], {"BENCH_SCALE": "0.02"}, ["Board:", "board refresh (htmx)", "Targets:"]),
    "dora": ([], {"BENCH_SCALE": "0.01"}, ["One-year production figures:", "GET /api/v1/dora/", "Target:"]),
    "rollback": (
        ["--rounds", "1", "--sync-seconds", "0.5"],
        {"ARGOCD_POLL_SECONDS": "0.2"},
        ["rollbacks measured:                        1", "portal's share:", "Target:"],
    ),
    "promotion": (
        ["--promotions", "3"],
        {},
        ["promotions measured:            3", "bare git commit -a && git push:", "ratio:"],
    ),
}

# Read at collection, before pytest-django renames the database to the test database's:
# nexo_tests gives nexo_tests_bench_smoke_board, and so on.
DATABASE = dict(settings.DATABASES["default"])


def drop_database(name):
    admin = psycopg.connect(
        host=DATABASE["HOST"],
        port=DATABASE["PORT"] or 5432,
        user=DATABASE["USER"],
        password=DATABASE["PASSWORD"],
        dbname="postgres",
        autocommit=True,
    )
    with admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def bench_database_url(name):
    """The URL of the benchmark's own database, which bench/database.py creates and this drops."""
    database = f"{DATABASE['NAME']}_bench_smoke_{name}"
    drop_database(database)  # what an interrupted run left behind
    server = f"{DATABASE['USER']}:{DATABASE['PASSWORD']}@{DATABASE['HOST']}:{DATABASE['PORT'] or 5432}"
    yield f"postgres://{server}/{database}"
    drop_database(database)


@pytest.mark.parametrize("name", sorted(MINIATURES))
def test_the_benchmark_runs_in_miniature_and_prints_its_figures(name, bench_database_url, redis_connection):
    arguments, environment, expected = MINIATURES[name]
    result = run_benchmark(name, arguments, environment, bench_database_url)
    # Exit 1 is a missed target, which a miniature says nothing about; anything else is a crash.
    assert result.returncode in (0, 1), result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for line in expected:
        assert line in result.stdout, result.stdout


@pytest.mark.parametrize("name", ["api"])
def test_the_api_benchmark_measures_another_revision_in_turns(name, bench_database_url, redis_connection):
    """`--against` checks the revision out into a worktree of its own, runs both under the same benchmark
    in turns, and judges the target by the medians (here HEAD against itself, which cannot be 3×)."""
    arguments = ["--against", "HEAD", "--rounds", "1", "--seconds", "1", "--connections", "2"]
    try:
        result = run_benchmark(name, arguments, {}, bench_database_url)
    finally:
        drop_database(bench_database_url.rsplit("/", 1)[1] + "_against")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "round 1, this checkout:" in result.stdout, result.stdout
    assert "round 1,          HEAD:" in result.stdout, result.stdout
    assert "median registrations/s: this checkout" in result.stdout, result.stdout
    assert "Target: ≥ 3× HEAD, every registration answered 2xx: MISSED" in result.stdout, result.stdout
    worktrees = subprocess.run(["git", "worktree", "list"], cwd=settings.BASE_DIR, capture_output=True, text=True)
    assert "bench-api-" not in worktrees.stdout, "the revision's worktree was left behind"


def run_benchmark(name, arguments, environment, bench_database_url):
    # This worker's Redis database (see pytest_configure), which redis_connection empties before and after.
    redis_url = settings.RQ_QUEUES["default"]["URL"]
    keep = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "DEBUG", "ALLOWED_HOSTS"}
    }
    return subprocess.run(
        [sys.executable, f"bench/bench_{name}.py", *arguments],
        env={
            **keep,
            "BENCH_DATABASE_URL": bench_database_url,
            "BENCH_REDIS_URL": redis_url,
            "REDIS_URL": redis_url,
            "LOG_LEVEL": "WARNING",
            **environment,
        },
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=600,
    )
