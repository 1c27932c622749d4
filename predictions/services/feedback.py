"""Feedback: an image with the label someone says is right, kept as data to retrain on.

The image goes to the model storage (S3 when configured) under
`feedback/<slug>/<label>/<sha256>.<ext>`, once per image and label; a row records who answered
what. Everything here blocks (decoding, the ORM, the storage): call it off the event loop.
"""

import csv
import hashlib
import io
import re
import shutil
import zipfile
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError

from .. import metrics
from ..inference.errors import BAD_REQUEST, MODEL_UNAVAILABLE, PredictionError
from ..inference.images import decode_bytes, load_image, open_image, shared_budget
from ..models import FeedbackExample, ModelVersion, Project, model_storage

FEEDBACK_PREFIX = "feedback"
MAX_LABEL_LENGTH = 200

# Extensions by Pillow format: what `keras.utils.image_dataset_from_directory` recognises,
# except WebP, which it skips.
EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "BMP": "bmp", "GIF": "gif"}

_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def label_segment(label: str) -> str:
    """A label as one path segment: itself when it is plain (letters, digits, `_`, `-`, `.`,
    not leading with a dot), else percent-encoded (a plain label holds no `%`, so two labels
    never share a segment)."""
    if _SAFE_SEGMENT.fullmatch(label):
        return label
    encoded = quote(label, safe="")
    return "%2E" + encoded[1:] if encoded.startswith(".") else encoded


def feedback_storage_name(*, slug: str, label: str, sha256: str, ext: str) -> str:
    return f"{FEEDBACK_PREFIX}/{slug}/{label_segment(label)}/{sha256}.{ext}"


def feedback_image_check(data: bytes) -> str:
    """Check an image as frames are checked (size, pixels, format, a full decode within the
    process's decode budget) and return its file extension. Raises PredictionError
    (`bad_image`, `too_large`)."""
    image = open_image(
        data, max_bytes=settings.MAX_IMAGE_BYTES, max_pixels=settings.MAX_IMAGE_PIXELS
    )
    what = f"This {image.width}x{image.height} {image.format} image"
    try:
        with shared_budget(settings.DECODE_BUDGET_BYTES).hold(decode_bytes(image, data), what=what):
            load_image(image)
        return EXTENSIONS[image.format]
    finally:
        image.close()


def feedback_save(
    *,
    project: Project,
    image_bytes: bytes,
    label: str,
    predicted: str = "",
    version: int | None = None,
    source: str,
) -> FeedbackExample:
    """Store one feedback example and return its row (the existing one when this project
    already has the image under this label).

    `version` is the number of the version that answered (the active one when None); `label`
    must be one of its labels. Raises PredictionError: `bad_request` (label, predicted,
    version, the project's cap of examples), `bad_image` / `too_large` (the image),
    `model_unavailable` (no version to check the label against).
    """
    answered = _answering_version(project, version)
    _check_text("label", label, required=True)
    _check_text("predicted", predicted, required=False)
    if not answered.labels:
        raise PredictionError(
            BAD_REQUEST,
            f"Version {answered.number} has no labels (its outputs are the answer), so it "
            "takes no feedback.",
        )
    if label not in answered.labels:
        raise PredictionError(
            BAD_REQUEST,
            f"The label {label!r} is not one of version {answered.number}'s labels: "
            f"{', '.join(answered.labels)}.",
        )
    ext = feedback_image_check(image_bytes)
    sha256 = hashlib.sha256(image_bytes).hexdigest()
    existing = FeedbackExample.objects.filter(project=project, sha256=sha256, label=label).first()
    if existing is not None:
        return existing
    cap = settings.FEEDBACK_MAX_EXAMPLES_PER_PROJECT
    if FeedbackExample.objects.filter(project=project).count() >= cap:
        raise PredictionError(
            BAD_REQUEST,
            f"The project holds as many feedback examples as it may ({cap}); staff can delete "
            "reviewed ones to make room.",
        )
    name = feedback_storage_name(slug=project.slug, label=label, sha256=sha256, ext=ext)
    storage = model_storage()
    # Same name, same bytes: an image stored before (a deleted row's) is not written again.
    if not storage.exists(name):
        name = storage.save(name, ContentFile(image_bytes))
    try:
        example = FeedbackExample.objects.create(
            project=project,
            label=label,
            predicted=predicted,
            version=answered,
            sha256=sha256,
            storage_name=name,
            image_format=ext,
            source=source,
        )
    except IntegrityError:  # the same example, saved by a concurrent request just now
        return FeedbackExample.objects.get(project=project, sha256=sha256, label=label)
    metrics.observe_feedback(project=project.slug, source=str(source))
    return example


