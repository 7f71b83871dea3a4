"""Hostile input is a 4xx that says what to fix, never a 500: control characters in every field,
query parameter and path segment, oversized timestamps and malformed signed webhook bodies."""

import copy
import hashlib
import hmac
import json
import time

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from rest_framework.test import APIClient

from environments.models import Environment
from nexo_portal.models import ApiToken
from releases.deployment_events import signature_for
from releases.models import Promotion
from tests.factories import make_release, make_service

pytestmark = pytest.mark.django_db

SECRET = "hostile-input-secret"
NUL = "\x00"


@pytest.fixture
def world(environments, redis_connection, settings, rita):
    settings.ARGOCD_WEBHOOK_SECRET = SECRET
    settings.INCIDENT_WEBHOOK_SECRET = SECRET
    service = make_service("nexo-be", team="backend-team")
    make_release(service, "2026.02.1")
    _, plain = ApiToken.objects.issue(
        name="hostile", scopes=["register", "promote", "report", "read"], all_services=True
    )
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {plain}")
    return {"api": api, "rita": rita, "service": service}


def assert_refused(response, status=400, field=None, text=""):
    """The API's one error body: status, code, message, and errors naming the field."""
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json", response["Content-Type"]
    body = response.json()
    assert set(body) == {"status", "code", "message", "errors"}
    assert body["status"] == status
    assert text in body["message"], body["message"]
    if field is not None:
        assert field in [error["field"] for error in body["errors"]], body["errors"]
    return body


REQUESTS = {
    "/api/v1/promotions/": {"service": "nexo-be", "version": "2026.02.1", "environment": "develop"},
    "/api/v1/rollbacks/": {"service": "nexo-be", "environment": "develop"},
    "/api/v1/verifications/": {
        "service": "nexo-be",
        "version": "2026.02.1",
        "environment": "qa",
        "check": "e2e",
        "passed": True,
    },
    "/api/v1/releases/": {
        "service": "nexo-be",
        "commit_sha": "a" * 40,
        "committed_at": "2026-02-03T10:00:00Z",
        "image_digest": "sha256:" + "b" * 64,
    },
}


@pytest.mark.parametrize("content", ["json", "multipart", "urlencoded"])
@pytest.mark.parametrize("field", ["service", "environment"])
@pytest.mark.parametrize("path", list(REQUESTS))
def test_a_nul_in_a_name_is_a_400_naming_the_field(world, path, field, content):
    data = {**REQUESTS[path], field: f"nexo{NUL}be"}
    if content == "urlencoded":
        from urllib.parse import urlencode

        response = world["api"].post(path, urlencode(data), content_type="application/x-www-form-urlencoded")
    else:
        response = world["api"].post(path, data, format=content)
    assert_refused(response, field=field, text="control character")


@pytest.mark.parametrize("value", [{"name": "nexo-be"}, ["nexo-be"], 5, 1.5, True])
@pytest.mark.parametrize("path", list(REQUESTS))
def test_a_service_that_is_not_a_string_is_a_400_not_an_unknown_service(world, path, value):
    before = counts()
    response = world["api"].post(path, {**REQUESTS[path], "service": value}, format="json")
    assert_refused(response, 400, field="service", text="Give the service's name, e.g. nexo-be.")
    assert counts() == before


def test_the_fuzzers_finding_a_nul_in_a_form_encoded_rollback_environment_is_a_400(world):
    response = world["api"].post(
        "/api/v1/rollbacks/", "service=nexo-be&environment=%00", content_type="application/x-www-form-urlencoded"
    )
    assert_refused(response, field="environment", text="Contains the control character U+0000: ")


@pytest.mark.parametrize(
    ("value", "refused"),
    [
        ("a\x00b", "U+0000"),
        ("bell\x07", "U+0007"),
        ("del\x7f", "U+007F"),
        ("c1\x85", "U+0085"),
        ("half a pair \ud800", "unpaired UTF-16 surrogate (U+D800)"),
    ],
)
def test_free_text_refuses_control_characters_and_unpaired_surrogates(world, value, refused):
    # json.dumps escapes each of them as \uXXXX, as a hostile client would.
    body = json.dumps({**REQUESTS["/api/v1/promotions/"], "reason": value})
    response = world["api"].post("/api/v1/promotions/", body, content_type="application/json")
    assert_refused(response, field="reason", text=refused)


