"""Property-based runs of schemathesis over the generated OpenAPI schema, with every default check.

No answer may be a 5xx or contradict the schema (status codes, content types, bodies, headers);
schema-invalid requests must be refused, and schema-valid ones never with a 400 (the API answers
404 for a name that does not exist and 409 for a rule, nexo_portal.lib.api).

First each operation alone: JSON, form-encoded and multipart bodies, query strings, the webhooks'
signature headers. Then sequences along the schema's links: a build registered is read, promoted,
rolled back to and reported on; a promotion requested is read, approved, rejected or cancelled.

FUZZ_EXAMPLES sets the budget: examples per operation, and linked scenarios (default 25, about half
a minute here); CI runs 200 (.ci/run). Generation is derandomized, so a run is repeatable.
"""

import json
import os

import pytest
import schemathesis
from django.contrib.auth.models import Group
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, transaction
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from environments.defaults import DEFAULT_ENVIRONMENTS
from nexo_portal.models import ApiToken
from tests.factories import make_release, make_service

pytestmark = pytest.mark.django_db

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))

# Fuzz dictionaries (schemathesis draws schema-valid entries for valid requests, the others for
# invalid ones): names that exist (the world fixture's), so requests get past "unknown service" and
# the links have answers to follow; and control characters, which the schema refuses in every string
# but a generator rarely tries (a NUL in a form-encoded environment was a 500 found after 2,267 cases).
# None starts with a blank (\x85 is one): requests refuses such a header value.
HOSTILE = ["\x00", "a\x00b", "\x07", "\x1b[31m", "\x7f", "c1\x85"]
DICTIONARIES = {
    "dictionaries": {
        "services": {"values": ["nexo-be", "nexo\x00be"]},
        "environments": {"values": [environment["name"] for environment in DEFAULT_ENVIRONMENTS] + ["qa\x00"]},
        "versions": {"values": ["2026.02.1", "2026.02.1\x00"]},
        "hostile": {"values": HOSTILE},
    },
    "generation": {"dictionaries": {"string": {"dictionary": "hostile", "probability": 0.2}}},
    "parameters": {
        **{
            f"{location}.service": {"dictionary": "services", "probability": 0.5}
            for location in ("body", "query", "path")
        },
        **{
            f"{location}.environment": {"dictionary": "environments", "probability": 0.5}
            for location in ("body", "query")
        },
        **{f"{location}.version": {"dictionary": "versions", "probability": 0.5} for location in ("body", "path")},
    },
}

# The schema the portal serves at /api/v1/schema/, built the same way (no database needed).
schema = schemathesis.openapi.from_dict(
    json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True))),
    config=SchemathesisConfig.from_dict(DICTIONARIES),
)
schema.app = WSGIHandler()

HYPOTHESIS = {"deadline": None, "suppress_health_check": list(HealthCheck), "derandomize": True}
# The API token of the running test, which the world fixture issues.
CURRENT_TOKEN = {}


@schema.auth(refresh_interval=None)
class PortalToken:
    """Every call carries the test's token, as explicit credentials: schemathesis' ignored_auth check
    then also sends each operation without them and with made-up ones, expecting a 401."""

    def get(self, case, context):
        return CURRENT_TOKEN.get("plain", "none-yet")  # asked once at collection, before any test

    def set(self, case, token, context):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}


@pytest.fixture
def world(environments, redis_connection, settings, rita):
    settings.ARGOCD_WEBHOOK_SECRET = "schemathesis-secret"
    settings.INCIDENT_WEBHOOK_SECRET = "schemathesis-secret"
    settings.API_TOKEN_THROTTLE_RATE = "100000/minute"
    service = make_service("nexo-be", team="backend-team")
    make_release(service, "2026.02.1")
    rita.groups.add(Group.objects.get(name="sre-team"))
    _, CURRENT_TOKEN["plain"] = ApiToken.objects.issue(
        name="schemathesis", scopes=["register", "promote", "report", "read"], all_services=True
    )
    # Like Django's test client: keep the test's database connection open across requests.
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    yield
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)


@schema.parametrize()
@settings(max_examples=FUZZ_EXAMPLES, **HYPOTHESIS)
def test_no_operation_answers_5xx_or_contradicts_its_schema(case, world):
    case.call_and_validate()


class Scenarios(schema.as_state_machine()):
    """Each scenario starts from the world fixture's data: what it made is rolled back after it, so that
    Hypothesis, replaying a scenario, gets the same answers (the next steps are drawn from them)."""

    def setup(self):
        self.savepoint = transaction.atomic()
        self.savepoint.__enter__()

    def teardown(self):
        transaction.set_rollback(True)
        self.savepoint.__exit__(None, None, None)


def test_no_sequence_of_linked_operations_answers_5xx_or_contradicts_the_schema(world):
    Scenarios.run(settings=settings(max_examples=FUZZ_EXAMPLES, stateful_step_count=6, **HYPOTHESIS))
