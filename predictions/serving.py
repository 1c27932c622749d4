"""The process's serving machinery: the model cache, the thread pool, frame answering.

A frame is parsed, decoded and preprocessed in the thread pool (never on the event loop), then
handed to its model's batcher, which runs the model on batches gathered across every connection
of the process; the reply is built when the batch comes back. Both queues are bounded (`Busy`
beyond), and a frame whose client stopped waiting is dropped from whichever it is in.
"""

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from django.conf import settings

from . import metrics
from .inference import preprocess
from .inference.batching import BatcherClosed, BatcherFull
from .inference.cache import ModelCache
from .inference.errors import (
    MODEL_UNAVAILABLE,
    Busy,
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
from .inference.spec import ModelSpec, Runtime
from .selectors import ProjectInfo
from .storage import file_cache

logger = logging.getLogger(__name__)

# The `transport` label of the original protocol's frames in the metrics.
LEGACY_WEBSOCKET = "legacy_websocket"

_guard = threading.Lock()
_model_cache: ModelCache | None = None
_pool: "FramePool | None" = None


def model_cache() -> ModelCache:
    global _model_cache
    with _guard:
        if _model_cache is None:
            _model_cache = ModelCache(
                budget_bytes=settings.MODEL_CACHE_BYTES,
                load=load_runtime,
                max_batch_size=settings.MAX_BATCH_SIZE,
                max_wait_ms=settings.MAX_BATCH_WAIT_MS,
                max_queue=settings.BATCH_QUEUE_FRAMES,
            )
        return _model_cache


def load_runtime(spec: ModelSpec) -> tuple[object, int]:
    """Fetch a version's artifact (hash-checked) and load it; returns (runtime, bytes on disk)."""
    if spec.runtime != Runtime.LITERT or not spec.compiled_file:
        # Keras is never run here: it would put TensorFlow, and an uploaded file's code paths,
        # in the process that holds every secret (versions checked before LiteRT-only serving).
        raise ModelUnavailable(
            f"Version {spec.number} did not convert to LiteRT, and this server serves LiteRT "
            "only: register the model again as a file that converts."
        )
    # A converted version's artifact, or a `.tflite` source stored as its own artifact.
    path = file_cache().fetch(
        name=spec.compiled_file, sha256=spec.compiled_sha256, suffix=".tflite"
    )
    runtime = LiteRTRuntime(str(path), threads=settings.LITERT_THREADS)
    preprocess.load_tools(spec)
    metrics.MODEL_LOADS.inc()
    return runtime, path.stat().st_size


class FramePool:
    """The decode-and-preprocess thread pool behind a bounded queue.

    `submit` takes a frame's job while fewer than `max_frames` frames are queued or being
    worked on, and raises `Busy` at once otherwise; a frame's slot is free again when its job
    ends or is cancelled before it starts. `run` takes the server's own jobs (model loads),
    which are few and not bounded.
    """

    def __init__(self, *, threads: int, max_frames: int):
        self.max_frames = max_frames
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="inference")
        self._lock = threading.Lock()
        self._frames = 0

    @property
    def frames(self) -> int:
        """Frames queued or being worked on."""
        with self._lock:
            return self._frames

    def submit(self, func: Callable, /, *args) -> Future:
        with self._lock:
            if self._frames >= self.max_frames:
                raise Busy(
                    f"The server has as many frames waiting as it takes ({self._frames}); "
                    "send this one again shortly."
                )
            self._frames += 1
        try:
            job = self._executor.submit(func, *args)
        except BaseException:
            self._free()
            raise
        job.add_done_callback(self._free)
        return job

    def run(self, func: Callable, /, *args) -> Future:
        return self._executor.submit(func, *args)

    def _free(self, _job: Future | None = None) -> None:
        with self._lock:
            self._frames -= 1


def inference_pool() -> FramePool:
    global _pool
    with _guard:
        if _pool is None:
            _pool = FramePool(
                threads=settings.INFERENCE_THREADS, max_frames=settings.INFERENCE_QUEUE_FRAMES
            )
        return _pool


async def run_in_inference_pool(func, /, *args, **kwargs):
    """Run a blocking call of the server's own (loading a model) in the pool, unbounded."""
    return await asyncio.wrap_future(inference_pool().run(functools.partial(func, *args, **kwargs)))


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
        max_image_bytes=settings.MAX_IMAGE_BYTES,
        max_image_pixels=settings.MAX_IMAGE_PIXELS,
        decode_budget_bytes=settings.DECODE_BUDGET_BYTES,
    )


def answer_binary(
    data: bytes, *, frame_id: int, project: ProjectInfo, received: float, preview: bool = False
) -> Coroutine[None, None, dict]:
    """Queue a binary WebSocket frame (one encoded image); see `answer`."""
    return answer(
        lambda: Frame(id=frame_id, image=data),
        frame_id=frame_id,
        project=project,
        received=received,
        preview=preview,
        transport="websocket",
    )


def answer_text(
    text: str,
    *,
    project: ProjectInfo,
    received: float,
    parsed: Callable[[Frame], None] | None = None,
    preview: bool = False,
) -> Coroutine[None, None, dict]:
    """Queue a JSON text frame; see `answer`. `parsed`, when given, is called with the frame
    once it is parsed (in the pool)."""
    parse = functools.partial(parse_text_frame, text, max_image_bytes=settings.MAX_IMAGE_BYTES)
    if parsed is not None:
        parse = functools.partial(_parse_and_tell, parse, parsed)
    return answer(parse, project=project, received=received, transport="websocket", preview=preview)