def test_free_text_keeps_tabs_and_line_breaks(world):
    response = world["api"].post(
        "/api/v1/promotions/", {**REQUESTS["/api/v1/promotions/"], "reason": "line one\r\n\tline two"}, format="json"
    )
    assert response.status_code == 201, response.content


def test_a_control_character_in_a_json_key_is_refused(world):
    response = world["api"].post("/api/v1/promotions/", {**REQUESTS["/api/v1/promotions/"], "x\x00": 1}, format="json")
    assert_refused(response, text="U+0000")


@pytest.mark.parametrize(
    ("body", "repeated"),
    [
        (
            '{"service": "nexo-be", "version": "2026.02.1", "environment": "production", "service": "nexo-fe"}',
            "service",
        ),
        ('{"service": "nexo-be", "version": "2026.02.1", "environment": "qa", "x": {"a": 1, "a": 2}}', "a"),
    ],
)
def test_a_key_given_twice_in_a_json_object_is_refused_and_nothing_is_requested(world, body, repeated):
    # Parsers disagree on which one wins (Python keeps the last): the portal refuses to guess.
    response = world["api"].post("/api/v1/promotions/", body, content_type="application/json")
    assert_refused(response, text=f'the key "{repeated}" appears twice in one object; send each key once')
    assert not Promotion.objects.exists()


@pytest.mark.parametrize("content", ["multipart", "urlencoded"])
def test_a_field_given_twice_in_a_form_is_refused_and_nothing_is_requested(world, content):
    """As with JSON's repeated keys: DRF would keep the last environment, maybe not the one meant."""
    body = "service=nexo-be&version=2026.02.1&environment=production&environment=develop"
    if content == "urlencoded":
        response = world["api"].post("/api/v1/promotions/", body, content_type="application/x-www-form-urlencoded")
    else:
        data = {"service": "nexo-be", "version": "2026.02.1", "environment": ["production", "develop"]}
        response = world["api"].post("/api/v1/promotions/", data, format="multipart")
    assert_refused(
        response, field="environment", text='The field "environment" is given 2 times; send each field once.'
    )
    assert not Promotion.objects.exists()


@pytest.mark.parametrize("path", ["/api/v1/dora/", "/api/v1/matrix/", "/api/v1/releases/", "/api/v1/audit/"])
@pytest.mark.parametrize("parameter", ["service", "team"])
def test_a_nul_in_a_query_parameter_is_a_400_naming_it(world, path, parameter):
    assert_refused(world["api"].get(path, {parameter: f"nexo{NUL}be"}), field=parameter, text="control character")


@pytest.mark.parametrize("query", ["service=nexo%0Abe", "ser%00vice=nexo-be"])
def test_no_query_parameter_holds_a_line_break_and_no_name_a_control_character(world, query):
    assert_refused(world["api"].get(f"/api/v1/promotions/?{query}"), text="control character U+00")


@pytest.mark.parametrize("path", ["/", "/dora/", "/audit/", "/services/nexo-be/environments/develop/rollback/"])
def test_a_nul_in_a_pages_query_string_is_the_400_page(world, client, path):
    client.force_login(world["rita"])
    response = client.get(f"{path}?team=%00&release=%00")
    assert response.status_code == 400
    assert response.templates[0].name == "400.html"
    assert "Contains the control character U+0000" in response.content.decode()


def test_a_nul_in_a_pages_form_is_the_400_page(world, client):
    client.force_login(world["rita"])
    response = client.post("/services/nexo-be/environments/develop/promote/2026.02.1/", {"reason": f"a{NUL}b"})
    assert response.status_code == 400
    assert "reason: Contains the control character U+0000" in response.content.decode()


# --- path segments ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/services/nexo-be/releases/2026.02.1%00/",
        "/api/v1/services/nexo-be/releases/%00/",
        "/api/v1/promotions/1%00/",
        "/api/v1/promotions/%0A/approve/",
        "/api/v1/nothing%0Ahere/",
        "/api/v2/releases/",
        "/api/",
    ],
)
def test_every_path_under_api_that_names_nothing_is_a_json_404(world, path):
    assert_refused(world["api"].get(path), 404, text="No API endpoint at /api/")


