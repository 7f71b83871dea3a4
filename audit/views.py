"""The audit log for people: filter it, page through it, export it as JSON."""

from django.core.paginator import Paginator
from django.http import JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from .export import export_json
from .forms import AuditFilterForm
from .models import AuditEvent

PAGE_SIZE = 50


@require_GET
def log(request):
    """Any signed-in user: the whole log is open to everyone who may sign in, by design."""
    form = AuditFilterForm(request.GET)
    if not form.is_valid():
        return render(request, "audit/log.html", {"form": form, "page": None}, status=400)
    page = Paginator(form.filter(AuditEvent.objects.order_by("-id")), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "audit/log.html", {"form": form, "page": page, "query": form.query_string()})


@require_GET
def export(request):
    """Any signed-in user: the filtered log as a JSON array in the reference docs' shape, oldest first."""
    form = AuditFilterForm(request.GET)
    if not form.is_valid():
        return JsonResponse({"errors": form.errors.get_json_data()}, status=400)
    events = form.filter(AuditEvent.objects.order_by("id"))
    response = StreamingHttpResponse(export_json(events), content_type="application/json")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="nexo-audit-{stamp}.json"'
    return response
