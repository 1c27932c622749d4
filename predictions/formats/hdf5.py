"""Legacy HDF5 `.h5` models (Keras 2 / tf.keras, or Keras 3's legacy writer): static checks,
and the load the check's child runs.

`inspect` (the server's own look) checks only the signature and the size: HDF5 is parsed by a
large C library, so the server leaves it to the check's child, whose `vet` reads the structure
and walks the config before anything loads the file.

The model's config is JSON in the file's root attribute `model_config`; its weights sit under
`model_weights`. Both writers name Keras's own objects `keras...` (`keras.initializers`,
`keras.layers`, `keras` for Keras 3's dtype policies); a `Lambda` layer carries marshalled
Python bytecode and its defining module (`__main__`), so the config walk refuses it as it
does in `.keras` archives. The file is read with h5py only: nothing here goes through Keras.
"""

from pathlib import Path

from ..inference.errors import ModelValidationError
from . import DEFAULT_MAX_UNPACKED_BYTES, HDF5_SIGNATURE, check_file_size
from .config import MAX_CONFIG_BYTES, check_config_text, check_hdf5_structure

CONFIG_ATTRIBUTE = "model_config"


def inspect(path: Path, *, max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES) -> None:
    """The HDF5 signature and the file's size (the server's own look: nothing is parsed)."""
    with open(path, "rb") as handle:
        if handle.read(len(HDF5_SIGNATURE)) != HDF5_SIGNATURE:
            raise ModelValidationError("The file is not an HDF5 file.")
    check_file_size(path, max_bytes=max_unpacked_bytes, what="HDF5 file")


def vet(path: Path, *, max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES) -> None:
    """Refuse an HDF5 file that is not a whole Keras model naming only Keras's own objects, or
    that reaches outside itself, or whose data exceeds `max_unpacked_bytes`; in the check's
    child only."""
    import h5py

    inspect(path, max_unpacked_bytes=max_unpacked_bytes)
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise ModelValidationError(f"The file is not a readable HDF5 file: {exc}") from None
    with handle:
        config_text = _model_config(handle)
        unpacked = check_hdf5_structure(handle, what="HDF5 model")
    if unpacked > max_unpacked_bytes:
        raise ModelValidationError(
            f"The HDF5 model holds {unpacked} bytes of data; the limit is {max_unpacked_bytes}."
        )
    check_config_text(config_text, source="HDF5 file's model_config")


def load(path: Path):
    """Load the model with Keras 3 in safe mode, uncompiled (in the check's child only). Keras
    picks its legacy HDF5 loader by the name, so `path` must end with `.h5`."""
    import keras

    if not str(path).endswith(".h5"):
        raise ValueError(f"{path} must end with .h5 for Keras to read it as HDF5")
    return keras.models.load_model(str(path), compile=False, safe_mode=True)


def _model_config(handle) -> str | bytes:
    if CONFIG_ATTRIBUTE not in handle.attrs:
        raise ModelValidationError(
            "This HDF5 file holds weights but no model (it has no model_config): save the "
            'whole model with model.save("name.h5"), or better model.save("name.keras").'
        )
    stored = handle.attrs.get_id(CONFIG_ATTRIBUTE).get_storage_size()
    if stored > MAX_CONFIG_BYTES:
        raise ModelValidationError(
            "The HDF5 file's model_config is too large to be a model config."
        )
    config = handle.attrs[CONFIG_ATTRIBUTE]
    if hasattr(config, "tobytes") and getattr(config, "ndim", 0) == 0:  # a numpy scalar
        config = config.item()
    if not isinstance(config, str | bytes):
        raise ModelValidationError("The HDF5 file's model_config is not JSON text.")
    return config
