"""The WebSocket Origin check: browsers must come from this site; scripts send no Origin."""

from channels.security.websocket import OriginValidator
from django.conf import settings


class BrowserOriginValidator(OriginValidator):
    """channels' Origin check against `ALLOWED_HOSTS`, letting clients without an Origin through.

    Browsers always send an Origin, so a page on another site is refused. Scripts send none
    (and could forge one anyway): private projects rely on their token, checked in `connect()`.
    """

    def __init__(self, application):
        super().__init__(application, settings.ALLOWED_HOSTS)

    def valid_origin(self, parsed_origin):
        if parsed_origin is None:
            return True
        return super().valid_origin(parsed_origin)
