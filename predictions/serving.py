"""The process's serving machinery: the model cache, the thread pool, frame answering.

A frame is parsed, decoded and preprocessed in the thread pool (never on the event loop), then
handed to its model's batcher, which runs the model on batches gathered across every connection
of the process; the reply is built when the batch comes back.
"""

import asyncio
import functools
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
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
from .inference.frames import Frame, parse_text_frame
from .inference.pipeline import (
    Limits,
    PreparedFrame,
    frame_timings,
    prediction_reply,
    prepare_frame,
)
from .inference.runtime import LiteRTRuntime
from .inference.spec import ModelSpec
from .selectors import ProjectInfo
from .storage import file_cache

logger = logging.getLogger(__name__)

# The `transport` label of the original protocol's frames in the metrics.
LEGACY_WEBSOCKET = "legacy_websocket"

_guard = threading.Lock()
_model_cache: ModelCache | None = None
_executor: ThreadPoolExecutor | None = None


def model_cache() -> ModelCache:
    global _model_cache
    with _guard:
        if _model_cache is None:
            _model_cache = ModelCache(
                budget_bytes=settings.MODEL_CACHE_BYTES,
                load=load_runtime,
                max_batch_size=settings.MAX_BATCH_SIZE,
                max_wait_ms=settings.MAX_BATCH_WAIT_MS,
            )
        return _model_cache


def load_runtime(spec: ModelSpec) -> tuple[object, int]:
    """Fetch a version's artifact (hash-checked) and load it; returns (runtime, bytes on disk)."""
    if spec.runtime == "litert" and spec.compiled_file:
        # A converted version's artifact, or a `.tflite` source stored as its own artifact.
        path = file_cache().fetch(
            name=spec.compiled_file, sha256=spec.compiled_sha256, suffix=".tflite"
        )
        runtime = LiteRTRuntime(str(path), threads=settings.LITERT_THREADS)
    else:
        from .formats import ModelFormat

        # Keras picks its loader by the file's suffix (`.keras` or `.h5`).
        suffix = ModelFormat(spec.format).suffix
        path = file_cache().fetch(name=spec.file_name, sha256=spec.sha256, suffix=suffix)
        # Only versions that did not convert to LiteRT bring TensorFlow into this process.
        from .inference.runtime import KerasRuntime

        runtime = KerasRuntime(str(path))
    metrics.MODEL_LOADS.inc()
    return runtime, path.stat().st_size


def inference_executor() -> ThreadPoolExecutor:
    global _executor
    with _guard:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=settings.INFERENCE_THREADS, thread_name_prefix="inference"
            )
        return _executor


async def run_in_inference_pool(func, /, *args, **kwargs):
    """Run a blocking call (parsing, decoding, loading a model) in the dedicated pool."""
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


async def answer_binary(
    data: bytes, *, frame_id: int, project: ProjectInfo, received: float
) -> dict:
    """Answer a binary WebSocket frame (one encoded image)."""
    return await _answer(
        lambda: Frame(id=frame_id, image=data), frame_id, project, received, "websocket"
    )


async def answer_text(text: str, *, project: ProjectInfo, received: float) -> dict:
    """Answer a JSON text frame."""
    parse = functools.partial(parse_text_frame, text, max_image_bytes=settings.MAX_IMAGE_BYTES)
    return await _answer(parse, None, project, received, "websocket")


async def answer_http(request, *, project: ProjectInfo, received: float) -> dict:
    """Answer an HTTP predict request: raw image bytes, a multipart `image` file, or JSON."""
    content_type = request.content_type or ""
    if content_type == "multipart/form-data":
        parse = functools.partial(_multipart_frame, request)
    elif content_type in ("application/json", "text/json", "text/plain"):

        def parse():
            return parse_text_frame(_body(request), max_image_bytes=settings.MAX_IMAGE_BYTES)

    elif content_type.startswith("image/") or content_type in ("application/octet-stream", ""):

        def parse():
            return Frame(id=None, image=_body(request))

    else:
        unsupported = PredictionError(
            BAD_REQUEST,
            f"Unsupported Content-Type {content_type!r}: send image bytes (image/*), "
            'a multipart form with an "image" file, or a JSON object (application/json).',
        )
        return _error_reply(None, unsupported, project, "http")
    return await _answer(parse, None, project, received, "http")


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


