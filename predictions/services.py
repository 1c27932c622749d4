"""Writes: registering, validating and activating model versions."""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from .compilation import CompileReport, check_and_compile
from .inference.validation import ModelValidationError
from .models import ModelVersion, Project, model_storage
from .selectors import project_next_version_number
from .storage import file_cache

logger = logging.getLogger(__name__)

__all__ = [
    "ModelValidationError",
    "PreparedVersion",
    "project_group_name",
    "version_activate",
    "version_create",
    "version_prepare",
    "version_register",
    "version_revalidate",
]


@dataclass(frozen=True)
class PreparedVersion:
    """A model file that passed validation and sits in the local cache, not yet registered."""

    local_path: Path
    sha256: str
    size_bytes: int
    report: CompileReport
    labels: list[str]
    s3_key: str | None
    resize: str
    scale_min: float
    scale_max: float


def project_group_name(slug: str) -> str:
    """The channel-layer group of a project's connections (every process joins it)."""
    return f"project.{slug}"


def version_prepare(
    *,
    upload: BinaryIO | None = None,
    s3_key: str | None = None,
    labels: list[str],
    resize: str = ModelVersion.Resize.STRETCH,
    scale_min: float = 0.0,
    scale_max: float = 1.0,
) -> PreparedVersion:
    """Fetch a model file (an upload or an existing key in the model storage), validate it and
    compile it to LiteRT in a child process.

    Raises `ModelValidationError` with a message in words; nothing is stored in that case.
    """
    if (upload is None) == (not s3_key):
        raise ModelValidationError("Give either a model file to upload or an S3 key, not both.")
    if upload is not None:
        path, sha256, size = file_cache().add(upload)
    else:
        path, sha256, size = _fetch_key(s3_key)
    report = check_and_compile(
        path=path, sha256=sha256, labels=labels, scale=(scale_min, scale_max)
    )
    return PreparedVersion(
        path, sha256, size, report, list(labels), s3_key or None, resize, scale_min, scale_max
    )


def version_create(
    *, project: Project, prepared: PreparedVersion, activate: bool = False
) -> ModelVersion:
    """Store a prepared file and its LiteRT artifact, and record the new version."""
    if prepared.s3_key:
        file_name, source = prepared.s3_key, ModelVersion.Source.S3_KEY
    else:
        name = f"projects/{project.slug}/{prepared.sha256}.keras"
        with open(prepared.local_path, "rb") as handle:
            file_name = _store_once(name, handle)
        source = ModelVersion.Source.UPLOAD
    compiled_file = ""
    if prepared.report.compiled_path:
        # Keyed by the source's hash: the same source always compiles to this artifact.
        with open(prepared.report.compiled_path, "rb") as handle:
            compiled_file = _store_once(f"compiled/{prepared.sha256}.tflite", handle)
    with transaction.atomic():
        Project.objects.select_for_update().filter(pk=project.pk).first()
        version = ModelVersion(
            project=project,
            number=project_next_version_number(project),
            source=source,
            labels=prepared.labels,
            sha256=prepared.sha256,
            size_bytes=prepared.size_bytes,
            input_shape=list(prepared.report.input_shape),
            output_shape=list(prepared.report.output_shape),
            resize=prepared.resize,
            scale_min=prepared.scale_min,
            scale_max=prepared.scale_max,
            runtime=prepared.report.runtime,
            compiled_file=compiled_file,
            compiled_sha256=prepared.report.compiled_sha256,
            status=ModelVersion.Status.READY,
            validation_message=prepared.report.message,
        )
        version.file.name = file_name
        version.save()
    logger.info("registered %s (%s, %s)", version, prepared.sha256[:12], version.runtime)
    if activate:
        version_activate(version=version)
    return version


def version_register(
    *,
    project: Project,
    upload: BinaryIO | None = None,
    s3_key: str | None = None,
    labels: list[str],
    activate: bool = False,
    **preprocessing,
) -> ModelVersion:
    """Validate and record a version in one call."""
    prepared = version_prepare(upload=upload, s3_key=s3_key, labels=labels, **preprocessing)
    return version_create(project=project, prepared=prepared, activate=activate)


def version_activate(*, version: ModelVersion) -> None:
    """Put a validated version in service and tell every server process to swap it in."""
    if version.status != ModelVersion.Status.READY:
        raise ModelValidationError(
            f"Version {version.number} failed validation and cannot be activated: "
            f"{version.validation_message}"
        )
    project = version.project
    with transaction.atomic():
        project.active_version = version
        project.save(update_fields=["active_version", "updated_at"])
        transaction.on_commit(lambda: _announce_model_change(project.slug, version.pk))
    logger.info("activated %s", version)


def version_revalidate(*, version: ModelVersion) -> bool:
    """Download and check a registered version again; records and returns whether it passed."""
    try:
        path, sha256, _ = _fetch_key(version.file.name)
        if sha256 != version.sha256:
            raise ModelValidationError(
                "The stored file has changed since registration (its sha256 differs)."
            )
        report = check_and_compile(
            path=path,
            sha256=sha256,
            labels=version.labels,
            scale=(version.scale_min, version.scale_max),
        )
    except ModelValidationError as exc:
        version.status, version.validation_message = ModelVersion.Status.FAILED, str(exc)
    else:
        version.status, version.validation_message = ModelVersion.Status.READY, report.message
    version.save(update_fields=["status", "validation_message"])
    return version.status == ModelVersion.Status.READY


def _fetch_key(key: str):
    storage = model_storage()
    try:
        with storage.open(key, "rb") as remote:
            return file_cache().add(remote)
    except FileNotFoundError:
        raise ModelValidationError(f"No object named {key!r} in the model storage.") from None
    except OSError as exc:
        raise ModelValidationError(
            f"Could not read {key!r} from the model storage: {exc}"
        ) from None
    except Exception as exc:  # botocore's errors do not share a base class with OSError.
        if _is_missing_object(exc):
            raise ModelValidationError(f"No object named {key!r} in the model storage.") from None
        raise ModelValidationError(
            f"Could not read {key!r} from the model storage: {exc}"
        ) from None


def _is_missing_object(exc: Exception) -> bool:
    response = getattr(exc, "response", None) or {}
    return response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


def _store_once(name: str, content) -> str:
    """Save under a content-addressed name; an identical file already there is kept."""
    storage = model_storage()
    if storage.exists(name):
        return name
    return storage.save(name, content)


def _announce_model_change(slug: str, version_id: int) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(
            project_group_name(slug), {"type": "model.changed", "version_id": version_id}
        )
    except Exception:  # The swap is recorded; a layer outage must not fail the activation.
        logger.exception("could not announce the model change of %s", slug)
