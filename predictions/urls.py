from django.urls import path

from .views import api, health, pages

urlpatterns = [
    path("", pages.project_index, name="project-index"),
    path("projects/<slug:slug>/", pages.project_demo, name="project-demo"),
    path("api/projects/", api.project_list, name="api-project-list"),
    path("api/projects/<slug:slug>/", api.project_detail, name="api-project-detail"),
    path("api/projects/<slug:slug>/predict", api.predict, name="api-predict"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
]
