"""The registration job's body: check a pending version's file and record the outcome.

A job holds a lease on its version while it checks: a thread renews `heartbeat_at` every third
of `REGISTRATION_LEASE_SECONDS`. A worker that dies (killed, dyno restarted) stops renewing it,
and `registrations_reap` (run by every worker) queues the version again, or fails it with a
reason after `REGISTRATION_MAX_ATTEMPTS` takes. Every write of the outcome is conditional on
the attempt that claimed the version, so a job that lost its lease cannot overwrite a newer one.

A version that passes has its smaller variants measured against its float artifact
(`variants.variants_measure`) and is scored on its project's stored feedback
(`scoring.feedback_score`) while still `checking`, under the lease: a worker that dies then is
taken up as one that died checking it, and the outcome, the measures, the score and the
activation are recorded together.
"""

import copy
import logging
import threading
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from ..checking import check_and_compile, vet_model_file
from ..formats import ModelFormat
from ..inference.errors import ModelUnavailable, ModelValidationError, one_line
from ..models import ModelVersion, Project
from ..storage import file_cache, storage_fetch_key, store_once
from .scoring import feedback_score
from .variants import variants_measure
from .versions import enqueue_check, version_activate

logger = logging.getLogger(__name__)

Status = ModelVersion.Status


def version_check(*, version: ModelVersion) -> ModelVersion:
    """Claim a `pending` version, check its file in a child process, and record `ready` (then
    activate it when that was asked for) or `failed` with the reason. A version that is not
    pending (another job has it, or it is done) is returned as it is. A version that passes has
    its variants measured and is scored on the project's stored feedback first (a failure of
    either is kept in words and never fails the version)."""
    claimed = ModelVersion.objects.filter(pk=version.pk, status=Status.PENDING).update(
        status=Status.CHECKING,
        attempts=F("attempts") + 1,
        heartbeat_at=timezone.now(),
        validation_message="Checking the model file.",
    )
    version.refresh_from_db()
    if not claimed:
        return version
    attempt = version.attempts
    with Lease(version.pk, attempt):
        try:
            outcome = _check(version)
        except ModelValidationError as exc:
            _finish(version, attempt, Status.FAILED, message=str(exc))
        except Exception as exc:  # A bug or an outage: the version still gets a reason.
            logger.exception("checking %s failed unexpectedly", version)
            _finish(version, attempt, Status.FAILED, message=f"The check failed: {one_line(exc)}")
        else:
            checked = _as_checked(version, outcome)
            outcome["variants"] = variants_measure(checked)
            score = feedback_score(checked)
            _finish(version, attempt, Status.READY, feedback_score=score, **outcome)
    version.refresh_from_db()
    return version


def _check(version: ModelVersion) -> dict:
    """Fetch the file (hash-checked), check and compile it; the fields of a `ready` version."""
    path, sha256, size = _local_copy(version)
    report = check_and_compile(
        path=path,
        sha256=sha256,
        labels=version.labels,
        scale=(version.scale_min, version.scale_max),
    )
    compiled_file = ""
    if report.compiled_path:
        # Keyed by the source's hash: the same source always compiles to this artifact.
        with open(report.compiled_path, "rb") as handle:
            compiled_file = store_once(f"compiled/{sha256}.tflite", handle)
    variants = {}
    for variant, artifact in report.variants.items():
        if artifact.path is None:
            variants[variant] = {"error": artifact.error}
            continue
        with open(artifact.path, "rb") as handle:
            stored = store_once(f"compiled/{sha256}.{variant}.tflite", handle)
        variants[variant] = {
            "file": stored,
            "sha256": artifact.sha256,
            "size_bytes": artifact.path.stat().st_size,
        }
    return {
        "message": report.message,
        "sha256": sha256,
        "size_bytes": size,
        "format": report.format,
        "input_shape": list(report.input_shape),
        "output_shape": list(report.output_shape),
        "runtime": report.runtime,
        "compiled_file": compiled_file,
        "compiled_sha256": report.compiled_sha256,
        "variants": variants,
    }


def _as_checked(version: ModelVersion, outcome: dict) -> ModelVersion:
    """The version with the fields its check found (a copy, not saved): what scoring runs."""
    checked = copy.copy(version)
    for field, value in outcome.items():
        if field != "message":
            setattr(checked, field, value)
    return checked


