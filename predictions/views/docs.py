"""The API's description: its OpenAPI and AsyncAPI documents, and the docs page that shows
them (Swagger UI from local static files, and the WebSocket protocols rendered here)."""

from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from ..openapi.asyncapi import asyncapi_document, channel_summaries
from ..openapi.document import openapi_document


def _server_url(request) -> str:
    """The site's root as the client reached it (https behind Heroku's router)."""
    return request.build_absolute_uri("/").rstrip("/")


@require_GET
async def openapi_json(request):
    """The OpenAPI 3.1 document of every HTTP route."""
    return JsonResponse(openapi_document(server_url=_server_url(request)))


@require_GET
async def asyncapi_json(request):
    """The AsyncAPI 3.0 document of the WebSocket protocols."""
    document = asyncapi_document(host=request.get_host(), secure=request.is_secure())
    return JsonResponse(document)


@require_GET
async def api_docs(request):
    """Swagger UI on the OpenAPI document, and the WebSocket protocols."""
    document = asyncapi_document(host=request.get_host(), secure=request.is_secure())
    context = {"channels": channel_summaries(document), "asyncapi": document}
    return render(request, "predictions/api_docs.html", context)
