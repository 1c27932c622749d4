"""`python -m modelserver.serve [daphne options] modelserver.asgi:application`: daphne, with
an access log that never prints a token.

Daphne's own access log writes each request's whole URI, query string included, so a private
project's `?token=` would land in the log (and Heroku's log drains). This runs daphne's own
command line with one change: the access log replaces every `token=` value with `[redacted]`.
"""

import re

from daphne.access import AccessLogGenerator
from daphne.cli import CommandLineInterface
from daphne.server import Server

_TOKEN_VALUE = re.compile(r"((?:^|[?&;])token=)[^&;\s]*", re.IGNORECASE)


def redact(uri: str) -> str:
    """The URI with every `token=` query value replaced by `[redacted]`."""
    return _TOKEN_VALUE.sub(r"\1[redacted]", uri)


class RedactingAccessLog(AccessLogGenerator):
    def write_entry(self, host, date, request, status=None, length=None, ident=None, user=None):
        super().write_entry(host, date, redact(request), status, length, ident, user)


class RedactingServer(Server):
    def __init__(self, *args, action_logger=None, **kwargs):
        if isinstance(action_logger, AccessLogGenerator):
            action_logger = RedactingAccessLog(action_logger.stream)
        super().__init__(*args, action_logger=action_logger, **kwargs)


class ModelServerCommandLine(CommandLineInterface):
    server_class = RedactingServer


if __name__ == "__main__":
    ModelServerCommandLine.entrypoint()
