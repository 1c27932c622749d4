"""Static checks of a `.keras` archive, before anything loads it.

Keras `safe_mode` only blocks `Lambda` deserialization and has been bypassed repeatedly
(CVE-2025-1550: a config naming any module; CVE-2025-9906: a config that calls
`enable_unsafe_deserialization`; CVE-2026-1462: `TFSMLayer` loading a foreign SavedModel;
CVE-2025-12058: lookup layers reading vocabulary files or URLs), and an HDF5 weights file can
point at other files (external datasets and links). So the archive's layout, its whole
`config.json` and the structure of `model.weights.h5` are checked here first, with `zipfile`,
`json` and `h5py` (which reads the structure without following any of it).
"""

import json
import zipfile
from pathlib import PurePosixPath

from .errors import ModelValidationError as ArchiveError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
REQUIRED_MEMBERS = {"config.json", "metadata.json"}
ALLOWED_MEMBERS = REQUIRED_MEMBERS | {"model.weights.h5"}
ALLOWED_PREFIX = "assets/"
MAX_MEMBERS = 64
MAX_CONFIG_BYTES = 16 * 1024 * 1024
FORBIDDEN_CLASSES = {"Lambda", "TFSMLayer", "TorchModuleWrapper"}
LOOKUP_CLASSES = {"StringLookup", "IntegerLookup", "TextVectorization"}
FORBIDDEN_TEXT = "enable_unsafe_deserialization"


# Far above any model this server is meant for; the server's setting is usually lower.
DEFAULT_MAX_UNCOMPRESSED_BYTES = 2 * 1024**3


def check_keras_archive(
    path: str, *, max_uncompressed_bytes: int = DEFAULT_MAX_UNCOMPRESSED_BYTES
) -> None:
    """Refuse anything but a plain Keras 3 archive whose config names only Keras's own objects."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head == HDF5_SIGNATURE:
        raise ArchiveError(
            "This is an HDF5 (.h5) file; only Keras 3 `.keras` archives are accepted."
        )
    if not zipfile.is_zipfile(path):
        raise ArchiveError("The file is not a `.keras` archive (a zip file).")
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            _check_members(members, max_uncompressed_bytes)
            config_info = archive.getinfo("config.json")
            if config_info.file_size > MAX_CONFIG_BYTES:
                raise ArchiveError("The archive's config.json is too large to be a model config.")
            config_text = archive.read(config_info).decode("utf-8")
            if "model.weights.h5" in archive.namelist():
                with archive.open("model.weights.h5") as weights:
                    _check_weights(weights)
    except zipfile.BadZipFile as exc:
        raise ArchiveError(f"The `.keras` archive is damaged: {exc}") from None
    except UnicodeDecodeError:
        raise ArchiveError("The archive's config.json is not UTF-8 text.") from None
    if FORBIDDEN_TEXT in config_text:
        raise ArchiveError(f"The model config mentions `{FORBIDDEN_TEXT}`: refused.")
    try:
        config = json.loads(config_text)
    except ValueError:
        raise ArchiveError("The archive's config.json is not valid JSON.") from None
    _check_config(config)


def _check_members(members: list[zipfile.ZipInfo], max_uncompressed_bytes: int) -> None:
    if len(members) > MAX_MEMBERS:
        raise ArchiveError(f"The archive has {len(members)} members; a model has a handful.")
    missing = REQUIRED_MEMBERS - {member.filename for member in members}
    if missing:
        raise ArchiveError(
            f"The archive is not a `.keras` model: it lacks {', '.join(sorted(missing))}."
        )
    for member in members:
        name = member.filename
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or "\\" in name:
            raise ArchiveError(f"The archive holds a member with an unsafe path: {name!r}.")
        if name not in ALLOWED_MEMBERS and not name.startswith(ALLOWED_PREFIX):
            raise ArchiveError(f"The archive holds an unexpected member: {name!r}.")
    total = sum(member.file_size for member in members)
    if total > max_uncompressed_bytes:
        raise ArchiveError(
            f"The archive unpacks to {total} bytes; the limit is {max_uncompressed_bytes}."
        )


def _check_weights(weights) -> None:
    """No dataset or link in the weights may reach outside the file."""
    import h5py

    try:
        handle = h5py.File(weights, "r")
    except OSError as exc:
        raise ArchiveError(
            f"The archive's model.weights.h5 is not a readable HDF5 file: {exc}"
        ) from None
    with handle:
        found: list[str] = []

        def visit(name, link):
            if isinstance(link, h5py.ExternalLink | h5py.SoftLink):
                found.append(f"{name} (a link to {link.path!r})")
                return
            item = handle.get(name)
            if isinstance(item, h5py.Dataset) and (item.external or item.is_virtual):
                found.append(f"{name} (data kept in another file)")

        handle.visititems_links(visit)
    if found:
        raise ArchiveError(f"The weights reach outside the model file: {found[0]}; refused.")


def _check_config(node, where: str = "config") -> None:
    """Walk every object of the config, at any depth."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            _check_config(item, f"{where}[{index}]")
        return
    if not isinstance(node, dict):
        return
    class_name = node.get("class_name")
    module = node.get("module")
    if class_name in FORBIDDEN_CLASSES:
        raise ArchiveError(f"The model uses a `{class_name}` layer ({where}), which is refused.")
    if isinstance(module, str) and module.split(".")[0] != "keras":
        raise ArchiveError(
            f"The model config names the module `{module}` ({where}); only Keras's own are allowed."
        )
    if class_name in LOOKUP_CLASSES:
        vocabulary = (node.get("config") or {}).get("vocabulary")
        if isinstance(vocabulary, str):
            raise ArchiveError(
                f"The `{class_name}` layer ({where}) reads its vocabulary from a path: refused."
            )
    for key, value in node.items():
        _check_config(value, f"{where}.{key}")
