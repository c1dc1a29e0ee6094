"""The timer loop: fires due timers through django-q2 and sweeps up after dead processes.

django-q2's own schedules are checked only every ~30 s; machine timers need sub-second
precision, so they live in our Timer table and this loop hands due ones to the workers.
Several loops may run (on several hosts): claiming a timer is deleting its row.
"""
import signal
import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections

from executions.runtime import timers

SWEEP_EVERY_SECONDS = 5.0


class Command(BaseCommand):
    help = "Run the timer loop beside the qcluster: fire due timers, sweep unfinished work."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="fire what is due, sweep, exit")

    def handle(self, *args, once=False, **options):
        poll = settings.DATA_MACHINES["TIMER_POLL_SECONDS"]
        stopping = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopping.append(True))
        last_sweep = 0.0
        if not once:
            self.stdout.write(f"timer loop: polling every {poll:g} s")
        while not stopping:
            close_old_connections()
            fired = timers.fire_due_timers()
            if time.monotonic() - last_sweep >= SWEEP_EVERY_SECONDS or once:
                timers.sweep()
                last_sweep = time.monotonic()
            if once:
                self.stdout.write(f"fired {fired} timer(s)")
                return
            if fired:
                continue
            due = timers.next_timer_due()
            delay = poll if due is None else min(poll, max(0.0, due - time.time()))
            time.sleep(delay)
