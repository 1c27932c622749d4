"""One frame through decode, preprocess and inference, into the contract's prediction reply."""

import time
from dataclasses import dataclass

import numpy as np

from .errors import MODEL_UNAVAILABLE, PredictionError
from .frames import Frame
from .images import decode_image
from .preprocess import image_to_input, pixels_to_input
from .spec import ModelSpec


@dataclass(frozen=True)
class Limits:
    max_image_bytes: int
    max_image_pixels: int


def predict_frame(
    frame: Frame, *, spec: ModelSpec, runtime, limits: Limits, received: float
) -> dict:
    """Answer one frame; `received` is the `time.perf_counter()` when the frame arrived."""
    started = time.perf_counter()
    if frame.image is not None:
        image = decode_image(
            frame.image, max_bytes=limits.max_image_bytes, max_pixels=limits.max_image_pixels
        )
        decoded = time.perf_counter()
        model_input = image_to_input(image, spec)
    else:
        decoded = time.perf_counter()
        model_input = pixels_to_input(frame.pixels, spec)
    preprocessed = time.perf_counter()
    try:
        output = runtime.predict(model_input[np.newaxis, ...])[0]
    except Exception as exc:
        raise PredictionError(MODEL_UNAVAILABLE, f"The model failed on this frame: {exc}") from None
    finished = time.perf_counter()

    reply = {"type": "prediction", "id": frame.id}
    if spec.labels:
        reply["labels"] = top_labels(output, spec.labels, frame.top_k)
    else:
        reply["outputs"] = output.tolist()
    reply["model_version"] = spec.number
    reply["timings_ms"] = {
        "decode": _ms(started, decoded),
        "preprocess": _ms(decoded, preprocessed),
        "inference": _ms(preprocessed, finished),
        "total": _ms(received, finished),
    }
    return reply


def top_labels(scores: np.ndarray, labels: tuple[str, ...], top_k: int) -> list[dict]:
    """The `top_k` labels by score, highest first."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [{"label": labels[i], "score": round(float(scores[i]), 6)} for i in order]


def _ms(start: float, end: float) -> float:
    return round((end - start) * 1000, 3)
