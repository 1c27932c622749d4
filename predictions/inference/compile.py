"""Validate a `.keras` file and compile it to LiteRT, in a child process of its own.

The serving process never imports TensorFlow: it runs `python -m predictions.inference.compile`
and reads one JSON object from the child's stdout. Compiling means `model.export(format="litert")`
and checking parity: the LiteRT model must agree with Keras on a few inputs (top-1 equal where
Keras has a clear winner, outputs within PARITY_ATOL + PARITY_RTOL * |keras|). Float32 kernels
(XNNPACK against Eigen) differ by about 1e-6 relative; a wrong conversion differs by O(1).
A model that does not convert is still valid: it is then served through Keras.
"""

import argparse
import functools
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

from .errors import one_line

PARITY_ATOL = 1e-4
PARITY_RTOL = 1e-3
PARITY_INPUTS = 4
PROJECT_DIR = Path(__file__).resolve().parents[2]
# The child needs no credentials: it reads one local file and writes one.
SECRET_PREFIXES = ("AWS_", "DJANGO_SECRET_KEY", "DATABASE_URL", "REDIS_URL")


def compile_in_child(
    source: str, out_dir: str, *, scale: tuple[float, float], timeout: float, memory_bytes: int
) -> dict:
    """Run `compile_model` in a child process without secrets, within `timeout` seconds and
    `memory_bytes` of data memory; returns its report.

    Raises `ModelValidationError` when the child times out or dies without a report.
    """
    from .validation import ModelValidationError

    env = {key: value for key, value in os.environ.items() if not key.startswith(SECRET_PREFIXES)}
    command = [
        *network_isolation(), sys.executable, "-m", "predictions.inference.compile", source, out_dir,
        "--scale", str(scale[0]), str(scale[1]),
    ]  # fmt: skip
    try:
        child = subprocess.run(
            command,
            cwd=PROJECT_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=lambda: _limit_memory(memory_bytes),
        )
    except subprocess.TimeoutExpired:
        raise ModelValidationError(
            f"Checking the model took longer than {timeout:.0f} s "
            f"(or stalled at its memory limit of {memory_bytes >> 20} MB)."
        ) from None
    lines = child.stdout.strip().splitlines()
    if child.returncode != 0 or not lines:
        tail = " ".join(child.stderr.strip().splitlines()[-1:]) or f"exit {child.returncode}"
        raise ModelValidationError(f"The model check failed: {tail}")
    return json.loads(lines[-1])


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


def _limit_memory(memory_bytes: int) -> None:
    # RLIMIT_DATA caps what the child can allocate (heap and private mappings) while leaving
    # TensorFlow's large address-space reservations alone, which RLIMIT_AS would break.
    resource.setrlimit(resource.RLIMIT_DATA, (memory_bytes, memory_bytes))


def compile_model(source: str, out_dir: str, *, scale: tuple[float, float]) -> dict:
    """Inspect, then convert; returns the JSON-able report the parent reads."""
    from .validation import ModelValidationError, inspect_model_file

    try:
        inspection = inspect_model_file(source)
    except ModelValidationError as exc:
        return {"ok": False, "error": str(exc)}
    report = {
        "ok": True,
        "input_shape": list(inspection.input_shape),
        "output_shape": list(inspection.output_shape),
        "runtime": "keras",
        "compiled_path": None,
        "message": inspection.message,
    }
    try:
        compiled, parity = _convert_and_check(inspection, out_dir, scale)
    except Exception as exc:  # Any conversion failure leaves the Keras path.
        report["message"] += f" Not compiled to LiteRT ({one_line(exc)}): served through Keras."
        return report
    report.update(runtime="litert", compiled_path=str(compiled))
    report["message"] += (
        f" Compiled to LiteRT: max abs difference {parity:.2e} on {PARITY_INPUTS + 1} inputs."
    )
    return report


def _convert_and_check(inspection, out_dir, scale) -> tuple[Path, float]:
    import numpy as np

    from .runtime import LiteRTRuntime

    model, input_shape = inspection.model, inspection.input_shape
    target = Path(out_dir) / "compiled.tflite"
    model.export(str(target), format="litert", verbose=False)

    rng = np.random.default_rng(0)
    low, high = scale
    inputs = rng.uniform(low, high, size=(PARITY_INPUTS, *input_shape)).astype(np.float32)
    inputs = np.concatenate([np.zeros((1, *input_shape), np.float32), inputs])
    expected = np.asarray(model(inputs, training=False))
    actual = LiteRTRuntime(str(target), threads=1).predict(inputs)
    if actual.shape != expected.shape:
        raise ValueError(f"LiteRT output shape {actual.shape} differs from Keras {expected.shape}")
    difference = np.abs(actual - expected)
    if np.any(difference > PARITY_ATOL + PARITY_RTOL * np.abs(expected)):
        raise ValueError(f"LiteRT differs from Keras by up to {difference.max():.3g}")
    if expected.ndim == 2 and expected.shape[1] > 1:
        ordered = np.sort(expected, axis=1)
        clear = ordered[:, -1] - ordered[:, -2] > 2 * PARITY_ATOL
        if np.any(expected.argmax(1)[clear] != actual.argmax(1)[clear]):
            raise ValueError("LiteRT's top-1 class differs from Keras's")
    return target, float(difference.max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("out_dir")
    parser.add_argument("--scale", nargs=2, type=float, default=(0.0, 1.0))
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    report = compile_model(args.source, args.out_dir, scale=tuple(args.scale))
    sys.stdout.write("\n" + json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
