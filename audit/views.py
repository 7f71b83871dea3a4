"""The audit log for people: filter it, page through it, and see when its chain was last verified."""

from django.core.paginator import Paginator
from django.shortcuts import render
from django.views.decorators.http import require_GET

from .forms import AuditFilterForm
from .models import AuditEvent, ChainVerification

PAGE_SIZE = 50


@require_GET
def log(request):
    """Any signed-in user: the whole log is open to everyone who may sign in, by design."""
    form = AuditFilterForm(request.GET)
    chain = ChainVerification.latest()
    if not form.is_valid():
        return render(request, "audit/log.html", {"form": form, "page": None, "chain": chain}, status=400)
    page = Paginator(form.filter(AuditEvent.objects.order_by("-id")), PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "form": form,
        "page": page,
        "query": form.query_string(),
        "chain": chain,
        "why_not_per_promotion": form.why_not_per_promotion(),
    }
    return render(request, "audit/log.html", context)
