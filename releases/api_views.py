"""The REST API for CI and integrations. Views parse, call one domain function, answer.

Who may call what is stated on each view: a signed-in person (session) or an API token with
the named scope; the promotion rules themselves are checked by `releases.policy`.
"""

from datetime import UTC, datetime

from django import forms
from django.conf import settings
from django.db.models import Prefetch
from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django_filters import fields as filter_fields
from django_filters import rest_framework as filters
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from audit import api as audit_api
from audit.models import AuditEvent
from environments.models import Environment
from nexo_portal.lib import api as api_errors
from nexo_portal.lib import dates
from nexo_portal.lib.parsers import JSONParser
from nexo_portal.lib.scopes import only_readable, readable_service_ids, require_service, requires_scope, token_of

from . import audit_export, board, deployment_events, image_gate, registration, serializers, slo, transitions
from .models import CheckResult, Promotion, PromotionState, Release, Service, StepRun

ERRORS = {
    400: OpenApiResponse(description="Invalid input: `errors` names each field and what to fix."),
    401: OpenApiResponse(description="No valid session or API token."),
    403: OpenApiResponse(description="Not allowed: wrong scope, another service, or the policy refuses."),
}


# --- releases -----------------------------------------------------------------------------------


class StrictFilterForm(forms.Form):
    """A date or yes/no filter given without a usable value is a mistake to report, not to drop silently."""

    EXPECTED = {
        forms.DateTimeField: "an ISO 8601 date-time, e.g. 2026-02-01T00:00:00Z",
        forms.NullBooleanField: "true or false",
        forms.ChoiceField: "one of the listed values",
    }

    def clean(self):
        cleaned = super().clean()
        for name, field in self.fields.items():
            expected = next((text for kind, text in self.EXPECTED.items() if isinstance(field, kind)), None)
            if expected and name in self.data and cleaned.get(name) in (None, "", []) and name not in self.errors:
                self.add_error(name, forms.ValidationError(f"Give {expected}.", code="invalid"))
            elif isinstance(cleaned.get(name), datetime):
                if not dates.in_range(cleaned[name]):
                    self.add_error(name, forms.ValidationError(dates.OUT_OF_RANGE, code="invalid"))
                    continue
                # ISO 8601 allows offsets PostgreSQL refuses (beyond ±15:59); the instant is what matters.
                cleaned[name] = cleaned[name].astimezone(UTC)
        return cleaned


class NameField(filter_fields.ModelChoiceField):
    """A service or environment by its name; one that does not exist is a 404 naming it (nexo_portal.lib.api),
    not an empty list that looks like nothing happened there."""

    def to_python(self, value):
        try:
            return super().to_python(value)
        except forms.ValidationError as error:
            # The message stays a template with the name as a parameter: django-filter formats it
            # again, and a name with a % in it is text, not a format.
            error.code = "does_not_exist"
            raise


class NameFilter(filters.ModelChoiceFilter):
    field_class = NameField

    def __init__(self, *, what, **kwargs):
        kwargs.setdefault("field_name", what)
        super().__init__(
            to_field_name="name",
            error_messages={"invalid_choice": f"There is no {what} called “%(value)s”."},
            **kwargs,
        )


class ReleaseFilter(filters.FilterSet):
    service = NameFilter(what="service", queryset=Service.objects.all(), help_text="Only this service's releases.")
    environment = NameFilter(
        what="environment",
        queryset=Environment.objects.all(),
        method="filter_environment",
        help_text="Only releases that were deployed in this environment.",
    )
    registered_after = filters.IsoDateTimeFilter(field_name="registered_at", lookup_expr="gte")
    registered_before = filters.IsoDateTimeFilter(field_name="registered_at", lookup_expr="lt")
    hotfix = filters.BooleanFilter(field_name="is_hotfix")

    class Meta:
        model = Release
        fields = []
        form = StrictFilterForm

    def filter_environment(self, queryset, name, value):
        return queryset.filter(deployments__environment=value).distinct()


