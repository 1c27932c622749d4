"""A version's score on its project's stored feedback, beside the version in service.

The registration job scores a version once its check passes, before any activation; the admin
and `score_version` score a ready version again. The versions run here as the server runs them:
each example's bytes are decoded and preprocessed by the serving pipeline (within the process's
decode budget) and fed to the version's LiteRT artifact, one image at a time. The runtimes are
loaded for the scoring and let go after it, not kept in the serving cache. Everything blocks.
"""

import logging
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from ..inference.errors import ModelValidationError, PredictionError, one_line
from ..inference.frames import Frame
from ..inference.pipeline import prepare_frame, top_labels
from ..inference.spec import ModelSpec
from ..models import FeedbackExample, ModelVersion, Project, model_storage
from ..selectors import version_spec
from ..serving import limits, load_runtime

logger = logging.getLogger(__name__)

Status = ModelVersion.Status


def version_score(*, version: ModelVersion) -> dict:
    """Score a ready version (see `feedback_score`) and keep the score on it. Raises
    ModelValidationError for a version that is not ready."""
    if version.status != Status.READY:
        raise ModelValidationError(
            f"Version {version.number} is {version.status}: only a ready version is scored."
        )
    score = feedback_score(version)
    # Only while it is ready: a check queued since then scores it again.
    ModelVersion.objects.filter(pk=version.pk, status=Status.READY).update(feedback_score=score)
    version.feedback_score = score
    return score


def feedback_score(version: ModelVersion) -> dict:
    """How a version that passed its check answers its project's latest stored examples (at
    most `FEEDBACK_SCORE_MAX_EXAMPLES`, those whose label is one of its labels), and how the
    version in service answers the same ones: an answer agrees when its top label is the
    example's. Never raises: a failure is logged and becomes `{"error": "<words>"}`."""
    try:
        return _score(version)
    except Exception as exc:
        logger.exception("scoring %s on stored feedback failed", version)
        return {"error": one_line(exc), "scored_at": _now()}


def _score(version: ModelVersion) -> dict:
    minimum = settings.FEEDBACK_SCORE_MIN_EXAMPLES
    if not version.labels:
        return {
            "examples": 0,
            "skipped": f"Version {version.number} has no labels (its outputs are the answer), "
            "so labelled examples say nothing about it.",
        }
    examples = labelled_examples(version)
    if len(examples) < minimum:
        return {
            "examples": len(examples),
            "skipped": f"The project has {len(examples)} stored examples with one of this "
            f"version's labels; a score takes at least {minimum}.",
        }
    active = _other_active_version(version)
    models = [_Model.load(version)] + ([_Model.load(active)] if active else [])
    agreed = [0] * len(models)
    unreadable = 0
    for name, label in examples:
        # Unreadable for one version is unreadable for all: both score the same examples.
        inputs = example_inputs(name, [model.spec for model in models])
        if inputs is None:
            unreadable += 1
            continue
        for i, (model, model_input) in enumerate(zip(models, inputs, strict=True)):
            agreed[i] += model.answer(model_input) == label
    scored = len(examples) - unreadable
    if scored < minimum:
        return {
            "examples": scored,
            "unreadable": unreadable,
            "skipped": f"{scored} of the {len(examples)} stored examples with this version's "
            f"labels could be read; a score takes at least {minimum}.",
        }
    return {
        "examples": scored,
        "agreed": agreed[0],
        "share": round(agreed[0] / scored, 4),
        "unreadable": unreadable,
        "active_version": active.number if active else None,
        "active_agreed": agreed[1] if active else None,
        "active_share": round(agreed[1] / scored, 4) if active else None,
        "scored_at": _now(),
    }


def labelled_examples(version: ModelVersion) -> list[tuple[str, str]]:
    """(storage name, label) of the project's latest stored examples whose label is one of the
    version's, at most `FEEDBACK_SCORE_MAX_EXAMPLES`."""
    return list(
        FeedbackExample.objects.filter(project_id=version.project_id, label__in=version.labels)
        .order_by("-created_at", "-pk")
        .values_list("storage_name", "label")[: settings.FEEDBACK_SCORE_MAX_EXAMPLES]
    )


def _other_active_version(version: ModelVersion) -> ModelVersion | None:
    """The project's version in service, read afresh, when it is ready and not this one."""
    active_id = (
        Project.objects.filter(pk=version.project_id)
        .values_list("active_version_id", flat=True)
        .first()
    )
    if active_id is None or active_id == version.pk:
        return None
    return ModelVersion.objects.filter(pk=active_id, status=Status.READY).first()


@dataclass(frozen=True)
class _Model:
    """A version's runtime, loaded as the server loads it, and what it needs to answer."""

    spec: ModelSpec
    runtime: object

    @classmethod
    def load(cls, version: ModelVersion) -> "_Model":
        spec = version_spec(version)
        runtime, _ = load_runtime(spec)
        return cls(spec, runtime)

    def answer(self, model_input) -> str:
        """The top label, as the server's reply would put it first."""
        output = self.runtime.predict(model_input[None])[0]
        return top_labels(output, self.spec.labels, 1)[0]["label"]


def example_inputs(storage_name: str, specs: list[ModelSpec]) -> list | None:
    """One stored example as each version's model input, or None when its file is gone or no
    longer decodes (or is over the server's image limits)."""
    try:
        with model_storage().open(storage_name, "rb") as stored:
            # One byte past the limit is enough for decoding to refuse it as too large.
            data = stored.read(settings.MAX_IMAGE_BYTES + 1)
        frame = Frame(id=storage_name, image=data)
        return [prepare_frame(frame, spec=spec, limits=limits()).model_input for spec in specs]
    except (FileNotFoundError, PredictionError):
        return None


def _now() -> str:
    return timezone.now().isoformat(timespec="seconds")
