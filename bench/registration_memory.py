"""What the check-and-compile child costs for real image models: peak memory and wall time.

`python bench/registration_memory.py [--memory-mb N] [--models A,B] [--formats keras,h5]`
saves `keras.applications` MobileNetV2, EfficientNetB0 and ResNet50 (random weights:
`weights=None`, nothing is downloaded; default 224x224x3 input) into a temporary folder, runs
the real child (`predictions.checking.sandbox.run_child`, with its limits) on each file, and
prints one JSON object on stdout: per model and format, the wall time, the child's peak RSS
(`getrusage(RUSAGE_CHILDREN)` of a process that ran only that child), the peak data memory
(`VmData`, what `MODEL_CHECK_MEMORY_BYTES` limits, sampled every 50 ms) and the outcome.
Progress goes to stderr. `--memory-mb` sets the child's limit (default 8192: unconstrained).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
MODELS = ("MobileNetV2", "EfficientNetB0", "ResNet50")


def save_models(folder: Path, names: list[str], formats: list[str]) -> dict[str, Path]:
    """Build each model with random weights and save it in each format (in a child process,
    so this one never holds TensorFlow)."""
    script = (
        "import sys, keras\n"
        "folder, names, formats = sys.argv[1], sys.argv[2].split(','), sys.argv[3].split(',')\n"
        "for name in names:\n"
        "    model = getattr(keras.applications, name)(weights=None)\n"
        "    for fmt in formats:\n"
        "        model.save(f'{folder}/{name}.{fmt}')\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run(
        [sys.executable, "-c", script, str(folder), ",".join(names), ",".join(formats)],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    return {f"{n}.{f}": folder / f"{n}.{f}" for n in names for f in formats}


def measure_one(path: Path, model_format: str, memory_mb: int) -> dict:
    """Run the child once from this process and measure it (run as `--one`)."""
    sys.path.insert(0, str(PROJECT_DIR))
    from predictions.checking.sandbox import run_child
    from predictions.inference.errors import ModelValidationError

    peak = {"vm_data_kb": 0}
    done = threading.Event()

    def sample():
        while not done.wait(0.05):
            for child in _children(os.getpid()):
                peak["vm_data_kb"] = max(peak["vm_data_kb"], _status_kb(child, "VmData"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out_dir:
        try:
            report = run_child(
                path,
                Path(out_dir),
                model_format=model_format,
                scale=(0.0, 1.0),
                timeout=900,
                memory_bytes=memory_mb << 20,
                max_unpacked_bytes=4 << 30,
            )
            outcome = {"runtime": report.get("runtime"), "message": report.get("message")}
            if not report["ok"]:
                outcome = {"error": report["error"]}
        except ModelValidationError as exc:
            outcome = {"error": str(exc)}
    wall = time.perf_counter() - started
    done.set()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
        "peak_vm_data_mb": round(peak["vm_data_kb"] / 1024),
        "file_mb": round(path.stat().st_size / 2**20, 1),
        **outcome,
    }


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory-mb", type=int, default=8192)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--formats", default="keras")
    parser.add_argument("--one", nargs=2, metavar=("PATH", "FORMAT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(Path(args.one[0]), args.one[1], args.memory_mb)))
        return
    results = {}
    with tempfile.TemporaryDirectory(prefix="registration-memory-") as folder:
        print("saving the models...", file=sys.stderr)
        files = save_models(Path(folder), args.models.split(","), args.formats.split(","))
        for name, path in files.items():
            print(f"checking {name}...", file=sys.stderr)
            one = subprocess.run(
                [sys.executable, __file__, "--one", str(path), path.suffix[1:],
                 "--memory-mb", str(args.memory_mb)],
                capture_output=True, text=True, check=True, cwd=PROJECT_DIR,
            )  # fmt: skip
            results[name] = json.loads(one.stdout.strip().splitlines()[-1])
            print(f"  {results[name]}", file=sys.stderr)
    print(json.dumps({"memory_limit_mb": args.memory_mb, "models": results}, indent=1))


if __name__ == "__main__":
    main()
