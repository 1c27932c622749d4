"""Running the check's children (`python -m predictions.checking.child`) confined.

A child parses and loads an untrusted model, so it gets what this process can take away
without root, each part probed once per process (`confinement()`), logged and named in the
child's report (`sandbox`):
- environment: an allow-list (`child_environment`), so no credentials; HOME and TMPDIR are
  its own directory;
- files: it works in a directory of its own (its cwd; a check gets a copy of the model there,
  never a path into the model cache) and, where the kernel has Landlock, may write nowhere
  else; no file it writes may exceed `file_bytes` (RLIMIT_FSIZE), and it leaves no core file;
- network: an empty network namespace inside a user namespace of its own where the kernel
  lets any user make one, or without one as root; elsewhere (Docker's default seccomp profile
  refuses both to a non-root user) Landlock ABI 4+ still refuses it every TCP connect and bind;
- other processes: Landlock ABI 6+ refuses it signals and abstract Unix sockets outside its
  sandbox, and the server is not dumpable (`predictions.apps`), so a child of the same user
  cannot read the server's `/proc/<pid>/environ` or ptrace it;
- limits: a time limit and a data-memory limit (RLIMIT_DATA; near it TensorFlow's allocator
  can retry for ever instead of failing, so a child that sits at the limit is stopped too).
It dies with its parent, and its process group is killed when it ends. Its output is read
back bounded and its report is checked field by field; an artifact is taken only as a
regular file directly inside its directory, of the size it reported (`open_artifact`).

RLIMIT_NPROC is not set: it counts every thread of the user, the server's included, and
TensorFlow's thread pools are many; it would only hold for a child with a user of its own.
"""

import ctypes
import errno
import functools
import json
import logging
import os
import re
import resource
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..formats import ModelFormat
from ..inference.errors import ModelValidationError
from .conversion import SMALLER_VARIANTS

logger = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parents[2]
CHILD_MODULE = "predictions.checking.child"
# The child's whole environment: these when the server has them, LC_* too, and HOME, TMPDIR
# and PYTHONPATH set by `child_environment`.
PASSED_VARIABLES = frozenset(
    {"PATH", "LANG", "LANGUAGE", "TZ", "TF_CPP_MIN_LOG_LEVEL", "OMP_NUM_THREADS"}
    | {"TF_NUM_INTEROP_THREADS", "TF_NUM_INTRAOP_THREADS"}
)
# What a child that ran out of memory leaves on stderr (Python, C++, TensorFlow's allocator).
OUT_OF_MEMORY_MARKERS = ("MemoryError", "bad_alloc", "Cannot allocate memory", "out of memory")
POLL_SECONDS = 0.5
STALL_SECONDS = 10.0  # at its memory limit this long: stopped as out of memory
OUTPUT_TAIL_BYTES = 64 * 1024  # of the child's stdout and stderr, read back
MAX_MESSAGE_CHARS = 2000
# Beyond the model's own size, for what the check writes (a SavedModel's graph, a flatbuffer).
FILE_HEADROOM_BYTES = 256 * 1024 * 1024
SHA256 = re.compile(r"[0-9a-f]{64}")

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
# Landlock (linux/landlock.h); its system calls have the same numbers on every architecture.
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
FS_WRITE_FILE = 1 << 1
FS_WRITES_V1 = FS_WRITE_FILE | sum(1 << bit for bit in range(4, 13))  # remove_*, make_*
FS_REFER, FS_TRUNCATE = 1 << 13, 1 << 14  # ABI 2, ABI 3
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


@dataclass(frozen=True)
class Confinement:
    """What this process can give its children, probed once (`confinement()`)."""

    namespaces: int  # CLONE_NEWUSER | CLONE_NEWNET, CLONE_NEWNET (root), or 0
    landlock_abi: int  # 0: no Landlock

    def describe(self) -> str:
        if self.namespaces & CLONE_NEWUSER:
            network = "an empty network namespace (in a user namespace of its own)"
        elif self.namespaces:
            network = "an empty network namespace (as root)"
        elif self.landlock_abi >= 4:
            network = "no TCP connect or bind (Landlock); UDP and Unix sockets open"
        else:
            network = "the host's network (no namespace could be made here)"
        if self.landlock_abi:
            files = f"writes only in its own directory (Landlock ABI {self.landlock_abi})"
        else:
            files = "writes wherever its user may (no Landlock here)"
        return f"network: {network}; files: {files}"


