"""The process's serving machinery: the model cache, the inference thread pool, frame answering.

Everything here runs in the inference pool, never on the event loop: parsing, decoding,
fetching a model file, loading it and running it.
"""

import asyncio
import functools
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.core.exceptions import RequestDataTooBig

from . import metrics
from .inference.cache import ModelCache
from .inference.errors import (
    BAD_REQUEST,
    MODEL_UNAVAILABLE,
    TOO_LARGE,
    ModelUnavailable,
    PredictionError,
    error_reply,
)
from .inference.frames import Frame, frame_from_json, load_json_object
from .inference.pipeline import Limits, predict_frame
from .inference.runtime import KerasRuntime
from .inference.spec import ModelSpec
from .selectors import ProjectInfo
from .storage import file_cache

logger = logging.getLogger(__name__)

_guard = threading.Lock()
_model_cache: ModelCache | None = None
_executor: ThreadPoolExecutor | None = None


def model_cache() -> ModelCache:
    global _model_cache
    with _guard:
        if _model_cache is None:
            _model_cache = ModelCache(
                capacity=settings.MODEL_CACHE_SIZE,
                fetch_file=lambda **kw: file_cache().fetch(**kw),
                load=_load_runtime,
            )
        return _model_cache


def _load_runtime(path: str) -> KerasRuntime:
    metrics.MODEL_LOADS.inc()
    return KerasRuntime(path)


def inference_executor() -> ThreadPoolExecutor:
    global _executor
    with _guard:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=settings.INFERENCE_THREADS, thread_name_prefix="inference"
            )
        return _executor


async def run_in_inference_pool(func, /, *args, **kwargs):
    """Run a blocking call (parsing, decoding, inference) in the dedicated pool."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        inference_executor(), functools.partial(func, *args, **kwargs)
    )


def preload(spec: ModelSpec | None) -> None:
    """Fetch and load a version ahead of its first frame; failures show up on that frame."""
    if spec is None:
        return
    try:
        model_cache().get(spec)
    except ModelUnavailable:
        pass


def limits() -> Limits:
    return Limits(
        max_image_bytes=settings.MAX_IMAGE_BYTES, max_image_pixels=settings.MAX_IMAGE_PIXELS
    )


def answer_binary(data: bytes, *, frame_id: int, project: ProjectInfo, received: float) -> dict:
    """Answer a binary WebSocket frame (one encoded image)."""
    return _answer(lambda: Frame(id=frame_id, image=data), frame_id, project, received, "websocket")


def answer_text(text: str, *, project: ProjectInfo, received: float) -> dict:
    """Answer a JSON text frame."""
    return _answer_json(lambda: load_json_object(text), project, received, "websocket")


def answer_http(request, *, project: ProjectInfo, received: float) -> dict:
    """Answer an HTTP predict request: raw image bytes, a multipart `image` file, or JSON."""
    content_type = request.content_type or ""
    if content_type == "multipart/form-data":
        return _answer(lambda: _multipart_frame(request), None, project, received, "http")
    if content_type in ("application/json", "text/json", "text/plain"):
        return _answer_json(lambda: load_json_object(_body(request)), project, received, "http")
    if content_type.startswith("image/") or content_type in ("application/octet-stream", ""):
        return _answer(
            lambda: Frame(id=None, image=_body(request)), None, project, received, "http"
        )
    unsupported = PredictionError(
        BAD_REQUEST,
        f"Unsupported Content-Type {content_type!r}: send image bytes (image/*), "
        'a multipart form with an "image" file, or a JSON object (application/json).',
    )
    return _error_reply(None, unsupported, project, "http")


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


def _answer_json(load, project: ProjectInfo, received: float, transport: str) -> dict:
    try:
        data = load()
    except PredictionError as exc:
        return _error_reply(None, exc, project, transport)
    parse = functools.partial(frame_from_json, data, max_image_bytes=settings.MAX_IMAGE_BYTES)
    return _answer(parse, data.get("id"), project, received, transport)


def _answer(parse, frame_id, project: ProjectInfo, received: float, transport: str) -> dict:
    try:
        frame = parse()
        spec = project.model
        if spec is None:
            raise ModelUnavailable("The project has no active model version.")
        runtime = model_cache().get(spec)
        reply = predict_frame(frame, spec=spec, runtime=runtime, limits=limits(), received=received)
    except PredictionError as exc:
        return _error_reply(frame_id, exc, project, transport)
    except Exception:  # A bug must cost one reply, never the connection.
        logger.exception("unexpected failure answering a frame of %s", project.slug)
        failure = PredictionError(
            MODEL_UNAVAILABLE, "The server failed on this frame; it is logged."
        )
        return _error_reply(frame_id, failure, project, transport)
    metrics.observe_prediction(reply, project=project.slug, transport=transport)
    return reply


def _error_reply(frame_id, exc: PredictionError, project: ProjectInfo, transport: str) -> dict:
    metrics.observe_error(exc.code, project=project.slug, transport=transport)
    return error_reply(frame_id, exc.code, exc.message)
