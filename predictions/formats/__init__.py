"""The model file formats this server registers, known from a file's content.

One module a format, each with the same small interface: `inspect(path, *,
max_unpacked_bytes)` is the server's own look at the file (its signature, sizes, a zip's
directory: nothing is parsed), `vet(path, *, max_unpacked_bytes)` checks the whole file without
loading it (its config and structure: run in the check's child processes, never in the
server), and the check's child calls `load(path)` (Keras formats) or `check(path)` (LiteRT).
"""

import enum
from pathlib import Path

from ..inference.errors import ModelValidationError


class ModelFormat(enum.StrEnum):
    KERAS = "keras"  # a Keras 3 `.keras` archive (a zip)
    H5 = "h5"  # a legacy HDF5 model saved by Keras 2 / tf.keras, or Keras 3's legacy writer
    TFLITE = "tflite"  # a LiteRT (TFLite) flatbuffer converted elsewhere

    @property
    def suffix(self) -> str:
        """The file name ending Keras and LiteRT expect for this format."""
        return f".{self.value}"


ACCEPTED_FORMATS_TEXT = (
    "a Keras 3 `.keras` archive, a legacy Keras HDF5 `.h5` model, or a LiteRT `.tflite` flatbuffer"
)
HEAD_BYTES = 16  # what `sniff_format` needs of a file
ZIP_SIGNATURE = b"PK\x03\x04"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
TFLITE_IDENTIFIER = b"TFL3"  # the flatbuffer's file identifier, after its 4-byte root offset

# Far above any model this server is meant for; the server's setting is usually lower.
DEFAULT_MAX_UNPACKED_BYTES = 2 * 1024**3


def sniff_format(head: bytes) -> ModelFormat:
    """The format of a file from its first `HEAD_BYTES` bytes; raises `ModelValidationError`
    naming the accepted formats when it is none of them."""
    if head.startswith(ZIP_SIGNATURE):
        return ModelFormat.KERAS
    if head.startswith(HDF5_SIGNATURE):
        return ModelFormat.H5
    if head[4:8] == TFLITE_IDENTIFIER:
        return ModelFormat.TFLITE
    raise ModelValidationError(
        f"This file is not a model this server reads: send {ACCEPTED_FORMATS_TEXT}."
    )


def sniff_file(path: Path) -> ModelFormat:
    """`sniff_format` of a file on disk."""
    with open(path, "rb") as handle:
        return sniff_format(handle.read(HEAD_BYTES))


def format_module(model_format: ModelFormat):
    """The module of a format: `inspect`, `vet`, and `load` (Keras formats) or `check`
    (LiteRT)."""
    from . import hdf5, keras_archive, tflite

    modules = {ModelFormat.KERAS: keras_archive, ModelFormat.H5: hdf5, ModelFormat.TFLITE: tflite}
    return modules[ModelFormat(model_format)]


def check_file_size(path: Path, *, max_bytes: int, what: str) -> None:
    """Refuse a file larger than `max_bytes`, in words."""
    size = Path(path).stat().st_size
    if size > max_bytes:
        raise ModelValidationError(f"The {what} is {size} bytes; the limit is {max_bytes}.")