@dataclass(frozen=True)
class Finished:
    """How a launched child ended: its exit status and the tails of its output."""

    returncode: int
    stdout: str
    stderr: str
    stopped: str  # "" (it ended by itself), "timeout" or "memory"
    file_bytes: int  # its RLIMIT_FSIZE


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
    """Check a copy of `source` in a child working in `out_dir` (where any artifact is
    written); returns its report, checked (`checked_report`).

    Raises `ModelValidationError` when the child times out, runs out of memory or dies
    without a report.
    """
    model_format = ModelFormat(model_format)
    model_name = f"model{model_format.suffix}"  # Keras picks its loader by the suffix
    shutil.copyfile(source, out_dir / model_name)
    arguments = [
        "-m", CHILD_MODULE, model_name, ".", "--format", model_format.value,
        "--scale", str(scale[0]), str(scale[1]), "--max-unpacked-bytes", str(max_unpacked_bytes),
    ]  # fmt: skip
    finished = launch(
        arguments,
        work_dir=out_dir,
        timeout=timeout,
        memory_bytes=memory_bytes,
        file_bytes=file_limit(max_unpacked_bytes),
    )
    report = _read_report(finished, timeout=timeout, memory_bytes=memory_bytes, vetting=False)
    report["sandbox"] = confinement().describe()
    logger.info("model check of %s: %s", source.name, report["sandbox"])
    return report


def vet_in_child(
    source: Path,
    *,
    model_format: ModelFormat,
    timeout: float,
    memory_bytes: int,
    max_unpacked_bytes: int,
) -> None:
    """Vet `source` (its config and structure) in a child that reads it through an inherited
    read-only descriptor; raises `ModelValidationError` with the child's reason."""
    with tempfile.TemporaryDirectory(prefix="model-vet-") as work_dir, open(source, "rb") as file:
        descriptor = file.fileno()  # `pass_fds` keeps its number in the child
        arguments = [
            "-m", CHILD_MODULE, f"/dev/fd/{descriptor}", "--vet-only",
            "--format", ModelFormat(model_format).value,
            "--max-unpacked-bytes", str(max_unpacked_bytes),
        ]  # fmt: skip
        finished = launch(
            arguments,
            work_dir=Path(work_dir),
            timeout=timeout,
            memory_bytes=memory_bytes,
            file_bytes=FILE_HEADROOM_BYTES,
            pass_fds=(descriptor,),
        )
    report = _read_report(finished, timeout=timeout, memory_bytes=memory_bytes, vetting=True)
    if not report["ok"]:
        raise ModelValidationError(report["error"])


def launch(
    arguments: list[str],
    *,
    work_dir: Path,
    timeout: float,
    memory_bytes: int,
    file_bytes: int,
    pass_fds: tuple[int, ...] = (),
) -> Finished:
    """Run `python -B ARGUMENTS` confined, in `work_dir` (its cwd, HOME and TMPDIR: the one
    place it may write); returns how it ended."""
    work_dir = Path(work_dir).resolve()
    confined = confinement()
    ruleset = _landlock_ruleset(work_dir, confined.landlock_abi) if confined.landlock_abi else -1
    entry = functools.partial(
        _in_child,
        _functions(),
        os.getpid(),
        (os.geteuid(), os.getegid(), confined.namespaces),
        (memory_bytes, file_bytes),
        ruleset,
    )
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        try:
            child = subprocess.Popen(
                [sys.executable, "-B", *arguments],
                cwd=work_dir,
                env=child_environment(work_dir),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                pass_fds=pass_fds,
                start_new_session=True,  # one process group: killed whole when it ends
                preexec_fn=entry,
            )
        finally:
            if ruleset >= 0:
                os.close(ruleset)
        stopped = _wait(child, timeout=timeout, memory_bytes=memory_bytes)
        return Finished(child.returncode, _tail(stdout), _tail(stderr), stopped, file_bytes)


