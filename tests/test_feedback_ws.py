"""Feedback over the prediction WebSocket, in process through channels' WebsocketCommunicator."""

import base64
import hashlib
import json

import numpy as np
import pytest
from channels.testing import WebsocketCommunicator

from modelserver.asgi import application
from predictions.consumers import frame_budget
from predictions.models import FeedbackExample, model_storage
from tests import support
from tests.support import COLOR_LABELS, COLORS, encode, solid_image

pytestmark = pytest.mark.django_db(transaction=True)
TIMEOUT = 30


@pytest.fixture(autouse=True)
def generous_rate(settings):
    """Tests other than the rate limit's must not run into it."""
    settings.FEEDBACK_PER_MINUTE = 100_000


@pytest.fixture
def colors(trained):
    return support.register("colors", trained.colors, labels=COLOR_LABELS).project


async def open_socket():
    communicator = WebsocketCommunicator(application, "/ws/projects/colors/")
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected
    assert (await receive(communicator))["type"] == "ready"
    return communicator


@pytest.fixture
async def socket(colors):
    communicator = await open_socket()
    yield communicator
    await communicator.disconnect()


async def receive(communicator):
    return json.loads(await communicator.receive_from(timeout=TIMEOUT))


async def feedback(communicator, frame_id, label):
    await communicator.send_json_to({"type": "feedback", "id": frame_id, "label": label})
    return await receive(communicator)


async def test_feedback_on_a_binary_frame_is_stored(socket):
    png = encode(solid_image("red"), "PNG")
    await socket.send_to(bytes_data=png)
    assert (await receive(socket))["labels"][0]["label"] == "red"

    saved = await feedback(socket, 0, "green")
    sha256 = hashlib.sha256(png).hexdigest()
    assert saved == {"type": "feedback_saved", "id": 0, "example": sha256}
    example = await FeedbackExample.objects.select_related("version").aget()
    assert (example.label, example.predicted, example.source) == ("green", "red", "page")
    assert example.version.number == 1
    with model_storage().open(f"feedback/colors/green/{sha256}.png", "rb") as stored:
        assert stored.read() == png


async def test_feedback_right_after_a_json_image_frame_waits_for_its_answer(socket):
    jpeg = encode(solid_image("blue"), "JPEG")
    await socket.send_json_to({"id": "b", "image": base64.b64encode(jpeg).decode()})
    # Sent before the prediction came back: answered after it, in order.
    await socket.send_json_to({"type": "feedback", "id": "b", "label": "blue"})
    prediction, saved = await receive(socket), await receive(socket)
    assert (prediction["type"], prediction["id"]) == ("prediction", "b")
    assert saved == {
        "type": "feedback_saved",
        "id": "b",
        "example": hashlib.sha256(jpeg).hexdigest(),
    }
    example = await FeedbackExample.objects.aget()
    assert (example.label, example.predicted, example.image_format) == ("blue", "blue", "jpg")


async def test_bad_feedback_is_a_bad_request_in_words(socket):
    png = encode(solid_image("green"), "PNG")
    pixels = np.tile(np.array(COLORS["red"]) / 255, (16, 16, 1)).tolist()
    await socket.send_to(bytes_data=png)  # id 0
    await socket.send_json_to({"id": "px", "pixels": pixels})
    await socket.send_json_to({"id": "twice", "image": base64.b64encode(png).decode()})
    await socket.send_json_to({"id": "twice", "image": base64.b64encode(png).decode()})
    for _ in range(4):
        assert (await receive(socket))["type"] == "prediction"

    cases = [
        ("nobody", "green", "not among the last 32"),
        ("px", "red", "pixels frame"),
        ("twice", "green", "several frames"),
        (0, "purple", "not one of version 1's labels"),
        (0, 7, "must be a string"),
    ]
    for frame_id, label, words in cases:
        error = await feedback(socket, frame_id, label)
        assert (error["type"], error["id"], error["code"]) == ("error", frame_id, "bad_request")
        assert words in error["message"]
    assert await FeedbackExample.objects.acount() == 0
    assert (await feedback(socket, 0, "green"))["type"] == "feedback_saved"  # still usable


async def test_feedback_past_the_rate_limit_is_busy(colors, settings):
    settings.FEEDBACK_PER_MINUTE = 2  # read when a connection opens
    communicator = await open_socket()
    try:
        await communicator.send_to(bytes_data=encode(solid_image("red"), "PNG"))
        await receive(communicator)
        replies = [await feedback(communicator, 0, "red") for _ in range(3)]
    finally:
        await communicator.disconnect()
    assert [reply["type"] for reply in replies] == ["feedback_saved", "feedback_saved", "error"]
    assert (replies[2]["code"], replies[2]["id"]) == ("busy", 0)
    assert "feedback frames a minute" in replies[2]["message"]


async def test_one_address_shares_its_feedback_budget_across_its_sockets(colors, settings):
    settings.FEEDBACK_PER_MINUTE = 2
    sockets = []
    try:
        for address in ("192.0.2.1", "192.0.2.1", "192.0.2.2"):
            communicator = WebsocketCommunicator(application, "/ws/projects/colors/")
            communicator.scope["client"] = (address, 50000)  # as daphne sets it
            connected, _ = await communicator.connect(timeout=TIMEOUT)
            assert connected and (await receive(communicator))["type"] == "ready"
            await communicator.send_to(bytes_data=encode(solid_image("red"), "PNG"))
            await receive(communicator)
            sockets.append(communicator)
        first, second, elsewhere = sockets
        replies = [
            await feedback(first, 0, "red"),
            await feedback(second, 0, "red"),
            await feedback(second, 0, "green"),  # the address's third in a minute
            await feedback(elsewhere, 0, "red"),
        ]
    finally:
        for communicator in sockets:
            await communicator.disconnect()
    assert [reply["type"] for reply in replies] == [
        "feedback_saved", "feedback_saved", "error", "feedback_saved",
    ]  # fmt: skip
    assert replies[2]["code"] == "busy" and "This address" in replies[2]["message"]


async def test_the_byte_budgets_drop_the_oldest_frames(colors, settings):
    red, green = encode(solid_image("red"), "PNG"), encode(solid_image("green"), "PNG")
    settings.FEEDBACK_FRAMES_PER_CONNECTION_BYTES = len(red) + len(green)
    settings.FEEDBACK_FRAMES_BUDGET_BYTES = len(red) + len(green) + len(red) // 2
    first, second = await open_socket(), await open_socket()
    try:
        for frame in (red, green, red):  # the third is over this connection's cap
            await first.send_to(bytes_data=frame)
            await receive(first)
        expired = await feedback(first, 0, "red")
        assert (expired["code"], expired["id"]) == ("bad_request", 0)
        assert "no longer kept" in expired["message"]

        await second.send_to(bytes_data=green)  # over the process's budget: first's oldest go
        await receive(second)
        assert (await feedback(first, 1, "green"))["code"] == "bad_request"
        assert (await feedback(first, 2, "red"))["type"] == "feedback_saved"
        assert (await feedback(second, 0, "green"))["type"] == "feedback_saved"
    finally:
        await first.disconnect()
        await second.disconnect()
    assert frame_budget().used == 0  # each connection gave its bytes back
