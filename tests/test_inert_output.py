"""Exports and links are inert: CSV cells never start a formula, stored links are only http(s)."""

import ast
import csv
import io
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.test import Client

from nexo_portal.lib.inert import csv_writer, spreadsheet_cell
from releases.models import CheckResult, Incident, IncidentSource, Service
from tests.factories import make_release, make_service, make_user
from tests.test_dora_page import deliver, pagerduty_event

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "text", ['=HYPERLINK("https://evil.example","x")', "+1+2", "-2+3", "@SUM(A1)", "\tTAB", "\rCR"]
)
def test_text_that_starts_like_a_formula_is_prefixed(text):
    assert spreadsheet_cell(text) == "'" + text


@pytest.mark.parametrize("value", ["nexo-be", "2026-03-02", "all services", "", -1.5, 3, None])
def test_other_cells_are_left_alone(value):
    assert spreadsheet_cell(value) == value


def test_the_writer_neutralises_every_cell():
    stream = io.StringIO()
    csv_writer(stream).writerows([["=1+1", "ok", -4], ["@x", "-y", 2]])
    assert list(csv.reader(io.StringIO(stream.getvalue()))) == [["'=1+1", "ok", "-4"], ["'@x", "'-y", "2"]]


def test_the_dora_csv_writes_a_formula_like_team_name_as_text(environments):
    team = Group.objects.create(name='=HYPERLINK("https://evil.example","Click")')
    make_service("nexo-be", team=team)
    client = Client()
    client.force_login(make_user("stakeholder"))
    response = client.get("/dora/export.csv", {"team": team.name, "start": "2026-03-01", "end": "2026-03-31"})
    assert response.status_code == 200, response.content
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[1][:2] == ["total", "'" + team.name]


def test_every_csv_is_written_through_the_inert_writer():
    """A csv.writer or DictWriter anywhere but nexo_portal/lib/inert.py would write formulas as they come."""
    offenders = []
    for directory in ("audit", "environments", "nexo_portal", "releases", "bench", "scripts"):
        for path in (ROOT / directory).rglob("*.py"):
            if path == ROOT / "nexo_portal" / "lib" / "inert.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if (
                    isinstance(node, ast.Attribute)
                    and node.attr in ("writer", "DictWriter")
                    and isinstance(node.value, ast.Name)
                    and node.value.id == "csv"
                ):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


# --- links --------------------------------------------------------------------------------------------


def test_a_pagerduty_link_that_is_not_http_is_not_kept(environments, settings):
    settings.INCIDENT_WEBHOOK_SECRET = "pd-webhook-secret-for-tests"
    make_service("web")
    payload = pagerduty_event("incident.triggered")
    payload["event"]["data"]["html_url"] = "javascript:alert(document.cookie)"
    assert deliver(payload).status_code == 202
    incident = Incident.objects.get(source=IncidentSource.PAGERDUTY)
    assert incident.external_url == ""
    assert incident.title == "Checkout errors above 5 %", "the incident itself is still recorded"


@pytest.mark.parametrize("url", ["javascript:alert(1)", "data:text/html,<script>x</script>", "ftp://files.example/x"])
def test_models_refuse_links_that_are_not_http(environments, url):
    with pytest.raises(ValidationError, match="Give an http:// or https:// address"):
        Service(name="nexo-be", image_repository="ghcr.io/nexo-org/nexo-be", source_repo_url=url).full_clean()


@pytest.mark.parametrize(
    ("model", "values"),
    [
        (Service, {"name": "nexo-be", "image_repository": "ghcr.io/x", "source_repo_url": "javascript:alert(1)"}),
        (
            Incident,
            {
                "title": "x",
                "started_at": datetime(2026, 3, 3, tzinfo=UTC),
                "external_url": "JavaScript:alert(1)",
            },
        ),
    ],
)
def test_the_database_refuses_links_that_are_not_http(environments, model, values):
    if model is Incident:
        values = {**values, "service": make_service("web"), "environment": environments["production"]}
    with pytest.raises(IntegrityError, match="url_is_http"), transaction.atomic():
        model.objects.create(**values)


def test_the_database_refuses_a_check_result_link_that_is_not_http(environments):
    release = make_release(make_service("web"), "2026.03.1")
    with pytest.raises(IntegrityError, match="check_result_url_is_http"), transaction.atomic():
        CheckResult.objects.create(
            release=release, environment=environments["qa"], name="e2e", passed=True, url="data:text/html,x"
        )


def test_http_links_are_kept(environments):
    service = Service.objects.create(
        name="nexo-be", image_repository="ghcr.io/x", source_repo_url="https://github.com/nexo-org/nexo-be"
    )
    service.full_clean()


def test_the_portal_does_not_start_with_a_portal_url_that_is_not_http():
    environment = {**os.environ, "DEBUG": "1", "PORTAL_URL": "javascript:alert(1)"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "check"], env=environment, capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "PORTAL_URL must be the portal's http:// or https:// address" in result.stderr