@pytest.mark.parametrize(
    "path",
    [
        "/services/nexo-be/releases/2026.02.1%00/",
        "/services/nexo-be/environments/develop/promote/2026.02.1%00/",
        "/services/nexo-be/environments/develop/promote/%0A/",
    ],
)
def test_a_control_character_in_a_pages_version_is_the_404_page(world, client, path):
    client.force_login(world["rita"])
    for response in (client.get(path), client.post(path)):
        assert response.status_code == 404
        assert response.templates[0].name == "404.html"


def test_a_version_with_metadata_still_has_its_pages(world, client):
    release = make_release(world["service"], "2026.02.2-hotfix-auth.1")
    client.force_login(world["rita"])
    assert client.get(release.get_absolute_url()).status_code == 200
    assert world["api"].get(f"/api/v1/services/nexo-be/releases/{release.version}/").status_code == 200


def test_a_request_django_cannot_read_is_a_json_400_under_api(world):
    response = world["api"].post(
        "/api/v1/promotions/", b"--x\r\nbroken", content_type="multipart/form-data; boundary=x"
    )
    assert_refused(response, 400)


@pytest.mark.parametrize("content", ["json", "multipart"])
def test_a_body_larger_than_the_portal_reads_is_a_json_400_saying_so(world, settings, content):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    before = counts()
    response = world["api"].post(
        "/api/v1/promotions/", {**REQUESTS["/api/v1/promotions/"], "reason": "x" * 2000}, format=content
    )
    assert_refused(response, 400, text="larger than the 1000 bytes the portal reads")
    assert counts() == before


def test_a_form_with_more_fields_than_the_portal_reads_is_the_400_page_saying_so(world, client, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 10
    client.force_login(world["rita"])
    response = client.post(
        "/services/nexo-be/environments/develop/promote/2026.02.1/", {f"field{n}": "x" for n in range(20)}
    )
    assert response.status_code == 400
    assert "more than the 10 fields the portal reads" in response.content.decode()


# --- webhooks: signed, yet malformed ---------------------------------------------------------------

ARGOCD_EVENT = {"trigger": "on-deployed", "application": "nexo-be-develop", "revision": "c" * 40}


def deliver_to_argocd(body, timestamp=None):
    body = body if isinstance(body, bytes) else json.dumps(body).encode()
    timestamp = str(int(time.time())) if timestamp is None else timestamp
    return Client().post(
        "/api/v1/webhooks/argocd/",
        body,
        content_type="application/json",
        HTTP_X_NEXO_TIMESTAMP=timestamp,
        HTTP_X_NEXO_SIGNATURE=f"sha256={signature_for(SECRET, timestamp, body)}",
    )


@pytest.mark.parametrize("version", ["2026.02.\uff15", "\u0662\u0660\u0662\u0666.02.7"])
def test_a_version_in_digits_of_another_script_is_a_400_and_registers_nothing(world, version):
    """Fullwidth or Arabic-Indic digits: int() reads them, but no URL, image tag or Git ref takes them."""
    from releases.models import Release

    before = list(Release.objects.values_list("pk", flat=True))
    response = world["api"].post(
        "/api/v1/releases/", {**REQUESTS["/api/v1/releases/"], "version": version}, format="json"
    )
    assert_refused(response, field="version", text="not a CalVer version")
    assert list(Release.objects.values_list("pk", flat=True)) == before
    assert world["api"].get("/api/v1/releases/").status_code == 200


@pytest.mark.parametrize("digits", [13, 310, 1000, 4300, 4301, 10000])
def test_an_argocd_timestamp_of_too_many_digits_is_a_401(world, digits):
    assert_refused(deliver_to_argocd(ARGOCD_EVENT, timestamp="1" * digits), 401, text="Unix time in seconds")


@pytest.mark.parametrize("timestamp", ["-1", " 1770000000", "1770000000.5", "١٧٧٠٠٠٠٠٠٠"])
def test_an_argocd_timestamp_is_ascii_digits_only(world, timestamp):
    assert_refused(deliver_to_argocd(ARGOCD_EVENT, timestamp=timestamp), 401, text="Unix time in seconds")


def nested(depth):
    return b'{"trigger": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("depth", [40, 5000, 200_000])
def test_deeply_nested_json_to_the_argocd_webhook_is_a_400(world, depth):
    assert_refused(deliver_to_argocd(nested(depth)), 400, text="nested more than 32 levels deep")


PAGERDUTY_EVENT = {
    "event": {
        "event_type": "incident.triggered",
        "occurred_at": "2026-03-03T13:00:05Z",
        "data": {
            "id": "PGR0VU2",
            "type": "incident",
            "html_url": "https://acme.pagerduty.com/incidents/PGR0VU2",
            "created_at": "2026-03-03T13:00:00Z",
            "title": "Checkout errors above 5 %",
            "service": {"id": "PF9KMXH", "summary": "nexo-be", "type": "service_reference"},
            "priority": {"id": "PSO75BM", "summary": "P1", "type": "priority_reference"},
            "urgency": "high",
        },
    }
}


def deliver_to_pagerduty(body):
    body = body if isinstance(body, bytes) else json.dumps(body).encode()
    signature = "v1=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return Client().post(
        "/api/v1/incidents/pagerduty/", body, content_type="application/json", HTTP_X_PAGERDUTY_SIGNATURE=signature
    )


