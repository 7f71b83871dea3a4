"""One error body for every 4xx the API answers, naming the field and what to fix:

    {"status": 400, "code": "invalid", "message": "commit_sha: Enter the full 40-character commit SHA.",
     "errors": [{"field": "commit_sha", "code": "invalid", "message": "Enter the full 40-character commit SHA."}]}

`field` is null when the error is about the request as a whole. The status says what kind of fix:
400 when anything sent does not match the OpenAPI schema; otherwise 404 when the request names a
service, environment, team or release that does not exist (code `does_not_exist` or `unknown_release`),
and 409 when a rule refuses the values given (code `conflict`: a version dated next month, a start after
the end, a rejection without a comment) or the state: a request the schema accepts is never a 400.
The API's parsers (`parsers`) refuse control characters and over-deep JSON before anything reads a body.
"""

from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, serializers, status
from rest_framework.utils import html
from rest_framework.views import exception_handler as drf_exception_handler

from . import text
from .errors import Refused

API_PREFIX = "/api/"


def is_api(request):
    """Under /api/ every answer, errors included, is the API's JSON."""
    return request.path_info.startswith(API_PREFIX)


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


class KnownFieldsOnly(serializers.Serializer):
    """A serializer mixin for request bodies: a key the serializer does not read is a 400 naming it.

    The schema says so (additionalProperties: false, nexo_portal.api_schema), and a misspelt field
    (`verison`, `enviroment`) silently ignored would take its default instead of what the caller meant.
    """

    def to_internal_value(self, data):
        if hasattr(data, "keys"):
            writable = sorted(name for name, field in self.fields.items() if not field.read_only)
            unknown = sorted(set(data.keys()) - set(writable))
            if unknown:
                raise exceptions.ValidationError(
                    {name: [f"Unknown field: this request reads only {', '.join(writable)}."] for name in unknown}
                )
        return super().to_internal_value(data)


class BooleanField(serializers.BooleanField):
    """A request body's boolean: JSON's true or false, nothing else, as the schema says (type: boolean).

    DRF's own takes text and numbers in JSON too ("yes", "false", 1, 0), which the schema refuses: what
    a client reads in the schema and what the API took differed. A form's fields are all text, so there
    the words forms use for one still are (true, false, on, yes, 1, 0, in any case: DRF's), and no others.
    """

    default_error_messages = {
        "invalid": "Give true or false, a JSON boolean: not text nor a number.",
        "null": "Give true or false, a JSON boolean: not text nor a number.",
    }

    def get_value(self, dictionary):
        value = super().get_value(dictionary)
        if html.is_html_input(dictionary) and isinstance(value, str):
            if value.lower() in self.TRUE_VALUES:
                return True
            if value.lower() in self.FALSE_VALUES:
                return False
        return value

    def to_internal_value(self, data):
        if isinstance(data, bool):
            return data
        self.fail("invalid")


# Validation codes of input that matches the schema but names nothing, or that a rule refuses.
NOT_FOUND_CODES = frozenset({"does_not_exist", "unknown_release"})
CONFLICT_CODE = "conflict"


def _status_of_invalid(errors):
    codes = {code for _, code, _ in errors}
    if codes <= NOT_FOUND_CODES:
        return status.HTTP_404_NOT_FOUND
    if codes <= NOT_FOUND_CODES | {CONFLICT_CODE}:
        return status.HTTP_409_CONFLICT
    return status.HTTP_400_BAD_REQUEST


def _is_leaf(detail):
    return isinstance(detail, dict) and set(detail) == {"message", "code"}


def _flatten(detail, field=None):
    """Yield (field, code, message) for every message in a DRF error detail, however nested."""
    if _is_leaf(detail):
        yield field, str(detail["code"]), str(detail["message"])
    elif isinstance(detail, dict):
        for key, value in detail.items():
            name = None if key in ("non_field_errors", "detail") else (f"{field}.{key}" if field else str(key))
            yield from _flatten(value, name if name is not None else field)
    elif isinstance(detail, list):
        for index, value in enumerate(detail):
            nested = isinstance(value, (dict, list)) and not _is_leaf(value)
            yield from _flatten(value, f"{field}[{index}]" if nested and field else field)
    else:
        yield field, getattr(detail, "code", "invalid"), str(detail)


def body(status_code, code, errors):
    message = "; ".join(f"{field}: {text}" if field else text for field, _, text in errors)
    return {
        "status": status_code,
        "code": code,
        "message": message,
        "errors": [{"field": field, "code": error_code, "message": text} for field, error_code, text in errors],
    }


def error_response(status_code, code, message, field=None):
    """A 4xx/5xx Response in the one error shape, for views that answer errors themselves."""
    from rest_framework.response import Response

    return Response(body(status_code, code, [(field, code, message)]), status=status_code)


def exception_handler(exc, context):
    if isinstance(exc, text.Unreadable):
        exc = exceptions.ValidationError({exc.field: [str(exc)]} if exc.field else [str(exc)])
    elif isinstance(exc, Refused):
        if exc.field:
            exc = exceptions.ValidationError({exc.field: [str(exc)]}, code=CONFLICT_CODE)
        else:
            exc = exceptions.PermissionDenied(str(exc)) if exc.forbidden else Conflict(str(exc))
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "Not found.")
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    errors = list(_flatten(exc.get_full_details() if hasattr(exc, "get_full_details") else response.data))
    code = errors[0][1] if len(errors) == 1 or not isinstance(exc, exceptions.ValidationError) else None
    if isinstance(exc, exceptions.ValidationError):
        response.status_code = _status_of_invalid(errors)
        code = code or {404: "does_not_exist", 409: CONFLICT_CODE}.get(response.status_code, "invalid")
    response.data = body(response.status_code, code, errors)
    return response


@csrf_exempt
@login_not_required
def not_found(request, exception=None):
    """Anyone: a JSON 404 for unknown paths under /api/, instead of a redirect to the sign-in page."""
    return JsonResponse(
        body(404, "not_found", [(None, "not_found", f"No API endpoint at {request.path}.")]), status=404
    )
