"""`run_worker`: the worker process (the Procfile's `worker:` line): registration jobs."""

import logging
import threading
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import connection

from predictions.services import registrations_reap

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Run the registration jobs queued in the database (django-tasks-db's worker), and take "
        "up jobs whose worker died (their lease lapsed)."
    )

    def handle(self, *args, **options):
        reaper = threading.Thread(target=_reap_forever, name="reaper", daemon=True)
        reaper.start()
        call_command(
            "db_worker",
            interval=settings.WORKER_POLL_SECONDS,
            reload=False,
            startup_delay=False,
            verbosity=options["verbosity"],
        )


def _reap_forever() -> None:
    """Every half lease, in its own database connection, until the process exits."""
    while True:
        try:
            registrations_reap()
        except Exception:  # The database is away; try again next round.
            logger.exception("the reaper could not run")
        finally:
            connection.close()
        time.sleep(settings.REGISTRATION_LEASE_SECONDS / 2)
