"""`make bench`: the model server against its own floor and against the original design.

One run builds the models, starts SeaweedFS, a database and daphne, registers the models with
the real CLI, and measures: the in-process time per frame (the server's own decode, preprocess
and LiteRT code, no server, and what the input preview adds to it), WebSocket and HTTP round
trips and throughput, memory with three
models and 100 open connections, start-up, the first prediction of a never-loaded model, the memory
the costliest images take arriving at once, and the original design (bench/original_app.py). It prints one JSON object on stdout (progress on
stderr) with the raw numbers and the goals. Server settings in the environment pass through,
e.g. `MAX_BATCH_WAIT_MS=2 make bench`. `python bench/run.py --preview` (seconds, no server, no
models) measures only the preview's cost on decode and preprocess, which is all it touches.

Choices worth knowing when reading the numbers:
- The floor runs decode, preprocess and a batch-of-1 predict back to back on one thread, with
  LiteRT at 2 threads; the server spreads the same work over its pool and batcher threads.
- daphne keeps a model download cache of its own (as on a host apart from where the CLI ran),
  so it fetches every model from the bucket, the never-loaded one included.
- Each connection's first frame is a warm-up outside the measured window; for the original
  design this leaves out the per-connection first `model.predict` (its tracing).
- Throughput entries carry the CPU seconds the server and this client process used in them.
"""

import asyncio
import contextlib
import hashlib
import http.client
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from websockets.asyncio.client import connect

PROJECT_DIR = Path(__file__).resolve().parent.parent
if str(PROJECT_DIR) not in sys.path:
    sys.path.insert(0, str(PROJECT_DIR))

from variants import measure_variants  # noqa: E402  (bench/variants.py)

from harness import servers  # noqa: E402
from harness.worst_images import memory_bytes, reset_peak, worst_images  # noqa: E402
from predictions.demo import DIGIT_LABELS, train_digits_model  # noqa: E402
from predictions.inference.frames import Frame  # noqa: E402
from predictions.inference.pipeline import Limits, prepare_frame  # noqa: E402
from predictions.inference.runtime import LiteRTRuntime  # noqa: E402
from predictions.inference.spec import ModelSpec  # noqa: E402

MNV2_SLUGS = ("mnv2-a", "mnv2-b", "mnv2-c")
NEVER_LOADED = "mnv2-d"
MNV2_LABELS = [f"class-{index}" for index in range(1000)]
PHOTO_COUNT = 20
PHOTO_SIZE = (640, 480)
IN_PROCESS_FRAMES = 120
IN_PROCESS_WARMUP = 5
PREVIEW_FRAMES = 60  # frames each way, preview off and on
BATCH_SIZES = (1, 2, 4, 8)
BATCH_REPEATS = 20
PREPARE_THREADS = 2  # the batched-rate formula's decode + preprocess threads
FLOOR_LITERT_THREADS = 2
LATENCY_FRAMES = 200
LOAD_SECONDS = 8.0
CLIENT_COUNTS = (1, 4, 16)
ORIGINAL_CLIENT_COUNTS = (1, 4)
HELD_CONNECTIONS = 100
OPEN_CONCURRENCY = 20
REPLY_TIMEOUT = 60.0
PHASE_SECONDS = 90.0  # no latency loop runs longer than this
MAX_FRAMES_PER_CLIENT = 100_000
SETTING_NAMES = (
    "MAX_BATCH_SIZE",
    "MAX_BATCH_WAIT_MS",
    "INFERENCE_THREADS",
    "LITERT_THREADS",
    "MAX_PENDING_FRAMES",
    "MODEL_CACHE_BYTES",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "DECODE_BUDGET_BYTES",
)
# Settings whose names outside_env() filters out of the inherited environment.
PASSTHROUGH = ("MODEL_CACHE_BYTES", "MODEL_CHECK_TIMEOUT")
INFO_SCRIPT = """
import json
from dataclasses import asdict
from django.conf import settings
from predictions.models import Project
from predictions.selectors import project_get_info
specs = {}
for slug in Project.objects.values_list("slug", flat=True):
    model = project_get_info(slug=slug).model
    specs[slug] = asdict(model) if model else None
found = {name: getattr(settings, name) for name in names}
print(json.dumps({"settings": found, "specs": specs}))
"""

_STARTED = time.perf_counter()


def log(message: str) -> None:
    """A progress line on stderr."""
    print(f"[bench {time.perf_counter() - _STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


# --- Inputs -----------------------------------------------------------------------------------


def synthetic_photo(seed: int) -> bytes:
    """A 640x480 JPEG (quality 85): a smooth four-corner gradient, shapes, a little noise."""
    rng = np.random.default_rng(seed)
    width, height = PHOTO_SIZE
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    xs, ys = (xs / width)[..., None], (ys / height)[..., None]
    corners = rng.uniform(0, 255, size=(2, 2, 3))
    top = corners[0, 0] * (1 - xs) + corners[0, 1] * xs
    bottom = corners[1, 0] * (1 - xs) + corners[1, 1] * xs
    image = Image.fromarray((top * (1 - ys) + bottom * ys).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(8):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = (int(side) for side in rng.integers(30, 250, size=2))
        fill = tuple(int(value) for value in rng.integers(0, 256, size=3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x0 + w, y0 + h), fill=fill)
    pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(1.5)), dtype=np.float32)
    noisy = np.clip(pixels + rng.normal(0, 3, size=pixels.shape), 0, 255).astype(np.uint8)
    return _encode(Image.fromarray(noisy), "JPEG", quality=85)


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def digit_png() -> bytes:
    """A hand-drawn-looking 7: thick dark strokes on a 280x280 white canvas."""
    image = Image.new("L", (280, 280), 255)
    ImageDraw.Draw(image).line([(70, 60), (210, 60), (125, 235)], fill=0, width=26, joint="curve")
    return _encode(image, "PNG")


