from django.urls import path, re_path

from .views import api, docs, health, legacy, pages

urlpatterns = [
    path("", pages.project_index, name="project-index"),
    path("projects/<slug:slug>/", pages.project_demo, name="project-demo"),
    path("api/openapi.json", docs.openapi_json, name="api-openapi"),
    path("api/asyncapi.json", docs.asyncapi_json, name="api-asyncapi"),
    path("api/docs", docs.api_docs, name="api-docs"),
    path("api/projects/", api.project_list, name="api-project-list"),
    path("api/projects/<slug:slug>/", api.project_detail, name="api-project-detail"),
    path("api/projects/<slug:slug>/predict", api.predict, name="api-predict"),
    path("api/projects/<slug:slug>/feedback", api.feedback, name="api-feedback"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
    # The original service's API (a name may hold `/`: an S3 key).
    path("models", legacy.model_list, name="legacy-model-list"),
    re_path(r"^models/(?P<name>.+)/input_shape$", legacy.input_shape, name="legacy-input-shape"),
]
