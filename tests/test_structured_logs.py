"""Log lines: JSON with LOG_FORMAT=json, text by default, each with the request, user, promotion, service,
environment and job it belongs to, and never a secret."""

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from django.conf import settings as django_settings

from nexo_portal.lib import context
from nexo_portal.lib.logs import AddContext, JsonFormatter, RedactSecrets, TextFormatter
from releases import policy, transitions
from releases.models import PromotionKind
from tests.factories import make_release

ROOT = Path(__file__).resolve().parent.parent


class Capture:
    """A handler on the root logger wired as settings.LOGGING wires the console: context, redaction, format."""

    def __init__(self, formatter):
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.addFilter(AddContext())
        self.handler.addFilter(RedactSecrets())
        self.handler.setFormatter(formatter)

    @property
    def text(self):
        return self.stream.getvalue()

    def entries(self):
        return [json.loads(line) for line in self.text.splitlines() if line.startswith("{")]


@pytest.fixture
def capture_logs():
    captures = []
    root = logging.getLogger()
    level = root.level

    def start(formatter=None):
        capture = Capture(formatter or JsonFormatter())
        root.addHandler(capture.handler)
        captures.append(capture)
        return capture

    root.setLevel(logging.INFO)
    yield start
    for capture in captures:
        root.removeHandler(capture.handler)
    root.setLevel(level)


def test_the_console_handler_is_wired_with_context_redaction_and_the_chosen_format():
    console = django_settings.LOGGING["handlers"]["console"]
    assert console["filters"] == ["context", "redact_secrets"]
    assert console["formatter"] == django_settings.LOG_FORMAT == "text"


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_log_format_chooses_json_lines_or_text_for_the_whole_process(log_format):
    script = (
        "import logging, django; django.setup(); from nexo_portal.lib import context\n"
        "with context.bound(request_id='req-0123456789', promotion_id=42):\n"
        "    logging.getLogger('releases.transitions').warning('promotion.approved: nexo-be approved')\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "nexo_portal.settings", "DEBUG": "1", "LOG_FORMAT": log_format}
    stderr = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=ROOT, check=True, capture_output=True, text=True
    ).stderr
    line = stderr.strip().splitlines()[-1]
    if log_format == "json":
        entry = json.loads(line)
        assert entry["level"] == "warning"
        assert entry["logger"] == "releases.transitions"
        assert entry["message"] == "promotion.approved: nexo-be approved"
        assert (entry["request_id"], entry["promotion_id"]) == ("req-0123456789", 42)
    else:
        assert "WARNING releases.transitions: promotion.approved: nexo-be approved" in line
        assert line.endswith("[request_id=req-0123456789 promotion_id=42]")


def test_an_unknown_log_format_refuses_to_start():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "nexo_portal.settings", "DEBUG": "1", "LOG_FORMAT": "xml"}
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "LOG_FORMAT must be text or json" in result.stderr


def test_a_promotion_is_followed_from_the_approval_request_through_every_job(
    pipeline, client, rita, paulo, capture_logs
):
    service = pipeline.add_service("nexo-be")
    release = make_release(service, "2026.02.1")
    transitions.request_promotion(release, pipeline.environments["develop"], None, kind=PromotionKind.AUTO)
    pipeline.run_jobs()
    promotion = transitions.request_promotion(release, pipeline.environments["staging"], rita)
    logs = capture_logs()

    client.force_login(paulo)
    response = client.post(
        f"/promotions/{promotion.pk}/approve/",
        {"comment": "ship it", "expected": policy.approvals_standing(promotion)},
        HTTP_X_REQUEST_ID="ci-run-4242-a",
    )
    assert response.status_code == 302
    assert response.headers["X-Request-ID"] == "ci-run-4242-a"
    pipeline.run_jobs()

    lines = [entry for entry in logs.entries() if entry.get("promotion_id") == promotion.pk]
    [approval] = [entry for entry in lines if entry["message"].startswith("promotion.approved")]
    assert approval["request_id"] == "ci-run-4242-a"
    assert approval["user"] == "paulo"
    assert (approval["service"], approval["environment"]) == ("nexo-be", "staging")
    actions = [entry["message"].split(":")[0] for entry in lines]
    for action in ("promotion.commit_started", "promotion.committed", "promotion.deployed", "promotion.verified"):
        assert action in actions
    job_lines = [entry for entry in lines if entry["message"].startswith(("promotion.committed", "promotion.verified"))]
    assert all(entry.get("job_id") for entry in job_lines)
    assert all("request_id" not in entry for entry in job_lines)  # a job does not inherit a request's context


