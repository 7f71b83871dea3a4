"""DORA over the API: the metrics (GitLab-style parameters) and the PagerDuty incident webhook."""

from django.contrib.auth.models import Group
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from environments.models import Environment
from nexo_portal.lib import dates
from nexo_portal.lib.api import CONFLICT_CODE, error_response
from nexo_portal.lib.parsers import JSONParser
from nexo_portal.lib.scopes import readable_service_ids, require_service, requires_scope
from releases.models import Service

from . import metrics, pagerduty


def _name_field(queryset, what):
    return serializers.SlugRelatedField(
        slug_field="name",
        queryset=queryset,
        required=False,
        error_messages={"does_not_exist": f"There is no {what} called “{{value}}”."},
    )


class DoraQuerySerializer(serializers.Serializer):
    """Query parameters of GET /api/v1/dora/; all optional."""

    service = _name_field(Service.objects.all(), "service")
    team = _name_field(Group.objects.all(), "team")
    environment = _name_field(Environment.objects.all(), "environment")
    start = serializers.DateField(required=False, help_text="First day, YYYY-MM-DD; default: 89 days before end.")
    end = serializers.DateField(
        required=False, help_text="Last day (included), YYYY-MM-DD, today at the latest; default: today."
    )
    interval = serializers.ChoiceField(
        choices=metrics.Interval.choices, default=metrics.Interval.ALL, help_text="all, weekly or monthly buckets."
    )

    def validate_start(self, day):
        if not dates.in_range(day):
            raise serializers.ValidationError(dates.OUT_OF_RANGE)
        return day

    validate_end = validate_start

    def validate(self, data):
        try:
            data["period"] = metrics.Period.resolve(data.pop("start", None), data.pop("end", None))
        except metrics.ReportError as error:
            # Dates the schema accepts that contradict the calendar (an end after today, a start after the
            # end): a 409, as nexo_portal.lib.api says; `field` names the one at fault where there is one.
            detail = {error.field: [str(error)]} if error.field else str(error)
            raise serializers.ValidationError(detail, code=CONFLICT_CODE) from error
        return data


class DoraMetricsView(APIView):
    """Any signed-in person, or a token with `read`: the five DORA metrics for a scope and period.

    A token limited to services gets figures of those services only, and is refused another's."""

    permission_classes = [IsAuthenticated, requires_scope("read")]

    @extend_schema(parameters=[DoraQuerySerializer], responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        query = DoraQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        if query.validated_data.get("service") is not None:
            require_service(request, query.validated_data["service"])
        try:
            report = metrics.report(**query.validated_data, only=readable_service_ids(request))
        except metrics.ReportError as error:
            raise serializers.ValidationError(str(error), code=CONFLICT_CODE) from error
        return Response(report.as_dict())


class PagerDutyWebhookView(APIView):
    """PagerDuty only, proven by the HMAC signature of a configured subscription's secret; no session, no token.

    The incident's environment is the one configured for the subscription whose secret signed the body.
    """

    authentication_classes = []
    permission_classes = [AllowAny]
    # Read only after the signature is checked, by the parser that bounds nesting and refuses control characters.
    parser_classes = [JSONParser]

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "X-PagerDuty-Signature",
                str,
                OpenApiParameter.HEADER,
                required=True,
                description="v1=<hex HMAC-SHA256 of the body>, comma-separated while a secret is rotated.",
            )
        ],
        request=OpenApiTypes.OBJECT,
        responses={
            202: OpenApiTypes.OBJECT,
            503: OpenApiResponse(description="No subscription is configured (INCIDENT_WEBHOOK_SECRET(S))."),
        },
    )
    def post(self, request):
        configured = pagerduty.subscriptions()
        if not configured:
            return error_response(
                503,
                "not_configured",
                "The incident webhook is not configured: set INCIDENT_WEBHOOK_SECRET to the subscription's secret.",
            )
        header = request.headers.get("X-PagerDuty-Signature", "")
        if not header:
            return error_response(
                401, "signature", "Unsigned request: PagerDuty sends an X-PagerDuty-Signature header."
            )
        environment_name = pagerduty.signing_environment(request.body, header, configured)
        if environment_name is None:
            return error_response(
                403, "signature", "The X-PagerDuty-Signature does not match this body and the configured secret."
            )
        environment = (
            Environment.objects.filter(name=environment_name).first()
            if environment_name
            else metrics.default_environment()
        )
        if environment is None:
            return error_response(
                503,
                "not_configured",
                f"The subscription that signed this is configured for the environment “{environment_name}”, which "
                "does not exist: fix INCIDENT_WEBHOOK_ENVIRONMENT or INCIDENT_WEBHOOK_SECRETS.",
            )
        asked = request.query_params.get("environment")
        if asked is not None and asked != environment.name:
            # The URL is not signed: a replayed delivery with another ?environment= must not move an incident.
            return error_response(
                400,
                "invalid",
                f"This delivery is signed with the secret of the subscription for {environment.name}; the URL's "
                f"?environment= is not signed and cannot file it under {asked}. Give each environment's "
                "subscription its own secret (INCIDENT_WEBHOOK_SECRETS) and drop ?environment= from the URL.",
                "environment",
            )
        try:
            incident, outcome = pagerduty.apply_event(request.data, environment)
        except pagerduty.InvalidEvent as error:
            return error_response(400, "invalid", f"Not a PagerDuty V3 incident event: {error}")
        return Response(
            {"outcome": outcome, "incident": incident.pk if incident else None}, status=status.HTTP_202_ACCEPTED
        )