def write_labels(path: Path, labels: list[str]) -> Path:
    path.write_text("\n".join(labels) + "\n")
    return path


def build_models(folder: Path) -> dict[str, Path]:
    """Four random-weight MobileNetV2s (one seed each) and the trained digits model."""
    import keras

    folder.mkdir()
    paths = {}
    for seed, slug in enumerate((*MNV2_SLUGS, NEVER_LOADED), start=1):
        keras.utils.set_random_seed(seed)
        model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
        paths[slug] = folder / f"{slug}.keras"
        model.save(paths[slug])
        keras.backend.clear_session()
        log(f"built {slug}: {paths[slug].stat().st_size / 1e6:.1f} MB")
    paths["digits"] = folder / "digits.keras"
    accuracy = train_digits_model(paths["digits"])
    log(f"trained digits: held-out accuracy {accuracy:.3f}")
    return paths


# --- Statistics -------------------------------------------------------------------------------


def latency_summary(times_ms: list[float], bad: int) -> dict:
    return {
        "frames": len(times_ms),
        "p50_ms": float(np.percentile(times_ms, 50)),
        "p99_ms": float(np.percentile(times_ms, 99)),
        "mean_ms": float(np.mean(times_ms)),
        "bad_replies": bad,
    }


def stage_medians(timings: list[dict]) -> dict:
    """Median of each stage of the server's own `timings_ms`."""
    if not timings:
        return {}
    return {stage: float(np.median([t[stage] for t in timings])) for stage in timings[0]}


def rounded(value):
    """Floats to 3 decimals, throughout nested dicts and lists."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(item) for item in value]
    return value


def find_problems(value, path: str = "") -> list[str]:
    """Every `bad_replies` count above zero, by where it is."""
    problems = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "bad_replies" and item:
                problems.append(f"{path}: {item} replies were not predictions")
            else:
                problems += find_problems(item, f"{path}.{key}" if path else key)
    return problems


def proc_memory(pid: int) -> dict:
    """Peak (VmHWM) and current (VmRSS) resident memory of a process, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            fields[name] = int(rest.split()[0]) / 1024  # kB
    return {"peak_rss_mb": fields["VmHWM"], "rss_mb": fields["VmRSS"]}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, all threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds of the server process and of this (client) process since it was made."""

    def __init__(self, server_pid: int):
        self.server_pid = server_pid
        self.server = cpu_seconds(server_pid)
        self.client = time.process_time()

    def read(self, frames: int) -> dict:
        server = cpu_seconds(self.server_pid) - self.server
        return {
            "server_cpu_s": server,
            "client_cpu_s": time.process_time() - self.client,
            "server_cpu_ms_per_frame": server * 1000 / max(frames, 1),
        }


# --- Set-up: storage, database, registration --------------------------------------------------


def start_backends(folder: Path, stack: contextlib.ExitStack) -> tuple[dict, servers.S3Bucket]:
    """SeaweedFS with a bucket, a migrated database, and the server processes' environment."""
    seaweed_dir = folder / "seaweed"
    seaweed_dir.mkdir()
    seaweed = servers.SeaweedS3(seaweed_dir)
    stack.callback(seaweed.stop)
    seaweed.start()
    bucket = seaweed.create_bucket()
    database_url = stack.enter_context(servers.OutsideDatabase(folder))
    passthrough = {name: os.environ[name] for name in PASSTHROUGH if os.environ.get(name)}
    env = servers.outside_env(
        database_url=database_url,
        folder=folder,
        s3=bucket,
        ECHO_WEBSOCKET="true",
        production=True,
        **passthrough,
    )
    servers.manage("migrate", "--noinput", env=env)
    return env, bucket


def register(slug: str, model: Path, env: dict, *options: str) -> dict:
    """`register_model SLUG --file MODEL ... --activate` with the real CLI, timed."""
    started = time.perf_counter()
    done = servers.manage(
        "register_model", slug, "--file", str(model), *options, "--activate", env=env, check=False
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"register_model {slug} failed: {done.stderr.strip()[-800:]}")
    log(f"registered {slug} in {seconds:.1f} s")
    return {"seconds": seconds, "version": int(done.stdout.split()[-1])}


def register_all(models: dict[str, Path], env: dict, folder: Path) -> dict:
    mnv2_labels = write_labels(folder / "mnv2-labels.txt", MNV2_LABELS)
    digit_labels = write_labels(folder / "digit-labels.txt", DIGIT_LABELS)
    mnv2_options = ("--labels-file", str(mnv2_labels), "--scale", "-1", "1")
    timings = {slug: register(slug, models[slug], env, *mnv2_options) for slug in MNV2_SLUGS}
    timings["digits"] = register(
        "digits", models["digits"], env,
        "--labels-file", str(digit_labels), "--resize", "fit_ink", "--scale", "0", "16",
    )  # fmt: skip
    return timings


