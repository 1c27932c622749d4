"""Liveness, readiness and Prometheus metrics."""

import logging
import secrets

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import metrics as _metrics  # noqa: F401  (registers this server's metrics)
from ..models import model_storage
from ..openapi.declare import METRICS_TOKEN, Reply, api_operation, json_reply

logger = logging.getLogger(__name__)


@api_operation(
    summary="Liveness: 200 while the process serves",
    tags=("health",),
    responses={200: json_reply("The process serves.", "Health")},
)
async def healthz(request):
    return JsonResponse({"status": "ok"})


@api_operation(
    summary="Readiness: the database and the model storage answer",
    tags=("health",),
    responses={
        200: json_reply("Both answer.", "Health"),
        503: json_reply("A dependency does not answer; it is named.", "Unready"),
    },
)
async def readyz(request):
    """200 when the database and the model storage answer, 503 with the reason otherwise."""
    problems = await sync_to_async(_readiness_problems, thread_sensitive=False)()
    if problems:
        return JsonResponse({"status": "unavailable", "problems": problems}, status=503)
    return JsonResponse({"status": "ok"})


def _readiness_problems() -> list[str]:
    problems = []
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:  # the error's text stays in the log: it may name hosts and users
        logger.exception("readiness: the database does not answer")
        problems.append("database: does not answer")
    finally:
        connection.close()
    try:
        model_storage().listdir("")
    except FileNotFoundError:
        pass  # An empty local folder that was never written to is fine.
    except Exception:
        logger.exception("readiness: the model storage does not answer")
        problems.append("model storage: does not answer")
    return problems


@api_operation(
    summary="Prometheus metrics",
    tags=("health",),
    responses={
        200: Reply("The Prometheus text exposition.", {"text/plain": {"type": "string"}}),
        401: json_reply(
            "Debug is off and the metrics token is missing or wrong.",
            "ErrorMessage",
            **{"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}},
        ),
        404: json_reply(
            "Debug is off and METRICS_TOKEN is unset: metrics are off.", "ErrorMessage"
        ),
    },
    security=({METRICS_TOKEN: []},),
)
async def metrics(request):
    """Prometheus text; with debug off only for `Authorization: Bearer $METRICS_TOKEN`, and
    off (404) when no token is set: the metrics name every project, private ones too."""
    if not settings.DEBUG:
        token = settings.METRICS_TOKEN
        if not token:
            return JsonResponse({"error": "Metrics are off: set METRICS_TOKEN."}, status=404)
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(
            given.strip().encode(), token.encode()
        ):
            response = JsonResponse(
                {"error": "Send the metrics token: Authorization: Bearer <METRICS_TOKEN>."},
                status=401,
            )
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    text = await sync_to_async(_exposition, thread_sensitive=False)()
    return HttpResponse(text, content_type=CONTENT_TYPE_LATEST)


def _exposition() -> bytes:
    """The registry's text, in a thread: the feedback collector counts in the database."""
    try:
        return generate_latest()
    finally:
        connection.close()
