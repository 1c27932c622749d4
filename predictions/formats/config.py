"""The checks the `.keras` and `.h5` formats share: what a model config may name, and what an
HDF5 file may reach. Both run in the check's child processes, never in the server itself.

Keras `safe_mode` only blocks `Lambda` deserialization and has been bypassed repeatedly
(CVE-2025-1550: a config naming any module; CVE-2025-9906: a config that calls
`enable_unsafe_deserialization`; CVE-2026-1462: `TFSMLayer` loading a foreign SavedModel;
CVE-2025-12058: lookup layers reading vocabulary files or URLs), and an HDF5 file can point at
other files (external datasets and links). So the whole config is parsed and walked first, and
every object in it must be one Keras itself registers as a layer, initializer, regularizer,
constraint, dtype policy or activation (`keras_names_allowed`, generated from Keras): Keras
resolves `module + "." + class_name`, so both are checked as a pair, each a plain name, with
`registered_name` (which Keras looks up first) equal to the class. Keras 2 HDF5 configs name
their layers by a bare `class_name`, which must be one of those classes' names. Names are read
from the parsed JSON, so a `\\u`-escaped name is seen decoded. The HDF5 structure is read with
h5py, which lists links and dataset layouts without following any of them.
"""

import json
import re

from ..inference.errors import ModelValidationError
from .keras_names import CODE_LAYERS
from .keras_names_allowed import (
    CLASSES,
    FUNCTIONS,
    OPERATIONS,
    TRAINING_CLASSES,
    TRAINING_FUNCTIONS,
)

MAX_CONFIG_BYTES = 16 * 1024 * 1024
# Keras's configs nest about a dozen levels (MobileNetV3: 11; a functional model inside a
# functional model: 16); far deeper ones would also take Keras's recursive readers to Python's
# recursion limit.
MAX_CONFIG_DEPTH = 100
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
# Objects Keras's readers turn into plain values (tensors' places in a functional model,
# arrays, tuples, shapes) before any class lookup.
DATA_CLASSES = frozenset(
    {"__keras_tensor__", "__tensor__", "__numpy__", "__bytes__", "__ellipsis__", "__slice__"}
    | {"__tuple__", "TensorShape"}
)
# `__lambda__` is marshalled Python; the others make Keras build TensorFlow type specs.
CODE_CLASSES = frozenset({"__lambda__", "__typespec__", "TypeSpec", "CompositeTensor"})
LOOKUP_CLASSES = frozenset({"StringLookup", "IntegerLookup", "TextVectorization"})
FORBIDDEN_TEXT = "enable_unsafe_deserialization"
# What may be named outside and inside a `compile_config`, by `module.name` and (Keras 2) bare.
MODEL_CLASSES = CLASSES | OPERATIONS
ALL_CLASSES = MODEL_CLASSES | TRAINING_CLASSES
BARE_CLASSES = frozenset(name.rsplit(".", 1)[1] for name in CLASSES)
BARE_ALL_CLASSES = BARE_CLASSES | {name.rsplit(".", 1)[1] for name in TRAINING_CLASSES}
ALL_FUNCTIONS = FUNCTIONS | TRAINING_FUNCTIONS
ALLOWED_KINDS = (
    "Keras's own layers, initializers, regularizers, constraints, activations and tensor operations"
)