def server_info(env: dict) -> tuple[dict, dict[str, ModelSpec]]:
    """The settings in force in a server process, and each project's active version."""
    script = f"names = {SETTING_NAMES!r}\n{INFO_SCRIPT}"
    output = servers.manage("shell", "-c", script, env=env).stdout.strip().splitlines()[-1]
    info = json.loads(output)
    specs = {
        slug: ModelSpec(
            **{**spec, "input_shape": tuple(spec["input_shape"]), "labels": tuple(spec["labels"])}
        )
        for slug, spec in info["specs"].items()
        if spec
    }
    return info["settings"], specs


def start_and_time(server: servers.DaphneServer) -> float:
    """Start daphne; seconds from just before Popen to the first `/readyz` 200."""
    ready_at: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set() and time.perf_counter() - started < REPLY_TIMEOUT:
            try:
                with urllib.request.urlopen(f"{server.url}/readyz", timeout=2) as response:
                    if response.status == 200:
                        ready_at.append(time.perf_counter())
                        return
            except OSError:
                pass
            time.sleep(0.02)

    started = time.perf_counter()
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        server.start()
        poller.join(timeout=REPLY_TIMEOUT)
    finally:
        stop.set()
    if not ready_at:
        raise RuntimeError("/readyz never answered 200")
    return ready_at[0] - started


# --- In process: the floor --------------------------------------------------------------------


def fetch_compiled(bucket: servers.S3Bucket, spec: ModelSpec, folder: Path) -> Path:
    """Download a version's LiteRT artifact from the bucket and check its sha256."""
    if spec.runtime != "litert" or not spec.compiled_file:
        raise RuntimeError(f"version {spec.version_id} was not compiled to LiteRT")
    target = folder / f"{spec.compiled_sha256}.tflite"
    bucket.client.download_file(bucket.name, spec.compiled_file, str(target))
    if hashlib.sha256(target.read_bytes()).hexdigest() != spec.compiled_sha256:
        raise RuntimeError(f"{spec.compiled_file} does not match its sha256")
    return target


def time_frames(runtime, spec: ModelSpec, payloads: list[bytes], limits: Limits) -> dict:
    """The server's own pipeline: median decode, preprocess, inference (batch of 1) and total
    ms over the frames, and the CPU ms a frame took (every thread of this process)."""

    def server_pipeline(data: bytes) -> tuple[float, float, float]:
        prepared = prepare_frame(Frame(id=0, image=data), spec=spec, limits=limits)
        started = time.perf_counter()
        runtime.predict(prepared.model_input[np.newaxis])
        return prepared.decode_ms, prepared.preprocess_ms, (time.perf_counter() - started) * 1000

    rows, cpu_ms = run_frames(server_pipeline, payloads)
    decode, preprocess, inference = rows.T
    return {
        "frames": len(decode),
        "decode_ms": float(np.median(decode)),
        "preprocess_ms": float(np.median(preprocess)),
        "inference_ms": float(np.median(inference)),
        "prepare_ms": float(np.median(decode + preprocess)),
        "total_ms": float(np.median(decode + preprocess + inference)),
        "cpu_ms_per_frame": cpu_ms,
    }


def lean_frames(runtime, size: tuple[int, int], payloads: list[bytes]) -> dict:
    """The leanest in-process code for a photo, the limit a server can approach: Pillow decode
    drafted to the input size, one Pillow resize, /255, LiteRT invoke (batch of 1). No limits,
    no budget, no checks."""

    def lean(data: bytes) -> tuple[float, float]:
        started = time.perf_counter()
        image = Image.open(io.BytesIO(data))
        image.draft("RGB", size)
        image = image.convert("RGB").resize(size, Image.Resampling.BILINEAR)
        model_input = np.asarray(image, dtype=np.float32) / 255
        prepared = time.perf_counter()
        runtime.predict(model_input[np.newaxis])
        return (prepared - started) * 1000, (time.perf_counter() - prepared) * 1000

    rows, cpu_ms = run_frames(lean, payloads)
    prepare, inference = rows.T
    return {
        "frames": len(prepare),
        "prepare_ms": float(np.median(prepare)),
        "inference_ms": float(np.median(inference)),
        "total_ms": float(np.median(prepare + inference)),
        "cpu_ms_per_frame": cpu_ms,
    }


def run_frames(one_frame, payloads: list[bytes]) -> tuple[np.ndarray, float]:
    """`one_frame(data)` over the payloads after a warm-up: its rows of timings, and the CPU ms
    a frame took (this process, every thread: LiteRT's too)."""
    rows = []
    deadline = time.monotonic() + PHASE_SECONDS
    for index in range(IN_PROCESS_WARMUP + IN_PROCESS_FRAMES):
        if time.monotonic() > deadline:
            break
        if index == IN_PROCESS_WARMUP:
            cpu_started = time.process_time()
        rows.append(one_frame(payloads[index % len(payloads)]))
    measured = rows[IN_PROCESS_WARMUP:]
    cpu_ms = (time.process_time() - cpu_started) * 1000 / len(measured)
    return np.array(measured), cpu_ms


