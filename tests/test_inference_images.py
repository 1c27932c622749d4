"""Decoding client images and turning images or pixel arrays into model inputs (no Django DB, no TF)."""

import io
import re
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from predictions.inference import preprocess
from predictions.inference.errors import PredictionError
from predictions.inference.images import decode_image
from predictions.inference.preprocess import image_to_input, pixels_to_input
from predictions.inference.spec import ModelSpec

ACCEPTED = ["PNG", "JPEG", "WEBP", "BMP", "GIF"]
ROOMY = {"max_bytes": 10_000_000, "max_pixels": 50_000_000}


def make_spec(shape=(8, 8, 1), **options) -> ModelSpec:
    return ModelSpec(
        version_id=1,
        number=1,
        file_name="x",
        sha256="0" * 64,
        input_shape=shape,
        labels=(),
        **options,
    )


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def noise_image(size=(32, 32)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def assert_error(excinfo: pytest.ExceptionInfo, code: str) -> None:
    error = excinfo.value
    assert error.code == code
    assert error.message == str(error)
    assert re.search(r"[A-Za-z]{3,}", error.message), error.message


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a size in its header, with a tiny (wrong) data chunk."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def ink_centre(array: np.ndarray) -> tuple[float, float]:
    weights = array[..., 0].astype(np.float64)
    rows, cols = np.indices(weights.shape)
    total = weights.sum()
    return float((rows * weights).sum() / total), float((cols * weights).sum() / total)


# --- decode_image -----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ACCEPTED)
def test_decode_image_accepts_the_contract_formats(fmt):
    data = encode(Image.new("RGB", (12, 7), (200, 40, 40)), fmt)

    image = decode_image(data, **ROOMY)

    assert image.format == fmt
    assert image.size == (12, 7)
    # Loaded: the pixels are there without touching the bytes again.
    assert image.convert("RGB").getpixel((0, 0))[0] > 150


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(encode(Image.new("RGB", (8, 8), "white"), "TIFF"), id="tiff"),
        pytest.param(encode(Image.new("RGB", (8, 8), "white"), "PPM"), id="ppm"),
        pytest.param(b"this is certainly not an image", id="garbage"),
        pytest.param(bytes(range(256)) * 4, id="binary-garbage"),
        pytest.param(b"", id="empty"),
    ],
)
def test_decode_image_refuses_what_is_not_an_accepted_image(data):
    with pytest.raises(PredictionError) as excinfo:
        decode_image(data, **ROOMY)
    assert_error(excinfo, "bad_image")


def test_decode_image_refuses_more_bytes_than_the_limit():
    data = encode(noise_image(), "PNG")

    assert decode_image(data, max_bytes=len(data), max_pixels=10_000).size == (32, 32)
    with pytest.raises(PredictionError) as excinfo:
        decode_image(data, max_bytes=len(data) - 1, max_pixels=10_000)
    assert_error(excinfo, "too_large")
    assert str(len(data)) in excinfo.value.message


def test_decode_image_refuses_more_pixels_than_the_limit():
    data = encode(Image.new("L", (6000, 6000), 255), "PNG")
    assert len(data) < 1_000_000  # Tiny to send, huge to decode.

    with pytest.raises(PredictionError) as excinfo:
        decode_image(data, max_bytes=1_000_000, max_pixels=1_000_000)
    assert_error(excinfo, "too_large")
    assert "6000x6000" in excinfo.value.message


def test_decode_image_accepts_exactly_the_pixel_limit():
    data = encode(Image.new("L", (100, 50), 255), "PNG")

    assert decode_image(data, max_bytes=1_000_000, max_pixels=5000).size == (100, 50)
    with pytest.raises(PredictionError) as excinfo:
        decode_image(data, max_bytes=1_000_000, max_pixels=4999)
    assert_error(excinfo, "too_large")


def test_decode_image_refuses_a_header_beyond_pillows_bomb_limit():
    # 40000 x 40000 is far past Pillow's own decompression-bomb limit: refused from the header.
    data = png_header_only(40_000, 40_000)

    with pytest.raises(PredictionError) as excinfo:
        decode_image(data, max_bytes=1_000_000, max_pixels=10**12)
    assert_error(excinfo, "too_large")


