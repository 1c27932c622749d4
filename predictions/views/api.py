"""The JSON API: project listings and predictions. Scripts and other sites call it without CSRF."""

import time

from asgiref.sync import sync_to_async
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from .. import selectors, serving
from ..inference.errors import HTTP_STATUS, error_reply


def request_token(request) -> str | None:
    """A private project's token: `?token=` or `Authorization: Bearer <token>`."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.GET.get("token")


async def _authorized_project(request, slug):
    """The project, or the error response a client gets instead (404 unknown, 403 bad token)."""
    project = await sync_to_async(selectors.project_get_info)(slug=slug)
    if project is None:
        return None, JsonResponse(
            error_reply(None, "not_found", f"No project named {slug!r}."), status=404
        )
    if not project.token_matches(request_token(request)):
        message = "This project is private: send its token as ?token= or a Bearer header."
        return None, JsonResponse(error_reply(None, "forbidden", message), status=403)
    return project, None


@require_GET
async def project_list(request):
    projects = await sync_to_async(selectors.project_list_public)()
    return JsonResponse({"projects": [project.as_json() for project in projects]})


@require_GET
async def project_detail(request, slug):
    project, refusal = await _authorized_project(request, slug)
    return refusal or JsonResponse(project.as_json())


@csrf_exempt
async def predict(request, slug):
    received = time.perf_counter()
    if request.method != "POST":
        message = "Send the image with POST."
        return JsonResponse(error_reply(None, "bad_request", message), status=405)
    project, refusal = await _authorized_project(request, slug)
    if refusal:
        return refusal
    reply = await serving.answer_http(request, project=project, received=received)
    status = 200 if reply["type"] == "prediction" else HTTP_STATUS[reply["code"]]
    return JsonResponse(reply, status=status)