def batched_rates(runtime, model_input: np.ndarray, prepare_ms: float) -> dict:
    """frames/s = batch / (prepare_ms * batch / PREPARE_THREADS + predict(batch) ms)."""
    rates = {}
    for size in BATCH_SIZES:
        batch = np.repeat(model_input[np.newaxis], size, axis=0)
        for _ in range(3):
            runtime.predict(batch)
        times = []
        deadline = time.monotonic() + 10
        while len(times) < BATCH_REPEATS and time.monotonic() < deadline:
            started = time.perf_counter()
            runtime.predict(batch)
            times.append((time.perf_counter() - started) * 1000)
        predict_ms = float(np.median(times))
        fps = size / ((prepare_ms * size / PREPARE_THREADS + predict_ms) / 1000)
        rates[str(size)] = {"predict_ms": predict_ms, "fps": fps}
    return rates


def measure_in_process(
    bucket, specs: dict, photos: list[bytes], digit: bytes, limits: Limits, folder: Path
) -> dict:
    """The server's own decode/preprocess/LiteRT code in this process: the floor per frame."""
    folder.mkdir()
    mnv2_spec, digits_spec = specs["mnv2-a"], specs["digits"]
    mnv2 = LiteRTRuntime(
        str(fetch_compiled(bucket, mnv2_spec, folder)), threads=FLOOR_LITERT_THREADS
    )
    size = mnv2_spec.input_shape[1::-1]
    result = {
        "litert_threads": FLOOR_LITERT_THREADS,
        "lean_mnv2": lean_frames(mnv2, size, photos),
        "mnv2": time_frames(mnv2, mnv2_spec, photos, limits),
    }
    sample = prepare_frame(Frame(id=0, image=photos[0]), spec=mnv2_spec, limits=limits)
    for name in ("lean_mnv2", "mnv2"):
        rates = batched_rates(mnv2, sample.model_input, result[name]["prepare_ms"])
        result[name]["batched"] = rates
        result[name]["best_batched_fps"] = max(rate["fps"] for rate in rates.values())
    digits = LiteRTRuntime(
        str(fetch_compiled(bucket, digits_spec, folder)), threads=FLOOR_LITERT_THREADS
    )
    result["digits"] = time_frames(digits, digits_spec, [digit], limits)
    result["preview"] = {
        "mnv2": preview_cost(mnv2_spec, photos, limits, runtime=mnv2),
        "digits": preview_cost(digits_spec, [digit], limits, runtime=digits),
    }
    for name in ("mnv2", "digits"):  # the same code as above, measured apart
        preview = result["preview"][name]
        preview["off_minus_total_ms"] = preview["off_ms"] - result[name]["total_ms"]
        preview["prepare_off_minus_prepare_ms"] = (
            preview["prepare_off_ms"] - result[name]["prepare_ms"]
        )
    return result


def preview_cost(spec: ModelSpec, payloads: list[bytes], limits: Limits, runtime=None) -> dict:
    """What the input preview adds to a frame: the server's pipeline (decode, preprocess and,
    given a runtime, a batch-of-1 predict) with `Frame.preview` off and on, taking turns frame
    by frame (each going first every other time) so a busy moment falls on both. `extra_ms` is
    the median of on minus the median of off; `prepare_*_ms` the decode and preprocess part
    alone (what the preview touches: inference is the same either way); `preview_kb` the mean
    data URL's size."""

    def one(data: bytes, preview: bool) -> tuple[float, float, str | None]:
        started = time.perf_counter()
        frame = Frame(id=0, image=data, preview=preview)
        prepared = prepare_frame(frame, spec=spec, limits=limits)
        if runtime is not None:
            runtime.predict(prepared.model_input[np.newaxis])
        total = (time.perf_counter() - started) * 1000
        return total, prepared.decode_ms + prepared.preprocess_ms, prepared.input_preview

    rows: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    sizes = []
    for index in range(IN_PROCESS_WARMUP + PREVIEW_FRAMES):
        data = payloads[index % len(payloads)]
        for preview in (False, True) if index % 2 else (True, False):
            total, prepare, url = one(data, preview)
            if index >= IN_PROCESS_WARMUP:
                rows[preview].append((total, prepare))
                sizes += [len(url)] if url else []
    (off, prepare_off), (on, prepare_on) = (
        np.median(rows[preview], axis=0).tolist() for preview in (False, True)
    )
    return {
        "frames": len(rows[False]),
        "with_inference": runtime is not None,
        "off_ms": off,
        "on_ms": on,
        "extra_ms": on - off,
        "prepare_off_ms": prepare_off,
        "prepare_on_ms": prepare_on,
        "preview_kb": float(np.mean(sizes)) / 1024,
    }


def preview_only() -> dict:
    """`--preview`: preview_cost on decode and preprocess alone (the preview leaves inference
    as it is), for the bench's photos and digit with the specs `register_all` gives them."""
    limits = Limits(max_image_bytes=10 * 1024 * 1024, max_image_pixels=50_000_000)
    mnv2 = ModelSpec(
        version_id=1, number=1, file_name="", sha256="", input_shape=(224, 224, 3),
        labels=tuple(MNV2_LABELS), scale_min=-1.0, scale_max=1.0,
    )  # fmt: skip
    digits = ModelSpec(
        version_id=2, number=1, file_name="", sha256="", input_shape=(8, 8, 1),
        labels=tuple(DIGIT_LABELS), resize="fit_ink", scale_min=0.0, scale_max=16.0,
    )  # fmt: skip
    photos = [synthetic_photo(seed) for seed in range(PHOTO_COUNT)]
    return {
        "mnv2": preview_cost(mnv2, photos, limits),
        "digits": preview_cost(digits, [digit_png()], limits),
    }


# --- WebSocket clients ------------------------------------------------------------------------


