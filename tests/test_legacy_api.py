"""The original service's API (`/models`, `/models/<name>/input_shape`, the
`/models/<name>/get_predictions` WebSocket) against a real daphne process, as its clients use
it: urllib for HTTP, the `websockets` library for the socket."""

import json
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests import support

TIMEOUT = 60
LABELS = [str(digit) for digit in range(10)]
TOKEN = support.SECRET_TOKEN
S3_KEY = "team/models/mnist_model.keras"
FRAMES_PER_SECOND = 20  # the server's rate limit here: bursts of 40 frames


@dataclass(frozen=True)
class Mnist:
    path: Path  # mnist_model.keras: 28x28x1 -> 10 classes (softmax)
    model: object  # the same model in this process, for keras's own predictions
    samples: np.ndarray  # a few 28x28x1 digits, white strokes on black, 0..1
    three_classes: Path  # another 28x28x1 model, with three outputs


@pytest.fixture(scope="module")
def mnist(tmp_path_factory) -> Mnist:
    """A small digit classifier, trained for a few seconds on scikit-learn's digits upscaled."""
    import keras
    from skimage.transform import resize
    from sklearn.datasets import load_digits

    keras.utils.set_random_seed(3)
    digits = load_digits()
    images = resize(digits.images / 16.0, (len(digits.images), 28, 28), order=1)
    x = images[..., np.newaxis].astype(np.float32)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(x, digits.target, epochs=2, batch_size=64, verbose=0)
    folder = tmp_path_factory.mktemp("legacy-models")
    model.save(folder / "mnist_model.keras")
    three = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    three.save(folder / "three.keras")
    return Mnist(folder / "mnist_model.keras", model, x[:4], folder / "three.keras")


class Live:
    def __init__(self, server, env, folder):
        self.server, self.env, self.folder = server, env, folder

    def get(self, path):
        try:
            with urllib.request.urlopen(f"{self.server.url}{path}", timeout=TIMEOUT) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def legacy_ws(self, name, query="", **kwargs):
        url = f"{self.server.ws_url}/models/{name}/get_predictions{query}"
        return connect(url, open_timeout=TIMEOUT, **kwargs)

    def ws(self, slug):
        return connect(f"{self.server.ws_url}/ws/projects/{slug}/", open_timeout=TIMEOUT)

    def register(self, slug, *source, labels=True):
        extra = ("--labels-file", str(self.folder / "labels.txt")) if labels else ()
        support.manage("register_model", slug, *source, *extra, "--activate", env=self.env)


@pytest.fixture(scope="module")
def live(tmp_path_factory, mnist):
    """daphne with production settings, local model storage; projects `mnist` (public),
    `secret` (private), `swap` (public) and `empty` (public, no version)."""
    folder = tmp_path_factory.mktemp("legacy")
    (folder / "labels.txt").write_text("\n".join(LABELS))
    with support.migrated_env(
        folder,
        production=True,
        MAX_FRAMES_PER_SECOND=FRAMES_PER_SECOND,
        MODEL_SWAP_POLL_SECONDS=0.5,
    ) as env:
        server = support.DaphneServer(env, folder / "daphne.log")
        live = Live(server, env, folder)
        live.register("mnist", "--file", str(mnist.path))
        # Only `mnist` was uploaded as mnist_model.keras: the others' files have other names.
        for slug in ("secret", "swap"):
            copy = shutil.copy(mnist.path, folder / f"{slug}_model.keras")
            live.register(slug, "--file", str(copy))
        script = (
            "from predictions.models import Project;"
            "Project.objects.create(slug='empty', name='Empty');"
            f"{support.MAKE_SECRET_PRIVATE}"
        )
        support.manage("shell", "-c", script, env=env)
        with support.running(server):
            yield live


def receive(socket):
    return json.loads(socket.recv(timeout=TIMEOUT))


def closed_with(socket) -> tuple[dict, int]:
    """The error a refused socket says, and the code it is then closed with."""
    error = receive(socket)
    with pytest.raises(ConnectionClosed):
        socket.recv(timeout=TIMEOUT)
    return error, socket.close_code


