"""`make run`, the embedded default, as a newcomer runs it: SQLite, the in-memory channel layer,
a local folder for model files, daphne and the worker side by side (honcho, Procfile.dev)."""

import json
import os
import signal
import subprocess
import urllib.request

import pytest
from websockets.sync.client import connect

from tests import support
from tests.support import COLOR_LABELS, PROJECT_DIR, encode, solid_image

TIMEOUT = 180


@pytest.fixture(scope="module")
def make_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("make-run")
    port = support.free_port()
    env = support.outside_env(
        database_url=f"sqlite:///{folder / 'db.sqlite3'}",
        folder=folder,
        MODEL_SWAP_POLL_SECONDS=0.5,
        WORKER_POLL_SECONDS=0.5,
    )
    env.pop("REDIS_URL", None)  # the embedded default: the in-memory channel layer
    env["PATH"] = f"{PROJECT_DIR / '.venv' / 'bin'}:{env.get('PATH', '')}"
    log = open(folder / "make-run.log", "wb")
    process = subprocess.Popen(
        ["make", "run", f"PORT={port}"],
        cwd=PROJECT_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        support.wait_for(
            lambda: urllib.request.urlopen(f"{url}/healthz", timeout=2).status == 200,
            timeout=TIMEOUT,
            what="make run",
            process=process,
        )
        yield url, env, folder
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
        print((folder / "make-run.log").read_text(errors="replace")[-4000:])


def test_make_run_serves_the_demo_and_its_worker_registers_and_swaps_in_a_version(
    make_run, trained
):
    url, env, folder = make_run
    with urllib.request.urlopen(f"{url}/api/projects/digits/", timeout=10) as response:
        assert json.loads(response.read())["model"]["version"] == 1
    labels = folder / "labels.txt"
    labels.write_text("\n".join(COLOR_LABELS))
    support.manage(
        "register_model", "colors", "--file", str(trained.colors), "--labels-file", str(labels),
        "--activate", env=env,
    )  # fmt: skip
    ws_url = url.replace("http", "ws") + "/ws/projects/colors/"
    with connect(ws_url, open_timeout=60) as socket:
        assert json.loads(socket.recv(timeout=60))["model"]["version"] == 1

        queued = support.manage(
            "register_model", "colors", "--file", str(trained.colors), "--labels-file",
            str(labels), "--activate", "--no-wait", env=env,
        )  # fmt: skip
        assert queued.stdout.strip() == "2"

        # The worker beside daphne checks it; daphne's watcher sees the activation.
        changed = json.loads(socket.recv(timeout=TIMEOUT))
        assert changed["type"] == "model_changed" and changed["model"]["version"] == 2
        socket.send(encode(solid_image("red"), "PNG"))
        reply = json.loads(socket.recv(timeout=60))
        assert (reply["model_version"], reply["labels"][0]["label"]) == (2, "red")