@pytest.mark.parametrize("keep", [20, 0.1, 0.5, 0.9])
@pytest.mark.parametrize("fmt", ACCEPTED)
def test_decode_image_refuses_a_truncated_image_as_bad_image(fmt, keep):
    data = encode(noise_image(), fmt)
    cut = keep if isinstance(keep, int) else int(len(data) * keep)

    with pytest.raises(PredictionError) as excinfo:
        decode_image(data[:cut], **ROOMY)
    assert_error(excinfo, "bad_image")


def corrupted(fmt: str, offset: int, value: int) -> bytes:
    data = bytearray(encode(noise_image(), fmt))
    data[offset] = value
    return bytes(data)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(corrupted("PNG", 11, 0), id="png-empty-ihdr"),
        pytest.param(corrupted("BMP", 14, 0), id="bmp-unknown-header"),
        pytest.param(corrupted("BMP", 28, 0), id="bmp-zero-bit-depth"),
    ],
)
def test_decode_image_refuses_a_corrupt_header_as_bad_image(data):
    with pytest.raises(PredictionError) as excinfo:
        decode_image(data, **ROOMY)
    assert_error(excinfo, "bad_image")


# --- image_to_input: channels, range, transparency, stretch ----------------------------------


@pytest.mark.parametrize(
    ("mode", "channels"),
    [("RGB", 1), ("L", 3), ("RGB", 3), ("L", 1), ("P", 3), ("1", 1), ("CMYK", 3)],
)
def test_image_to_input_has_the_model_shape_and_float32(mode, channels):
    image = Image.new("RGB", (30, 20), (90, 160, 30)).convert(mode)

    array = image_to_input(image, make_spec((10, 12, channels)))

    assert array.shape == (10, 12, channels)
    assert array.dtype == np.float32
    assert 0.0 <= array.min() <= array.max() <= 1.0


def test_image_to_input_gray_to_three_channels_repeats_the_gray():
    image = Image.new("L", (4, 4), 128)

    array = image_to_input(image, make_spec((4, 4, 3)))

    np.testing.assert_allclose(array, np.full((4, 4, 3), 128 / 255), atol=1e-6)


def test_image_to_input_rgb_to_one_channel_is_luminance():
    image = Image.new("RGB", (4, 4), (255, 0, 0))

    array = image_to_input(image, make_spec((4, 4, 1)))

    # ITU-R 601-2 luma of pure red: 0.299.
    np.testing.assert_allclose(array, 0.299, atol=0.005)


@pytest.mark.parametrize(("low", "high"), [(0.0, 1.0), (0.0, 16.0), (-1.0, 1.0), (0.0, 255.0)])
def test_image_to_input_follows_the_declared_range(low, high):
    # Left half black, right half white, already the model's size: no interpolation to blur it.
    image = Image.new("L", (8, 8), 255)
    ImageDraw.Draw(image).rectangle((0, 0, 3, 7), fill=0)
    spec = make_spec((8, 8, 1), scale_min=low, scale_max=high)

    array = image_to_input(image, spec)

    assert array.dtype == np.float32
    assert {float(v) for v in np.unique(array)} == {low, high}


def test_image_to_input_default_range_is_zero_to_one():
    image = Image.new("L", (2, 1))
    image.putdata([0, 255])

    array = image_to_input(image, make_spec((1, 2, 1)))

    assert array[0, :, 0].tolist() == [0.0, 1.0]


def transparent_drawing(mode: str = "RGBA") -> Image.Image:
    """Black opaque square on a fully transparent (and black, underneath) background."""
    image = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    ImageDraw.Draw(image).rectangle((2, 2, 5, 5), fill=(0, 0, 0, 255))
    return image.convert(mode)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: transparent_drawing("RGBA"), id="RGBA"),
        pytest.param(lambda: transparent_drawing("LA"), id="LA"),
        pytest.param(
            lambda: decode_image(encode(transparent_drawing("RGBA"), "PNG"), **ROOMY), id="png"
        ),
        pytest.param(
            lambda: decode_image(
                encode(transparent_drawing("RGBA"), "WEBP", lossless=True), **ROOMY
            ),
            id="webp",
        ),
    ],
)
@pytest.mark.parametrize("channels", [1, 3])
def test_image_to_input_composites_transparency_on_white(make, channels):
    array = image_to_input(make(), make_spec((8, 8, channels)))

    # The transparent background is paper (white), not the black hidden under it.
    assert array[0, 0].tolist() == [1.0] * channels
    assert array[7, 7].tolist() == [1.0] * channels
    assert array[3, 3].tolist() == [0.0] * channels
    assert float(array.mean()) == pytest.approx(48 / 64)


