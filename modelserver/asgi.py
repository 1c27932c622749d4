"""ASGI entry point: Django for HTTP, the prediction consumers for WebSockets."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modelserver.settings")
# Set up Django before importing anything that touches models.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter

from predictions.routing import websocket_urlpatterns

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # The Origin check needs the project (its allowed origins): the consumer makes it.
        "websocket": AuthMiddlewareStack(URLRouter(websocket_urlpatterns)),
    }
)
