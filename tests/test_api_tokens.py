"""API tokens: stored hashed, shown once, scoped, limited to services, revocable, expiring,
throttled; exercised through a tiny DRF view, the admin and the management command."""

import hashlib
import io
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from types import SimpleNamespace

import pytest
import time_machine
from django.core.cache import cache
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.shortcuts import get_object_or_404
from django.test.utils import CaptureQueriesContext
from django.urls import include, path, reverse
from django.utils import timezone
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.log import actor_name
from audit.models import AuditAction, AuditEvent
from nexo_portal.lib.scopes import require_service, requires_scope
from nexo_portal.models import ApiToken, TokenScope
from nexo_portal.tokens import ApiTokenRateThrottle, TokenPrincipal
from releases.models import Service
from tests.factories import make_service


class RegisterView(APIView):
    permission_classes = [requires_scope(TokenScope.REGISTER)]

    def post(self, request):
        return Response({"actor": actor_name(request.user), "is_ci_token": getattr(request.user, "is_ci_token", False)})


class ServiceView(APIView):
    permission_classes = [requires_scope(TokenScope.READ)]

    def get(self, request, service):
        service = get_object_or_404(Service, name=service)
        require_service(request, service)
        return Response({"service": service.name})


urlpatterns = [
    path("test-api/register/", RegisterView.as_view()),
    path("test-api/services/<slug:service>/", ServiceView.as_view()),
    path("", include("nexo_portal.urls")),
]

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]

TOKEN_PATTERN = re.compile(r"nexo_[A-Za-z0-9_-]{43}")


@pytest.fixture(autouse=True)
def empty_throttle_counters(redis_connection):
    cache.clear()


def issue(name="ci-nexo-be", scopes=(TokenScope.REGISTER,), **fields):
    """A token for the services given, or for all services."""
    fields.setdefault("all_services", not fields.get("services"))
    return ApiToken.objects.issue(name=name, scopes=scopes, **fields)


def bearer(plain_token):
    return {"HTTP_AUTHORIZATION": f"Bearer {plain_token}"}


@pytest.fixture
def administrator(paulo):
    """Paulo with every right in the admin, where tokens are issued and revoked."""
    paulo.is_staff = paulo.is_superuser = True
    paulo.save(update_fields=["is_staff", "is_superuser"])
    return paulo


# --- storage ---------------------------------------------------------------------------------


def test_token_is_stored_only_as_its_sha256_and_a_short_prefix():
    token, plain_token = issue()
    assert TOKEN_PATTERN.fullmatch(plain_token)
    stored = ApiToken.objects.get(pk=token.pk)
    assert stored.token_hash == hashlib.sha256(plain_token.encode()).hexdigest()
    assert plain_token.startswith(stored.prefix)
    assert len(stored.prefix) == 11
    dump = io.StringIO()
    call_command("dumpdata", exclude=["django_rq"], stdout=dump)  # its model has no table
    assert stored.token_hash in dump.getvalue()
    assert plain_token not in dump.getvalue()


def test_every_token_is_different():
    secrets = {issue(name=f"token-{number}")[1] for number in range(20)}
    assert len(secrets) == 20


def test_creation_is_audited_without_the_secret(administrator):
    service = make_service("nexo-be")
    _token, plain_token = issue(
        scopes=[TokenScope.REGISTER, TokenScope.READ], services=[service], created_by=administrator
    )
    event = AuditEvent.objects.get(action=AuditAction.TOKEN_CREATED)
    assert event.actor == "paulo"
    assert event.data["token"] == "ci-nexo-be"
    assert event.data["scopes"] == ["register", "read"]
    assert event.data["services"] == ["nexo-be"]
    assert event.data["all_services"] is False
    assert plain_token not in str(event.hashed_fields())