class ReleaseListCreateView(generics.ListAPIView):
    """List releases (any signed-in person; tokens need `read`) or register a build (tokens need `register`)."""

    serializer_class = serializers.ReleaseSerializer
    filterset_class = ReleaseFilter
    ordering_fields = ["registered_at", "committed_at", "version"]
    # As text, 2026.02.10 would come before 2026.02.9 (nexo_portal.lib.ordering).
    ordering_columns = {"version": ["year", "month", "build"]}
    ordering = ["-registered_at"]

    def get_permissions(self):
        scope = "register" if self.request.method == "POST" else "read"
        return [IsAuthenticated(), requires_scope(scope)()]

    def get_queryset(self):
        return only_readable(self.request, Release.objects.select_related("service", "fixes"))

    @extend_schema(
        request=serializers.RegisterBuildSerializer,
        responses={
            201: serializers.RegisteredBuildSerializer,
            200: OpenApiResponse(
                serializers.RegisteredBuildSerializer,
                description="The same build was registered before: the original's answer, its automatic promotion "
                "(or why it waits) included.",
            ),
            409: OpenApiResponse(
                description="The version exists with another digest, or the build is registered with another "
                "version or other details (committed_at, changelog, hotfix, fixes)."
            ),
            **ERRORS,
        },
        summary="Register a build",
        description="Idempotent on (service, commit_sha, image_digest): a retry returns the same release, with the "
        "automatic promotion into the first environment or why it waits, as the first answer did; a retry whose "
        "details differ from the registered ones is a 409 naming them. Without "
        "`version`, the next CalVer build of the month is allocated. Answers the version and the tags to push.",
    )
    def post(self, request):
        serializer = serializers.RegisterBuildSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        require_service(request, data["service"], "register")
        result = registration.register_build(
            data["service"],
            commit_sha=data["commit_sha"],
            image_digest=data["image_digest"],
            committed_at=data["committed_at"],
            changelog=data["changelog"],
            is_hotfix=data["hotfix"],
            fixes=data.get("fixes"),
            version=data.get("version"),
            actor=request.user,
        )
        release = result.release
        release.created, release.promotion, release.promotion_waits = result.created, result.promotion, result.waits
        release.image_requirements = result.image_requirements
        body = serializers.RegisteredBuildSerializer(release).data
        return Response(body, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)


class ReleaseDetailView(generics.RetrieveAPIView):
    """One release and its promotions across environments (any signed-in person; tokens need `read`
    and, when limited to services, one of the release's service)."""

    serializer_class = serializers.ReleaseDetailSerializer
    permission_classes = [IsAuthenticated, requires_scope("read")]

    def get_object(self):
        promotions = Promotion.objects.select_related("service", "release", "environment").order_by(
            "environment__position", "-requested_at"
        )
        release = get_object_or_404(
            Release.objects.select_related("service", "fixes").prefetch_related(
                Prefetch("promotions", queryset=promotions)
            ),
            service__name=self.kwargs["service"],
            version=self.kwargs["version"],
        )
        require_service(self.request, release.service)
        return release


# --- promotions -------------------------------------------------------------------------------------


class PromotionFilter(filters.FilterSet):
    service = NameFilter(what="service", queryset=Service.objects.all())
    environment = NameFilter(what="environment", queryset=Environment.objects.all())
    state = filters.MultipleChoiceFilter(choices=Promotion._meta.get_field("state").choices)
    kind = filters.ChoiceFilter(choices=Promotion._meta.get_field("kind").choices)

    class Meta:
        model = Promotion
        fields = []
        form = StrictFilterForm


def promotions_with_details():
    """Promotions as PromotionSerializer shows them, in a fixed number of queries: with the step runs of
    those under way (`active_runs`, oldest first), of which `held_up` says what holds them up."""
    active_runs = StepRun.objects.filter(promotion__state__in=PromotionState.active()).order_by("created_at", "id")
    return (
        Promotion.objects.with_details()
        .select_related("previous_release")
        .prefetch_related("approvals__user", Prefetch("runs", queryset=active_runs, to_attr="active_runs"))
    )


