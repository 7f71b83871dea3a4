"""DORA over the API: the metrics (GitLab-style parameters) and the PagerDuty incident webhook."""

import json

from django.conf import settings
from django.contrib.auth.models import Group
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from environments.models import Environment

from . import dora, pagerduty
from .models import Service


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
    end = serializers.DateField(required=False, help_text="Last day (included), YYYY-MM-DD; default: today.")
    interval = serializers.ChoiceField(
        choices=dora.Interval.choices, default=dora.Interval.ALL, help_text="all, weekly or monthly buckets."
    )

    def validate(self, data):
        try:
            data["period"] = dora.Period.resolve(data.pop("start", None), data.pop("end", None))
        except dora.ReportError as error:
            raise serializers.ValidationError(str(error)) from error
        return data


class DoraMetricsView(APIView):
    """Any authenticated user or token: the five DORA metrics for a scope and period."""

    permission_classes = [IsAuthenticated]

    @extend_schema(parameters=[DoraQuerySerializer], responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        query = DoraQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        try:
            report = dora.report(**query.validated_data)
        except dora.ReportError as error:
            return Response({"detail": str(error)}, status=status.HTTP_400_BAD_REQUEST)
        return Response(report.as_dict())


class PagerDutyWebhookView(APIView):
    """PagerDuty only, proven by the HMAC signature of INCIDENT_WEBHOOK_SECRET; no session, no token."""

    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(request=OpenApiTypes.OBJECT, responses={202: OpenApiTypes.OBJECT})
    def post(self, request):
        secret = settings.INCIDENT_WEBHOOK_SECRET
        if not secret:
            return Response(
                {"detail": "The incident webhook is not configured: set INCIDENT_WEBHOOK_SECRET to the subscription's secret."},
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
            )
        header = request.headers.get("X-PagerDuty-Signature", "")
        if not header:
            return Response(
                {"detail": "Unsigned request: PagerDuty sends an X-PagerDuty-Signature header."},
                status=status.HTTP_401_UNAUTHORIZED,
            )
        body = request.body
        if not pagerduty.signature_is_valid(body, header, secret):
            return Response(
                {"detail": "The X-PagerDuty-Signature does not match this body and the configured secret."},
                status=status.HTTP_403_FORBIDDEN,
            )
        environment_name = request.query_params.get("environment")
        environment = (
            Environment.objects.filter(name=environment_name).first() if environment_name else dora.default_environment()
        )
        if environment is None:
            return Response(
                {"detail": f"There is no environment called “{environment_name}” (the ?environment= of the webhook URL)."},
                status=status.HTTP_400_BAD_REQUEST,
            )
        try:
            incident, outcome = pagerduty.apply_event(json.loads(body), environment)
        except (ValueError, pagerduty.InvalidEvent) as error:
            return Response({"detail": f"Not a PagerDuty V3 incident event: {error}"}, status=status.HTTP_400_BAD_REQUEST)
        return Response({"detail": outcome, "incident": incident.pk if incident else None}, status=status.HTTP_202_ACCEPTED)
