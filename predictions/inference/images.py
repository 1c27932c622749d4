"""Decoding client images from bytes, with explicit formats and size limits."""

import io
import warnings

from PIL import Image, UnidentifiedImageError

from .errors import BAD_IMAGE, TOO_LARGE, PredictionError

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")


def decode_image(
    data: bytes, *, max_bytes: int, max_pixels: int, draft_size: tuple[int, int] | None = None
) -> Image.Image:
    """Decode one encoded image (never a path or URL) into a loaded Pillow image.

    With `draft_size` (width, height), a JPEG is decoded at the smallest DCT scale (1/2, 1/4,
    1/8) that stays at least twice that size: far less work for a big photo and a small model.
    """
    if len(data) > max_bytes:
        raise PredictionError(
            TOO_LARGE, f"The image is {len(data)} bytes; the limit is {max_bytes} bytes."
        )
    if not data:
        raise PredictionError(BAD_IMAGE, "The image is empty.")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice it; our own pixel check below decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        raise PredictionError(
            BAD_IMAGE,
            "The data is not an image in an accepted format (PNG, JPEG, WebP, BMP or GIF).",
        ) from None
    except Image.DecompressionBombError as exc:
        raise PredictionError(TOO_LARGE, f"The image has too many pixels: {exc}") from None
    except (OSError, ValueError, SyntaxError) as exc:  # A damaged or truncated header.
        raise PredictionError(BAD_IMAGE, f"The image could not be decoded: {exc}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise PredictionError(
            TOO_LARGE,
            f"The image is {width}x{height} pixels; the limit is {max_pixels} pixels.",
        )
    if draft_size is not None and image.format == "JPEG":
        image.draft(image.mode, (draft_size[0] * 2, draft_size[1] * 2))
    try:
        image.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise PredictionError(BAD_IMAGE, f"The image could not be decoded: {exc}") from None
    return image
