"""Turning a decoded image, or a client's pixel array, into one model input (H x W x C, float32)."""

import numpy as np
from PIL import Image

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
# Pillow's two-step resize: first a box reduction by whole factors, down to at least this many
# times the target size, then the filter. The reduction is done here, on the decoded image.
REDUCING_GAP = 2.0
# A big image is converted and reduced a tile of at most this many pixels at a time (tiles
# aligned with the reduction's blocks), so no converted copy of it exists at full size.
TILE_PIXELS = 512 * 512
# What one tile's conversion holds at once, a pixel: the tile, its RGBA copy, the white ground,
# the composite and the converted tile (4 bytes each).
TILE_BYTES_PER_PIXEL = 20
# The resized image and its float copies, a pixel of the resize target.
TARGET_BYTES_PER_PIXEL = 16


def image_to_input(image: Image.Image, spec: ModelSpec) -> np.ndarray:
    """Convert to the model's channels, resize to its input size, scale to its declared range.

    The image is converted (transparency onto white, 16-bit gray kept in its range) and
    box-reduced a tile at a time, then resized from the reduced copy: the same pixels as
    converting it whole and resizing it with Pillow's `reducing_gap`, without a converted copy
    at full size.
    """
    height, width, channels = spec.input_shape
    size = target_size(image.size, spec)
    factors = _reduction(image.size, size)
    reduced, full_scale = _reduce(image, channels, factors)
    box = (0, 0, image.width / factors[0], image.height / factors[1])
    if reduced.size != size or factors != (1, 1):
        reduced = reduced.resize(size, Image.Resampling.BILINEAR, box, REDUCING_GAP)
    pixels = np.asarray(reduced)
    if pixels.ndim == 2:
        pixels = pixels[..., np.newaxis]
    if pixels.shape[2] != channels:
        pixels = np.repeat(pixels, channels, axis=2)
    if spec.resize == FIT_INK:
        pixels = _fit_ink(pixels.astype(np.float32) / full_scale, height, width)
        return _scale(pixels, spec.scale_min, spec.scale_max)
    return _to_range(pixels, full_scale, spec.scale_min, spec.scale_max)


def load_tools(spec: ModelSpec) -> None:
    """Import what a version's preprocessing needs, with its model (not on its first frame):
    scikit-image for drawings only, so a process serving photos never loads it (43 MB of
    RSS and 0.25 s here)."""
    if spec.resize == FIT_INK:
        import skimage.morphology
        import skimage.transform  # noqa: F401


def working_bytes(size: tuple[int, int], spec: ModelSpec) -> int:
    """About the most memory image_to_input takes beyond the decoded image itself, for an image
    of `size` (width, height): the reduced copy, one tile's conversion, the resized input."""
    width, height = size
    target = target_size(size, spec)
    fx, fy = _reduction(size, target)
    reduced = -(-width // fx) * -(-height // fy) * 4
    tile = min(width * height, max(TILE_PIXELS, fx * fy)) * TILE_BYTES_PER_PIXEL
    return reduced + tile + target[0] * target[1] * TARGET_BYTES_PER_PIXEL


def target_size(size: tuple[int, int], spec: ModelSpec) -> tuple[int, int]:
    """(width, height) Pillow resizes an image of `size` to: the model's input, or for a drawing
    at most FIT_INK_MAX_SIDE on its longer side."""
    height, width, _ = spec.input_shape
    if spec.resize != FIT_INK:
        return width, height
    factor = max(1.0, max(size) / FIT_INK_MAX_SIDE)
    return max(1, round(size[0] / factor)), max(1, round(size[1] / factor))


def _reduction(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """The whole factors (x, y) Pillow's resize would box-reduce by first (smaller where a
    block would not fit in a tile)."""
    if size == target:
        return 1, 1
    fx = int(size[0] / target[0] / REDUCING_GAP) or 1
    fy = int(size[1] / target[1] / REDUCING_GAP) or 1
    while fx * fy > TILE_PIXELS:  # only for a tiny input: the filter does the rest
        fx, fy = max(1, fx // 2), max(1, fy // 2)
    return fx, fy


def _reduce(
    image: Image.Image, channels: int, factors: tuple[int, int]
) -> tuple[Image.Image, float]:
    """`image` converted (see _convert) and box-reduced by `factors`, with its full scale.

    A big image goes a tile at a time; tiles start at multiples of the factors, so each block
    is reduced whole, as in one reduction of the whole image.
    """
    fx, fy = factors
    mode, full_scale = _working_mode(image, channels)
    if image.mode == mode and not _has_alpha(image):  # nothing to convert (most photos)
        return _reduce_tile(image, factors), full_scale
    width, height = image.size
    if width * height <= TILE_PIXELS:
        return _reduce_tile(_convert(image, mode), factors), full_scale
    if width * fy <= TILE_PIXELS:
        columns, rows = width, TILE_PIXELS // width // fy * fy
    else:
        columns, rows = TILE_PIXELS // fy // fx * fx, fy
    reduced = Image.new(mode, (-(-width // fx), -(-height // fy)))
    for top in range(0, height, rows):
        for left in range(0, width, columns):
            tile = image.crop((left, top, min(left + columns, width), min(top + rows, height)))
            reduced.paste(_reduce_tile(_convert(tile, mode), factors), (left // fx, top // fy))
    return reduced, full_scale


def _reduce_tile(image: Image.Image, factors: tuple[int, int]) -> Image.Image:
    return image if factors == (1, 1) else image.reduce(factors)


def _working_mode(image: Image.Image, channels: int) -> tuple[str, float]:
    """The mode images are reduced in, and its full scale: 16-bit grayscale as floats (Pillow's
    convert("L") would clip it at 255 instead of scaling it), else 8-bit L or RGB."""
    if not _has_alpha(image) and image.mode.startswith("I"):
        return "F", 65535.0
    return ("L" if channels == 1 else "RGB"), 255.0


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info


def _convert(image: Image.Image, mode: str) -> Image.Image:
    """`image` in `mode`; transparent areas become white, as on a page."""
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return image.convert(mode)


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


def _resize(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    if pixels.shape[:2] == (height, width):
        return pixels
    from skimage.transform import resize as sk_resize

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
    from skimage.morphology import dilation, disk

    for _ in range(MAX_THICKENING):
        if bitmap.mean() >= MIN_INK_COVERAGE:
            break
        bitmap = dilation(bitmap, disk(1))
    blocks = bitmap.reshape(height, BITMAP_FACTOR, width, BITMAP_FACTOR).mean(axis=(1, 3))
    resized = (blocks / blocks.max()).astype(np.float32)[..., np.newaxis]
    return np.repeat(resized, channels, axis=2) if channels > 1 else resized


def _to_range(pixels: np.ndarray, full_scale: float, low: float, high: float) -> np.ndarray:
    """8-bit (or 16-bit as float) pixels mapped onto [low, high] as float32, into one array
    written in place (a photo's whole preprocessing after the resize)."""
    model_input = np.empty(pixels.shape, dtype=np.float32)
    np.divide(pixels, np.float32(full_scale), out=model_input, casting="unsafe")
    if (low, high) != (0.0, 1.0):
        model_input *= high - low
        model_input += low
    return model_input


def _scale(pixels: np.ndarray, low: float, high: float) -> np.ndarray:
    if (low, high) == (0.0, 1.0):
        return pixels
    return (pixels * (high - low) + low).astype(np.float32, copy=False)