def test_image_to_input_composites_a_gif_transparent_index_on_white():
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 10, 10, 10] + [0] * 762)
    ImageDraw.Draw(image).rectangle((2, 2, 5, 5), fill=1)
    data = encode(image, "GIF", transparency=0)

    array = image_to_input(decode_image(data, **ROOMY), make_spec((8, 8, 1)))

    assert array[0, 0, 0] == 1.0
    assert array[3, 3, 0] < 0.1


def half_red_half_blue(size) -> Image.Image:
    width, height = size
    image = Image.new("RGB", size, (255, 0, 0))
    ImageDraw.Draw(image).rectangle((width // 2, 0, width - 1, height - 1), fill=(0, 0, 255))
    return image


@pytest.mark.parametrize("size", [(40, 20), (4, 2), (300, 9)], ids=["down", "up", "mixed"])
def test_stretch_resize_keeps_left_and_right_halves(size):
    array = image_to_input(half_red_half_blue(size), make_spec((8, 8, 3)))

    assert array.shape == (8, 8, 3)
    left, right = array[:, :3], array[:, 5:]
    assert (left[..., 0] > 0.8).all() and (left[..., 2] < 0.2).all()
    assert (right[..., 2] > 0.8).all() and (right[..., 0] < 0.2).all()
    assert (array[..., 1] < 0.05).all()


def test_stretch_to_the_same_size_leaves_pixels_alone():
    image = noise_image((8, 8))

    array = image_to_input(image, make_spec((8, 8, 3)))

    np.testing.assert_array_equal(array, np.asarray(image, dtype=np.float32) / 255)


def test_image_to_input_reads_a_16_bit_grayscale_png_in_its_own_range():
    # Half of 16-bit white is mid gray, not white.
    image = Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16))
    decoded = decode_image(encode(image, "PNG"), **ROOMY)

    array = image_to_input(decoded, make_spec((8, 8, 1)))

    np.testing.assert_allclose(array, 0.5, atol=0.01)


# --- image_to_input on big images: a tile at a time, the same pixels ----------------------------


def whole_image_input(image: Image.Image, spec: ModelSpec) -> np.ndarray:
    """image_to_input as it was before tiles: convert the whole image, then one Pillow resize."""
    height, width, channels = spec.input_shape
    size = (width, height)
    if spec.resize == "fit_ink":
        factor = max(1.0, max(image.size) / preprocess.FIT_INK_MAX_SIDE)
        size = (round(image.width / factor), round(image.height / factor))
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    if image.mode.startswith("I"):
        image, full_scale = image.convert("F"), 65535.0
    else:
        image, full_scale = image.convert("L" if channels == 1 else "RGB"), 255.0
    if image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    array = np.asarray(image, dtype=np.float32) / full_scale
    array = array[..., np.newaxis] if array.ndim == 2 else array
    array = np.repeat(array, channels, axis=2) if array.shape[2] != channels else array
    if spec.resize == "fit_ink":
        array = preprocess._fit_ink(array, height, width)
    return preprocess._scale(array, spec.scale_min, spec.scale_max)


