"""What the server's own processes check of a model file: they look at it (format, sizes, a
zip's directory) and have a confined child parse the rest (`sandbox.vet_in_child`), so no
config or HDF5 structure is ever parsed in the web process, the worker or a command."""

from pathlib import Path

from django.conf import settings

from ..formats import DEFAULT_MAX_UNPACKED_BYTES, ModelFormat, format_module, sniff_file
from ..inference.errors import ModelValidationError
from .sandbox import vet_in_child

# Vetting reads a config and an HDF5 structure: quick, and far below a check's memory.
VET_TIMEOUT_SECONDS = 60
VET_MEMORY_BYTES = 1024**3


def inspect_model_file(path: Path, *, max_unpacked_bytes: int | None = None) -> ModelFormat:
    """Recognise the file's format by its content and run that format's `inspect` (nothing is
    parsed); returns the format. Raises `ModelValidationError` in words."""
    model_format = sniff_file(path)
    limit = DEFAULT_MAX_UNPACKED_BYTES if max_unpacked_bytes is None else max_unpacked_bytes
    format_module(model_format).inspect(Path(path), max_unpacked_bytes=limit)
    return model_format


def vet_model_file(path: Path, *, max_unpacked_bytes: int | None = None) -> ModelFormat:
    """`inspect_model_file`, then the format's `vet` in a confined child (the config and the
    HDF5 structure); returns the format. Raises `ModelValidationError` in words."""
    limit = DEFAULT_MAX_UNPACKED_BYTES if max_unpacked_bytes is None else max_unpacked_bytes
    model_format = inspect_model_file(path, max_unpacked_bytes=limit)
    # A flatbuffer has nothing more to read before LiteRT loads it, which the check does.
    if model_format is not ModelFormat.TFLITE:
        vet_in_child(
            Path(path),
            model_format=model_format,
            timeout=VET_TIMEOUT_SECONDS,
            memory_bytes=min(VET_MEMORY_BYTES, settings.MODEL_CHECK_MEMORY_BYTES),
            max_unpacked_bytes=limit,
        )
    return model_format


def check_labels(output_shape: tuple[int, ...], labels: list[str]) -> None:
    """Labels, when given, name the model's outputs one for one."""
    if not labels:
        return
    if len(output_shape) != 1:
        raise ModelValidationError(
            f"The model's output has shape {list(output_shape)}; labels need one score per class."
        )
    if output_shape[0] != len(labels):
        raise ModelValidationError(
            f"The model has {output_shape[0]} outputs but {len(labels)} labels were given."
        )
