"""WebSocket URLs."""

from django.urls import path

from .consumers import PredictionConsumer

websocket_urlpatterns = [
    path("ws/projects/<slug:slug>/", PredictionConsumer.as_asgi()),
]
