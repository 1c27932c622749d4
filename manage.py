#!/usr/bin/env python
"""Django's command-line utility for the model server."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modelserver.settings")
    # A command's stdout is its answer (register_model prints the version number): logs go to
    # stderr here, and to stdout in the server.
    os.environ.setdefault("LOG_STREAM", "stderr")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
