"""Taking in a model file as a new `pending` version, and putting versions in service.

Nothing here loads a model: the web process only sniffs and vets the file (no TensorFlow);
the check itself is a job (`registration.version_check`), run by the worker.
"""

import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from ..checking import sniff_format, vet_model_file
from ..formats import ModelFormat
from ..inference.errors import ModelValidationError
from ..models import ModelVersion, Project
from ..selectors import project_next_version_number
from ..storage import file_cache, storage_read_head, store_once
from .projects import announce_model_change

logger = logging.getLogger(__name__)

# Putting a version in service is a permission of its own, apart from adding versions.
ACTIVATE_PERMISSION = "predictions.can_activate"


@dataclass(frozen=True)
class VersionSource:
    """A model file that passed the cheap checks: an upload now in the local cache, or the key
    of an object in the model storage (hashed when the worker fetches it)."""

    format: ModelFormat
    original_name: str
    size_bytes: int
    local_path: Path | None = None
    sha256: str = ""
    s3_key: str = ""


def version_source(
    *, upload: BinaryIO | None = None, upload_name: str = "", s3_key: str | None = None
) -> VersionSource:
    """Read an upload into the local cache and vet it (format, config, links: no loading), or
    look up a key in the model storage and sniff its format from its first bytes.

    Raises `ModelValidationError` in words; nothing is stored then.
    """
    if (upload is None) == (not s3_key):
        raise ModelValidationError("Give either a model file to upload or an S3 key, not both.")
    if upload is not None:
        cache = file_cache()
        path, sha256, size = cache.add(upload, suffix=".upload")
        try:
            model_format = vet_model_file(
                path, max_unpacked_bytes=settings.MODEL_MAX_UNPACKED_BYTES
            )
        except ModelValidationError:
            path.unlink(missing_ok=True)
            raise
        path = cache.retag(path, model_format.suffix)
        name = PurePosixPath(upload_name or getattr(upload, "name", "") or "").name
        return VersionSource(model_format, name, size, local_path=path, sha256=sha256)
    head, size = storage_read_head(s3_key, 16)
    return VersionSource(sniff_format(head), s3_key, size, s3_key=s3_key)


def version_submit(
    *,
    project: Project,
    source: VersionSource,
    labels: list[str],
    activate: bool = False,
    queue: bool = True,
    resize: str = ModelVersion.Resize.STRETCH,
    scale_min: float = 0.0,
    scale_max: float = 1.0,
    actor=None,
) -> ModelVersion:
    """Store the file and record the project's next version as `pending`; with `queue`, the
    worker's job is queued in the same transaction. `activate` asks for it to go into service
    once its check passes (the latest such request of a project wins); an `actor` (a user)
    needs the activate permission for that. Shell commands pass none."""
    labels_check(labels)
    if activate:
        require_activate_permission(actor)
    if source.local_path is not None:
        name = f"projects/{project.slug}/{source.sha256}{source.format.suffix}"
        with open(source.local_path, "rb") as handle:
            file_name = store_once(name, handle)
        origin = ModelVersion.Source.UPLOAD
    else:
        file_name, origin = source.s3_key, ModelVersion.Source.S3_KEY
    with transaction.atomic():
        Project.objects.select_for_update().filter(pk=project.pk).first()
        version = ModelVersion(
            project=project,
            number=project_next_version_number(project),
            source=origin,
            original_name=source.original_name,
            format=source.format,
            labels=list(labels),
            sha256=source.sha256,
            size_bytes=source.size_bytes,
            resize=resize,
            scale_min=scale_min,
            scale_max=scale_max,
            status=ModelVersion.Status.PENDING,
            validation_message="Waiting for a worker to check it.",
        )
        version.file.name = file_name
        version.save()
        if activate:
            Project.objects.filter(pk=project.pk).update(activate_when_ready=version)
        if queue:
            enqueue_check(version)
    logger.info("registered %s (%s), pending its check", version, source.format)
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
    """Take in a file and check it here and now (in a child process), without the worker;
    returns the `ready` version, or raises `ModelValidationError` (the version stays `failed`)."""
    from .registration import version_check

    source = version_source(upload=upload, s3_key=s3_key)
    version = version_submit(
        project=project,
        source=source,
        labels=labels,
        activate=activate,
        queue=False,
        **preprocessing,
    )
    version = version_check(version=version)
    if version.status != ModelVersion.Status.READY:
        raise ModelValidationError(version.validation_message)
    return version


def version_activate(*, version: ModelVersion, actor=None) -> bool:
    """Put a version in service and tell every server process to swap it in; a version still
    being checked is put in service when it is ready instead. Returns whether it is live now.
    An `actor` (a user) needs the activate permission; shell commands pass none."""
    require_activate_permission(actor)
    status = version.status
    if status in (ModelVersion.Status.PENDING, ModelVersion.Status.CHECKING):
        Project.objects.filter(pk=version.project_id).update(activate_when_ready=version)
        logger.info("%s will be activated when ready", version)
        return False
    if status != ModelVersion.Status.READY:
        raise ModelValidationError(
            f"Version {version.number} failed its check and cannot be activated: "
            f"{version.validation_message}"
        )
    project = version.project
    with transaction.atomic():
        version.activated_at = timezone.now()
        ModelVersion.objects.filter(pk=version.pk).update(activated_at=version.activated_at)
        project.active_version = version
        project.activate_when_ready = None
        fields = ["active_version", "activate_when_ready", "updated_at"]
        if project.candidate_id == version.pk:  # the candidate promoted: the canary is over
            project.candidate = None
            project.candidate_share = 0
            fields += ["candidate", "candidate_share"]
        project.save(update_fields=fields)
        transaction.on_commit(lambda: announce_model_change(project.slug, version.pk))
    logger.info("activated %s", version)
    return True


def version_recheck(*, version: ModelVersion) -> None:
    """Queue a new check of a version's stored file (it keeps serving meanwhile if active)."""
    with transaction.atomic():
        ModelVersion.objects.filter(pk=version.pk).update(
            status=ModelVersion.Status.PENDING,
            attempts=0,
            heartbeat_at=None,
            validation_message="Queued for a new check.",
        )
        version.refresh_from_db()
        enqueue_check(version)


def require_activate_permission(actor) -> None:
    if actor is not None and not actor.has_perm(ACTIVATE_PERMISSION):
        raise PermissionDenied("You may not put versions in service (the activate permission).")


def enqueue_check(version: ModelVersion) -> None:
    """Queue the worker's job for a pending version (inside the caller's transaction)."""
    from ..tasks import check_version

    result = check_version.enqueue(version.pk)
    version.task_id = str(result.id)
    ModelVersion.objects.filter(pk=version.pk).update(task_id=version.task_id)


def labels_check(labels: list[str]) -> None:
    """Labels name the outputs one for one: each non-empty and distinct."""
    if any(not label or label != label.strip() for label in labels):
        raise ModelValidationError("Labels must be non-empty, without surrounding spaces.")
    if len(set(labels)) != len(labels):
        raise ModelValidationError("Labels must be distinct: each names one output.")