def pagerduty_event_with(path, value):
    event = copy.deepcopy(PAGERDUTY_EVENT)
    *parents, last = path.split(".")
    container = event
    for key in parents:
        container = container[key]
    container[last] = value
    return event


def test_a_well_formed_pagerduty_event_is_still_recorded(world):
    response = deliver_to_pagerduty(PAGERDUTY_EVENT)
    assert response.status_code == 202, response.content
    assert response.json()["outcome"].startswith("created incident")


@pytest.mark.parametrize("depth", [40, 5000, 200_000])
def test_deeply_nested_json_to_the_pagerduty_webhook_is_a_400(world, depth):
    assert_refused(deliver_to_pagerduty(nested(depth)), 400, text="nested more than 32 levels deep")


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("event.data.service", "nexo-be", "event.data.service must be an object, got a string."),
        ("event.data.priority", "P1", "event.data.priority must be an object, got a string."),
        ("event.data.service.summary", ["nexo-be"], "event.data.service.summary must be a string, got an array."),
        ("event.data.priority.summary", {"P": 1}, "event.data.priority.summary must be a string, got an object."),
        ("event.data.urgency", ["high"], "event.data.urgency must be a string, got an array."),
        ("event.event_type", ["incident.triggered"], "event.event_type must be a string, got an array."),
        ("event.data.id", {"id": 1}, "event.data.id must be a string, got an object."),
        ("event.data.id", "P" * 101, "event.data.id is longer than 100 characters."),
        ("event.data.title", 42, "event.data.title must be a string, got a number."),
        ("event.data.html_url", "https://x.example/" + "a" * 200, "event.data.html_url is longer than 200"),
        ("event.data.created_at", "2026-03-03T13:00:00", "event.data.created_at must be an ISO 8601 date and time"),
        ("event.data.created_at", "2026-13-03T13:00:00Z", "event.data.created_at must be an ISO 8601 date and time"),
        ("event.occurred_at", "0001-01-01T00:00:00+05:00", "event.occurred_at must be an ISO 8601 date and time"),
        ("event.occurred_at", True, "event.occurred_at must be a string, got true or false."),
    ],
)
def test_a_signed_pagerduty_event_with_a_field_of_the_wrong_type_is_a_400_naming_it(world, path, value, message):
    assert_refused(deliver_to_pagerduty(pagerduty_event_with(path, value)), 400, text=message)


def test_a_pagerduty_event_in_a_form_is_refused_as_not_json(world):
    body = b"event=incident.triggered"
    signature = "v1=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    response = Client().post(
        "/api/v1/incidents/pagerduty/",
        body,
        content_type="application/x-www-form-urlencoded",
        HTTP_X_PAGERDUTY_SIGNATURE=signature,
    )
    assert_refused(response, 415)


# --- the schema says what the API accepts ---------------------------------------------------------


@pytest.fixture(scope="module")
def openapi():
    from drf_spectacular.generators import SchemaGenerator

    return SchemaGenerator().get_schema(request=None, public=True)


