"""The input preview ("what the model sees"): the module, the pipeline, the WebSocket's options
message and per-frame flag, the HTTP `?preview=1`, and the browser client's `preview` option."""

import base64
import io
import json

import numpy as np
import pytest
from channels.testing import WebsocketCommunicator
from PIL import Image

from modelserver.asgi import application
from predictions.inference.errors import PredictionError
from predictions.inference.frames import Frame, parse_text_frame
from predictions.inference.pipeline import Limits, prepare_frame
from predictions.inference.preview import MIN_SIDE, input_preview
from predictions.inference.spec import ModelSpec
from tests import browser, support
from tests.support import COLOR_LABELS, COLORS, encode, solid_image

TIMEOUT = 30
PREDICT = "/api/projects/{}/predict"
RED = COLORS["red"]


def decode(data_url: str) -> Image.Image:
    header, _, payload = data_url.partition(",")
    assert header == "data:image/png;base64"
    image = Image.open(io.BytesIO(base64.b64decode(payload)))
    assert image.format == "PNG"
    return image


def upscaled(pixels: np.ndarray, factor: int) -> np.ndarray:
    return pixels.repeat(factor, axis=0).repeat(factor, axis=1)


# --- preview.py -------------------------------------------------------------------------------


def test_a_grey_input_is_mapped_from_its_scale_and_upscaled_nearest_neighbour():
    model_input = (np.arange(64, dtype=np.float32) / 4).reshape(8, 8, 1)  # 0 .. 15.75
    kept = model_input.copy()
    image = decode(input_preview(model_input, scale_min=0.0, scale_max=16.0))

    assert (image.mode, image.size) == ("L", (112, 112))  # ceil(112 / 8) = 14 times
    expected = np.rint(model_input[..., 0] * 255 / 16).astype(np.uint8)
    assert np.array_equal(np.asarray(image), upscaled(expected, 14))
    assert np.array_equal(model_input, kept)  # only read


def test_an_rgb_input_in_minus_one_to_one_is_clipped_and_mapped():
    rng = np.random.default_rng(0)
    model_input = rng.uniform(-1.2, 1.2, size=(16, 10, 3)).astype(np.float32)
    image = decode(input_preview(model_input, scale_min=-1.0, scale_max=1.0))

    assert (image.mode, image.size) == ("RGB", (70, 112))  # long side 16: 7 times
    expected = np.rint(np.clip((model_input + 1) * 127.5, 0, 255)).astype(np.uint8)
    assert np.array_equal(np.asarray(image), upscaled(expected, 7))
    assert expected.min() == 0 and expected.max() == 255  # the clipping was exercised


@pytest.mark.parametrize(
    ("dtype", "offset"), [(np.int8, 128), (np.uint8, 0)], ids=["int8", "uint8"]
)
def test_integer_inputs_are_mapped_from_their_dtypes_range(dtype, offset):
    info = np.iinfo(dtype)
    model_input = np.arange(info.min, info.max + 1, dtype=np.int16).reshape(16, 16, 1)
    model_input = model_input.astype(dtype)
    # The version's scale is for float inputs; an integer one already spans its dtype.
    image = decode(input_preview(model_input, scale_min=-1.0, scale_max=1.0))

    assert (image.mode, image.size) == ("L", (112, 112))
    expected = (model_input[..., 0].astype(np.int16) + offset).astype(np.uint8)
    assert np.array_equal(np.asarray(image), upscaled(expected, 7))


def test_an_input_at_least_112_px_is_not_resized():
    model_input = np.random.default_rng(1).random((224, 224, 3), dtype=np.float32)
    image = decode(input_preview(model_input, scale_min=0.0, scale_max=1.0))
    assert image.size == (224, 224)
    assert np.array_equal(np.asarray(image), np.rint(model_input * 255).astype(np.uint8))

    tall = decode(input_preview(np.zeros((150, 40, 1), np.float32), scale_min=0, scale_max=1))
    assert tall.size == (40, 150) and MIN_SIDE == 112


