"""The audit log over the API: a paginated, filterable read."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers
from rest_framework.exceptions import ErrorDetail
from rest_framework.permissions import IsAuthenticated

from nexo_portal.lib.scopes import readable_service_names, requires_scope

from .forms import AuditFilterForm
from .models import AuditAction, AuditEvent

FILTERS = [
    OpenApiParameter("service", str, description="Only this service's events."),
    OpenApiParameter("environment", str, description="Only events about this environment."),
    OpenApiParameter("actor", str, description="Part of a user name, or api-token:<name>."),
    OpenApiParameter("action", str, description="e.g. promotion.approved", enum=AuditAction.values),
    OpenApiParameter("since", OpenApiTypes.DATE, description="From this day (YYYY-MM-DD)."),
    OpenApiParameter("until", OpenApiTypes.DATE, description="Up to and including this day."),
]


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "created_at",
            "action",
            "actor",
            "service",
            "environment",
            "version",
            "promotion_id",
            "message",
            "data",
            "previous_hash",
            "hash",
        ]


def filter_form(request):
    """The request's filters, validated: a 4xx naming each bad one otherwise."""
    # An empty parameter never gets here: the API refuses it (nexo_portal.lib.middleware), though the
    # page's form reads an empty field as "any".
    form = AuditFilterForm(request.query_params)
    if not form.is_valid():
        raise serializers.ValidationError(
            {
                name: [_detail(name, error, request.query_params.get(name)) for error in errors]
                for name, errors in form.errors.as_data().items()
            }
        )
    return form


def filtered(request, events, form=None):
    """`events` as the request may read them and its filters select (`form`: its filter_form, if made)."""
    names = readable_service_names(request)
    if names is not None:
        # A token limited to services reads their events only: those about no service are left out too.
        events = events.filter(service__in=names)
    return (form or filter_form(request)).filter(events)


def _detail(name, error, value):
    # The choices are the names the log holds: one it never held is a name that does not exist there.
    if name in ("service", "environment") and error.code == "invalid_choice":
        return ErrorDetail(f"The audit log names no {name} “{value}”.", code="does_not_exist")
    return ErrorDetail(" ".join(error.messages), code=error.code or "invalid")


class AuditEventListView(generics.ListAPIView):
    """The audit log, newest first (any signed-in person; tokens need `read`; a token limited to
    services gets their events only)."""

    serializer_class = AuditEventSerializer
    permission_classes = [IsAuthenticated, requires_scope("read")]
    filter_backends = []

    def get_queryset(self):
        return filtered(self.request, AuditEvent.objects.order_by("-id"))

    @extend_schema(parameters=FILTERS)
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)
