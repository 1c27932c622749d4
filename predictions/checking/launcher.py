"""The parent's end of a model check: look at the file, run the child (`sandbox.run_child`)
once per file, keep its artifact in the local model cache.

The server process never imports TensorFlow: the child loads and converts the model. The
child's report for a file (keyed by its sha256 and the input range of the parity check) is
kept beside the file in the local model cache, so registering the same file again (new labels,
another project) needs no second check. Labels are checked here, against the report's output
shape, so the report does not depend on them. The child's artifacts (the float one and its
smaller variants) are taken from its directory only as `sandbox.open_artifact` allows, and
only with the hashes it reported.
"""

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from ..formats import ModelFormat
from ..inference.errors import ModelValidationError
from .sandbox import open_artifact, run_child
from .vetting import check_labels, inspect_model_file


@dataclass(frozen=True)
class VariantArtifact:
    """A smaller variant of the compiled artifact (int8 or float16 weights): its file in the
    local cache, or why there is none."""

    path: Path | None
    sha256: str = ""
    error: str = ""


@dataclass(frozen=True)
class CompileReport:
    input_shape: tuple[int, int, int]
    output_shape: tuple[int, ...]
    runtime: str  # "litert" or "keras"
    compiled_path: Path | None  # the LiteRT flatbuffer in the local cache (a `.tflite` source)
    compiled_sha256: str
    message: str
    format: str  # the source's ModelFormat value
    variants: dict[str, VariantArtifact] = field(default_factory=dict)  # by `Variant` value


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
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    if report is None or _before_variants(report, model_format):
        report = _check_in_child(Path(path), sha256, model_format, scale)
        report_path.write_text(json.dumps(report))
    if not report["ok"]:
        raise ModelValidationError(report["error"])
    output_shape = tuple(report["output_shape"])
    check_labels(output_shape, labels)
    compiled_path = None
    if report.get("compiled_sha256"):
        compiled_path = cache.directory / f"{report['compiled_sha256']}.tflite"
    variants = {
        variant: VariantArtifact(cache.directory / f"{entry['sha256']}.tflite", entry["sha256"])
        if "sha256" in entry
        else VariantArtifact(None, error=entry["error"])
        for variant, entry in report.get("variants", {}).items()
    }
    artifacts = [compiled_path] + [variant.path for variant in variants.values()]
    if any(artifact and not artifact.exists() for artifact in artifacts):
        report_path.unlink()  # The cache was cleared: check again.
        return check_and_compile(path=path, sha256=sha256, labels=labels, scale=scale)
    return CompileReport(
        input_shape=tuple(report["input_shape"]),
        output_shape=output_shape,
        runtime=report["runtime"],
        compiled_path=compiled_path,
        compiled_sha256=report.get("compiled_sha256", ""),
        message=report["message"],
        format=model_format.value,
        variants=variants,
    )


def _before_variants(report: dict, model_format: ModelFormat) -> bool:
    """A kept report of a converted model from before variants were made: checked again."""
    converted = report["ok"] and model_format is not ModelFormat.TFLITE
    return converted and "variants" not in report


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
            report["variants"] = {
                variant: _cache_variant(out_dir, entry)
                for variant, entry in report.get("variants", {}).items()
            }
    return report


def _cache_variant(out_dir: Path, entry: dict) -> dict:
    """A smaller variant's artifact copied into the cache, as the float one is: `{"sha256"}`,
    or the child's `{"error"}` when it made none."""
    if "error" in entry:
        return entry
    with open_artifact(out_dir, entry["path"], size=entry["artifact_bytes"]) as artifact:
        return {"sha256": _cache_artifact(artifact, expected_sha256=entry["artifact_sha256"])}


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
