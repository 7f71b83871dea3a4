"""The README's walkthrough works as a newcomer runs it: its shell blocks, in order and unchanged
but for the portal's address, against a live portal holding the demo's data (seed_demo with short
soaks, as DEMO_SOAK_SECONDS gives them), a real RQ worker process and the demo's bare GitOps
repository, until the build runs in production.
"""

import os
import re
import shutil
import subprocess
import sys
from io import StringIO
from pathlib import Path

import git
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from audit.log import verify_chain
from releases.gitops.values import read_value
from releases.models import Promotion, PromotionState, Release

README = Path(settings.BASE_DIR) / "README.md"
SECTION = "## From a build to production with the API"
DEMO_URL = "http://localhost:8000"
# As the README starts the demo (DEMO_SOAK_SECONDS=30): no shorter soak measures an error rate
# (VERIFICATION_MIN_RANGE_SECONDS), and CI's results arrive while qa soaks (the walkthrough polls every
# 2 seconds).
SOAK_SECONDS = 30


def walkthrough_blocks():
    text = README.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end != -1 else len(text)]
    return re.findall(r"^```sh\n(.*?)^```", section, re.S | re.M)


def test_the_walkthrough_has_the_steps_a_newcomer_needs():
    script = "\n".join(walkthrough_blocks())
    assert f"export NEXO={DEMO_URL}" in script
    assert "./scripts/manage create_api_token" in script
    assert "/api/v1/verifications/" in script
    assert "wait_for production verified" in script


@pytest.fixture
def demo(transactional_db, redis_connection, live_server, settings, tmp_path):
    """The demo's world on the test database, served live, with a worker as ./scripts/demo starts it."""
    settings.GITOPS_REPO_URL = str(tmp_path / "gitops.git")
    settings.GITOPS_WORKDIR = str(tmp_path / "workdirs")
    settings.ARGOCD_URL = settings.PROMETHEUS_URL = settings.SLACK_WEBHOOK_URL = ""
    call_command("seed_demo", force=True, soak_seconds=SOAK_SECONDS, stdout=StringIO())
    database = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{database['USER']}:{database['PASSWORD']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        "REDIS_URL": settings.RQ_QUEUES["default"]["URL"],
        "GITOPS_REPO_URL": settings.GITOPS_REPO_URL,
        "GITOPS_WORKDIR": str(tmp_path / "worker"),
        "ARGOCD_URL": "",
        "PROMETHEUS_URL": "",
        "SLACK_WEBHOOK_URL": "",
        "LOG_LEVEL": "WARNING",
        # ./scripts/manage runs this virtualenv's Python, wherever it is.
        "VENV": str(Path(sys.executable).parent.parent),
    }
    worker_log = tmp_path / "worker.log"
    with open(worker_log, "w") as log:
        worker = subprocess.Popen(
            [sys.executable, "manage.py", "rqworker", "--with-scheduler", "default"],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    yield {"url": live_server.url, "env": env, "worker_log": worker_log, "gitops": Path(settings.GITOPS_REPO_URL)}
    worker.terminate()
    try:
        worker.wait(timeout=10)
    except subprocess.TimeoutExpired:
        worker.kill()


def test_the_readme_walkthrough_takes_a_build_to_production(demo):
    missing = [tool for tool in ("curl", "jq") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"The walkthrough needs {' and '.join(missing)}: ./scripts/test installs them.")
    script = "set -euo pipefail\n" + "\n".join(walkthrough_blocks()).replace(DEMO_URL, demo["url"])
    try:
        result = subprocess.run(
            ["bash", "-c", script],
            cwd=settings.BASE_DIR,
            env=demo["env"],
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired as timeout:
        # What the walkthrough had printed, as bytes (subprocess does not decode it on a timeout).
        output = "\n".join(
            part.decode() if isinstance(part, bytes) else part or "" for part in (timeout.stdout, timeout.stderr)
        )
        pytest.fail(f"The walkthrough did not finish:\n{output}\nworker:\n{demo['worker_log'].read_text()}")
    report = f"{result.stdout}\n{result.stderr}\nworker:\n{demo['worker_log'].read_text()}"
    assert result.returncode == 0, report
    assert "production: verified" in result.stdout, report

    release = Release.objects.get(registered_by="api-token:ci-demo")
    production = Promotion.objects.get(release=release, environment__name="production")
    assert production.state == PromotionState.VERIFIED
    assert sorted(production.approver_names()) == ["sam", "sara"]
    repo = git.Repo(demo["gitops"])
    assert repo.commit(production.gitops_commit_sha).summary == f"promote(nexo-be): production → {release.version}"
    path = "helm/nexo-be/values-prod.yaml"
    assert read_value(repo.git.show(f"main:{path}"), "image.tag", path) == release.version
    report = verify_chain()
    assert report.ok, report.reason
