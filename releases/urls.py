from django.urls import path

from . import views

app_name = "releases"

urlpatterns = [
    path("", views.board, name="board"),
    path("services/<slug:service>/releases/<str:version>/", views.release_detail, name="release-detail"),
    path("promotions/<int:pk>/", views.promotion_detail, name="promotion-detail"),
]
