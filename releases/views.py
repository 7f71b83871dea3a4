"""Pages for people: the version matrix, a release, a promotion. Every page needs sign-in."""

from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from audit.models import AuditEvent
from environments.models import Environment

from .models import Deployment, Promotion, Release, Service


@require_GET
def board(request):
    """Any signed-in user: every service × environment with what runs there."""
    environments = list(Environment.objects.in_pipeline_order())
    services = list(Service.objects.select_related("team"))
    current = {
        (deployment.service_id, deployment.environment_id): deployment
        for deployment in Deployment.objects.current().select_related("release")
    }
    rows = [
        {"service": service, "cells": [current.get((service.pk, environment.pk)) for environment in environments]}
        for service in services
    ]
    return render(request, "releases/board.html", {"environments": environments, "rows": rows})


@require_GET
def release_detail(request, service, version):
    """Any signed-in user: one release and its journey through the environments."""
    release = get_object_or_404(Release.objects.select_related("service", "fixes"), service__name=service, version=version)
    promotions = release.promotions.select_related("environment", "requested_by").order_by("environment__position", "-requested_at")
    return render(request, "releases/release_detail.html", {"release": release, "promotions": promotions})


@require_GET
def promotion_detail(request, pk):
    """Any signed-in user: one promotion, its approvals and its audit events."""
    promotion = get_object_or_404(Promotion.objects.with_details(), pk=pk)
    approvals = promotion.approvals.select_related("user")
    events = AuditEvent.objects.for_promotion(promotion).order_by("id")
    return render(
        request, "releases/promotion_detail.html", {"promotion": promotion, "approvals": approvals, "events": events}
    )
