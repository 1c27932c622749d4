"""Process-wide limits: WebSocket connections (4013), the bounded queues in front of the
decode pool and the model batchers (`busy`; HTTP 429 with Retry-After), and frames dropped
when nobody waits for them any more.

Against a real daphne where a client can see the limit; in process, with the pool's thread or
the model held by the test, where only that makes the outcome certain.
"""

import asyncio
import base64
import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from asgiref.sync import sync_to_async
from asgiref.testing import ApplicationCommunicator
from channels.testing import WebsocketCommunicator
from prometheus_client import REGISTRY
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from modelserver.asgi import application
from predictions import consumers, selectors, serving
from predictions.inference.cache import ModelCache
from predictions.inference.frames import Frame
from tests import support
from tests.support import encode, solid_image

TIMEOUT = 60
MAX_CONNECTIONS = 5
PREDICT = "/api/projects/colors/predict"


def slow_png() -> bytes:
    """A 9-megapixel PNG of 33 kB: about 150 ms of decoding and shrinking in the pool here."""
    return encode(solid_image("red", (3000, 3000)), "PNG")


# --- Against daphne --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory, trained):
    """daphne with small limits: 5 sockets, one pool thread with room for 2 frames."""
    folder = tmp_path_factory.mktemp("limits")
    with support.migrated_env(
        folder,
        MAX_CONNECTIONS=MAX_CONNECTIONS,
        INFERENCE_THREADS=1,
        INFERENCE_QUEUE_FRAMES=2,
        MAX_PENDING_FRAMES=8,
        MAX_FRAMES_PER_SECOND=0,
    ) as env:
        support.register_colour_model(env, folder, trained.colors, "colors")
        private = (
            "from predictions.models import Project; Project.objects.create(slug='secret', "
            f"name='Secret', is_public=False, token_hash='{support.SECRET_TOKEN_HASH}')"
        )
        support.manage("shell", "-c", private, env=env)
        server = support.DaphneServer(env, folder / "daphne.log")
        with support.running(server):
            yield server


def ws(server, path="/ws/projects/colors/", **kwargs):
    return connect(f"{server.ws_url}{path}", open_timeout=TIMEOUT, **kwargs)


def receive(socket) -> dict:
    return json.loads(socket.recv(timeout=TIMEOUT))


def close_code(socket) -> int:
    """How the server closed a socket (anything it said first is read and dropped)."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            socket.recv(timeout=TIMEOUT)
    return closed.value.rcvd.code


def admitted(server):
    """A socket let in (its `ready` read); retried while the server still counts sockets that
    closed a moment ago."""

    def attempt():
        socket = ws(server)
        try:
            ready = receive(socket)
        except ConnectionClosed:
            return None
        assert ready["type"] == "ready"
        return socket

    return support.wait_for(attempt, timeout=TIMEOUT, what="a free connection")


def post(server, body: bytes, content_type="image/png"):
    """(status, headers, JSON body) of a predict."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"{server.url}{PREDICT}", data=body, headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.loads(error.read())


def test_past_max_connections_a_socket_closes_with_4013_until_one_leaves(live):
    held = [admitted(live) for _ in range(MAX_CONNECTIONS)]
    try:
        with ws(live) as extra:
            assert close_code(extra) == 4013
        with ws(live, "/models/colors/get_predictions") as legacy:
            assert json.loads(legacy.recv(timeout=TIMEOUT))["error"].startswith("busy: ")
            assert close_code(legacy) == 4013

        held.pop(0).close()
        held.append(admitted(live))  # the one that left made room for one
        with ws(live) as extra:
            assert close_code(extra) == 4013
    finally:
        for socket in held:
            socket.close()


def test_refused_sockets_hold_no_connection_once_gone(live):
    for _ in range(2 * MAX_CONNECTIONS):  # more refusals than the limit: a leak would show
        with ws(live, "/ws/projects/nope/") as unknown:
            assert close_code(unknown) == 4404
        with ws(live, "/ws/projects/secret/?token=wrong") as forbidden:
            assert close_code(forbidden) == 4403
        with pytest.raises(InvalidStatus) as refused:
            ws(live, origin="https://evil.example")
        assert refused.value.response.status_code == 403

    held = [admitted(live) for _ in range(MAX_CONNECTIONS)]
    try:
        with ws(live) as extra:
            assert close_code(extra) == 4013
    finally:
        for socket in held:
            socket.close()


