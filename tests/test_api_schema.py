"""Property-based run of schemathesis over the generated OpenAPI schema, with a bounded number of examples.

Every operation gets generated requests (valid and invalid); no answer may be a 5xx or contradict
the schema (status codes, content types, bodies, headers), and schema-invalid input must be refused.
The one check left out is "schema-valid data is accepted": the API rightly refuses well-formed
requests for domain reasons a schema cannot express (an unknown service, a release not verified in
the environment before).
"""

import json

import pytest
import schemathesis
from django.contrib.auth.models import Group
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from nexo_portal.models import ApiToken
from tests.factories import make_release, make_service

pytestmark = pytest.mark.django_db

# The schema the portal serves at /api/v1/schema/, built the same way (no database needed).
schema = schemathesis.openapi.from_dict(
    json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True)))
)
schema.app = WSGIHandler()


@pytest.fixture
def world(environments, redis_connection, settings, rita):
    settings.ARGOCD_WEBHOOK_SECRET = "schemathesis-secret"
    settings.INCIDENT_WEBHOOK_SECRET = "schemathesis-secret"
    settings.API_TOKEN_THROTTLE_RATE = "100000/minute"
    service = make_service("nexo-be", team="backend-team")
    make_release(service, "2026.02.1")
    rita.groups.add(Group.objects.get(name="sre-team"))
    _, plain = ApiToken.objects.issue(name="schemathesis", scopes=["register", "promote", "report", "read"])
    # Like Django's test client: keep the test's database connection open across requests.
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    yield {"Authorization": f"Bearer {plain}"}
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_operation_answers_5xx_or_contradicts_its_schema(case, world):
    case.call_and_validate(headers=world, excluded_checks=[positive_data_acceptance])
