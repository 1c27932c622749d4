"""The demo's digits model recognises digits drawn on a large canvas, as a person draws them.

Each digit is drawn as thick pen strokes on a 280x280 canvas, sent through the same decode and
`fit_ink` preprocessing as a client's image, and fed to the trained demo model. Nothing here is
random: the drawings are fixed and the model's training is seeded.
"""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from predictions.inference.images import decode_image
from predictions.inference.preprocess import image_to_input
from predictions.inference.runtime import KerasRuntime
from predictions.inference.spec import ModelSpec
from tests.drawings import strokes_on_canvas
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


def draw_digit(digit, *, ink, paper, box_height=0.65, centre=(0.5, 0.5), width=20):
    """Draw `digit` with a round pen `width` pixels wide on a CANVAS x CANVAS image."""
    image = Image.new("L", (CANVAS, CANVAS), paper)
    draw = ImageDraw.Draw(image)
    for points in strokes_on_canvas(digit, CANVAS, box_height=box_height, centre=centre):
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
