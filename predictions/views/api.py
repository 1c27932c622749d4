"""The JSON API: project listings, predictions and feedback. Scripts and other sites call it
without CSRF."""

import functools
import logging
import math
import time

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse, JsonResponse
from django.utils.cache import patch_vary_headers
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from .. import selectors, services, serving
from ..inference.errors import (
    BAD_REQUEST,
    BUSY,
    FORBIDDEN,
    HTTP_STATUS,
    MODEL_UNAVAILABLE,
    NOT_FOUND,
    TOO_LARGE,
    PredictionError,
    error_reply,
)
from ..inference.frames import Frame, frame_from_json, load_json_object, parse_text_frame
from ..models import FeedbackExample, Project
from ..openapi.declare import (
    FEEDBACK_BODIES,
    FEEDBACK_QUERY,
    IMAGE_BODIES,
    IMAGE_POST_ERRORS,
    METHOD_NOT_ALLOWED,
    PREVIEW_QUERY,
    PROJECT_ERRORS,
    SLUG,
    api_operation,
    json_reply,
)
from ..origins import normalise
from ..ratelimit import address_busy_message, feedback_limiter

logger = logging.getLogger(__name__)

# What a 429 asks a client to wait: the bounded queues hold about half a second of work.
RETRY_AFTER_SECONDS = 1


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


def error_response(code: str, message: str, *, status: int | None = None) -> JsonResponse:
    """The contract's error object, with its code's HTTP status unless told another."""
    return JsonResponse(error_reply(None, code, message), status=status or HTTP_STATUS[code])


