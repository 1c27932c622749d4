"""Checking and compiling a model file, once per file: the parent side of inference/compile.py.

The child's report for a file (keyed by its sha256 and the input range of the parity check) is
kept beside the file in the local model cache, so registering the same file again (new labels,
another project) needs no second TensorFlow start. Labels are checked here, against the
report's output shape, so the report does not depend on them.
"""

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from .inference.archive import check_keras_archive
from .inference.compile import compile_in_child
from .inference.validation import ModelValidationError, check_labels
from .storage import file_cache


@dataclass(frozen=True)
class CompileReport:
    input_shape: tuple[int, int, int]
    output_shape: tuple[int, ...]
    runtime: str  # "litert" or "keras"
    compiled_path: Path | None  # the LiteRT flatbuffer in the local cache, when it converted
    compiled_sha256: str
    message: str


def check_and_compile(
    *, path: Path, sha256: str, labels: list[str], scale: tuple[float, float]
) -> CompileReport:
    """Validate a cached model file and compile it to LiteRT; raises `ModelValidationError`."""
    # Cheap, and before anything loads the file.
    check_keras_archive(str(path), max_uncompressed_bytes=settings.MODEL_MAX_UNPACKED_BYTES)
    cache = file_cache()
    report_path = cache.directory / f"{sha256}.check-{scale[0]:g}-{scale[1]:g}.json"
    if report_path.exists():
        report = json.loads(report_path.read_text())
    else:
        report = _run_child(path, scale)
        report_path.write_text(json.dumps(report))
    if not report["ok"]:
        raise ModelValidationError(report["error"])
    output_shape = tuple(report["output_shape"])
    check_labels(output_shape, labels)
    compiled_path = None
    if report.get("compiled_sha256"):
        compiled_path = cache.directory / f"{report['compiled_sha256']}.tflite"
        if not compiled_path.exists():  # The cache was cleared: compile again.
            report_path.unlink()
            return check_and_compile(path=path, sha256=sha256, labels=labels, scale=scale)
    return CompileReport(
        input_shape=tuple(report["input_shape"]),
        output_shape=output_shape,
        runtime=report["runtime"],
        compiled_path=compiled_path,
        compiled_sha256=report.get("compiled_sha256", ""),
        message=report["message"],
    )


def _run_child(path: Path, scale: tuple[float, float]) -> dict:
    with tempfile.TemporaryDirectory(prefix="compile-") as out_dir:
        report = compile_in_child(
            str(path),
            out_dir,
            scale=scale,
            timeout=settings.MODEL_CHECK_TIMEOUT,
            memory_bytes=settings.MODEL_CHECK_MEMORY_BYTES,
        )
        compiled = report.pop("compiled_path", None)
        if compiled:
            with open(compiled, "rb") as handle:
                _, report["compiled_sha256"], _ = file_cache().add(handle, suffix=".tflite")
    return report
