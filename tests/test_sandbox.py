"""The sandbox of the check's children, with real children: what they inherit, where they may
write, their limits, their network, their reach into the server, and what the server takes
back from them. This machine runs the tests as root on a kernel with user namespaces and
Landlock: where a guarantee depends on those, the test says so, and the others hold as any
user."""

import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from predictions.checking import check_and_compile, launcher, sandbox
from predictions.checking.sandbox import CLONE_NEWUSER, confinement, launch
from predictions.inference.errors import ModelValidationError
from predictions.storage import file_cache
from tests import support

SECRETS = {
    "HEROKU_POSTGRESQL_RED_URL": "postgres://u:red-secret@db.example.com/d",
    "REDIS_TLS_URL": "rediss://:redis-secret@redis.example.com:6380",
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "DJANGO_SECRET_KEY": "django-secret",
    "SENTRY_DSN": "https://sentry-secret@sentry.example.com/1",
}


def probe(code: str, work_dir: Path, **limits) -> sandbox.Finished:
    """Run `code` as the check's child is run (`sandbox.launch`)."""
    options = {"timeout": 60, "memory_bytes": 1 << 30, "file_bytes": 1 << 20, **limits}
    return launch(["-c", code], work_dir=work_dir, **options)


def probe_json(code: str, work_dir: Path, **limits):
    finished = probe(f"import json, os\n{code}\nprint(json.dumps(result))", work_dir, **limits)
    assert finished.returncode == 0, finished.stderr
    return json.loads(finished.stdout)


def test_the_child_environment_is_an_allow_list(tmp_path, monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LC_TIME", "C")

    result = probe_json("result = [dict(os.environ), os.getcwd()]", tmp_path)

    env, cwd = result
    assert set(env) <= sandbox.PASSED_VARIABLES | {"HOME", "TMPDIR", "PYTHONPATH", "LC_TIME"}
    assert not set(env.values()) & set(SECRETS.values())
    assert env["HOME"] == env["TMPDIR"] == cwd == str(tmp_path.resolve())
    assert env["PYTHONPATH"] == str(support.PROJECT_DIR)
    assert env["LC_TIME"] == "C"


def test_the_child_has_its_limits(tmp_path):
    limits = probe_json(
        "result = {line[:26].strip(): line[26:].split()[:2] for line in open('/proc/self/limits')}",
        tmp_path,
        memory_bytes=700 << 20,
        file_bytes=3 << 20,
    )

    assert limits["Max data size"] == [str(700 << 20)] * 2
    assert limits["Max file size"] == [str(3 << 20)] * 2
    assert limits["Max core file size"] == ["0", "0"]
    assert limits["Max processes"][0] != "0"  # RLIMIT_NPROC is left as it was


def test_a_file_over_the_limit_fails_the_child_in_words(tmp_path):
    """Python ignores SIGXFSZ: a write past RLIMIT_FSIZE fails (EFBIG) instead of killing."""
    finished = probe("open('big', 'wb').write(b'x' * (2 << 20))", tmp_path, file_bytes=1 << 20)

    assert finished.returncode == 1 and "File too large" in finished.stderr
    message = sandbox.child_failure(
        finished.returncode, finished.stderr, 1 << 30, file_bytes=1 << 20
    )
    assert message == "The model check tried to write a file larger than its limit (1 MB)."
    assert (tmp_path / "big").stat().st_size == 1 << 20


def test_the_child_writes_only_in_its_own_directory(tmp_path):
    if not confinement().landlock_abi:
        pytest.skip("no Landlock in this kernel: the child may write wherever its user may")
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    code = (
        "result = {}\n"
        "for path in ('inside', '../elsewhere/outside', os.environ['HOME'] + '/home'):\n"
        "    try:\n"
        "        open(path, 'w').close(); result[path] = 'written'\n"
        "    except OSError as exc:\n"
        "        result[path] = exc.strerror\n"
    )

    result = probe_json(code, work)

    assert result["inside"] == "written" and (work / "inside").exists()
    assert result["../elsewhere/outside"] == "Permission denied"
    assert not (elsewhere / "outside").exists()
    assert result[f"{work.resolve()}/home"] == "written"


def test_the_child_has_no_network(tmp_path):
    """An empty network namespace (user namespaces here), and Landlock's TCP rules: even
    loopback is out of reach."""
    confined = confinement()
    if not confined.namespaces and confined.landlock_abi < 4:
        pytest.skip("neither a network namespace nor Landlock's network rules here")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        code = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5)"
        isolated = probe(code, tmp_path)
        plain = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    assert plain.returncode == 0
    assert isolated.returncode != 0 and "Error" in isolated.stderr


