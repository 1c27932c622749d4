"""Writes: registering model versions (a job), checking them, activating them; projects.

- `versions`: take in a model file and record a `pending` version; activate; check again.
- `projects`: save a project or rotate its token; announce changes to its connections.
- `canary`: promote a project's candidate version, or end its canary.
- `feedback`: keep an image with the label someone gave it, as data to retrain on.
- `scoring`: a version's score on the project's stored feedback, beside the version in service.
- `variants`: a version's smaller LiteRT variants, measured against its float artifact, and
  which one it is served as.
- `registration`: the check itself (the job's body, run by the worker or by `register_model`),
  its lease, and the reaper that takes up jobs whose worker died.
"""

from ..inference.errors import ModelValidationError
from .canary import canary_end, canary_promote
from .feedback import (
    feedback_delete,
    feedback_export,
    feedback_image_check,
    feedback_save,
    feedback_storage_name,
    label_segment,
)
from .projects import (
    announce_model_change,
    announce_project_change,
    project_group_name,
    project_rotate_token,
    project_save,
)
from .registration import registrations_reap, version_check
from .scoring import version_score
from .variants import variant_check, version_serve_variant
from .versions import (
    ACTIVATE_PERMISSION,
    VersionSource,
    labels_check,
    version_activate,
    version_recheck,
    version_register,
    version_source,
    version_submit,
)

__all__ = [
    "ACTIVATE_PERMISSION",
    "ModelValidationError",
    "VersionSource",
    "announce_model_change",
    "announce_project_change",
    "canary_end",
    "canary_promote",
    "feedback_delete",
    "feedback_export",
    "feedback_image_check",
    "feedback_save",
    "feedback_storage_name",
    "label_segment",
    "labels_check",
    "project_group_name",
    "project_rotate_token",
    "project_save",
    "registrations_reap",
    "variant_check",
    "version_activate",
    "version_check",
    "version_recheck",
    "version_register",
    "version_score",
    "version_serve_variant",
    "version_source",
    "version_submit",
]
