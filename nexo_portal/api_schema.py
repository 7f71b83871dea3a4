"""OpenAPI additions drf-spectacular cannot infer: the one error body every 4xx answers with, the text
every query parameter and body field accepts (not empty, no control characters: nexo_portal.lib), and
the links from what an answer names to what may be done with it next."""

from .lib import dates, text

DATE_FORMATS = ("date", "date-time")


def _describe_text(schema, pattern):
    """The pattern a free string accepts, or the years a date accepts."""
    if schema.get("format") in DATE_FORMATS:
        schema.setdefault("pattern", dates.SCHEMA_PATTERN)
    elif not {"enum", "format", "pattern"} & set(schema):
        schema["pattern"] = pattern


ERROR_SCHEMA = {
    "type": "object",
    "required": ["status", "code", "message", "errors"],
    "properties": {
        "status": {"type": "integer", "description": "The HTTP status, repeated."},
        "code": {
            "type": "string",
            "description": "A machine-readable reason, e.g. invalid, not_authenticated, conflict.",
        },
        "message": {"type": "string", "description": "Every error in one sentence, each prefixed by its field."},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "code", "message"],
                "properties": {
                    "field": {
                        "type": "string",
                        "nullable": True,
                        "description": "The field to fix; null for the request as a whole.",
                    },
                    "code": {"type": "string"},
                    "message": {"type": "string", "description": "What to fix."},
                },
            },
        },
    },
}

STANDARD_ERRORS = {
    "400": "The request does not match this schema: `errors` names each field and what to fix.",
    "401": "No valid session or API token (or, for webhooks, no valid signature).",
    "403": "Not allowed: the token lacks the scope or the service, or the promotion policy refuses.",
    "404": "Nothing there, or the request names a service, environment, team or release that does not exist.",
    "405": "This method is not accepted here.",
    "409": "A rule refuses it: the promotion's state or policy, a freeze, what is registered already, or values "
    "that contradict each other or the calendar (`errors` names the field when one is at fault).",
    "429": "Too many calls with this API token; retry after the time in Retry-After.",
}


def describe_query_parameters(result, generator, request, public):
    for path in result.get("paths", {}).values():
        for operation in path.values():
            for parameter in operation.get("parameters", []):
                schema = parameter.get("schema", {})
                if parameter["in"] != "query" or schema.get("type") != "string" or "enum" in schema:
                    continue
                schema["minLength"] = max(schema.get("minLength", 0), 1)
                _describe_text(schema, text.LINE_PATTERN)
    return result


def describe_body_text(result, generator, request, public):
    """Every free string of a request body may span lines but holds no other control character.

    A body holds only the keys its schema describes (additionalProperties: false): the serializers
    refuse any other with a 400 naming it (nexo_portal.lib.api.KnownFieldsOnly).
    """
    for name, component in result.get("components", {}).get("schemas", {}).items():
        if not name.endswith("Request"):  # COMPONENT_SPLIT_REQUEST: these are what clients send
            continue
        component.setdefault("additionalProperties", False)
        for schema in component.get("properties", {}).values():
            if schema.get("type") == "string":
                _describe_text(schema, text.TEXT_PATTERN)
    return result


def add_error_responses(result, generator, request, public):
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    error_content = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path in result.get("paths", {}).values():
        for operation in path.values():
            responses = operation.setdefault("responses", {})
            for status, description in STANDARD_ERRORS.items():
                responses.setdefault(status, {"description": description})
            if "requestBody" in operation:
                media_types = ", ".join(operation["requestBody"]["content"])
                responses.setdefault("415", {"description": f"The body is not one of {media_types}, or unreadable."})
            for status, response in responses.items():
                if status.startswith("4") and "content" not in response:
                    response["content"] = error_content
    return result


_PROMOTION = {"id": "$response.body#/id"}
_RELEASE = {"service": "$response.body#/service", "version": "$response.body#/version"}
_ON_PROMOTION = {
    "ApprovePromotion": {"operationId": "promotions_approve_create", "parameters": _PROMOTION},
    "RejectPromotion": {"operationId": "promotions_reject_create", "parameters": _PROMOTION},
    "CancelPromotion": {"operationId": "promotions_cancel_create", "parameters": _PROMOTION},
}
_TO_PROMOTION = {
    "GetPromotion": {"operationId": "promotions_retrieve", "parameters": _PROMOTION},
    **_ON_PROMOTION,
}
_TO_RELEASE = {
    "GetRelease": {"operationId": "services_releases_retrieve", "parameters": _RELEASE},
    "PromoteRelease": {"operationId": "promotions_create", "requestBody": _RELEASE},
    "RollBackToRelease": {"operationId": "rollbacks_create", "requestBody": _RELEASE},
    "ReportCheck": {"operationId": "verifications_create", "requestBody": _RELEASE},
}
# (path, method, statuses): the links of those answers.
LINKS = [
    ("/api/v1/releases/", "post", ("200", "201"), _TO_RELEASE),
    ("/api/v1/promotions/", "post", ("201",), _TO_PROMOTION),
    ("/api/v1/rollbacks/", "post", ("201",), _TO_PROMOTION),
    ("/api/v1/promotions/{id}/", "get", ("200",), _ON_PROMOTION),
    ("/api/v1/promotions/{id}/approve/", "post", ("200",), _TO_PROMOTION),
]


def add_links(result, generator, request, public):
    """A registered build can be read, promoted, rolled back to and reported on; a promotion decided on."""
    for path, method, statuses, links in LINKS:
        responses = result["paths"][path][method]["responses"]
        for status in statuses:
            responses[status]["links"] = {name: dict(link) for name, link in links.items()}
    return result
