"""Keras 3 `.keras` archives (zip files): static checks, and the load the check's child runs.

`inspect` (the server's own look, from the zip's directory alone) checks the layout: only
`config.json`, `metadata.json`, `model.weights.h5` and `assets/`; few members; no absolute or
`..` paths; a bounded unpacked size and compression ratio. `vet` (in the check's child, before
anything loads the archive) also parses and walks the whole `config.json`
(`config.check_config_text`) and reads `model.weights.h5`'s structure, which may not reach
outside the file (`config.check_hdf5_structure`), with `zipfile`, `json` and `h5py` only.
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
# What zipfile raises for a damaged archive, besides BadZipFile.
ZIP_ERRORS = (zipfile.BadZipFile, ValueError, EOFError, NotImplementedError)
# Keras stores its members uncompressed; a deflated model compresses a little. A member that
# unpacks to more than this many times its packed size (past COMPRESSION_FLOOR_BYTES) is a
# zip bomb, not a model.
MAX_COMPRESSION_RATIO = 100
COMPRESSION_FLOOR_BYTES = 1024 * 1024


def inspect(path: Path, *, max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES) -> None:
    """Refuse anything but a plain Keras 3 archive, from its zip directory alone (the server's
    own look: no member is read)."""
    with _open(path) as archive:
        _check_members(archive.infolist(), max_unpacked_bytes)


def vet(path: Path, *, max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES) -> None:
    """`inspect`, then the whole config (only Keras's own objects) and the weights' structure;
    in the check's child only."""
    with _open(path) as archive:
        _check_members(archive.infolist(), max_unpacked_bytes)
        try:
            config_info = archive.getinfo("config.json")
            if config_info.file_size > MAX_CONFIG_BYTES:
                raise ModelValidationError(
                    "The archive's config.json is too large to be a model config."
                )
            config_text = archive.read(config_info)
            if "model.weights.h5" in archive.namelist():
                with archive.open("model.weights.h5") as weights:
                    _check_weights(weights)
        except ZIP_ERRORS as exc:
            raise ModelValidationError(f"The `.keras` archive is damaged: {exc}") from None
    check_config_text(config_text, source="archive's config.json")


def load(path: Path):
    """Load the archive with Keras 3 in safe mode, uncompiled (in the check's child only)."""
    import keras

    return keras.saving.load_model(str(path), compile=False, safe_mode=True)


def _open(path: Path) -> zipfile.ZipFile:
    if not zipfile.is_zipfile(path):
        raise ModelValidationError("The file is not a `.keras` archive (a zip file).")
    try:
        return zipfile.ZipFile(path)
    except ZIP_ERRORS as exc:
        raise ModelValidationError(f"The `.keras` archive is damaged: {exc}") from None


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
        packed = max(member.compress_size, 1)
        if member.file_size > max(COMPRESSION_FLOOR_BYTES, MAX_COMPRESSION_RATIO * packed):
            raise ModelValidationError(
                f"The archive's member {name!r} unpacks to {member.file_size} bytes from "
                f"{member.compress_size}: more than {MAX_COMPRESSION_RATIO} times, refused."
            )
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
