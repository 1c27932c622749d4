"""Top-level URLs: the admin and the predictions app (pages, API, health)."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("predictions.urls")),
]