def feedback_delete(*, examples) -> int:
    """Delete examples (a queryset) and each stored image no remaining row names. Returns how
    many rows went."""
    names = set(examples.values_list("storage_name", flat=True))
    count, _ = examples.delete()
    kept = set(
        FeedbackExample.objects.filter(storage_name__in=names).values_list(
            "storage_name", flat=True
        )
    )
    storage = model_storage()
    for name in names - kept:
        storage.delete(name)
    return count


MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = ("path", "label", "predicted", "version", "source", "created_at", "reviewed")


def feedback_export(
    *, project: Project, target: Path | zipfile.ZipFile, reviewed_only: bool = False
) -> int:
    """Write a project's examples as `<label>/<sha256>.<ext>` (the layout
    `keras.utils.image_dataset_from_directory` reads; labels as in the storage, percent-encoded
    where unsafe) plus `manifest.csv`, into a directory or a zip file. Returns how many.

    Every label of the active version gets its folder, empty when it has no examples, so Keras
    can be given the version's labels as `class_names` and keep their order."""
    examples = FeedbackExample.objects.filter(project=project).select_related("version")
    if reviewed_only:
        examples = examples.filter(reviewed=True)
    active = ModelVersion.objects.filter(pk=project.active_version_id).first()
    for label in active.labels if active else []:
        if isinstance(target, zipfile.ZipFile):
            target.mkdir(label_segment(label))
        else:
            (target / label_segment(label)).mkdir(parents=True, exist_ok=True)
    storage = model_storage()
    manifest = io.StringIO()
    rows = csv.writer(manifest)
    rows.writerow(MANIFEST_COLUMNS)
    count = 0
    for example in examples.order_by("label", "sha256"):
        path = f"{label_segment(example.label)}/{example.sha256}.{example.image_format}"
        with storage.open(example.storage_name, "rb") as stored:
            if isinstance(target, zipfile.ZipFile):
                with target.open(path, "w") as out:
                    shutil.copyfileobj(stored, out)
            else:
                (target / path).parent.mkdir(parents=True, exist_ok=True)
                with open(target / path, "wb") as out:
                    shutil.copyfileobj(stored, out)
        version = example.version.number if example.version else ""
        created = example.created_at.isoformat()
        rows.writerow(
            [
                path,
                example.label,
                example.predicted,
                version,
                example.source,
                created,
                example.reviewed,
            ]
        )
        count += 1
    if isinstance(target, zipfile.ZipFile):
        target.writestr(MANIFEST_NAME, manifest.getvalue())
    else:
        target.mkdir(parents=True, exist_ok=True)
        (target / MANIFEST_NAME).write_text(manifest.getvalue(), encoding="utf-8")
    return count


def _answering_version(project: Project, number: int | None) -> ModelVersion:
    if number is None:
        # Read afresh: the caller's instance may predate an activation.
        active = ModelVersion.objects.filter(
            pk=Project.objects.filter(pk=project.pk).values("active_version_id")[:1]
        ).first()
        if active is None:
            raise PredictionError(
                MODEL_UNAVAILABLE, "The project has no active model version to take feedback."
            )
        return active
    version = project.versions.filter(number=number).first()
    if version is None:
        raise PredictionError(
            BAD_REQUEST, f"The project {project.slug!r} has no model version {number}."
        )
    return version


def _check_text(field: str, value, *, required: bool) -> None:
    if not isinstance(value, str):
        raise PredictionError(BAD_REQUEST, f'"{field}" must be a string.')
    if required and not value:
        raise PredictionError(BAD_REQUEST, f'The feedback needs a "{field}".')
    if len(value) > MAX_LABEL_LENGTH:
        raise PredictionError(
            BAD_REQUEST, f'"{field}" is longer than {MAX_LABEL_LENGTH} characters.'
        )
