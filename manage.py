#!/usr/bin/env python3
"""Django's command-line utility for Data Machines."""
import os
import sys

# Commands that compute a step here (a sync execution's): their evaluation child starts
# before Django sets itself up, in parallel with it, instead of after (tens of ms of a
# command that should answer at once). An async execution's command leaves it unused.
COMPUTING_COMMANDS = {"trigger", "start_execution"}


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "workflow_site.settings")
    if sys.argv[1:2] and sys.argv[1] in COMPUTING_COMMANDS:
        from executions.runtime import pool  # pure code and settings: no app needed yet

        pool.prestart()
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
