"""The prediction WebSocket, in process through channels' WebsocketCommunicator."""

import base64
import json

import numpy as np
import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from PIL import Image

from modelserver.asgi import application
from predictions.models import Project
from tests import support
from tests.support import COLOR_LABELS, COLORS, SECRET_TOKEN, encode, solid_image

pytestmark = pytest.mark.django_db(transaction=True)
TIMEOUT = 30


def register(slug, path, *, labels=COLOR_LABELS, is_public=True):
    return support.register(slug, path, labels=labels, is_public=is_public).project


@pytest.fixture
def colors(trained):
    return register("colors", trained.colors)


async def connect(path, **kwargs):
    communicator = WebsocketCommunicator(application, path, **kwargs)
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected
    return communicator


async def receive(communicator):
    return json.loads(await communicator.receive_from(timeout=TIMEOUT))


@pytest.fixture
async def socket(colors):
    communicator = await connect("/ws/projects/colors/")
    ready = await receive(communicator)
    assert ready["type"] == "ready"
    yield communicator
    await communicator.disconnect()


async def test_ready_describes_the_active_model(colors):
    communicator = await connect("/ws/projects/colors/")
    try:
        ready = await receive(communicator)
    finally:
        await communicator.disconnect()
    assert ready == {
        "type": "ready",
        "project": "colors",
        "model": {"version": 1, "input_shape": [16, 16, 3], "labels": COLOR_LABELS},
    }


async def test_only_connections_before_the_model_is_loaded_preload_it(colors, monkeypatch):
    from predictions import serving

    preloads = []
    real_preload = serving.preload
    monkeypatch.setattr(
        serving, "preload", lambda spec: preloads.append(spec) or real_preload(spec)
    )
    serving.model_cache().clear()
    first = await connect("/ws/projects/colors/")
    await receive(first)
    await first.send_to(bytes_data=encode(solid_image("red"), "PNG"))
    assert (await receive(first))["type"] == "prediction"  # loaded by now
    for _ in range(5):
        later = await connect("/ws/projects/colors/")
        await receive(later)
        await later.disconnect()
    await first.disconnect()
    assert len(preloads) == 1