def is_prediction(reply, payload=None) -> bool:
    try:
        data = json.loads(reply)
    except (TypeError, ValueError):
        return False
    return isinstance(data, dict) and data.get("type") == "prediction" and "labels" in data


def is_echo(reply, payload) -> bool:
    return reply == payload


async def open_socket(url: str, *, ready: bool = True, open_timeout: float = REPLY_TIMEOUT):
    """A client connection; with `ready`, after the server's `ready` message."""
    socket = await connect(url, open_timeout=open_timeout, compression=None, max_size=2**22)
    if ready:
        message = json.loads(await asyncio.wait_for(socket.recv(), REPLY_TIMEOUT))
        if message.get("type") != "ready":
            await socket.close()
            raise RuntimeError(f"{url} did not say ready: {message}")
    return socket


async def open_many(url: str, count: int, **options) -> list:
    """`count` connections, OPEN_CONCURRENCY at a time; all or none."""
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def one():
        async with gate:
            return await open_socket(url, **options)

    results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    sockets = [result for result in results if not isinstance(result, BaseException)]
    if len(sockets) < count:
        await close_all(sockets)
        raise next(result for result in results if isinstance(result, BaseException))
    return sockets


async def close_all(sockets: list) -> None:
    await asyncio.gather(*(socket.close() for socket in sockets), return_exceptions=True)


async def round_trip(socket, payload: bytes) -> tuple[float, object]:
    """Send one frame and wait for its reply; (ms, reply)."""
    started = time.perf_counter()
    await socket.send(payload)
    reply = await asyncio.wait_for(socket.recv(), REPLY_TIMEOUT)
    return (time.perf_counter() - started) * 1000, reply


async def ws_latency(url: str, payloads: list[bytes], check=is_prediction, ready=True) -> dict:
    """One client, one frame at a time: round-trip p50/p99 (after one warm-up frame)."""
    socket = await open_socket(url, ready=ready)
    try:
        await round_trip(socket, payloads[0])
        times, timings, bad = [], [], 0
        deadline = time.monotonic() + PHASE_SECONDS
        for index in range(LATENCY_FRAMES):
            if time.monotonic() > deadline:
                break
            payload = payloads[index % len(payloads)]
            ms, reply = await round_trip(socket, payload)
            times.append(ms)
            ok = check(reply, payload)
            bad += not ok
            if ok and check is is_prediction:
                timings.append(json.loads(reply)["timings_ms"])
    finally:
        await socket.close()
    summary = latency_summary(times, bad)
    if timings:
        summary["server_timings_ms"] = stage_medians(timings)
    return summary


async def client_loop(socket, payloads: list[bytes], offset: int, end: float, check) -> tuple:
    """Send, await the reply, repeat until `end`; (good replies, bad replies)."""
    good = bad = 0
    for index in range(MAX_FRAMES_PER_CLIENT):
        if time.perf_counter() >= end:
            break
        payload = payloads[(offset + index) % len(payloads)]
        _, reply = await round_trip(socket, payload)
        if check(reply, payload):
            good += 1
        else:
            bad += 1
    return good, bad


async def ws_throughput(
    url: str,
    payloads: list[bytes],
    clients: int,
    *,
    server_pid: int,
    check=is_prediction,
    open_timeout=REPLY_TIMEOUT,
) -> dict:
    """Frames/s with `clients` connections sending back to back for LOAD_SECONDS."""
    opened = time.perf_counter()
    sockets = await open_many(url, clients, open_timeout=open_timeout)
    connect_s = time.perf_counter() - opened
    try:
        await asyncio.gather(*(round_trip(socket, payloads[0]) for socket in sockets))
        meter = CpuMeter(server_pid)
        started = time.perf_counter()
        end = started + LOAD_SECONDS
        counts = await asyncio.gather(
            *(client_loop(socket, payloads, i, end, check) for i, socket in enumerate(sockets))
        )
        elapsed = time.perf_counter() - started
        good = sum(count[0] for count in counts)
        cpu = meter.read(good)
    finally:
        await close_all(sockets)
    return {
        "clients": clients,
        "connect_s": connect_s,
        "seconds": elapsed,
        "frames": good,
        "fps": good / elapsed,
        "bad_replies": sum(count[1] for count in counts),
        **cpu,
    }


async def measure_websocket(
    server: servers.DaphneServer, photos: list[bytes], digit: bytes
) -> dict:
    ws_url, pid = server.ws_url, server.process.pid
    mnv2_url = f"{ws_url}/ws/projects/mnv2-a/"
    log("websocket: mnv2 round trips")
    result = {"mnv2": {"latency": await ws_latency(mnv2_url, photos), "throughput": {}}}
    for clients in CLIENT_COUNTS:
        log(f"websocket: mnv2 with {clients} clients")
        result["mnv2"]["throughput"][str(clients)] = await ws_throughput(
            mnv2_url, photos, clients, server_pid=pid
        )
    log("websocket: digits round trips")
    result["digits"] = {"latency": await ws_latency(f"{ws_url}/ws/projects/digits/", [digit])}
    return result


async def measure_echo(ws_url: str, photos: list[bytes]) -> dict:
    log("websocket: echo round trips")
    latency = await ws_latency(f"{ws_url}/ws/echo/", photos, check=is_echo, ready=False)
    return {"payload_bytes_mean": float(np.mean([len(p) for p in photos])), **latency}


# --- HTTP clients -----------------------------------------------------------------------------