def test_a_flood_of_http_predicts_past_the_pool_queue_gets_429_busy(live):
    slow = slow_png()
    with ThreadPoolExecutor(16) as clients:
        answers = list(clients.map(lambda _: post(live, slow), range(16)))

    statuses = Counter(status for status, _, _ in answers)
    assert set(statuses) == {200, 429}, statuses
    for status, headers, body in answers:
        if status == 429:
            assert headers["Retry-After"] == "1"
            assert (body["type"], body["code"]) == ("error", "busy")
            assert "frames waiting" in body["message"]
        else:
            assert body["labels"][0]["label"] == "red"
    # Every slot came back: the next predict is taken.
    status, _, body = post(live, encode(solid_image("blue"), "PNG"))
    assert (status, body["labels"][0]["label"]) == (200, "blue")


def test_websocket_frames_past_the_pool_queue_are_busy_in_order(live):
    slow = slow_png()
    text = json.dumps({"id": "t", "image": base64.b64encode(slow).decode()})
    socket = admitted(live)
    try:
        for _ in range(4):
            socket.send(slow)
        socket.send(text)
        replies = [receive(socket) for _ in range(5)]
        socket.send(encode(solid_image("green"), "PNG"))
        after = receive(socket)
    finally:
        socket.close()

    assert [reply["id"] for reply in replies] == [0, 1, 2, 3, "t"]
    assert replies[0]["type"] == "prediction"  # the pool was idle
    busy = [reply for reply in replies if reply["type"] == "error"]
    assert busy and all(reply["code"] == "busy" for reply in busy)
    assert all("frames waiting" in reply["message"] for reply in busy)
    assert replies[-1]["type"] == "error"  # by then two frames held the pool's two places
    assert (after["id"], after["labels"][0]["label"]) == (4, "green")


# --- In process: the test holds the pool's thread or the model -------------------------------

in_process = pytest.mark.django_db(transaction=True)


@pytest.fixture
def colors(trained):
    return support.register("colors", trained.colors).project


@pytest.fixture
def gate():
    """What the test holds the pool's thread or the model with; let go even when it fails."""
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def small_pool(monkeypatch):
    def make(*, threads: int, max_frames: int) -> serving.FramePool:
        pool = serving.FramePool(threads=threads, max_frames=max_frames)
        monkeypatch.setattr(serving, "_pool", pool)
        return pool

    return make


class HeldRuntime:
    """A real runtime whose `predict` waits, once `held` is set, until the gate opens."""

    def __init__(self, runtime, gate: threading.Event):
        self.runtime, self.gate = runtime, gate
        self.name = runtime.name
        self.held = False
        self.entered = threading.Event()

    def predict(self, batch):
        if self.held:
            self.entered.set()
            assert self.gate.wait(TIMEOUT)
        return self.runtime.predict(batch)


@pytest.fixture
async def held_model(colors, gate, monkeypatch):
    """The colours model loaded behind a batcher that lets one input wait, its runtime held."""

    def load(spec):
        runtime, size = serving.load_runtime(spec)
        return HeldRuntime(runtime, gate), size

    cache = ModelCache(budget_bytes=10**9, load=load, max_batch_size=4, max_wait_ms=0, max_queue=1)
    monkeypatch.setattr(serving, "_model_cache", cache)
    project = await sync_to_async(selectors.project_get_info)(slug="colors")
    loaded = await sync_to_async(cache.get)(project.model)
    loaded.runtime.held = True
    yield loaded
    gate.set()
    cache.clear()


