"""Parsing JSON frames into `Frame`s, and ranking labels (no Django DB, no TF)."""

import base64
import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from predictions.inference.errors import PredictionError
from predictions.inference.frames import (
    DEFAULT_TOP_K,
    Frame,
    frame_from_json,
    load_json_object,
    parse_pixels_array,
)
from predictions.inference.images import decode_image
from predictions.inference.pipeline import top_labels

LIMIT = 10_000


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (6, 4), (10, 200, 30)).save(buffer, "PNG")
    return buffer.getvalue()


PNG = png_bytes()
PNG_B64 = base64.b64encode(PNG).decode("ascii")


def assert_error(excinfo: pytest.ExceptionInfo, code: str) -> None:
    error = excinfo.value
    assert error.code == code
    assert error.message == str(error)
    assert re.search(r"[A-Za-z]{3,}", error.message), error.message


def parse_error(data: dict, code: str, *, max_image_bytes: int = LIMIT) -> PredictionError:
    with pytest.raises(PredictionError) as excinfo:
        frame_from_json(data, max_image_bytes=max_image_bytes)
    assert_error(excinfo, code)
    return excinfo.value


# --- load_json_object -------------------------------------------------------------------------


@pytest.mark.parametrize("text", ['{"id": 1, "pixels": [[0]]}', b'{"id": 1, "pixels": [[0]]}'])
def test_load_json_object_parses_an_object_from_text_or_bytes(text):
    assert load_json_object(text) == {"id": 1, "pixels": [[0]]}


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        "not json",
        "{'id': 1}",
        '{"id": 1,}',
        b"\xff\xfe\xfa\x00",
        b'{"id": "\xff"}',
    ],
)
def test_load_json_object_refuses_invalid_json(text):
    with pytest.raises(PredictionError) as excinfo:
        load_json_object(text)
    assert_error(excinfo, "bad_request")


@pytest.mark.parametrize("text", ["[]", '[{"id": 1}]', "1", '"frame"', "null", "true"])
def test_load_json_object_refuses_json_that_is_not_an_object(text):
    with pytest.raises(PredictionError) as excinfo:
        load_json_object(text)
    assert_error(excinfo, "bad_request")
    assert "object" in excinfo.value.message


# --- parse_pixels_array: the original protocol's bare arrays -----------------------------------


@pytest.mark.parametrize(
    "data", [np.arange(24).reshape(4, 3, 2), np.arange(24).reshape(4, 6), np.arange(24.0)]
)
def test_parse_pixels_array_reshapes_any_array_of_the_input_size(data):
    frame = parse_pixels_array(json.dumps(data.tolist()), input_shape=(4, 3, 2))
    assert frame.id is None and frame.image is None
    np.testing.assert_array_equal(frame.pixels, np.arange(24).reshape(4, 3, 2))


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("not json", "bad_request"),
        ('{"pixels": [1]}', "bad_request"),
        ("1.5", "bad_request"),
        ('[["a", "b"]]', "bad_request"),
        ('["1", "2"]', "bad_request"),  # numbers in strings are not numbers
        ("[true, false]", "bad_request"),
        ("[1, null]", "bad_request"),
        ("[[1, 2], [3]]", "bad_shape"),
        ("[]", "bad_shape"),
        (json.dumps([0.5] * 23), "bad_shape"),
    ],
)
def test_parse_pixels_array_refuses_what_is_not_the_inputs_numbers(text, code):
    with pytest.raises(PredictionError) as excinfo:
        parse_pixels_array(text, input_shape=(4, 3, 2))
    assert_error(excinfo, code)


