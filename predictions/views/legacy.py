"""The original service's HTTP API, for its clients: `GET /models` and
`GET /models/<name>/input_shape`. Errors are `{"error": "..."}`, as that service wrote them."""

from asgiref.sync import sync_to_async
from django.http import JsonResponse
from django.views.decorators.http import require_GET

from .. import selectors
from ..openapi.declare import LEGACY_ERRORS, api_operation, json_reply
from .api import allowed_origin, request_token, with_cors


def _error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


@api_operation(
    summary="The public projects' names (the original service's API)",
    tags=("legacy",),
    responses={200: json_reply("The public projects' slugs.", "LegacyModelList")},
)
@require_GET
async def model_list(request):
    """The public projects' slugs."""
    projects = await sync_to_async(selectors.project_list_public)()
    return JsonResponse({"models": [project.slug for project in projects]})


@api_operation(
    summary="A model's input size (the original service's API)",
    tags=("legacy",),
    path_parameters={
        "name": "A project slug, or the file name or S3 key (may hold `/`) of exactly one "
        "project's active model file."
    },
    responses={200: json_reply("The input size.", "LegacyInputShape"), **LEGACY_ERRORS},
    token=True,
)
@require_GET
async def input_shape(request, name):
    """The active version's input size: 404 for an unknown or ambiguous name, 403 for a
    private project without its token, 503 while the project has no version in service."""
    try:
        project = await sync_to_async(selectors.project_find_by_model_name)(name=name)
    except selectors.AmbiguousModelName as exc:
        return _error(str(exc), 404)
    if project is None:
        return _error(f"No project or model file is named {name!r}.", 404)
    if not project.token_matches(request_token(request)):
        return _error("This project is private: send its token as ?token=.", 403)
    if project.model is None:
        return _error(f"The project {project.slug!r} has no model in service yet.", 503)
    height, width, channels = project.model.input_shape
    response = JsonResponse({"width": width, "height": height, "channels": channels})
    return with_cors(response, allowed_origin(request, project))
