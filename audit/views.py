"""The audit log for people: filter it, page through it, and see when its chain was last verified."""

from django.conf import settings
from django.core.paginator import Paginator
from django.shortcuts import render
from django.views.decorators.http import require_GET

from .checkpoints import signed_by_portal
from .forms import AuditFilterForm
from .models import AuditEvent, ChainVerification

PAGE_SIZE = 50


@require_GET
def log(request):
    """Any signed-in user: the whole log is open to everyone who may sign in, by design."""
    form = AuditFilterForm(request.GET)
    chain = _chain_status()
    if not form.is_valid():
        return render(request, "audit/log.html", {"form": form, "page": None, **chain}, status=400)
    page = Paginator(form.filter(AuditEvent.objects.order_by("-id")), PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "form": form,
        "page": page,
        "query": form.query_string(),
        "why_not_per_promotion": form.why_not_per_promotion(),
        **chain,
    }
    return render(request, "audit/log.html", context)


def _chain_status():
    """The last verification, and whether the watch would believe it: the runtime role may write its row,
    so one the portal did not sign is not shown, whatever it says."""
    chain = ChainVerification.latest()
    return {
        "chain": chain,
        "chain_signed": chain is not None and signed_by_portal(chain),
        # The reconciler verifies at its next round when the last verification is not believed.
        "next_check_seconds": settings.RECONCILE_SECONDS,
    }
