"""The serving path's cheap decode (JPEG drafted to the nearest DCT scale, one Pillow resize,
scaling in one pass) against the careful one (every pixel decoded, then the same resize): the
same top label from the real models, inputs and scores within the stated tolerances.

Photos go to the colours model (16x16x3), drawings to the digits demo's model (`fit_ink`).
"""

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from predictions.inference.frames import Frame
from predictions.inference.images import decode_image, draft
from predictions.inference.pipeline import Limits, prepare_frame
from predictions.inference.preprocess import image_to_input
from predictions.inference.runtime import KerasRuntime
from predictions.inference.spec import ModelSpec
from tests.support import COLOR_LABELS, COLORS, encode
from tests.test_digits_demo import SPEC as DIGITS_SPEC
from tests.test_digits_demo import draw_digit

# On the input's own range scaled to 0..1: the largest and the mean difference of any pixel.
MAX_INPUT_DIFFERENCE = 0.1
MEAN_INPUT_DIFFERENCE = 0.01
# The largest difference of any output score.
MAX_SCORE_DIFFERENCE = 0.05

LIMITS = Limits(max_image_bytes=50_000_000, max_image_pixels=50_000_000)
COLORS_SPEC = ModelSpec(
    version_id=1,
    number=1,
    file_name="colors.keras",
    sha256="0" * 64,
    input_shape=(16, 16, 3),
    labels=tuple(COLOR_LABELS),
)


def photo(color: str, size: tuple[int, int], seed: int) -> Image.Image:
    """A photo-like picture mostly of one colour: a gradient, shapes of other colours, noise."""
    rng = np.random.default_rng(seed)
    width, height = size
    base = np.array(COLORS[color], dtype=np.float32)
    ramp = np.linspace(0.75, 1.15, width, dtype=np.float32)[None, :, None]
    image = Image.fromarray(np.clip(base * ramp * np.ones((height, 1, 1)), 0, 255).astype("uint8"))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        side = int(rng.integers(width // 20, width // 6))
        fill = tuple(int(v) for v in rng.integers(0, 256, size=3))
        draw.ellipse((x, y, x + side, y + side), fill=fill)
    pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(1.2)), dtype=np.float32)
    noisy = np.clip(pixels + rng.normal(0, 6, size=pixels.shape), 0, 255).astype("uint8")
    return Image.fromarray(noisy)


PHOTOS = {
    "640x480 jpeg": (photo("red", (640, 480), 1), "JPEG", {"quality": 85}),
    "1920x1080 jpeg": (photo("green", (1920, 1080), 2), "JPEG", {"quality": 90}),
    "3000x2000 jpeg": (photo("blue", (3000, 2000), 3), "JPEG", {"quality": 80}),
    "1024x768 progressive": (photo("blue", (1024, 768), 4), "JPEG", {"progressive": True}),
    "300x200 jpeg": (photo("green", (300, 200), 5), "JPEG", {"quality": 85}),
    "800x600 png": (photo("red", (800, 600), 6), "PNG", {}),
}
DRAWINGS = {
    f"{digit} {fmt.lower()} {scale}x": (digit, fmt, scale)
    for digit in (1, 4, 7)
    for fmt in ("PNG", "JPEG")
    for scale in (1, 4)
}


def served_input(data: bytes, spec: ModelSpec) -> np.ndarray:
    return prepare_frame(Frame(id=0, image=data), spec=spec, limits=LIMITS).model_input


def careful_input(data: bytes, spec: ModelSpec) -> np.ndarray:
    """Every pixel decoded (no draft), then the same preprocessing."""
    image = decode_image(data, max_bytes=LIMITS.max_image_bytes, max_pixels=LIMITS.max_image_pixels)
    return image_to_input(image, spec)


def assert_parity(runtime, spec: ModelSpec, data: bytes) -> None:
    served, careful = served_input(data, spec), careful_input(data, spec)
    span = spec.scale_max - spec.scale_min
    difference = np.abs(served - careful) / span
    assert difference.max() <= MAX_INPUT_DIFFERENCE, difference.max()
    assert difference.mean() <= MEAN_INPUT_DIFFERENCE, difference.mean()
    scores = runtime.predict(np.stack([served, careful]))
    assert scores[0].argmax() == scores[1].argmax(), scores
    assert np.abs(scores[0] - scores[1]).max() <= MAX_SCORE_DIFFERENCE, scores


@pytest.fixture(scope="module")
def colors_model(trained):
    return KerasRuntime(str(trained.colors))


@pytest.fixture(scope="module")
def digits_model(digits_model_path):
    return KerasRuntime(str(digits_model_path))


@pytest.mark.parametrize("name", list(PHOTOS))
def test_photos_get_the_same_answer_as_from_every_pixel(colors_model, name):
    image, fmt, options = PHOTOS[name]
    assert_parity(colors_model, COLORS_SPEC, encode(image, fmt, **options))


@pytest.mark.parametrize("name", list(DRAWINGS))
def test_drawings_get_the_same_answer_as_from_every_pixel(digits_model, name):
    digit, fmt, scale = DRAWINGS[name]
    drawing = draw_digit(digit, ink=0, paper=255)
    if scale != 1:  # a big canvas: its JPEG is drafted too, to no less than fit_ink's 512 px
        drawing = drawing.resize((drawing.width * scale, drawing.height * scale))
    assert_parity(digits_model, DIGITS_SPEC, encode(drawing.convert("RGB"), fmt))


def test_a_jpeg_is_decoded_at_the_smallest_scale_not_below_the_model_input():
    data = encode(photo("red", (640, 480), 7), "JPEG")
    image = Image.open(io.BytesIO(data))

    draft(image, (224, 224))
    image.load()

    assert image.size == (320, 240)  # 1/2: 1/4 (160x120) would be below 224