def busy_image(mode: str, size) -> Image.Image:
    """Noise (random alpha where the mode has alpha) with a dark opaque disc; 16-bit for I;16."""
    rng = np.random.default_rng(3)
    width, height = size
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (height, width)).astype(np.uint16))
    image = Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), "RGBA")
    ImageDraw.Draw(image).ellipse(
        (width // 4, height // 4, width // 2, height // 2), (0, 0, 0, 255)
    )
    if mode in ("PA", "P+transparency"):
        palette = image.convert("RGB").convert("P")
        if mode == "P+transparency":
            palette.info["transparency"] = 3
            return palette
        image, alpha = palette.convert("PA"), image.getchannel("A")
        image.putalpha(alpha)  # quicker than Pillow's RGBA to PA
        return image
    return image.convert(mode)


@pytest.mark.parametrize(
    "mode", ["RGBA", "LA", "PA", "P+transparency", "RGB", "L", "CMYK", "1", "I;16"]
)
@pytest.mark.parametrize(
    ("size", "spec"),
    [
        ((901, 613), make_spec((16, 16, 3))),
        ((613, 901), make_spec((28, 28, 1))),
        ((3001, 7), make_spec((8, 8, 3))),
        ((500, 300), make_spec((100, 300, 1))),  # enlarged across, reduced down
        ((1500, 1100), make_spec((28, 28, 1), resize="fit_ink")),
        ((700, 1900), make_spec((16, 16, 3), resize="fit_ink")),
    ],
    ids=["photo", "portrait", "strip", "mixed", "drawing", "tall-drawing"],
)
def test_tiled_input_equals_converting_the_whole_image(monkeypatch, mode, size, spec):
    monkeypatch.setattr(preprocess, "TILE_PIXELS", 128 * 128)
    image = busy_image(mode, size)

    np.testing.assert_array_equal(image_to_input(image, spec), whole_image_input(image, spec))


def test_no_conversion_of_a_big_image_happens_at_full_size(monkeypatch):
    sizes = []
    convert, composite = Image.Image.convert, Image.alpha_composite

    def spy_convert(image, *args, **kwargs):
        sizes.append(image.width * image.height)
        return convert(image, *args, **kwargs)

    def spy_composite(under, over):
        sizes.append(over.width * over.height)
        return composite(under, over)

    monkeypatch.setattr(Image.Image, "convert", spy_convert)
    monkeypatch.setattr(Image, "alpha_composite", spy_composite)
    image = Image.new("RGBA", (3000, 2000), (0, 0, 0, 0))

    for spec in (make_spec((16, 16, 3)), make_spec((28, 28, 1), resize="fit_ink")):
        sizes.clear()
        image_to_input(image, spec)
        assert sizes and max(sizes) <= preprocess.TILE_PIXELS


# --- fit_ink ----------------------------------------------------------------------------------


def plus_sign(canvas=(40, 40), box=(8, 8, 31, 31), ink=0, paper=255, width=4) -> Image.Image:
    image = Image.new("L", canvas, paper)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = box
    middle_x, middle_y = (left + right) // 2, (top + bottom) // 2
    draw.line((left, middle_y, right, middle_y), fill=ink, width=width)
    draw.line((middle_x, top, middle_x, bottom), fill=ink, width=width)
    return image


FIT = make_spec((16, 16, 1), resize="fit_ink")


def test_fit_ink_dark_on_light_equals_light_on_dark():
    dark_on_light = plus_sign()
    light_on_dark = ImageOps.invert(dark_on_light)

    a = image_to_input(dark_on_light, FIT)
    b = image_to_input(light_on_dark, FIT)

    assert a.max() == 1.0
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_fit_ink_works_on_colour_drawings_too():
    red_on_yellow = plus_sign().convert("RGB")
    pixels = np.asarray(red_on_yellow).copy()
    ink = pixels[..., 0] == 0
    pixels[ink] = (200, 0, 0)
    pixels[~ink] = (250, 240, 120)

    array = image_to_input(Image.fromarray(pixels), FIT)
    reference = image_to_input(plus_sign(), FIT)

    np.testing.assert_allclose(array, reference, atol=1e-5)


def test_fit_ink_maps_ink_high_and_paper_to_zero():
    array = image_to_input(plus_sign(), FIT)[..., 0]

    # The plus fills its box: its centre is ink, the box corners are paper.
    assert array[7:9, 7:9].min() > 0.9
    for corner in (array[0, 0], array[0, -1], array[-1, 0], array[-1, -1]):
        assert corner == 0.0
    assert array.min() == 0.0
    assert array.max() == 1.0


@pytest.mark.parametrize("shade", [255, 0, 128, 252])
@pytest.mark.parametrize("channels", [1, 3])
def test_fit_ink_on_a_blank_image_is_all_zeros(shade, channels):
    image = Image.new("L", (40, 30), shade)
    if shade == 252:
        # Too faint to count as a drawing.
        ImageDraw.Draw(image).rectangle((10, 10, 20, 20), fill=248)

    array = image_to_input(image, make_spec((16, 16, channels), resize="fit_ink"))

    assert array.shape == (16, 16, channels)
    assert array.dtype == np.float32
    assert not array.any()


def test_fit_ink_crops_and_centres_a_small_drawing_in_a_corner():
    image = Image.new("L", (300, 200), 255)
    ImageDraw.Draw(image).ellipse((6, 8, 36, 38), outline=0, width=3)
    spec = make_spec((28, 28, 1), resize="fit_ink")

    stretched = image_to_input(ImageOps.invert(image), make_spec((28, 28, 1)))
    array = image_to_input(image, spec)

    # Stretched, the ring sits in the top-left corner ...
    assert max(ink_centre(stretched)) < 5
    # ... fitted, it is centred and fills the frame: cropped to its ink.
    row, col = ink_centre(array)
    assert row == pytest.approx(13.5, abs=1.0)
    assert col == pytest.approx(13.5, abs=1.0)
    assert array[0].max() > 0.5 and array[-1].max() > 0.5
    assert array[:, 0].max() > 0.5 and array[:, -1].max() > 0.5
    # A ring: its middle is paper.
    assert array[13:15, 13:15].max() < 0.1


def test_fit_ink_keeps_the_aspect_ratio_of_a_wide_drawing():
    image = Image.new("L", (100, 100), 255)
    ImageDraw.Draw(image).rectangle((10, 40, 89, 59), fill=0)  # 80 wide, 20 tall.

    array = image_to_input(image, make_spec((16, 16, 1), resize="fit_ink"))[..., 0]

    ink_rows = np.flatnonzero(array.max(axis=1) > 0.5)
    ink_cols = np.flatnonzero(array.max(axis=0) > 0.5)
    assert len(ink_cols) == 16
    assert 3 <= len(ink_rows) <= 6
    assert ink_rows.mean() == pytest.approx(7.5, abs=1.0)


@pytest.mark.parametrize(("low", "high"), [(0.0, 16.0), (0.0, 1.0), (-1.0, 1.0), (0.0, 255.0)])
def test_fit_ink_peak_is_the_declared_maximum(low, high):
    spec = make_spec((8, 8, 1), resize="fit_ink", scale_min=low, scale_max=high)

    array = image_to_input(plus_sign(canvas=(64, 64), box=(20, 20, 43, 43)), spec)

    assert array.dtype == np.float32
    assert float(array.max()) == pytest.approx(high)
    assert float(array.min()) == pytest.approx(low)


@pytest.mark.parametrize("size", [(3000, 2), (1, 2000)])
def test_fit_ink_takes_a_drawing_thinner_than_a_pixel_once_fitted(size):
    image = Image.new("L", size, 255)
    ImageDraw.Draw(image).line((0, 0, *size), fill=0)

    array = image_to_input(image, make_spec((8, 8, 1), resize="fit_ink"))

    assert array.shape == (8, 8, 1)
    assert array.max() == 1.0


def test_fit_ink_with_three_channels_repeats_the_ink():
    array = image_to_input(plus_sign(), make_spec((16, 16, 3), resize="fit_ink"))

    assert array.shape == (16, 16, 3)
    np.testing.assert_array_equal(array[..., 0], array[..., 1])
    np.testing.assert_array_equal(array[..., 0], array[..., 2])
    np.testing.assert_allclose(array[..., :1], image_to_input(plus_sign(), FIT), atol=1e-6)


# --- pixels_to_input --------------------------------------------------------------------------


def test_pixels_in_the_exact_shape_are_fed_without_scaling():
    spec = make_spec((2, 3, 1), scale_min=-1.0, scale_max=1.0)
    pixels = [[[0], [200.5], [-7]], [[16], [1], [3]]]

    array = pixels_to_input(pixels, spec)

    assert array.shape == (2, 3, 1)
    assert array.dtype == np.float32
    assert array[..., 0].tolist() == [[0.0, 200.5, -7.0], [16.0, 1.0, 3.0]]


def test_pixels_height_by_width_are_accepted_for_one_channel():
    array = pixels_to_input([[1, 2, 3], [4, 5, 6]], make_spec((2, 3, 1)))

    assert array.shape == (2, 3, 1)
    assert array.dtype == np.float32
    assert array[..., 0].tolist() == [[1, 2, 3], [4, 5, 6]]


def test_pixels_with_a_batch_of_one_are_accepted():
    pixels = np.arange(2 * 3 * 3).reshape(1, 2, 3, 3).tolist()

    array = pixels_to_input(pixels, make_spec((2, 3, 3)))

    assert array.shape == (2, 3, 3)
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, np.arange(18).reshape(2, 3, 3))


