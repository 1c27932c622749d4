"""The cheap checks of a model file, fit for the web process: no TensorFlow, no loading."""

from pathlib import Path

from ..formats import DEFAULT_MAX_UNPACKED_BYTES, ModelFormat, format_module, sniff_file
from ..inference.errors import ModelValidationError


def vet_model_file(path: Path, *, max_unpacked_bytes: int | None = None) -> ModelFormat:
    """Recognise the file's format by its content and run that format's static checks;
    returns the format. Raises `ModelValidationError` in words."""
    model_format = sniff_file(path)
    limit = DEFAULT_MAX_UNPACKED_BYTES if max_unpacked_bytes is None else max_unpacked_bytes
    format_module(model_format).vet(Path(path), max_unpacked_bytes=limit)
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
