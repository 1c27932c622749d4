"""Checking a model file before it may be served, at both ends of the job.

- `vetting`: the cheap checks the web process may run (the format from the content, the
  format's static `vet`, labels against outputs): no TensorFlow, no model loading.
- `launcher`: the parent's end: runs the child within its limits and caches its report.
- `child`: `python -m predictions.checking.child`, which loads the model and converts it
  (`conversion`). It imports this package without Django set up: nothing here may import
  the ORM at module level.
"""

from ..formats import ModelFormat, sniff_format
from ..inference.errors import ModelValidationError
from .launcher import CompileReport, check_and_compile
from .vetting import check_labels, vet_model_file

__all__ = [
    "CompileReport",
    "ModelFormat",
    "ModelValidationError",
    "check_and_compile",
    "check_labels",
    "sniff_format",
    "vet_model_file",
]