# --- frame_from_json: image and pixels --------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        pytest.param(f"data:image/png;base64,{PNG_B64}", id="data-url"),
        pytest.param(f"data:image/webp;base64,{PNG_B64}", id="data-url-other-image-type"),
        pytest.param(f"data:image/png;name=a.png;base64,{PNG_B64}", id="data-url-parameters"),
        pytest.param(PNG_B64, id="bare-base64"),
        pytest.param(base64.encodebytes(PNG).decode("ascii"), id="base64-with-line-breaks"),
    ],
)
def test_frame_from_json_decodes_an_image(image):
    frame = frame_from_json({"id": "a", "image": image}, max_image_bytes=LIMIT)

    assert isinstance(frame, Frame)
    assert frame.image == PNG
    assert frame.pixels is None
    assert frame.id == "a"
    assert decode_image(frame.image, max_bytes=LIMIT, max_pixels=LIMIT).size == (6, 4)


def test_frame_from_json_takes_pixels_as_they_are():
    pixels = [[[0.5], [1]], [[0], [16]]]

    frame = frame_from_json({"id": 3, "pixels": pixels}, max_image_bytes=LIMIT)

    assert frame.pixels == pixels
    assert frame.image is None
    assert frame.top_k == DEFAULT_TOP_K


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({"id": 1, "image": PNG_B64, "pixels": [[0]]}, id="both"),
        pytest.param({"id": 1}, id="neither"),
        pytest.param({}, id="empty"),
        pytest.param({"id": 1, "images": PNG_B64}, id="misspelt"),
    ],
)
def test_frame_from_json_needs_exactly_one_of_image_or_pixels(data):
    error = parse_error(data, "bad_request")
    assert "image" in error.message and "pixels" in error.message


@pytest.mark.parametrize("image", [123, None, [PNG_B64], {"data": PNG_B64}, True, 1.5])
def test_frame_from_json_refuses_an_image_that_is_not_a_string(image):
    parse_error({"id": 1, "image": image}, "bad_request")


@pytest.mark.parametrize("pixels", ["[[0]]", 5, None, {"0": [0]}, True])
def test_frame_from_json_refuses_pixels_that_are_not_an_array(pixels):
    parse_error({"id": 1, "pixels": pixels}, "bad_request")


@pytest.mark.parametrize(
    "image",
    [
        pytest.param("!!!! not base64 !!!!", id="punctuation"),
        pytest.param(PNG_B64[:-1], id="bad-padding"),
        pytest.param(PNG_B64 + "$", id="trailing-junk"),
        pytest.param("data:image/png;base64,@@@@", id="data-url-junk"),
        pytest.param(PNG_B64.replace("A", "-"), id="urlsafe-alphabet"),
    ],
)
def test_frame_from_json_refuses_invalid_base64_as_bad_image(image):
    assert image != PNG_B64
    error = parse_error({"id": 1, "image": image}, "bad_image")
    assert "base64" in error.message


@pytest.mark.parametrize(
    "image",
    [
        pytest.param("data:text/plain;base64," + base64.b64encode(b"hello").decode(), id="text"),
        pytest.param(f"data:application/octet-stream;base64,{PNG_B64}", id="octet-stream"),
        pytest.param(f"data:;base64,{PNG_B64}", id="no-media-type"),
        pytest.param("data:image/png,%89PNG", id="not-base64"),
        pytest.param(f"data:image/png;base64;x,{PNG_B64}", id="base64-not-last"),
    ],
)
def test_frame_from_json_refuses_a_data_url_that_is_not_a_base64_image(image):
    error = parse_error({"id": 1, "image": image}, "bad_image")
    assert "data:image/" in error.message


