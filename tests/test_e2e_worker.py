"""End to end: registration as a job, through a real daphne, a real worker process, SeaweedFS,
and PostgreSQL when DATABASE_URL names it.

daphne runs with an HTTP timeout of 2 s, shorter than any check (a TensorFlow start alone takes
longer): the admin form must return at once and leave the check to the worker.
"""

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests import support
from tests.support import COLOR_LABELS, encode, solid_image

ADMIN = ("admin", "admin-password-1")
HTTP_TIMEOUT_S = 2
LEASE_S = 3
TIMEOUT = 180


class Deployment:
    def __init__(self, server, worker, env, folder):
        self.server, self.worker, self.env, self.folder = server, worker, env, folder

    def shell(self, code: str) -> str:
        """Run Python in a `manage.py shell` of the deployment; its last line of output."""
        return support.manage("shell", "-c", code, env=self.env).stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, s3_server, trained):
    """daphne (production settings) and one worker, as the Procfile runs them."""
    folder = tmp_path_factory.mktemp("worker-e2e")
    bucket = s3_server.create_bucket()
    (folder / "labels.txt").write_text("\n".join(COLOR_LABELS))
    settings = {"REGISTRATION_LEASE_SECONDS": LEASE_S, "WORKER_POLL_SECONDS": 0.2}
    with support.migrated_env(folder, s3=bucket, production=True, admin=ADMIN, **settings) as env:
        support.manage(
            "register_model", "colors", "--file", str(trained.colors),
            "--labels-file", str(folder / "labels.txt"), "--activate", env=env,
        )  # fmt: skip
        server = support.DaphneServer(
            env, folder / "daphne.log", extra_args=("--http-timeout", str(HTTP_TIMEOUT_S))
        )
        # A dyno of its own: its own local cache, so no check report is reused from above.
        worker_env = {**env, "MODEL_CACHE_DIR": str(folder / "worker-cache")}
        worker = support.WorkerProcess(worker_env, folder / "worker.log")
        with support.running(server, worker):
            yield Deployment(server, worker, env, folder)


def receive(socket) -> dict:
    return json.loads(socket.recv(timeout=TIMEOUT))


def peak_rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))


def loads_tensorflow(pid: int) -> bool:
    return "tensorflow" in Path(f"/proc/{pid}/maps").read_text()


def test_the_admin_form_returns_at_once_and_the_worker_swaps_the_version_in(deployment, trained):
    admin = support.AdminSession(deployment.server.url)
    admin.login(*ADMIN)
    project_id = deployment.shell(
        "from predictions.models import Project; print(Project.objects.get(slug='colors').pk)"
    )
    with connect(f"{deployment.server.ws_url}/ws/projects/colors/", open_timeout=60) as socket:
        assert receive(socket)["model"]["version"] == 1

        started = time.monotonic()
        status, body, location = admin.post(
            "/admin/predictions/modelversion/add/",
            {
                "project": project_id,
                "s3_key": "",
                "labels_text": "rouge\nvert\nbleu",
                "resize": "stretch",
                "scale_min": "0",
                "scale_max": "1",
                "activate": "on",
            },
            files={"upload": trained.colors},
        )
        form_seconds = time.monotonic() - started
        assert status == 302, re.findall(r'class="errorlist[^>]*>(.*?)</ul>', body, re.S)
        assert form_seconds < HTTP_TIMEOUT_S
        listing = admin.request(location)[1]
        assert "pending" in listing and "the worker checks it" in listing

        # The version in service answers every frame until the swap is announced.
        before, changed = [], None
        while changed is None and time.monotonic() - started < TIMEOUT:
            socket.send(encode(solid_image("blue"), "PNG"))
            reply = receive(socket)
            if reply["type"] == "model_changed":
                changed = reply
                receive(socket)  # the reply to the frame sent as the swap came
                break
            assert reply["type"] == "prediction", reply
            before.append(reply)
            time.sleep(0.1)
        swapped_after = time.monotonic() - started

        assert changed is not None, "no model_changed within the time limit"
        assert changed["model"] == {
            "version": 2,
            "input_shape": [16, 16, 3],
            "labels": ["rouge", "vert", "bleu"],
        }
        assert before and all(r["model_version"] == 1 for r in before)
        assert [r["labels"][0]["label"] for r in before] == ["blue"] * len(before)
        # The check itself took longer than daphne lets an HTTP request take.
        assert swapped_after > HTTP_TIMEOUT_S
        socket.send(encode(solid_image("blue"), "PNG"))
        after = receive(socket)
        assert (after["model_version"], after["labels"][0]["label"]) == (2, "bleu")

    line = support.show_versions("colors", env=deployment.env)[0]
    assert line["version"] == 2 and line["status"] == "ready" and line["active"] is True
    assert line["runtime"] == "litert" and line["format"] == "keras"
    # The web process never loaded TensorFlow, also not while a registration ran.
    daphne_pid = deployment.server.process.pid
    assert not loads_tensorflow(daphne_pid)
    print(f"web process peak RSS during the registration: {peak_rss_kb(daphne_pid) / 1024:.0f} MB")


