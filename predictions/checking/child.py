"""The check's child process: vet a model file, load it and compile it, away from the server.

`python -m predictions.checking.child SOURCE [OUT_DIR] --format F [--scale MIN MAX]
[--max-unpacked-bytes N] [--vet-only]` prints one JSON object on its last line of stdout (the
sandbox reads it back); `sandbox` starts it confined, in OUT_DIR. With `--vet-only` it only
vets the file (`vet_model`: its config and structure, with json and h5py), which is how the
server's own processes have a file vetted without parsing it themselves. Otherwise a `.keras`
or `.h5` file is vetted, loaded with Keras in safe mode, run once
on a blank input, exported to LiteRT and checked for parity (`conversion`), then converted
again to smaller variants (int8 and float16 weights: one that does not convert is left out,
with the reason); a model that does not convert, or whose LiteRT answers differ from Keras's,
fails in words naming why (the web process serves LiteRT only, so Keras never runs there).
The Keras model is dropped before the converter runs, the peak of the check. A `.tflite`
file is checked with LiteRT alone (`formats.tflite.check`; it has no variants): that path
never imports TensorFlow, which the report says (`tensorflow_loaded`).
"""

import argparse
import hashlib
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
    if report.get("compiled_path"):
        report.update(_artifact_digest(Path(report["compiled_path"])))
    report["format"] = model_format.value
    report["tensorflow_loaded"] = "tensorflow" in sys.modules
    return report


def vet_model(
    source: Path, *, model_format: ModelFormat, max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES
) -> dict:
    """The format's static checks only (no Keras, no TensorFlow); returns the report."""
    try:
        format_module(model_format).vet(source, max_unpacked_bytes=max_unpacked_bytes)
    except ModelValidationError as exc:
        return {"ok": False, "error": str(exc), "format": ModelFormat(model_format).value}
    return {"ok": True, "format": ModelFormat(model_format).value}


def _artifact_digest(path: Path) -> dict:
    """The artifact's sha256 and size, which the parent checks the file it takes against."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return {"artifact_sha256": digest.hexdigest(), "artifact_bytes": path.stat().st_size}


def _check_keras(module, source: Path, out_dir: Path, scale: tuple[float, float]) -> dict:
    from . import conversion

    runtime = _load_keras(module, source)
    report = _inspect(runtime)
    inputs = conversion.parity_inputs(runtime.input_shape, scale=scale)
    saved_model = out_dir / "saved_model"
    try:
        expected = conversion.keras_outputs(runtime, inputs)
        conversion.write_saved_model(runtime, saved_model)
    except Exception as exc:  # an export that fails is a model that does not convert
        raise _not_converted(exc) from None
    del runtime  # the converter needs the memory the Keras model holds
    conversion.release_keras()
    try:
        compiled = conversion.convert_saved_model(saved_model, out_dir / "compiled.tflite")
        actual = conversion.litert_outputs(compiled, inputs)
        parity = conversion.parity_difference(expected, actual)
    except Exception as exc:
        raise _not_converted(exc) from None
    variants = _convert_variants(saved_model, out_dir, inputs, expected.shape)
    shutil.rmtree(saved_model)
    report.update(runtime="litert", compiled_path=str(compiled), variants=variants)
    report["message"] += (
        f" Compiled to LiteRT: max abs difference {parity:.2e} on {len(inputs)} inputs."
    )
    return report


def _convert_variants(saved_model: Path, out_dir: Path, inputs, output_shape) -> dict:
    """The smaller variants (`conversion.SMALLER_VARIANTS`), each run once on the parity
    inputs: `{"int8": {"path", "artifact_sha256", "artifact_bytes"}, "float16": {"error":
    "<why there is none>"}}`. A variant that does not convert or run is left out with the
    reason; the version does not depend on its variants."""
    import numpy as np

    from . import conversion

    variants = {}
    for variant in conversion.SMALLER_VARIANTS:
        target = out_dir / f"compiled.{variant}.tflite"
        try:
            conversion.convert_saved_model(saved_model, target, variant=variant)
            outputs = conversion.litert_outputs(target, inputs)
            if outputs.shape != output_shape or not np.isfinite(outputs).all():
                raise ValueError("its outputs on the parity inputs are not finite, or misshapen")
        except Exception as exc:  # also out of memory: the float artifact is what must exist
            target.unlink(missing_ok=True)
            reason = conversion.not_converted(exc)
            variants[variant] = {"error": f"The {variant} variant was not made: {reason}."}
            continue
        variants[variant] = {"path": target.name, **_artifact_digest(target)}
    return variants


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


def _not_converted(exc: Exception) -> ModelValidationError:
    """A model that does not convert to LiteRT (or not faithfully) fails its check: the
    server would otherwise have to run TensorFlow, and the file, in its own process."""
    from . import conversion

    _raise_if_out_of_memory(exc, "converting it to LiteRT")
    return ModelValidationError(
        f"The model did not convert to LiteRT: {conversion.not_converted(exc)}. This server "
        "serves LiteRT only: rebuild the model from layers that convert, or register a "
        "`.tflite` made with builtin ops."
    )


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
    parser.add_argument("out_dir", type=Path, nargs="?", default=Path("."))
    parser.add_argument("--format", required=True, choices=[f.value for f in ModelFormat])
    parser.add_argument("--scale", nargs=2, type=float, default=(0.0, 1.0))
    parser.add_argument("--max-unpacked-bytes", type=int, default=DEFAULT_MAX_UNPACKED_BYTES)
    parser.add_argument("--vet-only", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    model_format = ModelFormat(args.format)
    if args.vet_only:
        report = vet_model(
            args.source, model_format=model_format, max_unpacked_bytes=args.max_unpacked_bytes
        )
    else:
        report = check_model(
            args.source,
            args.out_dir,
            model_format=model_format,
            scale=tuple(args.scale),
            max_unpacked_bytes=args.max_unpacked_bytes,
        )
    sys.stdout.write("\n" + json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
