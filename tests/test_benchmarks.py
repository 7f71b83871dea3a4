"""Every benchmark of bench/ still runs end to end, in miniature, and prints its figures.

The figures themselves are only meaningful at full size on the project's machine
(`./scripts/bench NAME`); this keeps the benchmarks from rotting as the schema moves on.
Each runs in a database of its own, never the full-size data sets the benchmarks keep, and in
this test worker's Redis database, never another's.
"""

import os
import subprocess
import sys

import pytest
from django.conf import settings

MINIATURES = {
    "board": (["--requests", "3"], {"BENCH_SCALE": "0.02"}, ["Board:", "board refresh (htmx)", "Targets:"]),
    "dora": ([], {"BENCH_SCALE": "0.01"}, ["One-year production figures:", "GET /api/v1/dora/", "Target:"]),
    "promotion": (
        ["--promotions", "3"],
        {},
        ["promotions measured:            3", "bare git commit -a && git push:", "ratio:"],
    ),
}


@pytest.mark.parametrize("name", sorted(MINIATURES))
def test_the_benchmark_runs_in_miniature_and_prints_its_figures(name, redis_connection):
    arguments, environment, expected = MINIATURES[name]
    # This worker's Redis database (see pytest_configure), which redis_connection empties before and after.
    redis_url = settings.RQ_QUEUES["default"]["URL"]
    database = settings.DATABASES["default"]
    server = f"{database['USER']}:{database['PASSWORD']}@{database['HOST']}:{database['PORT'] or 5432}"
    url = f"postgres://{server}/nexo_bench_smoke_{name}"
    keep = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "DEBUG", "ALLOWED_HOSTS"}
    }
    result = subprocess.run(
        [sys.executable, f"bench/bench_{name}.py", *arguments],
        env={
            **keep,
            "BENCH_DATABASE_URL": url,
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
    # Exit 1 is a missed target, which a miniature says nothing about; anything else is a crash.
    assert result.returncode in (0, 1), result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for line in expected:
        assert line in result.stdout, result.stdout