def http_post(connection: http.client.HTTPConnection, path: str, body: bytes) -> tuple:
    """POST one JPEG on a keep-alive connection; (ms, whether it was a prediction)."""
    started = time.perf_counter()
    connection.request("POST", path, body=body, headers={"Content-Type": "image/jpeg"})
    response = connection.getresponse()
    data = response.read()
    return (time.perf_counter() - started) * 1000, response.status == 200 and is_prediction(data)


def http_latency(port: int, path: str, payloads: list[bytes]) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REPLY_TIMEOUT)
    try:
        http_post(connection, path, payloads[0])
        times, bad = [], 0
        deadline = time.monotonic() + PHASE_SECONDS
        for index in range(LATENCY_FRAMES):
            if time.monotonic() > deadline:
                break
            ms, ok = http_post(connection, path, payloads[index % len(payloads)])
            times.append(ms)
            bad += not ok
    finally:
        connection.close()
    return latency_summary(times, bad)


def http_throughput(
    server: servers.DaphneServer, path: str, payloads: list[bytes], clients: int
) -> dict:
    """Frames/s with `clients` threads, each POSTing back to back on its own connection."""
    port = server.port
    window: dict = {}

    def open_window() -> None:
        window["meter"] = CpuMeter(server.process.pid)
        window["start"] = time.perf_counter()
        window["end"] = window["start"] + LOAD_SECONDS

    barrier = threading.Barrier(clients, action=open_window, timeout=REPLY_TIMEOUT)

    def client(index: int) -> tuple[int, int]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REPLY_TIMEOUT)
        try:
            http_post(connection, path, payloads[index % len(payloads)])
            barrier.wait()
            good = bad = 0
            for count in range(MAX_FRAMES_PER_CLIENT):
                if time.perf_counter() >= window["end"]:
                    break
                _, ok = http_post(connection, path, payloads[(index + count) % len(payloads)])
                good, bad = good + ok, bad + (not ok)
            return good, bad
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=clients) as pool:
        counts = [future.result() for future in [pool.submit(client, i) for i in range(clients)]]
    elapsed = time.perf_counter() - window["start"]
    good = sum(count[0] for count in counts)
    return {
        "clients": clients,
        "seconds": elapsed,
        "frames": good,
        "fps": good / elapsed,
        "bad_replies": sum(count[1] for count in counts),
        **window["meter"].read(good),
    }


def measure_http(server: servers.DaphneServer, photos: list[bytes]) -> dict:
    path = "/api/projects/mnv2-a/predict"
    log("http: mnv2 round trips")
    result = {"mnv2": {"latency": http_latency(server.port, path, photos), "throughput": {}}}
    for clients in CLIENT_COUNTS:
        log(f"http: mnv2 with {clients} clients")
        result["mnv2"]["throughput"][str(clients)] = http_throughput(server, path, photos, clients)
    return result


# --- Memory and the never-loaded model --------------------------------------------------------


async def measure_memory(server: servers.DaphneServer, photo: bytes) -> dict:
    """Peak and current RSS with three models loaded and HELD_CONNECTIONS connections open."""
    for slug in MNV2_SLUGS:
        socket = await open_socket(f"{server.ws_url}/ws/projects/{slug}/")
        try:
            _, reply = await round_trip(socket, photo)
        finally:
            await socket.close()
        if not is_prediction(reply):
            raise RuntimeError(f"{slug} did not predict: {reply}")
    log(f"memory: opening {HELD_CONNECTIONS} connections")
    sockets = await open_many(f"{server.ws_url}/ws/projects/mnv2-a/", HELD_CONNECTIONS)
    try:
        await asyncio.sleep(0.5)
        memory = proc_memory(server.process.pid)
    finally:
        await close_all(sockets)
    return {"models_loaded": len(MNV2_SLUGS), "open_connections": len(sockets), **memory}


async def first_prediction_seconds(url: str, photo: bytes) -> float:
    """From opening a connection to the first prediction's reply."""
    started = time.perf_counter()
    socket = await open_socket(url)
    try:
        _, reply = await round_trip(socket, photo)
    finally:
        await socket.close()
    seconds = time.perf_counter() - started
    if not is_prediction(reply):
        raise RuntimeError(f"the never-loaded model did not predict: {reply}")
    return seconds


def measure_never_loaded(server, env: dict, model: Path, labels: Path, photo: bytes) -> tuple:
    """Register a new model while the server runs, then time its first prediction."""
    log(f"registering {NEVER_LOADED} while the server runs")
    registration = register(
        NEVER_LOADED, model, env, "--labels-file", str(labels), "--scale", "-1", "1"
    )
    url = f"{server.ws_url}/ws/projects/{NEVER_LOADED}/"
    return registration, asyncio.run(first_prediction_seconds(url, photo))


# --- Worst-case image memory ---------------------------------------------------------------------


async def burst(server: servers.DaphneServer, over_http: list[bytes], over_ws: list[bytes]) -> list:
    """Each image from a client of its own (HTTP to mnv2-a, WebSocket to the digits drawing
    model), sent together once every socket is open: the replies, HTTP first."""
    sockets = [await open_socket(f"{server.ws_url}/ws/projects/digits/") for _ in over_ws]

    def post(body: bytes) -> bytes:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=REPLY_TIMEOUT)
        try:
            connection.request(
                "POST", "/api/projects/mnv2-a/predict", body=body,
                headers={"Content-Type": "application/octet-stream"},
            )  # fmt: skip
            return connection.getresponse().read()
        finally:
            connection.close()

    try:
        replies = await asyncio.gather(
            *(asyncio.to_thread(post, body) for body in over_http),
            *(round_trip(socket, frame) for socket, frame in zip(sockets, over_ws, strict=True)),
        )
    finally:
        await close_all(sockets)
    return [json.loads(reply if isinstance(reply, bytes) else reply[1]) for reply in replies]


