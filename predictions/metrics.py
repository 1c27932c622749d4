"""Prometheus metrics of this process, served at /metrics."""

import sys

from prometheus_client import Counter, Gauge, Histogram

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


def observe_prediction(timings_ms: dict, *, project: str, transport: str) -> None:
    PREDICTIONS.labels(project, transport).inc()
    for stage, ms in timings_ms.items():
        STAGE_SECONDS.labels(stage).observe(ms / 1000)


def observe_error(code: str, *, project: str, transport: str) -> None:
    ERRORS.labels(project, transport, code).inc()