def parameter(openapi, path, name, method="get"):
    return next(p for p in openapi["paths"][path][method]["parameters"] if p["name"] == name)


def test_the_schema_bounds_page_and_page_size(openapi):
    assert parameter(openapi, "/api/v1/releases/", "page_size")["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 500,
    }
    assert parameter(openapi, "/api/v1/promotions/", "page")["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 2**31 - 1,
    }


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("page_size=0", "page_size"),
        ("page_size=501", "page_size"),
        ("page_size=-1", "page_size"),
        ("page_size=1.5", "page_size"),
        ("page_size=" + "9" * 5000, "page_size"),
        ("page_size=²", "page_size"),
        ("page=0", "page"),
        ("page=last", "page"),
        ("page=" + "1" * 5000, "page"),
        ("page=2147483648", "page"),
    ],
)
def test_page_and_page_size_outside_the_schemas_range_are_a_400(world, query, field):
    assert_refused(world["api"].get(f"/api/v1/releases/?{query}"), field=field, text="Give a")


def test_a_page_past_the_last_is_a_404_and_leading_zeros_are_a_number(world):
    assert world["api"].get("/api/v1/releases/?page=002").status_code == 404
    assert world["api"].get("/api/v1/releases/?page=01&page_size=0500").status_code == 200


def test_a_page_past_the_last_is_the_apis_error_body_naming_the_last_page(world):
    make_release(world["service"], "2026.02.2")
    make_release(world["service"], "2026.02.3")
    body = assert_refused(world["api"].get("/api/v1/releases/?page=3&page_size=2"), 404, field="page")
    assert body["code"] == "not_found"
    assert body["errors"] == [
        {"field": "page", "code": "not_found", "message": "There is no page 3: give a page number from 1 to 2."}
    ]


def string_query_parameters(openapi):
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            for candidate in operation.get("parameters", []):
                if candidate["in"] == "query" and candidate["schema"].get("type") == "string":
                    yield path, method, candidate


def test_the_schema_says_every_string_query_parameter_is_non_empty_and_one_line(openapi):
    described = list(string_query_parameters(openapi))
    assert len(described) > 20
    for path, method, candidate in described:
        schema = candidate["schema"]
        assert schema.get("minLength") == 1 or "enum" in schema, (path, method, candidate)
        if candidate["name"] == "ordering":  # the names the list offers (nexo_portal.lib.ordering)
            assert schema["pattern"].startswith("^-?("), (path, method, candidate)
        elif not {"enum", "format"} & set(schema):
            assert schema["pattern"] == r"^[^\u0000-\u001f\u007f-\u009f]*$", (path, method, candidate)


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/api/v1/releases/", "service"),
        ("/api/v1/releases/", "ordering"),
        ("/api/v1/promotions/", "environment"),
        ("/api/v1/promotions/", "state"),
        ("/api/v1/matrix/", "team"),
        ("/api/v1/dora/", "service"),
        ("/api/v1/audit/", "actor"),
        ("/api/v1/audit/export/", "since"),
        ("/api/v1/releases/", "page"),
    ],
)
def test_an_empty_query_parameter_is_refused_everywhere_alike(world, path, parameter):
    response = world["api"].get(f"{path}?{parameter}=")
    assert_refused(response, field=parameter, text="Give a value, or leave the parameter out.")


def test_the_pages_filter_forms_still_send_empty_fields(world, client):
    client.force_login(world["rita"])
    assert client.get("/?team=&service=").status_code == 200
    assert client.get("/audit/?service=&actor=").status_code == 200


