"""The WebSocket Origin check: browsers must come from this site or from one of the project's
allowed origins; scripts send no Origin.

Browsers always send an Origin, so a page on another site is refused unless the project lists
it. Scripts send none (and could forge one anyway): private projects rely on their token.
"""

from urllib.parse import urlsplit

from channels.security.websocket import OriginValidator
from django.conf import settings


def origin_allowed(origin: str | None, *, project_origins: tuple[str, ...] = ()) -> bool:
    """Whether a WebSocket handshake's Origin header may open a connection."""
    if origin is None:
        return True
    if normalise(origin) in project_origins:
        return True
    # channels' own matching of an Origin against host patterns such as ALLOWED_HOSTS.
    return OriginValidator(None, settings.ALLOWED_HOSTS).valid_origin(urlsplit(origin))


def normalise(origin: str) -> str:
    """`https://App.example.com/` -> `https://app.example.com`."""
    return origin.strip().rstrip("/").lower()
