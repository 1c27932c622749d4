"""The parent's end of a model check: look at the file, run the child (`sandbox.run_child`)
once per file, keep its artifact in the local model cache.

The server process never imports TensorFlow: the child loads and converts the model. The
child's report for a file (keyed by its sha256 and the input range of the parity check) is
kept beside the file in the local model cache, so registering the same file again (new labels,
another project) needs no second check. Labels are checked here, against the report's output
shape, so the report does not depend on them. The child's artifact is taken from its
directory only as `sandbox.open_artifact` allows, and only with the hash it reported.
"""

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from ..formats import ModelFormat
from ..inference.errors import ModelValidationError
from .sandbox import open_artifact, run_child
from .vetting import check_labels, inspect_model_file


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
    """Check and compile a cached model file in the child, which vets it first (or reuse the
    report of an earlier check of the same file); raises `ModelValidationError` in words."""
    from ..storage import file_cache  # the ORM: not at module level (the child imports this)

    # Cheap, and before the child starts; the child parses the rest.
    model_format = inspect_model_file(path, max_unpacked_bytes=settings.MODEL_MAX_UNPACKED_BYTES)
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
        out_dir = Path(out_dir)
        report = run_child(
            path,
            out_dir,
            model_format=model_format,
            scale=scale,
            timeout=settings.MODEL_CHECK_TIMEOUT,
            memory_bytes=settings.MODEL_CHECK_MEMORY_BYTES,
            max_unpacked_bytes=settings.MODEL_MAX_UNPACKED_BYTES,
        )
        compiled = report.pop("compiled_path", None)
        if not report["ok"]:
            return report
        if model_format is ModelFormat.TFLITE:
            # The source is the artifact (this process's own file), stored like a converted one.
            if not (_cache_directory() / f"{sha256}.tflite").exists():
                with open(path, "rb") as source:
                    _cache_artifact(source, expected_sha256=sha256)
            report["compiled_sha256"] = sha256
        elif compiled:
            # Hashed as it is copied, even when the cache holds that hash already: the child's
            # word alone must not point a version at another model's artifact.
            size, expected = report.pop("artifact_bytes"), report.pop("artifact_sha256")
            with open_artifact(out_dir, compiled, size=size) as artifact:
                report["compiled_sha256"] = _cache_artifact(artifact, expected_sha256=expected)
    return report


def _cache_directory() -> Path:
    from ..storage import file_cache

    return file_cache().directory


def _cache_artifact(handle, *, expected_sha256: str) -> str:
    """Copy a LiteRT flatbuffer into the cache as `<sha256>.tflite`, refusing it unless its
    hash is `expected_sha256`; returns that hash."""
    from ..storage import HashMismatch, file_cache

    cache = file_cache()
    try:
        _, sha256, _ = cache.add(handle, suffix=".tflite", expected_sha256=expected_sha256)
    except HashMismatch:
        raise ModelValidationError(
            "The model check's artifact does not match the hash it reported: refused."
        ) from None
    return sha256