@pytest.mark.parametrize(
    ("pixels", "shape"),
    [
        pytest.param([[1, 2, 3], [4, 5, 6]], (2, 3, 3), id="2d-for-3-channels"),
        pytest.param([[[1], [2]], [[3], [4]], [[5], [6]]], (2, 3, 1), id="transposed"),
        pytest.param([1, 2, 3, 4, 5, 6], (2, 3, 1), id="flat"),
        pytest.param([], (2, 3, 1), id="empty"),
        pytest.param([[[[1], [2], [3]], [[4], [5], [6]]]] * 2, (2, 3, 1), id="batch-of-two"),
        pytest.param([[[[[1], [2], [3]], [[4], [5], [6]]]]], (2, 3, 1), id="too-deep"),
        pytest.param(np.zeros((2, 3, 3)).tolist(), (2, 3, 1), id="too-many-channels"),
        pytest.param(np.zeros((28, 28)).tolist(), (8, 8, 1), id="wrong-size"),
    ],
)
def test_pixels_in_another_shape_are_bad_shape(pixels, shape):
    with pytest.raises(PredictionError) as excinfo:
        pixels_to_input(pixels, make_spec(shape))
    assert_error(excinfo, "bad_shape")
    assert str(list(shape)) in excinfo.value.message


@pytest.mark.parametrize(
    "pixels",
    [
        pytest.param([[1, 2, 3], [4, 5]], id="rows"),
        pytest.param([[[1], [2], [3]], [[4], [5], [6, 7]]], id="channels"),
        pytest.param([[1, 2, 3], 4], id="row-and-number"),
    ],
)
def test_ragged_pixels_are_bad_shape(pixels):
    with pytest.raises(PredictionError) as excinfo:
        pixels_to_input(pixels, make_spec((2, 3, 1)))
    assert_error(excinfo, "bad_shape")