def test_the_child_cannot_read_the_server_or_signal_it(tmp_path):
    """This process (pytest, with Django set up: not dumpable) is the child's parent. As root
    here the child would have CAP_SYS_PTRACE but for its user namespace, and Landlock keeps
    it from ptrace-reading or signalling anything outside its sandbox."""
    confined = confinement()
    if os.geteuid() == 0 and not (confined.namespaces & CLONE_NEWUSER or confined.landlock_abi):
        pytest.skip("a root child without a user namespace or Landlock may read any process")
    code = (
        "import signal\n"
        "result = {}\n"
        "try:\n"
        "    open(f'/proc/{os.getppid()}/environ', 'rb').read(); result['environ'] = 'read'\n"
        "except OSError as exc:\n"
        "    result['environ'] = exc.strerror\n"
        "try:\n"
        "    os.kill(os.getppid(), 0); result['signal'] = 'sent'\n"
        "except OSError as exc:\n"
        "    result['signal'] = exc.strerror\n"
    )

    result = probe_json(code, tmp_path)

    assert result["environ"] == "Permission denied"
    if confined.landlock_abi >= 6:
        assert result["signal"] == "Operation not permitted"


def test_what_the_child_starts_ends_with_it(tmp_path):
    """Its process group is killed when it ends (a process that left the group by setsid
    escapes that, not the rest of the sandbox)."""
    pid = probe_json("import subprocess\nresult = subprocess.Popen(['sleep', '600']).pid", tmp_path)

    def gone():
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        return state in ("Z", "X")

    support.wait_for(gone, timeout=10, what="the grandchild's end")


# --- Where the server itself stands ------------------------------------------------------------


def dumpable_in_manage_py(env: dict) -> str:
    code = "import ctypes; print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))"  # PR_GET_DUMPABLE
    return support.manage("shell", "-c", code, env=env).stdout.split()[-1]


def test_server_processes_are_not_dumpable(tmp_path):
    """`apps.ready` runs in daphne, the worker and every manage.py command alike."""
    env = support.outside_env(database_url=f"sqlite:///{tmp_path}/db.sqlite3", folder=tmp_path)

    assert dumpable_in_manage_py(env) == "0"
    assert dumpable_in_manage_py({**env, "PROCESS_DUMPABLE": "true"}) == "1"


# Run in a manage.py process: a plain child of the same user counts the server's secret in the
# server's /proc/<pid>/environ, or says it was refused.
READ_PARENT_ENVIRON = """
import os, subprocess
answer = subprocess.run(["cat", f"/proc/{os.getpid()}/environ"], capture_output=True)
print(answer.stdout.count(b"SERVER_SECRET") if answer.returncode == 0 else "refused")
"""


