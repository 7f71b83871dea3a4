"""The demo's SQLite database, written at once by its web server, its worker and its reconciler."""

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WRITER = """
import django, sys, time
django.setup()
from django.db import transaction
from releases.models import BuildCounter, Release, Service

service = Service.objects.get(name="nexo-be")
builds = []
time.sleep(max(0, float(sys.argv[2]) - time.time()))  # all writers at once, past their start-up
for _ in range(int(sys.argv[1])):
    # As a registration does: read first, then write, in one transaction.
    with transaction.atomic():
        Release.objects.filter(service=service).exists()
        builds.append(BuildCounter.allocate(service, 2026, 12))
print(" ".join(map(str, builds)))
"""

SETUP = """
import django
django.setup()
from django.contrib.auth.models import Group
from releases.models import Service
Service.objects.create(name="nexo-be", team=Group.objects.create(name="backend-team"), image_repository="ghcr.io/n/be")
"""


def test_writers_of_the_demos_sqlite_database_wait_for_each_other_instead_of_failing(tmp_path, settings):
    """SQLite's default transactions take the write lock only at their first write, and one that
    finds another writer there fails at once ("database is locked"): a registration, 500."""
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "nexo_portal.settings",
        "DEBUG": "1",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'demo.sqlite3'}",
        "REDIS_URL": settings.RQ_QUEUES["default"]["URL"],
    }
    run = {"cwd": ROOT, "env": environment, "capture_output": True, "text": True}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], check=True, **run)
    subprocess.run([sys.executable, "-c", SETUP], check=True, **run)

    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, "200", str(time.time() + 5)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=environment,
        )
        for _ in range(3)
    ]
    finished = [writer.communicate(timeout=300) for writer in writers]

    assert [error[-300:] for _, error in finished if "Error" in error] == []
    builds = [int(build) for output, _ in finished for build in output.split()]
    assert sorted(builds) == list(range(1, 601))
