"""Decoding client images from bytes, with explicit formats and size limits, and the process's
budget of bytes being decoded at once."""

import contextlib
import ctypes
import io
import threading
import warnings
from collections import deque
from collections.abc import Iterator

from PIL import Image, UnidentifiedImageError

from .errors import BAD_IMAGE, TOO_LARGE, PredictionError

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")

MIB = 1024 * 1024
DEFAULT_DECODE_BUDGET_BYTES = 128 * MIB

# Copies of the decoded frame that exist at once while Pillow loads it (measured with Pillow 13):
# WebP keeps libwebp's two canvases, the frame's bytes and Pillow's own copy; an RLE-compressed
# BMP goes through a bytearray and a bytes copy of it. Others decode straight into the image.
WEBP_COPIES = 4
BMP_RLE_COPIES = 3

# glibc keeps what one thread frees in that thread's arena, where other threads' decodes cannot
# reuse it, and after big frees it raises its thresholds (up to 32 MiB): each pool thread could
# then keep a budget's worth. Fixed thresholds make every allocation of this size or more (an
# image over a megapixel) come from the system and go back to it when freed, and keep at most
# this much free at the top of each heap.
ALLOCATOR_THRESHOLD_BYTES = 4 * MIB
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def decode_image(
    data: bytes, *, max_bytes: int, max_pixels: int, draft_size: tuple[int, int] | None = None
) -> Image.Image:
    """Decode one encoded image (never a path or URL) into a loaded Pillow image, outside any
    budget (the serving path opens, budgets and loads in steps: see pipeline.py).

    With `draft_size` (width, height), a JPEG is decoded at the smallest DCT scale (1/2, 1/4,
    1/8) that stays at least that size: far less work for a big photo and a small model.
    """
    image = open_image(data, max_bytes=max_bytes, max_pixels=max_pixels)
    if draft_size is not None:
        draft(image, draft_size)
    load_image(image)
    return image


def open_image(data: bytes, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """Read an image's header and check the limits; nothing is decoded yet (see load_image)."""
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
    return image


def draft(image: Image.Image, size: tuple[int, int]) -> None:
    """Have a JPEG decoded at the smallest DCT scale (1/2, 1/4, 1/8) that stays at least `size`
    (width, height); other formats decode at full size. The DCT scaling averages the pixels it
    drops, so it also anti-aliases: decoding a 640x480 photo for a 224x224 model at 320x240 takes
    half the time and the resize after it a third, and the input differs from a full decode's
    by at most a few levels in 255 (tests/test_preprocess_parity.py)."""
    if image.format == "JPEG":
        image.draft(image.mode, size)


def load_image(image: Image.Image) -> None:
    """Decode an opened image's pixels; a damaged body is a `bad_image`."""
    try:
        image.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise PredictionError(BAD_IMAGE, f"The image could not be decoded: {exc}") from None


def decode_bytes(image: Image.Image, data: bytes) -> int:
    """About the most memory that loading an opened image (`data`, its bytes) takes, from its
    header alone."""
    pixels = image.width * image.height * pixel_bytes(image.mode)
    if image.format == "WEBP":
        return pixels * WEBP_COPIES
    if image.format == "BMP" and image.tile and image.tile[0].codec_name == "bmp_rle":
        return pixels * BMP_RLE_COPIES
    if image.format == "JPEG":
        return pixels + _jpeg_coefficient_bytes(image, data)
    return pixels


def pixel_bytes(mode: str) -> int:
    """Bytes a pixel of `mode` takes in Pillow's memory (multi-band modes take 4)."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def _jpeg_coefficient_bytes(image: Image.Image, data: bytes) -> int:
    """libjpeg keeps every DCT coefficient of the whole image (64 per 8x8 block, 2 bytes each)
    when the file has more than one scan: progressive, or components in scans of their own.
    Zero for a single interleaved scan, which is decoded a row of blocks at a time."""
    layers = getattr(image, "layer", [])
    if not layers:
        return 0
    if not image.info.get("progressive") and _first_scan_components(data) >= len(layers):
        return 0
    # The coefficients are at full size, whatever the draft's scale (an upper bound of it).
    scale = image.decoderconfig[0] if image.decoderconfig else 1
    width, height = image.width * scale, image.height * scale
    h_max = max(max(layer[1] for layer in layers), 1)
    v_max = max(max(layer[2] for layer in layers), 1)
    total = 0
    for _, h, v, _ in layers:  # (id, horizontal sampling, vertical sampling, table)
        h, v = max(h, 1), max(v, 1)
        columns = _round_up(_ceil_div(width * h, h_max * 8), h)
        rows = _round_up(_ceil_div(height * v, v_max * 8), v)
        total += columns * rows * 128
    return total


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _round_up(a: int, b: int) -> int:
    return _ceil_div(a, b) * b


def _first_scan_components(data: bytes) -> int:
    """The number of components in a JPEG's first scan (0 when no scan header is found)."""
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return 0
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            position += 2
            continue
        if marker == 0xDA:
            return data[position + 4] if position + 4 < len(data) else 0
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    return 0


class DecodeBudget:
    """A process-wide count of bytes being decoded, with `total_bytes` at most at once.

    `hold(n)` blocks the calling thread (a pool thread, never the event loop) until `n` bytes
    fit, first come first served, so a large image is not overtaken forever by small ones. A
    request for more than the whole budget is refused with `too_large` at once.
    """

    def __init__(self, total_bytes: int):
        self.total_bytes = total_bytes
        self.used_bytes = 0
        self._changed = threading.Condition()
        self._waiting: deque[object] = deque()

    @property
    def waiting(self) -> int:
        """Holds waiting for room."""
        return len(self._waiting)

    @contextlib.contextmanager
    def hold(self, nbytes: int, *, what: str = "The image") -> Iterator[None]:
        if nbytes > self.total_bytes:
            raise PredictionError(
                TOO_LARGE,
                f"{what} would take about {_mib(nbytes)} MiB of memory to decode; this server "
                f"decodes at most {_mib(self.total_bytes)} MiB of images at once. Send it with "
                "fewer pixels.",
            )
        ticket = object()
        with self._changed:
            self._waiting.append(ticket)
            try:
                while self._waiting[0] is not ticket or self.used_bytes + nbytes > self.total_bytes:
                    self._changed.wait()
            finally:
                self._waiting.remove(ticket)
                self._changed.notify_all()  # the next in line may fit beside this one
            self.used_bytes += nbytes
        try:
            yield
        finally:
            with self._changed:
                self.used_bytes -= nbytes
                self._changed.notify_all()


def tune_allocator() -> None:
    """Fix the C library's allocation thresholds (see ALLOCATOR_THRESHOLD_BYTES); a no-op
    without glibc's `mallopt`."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, ALLOCATOR_THRESHOLD_BYTES)
        mallopt(M_TRIM_THRESHOLD, ALLOCATOR_THRESHOLD_BYTES)


_budgets: dict[int, DecodeBudget] = {}
_budgets_guard = threading.Lock()


def shared_budget(total_bytes: int) -> DecodeBudget:
    """The process's budget of `total_bytes` (one a process: only tests vary the setting). The
    first one also tunes the allocator, so that memory a decode frees is the system's again."""
    with _budgets_guard:
        if not _budgets:
            tune_allocator()
        if total_bytes not in _budgets:
            _budgets[total_bytes] = DecodeBudget(total_bytes)
        return _budgets[total_bytes]


def _mib(nbytes: int) -> str:
    return f"{nbytes / MIB:.0f}"
