"""Parsing what clients send (binary frames, JSON text frames, HTTP bodies) into `Frame`s."""

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import BAD_IMAGE, BAD_REQUEST, BAD_SHAPE, TOO_LARGE, PredictionError

DEFAULT_TOP_K = 5


@dataclass
class Frame:
    """One thing to predict on: encoded image bytes or a pixel array, how many labels to return,
    and whether the reply shows the model input (`input_preview`)."""

    id: Any
    image: bytes | None = None
    pixels: Any = None
    top_k: int = DEFAULT_TOP_K
    preview: bool = False


def _load_json(text: str | bytes, kind: type, what: str):
    """Parse a text frame; anything but JSON of `kind` (`what`, in words) is a `bad_request`."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise PredictionError(BAD_REQUEST, "The frame is not valid JSON.") from None
    except RecursionError:  # json's decoder gives up on deep nesting this way
        raise PredictionError(BAD_REQUEST, "The frame's JSON is nested too deeply.") from None
    if not isinstance(data, kind):
        raise PredictionError(BAD_REQUEST, f"The frame must be {what}.")
    return data


def load_json_object(text: str | bytes) -> dict:
    """Parse a text frame; anything but a JSON object is a `bad_request`."""
    return _load_json(text, dict, "a JSON object")


def parse_text_frame(text: str | bytes, *, max_image_bytes: int) -> Frame:
    """A JSON text frame (or HTTP JSON body) as a `Frame`; errors carry the frame's id."""
    data = load_json_object(text)
    try:
        return frame_from_json(data, max_image_bytes=max_image_bytes)
    except PredictionError as exc:
        exc.frame_id = data.get("id")
        raise


def parse_pixels_array(text: str, *, input_shape: tuple[int, int, int] | None) -> Frame:
    """A frame of the original protocol: a bare JSON array of numbers (nested or flat) holding
    as many numbers as the model's input, reshaped to `input_shape` (height, width, channels).
    Without a shape (no model in service) the numbers are left as they are."""
    data = _load_json(text, list, "a JSON array of numbers")
    try:
        numbers = np.array(data)
    except ValueError:
        raise PredictionError(BAD_SHAPE, "The array is ragged: rows differ in length.") from None
    if numbers.dtype.kind not in "iuf":
        raise PredictionError(BAD_REQUEST, "The array must hold numbers only.")
    if input_shape is not None:
        height, width, channels = input_shape
        if numbers.size != height * width * channels:
            raise PredictionError(
                BAD_SHAPE,
                f"The array holds {numbers.size} numbers; the model takes {height} x {width} x "
                f"{channels} = {height * width * channels}.",
            )
        numbers = numbers.reshape(input_shape)
    return Frame(id=None, pixels=numbers)


def frame_from_json(data: dict, *, max_image_bytes: int) -> Frame:
    """Build a frame from `{"id", "image" | "pixels", "top_k"?, "preview"?}`."""
    frame = Frame(
        id=data.get("id"),
        top_k=_top_k(data.get("top_k", DEFAULT_TOP_K)),
        preview=_preview(data.get("preview", False)),
    )
    has_image, has_pixels = "image" in data, "pixels" in data
    if has_image == has_pixels:
        raise PredictionError(BAD_REQUEST, 'The frame needs exactly one of "image" or "pixels".')
    if has_image:
        frame.image = _decode_base64_image(data["image"], max_bytes=max_image_bytes)
    else:
        if not isinstance(data["pixels"], list):
            raise PredictionError(BAD_REQUEST, '"pixels" must be a nested array of numbers.')
        frame.pixels = data["pixels"]
    return frame


def _top_k(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PredictionError(BAD_REQUEST, '"top_k" must be a positive integer.')
    return value


def _preview(value) -> bool:
    if not isinstance(value, bool):
        raise PredictionError(BAD_REQUEST, '"preview" must be true or false.')
    return value


def _decode_base64_image(value, *, max_bytes: int) -> bytes:
    """Accept `data:image/...;base64,...` or bare base64."""
    if not isinstance(value, str):
        raise PredictionError(BAD_REQUEST, '"image" must be a string: a data URL or base64.')
    if value.startswith("data:"):
        header, _, value = value.partition(",")
        media_type = header[len("data:") :].split(";")[0]
        if not header.endswith(";base64") or not media_type.startswith("image/"):
            raise PredictionError(
                BAD_IMAGE, 'A data URL must look like "data:image/<type>;base64,<data>".'
            )
    value = "".join(value.split())
    # Four base64 characters carry three bytes: refuse before decoding anything huge.
    if len(value) // 4 * 3 > max_bytes + 3:
        raise PredictionError(TOO_LARGE, f"The image is over the limit of {max_bytes} bytes.")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise PredictionError(BAD_IMAGE, 'The "image" field is not valid base64.') from None