@pytest.mark.parametrize(
    ("field", "value"), [("scopes", "register admin"), ("scopes", ""), ("token_hash", "plain-secret")]
)
def test_database_refuses_unknown_scopes_and_non_hash_values(field, value):
    token, _ = issue()
    with pytest.raises(IntegrityError), transaction.atomic():
        ApiToken.objects.filter(pk=token.pk).update(**{field: value})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"scopes": []}, "Choose at least one scope"),
        ({"scopes": ["deploy"]}, "Unknown scope(s): deploy"),
        ({"expires_at": "past"}, "must be in the future"),
        ({"name": "CI Token!"}, "lowercase letters, digits and hyphens"),
    ],
)
def test_issuing_refuses_bad_input_and_saves_nothing(fields, message):
    from django.core.exceptions import ValidationError

    if fields.get("expires_at") == "past":
        fields["expires_at"] = timezone.now() - timedelta(days=1)
    with pytest.raises(ValidationError, match=re.escape(message)):
        issue(**fields)
    assert not ApiToken.objects.exists()
    assert not AuditEvent.objects.exists()


# --- authentication --------------------------------------------------------------------------


def test_ci_token_acts_as_a_principal_that_is_not_a_user(client):
    _, plain_token = issue()
    response = client.post("/test-api/register/", **bearer(plain_token))
    assert response.status_code == 200
    assert response.json() == {"actor": "api-token:ci-nexo-be", "is_ci_token": True}


def test_ci_principal_has_no_groups_and_no_permissions():
    token, _ = issue()
    principal = TokenPrincipal(token)
    assert principal.is_authenticated
    assert not principal.is_anonymous
    assert principal.get_username() == "api-token:ci-nexo-be"
    assert list(principal.groups.all()) == []
    assert not principal.has_perm("nexo_portal.add_apitoken")
    assert not principal.is_staff
    assert not principal.is_superuser
    assert principal.pk is None


def test_personal_token_acts_as_its_person(client, rita):
    _, plain_token = issue(name="rita-laptop", user=rita, created_by=rita)
    response = client.post("/test-api/register/", **bearer(plain_token))
    assert response.status_code == 200
    assert response.json() == {"actor": "rita", "is_ci_token": False}


def assert_refused_with_401(response, message):
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert message in response.json()["message"]


def test_request_without_credentials_gets_401_with_bearer_challenge(client):
    assert_refused_with_401(client.post("/test-api/register/"), "credentials were not provided")


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("Bearer nexo_" + "x" * 43, "no such token"),
        ("Bearer not-even-a-portal-token", "no such token"),
        ("Bearer", "Malformed Authorization header"),
        ("Bearer two parts", "Malformed Authorization header"),
    ],
)
def test_unknown_or_malformed_tokens_get_401(client, header, message):
    issue()
    assert_refused_with_401(client.post("/test-api/register/", HTTP_AUTHORIZATION=header), message)


@pytest.mark.parametrize("scheme", ["Token", "token", "Basic", "JWT"])
def test_a_token_sent_under_another_scheme_gets_401_saying_to_send_it_as_bearer(client, scheme):
    _, plain_token = issue()
    response = client.post("/test-api/register/", HTTP_AUTHORIZATION=f"{scheme} {plain_token}")
    assert_refused_with_401(response, f"send it as `Authorization: Bearer <token>`, not `{scheme} …`")


def test_a_signed_in_person_with_another_authorization_header_still_uses_their_session(client, paulo):
    # A proxy in front of the portal may add its own Authorization: Basic to every request.
    client.force_login(paulo)
    response = client.get("/api/v1/promotions/", HTTP_AUTHORIZATION="Basic cHJveHk6cGFzcw==")
    assert response.status_code == 200, response.content


def test_revoked_token_gets_401_saying_so(client, paulo):
    token, plain_token = issue()
    assert client.post("/test-api/register/", **bearer(plain_token)).status_code == 200
    token.revoke(by=paulo)
    assert_refused_with_401(client.post("/test-api/register/", **bearer(plain_token)), "was revoked on")


def test_expired_token_gets_401_saying_so(client):
    _, plain_token = issue(expires_at=timezone.now() + timedelta(days=30))
    assert client.post("/test-api/register/", **bearer(plain_token)).status_code == 200
    with time_machine.travel(timezone.now() + timedelta(days=31)):
        assert_refused_with_401(client.post("/test-api/register/", **bearer(plain_token)), "expired on")