def test_other_channel_counts_show_their_first_channel_in_grey():
    model_input = np.zeros((4, 4, 2), np.float32)
    model_input[..., 0], model_input[..., 1] = 1.0, 0.5
    image = decode(input_preview(model_input, scale_min=0.0, scale_max=1.0))
    assert (image.mode, image.size) == ("L", (112, 112))
    assert set(np.unique(np.asarray(image))) == {255}


# --- Frames and the pipeline ----------------------------------------------------------------------


COLOURS_SPEC = ModelSpec(
    version_id=1, number=1, file_name="", sha256="", input_shape=(16, 16, 3), labels=()
)
LIMITS = Limits(max_image_bytes=10_000_000, max_image_pixels=10_000_000)


def test_a_text_frame_asks_with_a_boolean_only():
    png = base64.b64encode(encode(solid_image("red"))).decode()
    assert parse_text_frame(json.dumps({"image": png}), max_image_bytes=10**6).preview is False
    frame = parse_text_frame(json.dumps({"image": png, "preview": True}), max_image_bytes=10**6)
    assert frame.preview is True
    for value in ("true", 1, None):
        with pytest.raises(PredictionError) as caught:
            parse_text_frame(
                json.dumps({"id": 4, "image": png, "preview": value}), max_image_bytes=10**6
            )
        assert (caught.value.code, caught.value.frame_id) == ("bad_request", 4)
        assert '"preview" must be true or false' in caught.value.message


def test_the_pipeline_previews_only_when_asked_and_leaves_the_input_as_it_was():
    png = encode(solid_image("red", (64, 48)))
    plain = prepare_frame(Frame(id=0, image=png), spec=COLOURS_SPEC, limits=LIMITS)
    assert plain.input_preview is None

    asked = prepare_frame(Frame(id=0, image=png, preview=True), spec=COLOURS_SPEC, limits=LIMITS)
    assert np.array_equal(asked.model_input, plain.model_input)
    image = decode(asked.input_preview)
    expected = np.rint(asked.model_input * 255).astype(np.uint8)
    assert np.array_equal(np.asarray(image), upscaled(expected, 7))
    assert image.getcolors() == [(112 * 112, RED)]


# --- Over the WebSocket and HTTP --------------------------------------------------------------------


@pytest.fixture
def colors(trained):
    """The colours model as a `.tflite` made elsewhere (16x16x3, stretch, [0, 1])."""
    return support.register("colors", trained.tflite, labels=COLOR_LABELS).project


@pytest.fixture
async def socket(colors):
    communicator = WebsocketCommunicator(application, "/ws/projects/colors/")
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected
    assert (await receive(communicator))["type"] == "ready"
    yield communicator
    await communicator.disconnect()


async def receive(communicator):
    return json.loads(await communicator.receive_from(timeout=TIMEOUT))


def assert_solid(data_url: str, colour: tuple) -> None:
    image = decode(data_url)
    assert (image.mode, image.size) == ("RGB", (112, 112))
    assert image.getcolors() == [(112 * 112, colour)]


@pytest.mark.django_db(transaction=True)
async def test_a_json_frame_asks_for_its_own_preview(socket):
    image = base64.b64encode(encode(solid_image("red"))).decode()
    await socket.send_json_to({"id": "asked", "image": image, "preview": True})
    await socket.send_json_to({"id": "plain", "image": image})
    asked, plain = await receive(socket), await receive(socket)

    assert (asked["type"], asked["id"], asked["labels"][0]["label"]) == (
        "prediction",
        "asked",
        "red",
    )
    assert_solid(asked["input_preview"], RED)  # the model input (220/255, ...) mapped back
    assert plain["type"] == "prediction" and "input_preview" not in plain