async def until(condition, what: str) -> None:
    """Poll a condition the server reaches on its own threads."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.005)


async def open_socket(path="/ws/projects/colors/"):
    communicator = WebsocketCommunicator(application, path)
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected
    assert json.loads(await communicator.receive_from(timeout=TIMEOUT))["type"] == "ready"
    return communicator


async def reply_of(communicator) -> dict:
    return json.loads(await communicator.receive_from(timeout=TIMEOUT))


def busy_replies() -> float:
    """`busy` replies to the colours project's WebSocket frames so far (the metrics' count)."""
    labels = {"project": "colors", "transport": "websocket", "code": "busy"}
    return REGISTRY.get_sample_value("modelserver_errors_total", labels) or 0.0


def http_scope(body: bytes) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": PREDICT,
        "raw_path": PREDICT.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"localhost"),
            (b"content-type", b"image/png"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("localhost", 80),
    }


@in_process
async def test_a_full_pool_answers_http_429_with_retry_after(async_client, colors, small_pool):
    pool = small_pool(threads=1, max_frames=1)
    release = threading.Event()
    pool.submit(release.wait, TIMEOUT)  # a frame's work holds the pool's one place
    try:
        png = encode(solid_image("red"), "PNG")
        refused = await async_client.post(PREDICT, png, content_type="image/png")
    finally:
        release.set()

    assert (refused.status_code, refused["Retry-After"]) == (429, "1")
    body = refused.json()
    assert (body["type"], body["id"], body["code"]) == ("error", None, "busy")
    assert body["message"].startswith("The server has as many frames waiting as it takes (1)")
    await until(lambda: pool.frames == 0, "the held place is free")
    taken = await async_client.post(PREDICT, png, content_type="image/png")
    assert taken.status_code == 200


@in_process
async def test_a_full_pool_answers_a_text_frame_busy_with_its_id(colors, small_pool):
    pool = small_pool(threads=1, max_frames=1)
    release = threading.Event()
    pool.submit(release.wait, TIMEOUT)
    socket = await open_socket()
    try:
        image = base64.b64encode(encode(solid_image("red"), "PNG")).decode()
        await socket.send_to(text_data=json.dumps({"id": "x", "image": image}))
        await socket.send_to(bytes_data=encode(solid_image("red"), "PNG"))
        busy = [await reply_of(socket) for _ in range(2)]
        release.set()
        await until(lambda: pool.frames == 0, "the held place is free")
        await socket.send_to(text_data=json.dumps({"id": "y", "image": image}))
        answered = await reply_of(socket)
    finally:
        release.set()
        await socket.disconnect()

    assert [(reply["id"], reply["code"]) for reply in busy] == [("x", "busy"), (0, "busy")]
    assert (answered["id"], answered["labels"][0]["label"]) == ("y", "red")


@in_process
async def test_a_full_batcher_queue_answers_busy(held_model, small_pool, gate):
    small_pool(threads=2, max_frames=8)
    socket = await open_socket()
    busy_before = busy_replies()
    try:
        for color in ("red", "green", "blue"):
            await socket.send_to(bytes_data=encode(solid_image(color), "PNG"))
        # One frame runs (held), one waits in the batcher's queue, the third finds it full.
        await until(lambda: busy_replies() == busy_before + 1, "the third frame refused")
        assert held_model.batcher.queued == 1
        gate.set()
        replies = [await reply_of(socket) for _ in range(3)]
    finally:
        await socket.disconnect()

    assert [reply["id"] for reply in replies] == [0, 1, 2]
    assert [reply["type"] for reply in replies[:2]] == ["prediction", "prediction"]
    assert replies[2]["code"] == "busy"
    assert "Version 1 of the model has as many frames waiting" in replies[2]["message"]
    assert held_model.batcher.frames_run == 2


@in_process
async def test_a_legacy_frame_past_the_pool_is_busy_in_the_original_words(colors, small_pool):
    pool = small_pool(threads=1, max_frames=1)
    release = threading.Event()
    pool.submit(release.wait, TIMEOUT)
    communicator = WebsocketCommunicator(application, "/models/colors/get_predictions")
    assert (await communicator.connect(timeout=TIMEOUT))[0]
    try:
        await communicator.send_to(text_data=json.dumps([0.5] * (16 * 16 * 3)))
        reply = json.loads(await communicator.receive_from(timeout=TIMEOUT))
    finally:
        release.set()
        await communicator.disconnect()
    assert reply["error"].startswith("busy: The server has as many frames waiting")


@in_process
async def test_an_http_request_cancelled_while_queued_is_never_decoded(colors, small_pool, gate):
    """daphne answers 503 past its --http-timeout, or the client leaves: either way Django
    gets `http.disconnect` and cancels the view; its frame leaves the pool's queue."""
    pool = small_pool(threads=1, max_frames=4)
    pool.run(gate.wait, TIMEOUT)  # the pool's only thread is busy (not a frame)
    png = encode(solid_image("red"), "PNG")
    request = ApplicationCommunicator(application, http_scope(png))
    await request.send_input({"type": "http.request", "body": png, "more_body": False})
    await until(lambda: pool.frames == 1, "the frame queued in the pool")

    await request.send_input({"type": "http.disconnect"})
    await request.wait(TIMEOUT)

    assert pool.frames == 0  # out of the queue while the only thread is still held
    assert await request.receive_nothing()


