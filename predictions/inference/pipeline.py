"""One frame through decode and preprocess into a model input, and a model output into the
contract's prediction reply. Inference itself happens in between, batched (see batching.py)."""

import time
from dataclasses import dataclass

import numpy as np

from .frames import Frame
from .images import (
    DEFAULT_DECODE_BUDGET_BYTES,
    decode_bytes,
    draft,
    load_image,
    open_image,
    shared_budget,
)
from .preprocess import image_to_input, pixels_to_input, target_size, working_bytes
from .preview import input_preview
from .spec import ModelSpec


@dataclass(frozen=True)
class Limits:
    max_image_bytes: int
    max_image_pixels: int
    # Bytes of images being decoded and preprocessed at once in the process (DECODE_BUDGET_BYTES).
    decode_budget_bytes: int = DEFAULT_DECODE_BUDGET_BYTES


@dataclass(frozen=True)
class PreparedFrame:
    frame: Frame
    model_input: np.ndarray  # H x W x C float32
    decode_ms: float
    preprocess_ms: float  # with the preview, when the frame asks for one
    input_preview: str | None = None  # a PNG data URL of `model_input` (Frame.preview)


def prepare_frame(frame: Frame, *, spec: ModelSpec, limits: Limits) -> PreparedFrame:
    """Decode and preprocess one frame (raises PredictionError with the contract's code), and
    when the frame asks, preview its model input (here, before anything else reads it)."""
    started = time.perf_counter()
    if frame.image is not None:
        model_input, decoded = _image_to_input(frame.image, spec=spec, limits=limits)
    else:
        decoded = time.perf_counter()
        model_input = pixels_to_input(frame.pixels, spec)
    preview = None
    if frame.preview:
        preview = input_preview(model_input, scale_min=spec.scale_min, scale_max=spec.scale_max)
    return PreparedFrame(
        frame, model_input, _ms(started, decoded), _ms(decoded, time.perf_counter()), preview
    )


def _image_to_input(data: bytes, *, spec: ModelSpec, limits: Limits) -> tuple[np.ndarray, float]:
    """Decode and preprocess within the process's decode budget, which is held (waiting for it
    in this pool thread) from before the pixels are decoded until they are freed. Returns the
    model input and when decoding ended."""
    image = open_image(data, max_bytes=limits.max_image_bytes, max_pixels=limits.max_image_pixels)
    what = f"This {image.width}x{image.height} {image.format} image"
    draft(image, target_size(image.size, spec))
    need = decode_bytes(image, data) + working_bytes(image.size, spec)
    with shared_budget(limits.decode_budget_bytes).hold(need, what=what):
        try:
            load_image(image)
            decoded = time.perf_counter()
            return image_to_input(image, spec), decoded
        finally:
            image.close()
            # Also WebP's decoder and its canvases, which live as long as the image object.
            del image


def prediction_reply(
    prepared: PreparedFrame,
    output: np.ndarray,
    *,
    spec: ModelSpec,
    inference_ms: float,
    total_ms: float,
) -> dict:
    """The contract's prediction object for one frame's model output."""
    frame = prepared.frame
    reply = {"type": "prediction", "id": frame.id}
    if spec.labels:
        reply["labels"] = top_labels(output, spec.labels, frame.top_k)
    else:
        reply["outputs"] = output.tolist()
    reply["model_version"] = spec.number
    reply["timings_ms"] = frame_timings(prepared, inference_ms=inference_ms, total_ms=total_ms)
    if prepared.input_preview is not None:
        reply["input_preview"] = prepared.input_preview
    return reply


def frame_timings(prepared: PreparedFrame, *, inference_ms: float, total_ms: float) -> dict:
    """Milliseconds per stage of one frame (the contract's `timings_ms`)."""
    return {
        "decode": prepared.decode_ms,
        "preprocess": prepared.preprocess_ms,
        "inference": round(inference_ms, 3),
        "total": round(total_ms, 3),
    }


def top_labels(scores: np.ndarray, labels: tuple[str, ...], top_k: int) -> list[dict]:
    """The `top_k` labels by score, highest first."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [{"label": labels[i], "score": round(float(scores[i]), 6)} for i in order]


def _ms(start: float, end: float) -> float:
    return round((end - start) * 1000, 3)
