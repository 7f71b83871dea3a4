from django.urls import path

from . import views

app_name = "releases"

urlpatterns = [
    path("", views.board, name="board"),
    path("waiting/", views.waiting_for_me, name="waiting"),
    path("services/<slug:service>/releases/<version:version>/", views.release_detail, name="release-detail"),
    path(
        "services/<slug:service>/environments/<slug:environment>/promote/<version:version>/",
        views.request_promotion,
        name="request",
    ),
    path("services/<slug:service>/environments/<slug:environment>/rollback/", views.rollback, name="rollback"),
    path("promotions/<int:pk>/", views.promotion_detail, name="promotion-detail"),
    path("promotions/<int:pk>/approve/", views.approve, name="approve"),
    path("promotions/<int:pk>/reject/", views.reject, name="reject"),
    path("promotions/<int:pk>/cancel/", views.cancel, name="cancel"),
    path("holds/<int:pk>/lift/", views.lift_hold, name="lift-hold"),
    path("promotions/<int:pk>/stop/", views.stop, name="stop"),
    path("slo/", views.slo_report, name="slo"),
    path("slo/export.csv", views.slo_export_csv, name="slo-export-csv"),
    path("audit/export.json", views.audit_log_export, name="audit-export"),
]