def test_a_worker_killed_mid_check_is_replaced_and_the_job_taken_up_again(deployment, trained):
    number = support.manage(
        "register_model", "killed", "--file", str(trained.colors), "--labels-file",
        str(deployment.folder / "labels.txt"), "--activate", "--no-wait",
        "--scale", "0", "2",  # another input range: a check of its own, not a cached report
        env=deployment.env,
    ).stdout.strip()  # fmt: skip
    assert number == "1"
    assert support.show_versions("killed", env=deployment.env)[0]["status"] in (
        "pending",
        "checking",
    )
    support.wait_for_version("killed", 1, env=deployment.env, statuses={"checking"}, timeout=60)
    children = support.wait_for(deployment.worker.children, timeout=30, what="the check's child")

    deployment.worker.kill()
    # The check's child dies with its worker (no orphan holding its memory).
    support.wait_for(
        lambda: not any(Path(f"/proc/{pid}").exists() for pid in children),
        timeout=10,
        what="the orphaned child's end",
    )
    time.sleep(LEASE_S + 1)
    # Its lease lapsed: it is not shown `checking` with no worker on it, but queued again.
    line = support.show_versions("killed", env=deployment.env)[0]
    assert line["status"] == "pending"
    assert line["message"] == "The worker checking it stopped (attempt 1 of 2); queued again."

    deployment.worker.start()
    line = support.wait_for_version(
        "killed", 1, env=deployment.env, statuses={"ready", "failed"}, timeout=TIMEOUT
    )
    assert line["status"] == "ready", line
    assert line["active"] is True
    tasks = json.loads(
        deployment.shell(
            "import json; from django_tasks_db.models import DBTaskResult as T;"
            "from predictions.models import ModelVersion as V;"
            "v = V.objects.get(project__slug='killed', number=1);"
            "print(json.dumps({'attempts': v.attempts, 'tasks': sorted("
            "t.status for t in T.objects.filter(args_kwargs__args=[v.pk]))}))"
        )
    )
    assert tasks == {"attempts": 2, "tasks": ["FAILED", "SUCCESSFUL"]}


def test_a_tflite_registers_on_the_worker_without_starting_tensorflow_in_the_web(
    deployment, trained
):
    if not hasattr(trained, "tflite"):
        pytest.fail("the test models lack a .tflite file")
    number = support.manage(
        "register_model", "lite", "--file", str(trained.tflite), "--labels-file",
        str(deployment.folder / "labels.txt"), "--activate", "--no-wait", env=deployment.env,
    ).stdout.strip()  # fmt: skip
    line = support.wait_for_version(
        "lite", int(number), env=deployment.env, statuses={"ready", "failed"}, timeout=TIMEOUT
    )
    assert (line["status"], line["format"], line["runtime"]) == ("ready", "tflite", "litert")
    with connect(f"{deployment.server.ws_url}/ws/projects/lite/", open_timeout=60) as socket:
        assert receive(socket)["model"]["version"] == int(number)
        socket.send(encode(solid_image("green"), "PNG"))
        assert receive(socket)["labels"][0]["label"] == "green"
    assert not loads_tensorflow(deployment.server.process.pid)


def test_sigterm_lets_the_worker_finish_cleanly(deployment):
    """The worker exits on SIGTERM between jobs (Heroku's dyno stop)."""
    process = deployment.worker.process
    os.kill(process.pid, signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    deployment.worker.log.close()
    deployment.worker.start()