def _parse_and_tell(parse: Callable[[], Frame], parsed: Callable[[Frame], None]) -> Frame:
    frame = parse()
    parsed(frame)
    return frame


def answer(
    parse: Callable[[], Frame],
    *,
    project: ProjectInfo,
    received: float,
    transport: str,
    frame_id=None,
    preview: bool = False,
) -> Coroutine[None, None, dict]:
    """Queue a frame in the pool (where `parse` makes it) and return the coroutine giving its
    reply, a prediction or an error; cancelled while awaited, it drops the frame. Raises `Busy`
    at once, before anything is parsed, when the pool holds `INFERENCE_QUEUE_FRAMES` frames.
    `preview` asks for the frame's `input_preview` whatever the frame itself says."""
    job = inference_pool().submit(_prepare, parse, project, preview)
    return _answer(job, frame_id, project, received, transport)


def refused(exc: PredictionError, *, project: ProjectInfo, transport: str, frame_id=None) -> dict:
    """The error reply for a frame refused before it was queued (`Busy`, a body it cannot be
    made from), counted in the metrics as any error reply."""
    return _error_reply(frame_id, exc, project, transport)


def _prepare(
    parse, project: ProjectInfo, preview: bool = False
) -> tuple[PreparedFrame, Future | np.ndarray, float]:
    """In the pool: parse, find the model (loading it once), decode, preprocess (and preview),
    then run the input here when the model is idle, else hand it to the model's batcher
    straight from this thread (either way fewer hops than via the loop). Returns the output
    or its future."""
    frame = parse()
    if preview:
        frame.preview = True
    try:
        if project.model is None:
            raise ModelUnavailable("The project has no active model version.")
        loaded = model_cache().get(project.model)
        if loaded.batcher.full():  # checked before decoding: it could not be queued anyway
            raise BatcherFull
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
    except BatcherFull:
        busy = Busy(
            f"Version {project.model.number} of the model has as many frames waiting as it "
            "takes; send this one again shortly."
        )
        busy.frame_id = frame.id
        raise busy from None
    except BatcherClosed as exc:  # the model was unloaded just now
        raise PredictionError(MODEL_UNAVAILABLE, str(exc), frame_id=frame.id) from None


async def answer_outputs(parse, *, project: ProjectInfo, received: float) -> np.ndarray:
    """The model's raw output for one frame of the original protocol: `parse` (called in the
    pool, as the new protocol parses there) returns its `pixels` Frame, which then takes the
    path of any other frame (bounded pool, loaded model, batcher). Raises PredictionError
    (`Busy` when the pool is full)."""
    try:
        job = inference_pool().submit(_prepare, parse, project)
        prepared, output, submitted = await _infer(job, project)
    except PredictionError as exc:
        metrics.observe_error(
            exc.code,
            project=project.slug,
            transport=LEGACY_WEBSOCKET,
            version=version_number(project),
        )
        raise
    finished = time.perf_counter()
    timings = frame_timings(
        prepared,
        inference_ms=(finished - submitted) * 1000,
        total_ms=(finished - received) * 1000,
    )
    metrics.observe_prediction(
        timings, project=project.slug, transport=LEGACY_WEBSOCKET, version=project.model.number
    )
    return output


async def _infer(job: Future, project: ProjectInfo) -> tuple[PreparedFrame, np.ndarray, float]:
    """Wait for a frame's job in the pool, then for its model output: (prepared, output, when
    submitted). Raises PredictionError, also for a bug (logged), which must cost one reply
    only. Cancelled (the client left, or daphne answered the request already), it drops the
    frame from whichever queue holds it."""
    try:
        prepared, output, submitted = await asyncio.wrap_future(job)
        if isinstance(output, Future):
            try:
                output = await asyncio.wrap_future(output)
            except Exception as exc:
                raise _model_failed(exc) from None
        return prepared, output, submitted
    except asyncio.CancelledError:
        _drop(job)
        raise
    except PredictionError:
        raise
    except Exception:
        raise _server_failed(project) from None


def _drop(job: Future) -> None:
    """Drop a frame nobody waits for: from the pool's queue, or, when its job already runs,
    from its batcher's queue once the job hands it there (a batch skips cancelled inputs)."""
    if not job.cancel():
        job.add_done_callback(_cancel_output)


def _cancel_output(job: Future) -> None:
    if job.cancelled() or job.exception() is not None:
        return
    output = job.result()[1]
    if isinstance(output, Future):
        output.cancel()


async def _answer(job: Future, frame_id, project: ProjectInfo, received: float, transport: str):
    try:
        prepared, output, submitted = await _infer(job, project)
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
    metrics.observe_prediction(
        reply["timings_ms"],
        project=project.slug,
        transport=transport,
        version=project.model.number,
    )
    return reply


def _server_failed(project: ProjectInfo) -> PredictionError:
    """Log the exception being handled: a bug answering a frame."""
    logger.exception("unexpected failure answering a frame of %s", project.slug)
    return PredictionError(MODEL_UNAVAILABLE, "The server failed on this frame; it is logged.")


def _model_failed(exc: Exception) -> PredictionError:
    return PredictionError(MODEL_UNAVAILABLE, f"The model failed on this frame: {exc}")


def _error_reply(frame_id, exc: PredictionError, project: ProjectInfo, transport: str) -> dict:
    metrics.observe_error(
        exc.code, project=project.slug, transport=transport, version=version_number(project)
    )
    return error_reply(frame_id, exc.code, exc.message)


def version_number(project: ProjectInfo) -> int | None:
    """The number of the version a frame of `project` was given (None: none in service)."""
    return project.model.number if project.model else None
