"""A version's smaller variants (int8 and float16 weights, made by its check beside the float
artifact): measured against the float artifact, and chosen for serving by staff.

The registration job measures each variant once the check passes (`variants_measure`): its
size, its speed (ms per frame: LiteRT with the server's LITERT_THREADS, batch 1, the median of
TIMING_RUNS invokes after a warm-up, the variants taking turns) and how often its top-1 agrees
with the float artifact's. Agreement is counted on the project's stored examples whose labels
are the version's (read as scoring reads them, through the serving pipeline) when at least
FEEDBACK_SCORE_MIN_EXAMPLES of them are readable, and otherwise on a generated parity set
(VARIANT_PARITY_INPUTS seeded inputs in the version's input range). A variant is eligible when
that agreement is at least VARIANT_MIN_AGREEMENT; only an eligible variant may be chosen
(`version_serve_variant`), and a version is served as its chosen variant only while it is
(`selectors.served_variant`).
"""

import logging
import math

import numpy as np
from django.conf import settings
from django.db import transaction

from ..checking.conversion import parity_set
from ..inference.errors import ModelValidationError, one_line
from ..inference.runtime import median_ms_per_frame
from ..models import ModelVersion, Project
from ..selectors import version_spec
from ..serving import load_runtime
from .projects import announce_model_change
from .scoring import example_inputs, labelled_examples
from .versions import require_activate_permission

logger = logging.getLogger(__name__)

Variant = ModelVersion.Variant
FLOAT = Variant.FLOAT.value  # the keys of `variants` are plain strings
FEEDBACK = "feedback"
PARITY_SET = "parity set"
WARM_UP_RUNS = 2
TIMING_RUNS = 10


def variants_measure(version: ModelVersion) -> dict:
    """The version's `variants` with each one measured: size, ms per frame and, for the smaller
    ones, agreement with the float artifact and whether that makes them eligible. `version`
    carries the check's outcome (`variants`: the stored smaller artifacts, or why there are
    none). Never raises: a failure is logged and kept as `"error"` beside the artifacts (which
    are then not eligible)."""
    try:
        return _measure(version)
    except Exception as exc:
        logger.exception("measuring the variants of %s failed", version)
        return {**version.variants, "error": f"Measuring the variants failed: {one_line(exc)}"}


def _measure(version: ModelVersion) -> dict:
    spec = version_spec(version, variant=FLOAT)
    made = {name: entry for name, entry in version.variants.items() if "file" in entry}
    runtimes, sizes = {}, {}
    for name in [FLOAT, *made]:
        runtimes[name], sizes[name] = load_runtime(version_spec(version, variant=name))
    sample = next(parity_set(spec.input_shape, scale=(spec.scale_min, spec.scale_max), count=1))
    speeds = {
        name: round(ms, 3)
        for name, ms in median_ms_per_frame(
            runtimes, sample[None], warm_up=WARM_UP_RUNS, runs=TIMING_RUNS
        ).items()
    }
    measured = {
        **version.variants,
        FLOAT: {"size_bytes": sizes[FLOAT], "ms_per_frame": speeds[FLOAT]},
    }
    if not made:
        return measured
    agreement = _agreement(version, spec, runtimes)
    for name, entry in made.items():
        measured[name] = {**entry, "ms_per_frame": speeds[name], **agreement[name]}
    return measured