def grid(image: np.ndarray) -> str:
    """A frame as the original clients send it: the 28x28 grid, a bare JSON array."""
    return json.dumps(image[..., 0].tolist())


# --- Which project a name means (in process) -------------------------------------------------


def add_project(slug, *, file, original_name="", number=1, project=None):
    """A project whose active version has these names (no model file: only names are read)."""
    from predictions.models import ModelVersion, Project

    project = project or Project.objects.create(slug=slug, name=slug)
    version = ModelVersion(project=project, number=number, original_name=original_name)
    version.file.name = file
    version.status, version.input_shape = ModelVersion.Status.READY, [28, 28, 1]
    version.save()
    project.active_version = version
    project.save()
    return project


@pytest.mark.django_db
def test_a_name_is_a_slug_else_one_active_model_file():
    from predictions.selectors import AmbiguousModelName, project_find_by_model_name

    def find(name):
        project = project_find_by_model_name(name=name)
        return project.slug if project else None

    add_project("digits", file="projects/digits/abc123.keras", original_name="mnist.keras")
    add_project("other", file="projects/other/def456.keras", original_name="digits")
    old = add_project("swapped", file="projects/swapped/1.keras", original_name="old.keras")
    add_project("swapped", file="projects/swapped/2.keras", number=2, project=old)

    assert find("mnist.keras") == "digits"
    assert find("projects/digits/abc123.keras") == find("abc123.keras") == "digits"
    assert find("digits") == "digits"  # a slug first, before other projects' file names
    assert find("MNIST.keras") is None  # names are exact, also where LIKE ignores case
    assert find("old.keras") is None  # only active versions count
    assert find("2.keras") == "swapped"

    add_project("team", file="team/models/mnist.keras", original_name="team/models/mnist.keras")
    assert find("team/models/mnist.keras") == "team"
    assert find("models/mnist.keras") is None  # a key in full, or its last part only
    with pytest.raises(AmbiguousModelName, match="several projects"):
        find("mnist.keras")


# --- Through daphne ---------------------------------------------------------------------------


def test_models_lists_the_public_projects_only(live):
    status, body = live.get("/models")
    assert status == 200
    assert set(body["models"]) - {"team"} == {"empty", "mnist", "swap"}


def test_input_shape_by_slug_file_name_and_s3_key(live, mnist):
    shape = {"width": 28, "height": 28, "channels": 1}
    assert live.get("/models/mnist/input_shape") == (200, shape)
    assert live.get("/models/mnist_model.keras/input_shape") == (200, shape)

    # A second project whose model is a key in the model storage (a local folder here).
    stored = live.folder / "model-storage" / S3_KEY
    stored.parent.mkdir(parents=True)
    shutil.copy(mnist.path, stored)
    live.register("team", "--s3-key", S3_KEY)
    assert live.get(f"/models/{S3_KEY}/input_shape") == (200, shape)
    with live.legacy_ws(S3_KEY) as socket:
        socket.send(grid(mnist.samples[0]))
        assert len(receive(socket)) == 10

    # Now mnist_model.keras names both projects' files (one's upload, the other's key).
    status, body = live.get("/models/mnist_model.keras/input_shape")
    assert status == 404 and "several" in body["error"]
    with live.legacy_ws("mnist_model.keras") as socket:
        error, code = closed_with(socket)
    assert "several" in error["error"] and code == 4404


def test_unknown_names_and_projects_without_a_model(live):
    status, body = live.get("/models/no-such-model.keras/input_shape")
    assert status == 404 and "no-such-model.keras" in body["error"]
    with live.legacy_ws("nope/nothing.keras") as socket:
        error, code = closed_with(socket)
    assert error["error"] and code == 4404

    status, body = live.get("/models/empty/input_shape")
    assert status == 503 and "no model" in body["error"]
    with live.legacy_ws("empty") as socket:
        socket.send(json.dumps([0.0] * 784))
        assert "no active model" in receive(socket)["error"]