def test_personal_token_of_a_deactivated_account_gets_401(client, rita):
    _, plain_token = issue(name="rita-laptop", user=rita, created_by=rita)
    rita.is_active = False
    rita.save()
    assert_refused_with_401(client.post("/test-api/register/", **bearer(plain_token)), "deactivated account")


def test_deactivating_someone_revokes_their_personal_tokens_for_good(client, rita):
    """As their sessions end: reactivated, they make new tokens; the old ones stay out, wherever they leaked."""
    _, personal = issue(name="rita-laptop", user=rita, created_by=rita)
    _, made_by_her = issue(name="ci-nexo-be", created_by=rita)
    rita.is_active = False
    rita.save()
    rita.is_active = True
    rita.save()

    assert_refused_with_401(client.post("/test-api/register/", **bearer(personal)), "was revoked on")
    assert client.post("/test-api/register/", **bearer(made_by_her)).status_code == 200  # a CI token: no person
    revoked = AuditEvent.objects.get(action=AuditAction.TOKEN_REVOKED)
    assert revoked.message.startswith("API token rita-laptop (nexo_")
    assert revoked.message.endswith("…) revoked: the account it acts as, rita, was deactivated")


# --- scopes and services ------------------------------------------------------------------------


def test_token_without_the_scope_is_refused_with_403(client):
    _, plain_token = issue(scopes=[TokenScope.READ, TokenScope.REPORT])
    response = client.post("/test-api/register/", **bearer(plain_token))
    assert response.status_code == 403
    assert "lacks the 'register' scope" in response.json()["message"]


def test_signed_in_person_passes_the_scope_check(client, rita):
    client.force_login(rita)
    response = client.post("/test-api/register/")
    assert response.status_code == 200
    assert response.json()["actor"] == "rita"


def test_has_scope_reads_every_scope_of_the_token():
    token, _ = issue(scopes=[TokenScope.PROMOTE, TokenScope.READ])
    assert token.has_scope(TokenScope.PROMOTE)
    assert token.has_scope("read")
    assert not token.has_scope(TokenScope.REGISTER)
    assert not token.has_scope(TokenScope.REPORT)


@pytest.mark.parametrize("scope", [TokenScope.REGISTER, TokenScope.PROMOTE, TokenScope.REPORT])
def test_every_scope_includes_read_as_github_write_permissions_do(client, scope):
    token, plain_token = issue(scopes=[scope])
    make_service("nexo-be")
    assert token.has_scope(TokenScope.READ)
    assert client.get("/test-api/services/nexo-be/", **bearer(plain_token)).status_code == 200


def test_a_read_only_token_may_not_write(client):
    _, plain_token = issue(scopes=[TokenScope.READ])
    response = client.post("/test-api/register/", **bearer(plain_token))
    assert response.status_code == 403
    assert "lacks the 'register' scope" in response.json()["message"]


def test_the_token_forms_say_that_every_scope_includes_read():
    from nexo_portal.admin import ApiTokenForm

    assert "Every scope includes reading" in ApiTokenForm().fields["scopes"].help_text
    assert "Read only" in dict(TokenScope.choices)[TokenScope.READ]


def test_token_limited_to_services_may_act_on_those_only(client):
    nexo_be, nexo_fe = make_service("nexo-be"), make_service("nexo-fe")
    token, plain_token = issue(scopes=[TokenScope.READ], services=[nexo_be])
    assert token.allows_service(nexo_be)
    assert not token.allows_service(nexo_fe)
    assert client.get("/test-api/services/nexo-be/", **bearer(plain_token)).status_code == 200
    response = client.get("/test-api/services/nexo-fe/", **bearer(plain_token))
    assert response.status_code == 403
    assert response.json()["message"] == "This API token may act on nexo-be only, not on nexo-fe."


def test_token_for_all_services_may_act_on_all_those_added_later_too(client):
    token, plain_token = issue(scopes=[TokenScope.READ], all_services=True)
    services = [make_service("nexo-be"), make_service("nexo-fe")]
    assert all(token.allows_service(service) for service in services)
    for service in services:
        assert client.get(f"/test-api/services/{service.name}/", **bearer(plain_token)).status_code == 200
    assert token.describe_services() == "all services"


