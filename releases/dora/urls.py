from django.urls import path

from . import views

app_name = "dora"

urlpatterns = [
    path("", views.dora_report, name="report"),
    path("export.csv", views.dora_export_csv, name="export-csv"),
    path("export.json", views.dora_export_json, name="export-json"),
]
