"""The test process's settings: the server's own, with debug on (and so the development key),
as `make test` and `make run` have them. Processes the tests start get theirs from
`harness.servers.outside_env`."""

import os

os.environ.setdefault("DJANGO_DEBUG", "true")

from modelserver.settings import *  # noqa: F403

# No usage flush thread in the test process: it would write to the test database while other
# tests run, and at exit to whichever database the connection then names. Tests of the usage
# rows flush by hand or start a flusher of their own.
USAGE_FLUSH_SECONDS = 0