def test_token_limited_to_services_since_deleted_may_act_on_none(client):
    nexo_be, typo = make_service("nexo-be"), make_service("nexo-bee")
    _token, plain_token = issue(scopes=[TokenScope.READ], services=[typo])
    typo.delete()
    token = ApiToken.objects.find(plain_token)
    assert not token.allows_service(nexo_be)
    assert token.describe_services() == "none: it was limited to services that no longer exist (revoke it)"
    response = client.get("/test-api/services/nexo-be/", **bearer(plain_token))
    assert response.status_code == 403
    assert response.json()["message"] == (
        "This API token was limited to services that no longer exist: it may act on none. "
        "Ask a platform engineer for a new one."
    )


@pytest.mark.parametrize(
    ("all_services", "listed", "message"),
    [
        (False, False, "Choose the services it may act on, or all services."),
        (True, True, "Choose either all services or some services, not both."),
    ],
)
def test_issuing_says_all_services_or_lists_them_never_neither_nor_both(all_services, listed, message):
    from django.core.exceptions import ValidationError

    services = [make_service("nexo-be")] if listed else []
    with pytest.raises(ValidationError, match=re.escape(message)):
        ApiToken.objects.issue(name="ci", scopes=["read"], services=services, all_services=all_services)
    assert not ApiToken.objects.exists()
    assert not AuditEvent.objects.exists()


def test_the_migration_keeps_tokens_made_for_all_services_and_not_those_whose_services_were_deleted():
    from importlib import import_module

    from django.apps import apps

    keep_all_services = import_module("nexo_portal.migrations.0006_token_for_all_services_is_said").keep_all_services
    typo, nexo_be = make_service("nexo-bee"), make_service("nexo-be")
    issue(name="ci-all")
    issue(name="ci-typo", services=[typo])
    issue(name="ci-be", services=[nexo_be])
    typo.delete()
    ApiToken.objects.update(all_services=False)  # as every token was before the migration

    keep_all_services(apps, None)

    assert dict(ApiToken.objects.values_list("name", "all_services")) == {
        "ci-all": True,
        "ci-typo": False,
        "ci-be": False,
    }


# --- last use and throttling -----------------------------------------------------------------


def token_updates(queries):
    return [query["sql"] for query in queries if query["sql"].startswith('UPDATE "nexo_portal_apitoken"')]


def test_last_used_at_is_written_at_most_once_a_minute(client):
    token, plain_token = issue()
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        client.post("/test-api/register/", **bearer(plain_token))
    token.refresh_from_db()
    assert token.last_used_at == start

    with time_machine.travel(start + timedelta(seconds=50), tick=False), CaptureQueriesContext(connection) as queries:
        assert client.post("/test-api/register/", **bearer(plain_token)).status_code == 200
    assert token_updates(queries) == []
    token.refresh_from_db()
    assert token.last_used_at == start

    with time_machine.travel(start + timedelta(minutes=2), tick=False):
        client.post("/test-api/register/", **bearer(plain_token))
    token.refresh_from_db()
    assert token.last_used_at == start + timedelta(minutes=2)