def test_an_api_token_request_logs_as_the_token_and_never_its_secret(client, environments, capture_logs):
    from nexo_portal.models import ApiToken

    _token, plain = ApiToken.objects.issue(name="ci-logs", scopes=["read"], all_services=True)
    logs = capture_logs()
    response = client.get("/api/v1/promotions/999999/", HTTP_AUTHORIZATION=f"Bearer {plain}")
    assert response.status_code == 404
    [line] = [entry for entry in logs.entries() if entry["logger"] == "django.request"]
    assert line["user"] == "token:ci-logs"
    assert line["request_id"] == response.headers["X-Request-ID"]
    assert plain not in logs.text


SECRETS = {
    "SECRET_KEY": "django-secret-key-3f9a8b7c6d5e4f3a2b1c",
    "AUDIT_CHECKPOINT_KEY": "audit-checkpoint-key-5e4d3c2b1a09",
    "ARGOCD_TOKEN": "eyJhbGciOiJIUzI1NiJ9.argocd-token-payload.sig",
    "ARGOCD_WEBHOOK_SECRET": "argocd-webhook-secret-77aa88",
    "SLACK_BOT_TOKEN": "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy",
    "SLACK_SIGNING_SECRET": "8f742231b10e8888abcd99yyyzzz85a5",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0NEX0/B0PORTAL/8u0BDNBEk5aGgZsI3vsmyqG6",
    "SOCIAL_AUTH_GITHUB_ORG_SECRET": "github-oauth-client-secret-0a1b2c",
    "INCIDENT_WEBHOOK_SECRET": "pagerduty-signing-secret-9z8y7x",
    "METRICS_TOKEN": "metrics-bearer-token-6q5w4e",
    "EMAIL_HOST_PASSWORD": "smtp-password-1q2w3e4r",
}


@pytest.fixture
def secrets_set(settings):
    for name, value in SECRETS.items():
        setattr(settings, name, value)
    settings.REDIS_URL = "redis://:redis-password-0o9i8u@127.0.0.1:6379/0"
    return [*SECRETS.values(), "redis-password-0o9i8u"]


@pytest.mark.parametrize("formatter", [JsonFormatter, TextFormatter])
def test_no_secret_is_ever_logged(secrets_set, capture_logs, formatter):
    logs = capture_logs(formatter())
    log = logging.getLogger("releases.test")
    for value in secrets_set:
        log.warning("configured with %s", value)
        log.error(f"f-string with {value} inside")
    log.warning("headers: %s", {"Authorization": "Bearer nexo_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"})
    log.warning("Authorization: Basic dXNlcjpwYXNzd29yZC1zZWNyZXQ=")
    log.warning("Proxy-Authorization: Bearer some-upstream-token-1234")
    log.warning("POST %s failed", "https://hooks.slack.com/services/T999/B999/anotherWebhookSecret42")
    log.warning("connect to postgres://nexo_app:db-password-5t6y7u@db.internal:5432/nexo failed")
    log.warning("form data password=hunter2-hunter2&username=rita")
    try:
        raise requests.ConnectionError(
            f"HTTPSConnectionPool: Max retries exceeded with url {SECRETS['SLACK_WEBHOOK_URL']}"
        )
    except requests.ConnectionError:
        log.exception("Slack did not answer")
    with context.bound(request_id="req-secretless"):
        log.error("token %s", SECRETS["ARGOCD_TOKEN"])

    text = logs.text
    for value in [
        *secrets_set,
        "nexo_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
        "dXNlcjpwYXNzd29yZC1zZWNyZXQ=",
        "some-upstream-token-1234",
        "anotherWebhookSecret42",
        "db-password-5t6y7u",
        "hunter2-hunter2",
    ]:
        assert value not in text, value
    assert text.count("[redacted]") >= len(secrets_set) * 2
    # The traceback stays, redacted.
    assert "Slack did not answer" in text
    assert "ConnectionError" in text
    assert "req-secretless" in text
