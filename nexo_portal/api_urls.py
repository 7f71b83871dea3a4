"""Every route of the REST API, under /api/v1/."""

from csp.decorators import csp_update
from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from audit import api as audit
from releases import api_views as releases
from releases import github_events, slack_interactions
from releases.dora import api as dora

from .lib import api as api_errors

app_name = "api"

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    # ReDoc styles itself with inline <style> and searches in a blob: worker; everything else stays
    # the portal's own (its logo from the Redocly CDN is refused: images from the portal only).
    path(
        "redoc/",
        csp_update({"style-src": ["'self'", "'unsafe-inline'"], "worker-src": ["'self'", "blob:"]})(
            SpectacularRedocView.as_view(url_name="api:schema")
        ),
        name="redoc",
    ),
    path("releases/", releases.ReleaseListCreateView.as_view(), name="release-list"),
    path(
        "services/<slug:service>/releases/<version:version>/",
        releases.ReleaseDetailView.as_view(),
        name="release-detail",
    ),
    path("promotions/", releases.PromotionListCreateView.as_view(), name="promotion-list"),
    path("promotions/<int:pk>/", releases.PromotionDetailView.as_view(), name="promotion-detail"),
    path("promotions/<int:pk>/approve/", releases.ApproveView.as_view(), name="promotion-approve"),
    path("promotions/<int:pk>/reject/", releases.RejectView.as_view(), name="promotion-reject"),
    path("promotions/<int:pk>/cancel/", releases.CancelView.as_view(), name="promotion-cancel"),
    path("promotions/<int:pk>/stop/", releases.StopView.as_view(), name="promotion-stop"),
    path("rollbacks/", releases.RollbackView.as_view(), name="rollback"),
    path("matrix/", releases.MatrixView.as_view(), name="matrix"),
    path("verifications/", releases.CheckResultCreateView.as_view(), name="verification-create"),
    path("webhooks/argocd/", releases.ArgoCDWebhookView.as_view(), name="argocd-webhook"),
    path("webhooks/github/", github_events.GitHubWebhookView.as_view(), name="github-webhook"),
    path("dora/", dora.DoraMetricsView.as_view(), name="dora"),
    path("slo/", releases.SLOView.as_view(), name="slo"),
    path("audit/", audit.AuditEventListView.as_view(), name="audit-list"),
    path("audit/export/", releases.AuditExportView.as_view(), name="audit-export"),
    path("incidents/pagerduty/", dora.PagerDutyWebhookView.as_view(), name="pagerduty-webhook"),
    path("slack/interactions/", slack_interactions.SlackInteractionsView.as_view(), name="slack-interactions"),
    # [\s\S], not ".": a path holding a line break (%0A) is an unknown endpoint too.
    re_path(r"^[\s\S]*$", api_errors.not_found, name="not-found"),
]