class PromotionListCreateView(generics.ListAPIView):
    """List promotions (tokens need `read`; a token limited to services lists theirs) or request one
    (tokens need `promote`; people as the policy allows)."""

    serializer_class = serializers.PromotionSerializer
    filterset_class = PromotionFilter
    ordering_fields = ["requested_at", "finished_at"]
    ordering = ["-requested_at"]

    def get_permissions(self):
        scope = "promote" if self.request.method == "POST" else "read"
        return [IsAuthenticated(), requires_scope(scope)()]

    def get_queryset(self):
        return only_readable(self.request, promotions_with_details())

    @extend_schema(
        request=serializers.RequestPromotionSerializer,
        responses={
            201: serializers.PromotionSerializer,
            409: OpenApiResponse(description="A promotion rule refuses it now."),
            **ERRORS,
        },
        summary="Request a promotion",
    )
    def post(self, request):
        serializer = serializers.RequestPromotionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        require_service(request, data["service"], "promote")
        promotion = transitions.request_promotion(
            data["release"], data["environment"], request.user, is_emergency=data["emergency"], reason=data["reason"]
        )
        return Response(
            serializers.PromotionSerializer(promotions_with_details().get(pk=promotion.pk)).data, status=201
        )


class RollbackView(APIView):
    """Roll a service back in an environment (tokens need `promote`; people as the policy allows)."""

    permission_classes = [IsAuthenticated, requires_scope("promote")]

    @extend_schema(
        request=serializers.RollbackSerializer,
        responses={
            201: serializers.PromotionSerializer,
            409: OpenApiResponse(description="Nothing to roll back to, or `running` no longer runs there."),
            **ERRORS,
        },
        summary="Request a rollback",
    )
    def post(self, request):
        serializer = serializers.RollbackSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        require_service(request, data["service"], "promote")
        promotion = transitions.request_rollback(
            data["service"], data["environment"], request.user, release=data["release"], expected=data.get("running")
        )
        return Response(
            serializers.PromotionSerializer(promotions_with_details().get(pk=promotion.pk)).data, status=201
        )


class PromotionDetailView(generics.RetrieveAPIView):
    """One promotion with the time of every step and its approvals (tokens need `read` and, when
    limited to services, the promotion's)."""

    serializer_class = serializers.PromotionSerializer
    permission_classes = [IsAuthenticated, requires_scope("read")]

    def get_queryset(self):
        return promotions_with_details()

    def get_object(self):
        promotion = super().get_object()
        require_service(self.request, promotion.service)
        return promotion


class PromotionActionView(APIView):
    """Base for approve, reject and cancel: load the promotion, call one transition, answer with it."""

    input_serializer = serializers.DecisionSerializer
    scope = "promote"

    def get_permissions(self):
        return [IsAuthenticated(), requires_scope(self.scope)()]

    def act(self, promotion, actor, comment):
        raise NotImplementedError

    def post(self, request, pk):
        promotion = get_object_or_404(Promotion.objects.with_details(), pk=pk)
        require_service(request, promotion.service, self.scope)
        serializer = self.input_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token = token_of(request)
        self.via = decided_via(token)
        self.token_creator_id = token.created_by_id if token is not None else None
        self.act(promotion, request.user, serializer.validated_data["comment"])
        return Response(serializers.PromotionSerializer(promotions_with_details().get(pk=pk)).data)


def decided_via(token):
    """For the audit of a decision: the personal token it came through and who created that token (a
    superuser may make one for someone else), or None for a session."""
    if token is None:
        return None
    creator = token.created_by.get_username() if token.created_by_id else "manage.py"
    return {
        "via": f"the API with personal token {token.name}, created by {creator}",
        "token": token.prefix,
        "token_created_by": creator,
    }


@extend_schema(
    request=serializers.DecisionSerializer,
    responses={200: serializers.PromotionSerializer, 409: None, **ERRORS},
    summary="Approve",
)
class ApproveView(PromotionActionView):
    """Approve (people only: a session or a personal token, never a CI token; the approver groups decide)."""

    def act(self, promotion, actor, comment):
        transitions.approve(promotion, actor, comment, via=self.via, token_creator_id=self.token_creator_id)


@extend_schema(
    request=serializers.RejectionSerializer,
    responses={200: serializers.PromotionSerializer, 409: None, **ERRORS},
    summary="Reject",
)
class RejectView(PromotionActionView):
    """Reject with a required comment (people only, like approving)."""

    input_serializer = serializers.RejectionSerializer

    def act(self, promotion, actor, comment):
        transitions.reject(promotion, actor, comment, via=self.via, token_creator_id=self.token_creator_id)


@extend_schema(
    request=serializers.DecisionSerializer,
    responses={200: serializers.PromotionSerializer, 409: None, **ERRORS},
    summary="Cancel",
)
class CancelView(PromotionActionView):
    """Cancel before the GitOps commit (the requester, an approver, an administrator, or the token that asked)."""

    def act(self, promotion, actor, comment):
        transitions.cancel(promotion, actor, comment)


