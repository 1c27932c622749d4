"""Fuzzing the frame answering path (hypothesis): whatever arrives, the reply is a prediction
or an error object of the contract, and memory stays bounded."""

import asyncio
import base64
import json
import resource

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from predictions import selectors, serving
from tests import support
from tests.support import COLOR_LABELS, encode, solid_image

CODES = {"bad_image", "too_large", "bad_request", "bad_shape", "model_unavailable", "busy"}
PNG = encode(solid_image("red", (20, 20)), "PNG")
FUZZ = hypothesis_settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)
frames = st.dictionaries(
    st.sampled_from(["id", "image", "pixels", "top_k", "other"]), json_values, max_size=4
)
images = st.one_of(
    st.binary(max_size=600),
    st.binary(max_size=200).map(lambda tail: PNG[:40] + tail),  # a PNG header, then junk
    st.integers(0, len(PNG)).map(lambda cut: PNG[:cut]),  # a truncated PNG
)


@pytest.fixture
def project(db, trained):
    """The project as the serving path holds it: a snapshot, no database needed after this."""
    return _register(trained)


@pytest.fixture
def committed_project(transactional_db, trained):
    """For the HTTP path, which reads the project from another thread."""
    return _register(trained)


def _register(trained):
    support.register("fuzz", trained.colors)
    return selectors.project_get_info(slug="fuzz")


def check(reply: dict) -> None:
    json.dumps(reply)  # always serialisable
    assert reply["type"] in ("prediction", "error")
    if reply["type"] == "error":
        assert reply["code"] in CODES
        assert isinstance(reply["message"], str) and reply["message"]
    else:
        assert reply["labels"][0]["label"] in COLOR_LABELS


@FUZZ
@given(data=images)
def test_binary_frames(project, data):
    check(asyncio.run(serving.answer_binary(data, frame_id=0, project=project, received=0.0)))


@FUZZ
@given(frame=frames)
def test_json_frames(project, frame):
    reply = asyncio.run(serving.answer_text(json.dumps(frame), project=project, received=0.0))
    check(reply)
    if isinstance(frame.get("id"), int) and not isinstance(frame.get("id"), bool):
        assert reply["id"] == frame["id"]


@FUZZ
@given(text=st.text(max_size=300), image=images)
def test_text_and_base64_images(project, text, image):
    check(asyncio.run(serving.answer_text(text, project=project, received=0.0)))
    frame = {"id": 1, "image": "data:image/png;base64," + base64.b64encode(image).decode()}
    check(asyncio.run(serving.answer_text(json.dumps(frame), project=project, received=0.0)))


def test_memory_stays_bounded_over_many_bad_frames(project):
    """2,000 hostile frames after a warm-up may not grow the peak RSS by more than 50 MB."""
    asyncio.run(serving.answer_binary(PNG, frame_id=0, project=project, received=0.0))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    junk = [PNG[: len(PNG) // 2], b"\x00" * 500, b"GIF89a" + b"\xff" * 300, PNG]
    for index in range(2000):
        data = junk[index % len(junk)]
        check(
            asyncio.run(serving.answer_binary(data, frame_id=index, project=project, received=0.0))
        )
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 50


http_bodies = st.one_of(
    images,
    frames.map(lambda frame: json.dumps(frame).encode()),
    st.text(max_size=200).map(str.encode),
)
content_types = st.sampled_from(
    ["image/png", "image/jpeg", "application/json", "text/plain", "application/octet-stream",
     "application/xml", "multipart/form-data; boundary=x", ""]
)  # fmt: skip


@FUZZ
@given(body=http_bodies, content_type=content_types)
def test_http_bodies(committed_project, body, content_type):
    from django.test import AsyncClient

    async def post():
        return await AsyncClient().post(
            "/api/projects/fuzz/predict", body, content_type=content_type
        )

    response = asyncio.run(post())
    reply = response.json()
    check(reply)
    expected = 200 if reply["type"] == "prediction" else serving_status(reply["code"])
    assert response.status_code == expected


def serving_status(code: str) -> int:
    from predictions.inference.errors import HTTP_STATUS

    return HTTP_STATUS[code]
