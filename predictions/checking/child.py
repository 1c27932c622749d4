"""The check's child process: load a model file and compile it, away from the server.

`python -m predictions.checking.child SOURCE OUT_DIR --format F [--scale MIN MAX]
[--max-unpacked-bytes N]` prints one JSON object on its last line of stdout (the launcher
reads it). A `.keras` or `.h5` file is vetted again, loaded with Keras in safe mode, run once
on a blank input, exported to LiteRT and checked for parity (`conversion`); a model that does
not convert is still valid and is then served through Keras. The Keras model is dropped
before the converter runs, the peak of the check. A `.tflite` file is checked with
LiteRT alone (`formats.tflite.check`): that path never imports TensorFlow, which the report
says (`tensorflow_loaded`).
"""

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

from ..formats import DEFAULT_MAX_UNPACKED_BYTES, ModelFormat, format_module
from ..inference.errors import ModelValidationError, one_line


def check_model(
    source: Path,
    out_dir: Path,
    *,
    model_format: ModelFormat,
    scale: tuple[float, float] = (0.0, 1.0),
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES,
) -> dict:
    """Vet, load, inspect and (Keras formats) convert; returns the JSON-able report."""
    model_format = ModelFormat(model_format)
    try:
        module = format_module(model_format)
        module.vet(source, max_unpacked_bytes=max_unpacked_bytes)
        if model_format is ModelFormat.TFLITE:
            input_shape, output_shape, message = module.check(source)
            report = _report(input_shape, output_shape, message, runtime="litert")
        else:
            report = _check_keras(module, source, out_dir, scale)
    except ModelValidationError as exc:
        report = {"ok": False, "error": str(exc)}
    report["format"] = model_format.value
    report["tensorflow_loaded"] = "tensorflow" in sys.modules
    return report


def _check_keras(module, source: Path, out_dir: Path, scale: tuple[float, float]) -> dict:
    from . import conversion

    runtime = _load_keras(module, source)
    report = _inspect(runtime)
    inputs = conversion.parity_inputs(runtime.input_shape, scale=scale)
    saved_model = out_dir / "saved_model"
    try:
        expected = conversion.keras_outputs(runtime, inputs)
        conversion.write_saved_model(runtime, saved_model)
    except Exception as exc:  # Any conversion failure leaves the Keras path.
        return _not_compiled(report, exc)
    del runtime  # the converter needs the memory the Keras model holds
    conversion.release_keras()
    try:
        compiled = conversion.convert_saved_model(saved_model, out_dir / "compiled.tflite")
        shutil.rmtree(saved_model)
        actual = conversion.litert_outputs(compiled, inputs)
        parity = conversion.parity_difference(expected, actual)
    except Exception as exc:
        return _not_compiled(report, exc)
    report.update(runtime="litert", compiled_path=str(compiled))
    report["message"] += (
        f" Compiled to LiteRT: max abs difference {parity:.2e} on {len(inputs)} inputs."
    )
    return report


def _load_keras(module, source: Path):
    from ..inference.runtime import KerasRuntime, ModelFormatError

    try:
        return KerasRuntime(model=module.load(source))
    except ModelFormatError as exc:
        raise ModelValidationError(str(exc)) from None
    except Exception as exc:  # Keras raises many types for a file it cannot load.
        _raise_if_out_of_memory(exc, "loading it")
        raise ModelValidationError(
            f"Keras could not load the model safely: {one_line(exc)}"
        ) from None


def _inspect(runtime) -> dict:
    """One prediction on a blank input: it runs, and its output is finite."""
    import numpy as np

    blank = np.zeros((1, *runtime.input_shape), dtype=np.float32)
    started = time.perf_counter()
    try:
        output = runtime.predict(blank)
    except Exception as exc:
        _raise_if_out_of_memory(exc, "running it")
        raise ModelValidationError(f"The model failed on a blank input: {one_line(exc)}") from None
    elapsed_ms = (time.perf_counter() - started) * 1000
    if not np.isfinite(output).all():
        raise ModelValidationError("The model's output on a blank input is not finite.")
    h, w, c = runtime.input_shape
    output_shape = tuple(int(dim) for dim in output.shape[1:])
    message = (
        f"Loaded with Keras (safe mode): input {h}x{w}x{c}, output {list(output_shape)}, "
        f"blank prediction in {elapsed_ms:.1f} ms."
    )
    return _report(runtime.input_shape, output_shape, message, runtime="keras")


def _not_compiled(report: dict, exc: Exception) -> dict:
    """A model that does not convert is served through Keras; one that ran out of memory
    while converting is not (it would convert with more)."""
    _raise_if_out_of_memory(exc, "converting it to LiteRT")
    report["message"] += f" Not compiled to LiteRT ({one_line(exc)}): served through Keras."
    return report


def _raise_if_out_of_memory(exc: Exception, doing: str) -> None:
    if isinstance(exc, MemoryError) or "bad_alloc" in str(exc):
        limit, _ = resource.getrlimit(resource.RLIMIT_DATA)
        within = f" (limit {limit >> 20} MB)" if limit != resource.RLIM_INFINITY else ""
        raise ModelValidationError(
            f"The model check ran out of memory{within} while {doing}: give the check more "
            "memory (MODEL_CHECK_MEMORY_BYTES)."
        ) from None


def _report(input_shape, output_shape, message: str, *, runtime: str) -> dict:
    return {
        "ok": True,
        "input_shape": list(input_shape),
        "output_shape": list(output_shape),
        "runtime": runtime,
        "compiled_path": None,
        "message": message,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--format", required=True, choices=[f.value for f in ModelFormat])
    parser.add_argument("--scale", nargs=2, type=float, default=(0.0, 1.0))
    parser.add_argument("--max-unpacked-bytes", type=int, default=DEFAULT_MAX_UNPACKED_BYTES)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    report = check_model(
        args.source,
        args.out_dir,
        model_format=ModelFormat(args.format),
        scale=tuple(args.scale),
        max_unpacked_bytes=args.max_unpacked_bytes,
    )
    sys.stdout.write("\n" + json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