@extend_schema(
    request=serializers.StopSerializer,
    responses={200: serializers.PromotionSerializer, 409: None, **ERRORS},
    summary="Stop the soak and roll back",
    description='The promotion fails at verification ("stopped by <user>: <comment>") and the environment\'s '
    "rollback rule applies: an automatic rollback where the policy says so; elsewhere request one "
    "(`POST /rollbacks/`).",
)
class StopView(PromotionActionView):
    """Stop a soaking promotion (deployed or verifying) with a required comment: people who may roll back
    the service there (a session or a personal token, never a CI token)."""

    def act(self, promotion, actor, comment):
        transitions.stop(promotion, actor, comment)


# --- verification results from CI -----------------------------------------------------------------


class CheckResultCreateView(generics.CreateAPIView):
    """CI reports an E2E, performance or security result (tokens need `report`)."""

    serializer_class = serializers.CheckResultSerializer
    permission_classes = [IsAuthenticated, requires_scope("report")]
    queryset = CheckResult.objects.all()

    def perform_create(self, serializer):
        data = serializer.validated_data
        require_service(self.request, data["release"].service, "report")
        serializer.instance = registration.report_check_result(
            data["release"],
            data["environment"],
            name=data["name"],
            passed=data["passed"],
            url=data.get("url", ""),
            summary=data.get("summary", ""),
            actor=self.request.user,
        )


# --- Argo CD Notifications webhook -------------------------------------------------------------------


class ArgoCDWebhookView(APIView):
    """Argo CD Notifications (on-deployed, on-sync-failed).

    No session or token: the HMAC signature is the credential.
    """

    authentication_classes = []
    permission_classes = []
    throttle_classes = []
    parser_classes = [JSONParser]

    @extend_schema(
        request=serializers.DeploymentEventSerializer,
        parameters=[
            OpenApiParameter(
                "X-Nexo-Timestamp",
                str,
                OpenApiParameter.HEADER,
                required=True,
                pattern=r"^[0-9]{1,12}$",
                description="When it was sent, in Unix seconds; more than five minutes away from now is refused.",
            ),
            OpenApiParameter(
                "X-Nexo-Signature",
                str,
                OpenApiParameter.HEADER,
                required=True,
                description="sha256=<hex HMAC-SHA256(ARGOCD_WEBHOOK_SECRET, timestamp + '.' + body)>.",
            ),
        ],
        responses={
            202: serializers.DeploymentEventResultSerializer,
            400: OpenApiResponse(description="The body is not the documented JSON."),
            401: OpenApiResponse(description="Unsigned, badly signed or stale delivery."),
            409: OpenApiResponse(description="Replayed delivery."),
            503: OpenApiResponse(description="ARGOCD_WEBHOOK_SECRET is not set."),
        },
        summary="Argo CD deployment events",
        description="Headers: `X-Nexo-Timestamp: <unix seconds>` and "
        "`X-Nexo-Signature: sha256=<hex HMAC-SHA256(ARGOCD_WEBHOOK_SECRET, timestamp + '.' + body)>`.",
    )
    def post(self, request):
        body, timestamp = request.body, request.headers.get("X-Nexo-Timestamp", "")
        try:
            signature = deployment_events.check_signature(
                settings.ARGOCD_WEBHOOK_SECRET,
                timestamp,
                request.headers.get("X-Nexo-Signature", ""),
                body,
            )
        except deployment_events.WebhookRefused as refusal:
            return api_errors.error_response(refusal.status, "signature", str(refusal))
        serializer = serializers.DeploymentEventSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            event = deployment_events.apply(serializer.validated_data, signature, timestamp)
        except deployment_events.WebhookRefused as refusal:
            return api_errors.error_response(refusal.status, "replayed", str(refusal))
        return Response(serializers.DeploymentEventResultSerializer(event).data, status=status.HTTP_202_ACCEPTED)


# --- the version matrix --------------------------------------------------------------------------------