@in_process
async def test_an_http_request_cancelled_in_the_batcher_queue_is_skipped(held_model, small_pool):
    small_pool(threads=2, max_frames=8)
    socket = await open_socket()
    try:
        await socket.send_to(bytes_data=encode(solid_image("red"), "PNG"))
        await until(held_model.runtime.entered.is_set, "the first frame running, held")
        png = encode(solid_image("blue"), "PNG")
        request = ApplicationCommunicator(application, http_scope(png))
        await request.send_input({"type": "http.request", "body": png, "more_body": False})
        await until(lambda: held_model.batcher.queued == 1, "the request's frame queued")
        await request.send_input({"type": "http.disconnect"})
        await request.wait(TIMEOUT)

        held_model.runtime.gate.set()
        first = await reply_of(socket)
        # A frame after it: by its reply, the worker has passed the cancelled one.
        await socket.send_to(bytes_data=encode(solid_image("green"), "PNG"))
        second = await reply_of(socket)
    finally:
        await socket.disconnect()

    assert [first["labels"][0]["label"], second["labels"][0]["label"]] == ["red", "green"]
    assert held_model.batcher.frames_run == 2  # the cancelled frame never reached the model


@in_process
async def test_a_frame_left_while_being_decoded_never_reaches_the_model(held_model, small_pool):
    """Its pool job cannot be cancelled once it runs: the input it hands the batcher is."""
    small_pool(threads=2, max_frames=8)
    socket = await open_socket()
    decoding, decoded = threading.Event(), threading.Event()
    png = encode(solid_image("blue"), "PNG")

    def parse():
        decoding.set()
        assert decoded.wait(TIMEOUT)
        return Frame(id=None, image=png)

    try:
        await socket.send_to(bytes_data=encode(solid_image("red"), "PNG"))
        await until(held_model.runtime.entered.is_set, "the first frame running, held")
        project = await sync_to_async(selectors.project_get_info)(slug="colors")

        async def request():  # as the predict view awaits it
            return await serving.answer(parse, project=project, received=0.0, transport="http")

        left = asyncio.ensure_future(request())
        await until(decoding.is_set, "the frame being decoded")
        left.cancel()
        decoded.set()
        await until(lambda: held_model.batcher.queued == 1, "its input handed to the batcher")

        held_model.runtime.gate.set()
        first = await reply_of(socket)
        await socket.send_to(bytes_data=encode(solid_image("green"), "PNG"))
        second = await reply_of(socket)
    finally:
        decoded.set()
        await socket.disconnect()

    assert left.cancelled()
    assert [first["labels"][0]["label"], second["labels"][0]["label"]] == ["red", "green"]
    assert held_model.batcher.frames_run == 2


@in_process
async def test_a_socket_that_leaves_takes_its_queued_frames_out_of_the_pool(
    colors, small_pool, gate
):
    pool = small_pool(threads=1, max_frames=8)
    pool.run(gate.wait, TIMEOUT)
    socket = await open_socket()
    for _ in range(3):
        await socket.send_to(bytes_data=encode(solid_image("red"), "PNG"))
    await until(lambda: pool.frames == 3, "three frames queued")
    await socket.disconnect()
    await until(lambda: pool.frames == 0, "the frames dropped")


@in_process
async def test_a_consumer_failing_in_connect_gives_its_connection_back(colors, monkeypatch):
    before = len(consumers.CONNECTIONS)

    def broken(**kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(selectors, "project_get_info", broken)
    communicator = WebsocketCommunicator(application, "/ws/projects/colors/")
    # The communicator re-raises the application's exception when its wait times out.
    with pytest.raises(RuntimeError, match="the database went away"):
        await communicator.connect(timeout=2)
    assert len(consumers.CONNECTIONS) == before


@in_process
async def test_max_connections_counts_the_process_not_a_project(colors, settings, trained):
    settings.MAX_CONNECTIONS = len(consumers.CONNECTIONS) + 2
    first = await open_socket()
    second = WebsocketCommunicator(application, "/models/colors/get_predictions")
    assert (await second.connect(timeout=TIMEOUT))[0]
    extra = WebsocketCommunicator(application, "/ws/projects/nope/")
    try:
        connected, _ = await extra.connect(timeout=TIMEOUT)
        assert connected  # accepted, then closed: 4013 before the slug is even looked up
        closed = await extra.receive_output(timeout=TIMEOUT)
        assert closed == {"type": "websocket.close", "code": 4013}
    finally:
        await extra.disconnect()
        await first.disconnect()
        await second.disconnect()
    third = await open_socket()
    await third.disconnect()
