"""What the model sees: one model input as a PNG data URL a page can show (`input_preview`)."""

import base64
import io

import numpy as np
from PIL import Image

# The preview's longer side is at least this many pixels (a whole-number upscale gets there).
MIN_SIDE = 112
# zlib's fastest level: a preview is shown once and thrown away, so speed beats bytes.
PNG_COMPRESS_LEVEL = 1


def input_preview(model_input: np.ndarray, *, scale_min: float, scale_max: float) -> str:
    """`model_input` (height x width x channels, as the model gets it) as a
    `data:image/png;base64,...` URL.

    Values are mapped from [scale_min, scale_max] to 0-255 (clipped, rounded); an integer
    input is mapped from its dtype's own range instead (int8's -128..127, uint8 as it is).
    One channel gives a grey image (mode L), three an RGB one; any other count shows its
    first channel in grey. The image is upscaled nearest-neighbour by a whole factor,
    ceil(MIN_SIDE / longer side), and never downscaled. `model_input` is only read.
    """
    array = np.asarray(model_input)
    if array.ndim == 3:
        array = array if array.shape[2] in (1, 3) else array[..., :1]
        array = array[..., 0] if array.shape[2] == 1 else array
    if array.dtype.kind in "iu":
        info = np.iinfo(array.dtype)
        scale_min, scale_max = float(info.min), float(info.max)
    pixels = _to_bytes(array, scale_min, scale_max)
    image = Image.fromarray(pixels, "L" if pixels.ndim == 2 else "RGB")
    factor = -(-MIN_SIDE // max(image.size))  # ceil: 1 for an input already that big
    if factor > 1:
        image = image.resize(
            (image.width * factor, image.height * factor), Image.Resampling.NEAREST
        )
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _to_bytes(array: np.ndarray, low: float, high: float) -> np.ndarray:
    """[low, high] onto 0-255 as uint8, in one float32 working copy (a zero-width range: 0)."""
    if array.dtype == np.uint8 and (low, high) == (0.0, 255.0):
        return np.ascontiguousarray(array)
    factor = 255.0 / (high - low) if high != low else 0.0
    work = np.subtract(array, low, dtype=np.float32)
    work *= np.float32(factor)
    np.clip(work, 0, 255, out=work)
    np.rint(work, out=work)
    return work.astype(np.uint8)