class MatrixView(APIView):
    """Every service × environment: version, deployed at, health, verification, drift (tokens need `read`;
    a token limited to services sees their rows only)."""

    permission_classes = [IsAuthenticated, requires_scope("read")]

    @extend_schema(
        parameters=[serializers.MatrixQuerySerializer],
        responses={200: serializers.MatrixRowSerializer(many=True)},
        summary="The version matrix",
    )
    def get(self, request):
        query = serializers.MatrixQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        team, service = query.validated_data.get("team"), query.validated_data.get("service")
        built = board.build_board(
            request.user,
            team=team.name if team else "",
            service=service.name if service else "",
            only=readable_service_ids(request),
        )
        rows = [
            {
                "service": row.service.name,
                "team": row.service.team.name if row.service.team_id else None,
                "environments": [_matrix_cell(cell, built.argocd_configured) for cell in row.cells],
            }
            for row in built.rows
        ]
        return Response(serializers.MatrixRowSerializer(rows, many=True).data)


def _matrix_cell(cell, argocd_configured):
    health = cell.health.label if cell.health else None
    return {
        "environment": cell.environment.name,
        "version": cell.version or None,
        "deployed_at": cell.deployed_iso or None,
        "health": health if argocd_configured or not cell.version else "not configured",
        "verification": cell.verification.label if cell.verification else None,
        "builds_behind": cell.builds_behind,
        "drift": cell.drift.label if cell.drift else None,
        "drift_warning": (cell.builds_behind or 0) > cell.environment.drift_warning_builds,
        "builds_behind_first": cell.builds_behind_first,
        "far_behind": cell.far_behind is not None,
        "overdue": cell.overdue is not None,
        "gitops_tag": cell.gitops_tag,
        "gitops_tag_promotion": cell.gitops_tag_promotion,
        "waiting": cell.waiting_label,
        "waiting_promotion": cell.waiting.pk if cell.waiting else None,
        "waiting_is_emergency": bool(cell.waiting and cell.waiting.is_emergency),
        "hold": cell.hold_reason,
        "image_requirements": image_gate.requirements(cell.environment),
    }


# --- the audit log in the reference docs' shape -------------------------------------------------------


class AuditExportView(generics.GenericAPIView):
    """The filtered log as one JSON array, oldest first, in the reference docs' shape: one record per
    completed promotion, or with `per=step` one per event (tokens need `read`; a token limited to
    services gets their events only)."""

    permission_classes = [IsAuthenticated, requires_scope("read")]
    serializer_class = serializers.AuditExportRecordSerializer
    pagination_class = None
    filter_backends = []

    @extend_schema(
        parameters=[
            *audit_api.FILTERS,
            OpenApiParameter(
                "per",
                str,
                enum=list(audit_export.Per.CHOICES),
                description=(
                    "promotion (default): one record per completed promotion; step: one per audit event. "
                    "Per promotion, an actor or an action other than promotion.verified or promotion.failed "
                    "is refused (409): it selects events, not promotions."
                ),
            ),
        ],
        responses={200: serializers.AuditExportRecordSerializer(many=True)},
    )
    def get(self, request):
        per = request.query_params.get("per", audit_export.Per.PROMOTION)
        if per not in audit_export.Per.CHOICES:
            raise ValidationError({"per": [audit_export.Per.REFUSAL]})
        form = audit_api.filter_form(request)
        if per == audit_export.Per.PROMOTION and (refusal := form.why_not_per_promotion()):
            # Each parameter is one the schema accepts: together they contradict each other (409).
            raise api_errors.Conflict({"per": [refusal]})
        events = audit_api.filtered(request, AuditEvent.objects.order_by("id"), form)
        return StreamingHttpResponse(audit_export.export_json(events, per), content_type="application/json")


# --- promotion SLOs ----------------------------------------------------------------------------------


class SLOView(APIView):
    """Any signed-in person, or a token with `read`: each environment's promotion SLOs over the last `days`
    days (releases/slo.py), with the median time of each stage. A token limited to services gets their
    promotions' figures only."""

    permission_classes = [IsAuthenticated, requires_scope("read")]

    @extend_schema(
        parameters=[serializers.SLOQuerySerializer],
        responses={200: serializers.SLOReportSerializer},
        summary="Promotion SLOs per environment",
    )
    def get(self, request):
        query = serializers.SLOQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        report = slo.report(query.validated_data["days"], services=readable_service_ids(request))
        body = {
            "start": report.start,
            "end": report.end,
            "days": report.days,
            "environments": [row.as_dict() for row in report.environments],
        }
        return Response(serializers.SLOReportSerializer(body).data)
