"""Running the check's child (`python -m predictions.checking.child`) within limits.

The child gets no credentials in its environment, an empty network namespace where this
process may make one, a time limit and a data-memory limit, and dies with its parent (a worker
killed mid-check must not leave a child holding gigabytes). Near its memory limit TensorFlow's
allocator can retry for ever instead of failing, so a child that sits at the limit is stopped
too. Every way it can end without a report becomes a message in words.
"""

import ctypes
import functools
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..formats import ModelFormat
from ..inference.errors import ModelValidationError

PROJECT_DIR = Path(__file__).resolve().parents[2]
# The child needs no credentials: it reads one local file and writes one.
SECRET_PREFIXES = ("AWS_", "DJANGO_SECRET_KEY", "DATABASE_URL", "REDIS_URL", "METRICS_TOKEN")
# What a child that ran out of memory leaves on stderr (Python, C++, TensorFlow's allocator).
OUT_OF_MEMORY_MARKERS = ("MemoryError", "bad_alloc", "Cannot allocate memory", "out of memory")
POLL_SECONDS = 0.5
STALL_SECONDS = 10.0  # at its memory limit this long: stopped as out of memory
PR_SET_PDEATHSIG = 1


def run_child(
    source: Path,
    out_dir: Path,
    *,
    model_format: ModelFormat,
    scale: tuple[float, float],
    timeout: float,
    memory_bytes: int,
    max_unpacked_bytes: int,
) -> dict:
    """Run the child on `source` (writing any artifact into `out_dir`); returns its report.

    Raises `ModelValidationError` when the child times out, runs out of memory or dies
    without a report.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith(SECRET_PREFIXES)}
    command = [
        *network_isolation(), sys.executable, "-m", "predictions.checking.child",
        str(source), str(out_dir), "--format", ModelFormat(model_format).value,
        "--scale", str(scale[0]), str(scale[1]), "--max-unpacked-bytes", str(max_unpacked_bytes),
    ]  # fmt: skip
    prctl = _prctl()  # resolved here: the forked child only calls it
    parent = os.getpid()
    with subprocess.Popen(
        command,
        cwd=PROJECT_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: _in_child(prctl, parent, memory_bytes),
    ) as child:
        stdout, stderr, stopped = _wait(child, timeout=timeout, memory_bytes=memory_bytes)
    limit_mb = memory_bytes >> 20
    if stopped == "timeout":
        raise ModelValidationError(f"Checking the model took longer than {timeout:.0f} s.")
    if stopped == "memory":
        raise ModelValidationError(
            f"The model check ran out of memory (limit {limit_mb} MB): it stalled at its "
            "limit and was stopped."
        )
    lines = stdout.strip().splitlines()
    if child.returncode != 0 or not lines:
        raise ModelValidationError(child_failure(child.returncode, stderr, memory_bytes))
    return json.loads(lines[-1])


def child_failure(returncode: int, stderr: str, memory_bytes: int) -> str:
    """Why a child ended without a report, in words."""
    died_by = ""
    if returncode < 0:
        try:
            died_by = signal.Signals(-returncode).name
        except ValueError:
            died_by = f"signal {-returncode}"
    killed = returncode in (-signal.SIGKILL, -signal.SIGSEGV)
    if killed or any(marker in stderr for marker in OUT_OF_MEMORY_MARKERS):
        cause = f" (it was killed by {died_by})" if died_by else ""
        return f"The model check ran out of memory (limit {memory_bytes >> 20} MB){cause}."
    tail = " ".join(stderr.strip().splitlines()[-1:])
    if died_by:
        return f"The model check crashed ({died_by}){': ' + tail if tail else ''}."
    return f"The model check failed: {tail or f'exit {returncode}'}"


@functools.cache
def network_isolation() -> list[str]:
    """`unshare --net` (a network namespace with nothing in it) where this process may make one,
    as root in a container; elsewhere, a Heroku dyno say, the child keeps the network but has
    no credentials, and the config walk already refuses the layers that would fetch."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return []
    probe = subprocess.run([unshare, "--net", "true"], capture_output=True, check=False)
    return [unshare, "--net"] if probe.returncode == 0 else []


def _wait(child: subprocess.Popen, *, timeout: float, memory_bytes: int) -> tuple[str, str, str]:
    """(stdout, stderr, why it was stopped: "", "timeout" or "memory")."""
    deadline = time.monotonic() + timeout
    headroom = max(memory_bytes // 100, 4 << 20)
    at_limit_since = None
    stopped = ""
    try:
        while not stopped:
            try:
                stdout, stderr = child.communicate(timeout=POLL_SECONDS)
                return stdout, stderr, ""
            except subprocess.TimeoutExpired:
                pass  # no output is lost: communicate() carries on where it stopped
            now = time.monotonic()
            if _data_bytes(child.pid) < memory_bytes - headroom:
                at_limit_since = None
            elif at_limit_since is None:
                at_limit_since = now
            if now >= deadline:
                stopped = "timeout"
            elif at_limit_since is not None and now - at_limit_since >= STALL_SECONDS:
                stopped = "memory"
    finally:
        if child.poll() is None:  # stopped, or this thread was interrupted
            child.kill()
    stdout, stderr = child.communicate()
    return stdout, stderr, stopped


def _data_bytes(pid: int) -> int:
    """The process's data memory (what RLIMIT_DATA counts), 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@functools.cache
def _prctl():
    return ctypes.CDLL(None, use_errno=True).prctl


def _in_child(prctl, parent: int, memory_bytes: int) -> None:
    """Between fork and exec: die with the parent, and cap the data memory."""
    # The kernel sends SIGKILL when the thread that started the child exits; that thread
    # waits in `_wait` until the child is done, so in effect: when the parent dies.
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    # RLIMIT_DATA caps what the child can allocate (heap and private mappings) while leaving
    # TensorFlow's large address-space reservations alone, which RLIMIT_AS would break.
    resource.setrlimit(resource.RLIMIT_DATA, (memory_bytes, memory_bytes))
