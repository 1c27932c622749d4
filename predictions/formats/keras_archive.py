"""Keras 3 `.keras` archives (zip files): static checks, and the load the check's child runs.

Before anything loads an archive, its layout is checked (only `config.json`, `metadata.json`,
`model.weights.h5` and `assets/`; few members; no absolute or `..` paths; a bounded unpacked
size), its whole `config.json` is walked (`config.check_config_text`) and `model.weights.h5`
may not reach outside the file (`config.check_hdf5_structure`), with `zipfile`, `json` and
`h5py` only.
"""

import zipfile
from pathlib import Path, PurePosixPath

from ..inference.errors import ModelValidationError
from . import DEFAULT_MAX_UNPACKED_BYTES
from .config import MAX_CONFIG_BYTES, check_config_text, check_hdf5_structure

REQUIRED_MEMBERS = {"config.json", "metadata.json"}
ALLOWED_MEMBERS = REQUIRED_MEMBERS | {"model.weights.h5"}
ALLOWED_PREFIX = "assets/"
MAX_MEMBERS = 64


def vet(path: Path, *, max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES) -> None:
    """Refuse anything but a plain Keras 3 archive whose config names only Keras's own objects."""
    if not zipfile.is_zipfile(path):
        raise ModelValidationError("The file is not a `.keras` archive (a zip file).")
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            _check_members(members, max_unpacked_bytes)
            config_info = archive.getinfo("config.json")
            if config_info.file_size > MAX_CONFIG_BYTES:
                raise ModelValidationError(
                    "The archive's config.json is too large to be a model config."
                )
            config_text = archive.read(config_info)
            if "model.weights.h5" in archive.namelist():
                with archive.open("model.weights.h5") as weights:
                    _check_weights(weights)
    except zipfile.BadZipFile as exc:
        raise ModelValidationError(f"The `.keras` archive is damaged: {exc}") from None
    check_config_text(config_text, source="archive's config.json")


def load(path: Path):
    """Load the archive with Keras 3 in safe mode, uncompiled (in the check's child only)."""
    import keras

    return keras.saving.load_model(str(path), compile=False, safe_mode=True)


def _check_members(members: list[zipfile.ZipInfo], max_unpacked_bytes: int) -> None:
    if len(members) > MAX_MEMBERS:
        raise ModelValidationError(
            f"The archive has {len(members)} members; a model has a handful."
        )
    missing = REQUIRED_MEMBERS - {member.filename for member in members}
    if missing:
        raise ModelValidationError(
            f"The archive is not a `.keras` model: it lacks {', '.join(sorted(missing))}."
        )
    for member in members:
        name = member.filename
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or "\\" in name:
            raise ModelValidationError(f"The archive holds a member with an unsafe path: {name!r}.")
        if name not in ALLOWED_MEMBERS and not name.startswith(ALLOWED_PREFIX):
            raise ModelValidationError(f"The archive holds an unexpected member: {name!r}.")
    total = sum(member.file_size for member in members)
    if total > max_unpacked_bytes:
        raise ModelValidationError(
            f"The archive unpacks to {total} bytes; the limit is {max_unpacked_bytes}."
        )


def _check_weights(weights) -> None:
    """No dataset or link in the weights may reach outside the file."""
    import h5py

    try:
        handle = h5py.File(weights, "r")
    except OSError as exc:
        raise ModelValidationError(
            f"The archive's model.weights.h5 is not a readable HDF5 file: {exc}"
        ) from None
    with handle:
        check_hdf5_structure(handle, what="weights in model.weights.h5")