def test_frame_from_json_refuses_oversized_base64_before_decoding():
    image = "A" * 4 * (LIMIT // 3 + 100)

    error = parse_error({"id": 1, "image": image}, "too_large")
    assert str(LIMIT) in error.message

    data_url = f"data:image/png;base64,{base64.b64encode(b'x' * (LIMIT * 2)).decode()}"
    parse_error({"id": 1, "image": data_url}, "too_large")


def test_frame_from_json_accepts_an_image_of_exactly_the_limit():
    raw = bytes(range(256)) * 4
    image = base64.b64encode(raw).decode("ascii")

    frame = frame_from_json({"id": 1, "image": image}, max_image_bytes=len(raw))

    assert frame.image == raw


# --- frame_from_json: top_k and id ------------------------------------------------------------


def test_top_k_defaults_to_five():
    frame = frame_from_json({"id": 1, "pixels": [[0]]}, max_image_bytes=LIMIT)

    assert DEFAULT_TOP_K == 5
    assert frame.top_k == 5


@pytest.mark.parametrize("top_k", [1, 3, 5, 1000])
def test_top_k_takes_a_positive_integer(top_k):
    frame = frame_from_json({"id": 1, "pixels": [[0]], "top_k": top_k}, max_image_bytes=LIMIT)

    assert frame.top_k == top_k


@pytest.mark.parametrize("top_k", [0, -1, "3", True, False, 1.5, None, [3]])
@pytest.mark.parametrize("source", ["pixels", "image"])
def test_top_k_refuses_anything_but_a_positive_integer(top_k, source):
    data = {"id": 1, "top_k": top_k, source: [[0]] if source == "pixels" else PNG_B64}

    error = parse_error(data, "bad_request")
    assert "top_k" in error.message


@pytest.mark.parametrize("frame_id", [7, "req-7", None, 1.5, True, [1, "a"], {"k": ["v"]}])
def test_id_is_passed_through_as_it_is(frame_id):
    frame = frame_from_json({"id": frame_id, "image": PNG_B64}, max_image_bytes=LIMIT)

    assert frame.id == frame_id
    assert type(frame.id) is type(frame_id)


def test_a_missing_id_is_none():
    assert frame_from_json({"pixels": [[0]]}, max_image_bytes=LIMIT).id is None


def test_a_frame_parsed_from_json_text_round_trips():
    text = json.dumps({"id": {"n": 1}, "image": f"data:image/png;base64,{PNG_B64}", "top_k": 2})

    frame = frame_from_json(load_json_object(text), max_image_bytes=LIMIT)

    assert frame == Frame(id={"n": 1}, image=PNG, pixels=None, top_k=2)


# --- top_labels -------------------------------------------------------------------------------

LABELS = ("cat", "dog", "bird", "fish")


def test_top_labels_sorts_highest_first():
    result = top_labels(np.array([0.1, 0.6, 0.05, 0.25]), LABELS, 5)

    assert [item["label"] for item in result] == ["dog", "fish", "cat", "bird"]
    assert [item["score"] for item in result] == [0.6, 0.25, 0.1, 0.05]


@pytest.mark.parametrize(
    ("top_k", "expected"),
    [
        (1, ["dog"]),
        (2, ["dog", "fish"]),
        (4, ["dog", "fish", "cat", "bird"]),
        (10, ["dog", "fish", "cat", "bird"]),
    ],
)
def test_top_labels_honours_top_k(top_k, expected):
    result = top_labels(np.array([0.1, 0.6, 0.05, 0.25]), LABELS, top_k)

    assert [item["label"] for item in result] == expected


def test_top_labels_returns_plain_floats_that_serialise():
    scores = np.array([[0.125, 0.5, 0.25, 0.125]], dtype=np.float32)  # A batch of one.

    result = top_labels(scores, LABELS, 3)

    assert all(set(item) == {"label", "score"} for item in result)
    assert all(type(item["score"]) is float for item in result)
    assert all(type(item["label"]) is str for item in result)
    assert json.loads(json.dumps(result)) == [
        {"label": "dog", "score": 0.5},
        {"label": "bird", "score": 0.25},
        {"label": "cat", "score": 0.125},
    ]


def test_top_labels_keeps_label_order_for_ties():
    result = top_labels(np.array([0.25, 0.25, 0.25, 0.25]), LABELS, 4)

    assert [item["label"] for item in result] == list(LABELS)


def test_top_labels_rounds_scores_to_six_places():
    result = top_labels(np.array([1 / 3, 2 / 3, 0.0, 0.0]), LABELS, 2)

    assert [item["score"] for item in result] == [0.666667, 0.333333]
