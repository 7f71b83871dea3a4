"""Project-level pages: the health endpoint used by load balancers and the demo script, /metrics for
Prometheus, the 400 and 404 pages."""

import hmac

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import BadRequest, RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.views import defaults
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from releases.metrics import PipelineCollector
from releases.worker import live_workers

from .lib import api, metrics
from .lib.queues import redis_connection


@login_not_required
@require_GET
@never_cache
def health(request):
    """Open to anyone: says whether the database and Redis answer, and how many workers are alive.

    503 only when the database does not answer: that is when a load balancer should send
    people elsewhere. Without Redis the pages and the API still work (transitions leave the
    next job to the reconciler), so the portal stays in service and says it is degraded. No
    worker alive (`workers`: 0; null without Redis) changes neither: this may be the web's liveness
    probe, and restarting the web brings no worker back. Operators watch `nexo_workers` on /metrics.
    """
    checks, workers = {}, None
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception:
        checks["database"] = "unavailable"
    try:
        redis = redis_connection()
        redis.ping()
        checks["redis"] = "ok"
        workers = live_workers(redis)
    except Exception:
        checks["redis"] = "unavailable"
    status = "unavailable" if checks["database"] != "ok" else "ok" if checks["redis"] == "ok" else "degraded"
    return JsonResponse(
        {"status": status, "checks": checks, "workers": workers}, status=503 if status == "unavailable" else 200
    )


@login_not_required
@require_GET
@never_cache
def prometheus_metrics(request):
    """Prometheus only: `Authorization: Bearer <METRICS_TOKEN>`. Unset, /metrics does not exist (404).

    Every process's counters and histograms (PROMETHEUS_MULTIPROC_DIR), and the promotions and the
    queue as they are now (docs/observability.md).
    """
    if not settings.METRICS_TOKEN:
        return HttpResponse("Not found: set METRICS_TOKEN to serve /metrics.\n", status=404, content_type="text/plain")
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.METRICS_TOKEN.encode()):
        response = HttpResponse("Send Authorization: Bearer <METRICS_TOKEN>.\n", status=401, content_type="text/plain")
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    body, content_type = metrics.exposition([PipelineCollector()])
    return HttpResponse(body, content_type=content_type)


def _too_much(exception):
    """What to send instead, when Django refused to read more of the request than its limits
    (its own messages name settings the sender cannot change)."""
    if isinstance(exception, RequestDataTooBig):
        return (
            f"The request body is larger than the {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes the portal reads: "
            "send less (a changelog or comment that long belongs in a link)."
        )
    if isinstance(exception, TooManyFieldsSent):
        return f"The request sends more than the {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} fields the portal reads."
    if isinstance(exception, TooManyFilesSent):
        return f"The request sends more than the {settings.DATA_UPLOAD_MAX_NUMBER_FILES} files the portal reads."
    return ""


def bad_request(request, exception):
    """The 400 page, in the portal's layout, saying what was wrong with the request; JSON under /api/."""
    message = str(exception) if isinstance(exception, BadRequest) else _too_much(exception)
    if api.is_api(request):
        text = message or "The request could not be read: check its headers and body."
        return JsonResponse(api.body(400, "invalid", [(None, "invalid", text)]), status=400)
    return render(request, "400.html", {"message": message}, status=400)


def not_found(request, exception):
    """The 404 page; under /api/ (any version, any path) the API's JSON error instead."""
    if api.is_api(request):
        return api.not_found(request, exception)
    return defaults.page_not_found(request, exception)