@pytest.mark.django_db(transaction=True)
async def test_the_options_message_turns_preview_on_and_off_in_order(socket):
    png = encode(solid_image("red"))
    pixels = np.full((16, 16, 3), 0.5).tolist()
    await socket.send_to(bytes_data=png)  # before the options: no preview
    await socket.send_json_to({"type": "options", "preview": True})
    await socket.send_to(bytes_data=png)
    await socket.send_json_to({"id": "px", "pixels": pixels})
    await socket.send_json_to({"type": "options", "preview": False})
    await socket.send_to(bytes_data=png)
    replies = [await receive(socket) for _ in range(6)]

    assert [reply["type"] for reply in replies] == [
        "prediction", "options", "prediction", "prediction", "options", "prediction",
    ]  # fmt: skip
    assert "input_preview" not in replies[0] and "input_preview" not in replies[5]
    assert replies[1] == {"type": "options", "preview": True}
    assert replies[4] == {"type": "options", "preview": False}
    assert replies[2]["id"] == 1 and replies[5]["id"] == 2  # binary frames keep their numbers
    assert_solid(replies[2]["input_preview"], RED)
    assert_solid(replies[3]["input_preview"], (128, 128, 128))  # the pixels as given: 0.5


@pytest.mark.django_db(transaction=True)
async def test_bad_options_are_bad_requests_and_change_nothing(socket):
    bad = [
        {"type": "options", "preview": "yes"},
        {"type": "options", "preview": 1},
        {"type": "options", "preview": True, "colour": "red"},
    ]
    for options in bad:
        await socket.send_json_to(options)
        error = await receive(socket)
        assert (error["type"], error["id"], error["code"]) == ("error", None, "bad_request")
        assert len(error["message"].split()) >= 4
    assert "colour" in error["message"]

    await socket.send_json_to({"type": "options"})  # no change: says what holds
    assert await receive(socket) == {"type": "options", "preview": False}
    await socket.send_to(bytes_data=encode(solid_image("blue")))
    reply = await receive(socket)
    assert reply["labels"][0]["label"] == "blue" and "input_preview" not in reply


@pytest.fixture
def signed(trained):
    """The colours model registered as taking [-1, 1]."""
    return support.register(
        "signed", trained.tflite, labels=COLOR_LABELS, scale_min=-1.0, scale_max=1.0
    ).project


@pytest.mark.django_db(transaction=True)
async def test_the_preview_follows_the_versions_scale(signed):
    communicator = WebsocketCommunicator(application, "/ws/projects/signed/")
    try:
        connected, _ = await communicator.connect(timeout=TIMEOUT)
        assert connected and (await receive(communicator))["type"] == "ready"
        await communicator.send_json_to({"type": "options", "preview": True})
        await communicator.send_to(bytes_data=encode(solid_image("green")))
        await communicator.send_json_to({"id": 1, "pixels": np.full((16, 16, 3), -1.0).tolist()})
        _, image_reply, pixels_reply = [await receive(communicator) for _ in range(3)]
    finally:
        await communicator.disconnect()
    assert_solid(image_reply["input_preview"], COLORS["green"])
    assert_solid(pixels_reply["input_preview"], (0, 0, 0))


@pytest.mark.django_db(transaction=True)
async def test_http_predict_takes_preview_in_the_query_or_the_json_body(async_client, colors):
    png = encode(solid_image("red"))
    url = PREDICT.format("colors")
    asked = await async_client.post(f"{url}?preview=1", png, content_type="image/png")
    plain = await async_client.post(url, png, content_type="image/png")
    body = {"image": base64.b64encode(png).decode(), "preview": True}
    in_body = await async_client.post(url, body, content_type="application/json")
    bad = await async_client.post(f"{url}?preview=maybe", png, content_type="image/png")

    assert asked.status_code == plain.status_code == in_body.status_code == 200
    assert_solid(asked.json()["input_preview"], RED)
    assert_solid(in_body.json()["input_preview"], RED)
    assert "input_preview" not in plain.json()
    assert bad.status_code == 400 and bad.json()["code"] == "bad_request"
    assert "preview" in bad.json()["message"]


