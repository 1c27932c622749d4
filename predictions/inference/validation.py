"""Checking a model file before it may be served."""

import time
from dataclasses import dataclass, field

import numpy as np

from .archive import check_keras_archive
from .errors import ModelValidationError, one_line
from .runtime import KerasRuntime, ModelFormatError

__all__ = ["ModelInspection", "ModelValidationError", "check_labels", "inspect_model_file"]


@dataclass(frozen=True)
class ModelInspection:
    input_shape: tuple[int, int, int]
    output_shape: tuple[int, ...]
    runtime: str
    message: str
    model: object = field(default=None, repr=False, compare=False)  # the loaded Keras model


def inspect_model_file(path: str) -> ModelInspection:
    """Check the archive, load it with Keras in safe mode, run one prediction on a blank input."""
    check_keras_archive(path)
    try:
        runtime = KerasRuntime(path)
    except ModelFormatError as exc:
        raise ModelValidationError(str(exc)) from None
    except Exception as exc:  # Keras raises many types for a file it cannot load.
        raise ModelValidationError(
            f"Keras could not load the model safely: {one_line(exc)}"
        ) from None

    blank = np.zeros((1, *runtime.input_shape), dtype=np.float32)
    started = time.perf_counter()
    try:
        output = runtime.predict(blank)
    except Exception as exc:
        raise ModelValidationError(f"The model failed on a blank input: {one_line(exc)}") from None
    elapsed_ms = (time.perf_counter() - started) * 1000
    if not np.isfinite(output).all():
        raise ModelValidationError("The model's output on a blank input is not finite.")
    output_shape = tuple(int(dim) for dim in output.shape[1:])
    h, w, c = runtime.input_shape
    message = (
        f"Loaded with Keras (safe mode): input {h}x{w}x{c}, output {list(output_shape)}, "
        f"blank prediction in {elapsed_ms:.1f} ms."
    )
    return ModelInspection(runtime.input_shape, output_shape, runtime.name, message, runtime.model)


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
