"""The audit log over the API: a paginated, filterable read, with what its reader is told of the chain."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers
from rest_framework.exceptions import ErrorDetail
from rest_framework.permissions import IsAuthenticated
from rest_framework.settings import api_settings

from nexo_portal.lib.scopes import readable_service_names, requires_scope

from .checkpoints import chain_status
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


class ChainSerializer(serializers.Serializer):
    """What a reader of the log is told of its chain (audit.checkpoints.ChainStatus)."""

    intact = serializers.BooleanField(allow_null=True)
    verified_at = serializers.DateTimeField(allow_null=True)
    verified_through = serializers.IntegerField(allow_null=True)
    broken_at = serializers.IntegerField(allow_null=True)
    summary = serializers.CharField()


# ChainSerializer as a page's schema shows it: a paginator describes its page in plain OpenAPI.
CHAIN_SCHEMA = {
    "type": "object",
    "description": (
        "The chain of the whole log, as the last verification the portal signed found it (docs/api.md). "
        "intact, verified_at, verified_through and broken_at are null when there is none: not verified yet, "
        "or its row was changed by someone without the portal's key (summary says which)."
    ),
    "required": ["intact", "verified_at", "verified_through", "broken_at", "summary"],
    "properties": {
        "intact": {"type": "boolean", "nullable": True, "description": "false: the chain is broken."},
        "verified_at": {"type": "string", "format": "date-time", "nullable": True},
        "verified_through": {
            "type": "integer",
            "nullable": True,
            "description": "The newest event it read: those after it were recorded since and are not verified yet.",
        },
        "broken_at": {
            "type": "integer",
            "nullable": True,
            "description": "The lowest event where it found a problem: from it on, nothing is vouched for.",
        },
        "summary": {"type": "string", "description": "What it found, in words, as the audit page says it."},
    },
}


class ChainPagination(api_settings.DEFAULT_PAGINATION_CLASS):
    """The API's pages, with what a reader of the events is told of their chain beside them (`chain`)."""

    def get_paginated_response(self, data):
        response = super().get_paginated_response(data)
        response.data["chain"] = ChainSerializer(chain_status()).data
        return response

    def get_paginated_response_schema(self, schema):
        page = super().get_paginated_response_schema(schema)
        page["properties"]["chain"] = CHAIN_SCHEMA
        page["required"] = [*page["required"], "chain"]
        return page


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
    """The audit log, newest first, and what the last verification says of its chain (any signed-in
    person; tokens need `read`; a token limited to services gets their events only, and the chain of
    the whole log)."""

    serializer_class = AuditEventSerializer
    pagination_class = ChainPagination
    permission_classes = [IsAuthenticated, requires_scope("read")]
    filter_backends = []

    def get_queryset(self):
        return filtered(self.request, AuditEvent.objects.order_by("-id"))

    @extend_schema(parameters=FILTERS)
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)
