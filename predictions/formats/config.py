"""The checks the `.keras` and `.h5` formats share: what a model config may name, and what an
HDF5 file may reach.

Keras `safe_mode` only blocks `Lambda` deserialization and has been bypassed repeatedly
(CVE-2025-1550: a config naming any module; CVE-2025-9906: a config that calls
`enable_unsafe_deserialization`; CVE-2026-1462: `TFSMLayer` loading a foreign SavedModel;
CVE-2025-12058: lookup layers reading vocabulary files or URLs), and an HDF5 file can point at
other files (external datasets and links). So the whole config is walked first, as parsed JSON
(a `\\u`-escaped name is seen decoded), and the HDF5 structure is read with h5py, which lists
links and dataset layouts without following any of them.
"""

import json

from ..inference.errors import ModelValidationError

MAX_CONFIG_BYTES = 16 * 1024 * 1024
# `Lambda` carries code (marshalled Python bytecode in HDF5 files); `TypeSpec` and
# `CompositeTensor` make Keras's legacy JSON decoder build TensorFlow objects while parsing.
FORBIDDEN_CLASSES = {"Lambda", "TFSMLayer", "TorchModuleWrapper", "TypeSpec", "CompositeTensor"}
LOOKUP_CLASSES = {"StringLookup", "IntegerLookup", "TextVectorization"}
FORBIDDEN_TEXT = "enable_unsafe_deserialization"


def check_config_text(text: str | bytes, *, source: str) -> None:
    """Parse a model config (JSON) and walk it; `source` names it in messages."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ModelValidationError(f"The {source} is too large to be a model config.")
    try:
        config = json.loads(text)
    except UnicodeDecodeError:
        raise ModelValidationError(f"The {source} is not UTF-8 text.") from None
    except RecursionError:
        raise ModelValidationError(f"The {source} is nested too deeply.") from None
    except ValueError:
        raise ModelValidationError(f"The {source} is not valid JSON.") from None
    try:
        check_config(config)
    except RecursionError:
        raise ModelValidationError(f"The {source} is nested too deeply.") from None


def check_config(node, where: str = "config") -> None:
    """Walk every value of a parsed config, at any depth; raises `ModelValidationError`."""
    if isinstance(node, str):
        if FORBIDDEN_TEXT in node:
            raise ModelValidationError(f"The model config mentions `{FORBIDDEN_TEXT}`: refused.")
        return
    if isinstance(node, list):
        for index, item in enumerate(node):
            check_config(item, f"{where}[{index}]")
        return
    if not isinstance(node, dict):
        return
    _check_object(node, where)
    for key, value in node.items():
        check_config(key, where)
        check_config(value, f"{where}.{key}")


def _check_object(node: dict, where: str) -> None:
    names = {_short_name(node.get(key)) for key in ("class_name", "registered_name")}
    forbidden = names & FORBIDDEN_CLASSES
    if forbidden:
        raise ModelValidationError(
            f"The model uses a `{forbidden.pop()}` layer ({where}), which is refused."
        )
    if node.get("function_type") == "lambda":
        raise ModelValidationError(f"The model config holds Python code ({where}): refused.")
    module = node.get("module")
    if module is not None and (not isinstance(module, str) or module.split(".")[0] != "keras"):
        raise ModelValidationError(
            f"The model config names the module `{module}` ({where}); only Keras's own are allowed."
        )
    class_name = node.get("class_name")
    if class_name in LOOKUP_CLASSES:
        config = node.get("config")
        if isinstance(config, dict) and isinstance(config.get("vocabulary"), str):
            raise ModelValidationError(
                f"The `{class_name}` layer ({where}) reads its vocabulary from a path: refused."
            )


def _short_name(name) -> str:
    """`Lambda` from `Lambda`, `keras.layers.Lambda` or `package>Lambda`."""
    if not isinstance(name, str):
        return ""
    return name.rsplit(">", 1)[-1].rsplit(".", 1)[-1]


def check_hdf5_structure(handle, *, what: str) -> int:
    """Refuse links and datasets of an open `h5py.File` that reach outside it; returns the
    bytes its datasets hold once read (their shapes times item sizes: compression aside)."""
    import h5py

    found: list[str] = []
    total = 0

    def visit(name, link):
        nonlocal total
        if isinstance(link, h5py.ExternalLink | h5py.SoftLink):
            found.append(f"{name} (a link to {link.path!r})")
            return
        item = handle.get(name)
        if isinstance(item, h5py.Dataset):
            if item.external or item.is_virtual:
                found.append(f"{name} (data kept in another file)")
            total += (item.size or 0) * item.dtype.itemsize

    handle.visititems_links(visit)
    if found:
        raise ModelValidationError(
            f"Part of the {what} lies outside the model file: {found[0]}; refused."
        )
    return total
