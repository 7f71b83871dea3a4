from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.urls import include, path

from . import views
from .auth import LocalSignInForm

admin.site.site_header = "Nexo Release Portal"
admin.site.site_title = "Nexo Release Portal"
admin.site.index_title = "Operator console"

urlpatterns = [
    path("healthz", views.health, name="health"),
    path("metrics", views.prometheus_metrics, name="metrics"),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(authentication_form=LocalSignInForm, redirect_authenticated_user=True),
        name="login",
    ),
    # Open: signing out after the session ended (the page stayed open) has nothing left to end; asking
    # to sign in first would then send the person to the sign-out URL, which answers GET with a 405.
    path("accounts/logout/", login_not_required(auth_views.LogoutView.as_view()), name="logout"),
    path("accounts/", include("social_django.urls", namespace="social")),
    path("admin/rq/", include("django_rq.urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", include("nexo_portal.api_urls")),
    path("audit/", include("audit.urls")),
    path("dora/", include("releases.dora.urls")),
    path("", include("releases.urls")),
]
handler400 = "nexo_portal.views.bad_request"
handler404 = "nexo_portal.views.not_found"