def test_private_project_takes_its_token(live, mnist):
    assert live.get("/models/secret/input_shape")[0] == 403
    status, body = live.get("/models/secret/input_shape?token=wrong")
    assert status == 403 and "token" in body["error"]
    assert live.get(f"/models/secret/input_shape?token={TOKEN}")[0] == 200

    for query in ("", "?token=wrong"):
        with live.legacy_ws("secret", query) as socket:
            error, code = closed_with(socket)
        assert "token" in error["error"] and code == 4403
    with live.legacy_ws("secret", f"?token={TOKEN}") as socket:
        socket.send(grid(mnist.samples[0]))
        assert len(receive(socket)) == 10


def test_scores_match_the_new_protocol_and_keras(live, mnist):
    expected = mnist.model.predict(mnist.samples, verbose=0)
    with live.legacy_ws("mnist") as socket:
        for image in mnist.samples:
            socket.send(grid(image))
        legacy = np.array([receive(socket) for _ in mnist.samples])
        socket.send(json.dumps(mnist.samples[0].ravel().tolist()))  # flat: 784 numbers
        flat = np.array(receive(socket))
    with live.ws("mnist") as socket:
        receive(socket)  # ready
        socket.send(json.dumps({"id": 0, "pixels": mnist.samples[0].tolist(), "top_k": 10}))
        scores = {entry["label"]: entry["score"] for entry in receive(socket)["labels"]}

    assert legacy.shape == (len(mnist.samples), 10)  # in order, one reply per frame
    np.testing.assert_allclose(legacy, expected, atol=1e-5)
    np.testing.assert_allclose(flat, legacy[0], atol=1e-6)
    np.testing.assert_allclose(legacy[0], [scores[label] for label in LABELS], atol=1e-5)


def test_bad_frames_get_errors_and_the_connection_stays_open(live, mnist):
    bad_frames = [
        "not json",
        json.dumps({"a": 1}),
        json.dumps([0.5] * 783),
        json.dumps([["a"] * 28] * 28),
        json.dumps([[0.0] * 28, [0.0] * 27]),
        b"\x89PNG binary",
    ]
    with live.legacy_ws("mnist") as socket:
        for frame in bad_frames:
            socket.send(frame)
            error = receive(socket)
            assert isinstance(error, dict) and isinstance(error["error"], str), frame
            assert error["error"], frame
            socket.send(grid(mnist.samples[1]))
            assert len(receive(socket)) == 10


def test_a_burst_is_answered_in_order_with_busy_past_the_limits(live, mnist):
    good, bad = grid(mnist.samples[0]), json.dumps([0.0] * 10)
    frames = [good if index % 2 == 0 else bad for index in range(120)]
    with live.legacy_ws("mnist") as socket:
        for frame in frames:
            socket.send(frame)
        replies = [receive(socket) for _ in frames]
    busy = [isinstance(reply, dict) and reply["error"].startswith("busy:") for reply in replies]
    for index, reply in enumerate(replies):
        if not busy[index]:  # a prediction for each good frame, an error for each bad one
            assert isinstance(reply, list if index % 2 == 0 else dict), (index, reply)
    assert not busy[0] and sum(busy) >= 30


def test_browser_origin_is_checked(live):
    with pytest.raises(InvalidStatus) as refused:
        live.legacy_ws("mnist", origin="https://evil.example").close()
    assert refused.value.response.status_code == 403
    with live.legacy_ws("mnist", origin=f"http://127.0.0.1:{live.server.port}") as socket:
        socket.send(json.dumps([0.0] * 784))
        assert len(receive(socket)) == 10


def test_an_activation_is_served_without_a_message(live, mnist):
    with live.legacy_ws("swap") as socket:
        socket.send(grid(mnist.samples[0]))
        assert len(receive(socket)) == 10
        live.register("swap", "--file", str(mnist.three_classes), labels=False)
        deadline = time.monotonic() + TIMEOUT
        while True:
            socket.send(grid(mnist.samples[0]))
            reply = receive(socket)
            assert isinstance(reply, list)  # the original protocol has no swap message
            if len(reply) == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert len(reply) == 3