def _local_copy(version: ModelVersion):
    """The version's file in the local cache, named for its format: (path, sha256, size)."""
    suffix = ModelFormat(version.format).suffix
    if version.sha256:
        try:
            path = file_cache().fetch(name=version.file.name, sha256=version.sha256, suffix=suffix)
        except ModelUnavailable as exc:
            raise ModelValidationError(exc.message) from None
        return path, version.sha256, path.stat().st_size
    # A key in the bucket, fetched for the first time: vet it now (the admin only sniffed it).
    path, sha256, size = storage_fetch_key(version.file.name)
    try:
        model_format = vet_model_file(path, max_unpacked_bytes=settings.MODEL_MAX_UNPACKED_BYTES)
    except ModelValidationError:
        path.unlink(missing_ok=True)
        raise
    return file_cache().retag(path, model_format.suffix), sha256, size


def _finish(version: ModelVersion, attempt: int, status: str, *, message: str, **fields) -> None:
    with transaction.atomic():
        recorded = ModelVersion.objects.filter(
            pk=version.pk, status=Status.CHECKING, attempts=attempt
        ).update(status=status, validation_message=message, heartbeat_at=None, **fields)
        if not recorded:
            logger.warning(
                "%s: attempt %d lost its lease; its outcome is dropped", version, attempt
            )
            return
        project = Project.objects.select_for_update().get(pk=version.project_id)
        if project.activate_when_ready_id != version.pk:
            return
        if status == Status.READY:
            version.refresh_from_db()
            version_activate(version=version)
        else:
            project.activate_when_ready = None
            project.save(update_fields=["activate_when_ready"])
    logger.info("%s is %s: %s", version, status, message)


class Lease:
    """Renews a version's heartbeat from a thread while its check runs."""

    def __init__(self, version_id: int, attempt: int):
        self.version_id = version_id
        self.attempt = attempt
        self.interval = settings.REGISTRATION_LEASE_SECONDS / 3
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="lease", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()

    def _renew(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                ModelVersion.objects.filter(
                    pk=self.version_id, status=Status.CHECKING, attempts=self.attempt
                ).update(heartbeat_at=timezone.now())
        except Exception:  # The database is away: the lease lapses and the reaper takes over.
            logger.exception("could not renew the lease of version %s", self.version_id)
        finally:
            connection.close()


def registrations_reap() -> int:
    """Take up the jobs whose worker died: a version `checking` past its lease is queued again
    (or failed after `REGISTRATION_MAX_ATTEMPTS`), and a `pending` one whose job is gone is
    queued. Returns how many versions it took up."""
    now = timezone.now()
    expired = now - timedelta(seconds=settings.REGISTRATION_LEASE_SECONDS)
    taken = 0
    for version in ModelVersion.objects.filter(status=Status.CHECKING, heartbeat_at__lt=expired):
        taken += _retake(version, now)
    for version in ModelVersion.objects.filter(status=Status.PENDING, created_at__lt=expired):
        if not _job_waiting(version.task_id):
            with transaction.atomic():
                enqueue_check(version)
            logger.warning("%s was pending with no job: queued", version)
            taken += 1
    return taken


def _retake(version: ModelVersion, now) -> int:
    attempts, limit = version.attempts, settings.REGISTRATION_MAX_ATTEMPTS
    if attempts < limit:
        status = Status.PENDING
        message = f"The worker checking it stopped (attempt {attempts} of {limit}); queued again."
    else:
        status = Status.FAILED
        message = (
            f"The worker checking it stopped {attempts} times (killed, restarted or out of "
            "memory); given up. Give the worker more memory, or lower MODEL_CHECK_MEMORY_BYTES "
            "so that the check fails in words, and register it again."
        )
    with transaction.atomic():
        updated = ModelVersion.objects.filter(
            pk=version.pk, status=Status.CHECKING, attempts=attempts
        ).update(status=status, validation_message=message, heartbeat_at=None)
        if not updated:
            return 0  # it finished, or another reaper took it
        _fail_lost_task(version.task_id, now)
        if status == Status.PENDING:
            enqueue_check(version)
        else:
            Project.objects.filter(activate_when_ready=version).update(activate_when_ready=None)
    logger.warning("%s: %s", version, message)
    return 1


def _job_waiting(task_id: str) -> bool:
    from django_tasks_db.models import DBTaskResult

    return (
        bool(task_id)
        and DBTaskResult.objects.filter(id=task_id, status__in=["READY", "RUNNING"]).exists()
    )


def _fail_lost_task(task_id: str, now) -> None:
    """django-tasks-db leaves a dead worker's task RUNNING for ever: close it as failed."""
    from django_tasks_db.models import DBTaskResult

    if task_id:
        DBTaskResult.objects.filter(id=task_id, status="RUNNING").update(
            status="FAILED",
            finished_at=now,
            exception_class_path="predictions.services.registration.WorkerLost",
            traceback="The worker running this task stopped renewing its lease.",
        )