def test_calls_beyond_the_rate_are_throttled_per_token(client, settings):
    settings.API_TOKEN_THROTTLE_RATE = "3/minute"
    _, busy = issue(name="busy-pipeline")
    _, quiet = issue(name="quiet-pipeline")
    statuses = [client.post("/test-api/register/", **bearer(busy)).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert client.post("/test-api/register/", **bearer(quiet)).status_code == 200


def test_a_throttled_call_says_when_to_try_again(client, settings):
    settings.API_TOKEN_THROTTLE_RATE = "2/minute"
    _, plain = issue()
    answers = [client.post("/test-api/register/", **bearer(plain)) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [200, 200, 429]
    assert 0 < int(answers[-1]["Retry-After"]) <= 60


def test_concurrent_calls_of_one_token_never_exceed_its_rate(settings):
    settings.API_TOKEN_THROTTLE_RATE = "5/minute"
    token, _ = issue()
    request = SimpleNamespace(auth=token)
    with ThreadPoolExecutor(max_workers=8) as pool:
        allowed = list(pool.map(lambda _: ApiTokenRateThrottle().allow_request(request, None), range(24)))
    assert allowed.count(True) == 5


def test_without_redis_token_calls_go_through_unthrottled_rather_than_fail(client, settings):
    settings.API_TOKEN_THROTTLE_RATE = "1/minute"
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
    }
    _, plain = issue()
    assert [client.post("/test-api/register/", **bearer(plain)).status_code for _ in range(2)] == [200, 200]


def test_signed_in_people_are_not_throttled_by_the_token_rate(client, settings, rita):
    settings.API_TOKEN_THROTTLE_RATE = "1/minute"
    client.force_login(rita)
    assert [client.post("/test-api/register/").status_code for _ in range(3)] == [200, 200, 200]


# --- revocation ------------------------------------------------------------------------------


def test_revoking_records_who_did_it_once(paulo):
    token, _ = issue()
    assert token.revoke(by=paulo) is True
    assert token.revoke(by=paulo) is False
    events = AuditEvent.objects.filter(action=AuditAction.TOKEN_REVOKED)
    assert [(event.actor, event.data["token"]) for event in events] == [("paulo", "ci-nexo-be")]
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None


# --- the admin -------------------------------------------------------------------------------


@pytest.fixture
def operator(client, administrator):
    client.force_login(administrator)
    return client


def add_token_in_admin(client, **fields):
    data = {
        "name": "github-actions-nexo-be",
        "scopes": ["register", "read"],
        "all_services": not fields.get("services"),
        "services": [],
        "user": "",
        "expires_at": "",
    }
    data.update(fields)
    return client.post(reverse("admin:nexo_portal_apitoken_add"), data)


def test_admin_shows_the_new_token_once_and_never_again(operator, client):
    service = make_service("nexo-be")
    response = add_token_in_admin(operator, services=[service.pk])
    assert response.status_code == 200
    plain_token = TOKEN_PATTERN.search(response.content.decode()).group()
    assert "no-store" in response["Cache-Control"]
    token = ApiToken.objects.get(name="github-actions-nexo-be")
    assert token.token_hash == hashlib.sha256(plain_token.encode()).hexdigest()
    assert token.scope_list == ["register", "read"]
    assert list(token.services.all()) == [service]
    assert token.created_by.username == "paulo"
    assert AuditEvent.objects.filter(action=AuditAction.TOKEN_CREATED, actor="paulo").count() == 1

    for page in (
        reverse("admin:nexo_portal_apitoken_changelist"),
        reverse("admin:nexo_portal_apitoken_change", args=[token.pk]),
    ):
        content = operator.get(page).content.decode()
        assert token.prefix in content
        assert plain_token not in content
        assert token.token_hash not in content

    assert client.logout() is None
    api_call = client.post("/test-api/register/", **bearer(plain_token))
    assert api_call.json() == {"actor": "api-token:github-actions-nexo-be", "is_ci_token": True}


def test_admin_add_form_has_no_hash_or_secret_field(operator):
    content = operator.get(reverse("admin:nexo_portal_apitoken_add")).content.decode()
    assert 'name="scopes"' in content
    assert 'name="token_hash"' not in content
    assert 'name="prefix"' not in content


def test_admin_refuses_bad_input_and_saves_nothing(operator):
    response = add_token_in_admin(operator, name="Bad Name", scopes=[])
    assert response.status_code == 200
    assert response.context["adminform"].form.errors.keys() == {"name", "scopes"}
    assert not ApiToken.objects.exists()
    assert not AuditEvent.objects.exists()


def test_admin_asks_for_all_services_or_a_list_of_them(operator):
    service = make_service("nexo-be")
    response = add_token_in_admin(operator, all_services=False)
    assert response.context["adminform"].form.errors["services"] == [
        "Choose the services it may act on, or all services."
    ]
    response = add_token_in_admin(operator, all_services=True, services=[service.pk])
    assert response.context["adminform"].form.errors["services"] == [
        "Choose either all services or some services, not both."
    ]
    assert not ApiToken.objects.exists()

    response = add_token_in_admin(operator)
    assert "Services: all services" in response.content.decode()
    assert ApiToken.objects.get().all_services


def test_admin_says_a_token_whose_services_were_deleted_acts_on_none(operator):
    typo = make_service("nexo-bee")
    token, _ = issue(services=[typo])
    typo.delete()
    for page in (
        reverse("admin:nexo_portal_apitoken_changelist"),
        reverse("admin:nexo_portal_apitoken_change", args=[token.pk]),
    ):
        assert "limited to services that no longer exist" in operator.get(page).content.decode()


def test_admin_tokens_are_viewed_revoked_never_edited_or_deleted(operator):
    token, _ = issue()
    change_url = reverse("admin:nexo_portal_apitoken_change", args=[token.pk])
    assert operator.get(change_url).status_code == 200
    assert operator.post(change_url, {"name": "renamed", "scopes": ["read"]}).status_code == 403
    assert (
        operator.post(reverse("admin:nexo_portal_apitoken_delete", args=[token.pk]), {"post": "yes"}).status_code == 403
    )
    assert ApiToken.objects.get(pk=token.pk).name == "ci-nexo-be"


def test_admin_revoke_action(operator):
    token, _ = issue()
    response = operator.post(
        reverse("admin:nexo_portal_apitoken_changelist"),
        {"action": "revoke", "_selected_action": [token.pk]},
        follow=True,
    )
    assert "Revoked: ci-nexo-be" in response.content.decode()
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert AuditEvent.objects.get(action=AuditAction.TOKEN_REVOKED).actor == "paulo"


def test_only_a_superuser_may_create_a_personal_token_for_someone_else(client, sam, rita):
    from django.contrib.auth.models import Permission

    sam.is_staff = True
    sam.save(update_fields=["is_staff"])
    sam.user_permissions.add(
        *Permission.objects.filter(codename__in=["add_apitoken", "view_apitoken", "change_apitoken"])
    )
    client.force_login(sam)
    response = add_token_in_admin(client, name="rita-laptop", user=rita.pk)
    assert response.status_code == 200
    assert "Only a superuser may create a personal token for someone else" in response.content.decode()
    assert not ApiToken.objects.exists()
    response = add_token_in_admin(client, name="sam-laptop", user=sam.pk)
    assert response.status_code == 200
    assert TOKEN_PATTERN.search(response.content.decode())
    assert ApiToken.objects.get().user == sam


# --- the management command ------------------------------------------------------------------------


def test_create_api_token_command_prints_the_token_once():
    make_service("nexo-be")
    out = io.StringIO()
    call_command(
        "create_api_token",
        "ci-nexo-be",
        "--scope",
        "register",
        "--scope",
        "report",
        "--service",
        "nexo-be",
        "--expires-in-days",
        "90",
        stdout=out,
    )
    plain_token = TOKEN_PATTERN.search(out.getvalue()).group()
    assert "API token ci-nexo-be (register, report) for nexo-be." in out.getvalue()
    token = ApiToken.objects.find(plain_token)
    assert token.name == "ci-nexo-be"
    assert token.scope_list == ["register", "report"]
    assert [service.name for service in token.services.all()] == ["nexo-be"]
    assert not token.all_services
    assert timedelta(days=89) < token.expires_at - timezone.now() <= timedelta(days=90)


def test_create_api_token_command_without_a_service_makes_a_token_for_all_services():
    out = io.StringIO()
    call_command("create_api_token", "ci-all", "--scope", "read", stdout=out)
    assert "API token ci-all (read) for all services." in out.getvalue()
    assert ApiToken.objects.get().all_services


def test_create_api_token_command_refuses_unknown_services_and_saves_nothing():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No service named nexo-xx"):
        call_command("create_api_token", "ci", "--scope", "register", "--service", "nexo-xx", stdout=io.StringIO())
    assert not ApiToken.objects.exists()


@pytest.mark.parametrize("days", ["3000000", "99999999999"])
def test_create_api_token_command_refuses_an_expiry_past_the_calendar_and_saves_nothing(days):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match=r"--expires-in-days: .* leave it out for a token that never expires"):
        call_command("create_api_token", "ci", "--scope", "read", "--expires-in-days", days, stdout=io.StringIO())
    assert not ApiToken.objects.exists()