def measure_worst_case_images(server: servers.DaphneServer, photo: bytes, digit: bytes) -> dict:
    """The server's peak RSS rise (MB of 10^6 bytes, as issue 11's goal) while the eight
    costliest images the default limits admit arrive at once, four over HTTP and four over
    WebSocket (harness/worst_images.py), and while four that the decode budget refuses do. Each
    from the RSS after a warm-up frame, with the peak reset there (Linux's clear_refs)."""
    images = worst_images()
    admitted = [image.data for image in images if not image.refused]
    refused = [image.data for image in images if image.refused]
    result = {}
    for name, over_http, over_ws, expected in (
        ("admitted_8", admitted[:4], admitted[4:], "prediction"),
        ("refused_4", refused, refused, "too_large"),
    ):
        log(f"worst-case image memory: {name}")
        asyncio.run(burst(server, [photo], [digit]))
        reset_peak(server.process.pid)
        baseline = memory_bytes(server.process.pid)["rss"]
        replies = asyncio.run(burst(server, over_http, over_ws))
        peak = memory_bytes(server.process.pid)["peak"]
        outcomes = [reply.get("code", reply["type"]) for reply in replies]
        result[name] = {
            "peak_rss_rise_mb": (peak - baseline) / 1e6,
            "baseline_rss_mb": baseline / 1e6,
            "replies": dict(Counter(outcomes)),
            "bad_replies": sum(outcome != expected for outcome in outcomes),
        }
    return result


# --- The original design ----------------------------------------------------------------------