@pytest.mark.parametrize(
    "pixels",
    [
        pytest.param([["a", "b", "c"], ["d", "e", "f"]], id="strings"),
        pytest.param([["1", "2", "3"], ["4", "5", "6"]], id="numeric-strings"),
        pytest.param([[1, 2, "3"], [4, 5, 6]], id="one-string"),
        pytest.param([[True, False, True], [False, True, False]], id="booleans"),
        pytest.param([[None, 1, 2], [3, 4, 5]], id="null"),
        pytest.param([[{"v": 1}, 1, 2], [3, 4, 5]], id="object"),
        pytest.param([[10**40, 1, 2], [3, 4, 5]], id="huge-integer"),
    ],
)
def test_pixels_that_are_not_numbers_are_bad_request(pixels):
    with pytest.raises(PredictionError) as excinfo:
        pixels_to_input(pixels, make_spec((2, 3, 1)))
    assert_error(excinfo, "bad_request")


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        float("inf"),
        float("-inf"),
        # Finite in Python, not as float32 (numpy warns about the overflow while casting).
        pytest.param(1e300, marks=pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")),
    ],
)
def test_pixels_that_are_not_finite_are_bad_request(value):
    pixels = [[0.0, 1.0, value], [0.0, 0.0, 0.0]]

    with pytest.raises(PredictionError) as excinfo:
        pixels_to_input(pixels, make_spec((2, 3, 1)))
    assert_error(excinfo, "bad_request")