def _agreement(version: ModelVersion, spec, runtimes: dict) -> dict[str, dict]:
    """Per smaller variant: `{"agreement", "examples", "on", "eligible"}` (or `"skipped"` with
    the reason, and not eligible, for a model with a single output value)."""
    smaller = [name for name in runtimes if name != FLOAT]
    if math.prod(version.output_shape) < 2:
        skipped = {
            "agreement": None,
            "eligible": False,
            "skipped": f"Version {version.number} answers one value: there is no top-1 to "
            "compare, so no smaller variant may be served.",
        }
        return dict.fromkeys(smaller, skipped)
    minimum = settings.FEEDBACK_SCORE_MIN_EXAMPLES
    agreed, compared = _compare(runtimes, smaller, _feedback_inputs(version, spec))
    on = FEEDBACK
    if compared < minimum:
        scale = (spec.scale_min, spec.scale_max)
        inputs = parity_set(spec.input_shape, scale=scale, count=settings.VARIANT_PARITY_INPUTS)
        agreed, compared = _compare(runtimes, smaller, inputs)
        on = PARITY_SET
    shares = {name: agreed[name] / compared if compared else 0.0 for name in smaller}
    return {
        name: {
            "agreement": round(shares[name], 4),
            "examples": compared,
            "on": on,
            "eligible": compared > 0 and shares[name] >= settings.VARIANT_MIN_AGREEMENT,
        }
        for name in smaller
    }


def _feedback_inputs(version: ModelVersion, spec):
    """The model inputs of the project's stored examples with the version's labels (the
    unreadable ones left out), one at a time."""
    if not version.labels:
        return
    for storage_name, _ in labelled_examples(version):
        inputs = example_inputs(storage_name, [spec])
        if inputs is not None:
            yield inputs[0]


def _compare(runtimes: dict, smaller: list[str], inputs) -> tuple[dict[str, int], int]:
    """How often each smaller variant's top-1 is the float artifact's, and on how many inputs."""
    agreed = dict.fromkeys(smaller, 0)
    compared = 0
    for model_input in inputs:
        reference = _top1(runtimes[FLOAT], model_input)
        for name in smaller:
            agreed[name] += _top1(runtimes[name], model_input) == reference
        compared += 1
    return agreed, compared


def _top1(runtime, model_input: np.ndarray) -> int:
    return int(np.argmax(runtime.predict(model_input[None])[0]))


def variant_check(version: ModelVersion, variant: str) -> None:
    """Raises `ModelValidationError`, in words, unless `variant` may serve the version: the
    float artifact always may, a smaller variant only when it was made and is eligible."""
    if variant not in Variant.values:
        raise ModelValidationError(
            f"{variant!r} is not a variant; choose one of {', '.join(Variant.values)}."
        )
    if variant == FLOAT:
        return
    entry = version.variants.get(variant, {})
    if "file" not in entry:
        why = entry.get("error") or "its check made none (only Keras and HDF5 sources get one)."
        raise ModelValidationError(f"Version {version.number} has no {variant} variant: {why}")
    if "eligible" not in entry:
        why = version.variants.get("error", "it was not measured")
        raise ModelValidationError(
            f"The {variant} variant of version {version.number} cannot be served: {why}."
        )
    if not entry["eligible"]:
        if entry.get("skipped"):
            raise ModelValidationError(entry["skipped"])
        on = "stored feedback examples" if entry["on"] == FEEDBACK else "generated parity inputs"
        raise ModelValidationError(
            f"The {variant} variant of version {version.number} gives the float version's top "
            f"answer on {entry['agreement']:.1%} of {entry['examples']} {on}; serving it takes "
            f"at least {settings.VARIANT_MIN_AGREEMENT:.0%}."
        )


def version_serve_variant(*, version: ModelVersion, variant: str, actor=None) -> None:
    """Serve a version as `variant` (see `variant_check`); when it is the project's version in
    service or its candidate, its connections then load that artifact. An `actor` (a user)
    needs the activate permission, as putting a version in service does."""
    require_activate_permission(actor)
    variant_check(version, variant)
    with transaction.atomic():
        ModelVersion.objects.filter(pk=version.pk).update(serve_variant=variant)
        project = Project.objects.get(pk=version.project_id)
        if version.pk in (project.active_version_id, project.candidate_id):
            transaction.on_commit(
                lambda: announce_model_change(project.slug, project.active_version_id)
            )
    version.serve_variant = variant
    logger.info("%s is served as its %s variant", version, variant)
