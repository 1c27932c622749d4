"""The parent's end of a model check: vet the file, run the child (`sandbox.run_child`) once
per file, keep its artifact in the local model cache.

The server process never imports TensorFlow: the child loads and converts the model. The
child's report for a file (keyed by its sha256 and the input range of the parity check) is
kept beside the file in the local model cache, so registering the same file again (new labels,
another project) needs no second check. Labels are checked here, against the report's output
shape, so the report does not depend on them.
"""

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from ..formats import ModelFormat
from ..inference.errors import ModelValidationError
from .sandbox import run_child
from .vetting import check_labels, vet_model_file


@dataclass(frozen=True)
class CompileReport:
    input_shape: tuple[int, int, int]
    output_shape: tuple[int, ...]
    runtime: str  # "litert" or "keras"
    compiled_path: Path | None  # the LiteRT flatbuffer in the local cache (a `.tflite` source)
    compiled_sha256: str
    message: str
    format: str  # the source's ModelFormat value


def check_and_compile(
    *, path: Path, sha256: str, labels: list[str], scale: tuple[float, float]
) -> CompileReport:
    """Vet a cached model file, check and compile it in the child (or reuse the report of an
    earlier check of the same file); raises `ModelValidationError` in words."""
    from ..storage import file_cache  # the ORM: not at module level (the child imports this)

    # Cheap, and before anything loads the file.
    model_format = vet_model_file(path, max_unpacked_bytes=settings.MODEL_MAX_UNPACKED_BYTES)
    cache = file_cache()
    report_path = cache.directory / f"{sha256}.check-{scale[0]:g}-{scale[1]:g}.json"
    if report_path.exists():
        report = json.loads(report_path.read_text())
    else:
        report = _check_in_child(Path(path), sha256, model_format, scale)
        report_path.write_text(json.dumps(report))
    if not report["ok"]:
        raise ModelValidationError(report["error"])
    output_shape = tuple(report["output_shape"])
    check_labels(output_shape, labels)
    compiled_path = None
    if report.get("compiled_sha256"):
        compiled_path = cache.directory / f"{report['compiled_sha256']}.tflite"
        if not compiled_path.exists():  # The cache was cleared: check again.
            report_path.unlink()
            return check_and_compile(path=path, sha256=sha256, labels=labels, scale=scale)
    return CompileReport(
        input_shape=tuple(report["input_shape"]),
        output_shape=output_shape,
        runtime=report["runtime"],
        compiled_path=compiled_path,
        compiled_sha256=report.get("compiled_sha256", ""),
        message=report["message"],
        format=model_format.value,
    )


def _check_in_child(
    path: Path, sha256: str, model_format: ModelFormat, scale: tuple[float, float]
) -> dict:
    """The child's report, its artifact copied into the cache (`compiled_sha256`)."""
    with tempfile.TemporaryDirectory(prefix="model-check-") as out_dir:
        report = run_child(
            path,
            Path(out_dir),
            model_format=model_format,
            scale=scale,
            timeout=settings.MODEL_CHECK_TIMEOUT,
            memory_bytes=settings.MODEL_CHECK_MEMORY_BYTES,
            max_unpacked_bytes=settings.MODEL_MAX_UNPACKED_BYTES,
        )
        compiled = report.pop("compiled_path", None)
        if report.get("ok") and model_format is ModelFormat.TFLITE:
            compiled = path  # the source is the artifact, stored like a converted one
        if compiled and report.get("ok"):
            expected = sha256 if model_format is ModelFormat.TFLITE else None
            report["compiled_sha256"] = _cache_artifact(Path(compiled), expected_sha256=expected)
    return report


def _cache_artifact(path: Path, *, expected_sha256: str | None) -> str:
    """Copy a LiteRT flatbuffer into the cache as `<sha256>.tflite`; returns its sha256."""
    from ..storage import file_cache

    cache = file_cache()
    if expected_sha256 and (cache.directory / f"{expected_sha256}.tflite").exists():
        return expected_sha256
    with open(path, "rb") as handle:
        _, sha256, _ = cache.add(handle, suffix=".tflite", expected_sha256=expected_sha256)
    return sha256
