"""End to end: a real daphne process, models in a real S3 server, clients in this process.

Everything a client sees goes over loopback sockets: the `websockets` library for the
WebSocket and urllib for HTTP, as scripts and pages would use them.
"""

import base64
import contextlib
import json
import os
import signal
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests import support
from tests.support import COLOR_LABELS, encode, solid_image

TIMEOUT = 60
MAX_IMAGE_PIXELS = 2_000_000
METRICS_TOKEN = "metrics-secret"
METRICS_AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}


class Live:
    def __init__(self, server, env, token):
        self.server, self.env, self.token = server, env, token

    def ws(self, slug="colors", query="", **kwargs):
        return connect(
            f"{self.server.ws_url}/ws/projects/{slug}/{query}", open_timeout=TIMEOUT, **kwargs
        )

    def post(self, path, body: bytes, content_type: str, headers=None):
        request = urllib.request.Request(
            f"{self.server.url}{path}",
            data=body,
            headers={"Content-Type": content_type, **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def get(self, path, headers=None):
        request = urllib.request.Request(f"{self.server.url}{path}", headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()


@pytest.fixture(scope="module")
def live(tmp_path_factory, s3_server, trained):
    """daphne with production settings, PostgreSQL/Redis when configured, models in S3."""
    folder = tmp_path_factory.mktemp("e2e")
    bucket = s3_server.create_bucket()
    with support.migrated_env(
        folder,
        s3=bucket,
        production=True,
        MAX_IMAGE_PIXELS=MAX_IMAGE_PIXELS,
        MAX_PENDING_FRAMES=4,
        METRICS_TOKEN=METRICS_TOKEN,
    ) as env:
        support.register_colour_model(env, folder, trained.colors, "colors", "secret", "swap")
        script = (
            "from predictions.models import Project;"
            "Project.objects.create(slug='empty', name='Empty');"
            f"{support.MAKE_SECRET_PRIVATE}"
        )
        support.manage("shell", "-c", script, env=env)
        server = support.DaphneServer(env, folder / "daphne.log")
        with support.running(server):
            yield Live(server, env, support.SECRET_TOKEN)


def receive(socket):
    return json.loads(socket.recv(timeout=TIMEOUT))


def test_ready_then_png_jpeg_and_json_frames(live):
    with live.ws() as socket:
        ready = receive(socket)
        assert ready == {
            "type": "ready",
            "project": "colors",
            "model": {"version": 1, "input_shape": [16, 16, 3], "labels": COLOR_LABELS},
        }
        socket.send(encode(solid_image("red"), "PNG"))
        socket.send(encode(solid_image("blue", (640, 480)), "JPEG", quality=85))
        green = base64.b64encode(encode(solid_image("green"), "PNG")).decode()
        socket.send(json.dumps({"id": "g", "image": f"data:image/png;base64,{green}"}))
        socket.send(
            json.dumps({"id": "p", "pixels": np.full((16, 16, 3), [0.1, 0.1, 0.9]).tolist()})
        )
        replies = [receive(socket) for _ in range(4)]

    assert [reply["id"] for reply in replies] == [0, 1, "g", "p"]
    assert [reply["labels"][0]["label"] for reply in replies] == ["red", "blue", "green", "blue"]
    assert all(reply["model_version"] == 1 for reply in replies)


def test_every_error_code_keeps_the_connection_usable(live):
    good = encode(solid_image("green"), "PNG")
    huge = encode(solid_image("red", (2000, 1500)), "PNG")  # 3 MP, over the server's 2 MP
    cases = [
        (b"\x89PNG but not really", "bad_image"),
        (encode(solid_image("red"), "TIFF"), "bad_image"),
        (huge, "too_large"),
        ("[1, 2", "bad_request"),
        (json.dumps({"id": 5}), "bad_request"),
        (json.dumps({"id": 6, "pixels": [[0.0] * 3] * 16}), "bad_shape"),
    ]
    with live.ws() as socket:
        receive(socket)
        for frame, code in cases:
            socket.send(frame)
            error = receive(socket)
            assert (error["type"], error["code"]) == ("error", code), error
            assert error["message"]
            socket.send(good)
            assert receive(socket)["labels"][0]["label"] == "green"


def test_model_unavailable_without_an_active_version(live):
    with live.ws("empty") as socket:
        assert receive(socket)["model"] is None
        socket.send(json.dumps({"id": 1, "pixels": [[[0.0]]]}))
        assert receive(socket)["code"] == "model_unavailable"
        socket.send(encode(solid_image("red"), "PNG"))
        assert receive(socket)["code"] == "model_unavailable"


def test_busy_beyond_the_waiting_frames_and_replies_stay_in_order(live):
    # Near the server's pixel limit, one colour compresses to a small PNG but takes real time
    # to decode and resize, while the next frames arrive at once.
    slow = encode(solid_image("red", (1600, 1200)), "PNG")
    with live.ws() as socket:
        receive(socket)
        for _ in range(20):
            socket.send(slow)
        replies = [receive(socket) for _ in range(20)]
    assert [reply["id"] for reply in replies] == list(range(20))
    assert [reply["type"] for reply in replies[:4]] == ["prediction"] * 4
    codes = {reply["code"] for reply in replies if reply["type"] == "error"}
    assert codes == {"busy"}


def test_unknown_and_private_projects_are_closed_with_codes(live):
    with live.ws("nope") as socket:
        with pytest.raises(ConnectionClosed):
            socket.recv(timeout=TIMEOUT)
        assert socket.close_code == 4404
    with live.ws("secret", "?token=wrong") as socket:
        with pytest.raises(ConnectionClosed):
            socket.recv(timeout=TIMEOUT)
        assert socket.close_code == 4403
    with live.ws("secret", f"?token={live.token}") as socket:
        assert receive(socket)["project"] == "secret"


def test_browser_origin_must_match_allowed_hosts(live):
    with pytest.raises(InvalidStatus) as refused:
        live.ws(origin="https://evil.example").close()
    assert refused.value.response.status_code == 403
    with live.ws(origin=f"http://127.0.0.1:{live.server.port}") as socket:
        assert receive(socket)["type"] == "ready"


def test_http_predict_and_errors(live):
    path = "/api/projects/colors/predict"
    status, body = live.post(path, encode(solid_image("blue"), "JPEG"), "image/jpeg")
    assert status == 200 and body["labels"][0]["label"] == "blue"
    status, body = live.post(path, b"nope", "image/png")
    assert (status, body["code"]) == (400, "bad_image")
    status, body = live.post(path, encode(solid_image("red", (2000, 1500)), "PNG"), "image/png")
    assert (status, body["code"]) == (413, "too_large")
    status, body = live.post(
        "/api/projects/secret/predict", encode(solid_image("red")), "image/png"
    )
    assert status == 403
    status, body = live.post(
        "/api/projects/secret/predict",
        encode(solid_image("red")),
        "image/png",
        headers={"Authorization": f"Bearer {live.token}"},
    )
    assert status == 200 and body["labels"][0]["label"] == "red"


def test_the_serving_process_never_imports_tensorflow(live):
    with live.ws() as socket:
        receive(socket)
        socket.send(encode(solid_image("red"), "PNG"))
        reply = receive(socket)
    assert reply["labels"][0]["label"] == "red"
    metrics = live.get("/metrics", headers=METRICS_AUTH)[1].decode()
    assert "modelserver_tensorflow_imported 0.0" in metrics
    maps = open(f"/proc/{live.server.process.pid}/maps").read()
    assert "libtensorflow_framework" not in maps and "_pywrap_tensorflow_internal" not in maps


def test_pages_and_static_files_with_debug_off(live):
    status, index = live.get("/")
    assert status == 200 and b"/projects/colors/" in index
    status, page = live.get("/projects/colors/")
    assert status == 200 and b"<canvas" in page
    status, script = live.get("/static/predictions/modelserver.js")
    assert status == 200 and b"new WebSocket" in script
    assert live.get("/readyz")[0] == 200
    assert live.get("/metrics")[0] == 401  # debug is off: the token is needed
    assert b"modelserver_predictions_total" in live.get("/metrics", headers=METRICS_AUTH)[1]


@pytest.mark.skipif(
    not os.environ.get("REDIS_URL"), reason="needs REDIS_URL: swaps cross processes through Redis"
)
def test_activation_from_another_process_reaches_open_connections(live, trained):
    with live.ws("swap") as socket:
        receive(socket)
        labels = live.server.log_path.parent / "new-labels.txt"
        labels.write_text("R\nG\nB\n")
        started = time.monotonic()
        support.manage(
            "register_model", "swap", "--file", str(trained.colors),
            "--labels-file", str(labels), "--activate", env=live.env,
        )  # fmt: skip
        changed = receive(socket)
        assert changed["type"] == "model_changed"
        assert changed["model"]["version"] == 2 and changed["model"]["labels"] == ["R", "G", "B"]
        assert time.monotonic() - started < TIMEOUT
        socket.send(encode(solid_image("red"), "PNG"))
        reply = receive(socket)
    assert (reply["model_version"], reply["labels"][0]["label"]) == (2, "R")


def test_sigterm_closes_sockets_cleanly_and_exits(live, tmp_path):
    """A deploy's SIGTERM: open sockets get a close frame (not a drop) and daphne exits in time."""
    server = support.DaphneServer(live.env, tmp_path / "sigterm.log")
    server.start()
    with contextlib.ExitStack() as stack:
        stack.callback(server.stop)
        sockets = [stack.enter_context(live_ws(server)) for _ in range(3)]
        for socket in sockets:
            receive(socket)
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        for socket in sockets:
            with pytest.raises(ConnectionClosed):
                socket.recv(timeout=TIMEOUT)
            assert socket.close_code == 1000
        server.process.wait(timeout=25)
        assert time.monotonic() - started < 25


def live_ws(server):
    return connect(f"{server.ws_url}/ws/projects/colors/", open_timeout=TIMEOUT)
