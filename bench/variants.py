"""What the smaller LiteRT variants give real image models: size, in-process speed, agreement.

`python bench/variants.py` (about 2 minutes) prints one JSON object: for MobileNetV2 and
ResNet50 (`keras.applications`, 224x224x3, random weights: `weights=None`, nothing is
downloaded), the float, int8 and float16 LiteRT artifacts made by the conversion code the
check's child uses (`predictions.checking.conversion`), each with its size, its in-process time
per frame and frames per second (the server's `LiteRTRuntime`, 2 threads, batch 1, the median
of TIMED_RUNS invokes after a warm-up, the variants taking turns), its top-1 agreement with the
float artifact on AGREEMENT_INPUTS generated inputs (`conversion.parity_set`, as the
registration job uses when a project has too little feedback), and the ratios to float.
`measure_variants(folder)` is the same for `bench/run.py`.

Random weights make a degenerate network: every activation fades to nothing and the softmax is
uniform (top-1 is class 0 whatever the input, so any variant would "agree"). Each BatchNorm
layer's moving statistics are therefore set from one batch of generated inputs (a forward pass
in training mode with momentum 0), which gives outputs that vary with the input. They still
spread over 1000 classes with small margins, so a variant's small numeric differences flip
more top-1 answers than on a trained model: the agreement here understates a trained model's,
and a project's own feedback is what decides whether one is served.

The models are built and converted in a child process (TensorFlow stays out of this one).
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT_DIR = Path(__file__).resolve().parent.parent
if str(PROJECT_DIR) not in sys.path:
    sys.path.insert(0, str(PROJECT_DIR))

from predictions.checking.conversion import parity_set  # noqa: E402
from predictions.inference.runtime import LiteRTRuntime, median_ms_per_frame  # noqa: E402

MODELS = ("MobileNetV2", "ResNet50")
VARIANTS = ("float", "int8", "float16")
INPUT_SHAPE = (224, 224, 3)
THREADS = 2
AGREEMENT_INPUTS = 100
WARM_UP_RUNS = 3
TIMED_RUNS = 20
MIN_AGREEMENT = 0.99  # VARIANT_MIN_AGREEMENT's default: what a project needs to serve one
GOAL_RATE = 1.5  # int8 where served: at least this times the float rate ...
GOAL_SIZE = 0.35  # ... at no more than this share of its size


def measure_variants(folder: Path) -> dict:
    """Build, convert (in a child process) and measure both models; returns the JSON-able
    results, per model and variant."""
    folder = Path(folder)
    converted = _convert_in_child(folder)
    results = {
        "threads": THREADS,
        "agreement_inputs": AGREEMENT_INPUTS,
        "timed_runs": TIMED_RUNS,
        "weights": "random, BatchNorm statistics set from generated inputs",
    }
    for name in MODELS:
        results[name] = _measure_model(folder, name, converted[name])
    return results


def _measure_model(folder: Path, name: str, convert_seconds: dict) -> dict:
    runtimes = {
        v: LiteRTRuntime(str(folder / f"{name}.{v}.tflite"), threads=THREADS) for v in VARIANTS
    }
    agreed = dict.fromkeys(VARIANTS, 0)
    for model_input in parity_set(INPUT_SHAPE, scale=(0.0, 1.0), count=AGREEMENT_INPUTS, seed=1):
        answers = {
            v: int(runtime.predict(model_input[None]).argmax()) for v, runtime in runtimes.items()
        }
        for variant in VARIANTS:
            agreed[variant] += answers[variant] == answers["float"]
    speeds = _ms_per_frame(runtimes)
    measured = {}
    for variant in VARIANTS:
        size = (folder / f"{name}.{variant}.tflite").stat().st_size
        measured[variant] = {
            "size_mb": round(size / 1e6, 2),
            "ms_per_frame": round(speeds[variant], 2),
            "frames_per_s": round(1000 / speeds[variant], 1),
            "agreement": round(agreed[variant] / AGREEMENT_INPUTS, 3),
            "convert_s": convert_seconds[variant],
        }
    for variant in ("int8", "float16"):
        rate = speeds["float"] / speeds[variant]
        size = measured[variant]["size_mb"] / measured["float"]["size_mb"]
        measured[f"{variant}_vs_float"] = {"rate": round(rate, 2), "size": round(size, 3)}
    int8 = measured["int8_vs_float"]
    measured["int8_goal"] = {
        "would_be_served": measured["int8"]["agreement"] >= MIN_AGREEMENT,
        "rate_at_least": GOAL_RATE,
        "size_at_most": GOAL_SIZE,
        "met": int8["rate"] >= GOAL_RATE and int8["size"] <= GOAL_SIZE,
    }
    return measured


def _ms_per_frame(runtimes: dict) -> dict[str, float]:
    """The median ms of one batch-1 invoke per variant, the variants taking turns."""
    batch = next(parity_set(INPUT_SHAPE, scale=(0.0, 1.0), count=1, seed=2))[None]
    return median_ms_per_frame(runtimes, batch, warm_up=WARM_UP_RUNS, runs=TIMED_RUNS)


def _convert_in_child(folder: Path) -> dict:
    """Run `--convert FOLDER` in a child; returns its conversion seconds per model and variant."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, __file__, "--convert", str(folder)],
        check=True,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def convert(folder: Path) -> dict:
    """(In the child.) Build each model, seeded, set its BatchNorm statistics, export it as the
    check does and convert it to each variant: `<folder>/<model>.<variant>.tflite`."""
    import keras

    from predictions.checking import conversion
    from predictions.inference.runtime import KerasRuntime

    seconds = {}
    for name in MODELS:
        keras.utils.set_random_seed(0)
        model = getattr(keras.applications, name)(weights=None, input_shape=INPUT_SHAPE)
        _set_batchnorm_statistics(model, keras)
        saved_model = folder / f"{name}.saved_model"
        conversion.write_saved_model(KerasRuntime(model=model), saved_model)
        del model
        conversion.release_keras()
        seconds[name] = {}
        for variant in VARIANTS:
            started = time.perf_counter()
            target = folder / f"{name}.{variant}.tflite"
            conversion.convert_saved_model(saved_model, target, variant=variant)
            seconds[name][variant] = round(time.perf_counter() - started, 1)
            print(f"{name} {variant}: {seconds[name][variant]} s", file=sys.stderr)
    return seconds


def _set_batchnorm_statistics(model, keras) -> None:
    """Moving mean and variance from one batch of generated inputs (see the module's note)."""
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    batch = np.stack(list(parity_set(INPUT_SHAPE, scale=(0.0, 1.0), count=16, seed=3)))
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(batch, training=True)
    for layer, momentum in zip(layers, momenta, strict=True):
        layer.momentum = momentum


def main() -> None:
    if sys.argv[1:2] == ["--convert"]:
        print(json.dumps(convert(Path(sys.argv[2]))))
        return
    with tempfile.TemporaryDirectory(prefix="bench-variants-") as folder:
        print(json.dumps(measure_variants(Path(folder)), indent=2))


if __name__ == "__main__":
    main()
