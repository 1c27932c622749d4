"""The costliest images the server's limits admit, one or more per accepted format and mode, and
a process's resident memory from /proc: for tests/test_memory_budget.py and `make bench`."""

import io
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

MAX_IMAGE_PIXELS = 25_000_000  # the server's default limit
# The largest square WebP with alpha that the default decode budget (128 MiB) admits on the
# drawing path: libwebp and Pillow hold four copies of its pixels while it loads.
WEBP_ADMITTED_SIDE = 2600


@dataclass(frozen=True)
class WorstImage:
    name: str
    data: bytes
    refused: bool = False  # over the default decode budget by itself: answered `too_large`


def worst_images(max_pixels: int = MAX_IMAGE_PIXELS) -> list[WorstImage]:
    """Eight images the default limits and budget admit, the first four meant for HTTP (the CMYK
    JPEG is over daphne's 1 MiB WebSocket frame), the next four for WebSocket frames; then two
    that the budget refuses. Each is at most about 1 MB to send, and tens of MB to decode."""
    side = math.isqrt(max_pixels)
    size = (side, side)
    return [
        # Issue 11's image: fully transparent RGBA, 100 MB decoded.
        WorstImage("png_rgba_transparent", _encode(Image.new("RGBA", size), "PNG", optimize=True)),
        WorstImage("jpeg_cmyk", _encode(_inked("CMYK", size, (0, 0, 0, 0)), "JPEG", quality=10)),
        # A progressive JPEG's coefficients are kept whole: 3 bytes a pixel for 4:2:0 colour.
        WorstImage(
            "jpeg_progressive_rgb",
            _encode(_inked("RGB", size, "white"), "JPEG", quality=50, progressive=True),
        ),
        WorstImage("bmp_rle8", _rle8_bmp(size)),
        WorstImage("png_gray_16_bit", _encode(_gray16(size), "PNG")),
        WorstImage("png_palette_transparency", _palette_png(size)),
        WorstImage("gif_animated", _animated_gif(size)),
        WorstImage(
            "webp_alpha",
            _encode(_inked("RGBA", (WEBP_ADMITTED_SIDE,) * 2, (0, 0, 0, 0)), "WEBP", lossless=True),
        ),
        # Refused before decoding: about 380 MiB and 190 MiB to decode.
        WorstImage(
            "webp_alpha_full_size",
            _encode(_inked("RGBA", size, (0, 0, 0, 0)), "WEBP", lossless=True),
            refused=True,
        ),
        WorstImage(
            "jpeg_progressive_cmyk",
            _encode(_inked("CMYK", size, (0, 0, 0, 0)), "JPEG", quality=10, progressive=True),
            refused=True,
        ),
    ]


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _inked(mode: str, size: tuple[int, int], paper) -> Image.Image:
    """A blank `size` image with one dark square in its middle third."""
    image = Image.new(mode, size, paper)
    ink = {"RGB": (20, 20, 20), "RGBA": (20, 20, 20, 255), "CMYK": (0, 0, 0, 230)}[mode]
    width, height = size
    ImageDraw.Draw(image).rectangle((width // 3, height // 3, 2 * width // 3, 2 * height // 3), ink)
    return image


def _gray16(size: tuple[int, int]) -> Image.Image:
    pixels = np.full(size[::-1], 60000, dtype=np.uint16)
    third = size[1] // 3, size[0] // 3
    pixels[third[0] : 2 * third[0], third[1] : 2 * third[1]] = 1000
    return Image.fromarray(pixels)


def _palette_png(size: tuple[int, int]) -> bytes:
    image = _inked("RGB", size, "white").convert("P", colors=4)
    return _encode(image, "PNG", transparency=0, optimize=True)


def _animated_gif(size: tuple[int, int]) -> bytes:
    frames = []
    for index in range(3):
        frame = Image.new("P", size, 0)
        frame.putpalette([255, 255, 255, 200, 0, 0, 0, 160, 0, 0, 0, 200] + [0] * 756)
        width, height = size
        box = (width // 3, height // 3, 2 * width // 3, 2 * height // 3)
        ImageDraw.Draw(frame).rectangle(box, index + 1)
        frames.append(frame)
    buffer = io.BytesIO()
    frames[0].save(
        buffer, "GIF", save_all=True, append_images=frames[1:], transparency=0, duration=100
    )
    return buffer.getvalue()


def _rle8_bmp(size: tuple[int, int]) -> bytes:
    """An 8-bit run-length encoded BMP of one colour (Pillow writes no RLE, so by hand)."""
    width, height = size
    runs = b"".join(bytes([255, 1]) for _ in range(width // 255))
    if width % 255:
        runs += bytes([width % 255, 1])
    pixels = (runs + b"\x00\x00") * (height - 1) + runs + b"\x00\x01"  # end of line / of bitmap
    palette = b"\xff\xff\xff\x00\x30\x30\x30\x00" + b"\x00" * 4 * 254
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    header = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    return header + info + palette + pixels


# --- Memory of a process --------------------------------------------------------------------


def memory_bytes(pid: int) -> dict[str, int]:
    """Current (`rss`) and peak (`peak`, VmHWM) resident memory of a process, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            fields[name] = int(rest.split()[0]) * 1024
    return {"rss": fields["VmRSS"], "peak": fields["VmHWM"]}


def reset_peak(pid: int) -> None:
    """Set a process's peak resident memory (VmHWM) to its current one (Linux's clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