async def test_binary_frames_are_numbered_and_labelled(socket):
    await socket.send_to(bytes_data=encode(solid_image("red"), "PNG"))
    await socket.send_to(bytes_data=encode(solid_image("green", (640, 480)), "JPEG"))
    first, second = await receive(socket), await receive(socket)

    assert (first["type"], first["id"], first["labels"][0]["label"]) == ("prediction", 0, "red")
    assert (second["id"], second["labels"][0]["label"]) == (1, "green")
    assert first["model_version"] == 1
    scores = [entry["score"] for entry in first["labels"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 3
    assert set(first["timings_ms"]) == {"decode", "preprocess", "inference", "total"}


async def test_json_frames_with_data_url_bare_base64_and_pixels(socket):
    png = encode(solid_image("blue"), "PNG")
    data_url = "data:image/png;base64," + base64.b64encode(png).decode()
    pixels = np.tile(np.array(COLORS["red"]) / 255, (16, 16, 1)).tolist()

    await socket.send_json_to({"id": "a", "image": data_url})
    await socket.send_json_to({"id": {"n": 2}, "image": base64.b64encode(png).decode(), "top_k": 1})
    await socket.send_json_to({"id": 3, "pixels": pixels})
    a, b, c = [await receive(socket) for _ in range(3)]

    assert (a["id"], a["labels"][0]["label"]) == ("a", "blue")
    assert b["id"] == {"n": 2} and [entry["label"] for entry in b["labels"]] == ["blue"]
    assert (c["id"], c["labels"][0]["label"]) == (3, "red")


async def test_a_version_without_labels_answers_raw_outputs(trained):
    await database_sync_to_async(register)("raw", trained.colors, labels=[])
    communicator = await connect("/ws/projects/raw/")
    try:
        ready = await receive(communicator)
        await communicator.send_to(bytes_data=encode(solid_image("red"), "PNG"))
        reply = await receive(communicator)
    finally:
        await communicator.disconnect()
    assert ready["model"]["labels"] == []
    assert "labels" not in reply
    assert len(reply["outputs"]) == 3
    assert np.argmax(reply["outputs"]) == 0 and sum(reply["outputs"]) == pytest.approx(1, abs=1e-3)


async def test_every_error_code_leaves_the_connection_usable(socket, settings):
    settings.MAX_IMAGE_PIXELS = 1_000_000
    good = encode(solid_image("green"), "PNG")
    cases = [
        ({"bytes_data": b"not an image"}, "bad_image"),
        ({"bytes_data": encode(solid_image("red", (2000, 1000)), "PNG")}, "too_large"),
        ({"text_data": "{not json"}, "bad_request"),
        ({"text_data": json.dumps({"id": 7, "pixels": [[1, 2], [3, 4]]})}, "bad_shape"),
    ]
    for frame, code in cases:
        await socket.send_to(**frame)
        error = await receive(socket)
        assert (error["type"], error["code"]) == ("error", code)
        assert len(error["message"].split()) >= 3
        await socket.send_to(bytes_data=good)
        assert (await receive(socket))["labels"][0]["label"] == "green"


async def test_no_active_model_is_model_unavailable(db):
    await database_sync_to_async(Project.objects.create)(slug="empty", name="Empty")
    communicator = await connect("/ws/projects/empty/")
    try:
        ready = await receive(communicator)
        await communicator.send_json_to({"id": 1, "pixels": [[[0]]]})
        error = await receive(communicator)
    finally:
        await communicator.disconnect()
    assert ready["model"] is None
    assert (error["id"], error["code"]) == (1, "model_unavailable")


async def test_a_flood_gets_busy_replies_in_order(socket, settings):
    settings.MAX_PENDING_FRAMES = 4
    # Noise does not compress: each frame costs real decoding and resizing time.
    noise = np.random.default_rng(0).integers(0, 256, (900, 1200, 3), dtype=np.uint8)
    big = encode(Image.fromarray(noise), "PNG")
    for _ in range(30):
        await socket.send_to(bytes_data=big)
    replies = [await receive(socket) for _ in range(30)]

    assert [reply["id"] for reply in replies] == list(range(30))
    assert all(reply["type"] == "prediction" for reply in replies[:4])
    busy = [reply for reply in replies if reply["type"] == "error"]
    assert busy and {reply["code"] for reply in busy} == {"busy"}


async def test_unknown_project_is_closed_with_4404(db):
    communicator = WebsocketCommunicator(application, "/ws/projects/nope/")
    # Accepted first, so that the close code reaches the client.
    assert await communicator.connect(timeout=TIMEOUT) == (True, None)
    closed = await communicator.receive_output(timeout=TIMEOUT)
    assert closed == {"type": "websocket.close", "code": 4404}


async def test_private_project_needs_its_token(trained):
    await database_sync_to_async(register)("secret", trained.colors, is_public=False)

    refused = WebsocketCommunicator(application, "/ws/projects/secret/?token=wrong")
    await refused.connect(timeout=TIMEOUT)
    assert await refused.receive_output(timeout=TIMEOUT) == {
        "type": "websocket.close",
        "code": 4403,
    }

    allowed = await connect(f"/ws/projects/secret/?token={SECRET_TOKEN}")
    try:
        assert (await receive(allowed))["type"] == "ready"
    finally:
        await allowed.disconnect()


async def test_foreign_browser_origin_is_refused(colors):
    foreign = WebsocketCommunicator(
        application, "/ws/projects/colors/", headers=[(b"origin", b"https://evil.example")]
    )
    connected, _ = await foreign.connect(timeout=TIMEOUT)
    assert not connected
    own = await connect("/ws/projects/colors/", headers=[(b"origin", b"http://localhost:8000")])
    try:
        assert (await receive(own))["type"] == "ready"
    finally:
        await own.disconnect()


async def test_activation_swaps_the_model_on_open_connections(socket, trained):
    await socket.send_to(bytes_data=encode(solid_image("red"), "PNG"))
    assert (await receive(socket))["model_version"] == 1

    await database_sync_to_async(register)("colors", trained.colors, labels=["R", "G", "B"])
    changed = await receive(socket)
    assert changed == {
        "type": "model_changed",
        "model": {"version": 2, "input_shape": [16, 16, 3], "labels": ["R", "G", "B"]},
    }
    await socket.send_to(bytes_data=encode(solid_image("red"), "PNG"))
    reply = await receive(socket)
    assert (reply["model_version"], reply["labels"][0]["label"]) == (2, "R")


async def test_frames_over_the_rate_limit_are_busy(socket, settings):
    settings.MAX_FRAMES_PER_SECOND = 5  # read when a connection opens
    settings.MAX_PENDING_FRAMES = 100  # the rate limit, not the waiting frames, answers busy
    limited = await connect("/ws/projects/colors/")
    try:
        await receive(limited)
        for index in range(15):
            await limited.send_json_to({"id": index, "pixels": [[0]]})
        replies = [await receive(limited) for _ in range(15)]
    finally:
        await limited.disconnect()
    busy = [reply for reply in replies if reply["code"] == "busy"]
    assert [reply["id"] for reply in replies] == list(range(15))
    assert len(busy) >= 4 and all("frames a second" in reply["message"] for reply in busy)
    # The other frames were answered on their merits (wrong shape for this model).
    assert {reply["code"] for reply in replies} == {"busy", "bad_shape"}


async def test_a_client_leaving_mid_inference_leaks_nothing(socket, colors):
    """Threads and tasks come back to where they were after clients vanish with frames in
    flight; the process keeps serving."""
    import asyncio
    import threading

    noise = np.random.default_rng(1).integers(0, 256, (600, 800, 3), dtype=np.uint8)
    frame = encode(Image.fromarray(noise), "PNG")

    async def clients_leave(count):
        for _ in range(count):
            leaving = await connect("/ws/projects/colors/")
            await receive(leaving)
            for _ in range(6):
                await leaving.send_to(bytes_data=frame)
            await leaving.disconnect()
        await asyncio.sleep(2)  # the frames in flight finish or are dropped

    await clients_leave(1)  # thread pools grow to their size on first use
    threads, tasks = threading.active_count(), len(asyncio.all_tasks())
    await clients_leave(5)
    assert threading.active_count() == threads
    assert len(asyncio.all_tasks()) <= tasks
    await socket.send_to(bytes_data=encode(solid_image("red"), "PNG"))
    assert (await receive(socket))["labels"][0]["label"] == "red"


async def test_a_project_may_allow_pages_of_other_sites(trained):
    def with_origins():
        project = register("widget", trained.colors)
        project.allowed_origins = "https://App.example.com/\nhttp://localhost:5173"
        project.full_clean()
        project.save()

    await database_sync_to_async(with_origins)()

    async def opens(path, origin):
        communicator = WebsocketCommunicator(application, path, headers=[(b"origin", origin)])
        connected, _ = await communicator.connect(timeout=TIMEOUT)
        await communicator.disconnect()
        return connected

    assert await opens("/ws/projects/widget/", b"https://app.example.com")
    assert await opens("/ws/projects/widget/", b"http://localhost:5173")
    assert await opens("/ws/projects/widget/", b"http://127.0.0.1:8000")  # this server's own
    assert not await opens("/ws/projects/widget/", b"https://evil.example")
    # Another project does not inherit the list.
    await database_sync_to_async(register)("other", trained.colors)
    assert not await opens("/ws/projects/other/", b"https://app.example.com")


def test_allowed_origins_must_be_origins(db):
    from django.core.exceptions import ValidationError

    project = Project(slug="x", name="x", allowed_origins="https://ok.example\nftp://nope/path")
    with pytest.raises(ValidationError, match="is not a web origin"):
        project.full_clean()


async def test_busy_text_frames_keep_their_leading_id_and_are_never_parsed_whole(socket, settings):
    settings.MAX_PENDING_FRAMES = 0  # every frame is over the limit
    deep = "[" * 200_000 + "]" * 200_000  # json.loads would raise RecursionError on it
    frames = [
        json.dumps({"id": "first-key", "pixels": [[[0]]]}),
        '{"pixels": [[[0]]], "id": "not-first"}',
        '{"id": 7, "pixels": ' + deep + "}",
        deep,
    ]
    for frame in frames:
        await socket.send_to(text_data=frame)
    replies = [await receive(socket) for _ in frames]

    assert [(reply["code"], reply["id"]) for reply in replies] == [
        ("busy", "first-key"),
        ("busy", None),
        ("busy", 7),
        ("busy", None),
    ]


async def test_json_nested_too_deeply_is_a_bad_request(socket):
    deep = "[" * 200_000 + "]" * 200_000
    await socket.send_to(text_data='{"id": "deep", "pixels": ' + deep + "}")
    reply = await receive(socket)
    assert (reply["code"], reply["message"]) == (
        "bad_request",
        "The frame's JSON is nested too deeply.",
    )
    await socket.send_to(text_data=json.dumps({"id": "after", "pixels": [[[0.5] * 3] * 16] * 16}))
    assert (await receive(socket))["id"] == "after"  # the connection goes on