def child_environment(work_dir: Path) -> dict[str, str]:
    """The child's whole environment: an allow-list of the server's, nothing secret."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key in PASSED_VARIABLES or key.startswith("LC_")
    }
    env.update(HOME=str(work_dir), TMPDIR=str(work_dir), PYTHONPATH=str(PROJECT_DIR))
    return env


def file_limit(max_unpacked_bytes: int) -> int:
    """RLIMIT_FSIZE of a check: the largest model, plus what converting it adds."""
    return max_unpacked_bytes + FILE_HEADROOM_BYTES


def open_artifact(work_dir: Path, name: str, *, size: int) -> BinaryIO:
    """Open the artifact a child reported, `name` in `work_dir`: only a regular file directly
    inside it (no link of either kind, nothing outside) of the reported size, opened without
    following anything; raises `ModelValidationError`."""
    refused = ModelValidationError(
        "The model check reported an artifact that is not a plain file of its own: refused."
    )
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\0" in name:
        raise refused
    directory = os.open(work_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK  # a FIFO must not block the open
        descriptor = os.open(name, flags, dir_fd=directory)
    except OSError:
        raise refused from None
    finally:
        os.close(directory)
    status = os.fstat(descriptor)
    if not stat.S_ISREG(status.st_mode) or status.st_nlink != 1 or status.st_size != size:
        os.close(descriptor)
        raise refused
    return os.fdopen(descriptor, "rb")


def checked_report(report, *, vetting: bool = False) -> dict:
    """The child's report with only the fields this server reads, each of its type (a
    vetting child's has none past `ok` and `error`); raises `ModelValidationError` when it
    is not one: the child's output is as untrusted as the model it read."""
    unreadable = ModelValidationError("The model check's report could not be read.")
    if not isinstance(report, dict) or not isinstance(report.get("ok"), bool):
        raise unreadable
    checked = {"ok": report["ok"]}
    if report.get("format") in {model_format.value for model_format in ModelFormat}:
        checked["format"] = report["format"]
    if isinstance(report.get("tensorflow_loaded"), bool):
        checked["tensorflow_loaded"] = report["tensorflow_loaded"]
    if not report["ok"]:
        if not isinstance(report.get("error"), str):
            raise unreadable
        checked["error"] = report["error"][:MAX_MESSAGE_CHARS]
        return checked
    if vetting:
        return checked
    input_shape, output_shape = report.get("input_shape"), report.get("output_shape")
    compiled, sha256 = report.get("compiled_path"), report.get("artifact_sha256")
    if not (
        _dimensions(input_shape)
        and len(input_shape) == 3
        and _dimensions(output_shape)
        and report.get("runtime") in ("litert", "keras")
        and isinstance(report.get("message"), str)
        and (compiled is None or isinstance(compiled, str))
        and (compiled is None or (isinstance(sha256, str) and SHA256.fullmatch(sha256)))
        and (compiled is None or _whole_number(report.get("artifact_bytes")))
    ):
        raise unreadable
    checked.update(
        input_shape=input_shape,
        output_shape=output_shape,
        runtime=report["runtime"],
        message=report["message"][:MAX_MESSAGE_CHARS],
        compiled_path=compiled,
    )
    if compiled is not None:
        checked.update(artifact_sha256=sha256, artifact_bytes=report["artifact_bytes"])
        checked["variants"] = _checked_variants(report.get("variants"))
    return checked


def _checked_variants(reported) -> dict:
    """Each smaller variant as `{"path", "artifact_sha256", "artifact_bytes"}` or `{"error"}`:
    a variant reported otherwise is one not made (the version does not depend on it)."""
    reported = reported if isinstance(reported, dict) else {}
    checked = {}
    for variant in SMALLER_VARIANTS:
        entry = reported.get(variant)
        entry = entry if isinstance(entry, dict) else {}
        path, sha256 = entry.get("path"), entry.get("artifact_sha256")
        if (
            isinstance(path, str)
            and isinstance(sha256, str)
            and SHA256.fullmatch(sha256)
            and _whole_number(entry.get("artifact_bytes"))
        ):
            checked[variant] = {
                "path": path,
                "artifact_sha256": sha256,
                "artifact_bytes": entry["artifact_bytes"],
            }
        elif isinstance(entry.get("error"), str):
            checked[variant] = {"error": entry["error"][:MAX_MESSAGE_CHARS]}
        else:
            checked[variant] = {
                "error": f"The check's report of the {variant} variant could not be read."
            }
    return checked