def measure_original(
    folder: Path, env: dict, bucket, spec: ModelSpec, photos: list[bytes], stack
) -> dict:
    """bench/original_app.py under a second daphne: 1- and 4-client frames/s, peak RSS."""
    original_env = {
        **env,
        "ORIGINAL_S3_ENDPOINT": bucket.endpoint,
        "ORIGINAL_S3_BUCKET": bucket.name,
        "ORIGINAL_S3_KEY": spec.file_name,
        "ORIGINAL_LABELS_FILE": str(folder / "mnv2-labels.txt"),
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    server = servers.DaphneServer(
        original_env,
        folder / "original.log",
        application="bench.original_app:application",
        # The app loads the model before accepting; daphne's default allows 5 s for that.
        extra_args=("--websocket_connect_timeout", "300"),
    )
    stack.callback(server.stop)
    log("original: starting")
    server.start()
    try:
        url = f"{server.ws_url}/ws/"
        result = {"throughput": {}}
        for clients in ORIGINAL_CLIENT_COUNTS:
            log(f"original: {clients} clients")
            measured = asyncio.run(
                ws_throughput(url, photos, clients, server_pid=server.process.pid, open_timeout=300)
            )
            result["throughput"][str(clients)] = measured
        result.update(proc_memory(server.process.pid))
    finally:
        server.stop()
    return result


# --- Goals ------------------------------------------------------------------------------------


def goal(value: float, target: float, *, at_most: bool) -> dict:
    met = value <= target if at_most else value >= target
    return {"value": value, "target": f"<= {target}" if at_most else f">= {target}", "met": met}


def goals(result: dict) -> dict:
    """Every ratio against the lean in-process code (`in_process.lean_mnv2`), the floor; the
    digits model's floor is the server's own pipeline (its `fit_ink` is the work itself)."""
    floor = result["in_process"]
    lean = floor["lean_mnv2"]
    ws = result["websocket"]
    mnv2_latency = ws["mnv2"]["latency"]
    fps = ws["mnv2"]["throughput"]
    digits_overhead = ws["digits"]["latency"]["p50_ms"] - floor["digits"]["total_ms"]
    original_fps1 = result["original"]["throughput"]["1"]["fps"]
    return {
        "mnv2_ws_p50_over_lean": goal(
            mnv2_latency["p50_ms"] / lean["total_ms"], 1.25, at_most=True
        ),
        "mnv2_ws_p99_over_lean": goal(mnv2_latency["p99_ms"] / lean["total_ms"], 2.0, at_most=True),
        "mnv2_ws_fps16_over_lean_best_batched": goal(
            fps["16"]["fps"] / lean["best_batched_fps"], 0.85, at_most=False
        ),
        "mnv2_server_cpu_per_frame_over_lean": goal(
            fps["1"]["server_cpu_ms_per_frame"] / lean["cpu_ms_per_frame"], 1.5, at_most=True
        ),
        "digits_ws_p50_minus_inprocess_over_echo_p50": goal(
            digits_overhead / result["echo"]["p50_ms"], 1.5, at_most=True
        ),
        "peak_rss_mb_3_models_100_connections": goal(
            result["memory"]["peak_rss_mb"], 350, at_most=True
        ),
        "worst_case_images_peak_rss_rise_mb": goal(
            result["worst_case_images"]["admitted_8"]["peak_rss_rise_mb"], 150, at_most=True
        ),
        "start_to_readyz_s": goal(result["startup"]["start_to_readyz_s"], 3.0, at_most=True),
        "first_prediction_never_loaded_s": goal(
            result["startup"]["first_prediction_never_loaded_s"], 2.0, at_most=True
        ),
        "ws_fps1_over_original_fps1": goal(fps["1"]["fps"] / original_fps1, 10, at_most=False),
        **{
            f"{model}_int8_rate_over_float": goal(
                result["variants"][model]["int8_vs_float"]["rate"], 1.5, at_most=False
            )
            for model in ("MobileNetV2", "ResNet50")
            if model in result["variants"]
        },
        **{
            f"{model}_int8_size_over_float": goal(
                result["variants"][model]["int8_vs_float"]["size"], 0.35, at_most=True
            )
            for model in ("MobileNetV2", "ResNet50")
            if model in result["variants"]
        },
    }


# --- The run ----------------------------------------------------------------------------------


def run(folder: Path, stack: contextlib.ExitStack) -> dict:
    """Every step in order; returns the result without the goals."""
    log("building models and inputs")
    photos = [synthetic_photo(seed) for seed in range(PHOTO_COUNT)]
    digit = digit_png()
    models = build_models(folder / "models")

    log("starting SeaweedFS and the database")
    env, bucket = start_backends(folder, stack)
    result: dict = {"registration": register_all(models, env, folder)}
    settings, specs = server_info(env)
    result["settings"] = {**settings, "cpu_count": os.cpu_count()}

    # The server keeps its own download cache, as on a host apart from where the CLI ran:
    # it fetches every model from the bucket, the never-loaded one included.
    server_env = {**env, "MODEL_CACHE_DIR": str(folder / "server-model-cache")}
    server = servers.DaphneServer(server_env, folder / "daphne.log")
    stack.callback(server.stop)
    startup = {"start_to_readyz_s": start_and_time(server)}
    log(f"daphne ready in {startup['start_to_readyz_s']:.2f} s")
    # The scenario first, in a fresh process: the load phases below grow each interpreter's
    # buffers to the largest batch they see, which the peak after them shows separately.
    result["memory"] = asyncio.run(measure_memory(server, photos[0]))

    log("in process: the floor")
    limits = Limits(settings["MAX_IMAGE_BYTES"], settings["MAX_IMAGE_PIXELS"])
    result["in_process"] = measure_in_process(
        bucket, specs, photos, digit, limits, folder / "compiled"
    )
    result["in_process"]["jpeg_bytes_mean"] = float(np.mean([len(p) for p in photos]))

    result["websocket"] = asyncio.run(measure_websocket(server, photos, digit))
    result["echo"] = asyncio.run(measure_echo(server.ws_url, photos))
    result["http"] = measure_http(server, photos)

    registration, startup["first_prediction_never_loaded_s"] = measure_never_loaded(
        server, env, models[NEVER_LOADED], folder / "mnv2-labels.txt", photos[0]
    )
    result["registration"][NEVER_LOADED] = registration
    result["startup"] = startup
    result["memory"]["after_all_load_phases"] = proc_memory(server.process.pid)
    # After the reading above: it resets the server's peak.
    result["worst_case_images"] = measure_worst_case_images(server, photos[0], digit)
    server.stop()

    result["original"] = measure_original(folder, env, bucket, specs["mnv2-a"], photos, stack)
    result["registration_child"] = measure_registration_child()
    log("smaller variants: MobileNetV2 and ResNet50 as float, int8 and float16 (about 2 minutes)")
    result["variants"] = measure_variants(folder / "variants")
    return result


def measure_registration_child() -> dict:
    """The check-and-compile child (as the worker runs it, under the default memory limit) for
    MobileNetV2, EfficientNetB0 and ResNet50: wall time and peak memory, from
    bench/registration_memory.py in a process of its own."""
    log("the registration child for three keras.applications models (about 2 minutes)")
    limit_mb = int(os.environ.get("MODEL_CHECK_MEMORY_BYTES", 2 * 1024**3)) >> 20
    done = subprocess.run(
        [sys.executable, str(PROJECT_DIR / "bench" / "registration_memory.py"),
         "--memory-mb", str(limit_mb)],
        capture_output=True, text=True, check=True, cwd=PROJECT_DIR,
    )  # fmt: skip
    return json.loads(done.stdout)


def dump_logs(folder: Path) -> None:
    """The tail of each server log, on stderr, after a failure."""
    for name in ("daphne.log", "original.log", "seaweed/weed.log"):
        path = folder / name
        if path.exists():
            print(f"--- {name} (tail) ---", file=sys.stderr)
            print(path.read_text(errors="replace")[-3000:], file=sys.stderr)


def main() -> int:
    # SIGTERM unwinds like Ctrl-C, so every process started is still stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if sys.argv[1:] == ["--preview"]:
        print(json.dumps(rounded({"preview": preview_only()}), indent=2))
        return 0
    # Only the final JSON goes to stdout: anything else writing to fd 1 lands on stderr.
    json_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    with tempfile.TemporaryDirectory(prefix="bench-") as temp, contextlib.ExitStack() as stack:
        folder = Path(temp)
        try:
            result = run(folder, stack)
        except BaseException:
            dump_logs(folder)
            raise
    elapsed = time.perf_counter() - _STARTED
    head = {"goals": goals(result), "problems": find_problems(result), "elapsed_s": elapsed}
    json_out.write(json.dumps(rounded({**head, **result}), indent=2) + "\n")
    json_out.flush()
    log(f"done in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
