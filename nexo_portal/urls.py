from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from releases.api_dora import DoraMetricsView, PagerDutyWebhookView

from . import views

admin.site.site_header = "Nexo Release Portal"
admin.site.site_title = "Nexo Release Portal"
admin.site.index_title = "Operator console"

urlpatterns = [
    path("healthz", views.health, name="health"),
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/", include("social_django.urls", namespace="social")),
    path("admin/rq/", include("django_rq.urls")),
    path("admin/", admin.site.urls),
    path("api/v1/dora/", DoraMetricsView.as_view(), name="api-dora"),
    path("api/v1/incidents/pagerduty/", PagerDutyWebhookView.as_view(), name="api-pagerduty-webhook"),
    path("", include("releases.urls")),
]