def check_config_text(text: str | bytes, *, source: str) -> None:
    """Parse a model config (JSON) and walk it; `source` names it in messages."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ModelValidationError(f"The {source} is too large to be a model config.")
    try:
        config = json.loads(text)
    except UnicodeDecodeError:
        raise ModelValidationError(f"The {source} is not UTF-8 text.") from None
    except RecursionError:
        raise ModelValidationError(_too_deep(source)) from None
    except ValueError:
        raise ModelValidationError(f"The {source} is not valid JSON.") from None
    check_config(config, source=source)


def check_config(config, *, source: str = "model config") -> None:
    """Walk every value of a parsed config, without recursion, to at most MAX_CONFIG_DEPTH
    levels; raises `ModelValidationError` naming what it refuses."""
    # (node, where it is, its depth, whether it lies inside a `compile_config`)
    stack = [(config, "config", 0, False)]
    while stack:
        node, where, depth, training = stack.pop()
        if isinstance(node, str):
            _check_text(node)
            continue
        if not isinstance(node, dict | list):
            continue
        if depth >= MAX_CONFIG_DEPTH:
            raise ModelValidationError(_too_deep(source))
        if isinstance(node, list):
            stack.extend(
                (item, f"{where}[{i}]", depth + 1, training) for i, item in enumerate(node)
            )
            continue
        _check_object(node, where, training)
        for key, value in node.items():
            _check_text(key)
            inner = training or key == "compile_config"
            stack.append((value, f"{where}.{key}", depth + 1, inner))


def _too_deep(source: str) -> str:
    return f"The {source} is nested more than {MAX_CONFIG_DEPTH} levels deep: refused."


def _check_text(text: str) -> None:
    if FORBIDDEN_TEXT in text:
        raise ModelValidationError(f"The model config mentions `{FORBIDDEN_TEXT}`: refused.")


def _check_object(node: dict, where: str, training: bool) -> None:
    """One JSON object: when it names a class (`class_name`), that class must be allowed."""
    if node.get("function_type") == "lambda":
        raise ModelValidationError(f"The model config holds Python code ({where}): refused.")
    if "class_name" not in node:
        return  # a plain dict: Keras reads its values, not a class
    class_name, registered = node["class_name"], node.get("registered_name")
    if not isinstance(class_name, str) or not isinstance(registered, str | None):
        raise ModelValidationError(f"The model config names a class that is not text ({where}).")
    for name in (class_name, registered or ""):
        short = re.split(r"[.>]", name)[-1]
        if short in CODE_LAYERS:
            raise ModelValidationError(
                f"The model uses a `{short}` layer ({where}), which runs code or loads files "
                "of its own: refused."
            )
    if class_name == "__lambda__":
        raise ModelValidationError(f"The model config holds Python code ({where}): refused.")
    if class_name in CODE_CLASSES:
        raise ModelValidationError(
            f"The model config holds a `{class_name}` object ({where}), which makes Keras build "
            "TensorFlow objects while reading it: refused."
        )
    if not NAME.fullmatch(class_name):
        raise ModelValidationError(
            f"The model config names the class `{class_name}` ({where}), which is not a plain "
            "class name: refused."
        )
    if class_name in DATA_CLASSES:
        return
    if class_name == "function":
        _check_function(node, where, training)
    else:
        _check_class(node, where, training)
    if class_name in LOOKUP_CLASSES:
        config = node.get("config")
        if isinstance(config, dict) and isinstance(config.get("vocabulary"), str):
            raise ModelValidationError(
                f"The `{class_name}` layer ({where}) reads its vocabulary from a path: refused."
            )


def _check_class(node: dict, where: str, training: bool) -> None:
    class_name, registered = node["class_name"], node.get("registered_name")
    if registered is not None and registered != class_name:
        raise ModelValidationError(
            f"The model config's class `{class_name}` comes with the registered name "
            f"`{registered}` ({where}); Keras would look that name up first: refused."
        )
    module = _keras_module(node, where)
    if module is None:  # a Keras 2 config: the bare class name
        allowed = BARE_ALL_CLASSES if training else BARE_CLASSES
        if class_name not in allowed:
            raise ModelValidationError(
                f"The model config names the class `{class_name}` ({where}), which is not one "
                f"of {ALLOWED_KINDS}: refused."
            )
        return
    allowed = ALL_CLASSES if training else MODEL_CLASSES
    if f"{module}.{class_name}" not in allowed:
        raise ModelValidationError(
            f"The model config names `{module}.{class_name}` ({where}), which is not one of "
            f"{ALLOWED_KINDS}: refused."
        )


def _check_function(node: dict, where: str, training: bool) -> None:
    """`{"class_name": "function", "module": M, "config": NAME}`: Keras looks up `M.NAME`."""
    name, registered = node.get("config"), node.get("registered_name")
    module = _keras_module(node, where)
    if not isinstance(name, str) or not NAME.fullmatch(name) or module is None:
        raise ModelValidationError(
            f"The model config names a function other than by its Keras module and name "
            f"({where}): refused."
        )
    if registered is not None and registered != name:
        raise ModelValidationError(
            f"The model config's function `{name}` comes with the registered name "
            f"`{registered}` ({where}); Keras would look that name up first: refused."
        )
    allowed = ALL_FUNCTIONS if training else FUNCTIONS
    if f"{module}.{name}" not in allowed:
        raise ModelValidationError(
            f"The model config names the function `{module}.{name}` ({where}), which is not "
            f"one of {ALLOWED_KINDS}: refused."
        )


def _keras_module(node: dict, where: str) -> str | None:
    """The object's `module` (None when it has none), which must be Keras's."""
    module = node.get("module")
    if module is None:
        return None
    if not isinstance(module, str) or not MODULE.fullmatch(module):
        raise ModelValidationError(
            f"The model config names a module that is not a plain module name ({where})."
        )
    if module.split(".")[0] != "keras":
        raise ModelValidationError(
            f"The model config names the module `{module}` ({where}); only Keras's own are allowed."
        )
    return module


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
