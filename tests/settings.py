"""The test process's settings: the server's own, with debug on (and so the development key),
as `make test` and `make run` have them. Processes the tests start get theirs from
`harness.servers.outside_env`."""

import os

os.environ.setdefault("DJANGO_DEBUG", "true")

from modelserver.settings import *  # noqa: F403