def _dimensions(value) -> bool:
    return isinstance(value, list) and all(_whole_number(n) and n > 0 for n in value)


def _whole_number(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def child_failure(
    returncode: int, stderr: str, memory_bytes: int, *, file_bytes: int | None = None
) -> str:
    """Why a child ended without a report, in words."""
    died_by = ""
    if returncode < 0:
        try:
            died_by = signal.Signals(-returncode).name
        except ValueError:
            died_by = f"signal {-returncode}"
    if "File too large" in stderr:  # EFBIG past RLIMIT_FSIZE (Python ignores SIGXFSZ)
        within = f" ({file_bytes >> 20} MB)" if file_bytes else ""
        return f"The model check tried to write a file larger than its limit{within}."
    killed = returncode in (-signal.SIGKILL, -signal.SIGSEGV)
    if killed or any(marker in stderr for marker in OUT_OF_MEMORY_MARKERS):
        cause = f" (it was killed by {died_by})" if died_by else ""
        return f"The model check ran out of memory (limit {memory_bytes >> 20} MB){cause}."
    tail = " ".join(stderr.strip().splitlines()[-1:])[:MAX_MESSAGE_CHARS]
    if died_by:
        return f"The model check crashed ({died_by}){': ' + tail if tail else ''}."
    return f"The model check failed: {tail or f'exit {returncode}'}"


def _read_report(finished: Finished, *, timeout: float, memory_bytes: int, vetting: bool) -> dict:
    if finished.stopped == "timeout":
        raise ModelValidationError(f"Checking the model took longer than {timeout:.0f} s.")
    if finished.stopped == "memory":
        raise ModelValidationError(
            f"The model check ran out of memory (limit {memory_bytes >> 20} MB): it stalled "
            "at its limit and was stopped."
        )
    lines = finished.stdout.strip().splitlines()
    if finished.returncode != 0 or not lines:
        raise ModelValidationError(
            child_failure(
                finished.returncode,
                finished.stderr,
                memory_bytes,
                file_bytes=finished.file_bytes,
            )
        )
    try:
        report = json.loads(lines[-1])
    except (ValueError, RecursionError):
        raise ModelValidationError("The model check's report could not be read.") from None
    return checked_report(report, vetting=vetting)


@functools.cache
def confinement() -> Confinement:
    """Probe once what this process can give its children; logs it."""
    namespaces = 0
    for flags in (CLONE_NEWUSER | CLONE_NEWNET, CLONE_NEWNET):
        if flags == CLONE_NEWNET and os.geteuid() != 0:
            break
        if _can_enter(flags):
            namespaces = flags
            break
    _, syscall, _ = _functions()
    abi = syscall(
        SYS_LANDLOCK_CREATE_RULESET, None, _long(0), _long(LANDLOCK_CREATE_RULESET_VERSION)
    )
    confined = Confinement(namespaces=namespaces, landlock_abi=max(abi, 0))
    logger.info("model check children get %s", confined.describe())
    return confined


def _can_enter(flags: int) -> bool:
    """Whether a child of this process can enter new namespaces `flags`."""
    true = shutil.which("true") or "/bin/true"
    ids = (os.geteuid(), os.getegid())
    try:
        probe = subprocess.run(
            [true],
            preexec_fn=functools.partial(_enter_namespaces, _functions(), flags, *ids),
            capture_output=True,
            check=False,
        )
    except (subprocess.SubprocessError, OSError):
        return False
    return probe.returncode == 0


def _landlock_ruleset(work_dir: Path, abi: int) -> int:
    """A Landlock ruleset (its descriptor) that allows writing only beneath `work_dir` (and
    to /dev/null), and, by ABI, no TCP, no signals or abstract sockets outside."""
    _, syscall, _ = _functions()
    writes = FS_WRITES_V1 | (FS_REFER if abi >= 2 else 0) | (FS_TRUNCATE if abi >= 3 else 0)
    attr = _RulesetAttr(
        handled_access_fs=writes,
        handled_access_net=NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0,
        scoped=SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0,
    )
    size = 8 if abi < 4 else 16 if abi < 6 else 24  # the fields this ABI knows
    ruleset = syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), _long(size), _long(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        _allow_beneath(ruleset, work_dir, writes)
        _allow_beneath(ruleset, Path(os.devnull), FS_WRITE_FILE | (writes & FS_TRUNCATE))
    except BaseException:
        os.close(ruleset)
        raise
    return ruleset


def _allow_beneath(ruleset: int, path: Path, access: int) -> None:
    descriptor = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        rule = _PathBeneathAttr(allowed_access=access, parent_fd=descriptor)
        _, syscall, _ = _functions()
        kind = _long(LANDLOCK_RULE_PATH_BENEATH)
        result = syscall(SYS_LANDLOCK_ADD_RULE, _long(ruleset), kind, ctypes.byref(rule), _long(0))
        if result != 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
    finally:
        os.close(descriptor)


def _wait(child: subprocess.Popen, *, timeout: float, memory_bytes: int) -> str:
    """Wait for the child to end; returns why it was stopped ("", "timeout" or "memory")."""
    deadline = time.monotonic() + timeout
    headroom = max(memory_bytes // 100, 4 << 20)
    at_limit_since = None
    stopped = ""
    # A pidfd turns readable when the child ends, before it is reaped: its process group can
    # then be killed while its id is still taken.
    pidfd = os.pidfd_open(child.pid)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    try:
        while not poller.poll(POLL_SECONDS * 1000):
            now = time.monotonic()
            if _data_bytes(child.pid) < memory_bytes - headroom:
                at_limit_since = None
            elif at_limit_since is None:
                at_limit_since = now
            if now >= deadline:
                stopped = "timeout"
                break
            if at_limit_since is not None and now - at_limit_since >= STALL_SECONDS:
                stopped = "memory"
                break
    finally:  # also when this thread was interrupted
        os.close(pidfd)
        try:
            os.killpg(child.pid, signal.SIGKILL)  # the child, if still running, and its own
        except ProcessLookupError:
            pass
        child.wait()
    return stopped


def _tail(handle) -> str:
    handle.seek(0, os.SEEK_END)
    handle.seek(max(0, handle.tell() - OUTPUT_TAIL_BYTES))
    return handle.read().decode("utf-8", errors="replace")


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
def _functions():
    """libc's prctl, syscall and unshare, resolved before any fork (the forked child only
    calls them)."""
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl, libc.syscall, libc.unshare


def _long(value: int) -> ctypes.c_long:
    return ctypes.c_long(value)


def _in_child(functions, parent: int, identity: tuple, limits: tuple, ruleset: int) -> None:
    """Between fork and exec: die with the parent, enter the namespaces, set the limits, then
    restrict itself with Landlock (last: writing the namespace's id maps needs /proc)."""
    # The kernel sends SIGKILL when the thread that started the child exits; that thread
    # waits in `_wait` until the child is done, so in effect: when the parent dies.
    prctl, syscall, _ = functions
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    uid, gid, namespaces = identity
    if namespaces:
        _enter_namespaces(functions, namespaces, uid, gid)
    memory_bytes, file_bytes = limits
    # RLIMIT_DATA caps what the child can allocate (heap and private mappings) while leaving
    # TensorFlow's large address-space reservations alone, which RLIMIT_AS would break.
    resource.setrlimit(resource.RLIMIT_DATA, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if ruleset >= 0:
        if prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS failed")
        if syscall(SYS_LANDLOCK_RESTRICT_SELF, _long(ruleset), _long(0)) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")


def _enter_namespaces(functions, flags: int, uid: int, gid: int) -> None:
    """unshare(2) into new namespaces; in a new user namespace, map the same user and group
    (a user other than root keeps no capabilities past exec)."""
    _, _, unshare = functions
    if unshare(flags) != 0:
        raise OSError(ctypes.get_errno(), "unshare failed")
    if flags & CLONE_NEWUSER:
        _write_proc("setgroups", "deny")  # the kernel's condition for an unprivileged gid_map
        _write_proc("uid_map", f"{uid} {uid} 1")
        _write_proc("gid_map", f"{gid} {gid} 1")


def _write_proc(name: str, text: str) -> None:
    descriptor = os.open(f"/proc/self/{name}", os.O_WRONLY)
    try:
        if os.write(descriptor, text.encode()) != len(text):
            raise OSError(errno.EIO, f"short write to /proc/self/{name}")
    finally:
        os.close(descriptor)
