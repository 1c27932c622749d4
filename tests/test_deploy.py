"""The deployment as Heroku runs it: the Dockerfile's lint, the release and web commands read from
heroku.yml and the Procfile, production settings behind a TLS-terminating router, and two web
processes sharing one database and one TLS Redis (`rediss://`, a self-signed certificate, as
Heroku Redis has) behaving as one service."""

import http.client
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
import yaml
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests import support
from tests.support import COLOR_LABELS, PROJECT_DIR, encode, solid_image

TIMEOUT = 60
ADMIN = ("deployer", "deploy-password-1")
HADOLINT = Path(sys.executable).parent / "hadolint"


def heroku_yml() -> dict:
    return yaml.safe_load((PROJECT_DIR / "heroku.yml").read_text())


def procfile() -> dict[str, str]:
    lines = (PROJECT_DIR / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def command_env(env: dict) -> dict:
    """`python` and `daphne` resolve to this interpreter's environment, as in the image."""
    return {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}


WEB_COMMANDS = {"heroku.yml": heroku_yml()["run"]["web"], "Procfile": procfile()["web"]}
RELEASE_COMMANDS = {
    "heroku.yml": " && ".join(heroku_yml()["release"]["command"]),
    "Procfile": procfile()["release"],
}


# --- The files ------------------------------------------------------------------------------


def test_the_dockerfile_passes_hadolint():
    result = subprocess.run(
        [str(HADOLINT), "Dockerfile"], cwd=PROJECT_DIR, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_runs_the_same_web_command_as_heroku_yml_and_the_procfile():
    cmd = re.search(r"^CMD (\[.*\])$", (PROJECT_DIR / "Dockerfile").read_text(), re.M)
    assert cmd, "the Dockerfile has a CMD in JSON form"
    assert json.loads(cmd.group(1)) == shlex.split(WEB_COMMANDS["heroku.yml"])
    assert WEB_COMMANDS["Procfile"] == WEB_COMMANDS["heroku.yml"]
    assert heroku_yml()["build"]["docker"]["web"] == "Dockerfile"


# Heroku's dyno sizes, in MB of memory.
DYNO_MEMORY_MB = {
    "standard-1x": 512,
    "standard-2x": 1024,
    "performance-m": 2560,
    "performance-l": 14336,
}


def test_the_worker_runs_one_command_everywhere_on_a_dyno_sized_for_its_check():
    assert procfile()["worker"] == "bin/worker"
    assert heroku_yml()["run"]["worker"] == {"command": ["bin/worker"], "image": "web"}
    dev = (PROJECT_DIR / "Procfile.dev").read_text().splitlines()
    dev = dict(line.split(": ", 1) for line in dev if line.strip() and not line.startswith("#"))
    assert dev == {"web": procfile()["web"], "worker": procfile()["worker"]}
    app = json.loads((PROJECT_DIR / "app.json").read_text())
    worker = app["formation"]["worker"]
    check_limit = int(app["env"]["MODEL_CHECK_MEMORY_BYTES"]["value"])
    # The check's child gets its limit, and the worker itself room beside it.
    assert check_limit + 256 * 1024**2 <= DYNO_MEMORY_MB[worker["size"]] * 1024**2
    assert app["formation"]["web"]["size"] == "standard-1x"


def test_the_images_collectstatic_step_works_with_production_settings(tmp_path):
    # The Dockerfile's own RUN line (up to its first `&&`), with the image's DJANGO_DEBUG=false.
    dockerfile = (PROJECT_DIR / "Dockerfile").read_text()
    assert re.search(r"^\s+DJANGO_DEBUG=false", dockerfile, re.M)
    step = re.search(r"^RUN (.*collectstatic[^&\\]*)", dockerfile, re.M).group(1).strip()
    env = support.outside_env(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}", folder=tmp_path,
        DJANGO_DEBUG="false", DJANGO_STATIC_ROOT=tmp_path / "static",
    )  # fmt: skip
    result = subprocess.run(
        ["sh", "-c", step], cwd=PROJECT_DIR, env=command_env(env), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    client = tmp_path / "static" / "predictions" / "modelserver.js"
    assert client.exists() and client.with_name("modelserver.js.gz").exists()
    assert (tmp_path / "static" / "admin" / "css" / "base.css").exists()


def test_app_json_asks_for_the_add_ons_and_every_required_setting():
    app = json.loads((PROJECT_DIR / "app.json").read_text())
    assert app["stack"] == "container"
    plans = {addon["plan"].split(":")[0] for addon in app["addons"]}
    assert plans == {"heroku-postgresql", "heroku-redis"}
    variables = app["env"]
    assert variables["DJANGO_SECRET_KEY"]["generator"] == "secret"
    assert variables["DJANGO_DEBUG"]["value"] == "false"
    for name in ("DJANGO_ALLOWED_HOSTS", "AWS_STORAGE_BUCKET_NAME", "AWS_ACCESS_KEY_ID",
                 "AWS_SECRET_ACCESS_KEY", "AWS_S3_REGION_NAME"):  # fmt: skip
        assert variables[name].get("required", True), name
    documented = set(
        re.findall(r"^([A-Z0-9_]+)=", (PROJECT_DIR / ".env.example").read_text(), re.M)
    )
    assert set(variables) <= documented, set(variables) - documented


def test_rediss_urls_skip_certificate_checks_as_heroku_redis_needs():
    from modelserver.settings import redis_host

    assert redis_host("rediss://:pw@redis.example:6380") == {
        "address": "rediss://:pw@redis.example:6380",
        "ssl_cert_reqs": None,
    }
    assert redis_host("redis://127.0.0.1:6379/0") == {"address": "redis://127.0.0.1:6379/0"}


# --- The commands ---------------------------------------------------------------------------


@pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith("postgres"),
    reason="needs DATABASE_URL naming a PostgreSQL server (Heroku Postgres's engine)",
)
@pytest.mark.parametrize("source", list(RELEASE_COMMANDS))
def test_the_release_command_migrates_postgresql(source, tmp_path):
    with support.OutsideDatabase(tmp_path) as database_url:
        env = command_env(
            support.outside_env(database_url=database_url, folder=tmp_path, production=True)
        )
        result = subprocess.run(
            ["sh", "-c", RELEASE_COMMANDS[source]], cwd=PROJECT_DIR, env=env,
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Applying predictions.0001" in result.stdout
        again = subprocess.run(
            ["sh", "-c", RELEASE_COMMANDS[source]], cwd=PROJECT_DIR, env=env,
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert again.returncode == 0 and "No migrations to apply" in again.stdout


class WebProcess:
    """A web command from heroku.yml or the Procfile, run by `sh -c` with PORT set."""

    def __init__(self, source: str, env: dict, log_path: Path):
        self.source = source
        self.port = support.free_port()
        self.env = command_env({**env, "PORT": str(self.port), "HOST": "127.0.0.1"})
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"

    def start(self) -> float:
        """Start it; the seconds until /healthz answered 200."""
        self.log = open(self.log_path, "wb")  # stdout, where the logs must be; closed in stop()
        self.errors = open(self.log_path.with_suffix(".stderr"), "wb")
        started = time.monotonic()
        # `exec`: dash would fork the command and keep itself as the process we signal.
        self.process = subprocess.Popen(
            ["sh", "-c", f"exec {WEB_COMMANDS[self.source]}"], cwd=PROJECT_DIR, env=self.env,
            stdout=self.log, stderr=self.errors,
        )  # fmt: skip
        support.wait_for(
            lambda: self.request("GET", "/healthz")[0] == 200,
            timeout=30, what=f"the web command from {self.source}", process=self.process,
        )  # fmt: skip
        return time.monotonic() - started

    def request(self, method, path, body=None, headers=None):
        """One HTTP request as Heroku's router forwards it (TLS ended at the router)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        try:
            connection.request(
                method, path, body=body, headers={"X-Forwarded-Proto": "https", **(headers or {})}
            )
            response = connection.getresponse()
            return response.status, response.msg, response.read()  # msg: headers, any case
        finally:
            connection.close()

    def terminate(self) -> tuple[float, int]:
        """SIGTERM, as Heroku sends it; seconds until the process exited, and its exit code."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=30)
        self._close_logs()
        return time.monotonic() - started, code

    def stop(self):
        if self.process.poll() is None:
            support.stop_process(self.process, timeout=25)
        self._close_logs()

    def _close_logs(self):
        self.log.close()
        self.errors.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stderr_text(self) -> str:
        return self.log_path.with_suffix(".stderr").read_text(errors="replace")


class AdminSession:
    """The admin through HTTP as a browser uses it: session and CSRF cookies, form posts."""

    def __init__(self, web: WebProcess):
        self.web = web
        self.cookies: dict[str, str] = {}

    def _send(self, method, path, fields=None):
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        body = None
        if fields is not None:
            body = urllib.parse.urlencode(fields, doseq=True)
            headers.update({
                "Content-Type": "application/x-www-form-urlencoded",
                "Origin": f"https://127.0.0.1:{self.web.port}",
            })  # fmt: skip
        status, response_headers, content = self.web.request(method, path, body, headers)
        for value in response_headers.get_all("Set-Cookie") or []:
            self.cookies.update({k: m.value for k, m in SimpleCookie(value).items()})
        return status, response_headers, content.decode()

    def post_form(self, path, fields):
        """Open the page at `path` for its CSRF token, then post `fields` to it."""
        status, _, page = self._send("GET", path)
        assert status == 200, page[-2000:]
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        return self._send("POST", path, {"csrfmiddlewaretoken": token, **fields})

    def log_in(self, username, password):
        status, headers, _ = self.post_form(
            "/admin/login/?next=/admin/", {"username": username, "password": password}
        )
        assert status == 302 and headers["Location"] == "/admin/", (status, headers)


def needs_tls_redis():
    if support.REDIS is None or shutil.which("openssl") is None:
        return "needs redis-server and openssl (a TLS Redis of the test's own)"
    return None


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, s3_server, trained):
    """Both web commands running at once with production settings (HTTPS redirect on), sharing
    a database (PostgreSQL when DATABASE_URL names one), a TLS Redis and an S3 bucket."""
    if reason := needs_tls_redis():
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("deploy")
    redis_server = support.RedisServer(tls_folder=folder)
    redis_server.start()
    (folder / "labels.txt").write_text("\n".join(COLOR_LABELS))
    (folder / "new-labels.txt").write_text("R\nG\nB\n")
    webs = []
    try:
        with support.OutsideDatabase(folder) as database_url:
            env = support.outside_env(
                database_url=database_url,
                folder=folder,
                s3=s3_server.create_bucket(),
                production=True,
                DJANGO_SECURE_SSL_REDIRECT="true",
                REDIS_URL=redis_server.url,
                DJANGO_SUPERUSER_USERNAME=ADMIN[0],
                DJANGO_SUPERUSER_PASSWORD=ADMIN[1],
                DJANGO_SUPERUSER_EMAIL="deployer@example.com",
            )
            support.manage("migrate", "--noinput", env=env)
            support.manage("createsuperuser", "--noinput", env=env)
            support.manage(
                "register_model", "colors", "--file", str(trained.colors),
                "--labels-file", str(folder / "labels.txt"), "--activate", env=env,
            )  # fmt: skip
            startup = {}
            for source in WEB_COMMANDS:
                web = WebProcess(source, env, folder / f"web-{source}.log")
                webs.append(web)
                startup[source] = web.start()
            yield webs, startup, env, folder
    finally:
        for web in webs:
            web.stop()
            print(f"--- {web.source} stdout ---\n{web.log_text()[-2000:]}")
            print(f"--- {web.source} stderr ---\n{web.stderr_text()[-2000:]}")
        redis_server.stop()


def receive(socket):
    return json.loads(socket.recv(timeout=TIMEOUT))


def test_each_web_command_answers_health_checks_within_five_seconds(deployment):
    webs, startup, _, _ = deployment
    for web in webs:
        assert startup[web.source] < 5, startup
        assert web.request("GET", "/healthz")[0] == 200
        assert web.request("GET", "/readyz")[0] == 200


def test_each_web_command_predicts_over_http_and_websocket(deployment):
    webs, _, _, _ = deployment
    for web in webs:
        status, _, body = web.request(
            "POST", "/api/projects/colors/predict", encode(solid_image("red"), "PNG"),
            {"Content-Type": "image/png"},
        )  # fmt: skip
        assert status == 200, body
        assert json.loads(body)["labels"][0]["label"] == "red"
        with connect(f"{web.ws_url}/ws/projects/colors/", open_timeout=TIMEOUT) as socket:
            assert receive(socket)["type"] == "ready"
            socket.send(encode(solid_image("blue"), "JPEG"))
            assert receive(socket)["labels"][0]["label"] == "blue"


def test_production_behind_the_router_redirects_plain_http_and_logs_the_request_id(deployment):
    webs, _, _, _ = deployment
    web = webs[0]
    connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=TIMEOUT)
    connection.request("GET", "/")  # no X-Forwarded-Proto: the router saw plain HTTP
    response = connection.getresponse()
    assert response.status == 301
    assert response.getheader("Location").startswith("https://")
    connection.close()

    status, headers, _ = web.request("GET", "/", headers={"X-Request-ID": "router-id-4242"})
    assert status == 200
    assert headers["Strict-Transport-Security"].startswith("max-age=")
    assert headers["X-Request-ID"] == "router-id-4242"
    web.request("GET", "/projects/no-such-project/", headers={"X-Request-ID": "router-id-4343"})
    support.wait_for(
        lambda: "[router-id-4343]" in web.log_text(), timeout=10, what="the request id in the log"
    )
    line = next(line for line in web.log_text().splitlines() if "[router-id-4343]" in line)
    assert "Not Found: /projects/no-such-project/" in line


def test_an_activation_in_the_admin_of_one_process_reaches_clients_of_the_other(
    deployment, trained
):
    (web_a, web_b), _, env, folder = deployment
    support.manage(
        "register_model", "colors", "--file", str(trained.colors),
        "--labels-file", str(folder / "new-labels.txt"), env=env,
    )  # fmt: skip
    version_pk = support.manage(
        "shell", "--no-imports", "-c",
        "from predictions.models import ModelVersion;"
        "print(ModelVersion.objects.get(project__slug='colors', number=2).pk)",
        env=env,
    ).stdout.strip()  # fmt: skip
    url = "/ws/projects/colors/"
    with (
        connect(web_a.ws_url + url, open_timeout=TIMEOUT) as on_a,
        connect(web_b.ws_url + url, open_timeout=TIMEOUT) as on_b,
    ):
        assert receive(on_a)["model"]["version"] == receive(on_b)["model"]["version"] == 1

        admin = AdminSession(web_a)
        admin.log_in(*ADMIN)
        status, _, page = admin.post_form(
            "/admin/predictions/modelversion/",
            {"action": "activate_version", "_selected_action": [version_pk], "index": "0"},
        )
        activated = time.monotonic()
        assert status == 302, page[-2000:]

        changed = json.loads(on_b.recv(timeout=2))
        waited = time.monotonic() - activated
        assert changed["type"] == "model_changed" and changed["model"]["version"] == 2
        assert waited < 2, waited
        on_b.send(encode(solid_image("red"), "PNG"))
        reply = receive(on_b)
        assert (reply["model_version"], reply["labels"][0]["label"]) == (2, "R")
        assert receive(on_a)["type"] == "model_changed"


def test_sigterm_ends_each_web_command_cleanly_within_25_seconds(deployment):
    webs, _, _, _ = deployment
    for web in webs:
        with connect(f"{web.ws_url}/ws/projects/colors/", open_timeout=TIMEOUT) as socket:
            receive(socket)
            seconds, code = web.terminate()
            assert seconds < 25, (web.source, seconds)
            assert code == 0, (web.source, code)
            with pytest.raises(ConnectionClosed):
                socket.recv(timeout=5)
            assert socket.close_code == 1000  # a close frame, not a dropped socket
        log = web.log_text()
        assert "SIGTERM: closing 1 WebSocket(s)" in log
        assert "Traceback" not in log + web.stderr_text()
