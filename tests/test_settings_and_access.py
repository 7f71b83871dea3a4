"""Production settings are safe by default; every page but login and health needs sign-in."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading

import pytest
from django.conf import settings


def start_django(expression="settings.DEBUG", *, drop=(), **env):
    """A new process with `env` (DEBUG, SECRET_KEY, ALLOWED_HOSTS and `drop` unset first) that
    sets Django up and prints `expression`, with `settings` in scope."""
    clean = {
        key: value for key, value in os.environ.items() if key not in {"DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", *drop}
    }
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); from django.conf import settings; print({expression})"],
        env={**clean, "DJANGO_SETTINGS_MODULE": "nexo_portal.settings", **env},
        capture_output=True,
        text=True,
        cwd=settings.BASE_DIR,
    )


def test_production_without_secret_key_refuses_to_start_and_says_what_to_set():
    result = start_django(ALLOWED_HOSTS="portal.nexo.example")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr
    assert "cannot start safely" in result.stderr


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("SECRET_KEY", "insecure-development-key-never-use-in-production", "the development key"),
        ("AUDIT_CHECKPOINT_KEY", "insecure-development-audit-key-never-use-in-production", "the development key"),
        ("SECRET_KEY", "k", "at least 32 characters"),
        ("AUDIT_CHECKPOINT_KEY", "a" * 31, "at least 32 characters"),
    ],
)
def test_production_refuses_a_published_or_short_key_and_says_how_to_make_one(name, value, said):
    keys = {"SECRET_KEY": "s" * 50, "AUDIT_CHECKPOINT_KEY": "a" * 50, name: value}
    result = start_django(ALLOWED_HOSTS="portal.nexo.example", **keys)
    assert result.returncode != 0
    [refusal] = [line for line in result.stderr.splitlines() if "cannot start safely" in line]
    assert f"{name} " in refusal
    assert said in refusal
    assert "secrets.token_urlsafe(50)" in refusal


LIST_SETTINGS = {
    # variable: (what an operator writes, the setting it fills, what it must hold)
    "ALLOWED_HOSTS": ("localhost, portal.example ,", "ALLOWED_HOSTS", ["localhost", "portal.example"]),
    "CSRF_TRUSTED_ORIGINS": (
        "https://a.example, https://b.example",
        "CSRF_TRUSTED_ORIGINS",
        ["https://a.example", "https://b.example"],
    ),
    "ERROR_EMAILS": (
        "ops@nexo.example, sre@nexo.example",
        "ADMINS",
        [["Nexo Release Portal operators", "ops@nexo.example"], ["Nexo Release Portal operators", "sre@nexo.example"]],
    ),
    "REGISTRY_INSECURE_HOSTS": (
        "registry.local:5000, 127.0.0.1:5000",
        "REGISTRY_INSECURE_HOSTS",
        ["registry.local:5000", "127.0.0.1:5000"],
    ),
    "GITHUB_TEAM_GROUPS": (
        "sre=sre-team, platform-leads = platform-leads",
        "GITHUB_TEAM_GROUPS",
        {"sre": "sre-team", "platform-leads": "platform-leads"},
    ),
    "INCIDENT_WEBHOOK_SECRETS": (
        "staging=s3cret, qa= an0ther",
        "INCIDENT_WEBHOOK_SECRETS",
        {"staging": "s3cret", "qa": "an0ther"},
    ),
    "REGISTRY_CREDENTIALS": (
        "ghcr.io=bot:t0ken, registry.local =ci:pass",
        "REGISTRY_CREDENTIALS",
        {"ghcr.io": "bot:t0ken", "registry.local": "ci:pass"},
    ),
}


def test_spaces_around_the_items_of_list_and_dict_settings_are_not_part_of_them():
    """`ALLOWED_HOSTS="localhost, portal.example"` is how people write lists: ' portal.example' is no host."""
    names = {variable: setting for variable, (_, setting, _) in LIST_SETTINGS.items()}
    result = start_django(
        f"__import__('json').dumps({{name: getattr(settings, name) for name in {sorted(names.values())}}})",
        DEBUG="1",
        **{variable: written for variable, (written, _, _) in LIST_SETTINGS.items()},
    )
    assert result.returncode == 0, result.stderr
    read = json.loads(result.stdout)
    assert {variable: read[setting] for variable, setting in names.items()} == {
        variable: expected for variable, (_, _, expected) in LIST_SETTINGS.items()
    }


def test_production_with_argocd_url_but_no_token_refuses_to_start():
    result = start_django(SECRET_KEY="x" * 50, ALLOWED_HOSTS="portal.nexo.example", ARGOCD_URL="https://argocd.example")
    assert result.returncode != 0
    assert "ARGOCD_TOKEN" in result.stderr


def test_debug_is_off_unless_asked_for():
    result = start_django(SECRET_KEY="x" * 50, ALLOWED_HOSTS="portal.nexo.example")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_development_mode_starts_without_secrets():
    result = start_django(DEBUG="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def test_production_cookies_are_secure_by_default():
    result = start_django(
        "settings.SESSION_COOKIE_SECURE, settings.CSRF_COOKIE_SECURE, settings.SESSION_COOKIE_HTTPONLY",
        drop={"SECURE_HTTPS"},
        SECRET_KEY="x" * 50,
        ALLOWED_HOSTS="a.example",
    )
    assert result.stdout.split() == ["True", "True", "True"], result.stderr


def test_the_wsgi_process_loads_every_view_and_freezes_its_start_up_objects_out_of_the_collector():
    script = (
        "import gc, sys; import nexo_portal.wsgi; "
        "print(gc.get_freeze_count() > 50_000, 'releases.views' in sys.modules, 'audit.views' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "SECRET_KEY": "x" * 50, "ALLOWED_HOSTS": "portal.nexo.example"},
        capture_output=True,
        text=True,
        cwd=settings.BASE_DIR,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "True"]


@pytest.mark.django_db
def test_health_endpoint_is_open_and_reports_database_and_redis(client, redis_connection):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}, "workers": 0}


@pytest.mark.django_db
def test_health_endpoint_stays_in_service_but_says_degraded_when_redis_is_down(client, settings):
    settings.RQ_QUEUES = {"default": {"URL": "redis://127.0.0.1:1/0"}}
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "degraded",
        "checks": {"database": "ok", "redis": "unavailable"},
        "workers": None,
    }


@pytest.fixture
def silent_database():
    """A TCP port that takes connections and never says a word, as a hung PostgreSQL does."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    taken, stop = [], threading.Event()

    def take():
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                taken.append(listener.accept()[0])

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    yield f"postgres://nexo:nexo@127.0.0.1:{listener.getsockname()[1]}/nexo"
    stop.set()
    thread.join()
    for connection in [*taken, listener]:
        connection.close()


