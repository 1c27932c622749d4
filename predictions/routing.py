"""WebSocket URLs."""

from django.conf import settings
from django.urls import path, re_path

from .consumers import EchoConsumer, PredictionConsumer
from .legacy_consumer import LegacyPredictionConsumer

websocket_urlpatterns = [
    path("ws/projects/<slug:slug>/", PredictionConsumer.as_asgi()),
    # The original service's socket; a name may hold `/` (an S3 key).
    re_path(r"^models/(?P<name>.+)/get_predictions$", LegacyPredictionConsumer.as_asgi()),
]
if settings.ECHO_WEBSOCKET:
    websocket_urlpatterns.append(path("ws/echo/", EchoConsumer.as_asgi()))