def _preflight(request, project):
    """The answer to a browser's OPTIONS preflight before a cross-site POST."""
    origin = allowed_origin(request, project)
    if origin is None:
        return error_response(FORBIDDEN, "This origin is not among the project's allowed origins.")
    response = HttpResponse(status=204)
    response["Access-Control-Allow-Methods"] = "POST"
    response["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
    response["Access-Control-Max-Age"] = "600"
    return with_cors(response, origin)


async def _authorized_project(request, slug):
    """The project, or the error response a client gets instead (404 unknown, 403 bad token)."""
    project = await sync_to_async(selectors.project_get_info)(slug=slug)
    if project is None:
        return None, error_response(NOT_FOUND, f"No project named {slug!r}.")
    if not project.token_matches(request_token(request)):
        message = "This project is private: send its token as ?token= or a Bearer header."
        return None, error_response(FORBIDDEN, message)
    return project, None


async def _posted_project(request, slug, *, sending: str):
    """For the POST routes: the project, or the response a client gets instead (a CORS
    preflight's answer, 405 for another method, 404 or 403 as `_authorized_project`)."""
    if request.method == "OPTIONS":
        project = await sync_to_async(selectors.project_get_info)(slug=slug)
        return None, _preflight(request, project)
    if request.method != "POST":
        return None, error_response(BAD_REQUEST, f"Send {sending} with POST.", status=405)
    return await _authorized_project(request, slug)


@api_operation(
    summary="List the public projects",
    tags=("projects",),
    responses={200: json_reply("The public projects.", "ProjectList")},
)
@require_GET
async def project_list(request):
    projects = await sync_to_async(selectors.project_list_public)()
    return JsonResponse({"projects": [project.as_json() for project in projects]})


@api_operation(
    summary="One project and its model",
    tags=("projects",),
    path_parameters=SLUG,
    responses={200: json_reply("The project.", "Project"), **PROJECT_ERRORS},
    token=True,
)
@require_GET
async def project_detail(request, slug):
    """One project; with its accuracy per version for staff and a private project's token
    holders (a public project's feedback comes from anyone)."""
    project, refusal = await _authorized_project(request, slug)
    if refusal:
        return refusal
    data = project.as_json()
    if not project.is_public or (await request.auser()).is_staff:
        data["accuracy"] = await sync_to_async(selectors.feedback_accuracy)(slug=slug)
    return with_cors(JsonResponse(data), allowed_origin(request, project))


@api_operation(
    "post",
    summary="Predict one image",
    description="The body is raw image bytes (`Content-Type: image/*`), a multipart form with "
    "an `image` file, or the JSON object of a WebSocket text frame (`image` or `pixels`).",
    tags=("projects",),
    path_parameters=SLUG,
    parameters=(PREVIEW_QUERY,),
    request_bodies=IMAGE_BODIES,
    responses={
        200: json_reply("The prediction.", "Prediction"),
        **PROJECT_ERRORS,
        **IMAGE_POST_ERRORS,
        **METHOD_NOT_ALLOWED,
    },
    token=True,
)
@csrf_exempt
async def predict(request, slug):
    received = time.perf_counter()
    project, refusal = await _posted_project(request, slug, sending="the image")
    if refusal:
        return refusal
    project = project.assigned()  # a canary's candidate, by its share, or not
    # Cancelled when daphne has answered already (its --http-timeout) or the client went
    # away: the frame is then dropped from whichever queue holds it.
    try:
        preview = request.GET.get("preview", "0")
        if preview not in ("0", "1", "false", "true"):
            raise PredictionError(BAD_REQUEST, '"?preview=" takes 1 or 0 (or true or false).')
        answer = serving.answer(
            _frame_parser(request),
            project=project,
            received=received,
            transport="http",
            preview=preview in ("1", "true"),
        )
    except PredictionError as exc:  # a bad query or body, or too much waiting work (busy)
        reply = serving.refused(exc, project=project, transport="http")
    else:
        reply = await answer
    status = 200 if reply["type"] == "prediction" else HTTP_STATUS[reply["code"]]
    response = JsonResponse(reply, status=status)
    if reply.get("code") == BUSY:
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return with_cors(response, allowed_origin(request, project))


def _frame_parser(request):
    """What makes the request's frame in the pool (reading the body is blocking work): raw
    image bytes, a multipart form's `image` file, or a JSON text frame. Raises
    PredictionError (`bad_request`) at once for any other Content-Type."""
    content_type = request.content_type or ""
    if content_type == "multipart/form-data":
        return functools.partial(_multipart_frame, request)
    if content_type in ("application/json", "text/json", "text/plain"):
        return lambda: parse_text_frame(_body(request), max_image_bytes=settings.MAX_IMAGE_BYTES)
    if content_type.startswith("image/") or content_type in ("application/octet-stream", ""):
        return lambda: Frame(id=None, image=_body(request))
    raise PredictionError(
        BAD_REQUEST,
        f"Unsupported Content-Type {content_type!r}: send image bytes (image/*), "
        'a multipart form with an "image" file, or a JSON object (application/json).',
    )


def _multipart_frame(request) -> Frame:
    upload = request.FILES.get("image")
    if upload is None:
        raise PredictionError(BAD_REQUEST, 'The form has no "image" file.')
    if upload.size > settings.MAX_IMAGE_BYTES:
        raise _too_large(upload.size)
    return Frame(id=None, image=upload.read())


def _body(request) -> bytes:
    declared = int(request.META.get("CONTENT_LENGTH") or 0)
    if declared > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
        raise _too_large(declared)
    try:
        return request.body
    except RequestDataTooBig:
        raise _too_large(declared) from None


def _too_large(size: int) -> PredictionError:
    return PredictionError(
        TOO_LARGE, f"The request is {size} bytes; the limit is {settings.MAX_IMAGE_BYTES} bytes."
    )


@api_operation(
    "post",
    summary="Keep an image with its right label",
    description="The image as predict takes it (not `pixels`), with `label` (a form field, a "
    "JSON key, or `?label=` beside raw bytes) and optional `model_version` and `predicted`.",
    tags=("projects",),
    path_parameters=SLUG,
    parameters=FEEDBACK_QUERY,
    request_bodies=FEEDBACK_BODIES,
    responses={
        201: json_reply("The image is stored.", "FeedbackSaved"),
        **PROJECT_ERRORS,
        **IMAGE_POST_ERRORS,
        **METHOD_NOT_ALLOWED,
    },
    token=True,
)
@csrf_exempt
async def feedback(request, slug):
    """Keep an image with its right label: 201 `{"type": "feedback_saved", "example": sha256}`."""
    project, refusal = await _posted_project(request, slug, sending="the feedback")
    if refusal:
        return refusal
    origin = allowed_origin(request, project)
    wait = feedback_limiter().take(request.META.get("REMOTE_ADDR") or "")
    if wait:
        response = error_response(BUSY, address_busy_message(wait))
        response["Retry-After"] = str(max(1, math.ceil(wait)))
        return with_cors(response, origin)
    try:
        # Reading the body, decoding the image, the database and the storage all block.
        example = await database_sync_to_async(_save_feedback, thread_sensitive=False)(
            request, slug
        )
    except PredictionError as exc:
        return with_cors(error_response(exc.code, exc.message), origin)
    except Exception:  # the database or the storage failing: still the contract's JSON
        logger.exception("could not save feedback for %s", slug)
        message = "The feedback could not be stored right now; it is logged. Try again later."
        return with_cors(error_response(MODEL_UNAVAILABLE, message), origin)
    reply = {"type": "feedback_saved", "example": example.sha256}
    return with_cors(JsonResponse(reply, status=201), origin)


def _save_feedback(request, slug) -> FeedbackExample:
    fields, image = _feedback_fields(request)
    project = Project.objects.filter(slug=slug).first()
    if project is None:  # deleted since it was looked up
        raise PredictionError(NOT_FOUND, f"No project named {slug!r}.")
    return services.feedback_save(
        project=project,
        image_bytes=image,
        label=fields.get("label", ""),
        predicted=fields.get("predicted", ""),
        version=_version_number(fields.get("model_version")),
        source=FeedbackExample.Source.API,
    )


def _feedback_fields(request) -> tuple[dict, bytes]:
    """The feedback's fields (`label`, `model_version`, `predicted`) and image bytes, from a
    multipart form, a JSON object, or query parameters beside a raw image body."""
    content_type = request.content_type or ""
    if content_type == "multipart/form-data":
        return request.POST.dict(), _multipart_frame(request).image
    if content_type in ("application/json", "text/json", "text/plain"):
        data = load_json_object(_body(request))
        frame = frame_from_json(data, max_image_bytes=settings.MAX_IMAGE_BYTES)
        if frame.image is None:
            raise PredictionError(BAD_REQUEST, 'Feedback needs an "image", not "pixels".')
        return data, frame.image
    if content_type.startswith("image/") or content_type in ("application/octet-stream", ""):
        return request.GET.dict(), _body(request)
    raise PredictionError(
        BAD_REQUEST,
        f"Unsupported Content-Type {content_type!r}: send image bytes (image/*) with ?label=, "
        'a multipart form with an "image" file and a "label" field, or a JSON object.',
    )


def _version_number(value) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.isdecimal() and len(value) < 10:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 10**9:
        return value
    raise PredictionError(BAD_REQUEST, '"model_version" must be a version number.')
