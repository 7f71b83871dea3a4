"""What every request goes through before any view: input no view should have to think about is refused,
and the request gets the id and context its log lines and spans carry."""

import re
import uuid

from django.core.exceptions import BadRequest
from django.http import JsonResponse

from . import context, metrics, text, tracing
from .api import body, is_api

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")


class RefuseUnreadableInput:
    """Control characters in any query string or page form are a 400 (`text`); the API's bodies are its
    parsers' to check. Under /api/ an empty query parameter is a 400 too, as the schema says (minLength 1):
    `?team=` meaning "every team" to one endpoint and "no team" to another helped nobody.

    Answers in the API's error shape under /api/, with the 400 page elsewhere.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        api = is_api(request)
        try:
            text.check_pairs(request.GET.lists(), multiline=False)
            if api:
                empty = next((name for name, values in request.GET.lists() if "" in values), None)
                if empty is not None:
                    raise text.Unreadable("Give a value, or leave the parameter out.", empty)
            if not api and request.method == "POST" and request.content_type in FORM_TYPES:
                text.check_pairs(request.POST.lists(), multiline=True)
        except text.Unreadable as refusal:
            if api:
                return JsonResponse(body(400, "invalid", [(refusal.field, "invalid", str(refusal))]), status=400)
            raise BadRequest(f"{refusal.field}: {refusal}" if refusal.field else str(refusal)) from None
        return self.get_response(request)


class RequestContext:
    """Every request gets an id (the caller's X-Request-ID when it is a sane one, else a new one), said
    back in X-Request-ID and carried by every log line and span of the request, with the user once
    known; with tracing on, the request is a span. Counts the requests answered, for /metrics."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = request.headers.get("X-Request-ID", "")
        if not REQUEST_ID.fullmatch(request_id):
            request_id = uuid.uuid4().hex
        request.request_id = request_id
        context.start(request_id=request_id)
        method = metrics.method_label(request.method)
        with tracing.span(f"{method} {request.path}", kind="server", **{"http.request.method": method}) as span:
            response = self.get_response(request)
            span.set_attribute("http.response.status_code", response.status_code)
            route = getattr(request, "resolver_match", None)
            if route is not None and route.route:
                # Named by the route, not the path: one name for every promotion's page.
                span.set_attribute("http.route", "/" + route.route)
                span.update_name(f"{method} /{route.route}")
        metrics.HTTP_REQUESTS.labels(method=method, status=metrics.status_class(response.status_code)).inc()
        response.headers["X-Request-ID"] = request_id
        return response

    def process_view(self, request, view_func, view_args, view_kwargs):
        # After every middleware has run: the session's user is known. API tokens say theirs when DRF
        # authenticates them (nexo_portal/tokens.py).
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            context.bind(user=user.get_username())
        promotion = view_kwargs.get("pk") if _names_promotion(request) else None
        if promotion is not None:
            context.bind(promotion_id=promotion)
            tracing.annotate(**{"nexo.promotion_id": promotion})
        for field in ("service", "environment"):
            if isinstance(view_kwargs.get(field), str):
                context.bind(**{field: view_kwargs[field]})
        return None


def _names_promotion(request):
    match = getattr(request, "resolver_match", None)
    return match is not None and "promotions/<int:pk>" in (match.route or "")