def test_the_api_helpers_import_first_without_a_cycle_through_drf_settings():
    """DRF reads DEFAULT_PARSER_CLASSES while rest_framework.views is imported: manage.py spectacular failed."""
    import os
    import subprocess
    import sys

    code = "import django; django.setup(); import nexo_portal.lib.api, nexo_portal.lib.middleware"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "nexo_portal.settings"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_schema_says_what_a_request_body_may_hold(openapi):
    schemas = openapi["components"]["schemas"]
    promotion = schemas["RequestPromotionRequest"]
    assert promotion["additionalProperties"] is False
    assert promotion["properties"]["reason"]["pattern"] == (
        r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$"
    )
    assert promotion["properties"]["version"]["pattern"].startswith("^[2-9][0-9]{3}")
    assert schemas["RegisterBuildRequest"]["properties"]["committed_at"]["pattern"].startswith("^(2005-04-(0[7-9]")
    assert schemas["CheckResultRequest"]["properties"]["url"]["oneOf"][0]["pattern"].startswith("^https?://")
    assert parameter(openapi, "/api/v1/dora/", "start")["schema"]["pattern"] == r"^(19[7-9][0-9]|2[0-9]{3})-"


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("https://ci.example/runs/1?tab=e2e#top", 201),
        ("https://" + "a" * 300 + ".example/", 201),
        ("javascript:alert(1)", 400),
        ("ftp://ci.example/report", 400),
        ("https://", 400),
    ],
)
def test_a_verification_reports_link_is_http_or_https(world, url, status):
    response = world["api"].post("/api/v1/verifications/", {**REQUESTS["/api/v1/verifications/"], "url": url})
    assert response.status_code == status, response.content


def test_the_schema_declares_the_webhooks_signature_headers(openapi):
    argocd = {p["name"]: p for p in openapi["paths"]["/api/v1/webhooks/argocd/"]["post"]["parameters"]}
    assert argocd["X-Nexo-Timestamp"]["in"] == "header"
    assert argocd["X-Nexo-Timestamp"]["schema"]["pattern"] == "^[0-9]{1,12}$"
    assert argocd["X-Nexo-Signature"]["required"] is True
    assert parameter(openapi, "/api/v1/incidents/pagerduty/", "X-PagerDuty-Signature", "post")["in"] == "header"


@pytest.mark.parametrize("key", ["abcdefgh\x00ijklmnop", "ABCDEFGH-ijklmnop\x7f", "'; select 1; --abcdef"])
def test_a_session_cookie_django_never_issued_is_no_session(world, client, key):
    client.cookies["sessionid"] = key
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_a_session_django_issued_still_signs_in(world, client):
    client.force_login(world["rita"])
    assert client.get("/").status_code == 200


def counts():
    from audit.models import AuditEvent
    from releases.models import CheckResult, Promotion, Release

    return [model.objects.count() for model in (AuditEvent, CheckResult, Promotion, Release)]


@pytest.mark.parametrize("content", ["json", "multipart"])
@pytest.mark.parametrize("path", list(REQUESTS))
def test_a_field_the_api_does_not_read_is_a_400_naming_it_and_writes_nothing(world, path, content):
    before = counts()
    response = world["api"].post(path, {**REQUESTS[path], "enviroment": "qa"}, format=content)
    assert_refused(response, field="enviroment", text="Unknown field: this request reads only ")
    assert counts() == before


def test_a_cancel_with_an_unknown_field_is_refused_and_leaves_the_promotion_waiting(world, settings):
    from releases.models import Promotion

    requested = world["api"].post(
        "/api/v1/promotions/", {"service": "nexo-be", "version": "2026.02.1", "environment": "develop"}, format="json"
    )
    assert requested.status_code == 201, requested.content
    promotion = Promotion.objects.get(pk=requested.json()["id"])
    state = promotion.state

    response = world["api"].post(f"/api/v1/promotions/{promotion.pk}/cancel/", {"reason": "typo"}, format="json")

    assert_refused(response, field="reason", text="this request reads only comment")
    promotion.refresh_from_db()
    assert promotion.state == state != "cancelled"


@pytest.mark.parametrize(
    ("checks", "complaint"),
    [
        ("e2e", "Give the checks as a list of names"),
        (["e2e", 7], "Give the checks as a list of names"),
        (["E2E"], "“E2E” is not a check name: use lowercase letters"),
        (["e2e suite"], "“e2e suite” is not a check name"),
        (["e2e", "e2e"], "Name each check once."),
    ],
)
def test_an_environment_requires_checks_by_names_ci_can_report(environments, checks, complaint):
    qa = Environment.objects.get(name="qa")  # as the admin reads it
    qa.required_checks = checks
    with pytest.raises(ValidationError) as refused:
        qa.full_clean()
    assert complaint in str(refused.value.message_dict["required_checks"])
    qa.required_checks = ["e2e", "performance"]
    qa.full_clean()
