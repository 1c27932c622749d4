"""Checking a model file before it may be served, at both ends of the job.

- `vetting`: what the server's own processes check (the format from the content, sizes, a
  zip's directory, labels against outputs), with the format's `vet` (config, HDF5 structure)
  run in a confined child: no parsing, no TensorFlow, no model loading in the server.
- `launcher`: the parent's end of a check: runs the child and caches its report.
- `sandbox`: how either child is started and confined, and its output read back.
- `child`: `python -m predictions.checking.child`, which vets, loads and converts the model
  (`conversion`). It imports this package without Django set up: nothing here may import
  the ORM at module level, and the ends are loaded on first use, so a child that vets a file
  starts without Django (the admin form waits for it).
"""

import importlib

from ..formats import ModelFormat, sniff_format
from ..inference.errors import ModelValidationError

_LAZY = {
    "CompileReport": "launcher",
    "check_and_compile": "launcher",
    "check_labels": "vetting",
    "inspect_model_file": "vetting",
    "vet_model_file": "vetting",
}

__all__ = [
    "CompileReport",
    "ModelFormat",
    "ModelValidationError",
    "check_and_compile",
    "check_labels",
    "inspect_model_file",
    "sniff_format",
    "vet_model_file",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
