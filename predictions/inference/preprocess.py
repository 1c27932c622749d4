"""Turning a decoded image, or a client's pixel array, into one model input (H x W x C, float32)."""

import numpy as np
from PIL import Image
from skimage.morphology import dilation, disk
from skimage.transform import resize as sk_resize

from .errors import BAD_REQUEST, BAD_SHAPE, PredictionError
from .spec import ModelSpec

STRETCH = "stretch"
FIT_INK = "fit_ink"

# A pixel counts as ink when it differs from the background by this share of the strongest ink.
INK_THRESHOLD = 0.25
# Below this contrast (on 0..1) a drawing is taken as blank.
MIN_INK_CONTRAST = 0.1
# fit_ink redraws the ink as a bitmap this many times finer than the input and counts it in
# blocks, thickening thin strokes until they cover this share of the bitmap (at most this many
# one-pixel steps): scikit-learn's digits, 32x32 bitmaps counted in 4x4 blocks, have about 30%.
BITMAP_FACTOR = 4
MIN_INK_COVERAGE = 0.3
MAX_THICKENING = 4


# Photos are resized by Pillow, whose resampling filter widens with the scale factor (so it
# anti-aliases) and works on the 8-bit image: 640x480 to 224x224 takes about 1 ms, against about
# 18 ms for scikit-image's Gaussian anti-aliasing on floats. Drawings (`fit_ink`) are first
# brought to at most this many pixels on their longer side, then handled by scikit-image.
FIT_INK_MAX_SIDE = 512


def image_to_input(image: Image.Image, spec: ModelSpec) -> np.ndarray:
    """Convert to the model's channels, resize to its input size, scale to its declared range."""
    height, width, channels = spec.input_shape
    if spec.resize == FIT_INK:
        factor = max(1.0, max(image.size) / FIT_INK_MAX_SIDE)
        size = (round(image.width / factor), round(image.height / factor))
        resized = _fit_ink(_to_array(image, channels, size=size), height, width)
    else:
        resized = _to_array(image, channels, size=(width, height))
    return _scale(resized, spec.scale_min, spec.scale_max)


def pixels_to_input(pixels, spec: ModelSpec) -> np.ndarray:
    """Check a nested array in the model's layout; it is fed as it is, with no scaling."""
    try:
        array = np.array(pixels)
    except ValueError:
        raise PredictionError(
            BAD_SHAPE, "The pixels array is ragged: rows differ in length."
        ) from None
    if array.dtype.kind not in "iuf":
        raise PredictionError(BAD_REQUEST, "The pixels must be a nested array of numbers.")
    expected = tuple(spec.input_shape)
    if array.shape == expected[:2] and expected[2] == 1:
        array = array[..., np.newaxis]
    elif array.shape == (1, *expected):
        array = array[0]
    if array.shape != expected:
        raise PredictionError(
            BAD_SHAPE,
            f"The pixels have shape {list(array.shape)}; the model takes {list(expected)} "
            "(height x width x channels).",
        )
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise PredictionError(BAD_REQUEST, "The pixels must be finite numbers.")
    return array


def _to_array(image: Image.Image, channels: int, *, size: tuple[int, int]) -> np.ndarray:
    """H x W x C float32 in 0..1 at `size` (width, height); transparent areas become white,
    as on a page."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    if image.mode.startswith("I"):
        # 16-bit grayscale: Pillow's convert("L") would clip it at 255 instead of scaling it.
        image, full_scale = image.convert("F"), 65535.0
    else:
        image, full_scale = image.convert("L" if channels == 1 else "RGB"), 255.0
    if image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    array = np.asarray(image, dtype=np.float32) / full_scale
    if array.ndim == 2:
        array = array[..., np.newaxis]
    if array.shape[2] != channels:
        array = np.repeat(array, channels, axis=2)
    return array


def _resize(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    if pixels.shape[:2] == (height, width):
        return pixels
    downscaling = pixels.shape[0] > height or pixels.shape[1] > width
    resized = sk_resize(
        pixels,
        (height, width, pixels.shape[2]),
        order=1,
        anti_aliasing=downscaling,
        preserve_range=True,
    )
    return resized.astype(np.float32, copy=False)


def _fit_ink(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Crop a drawing to its ink, centre it in a square, count it in blocks; ink 1, paper 0.

    The square is redrawn as a black-and-white bitmap BITMAP_FACTOR times finer than the input,
    its strokes are thickened until they cover MIN_INK_COVERAGE of it, and each input pixel is
    the share of ink in its block, scaled so the fullest block is 1. Thin and thick pens thus
    give strokes of a similar weight, as in training data made this way. Works for
    dark-on-light and light-on-dark drawings alike: the paper's shade is read off the image
    border and the ink is whatever differs from it.
    """
    gray = pixels.mean(axis=2)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    ink = np.abs(gray - np.median(border))
    strongest = float(ink.max())
    channels = pixels.shape[2]
    if strongest < MIN_INK_CONTRAST:
        return np.zeros((height, width, channels), dtype=np.float32)
    rows = np.flatnonzero((ink > INK_THRESHOLD * strongest).any(axis=1))
    cols = np.flatnonzero((ink > INK_THRESHOLD * strongest).any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    # Keep the aspect ratio: pad the short side so the ink sits centred in a square.
    side = max(crop.shape)
    square = np.zeros((side, side, 1), dtype=np.float32)
    top = (side - crop.shape[0]) // 2
    left = (side - crop.shape[1]) // 2
    square[top : top + crop.shape[0], left : left + crop.shape[1], 0] = crop
    fine = _resize(square, height * BITMAP_FACTOR, width * BITMAP_FACTOR)[..., 0]
    bitmap = fine >= fine.max() / 2
    for _ in range(MAX_THICKENING):
        if bitmap.mean() >= MIN_INK_COVERAGE:
            break
        bitmap = dilation(bitmap, disk(1))
    blocks = bitmap.reshape(height, BITMAP_FACTOR, width, BITMAP_FACTOR).mean(axis=(1, 3))
    resized = (blocks / blocks.max()).astype(np.float32)[..., np.newaxis]
    return np.repeat(resized, channels, axis=2) if channels > 1 else resized


def _scale(pixels: np.ndarray, low: float, high: float) -> np.ndarray:
    if (low, high) == (0.0, 1.0):
        return pixels
    return (pixels * (high - low) + low).astype(np.float32, copy=False)
