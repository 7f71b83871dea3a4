"""Project-level pages: the health endpoint used by load balancers and the demo script, and the 400 page."""

from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import BadRequest
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django_rq import get_connection


@login_not_required
@require_GET
@never_cache
def health(request):
    """Open to anyone: says whether the database and Redis answer, nothing more."""
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception:  # noqa: BLE001 - any failure means "not ok", the detail stays in the logs
        checks["database"] = "unavailable"
    try:
        get_connection("default").ping()
        checks["redis"] = "ok"
    except Exception:  # noqa: BLE001
        checks["redis"] = "unavailable"
    healthy = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if healthy else "degraded", "checks": checks}, status=200 if healthy else 503)


def bad_request(request, exception):
    """The 400 page, in the portal's layout, saying what was wrong with the request."""
    message = str(exception) if isinstance(exception, BadRequest) else ""
    return render(request, "400.html", {"message": message}, status=400)
