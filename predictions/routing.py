"""WebSocket URLs."""

from django.conf import settings
from django.urls import path

from .consumers import EchoConsumer, PredictionConsumer

websocket_urlpatterns = [
    path("ws/projects/<slug:slug>/", PredictionConsumer.as_asgi()),
]
if settings.ECHO_WEBSOCKET:
    websocket_urlpatterns.append(path("ws/echo/", EchoConsumer.as_asgi()))
