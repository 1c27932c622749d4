"""`make soak`: a bounded load test on loopback; prints one JSON object.

SOAK_CLIENTS WebSocket clients (default 200) for SOAK_SECONDS (default 60) against the digits
demo model, each sending real drawn-digit PNGs one at a time with a short pause, and every
tenth frame a malformed one (garbage bytes, broken JSON, a wrong pixel shape). It reports
frames sent, replies received, errors by code, unexpected disconnects (must be 0), round-trip
p50/p99, and the server's RSS at the start and the end.
"""

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

PROJECT_DIR = Path(__file__).resolve().parent.parent
if str(PROJECT_DIR) not in sys.path:
    sys.path.insert(0, str(PROJECT_DIR))

from bench.run import (  # noqa: E402
    close_all,
    digit_png,
    log,
    open_many,
    proc_memory,
    register,
    start_backends,
    write_labels,
)
from harness import servers  # noqa: E402
from predictions.demo import DIGIT_LABELS, train_digits_model  # noqa: E402

CLIENTS = int(os.environ.get("SOAK_CLIENTS", 200))
SECONDS = float(os.environ.get("SOAK_SECONDS", 60))
PAUSE_S = 0.05
REPLY_TIMEOUT = 30.0
MALFORMED = [b"not an image at all", "{broken json", json.dumps({"id": "x", "pixels": [[1, 2]]})]


async def client(url: str, socket, index: int, end: float, good: bytes, tally: dict) -> None:
    sent = 0
    try:
        while time.monotonic() < end:
            frame = MALFORMED[(index + sent) % len(MALFORMED)] if sent % 10 == 9 else good
            started = time.perf_counter()
            await socket.send(frame)
            reply = json.loads(await asyncio.wait_for(socket.recv(), REPLY_TIMEOUT))
            tally["times_ms"].append((time.perf_counter() - started) * 1000)
            tally["sent"] += 1
            tally["replies"] += 1
            tally["codes"][reply.get("code", reply["type"])] += 1
            sent += 1
            await asyncio.sleep(PAUSE_S)
    except Exception as exc:  # Any drop or timeout is what this test counts.
        tally["disconnects"].append(f"client {index}: {type(exc).__name__}: {exc}")


async def soak(url: str, good: bytes) -> dict:
    tally = {"sent": 0, "replies": 0, "codes": Counter(), "times_ms": [], "disconnects": []}
    sockets = await open_many(url, CLIENTS)
    end = time.monotonic() + SECONDS
    try:
        await asyncio.gather(
            *(client(url, socket, index, end, good, tally) for index, socket in enumerate(sockets))
        )
    finally:
        await close_all(sockets)
    times = np.array(tally["times_ms"] or [0.0])
    return {
        "clients": CLIENTS,
        "seconds": SECONDS,
        "frames_sent": tally["sent"],
        "replies_received": tally["replies"],
        "replies_by_type_or_code": dict(tally["codes"]),
        "unexpected_disconnects": len(tally["disconnects"]),
        "disconnect_examples": tally["disconnects"][:5],
        "p50_ms": round(float(np.percentile(times, 50)), 2),
        "p99_ms": round(float(np.percentile(times, 99)), 2),
    }


def main() -> int:
    json_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    with tempfile.TemporaryDirectory(prefix="soak-") as temp, contextlib.ExitStack() as stack:
        folder = Path(temp)
        log("training the digits model")
        model = folder / "digits.keras"
        train_digits_model(model)
        env, _ = start_backends(folder, stack)
        labels = write_labels(folder / "labels.txt", DIGIT_LABELS)
        register("digits", model, env, "--labels-file", str(labels), "--resize", "fit_ink",
                 "--scale", "0", "16")  # fmt: skip
        server = servers.DaphneServer(env, folder / "daphne.log")
        stack.callback(server.stop)
        server.start()
        start_memory = proc_memory(server.process.pid)
        log(f"soaking: {CLIENTS} clients for {SECONDS:.0f} s")
        result = asyncio.run(soak(f"{server.ws_url}/ws/projects/digits/", digit_png()))
        result["rss_mb_start"] = round(start_memory["rss_mb"], 1)
        result["rss_mb_end"] = round(proc_memory(server.process.pid)["rss_mb"], 1)
    json_out.write(json.dumps(result, indent=2) + "\n")
    json_out.flush()
    return 0 if result["unexpected_disconnects"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