SILENT_DATABASE_REQUESTS = """
import json
from django.test import Client
health = Client().get("/healthz")
metrics = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer metrics-token")
print(json.dumps([health.status_code, health.json()["checks"]["database"], metrics.status_code]))
"""


def run_against(database_url, *command):
    """`command` run with DATABASE_URL and a short connect timeout; a hang fails the test, not the suite."""
    try:
        return subprocess.run(
            command,
            env={
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "nexo_portal.settings",
                "DATABASE_URL": database_url,
                "DATABASE_CONNECT_TIMEOUT_SECONDS": "2",
                "ALLOWED_HOSTS": "testserver",
                "METRICS_TOKEN": "metrics-token",
            },
            capture_output=True,
            text=True,
            cwd=settings.BASE_DIR,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(command)} still waited for the database after 60 s")


def test_health_answers_503_when_the_database_takes_connections_but_never_answers(silent_database):
    script = f"import django; django.setup()\n{SILENT_DATABASE_REQUESTS}"
    result = run_against(silent_database, sys.executable, "-c", script)
    assert result.returncode == 0, result.stderr
    # /metrics still serves what the processes counted, without the promotions it could not read.
    assert json.loads(result.stdout) == [503, "unavailable", 200], result.stderr


def test_the_reconciler_says_the_database_did_not_answer_rather_than_wait_for_it(silent_database):
    result = run_against(silent_database, sys.executable, "manage.py", "reconcile")
    assert result.returncode != 0
    assert "timeout" in result.stderr, result.stderr


@pytest.mark.django_db
def test_health_endpoint_counts_the_workers_alive_without_going_out_of_service_when_none_is(client, redis_connection):
    """/healthz may be the web's liveness probe: no worker is for operators to see, not a reason to
    restart the web."""
    from releases import worker

    assert client.get("/healthz").json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}, "workers": 0}
    worker.say_alive(redis_connection, "rq-worker-1")
    assert client.get("/healthz").json()["workers"] == 1


def test_production_redirects_plain_http_and_asks_for_hsts_but_not_for_the_health_probe():
    result = start_django(
        "settings.SECURE_SSL_REDIRECT, settings.SECURE_HSTS_SECONDS, settings.SECURE_REDIRECT_EXEMPT",
        drop={"SECURE_HTTPS"},
        SECRET_KEY="x" * 50,
        ALLOWED_HOSTS="a.example",
    )
    assert result.stdout.split() == ["True", "31536000", "['^healthz$',", "'^metrics$']"], result.stderr


def test_server_errors_are_mailed_to_the_operators_when_asked(client, settings, mailoutbox):
    import logging

    settings.ADMINS = [("ops", "ops@nexo.example")]
    logging.getLogger("django.request").error("Internal Server Error: /boom", extra={"status_code": 500})
    assert [message.to for message in mailoutbox] == [["ops@nexo.example"]]
    assert "Internal Server Error: /boom" in mailoutbox[0].subject