# --- The browser client (modelserver.js) against a scripted socket ----------------------------------

FAKE_SOCKET_PAGE = """<!doctype html><script type="module">
// A stand-in WebSocket: records what the client sends and answers as the server would.
class FakeSocket extends EventTarget {
  static CONNECTING = 0; static OPEN = 1; static CLOSING = 2; static CLOSED = 3;
  constructor(url) {
    super();
    this.readyState = 1;
    window.sockets.push(this);
    window.sent.push("open");
    setTimeout(() => this.reply({ type: "ready", project: "colors", model: null }), 0);
  }
  reply(message) { this.onmessage?.({ data: JSON.stringify(message) }); }
  send(data) {
    const text = typeof data === "string" ? data : "binary";
    window.sent.push(text);
    const frame = text === "binary" ? { type: "binary" } : JSON.parse(text);
    setTimeout(() => this.reply(frame.type === "options"
      ? { type: "options", preview: frame.preview }
      : { type: "prediction", id: null, labels: [] }), 0);
  }
  close() { this.readyState = 3; this.onclose?.({ code: 1006 }); }
}
window.sockets = []; window.sent = [];
window.WebSocket = FakeSocket;
window.modelserver = await import("./modelserver.js");
window.loaded = true;
</script>"""


@pytest.fixture(scope="module")
def client_page(tmp_path_factory):
    """A page on a local static server holding modelserver.js, with WebSocket faked."""
    if browser.missing():
        pytest.skip(browser.missing())
    from playwright.sync_api import sync_playwright

    folder = tmp_path_factory.mktemp("client")
    script = support.PROJECT_DIR / "predictions" / "static" / "predictions" / "modelserver.js"
    (folder / "modelserver.js").write_text(script.read_text())
    (folder / "index.html").write_text(FAKE_SOCKET_PAGE)
    port = support.free_port()
    with browser.OtherSite(folder, port), sync_playwright() as playwright:
        chromium = browser.launch(playwright)
        try:
            yield chromium, f"http://127.0.0.1:{port}/"
        finally:
            chromium.close()


def run_client(client_page, script: str):
    chromium, url = client_page
    page = chromium.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(url)
        page.wait_for_function("window.loaded === true", timeout=TIMEOUT * 1000)
        result = page.evaluate(script)
    finally:
        page.close()
    assert not errors
    return result


def test_the_client_sends_its_preview_option_after_each_ready_before_queued_frames(client_page):
    sent = run_client(
        client_page,
        """async () => {
            const client = window.modelserver.connect(location.origin, "colors", { preview: true });
            const first = client.predict(new Uint8Array([1, 2, 3]));  // queued before ready
            await first;
            window.sockets[0].close();  // dropped: reconnects, and sends the option again
            await new Promise((ready) => client.addEventListener("ready", ready, { once: true }));
            await client.predict(new Uint8Array([4]));
            client.close();
            return window.sent;
        }""",
    )
    options = '{"type":"options","preview":true}'
    assert sent == ["open", options, "binary", "open", options, "binary"]


def test_the_clients_set_preview_goes_in_order_with_frames(client_page):
    result = run_client(
        client_page,
        """async () => {
            const client = window.modelserver.connect(location.origin, "colors");
            await new Promise((ready) => client.addEventListener("ready", ready, { once: true }));
            const frames = [client.predict(new Uint8Array([1]))];
            const on = client.setPreview(true);
            frames.push(client.predict(new Uint8Array([2])));
            const off = client.setPreview(false);
            const replies = [await on, await off, ...(await Promise.all(frames))];
            client.close();
            return { sent: window.sent, types: replies.map((reply) => reply.type),
                     preview: client.preview };
        }""",
    )
    on, off = '{"type":"options","preview":true}', '{"type":"options","preview":false}'
    assert result["sent"] == ["open", "binary", on, "binary", off]
    assert result["types"] == ["options", "options", "prediction", "prediction"]
    assert result["preview"] is False
