from django.urls import path

from . import views

app_name = "releases"

urlpatterns = [
    path("", views.board, name="board"),
    path("services/<slug:service>/releases/<str:version>/", views.release_detail, name="release-detail"),
    path("promotions/<int:pk>/", views.promotion_detail, name="promotion-detail"),
    path("dora/", views.dora_report, name="dora"),
    path("dora/export.csv", views.dora_export_csv, name="dora-export-csv"),
    path("dora/export.json", views.dora_export_json, name="dora-export-json"),
]
