"""The demo's digits model recognises digits drawn on a large canvas, as a person draws them.

Each digit is drawn as thick pen strokes on a 280x280 canvas, sent through the same decode and
`fit_ink` preprocessing as a client's image, and fed to the trained demo model. Nothing here is
random: the drawings are fixed and the model's training is seeded.
"""

import math

import numpy as np
import pytest
from PIL import Image, ImageDraw

from predictions.inference.images import decode_image
from predictions.inference.preprocess import image_to_input
from predictions.inference.runtime import KerasRuntime
from predictions.inference.spec import ModelSpec
from tests.support import encode

CANVAS = 280
MIN_CORRECT = 8

SPEC = ModelSpec(
    version_id=1,
    number=1,
    file_name="x",
    sha256="0" * 64,
    input_shape=(8, 8, 1),
    labels=tuple("0123456789"),
    resize="fit_ink",
    scale_min=0.0,
    scale_max=16.0,
)


# --- Drawing: strokes in a glyph box, x and y in 0..1 with y pointing down. --------------------


def _arc(cx, cy, rx, ry, start, end, steps=24):
    """Points along an ellipse from `start` to `end` degrees (0 = right, 90 = down)."""
    return [
        (
            cx + rx * math.cos(math.radians(start + (end - start) * i / steps)),
            cy + ry * math.sin(math.radians(start + (end - start) * i / steps)),
        )
        for i in range(steps + 1)
    ]


STROKES = {
    0: [_arc(0.5, 0.5, 0.42, 0.5, -90, 270, steps=48)],
    1: [[(0.2, 0.22), (0.55, 0.0), (0.55, 1.0)]],
    2: [[*_arc(0.5, 0.27, 0.4, 0.27, 190, 380), (0.08, 1.0), (0.95, 1.0)]],
    3: [_arc(0.48, 0.25, 0.4, 0.25, 200, 450) + _arc(0.48, 0.74, 0.44, 0.26, -90, 160)],
    4: [[(0.68, 1.0), (0.68, 0.0), (0.05, 0.66), (0.95, 0.66)]],
    5: [[(0.88, 0.0), (0.2, 0.0), (0.14, 0.45), *_arc(0.5, 0.7, 0.4, 0.3, -140, 150)]],
    6: [[(0.8, 0.02), (0.45, 0.25), *_arc(0.5, 0.7, 0.4, 0.3, 200, 560, steps=40)]],
    7: [[(0.05, 0.0), (0.95, 0.0), (0.35, 1.0)]],
    8: [
        _arc(0.5, 0.24, 0.34, 0.24, 90, 450, steps=36),
        _arc(0.5, 0.74, 0.42, 0.26, -90, 270, steps=36),
    ],
    9: [[*_arc(0.5, 0.3, 0.4, 0.3, 0, 360, steps=36), (0.9, 0.3), (0.85, 1.0)]],
}


def draw_digit(digit, *, ink, paper, box_height=0.65, centre=(0.5, 0.5), width=20):
    """Draw `digit` with a round pen `width` pixels wide on a CANVAS x CANVAS image.

    The glyph box is `box_height` of the canvas high and 0.7 of that wide, centred at `centre`
    (fractions of the canvas), as a person fills most of a drawing box.
    """
    image = Image.new("L", (CANVAS, CANVAS), paper)
    draw = ImageDraw.Draw(image)
    height = box_height * CANVAS
    glyph_width = 0.7 * height
    left = centre[0] * CANVAS - glyph_width / 2
    top = centre[1] * CANVAS - height / 2
    for stroke in STROKES[digit]:
        points = [(left + x * glyph_width, top + y * height) for x, y in stroke]
        draw.line(points, fill=ink, width=width, joint="curve")
        # Round pen ends, as a real pen leaves.
        for x, y in (points[0], points[-1]):
            r = width / 2
            draw.ellipse((x - r, y - r, x + r, y + r), fill=ink)
    return image


def as_model_input(image):
    """What the server feeds the model for this image sent as PNG."""
    decoded = decode_image(encode(image, "PNG"), max_bytes=10**7, max_pixels=10**8)
    return image_to_input(decoded, SPEC)


SCHEMES = {
    "black on white": {"ink": 0, "paper": 255},
    "white on black": {"ink": 255, "paper": 0},
}
LAYOUTS = {
    "centred": {},
    "small, off-centre": {"box_height": 0.4, "centre": (0.35, 0.62), "width": 18},
}


@pytest.fixture(scope="module")
def runtime(digits_model_path):
    return KerasRuntime(str(digits_model_path))


def predict_all(runtime, scheme, layout):
    """The model's digit for each drawing of 0..9, in order."""
    batch = np.stack(
        [as_model_input(draw_digit(d, **SCHEMES[scheme], **LAYOUTS[layout])) for d in range(10)]
    )
    probabilities = runtime.predict(batch.astype(np.float32))
    return [int(p) for p in probabilities.argmax(axis=1)]


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_drawn_digits_are_recognised_in_both_colour_schemes(runtime, layout):
    predicted = {scheme: predict_all(runtime, scheme, layout) for scheme in SCHEMES}
    correct = {
        scheme: sum(guess == digit for digit, guess in enumerate(guesses))
        for scheme, guesses in predicted.items()
    }
    for scheme, guesses in predicted.items():
        confusion = " ".join(f"{digit}->{guess}" for digit, guess in enumerate(guesses))
        print(f"\n{layout}, {scheme}: {correct[scheme]}/10 right  [{confusion}]")
    for scheme, count in correct.items():
        assert count >= MIN_CORRECT, f"{layout}, {scheme}: only {count}/10 digits right"
    assert predicted["black on white"] == predicted["white on black"]