def test_error_emails_come_from_the_environment():
    result = start_django(
        "settings.ADMINS, settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_USE_TLS",
        DEBUG="1",
        ERROR_EMAILS="ops@nexo.example,sre@nexo.example",
        EMAIL_URL="smtp+tls://u:p@smtp.example:587",
    )
    assert "'ops@nexo.example'" in result.stdout, result.stderr
    assert "'sre@nexo.example'" in result.stdout, result.stderr
    assert result.stdout.strip().endswith("smtp.example 587 True"), result.stdout + result.stderr


def test_development_mode_prints_each_warning_once():
    result = start_django(
        "__import__('logging').getLogger('django.request').warning('Not Found: /favicon.ico') or 'done'",
        DEBUG="1",
        LOG_LEVEL="INFO",
    )
    assert result.stdout.strip() == "done", result.stderr
    assert result.stderr.count("Not Found: /favicon.ico") == 1, result.stderr


def test_log_level_applies_to_djangos_own_records():
    result = start_django(
        "__import__('logging').getLogger('django.request').info('an info line') or 'done'",
        DEBUG="1",
        LOG_LEVEL="WARNING",
    )
    assert result.stdout.strip() == "done", result.stderr
    assert "an info line" not in result.stderr


@pytest.mark.parametrize("written", ["debug", "Warning", "ERROR"])
def test_log_level_is_read_in_any_case(written):
    result = start_django("settings.LOGGING['root']['level']", DEBUG="1", LOG_LEVEL=written)
    assert result.stdout.strip() == written.upper(), result.stderr


def test_an_unknown_log_level_is_refused_naming_the_levels_there_are():
    result = start_django(DEBUG="1", LOG_LEVEL="verbose")
    assert result.returncode != 0
    assert "LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL (in any case), not 'verbose'." in result.stderr


@pytest.mark.parametrize("kind", ["missing", "a file"])
def test_a_metrics_directory_that_is_not_one_is_refused_by_name(tmp_path, kind):
    directory = tmp_path / "nexo-portal-metrics"
    if kind == "a file":
        directory.write_text("")
    result = start_django(DEBUG="1", PROMETHEUS_MULTIPROC_DIR=str(directory))
    assert result.returncode != 0
    assert f"PROMETHEUS_MULTIPROC_DIR is {directory}, which is not a directory" in result.stderr, result.stderr


def test_the_file_witness_without_its_file_is_refused_at_start():
    result = start_django(DEBUG="1", drop={"AUDIT_WITNESS_FILE"}, AUDIT_WITNESS="audit.checkpoints.FileWitness")
    assert result.returncode != 0
    refusal = "AUDIT_WITNESS is audit.checkpoints.FileWitness, which needs AUDIT_WITNESS_FILE"
    assert refusal in result.stderr, result.stderr


def test_production_refuses_to_start_on_sqlite():
    result = start_django(
        SECRET_KEY="x" * 50, ALLOWED_HOSTS="portal.nexo.example", DATABASE_URL="sqlite:////tmp/x.sqlite3"
    )
    assert result.returncode != 0
    assert "DATABASE_URL (a postgres:// URL" in result.stderr


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/", "/promotions/1/", "/services/nexo-be/releases/2026.02.1/", "/admin/rq/"])
def test_pages_redirect_anonymous_visitors_to_sign_in(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/") or response["Location"].startswith("/admin/login/")


@pytest.mark.django_db
def test_login_page_is_open(client):
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    assert b'name="csrfmiddlewaretoken"' in response.content


@pytest.mark.django_db
def test_pages_carry_a_content_security_policy_and_the_api_docs_are_left_out(client, viewer):
    client.force_login(viewer)
    policy = client.get("/")["Content-Security-Policy"]
    for directive in (
        "default-src 'self'",
        "object-src 'none'",
        "frame-ancestors 'none'",
        "form-action 'self' https://github.com",
    ):
        assert directive in policy
    assert "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy
    assert "Content-Security-Policy" not in client.get("/api/v1/docs/")


@pytest.mark.django_db
def test_the_redoc_page_keeps_a_policy_that_loads_nothing_from_outside(client, viewer):
    client.force_login(viewer)
    response = client.get("/api/v1/redoc/")
    policy = response["Content-Security-Policy"]

    assert "default-src 'self'" in policy
    assert "img-src 'self' data:" in policy
    assert "style-src 'self' 'unsafe-inline'" in policy  # ReDoc's styled components
    assert "script-src" not in policy  # scripts fall back to default-src 'self': no inline script
    assert b"googleapis" not in response.content
    assert b"<script>" not in response.content
