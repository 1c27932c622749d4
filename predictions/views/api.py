"""The JSON API: project listings and predictions. Scripts and other sites call it without CSRF."""

import time

from asgiref.sync import sync_to_async
from django.http import HttpResponse, JsonResponse
from django.utils.cache import patch_vary_headers
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from .. import selectors, serving
from ..inference.errors import HTTP_STATUS, error_reply
from ..origins import normalise


def request_token(request) -> str | None:
    """A private project's token: `?token=` or `Authorization: Bearer <token>`."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.GET.get("token")


# CORS by hand rather than django-cors-headers: the allowed origins are each project's, read
# from the database, which that library's (synchronous) hook cannot do under ASGI.
def allowed_origin(request, project) -> str | None:
    """The request's Origin when it is one of the project's allowed origins (browsers on
    other sites may then read the reply)."""
    origin = request.headers.get("Origin")
    if project is not None and origin and normalise(origin) in project.allowed_origins:
        return origin
    return None


def with_cors(response, origin: str | None):
    if origin:
        response["Access-Control-Allow-Origin"] = origin
    patch_vary_headers(response, ["Origin"])
    return response


def _preflight(request, project):
    """The answer to a browser's OPTIONS preflight before a cross-site POST."""
    origin = allowed_origin(request, project)
    if origin is None:
        message = "This origin is not among the project's allowed origins."
        return JsonResponse(error_reply(None, "forbidden", message), status=403)
    response = HttpResponse(status=204)
    response["Access-Control-Allow-Methods"] = "POST"
    response["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
    response["Access-Control-Max-Age"] = "600"
    return with_cors(response, origin)


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
    return refusal or with_cors(JsonResponse(project.as_json()), allowed_origin(request, project))


@csrf_exempt
async def predict(request, slug):
    received = time.perf_counter()
    if request.method == "OPTIONS":
        return _preflight(request, await sync_to_async(selectors.project_get_info)(slug=slug))
    if request.method != "POST":
        message = "Send the image with POST."
        return JsonResponse(error_reply(None, "bad_request", message), status=405)
    project, refusal = await _authorized_project(request, slug)
    if refusal:
        return refusal
    reply = await serving.answer_http(request, project=project, received=received)
    status = 200 if reply["type"] == "prediction" else HTTP_STATUS[reply["code"]]
    return with_cors(JsonResponse(reply, status=status), allowed_origin(request, project))
