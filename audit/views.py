"""The audit log for people: filter it, page through it, and see when its chain was last verified."""

from django.core.paginator import InvalidPage
from django.shortcuts import render
from django.views.decorators.http import require_GET

from nexo_portal.lib import paging

from .checkpoints import chain_status
from .forms import AuditFilterForm
from .models import AuditEvent

PAGE_SIZE = 50


@require_GET
def log(request):
    """Any signed-in user: the whole log is open to everyone who may sign in, by design."""
    form = AuditFilterForm(request.GET)
    chain = chain_status()
    if not form.is_valid():
        return render(request, "audit/log.html", {"form": form, "page": None, "chain": chain}, status=400)
    context = {"form": form, "query": form.query_string(), "chain": chain}
    try:
        page = paging.page_of(form.filter(AuditEvent.objects.order_by("-id")), PAGE_SIZE, request.GET.get("page"))
    except InvalidPage as no_such_page:
        return render(request, "audit/log.html", {**context, "page": None, "no_such_page": no_such_page}, status=404)
    context.update(page=page, why_not_per_promotion=form.why_not_per_promotion())
    return render(request, "audit/log.html", context)