def test_a_same_user_process_cannot_read_a_non_root_server(tmp_path):
    """What non-dumpable buys where the server does not run as root (the Docker image, a
    Heroku dyno): any process of its user, sandboxed or not, is refused its environment."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to run the server as another user")
    env = support.outside_env(database_url="sqlite:////nonexistent/db.sqlite3", folder=tmp_path)
    env["SERVER_SECRET"] = "server-secret"
    as_nobody = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--"]

    def run(extra: dict) -> str:
        command = [*as_nobody, sys.executable, "manage.py", "shell", "-c", READ_PARENT_ENVIRON]
        return subprocess.run(
            command,
            cwd=support.PROJECT_DIR,
            env={**env, **extra, "HOME": "/tmp"},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()[-1]  # after the shell's own line about its imports

    assert run({}) == "refused"
    assert run({"PROCESS_DUMPABLE": "true"}) == "1"  # the control: readable when dumpable


# --- What the server takes back ----------------------------------------------------------------


def test_a_report_of_the_wrong_shape_is_refused():
    good = {
        "ok": True,
        "input_shape": [16, 16, 3],
        "output_shape": [3],
        "runtime": "litert",
        "message": "fine",
        "compiled_path": "compiled.tflite",
        "artifact_sha256": "0" * 64,
        "artifact_bytes": 10,
        "format": "keras",
        "extra": "dropped",
    }
    assert "extra" not in sandbox.checked_report(good)
    for broken in (
        {**good, "input_shape": [16, 16]},
        {**good, "output_shape": ["3"]},
        {**good, "runtime": "tensorflow"},
        {**good, "artifact_sha256": "../x"},
        {**good, "artifact_bytes": True},
        {"ok": "yes"},
        {"ok": False},
        [],
    ):
        with pytest.raises(ModelValidationError, match="report could not be read"):
            sandbox.checked_report(broken)
    failed = sandbox.checked_report({"ok": False, "error": "x" * 10_000})
    assert len(failed["error"]) == sandbox.MAX_MESSAGE_CHARS


@pytest.fixture
def artifact_dir(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "compiled.tflite").write_bytes(b"flatbuffer")
    (tmp_path / "secret").write_bytes(b"the server's")
    return work


@pytest.mark.parametrize(
    "kind", ["outside", "absolute", "symlink", "hardlink", "fifo", "directory", "size"]
)
def test_an_artifact_that_is_not_a_plain_file_of_its_own_is_refused(artifact_dir, kind):
    name, size = "compiled.tflite", len(b"flatbuffer")
    if kind == "outside":
        name, size = "../secret", len(b"the server's")
    elif kind == "absolute":
        name, size = str(artifact_dir.parent / "secret"), len(b"the server's")
    elif kind == "symlink":
        (artifact_dir / "link.tflite").symlink_to(artifact_dir.parent / "secret")
        name, size = "link.tflite", len(b"the server's")
    elif kind == "hardlink":
        os.link(artifact_dir.parent / "secret", artifact_dir / "linked.tflite")
        name, size = "linked.tflite", len(b"the server's")
    elif kind == "fifo":
        os.mkfifo(artifact_dir / "pipe.tflite")
        name = "pipe.tflite"
    elif kind == "directory":
        (artifact_dir / "dir.tflite").mkdir()
        name = "dir.tflite"
    else:
        size += 1

    with pytest.raises(ModelValidationError, match="not a plain file of its own"):
        sandbox.open_artifact(artifact_dir, name, size=size)

    with sandbox.open_artifact(artifact_dir, "compiled.tflite", size=10) as handle:
        assert handle.read() == b"flatbuffer"


@pytest.mark.parametrize("kind", ["outside", "symlink", "hash"])
def test_the_check_takes_no_artifact_a_report_points_away(trained, tmp_path, monkeypatch, kind):
    """A child that misreports (what a model that got code to run could make it do): the real
    launcher, given its report, refuses instead of copying anything into the cache or
    pointing the version at an artifact already there."""
    secret = tmp_path / "secret.db"
    secret.write_bytes(b"the server's database")
    other = b"another model's artifact"  # "hash": the child claims this one, in the cache
    file_cache().add(io.BytesIO(other), suffix=".tflite")

    def lying_child(source, out_dir, **options):
        name, data = "compiled.tflite", b"flatbuffer"
        if kind == "symlink":
            (out_dir / name).symlink_to(secret)
            data = secret.read_bytes()
        else:
            (out_dir / name).write_bytes(data)
        if kind == "outside":
            name, data = str(secret), secret.read_bytes()
        digest = hashlib.sha256(other if kind == "hash" else data).hexdigest()
        return {
            "ok": True,
            "input_shape": [16, 16, 3],
            "output_shape": [3],
            "runtime": "litert",
            "message": "Compiled.",
            "compiled_path": name,
            "artifact_sha256": digest,
            "artifact_bytes": len(data),
            "format": "keras",
        }

    monkeypatch.setattr(launcher, "run_child", lying_child)
    with pytest.raises(ModelValidationError) as refused:  # a key of its own: no cached report
        check_and_compile(path=trained.colors, sha256=f"lying-{kind}", labels=[], scale=(0, 1))

    reason = "does not match the hash" if kind == "hash" else "not a plain file of its own"
    assert reason in str(refused.value)
    cached = file_cache().directory.glob("*.tflite")
    assert not any(b"the server's" in path.read_bytes() for path in cached)


def test_a_real_check_names_its_sandbox(trained, tmp_path):
    report = sandbox.run_child(
        trained.tflite,
        tmp_path,
        model_format="tflite",
        scale=(0.0, 1.0),
        timeout=120,
        memory_bytes=1 << 30,
        max_unpacked_bytes=1 << 30,
    )

    assert report["ok"] and report["sandbox"] == confinement().describe()
    assert "network: " in report["sandbox"] and "files: " in report["sandbox"]
