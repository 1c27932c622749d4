"""Liveness, readiness and Prometheus metrics."""

from asgiref.sync import sync_to_async
from django.db import connection
from django.http import HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..models import model_storage


async def healthz(request):
    return JsonResponse({"status": "ok"})


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
    except Exception as exc:
        problems.append(f"database: {exc}")
    finally:
        connection.close()
    try:
        model_storage().listdir("")
    except FileNotFoundError:
        pass  # An empty local folder that was never written to is fine.
    except Exception as exc:
        problems.append(f"model storage: {exc}")
    return problems


async def metrics(request):
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