def _prepare(parse, project: ProjectInfo) -> tuple[PreparedFrame, Future | np.ndarray, float]:
    """In the pool: parse, find the model (loading it once), decode, preprocess, then run the
    input here when the model is idle, else hand it to the model's batcher straight from this
    thread (either way fewer hops than via the loop). Returns the output or its future."""
    frame = parse()
    try:
        if project.model is None:
            raise ModelUnavailable("The project has no active model version.")
        loaded = model_cache().get(project.model)
        prepared = prepare_frame(frame, spec=project.model, limits=limits())
        started = time.perf_counter()
        try:
            output = loaded.batcher.run_now(prepared.model_input)
        except Exception as exc:
            raise _model_failed(exc) from None
        if output is None:
            output = loaded.batcher.submit(prepared.model_input)
        return prepared, output, started
    except PredictionError as exc:
        exc.frame_id = frame.id
        raise
    except RuntimeError as exc:  # The batcher closed: the model was unloaded just now.
        raise PredictionError(MODEL_UNAVAILABLE, str(exc), frame_id=frame.id) from None


async def answer_outputs(parse, *, project: ProjectInfo, received: float) -> np.ndarray:
    """The model's raw output for one frame of the original protocol: `parse` (called in the
    pool, as the new protocol parses there) returns its `pixels` Frame, which then takes the
    path of any other frame (loaded model, batcher). Raises PredictionError."""
    try:
        prepared, output, submitted = await _infer(parse, project)
    except PredictionError as exc:
        metrics.observe_error(exc.code, project=project.slug, transport=LEGACY_WEBSOCKET)
        raise
    finished = time.perf_counter()
    timings = frame_timings(
        prepared,
        inference_ms=(finished - submitted) * 1000,
        total_ms=(finished - received) * 1000,
    )
    metrics.observe_prediction(timings, project=project.slug, transport=LEGACY_WEBSOCKET)
    return output


async def _infer(parse, project: ProjectInfo) -> tuple[PreparedFrame, np.ndarray, float]:
    """Prepare a frame in the pool and run the model on it: (prepared, output, when submitted).
    Raises PredictionError, also for a bug (logged), which must cost one reply only."""
    try:
        prepared, output, submitted = await run_in_inference_pool(_prepare, parse, project)
        if isinstance(output, Future):
            try:
                output = await asyncio.wrap_future(output)
            except Exception as exc:
                raise _model_failed(exc) from None
        return prepared, output, submitted
    except PredictionError:
        raise
    except Exception:
        raise _server_failed(project) from None


async def _answer(parse, frame_id, project: ProjectInfo, received: float, transport: str) -> dict:
    try:
        prepared, output, submitted = await _infer(parse, project)
        finished = time.perf_counter()
        reply = prediction_reply(
            prepared,
            output,
            spec=project.model,
            inference_ms=(finished - submitted) * 1000,
            total_ms=(finished - received) * 1000,
        )
    except PredictionError as exc:
        own_id = exc.frame_id if exc.frame_id is not None else frame_id
        return _error_reply(own_id, exc, project, transport)
    except Exception:  # A bug must cost one reply, never the connection.
        return _error_reply(frame_id, _server_failed(project), project, transport)
    metrics.observe_prediction(reply["timings_ms"], project=project.slug, transport=transport)
    return reply


def _server_failed(project: ProjectInfo) -> PredictionError:
    """Log the exception being handled: a bug answering a frame."""
    logger.exception("unexpected failure answering a frame of %s", project.slug)
    return PredictionError(MODEL_UNAVAILABLE, "The server failed on this frame; it is logged.")


def _model_failed(exc: Exception) -> PredictionError:
    return PredictionError(MODEL_UNAVAILABLE, f"The model failed on this frame: {exc}")


def _error_reply(frame_id, exc: PredictionError, project: ProjectInfo, transport: str) -> dict:
    metrics.observe_error(exc.code, project=project.slug, transport=transport)
    return error_reply(frame_id, exc.code, exc.message)
