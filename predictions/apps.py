import ctypes
import sys

from django.apps import AppConfig
from django.conf import settings

PR_SET_DUMPABLE = 4


class PredictionsConfig(AppConfig):
    name = "predictions"
    verbose_name = "Model serving"

    def ready(self):
        # Runs in every server process (daphne, the worker, manage.py) before any model check
        # starts a child: see PROCESS_DUMPABLE.
        if not settings.PROCESS_DUMPABLE:
            set_dumpable(False)


def set_dumpable(dumpable: bool) -> None:
    """prctl(PR_SET_DUMPABLE): a process that is not dumpable leaves no core dump, and only
    root (CAP_SYS_PTRACE) may read its /proc/<pid>/environ or memory or ptrace it."""
    if sys.platform != "linux":
        return
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    if prctl(PR_SET_DUMPABLE, int(dumpable), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")
