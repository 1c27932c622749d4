"""Prometheus metrics of this process, served at /metrics, and the per-version usage counts
(`usage.py`) recorded beside them."""

import logging
import sys

from django.db.models import Count, F, Q
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

from . import usage
from .models import Project

logger = logging.getLogger(__name__)

PREDICTIONS = Counter(
    "modelserver_predictions_total", "Frames answered with a prediction.", ["project", "transport"]
)
ERRORS = Counter(
    "modelserver_errors_total", "Frames answered with an error.", ["project", "transport", "code"]
)
STAGE_SECONDS = Histogram(
    "modelserver_stage_seconds",
    "Time per frame in each stage (decode, preprocess, inference, total).",
    ["stage"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
WEBSOCKETS = Gauge("modelserver_websocket_connections", "Open WebSocket connections.")
MODEL_LOADS = Counter("modelserver_model_loads_total", "Models loaded into this process.")
TENSORFLOW_IMPORTED = Gauge(
    "modelserver_tensorflow_imported",
    "1 when TensorFlow is imported in this process (only Keras-served versions need it).",
)
TENSORFLOW_IMPORTED.set_function(lambda: "tensorflow" in sys.modules)
FEEDBACK = Counter(
    "modelserver_feedback_total",
    "Feedback examples stored by this process (source: page or api).",
    ["project", "source"],
)


def observe_prediction(
    timings_ms: dict, *, project: str, transport: str, version: int | None = None
) -> None:
    """A frame answered with a prediction by `version` (None: no version)."""
    PREDICTIONS.labels(project, transport).inc()
    for stage, ms in timings_ms.items():
        STAGE_SECONDS.labels(stage).observe(ms / 1000)
    usage.record_answer(project, version or 0, timings_ms.get("total", 0.0))


def observe_error(code: str, *, project: str, transport: str, version: int | None = None) -> None:
    """A frame answered with the error `code`, by `version` when one was assigned."""
    ERRORS.labels(project, transport, code).inc()
    usage.record_error(project, version or 0, code)


def observe_feedback(*, project: str, source: str) -> None:
    """A new feedback example stored."""
    FEEDBACK.labels(project, source).inc()


class FeedbackAgreementCollector:
    """Per project, for its version in service and its candidate only (so at most two
    `version` labels a project): feedback naming what the version answered (`judged`) and how
    much of it agreed with the label given, counted in the database at scrape time, so across
    every process. Blocks: scrape off the event loop. A database failure leaves these series
    out (logged) rather than failing the scrape."""

    def describe(self):
        # Names only: without this, registering would call collect() and query the database.
        return self._families()

    def collect(self):
        judged, agreed = self._families()
        try:
            rows = feedback_agreement_rows()
        except Exception:
            logger.exception("metrics: could not count feedback agreement")
            return
        for slug, role, number, total, agree in rows:
            judged.add_metric([slug, str(number), role], total)
            agreed.add_metric([slug, str(number), role], agree)
        yield judged
        yield agreed

    @staticmethod
    def _families():
        labels = ["project", "version", "role"]
        return [
            GaugeMetricFamily(
                "modelserver_feedback_judged",
                "Feedback examples that name what the version answered (role: active or "
                "candidate).",
                labels=labels,
            ),
            GaugeMetricFamily(
                "modelserver_feedback_agreed",
                "Of those, the examples whose label is what the version answered.",
                labels=labels,
            ),
        ]


def feedback_agreement_rows() -> list[tuple[str, str, int, int, int]]:
    """(project slug, "active" or "candidate", version number, judged, agreed) for every
    project's version in service and candidate (a candidate that is the active version is
    left out), in one query."""
    judged = ~Q(feedback__predicted="")  # says what the version answered
    agreed = judged & Q(feedback__predicted=F("feedback__label"))
    on_active = Q(feedback__version_id=F("active_version_id"))
    on_candidate = Q(feedback__version_id=F("candidate_id"))
    projects = (
        Project.objects.filter(Q(active_version__isnull=False) | Q(candidate__isnull=False))
        .values_list("slug", "active_version__number", "candidate__number")
        .annotate(
            active_judged=Count("feedback", filter=judged & on_active),
            active_agreed=Count("feedback", filter=agreed & on_active),
            candidate_judged=Count("feedback", filter=judged & on_candidate),
            candidate_agreed=Count("feedback", filter=agreed & on_candidate),
        )
        .order_by("slug")
    )
    rows = []
    for slug, active, candidate, *counts in projects:
        if active is not None:
            rows.append((slug, "active", active, counts[0], counts[1]))
        if candidate is not None and candidate != active:
            rows.append((slug, "candidate", candidate, counts[2], counts[3]))
    return rows


REGISTRY.register(FeedbackAgreementCollector())
