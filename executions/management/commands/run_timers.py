"""The timer loop: fires due timers through django-q2 and sweeps up after dead processes.

django-q2's own schedules are checked only every ~30 s; machine timers need sub-second
precision, so they live in our Timer table and this loop hands due ones to the workers.
Several loops may run (on several hosts): claiming a timer is deleting its row.

The loop never dies on a busy or lost database: "database is locked" (SQLite past its busy
timeout), serialization failures, deadlocks and dropped connections (PostgreSQL), and any
other error of one round are logged once, then retried with a growing pause (up to
MAX_BACKOFF_SECONDS) until the round succeeds, which is logged too. Nothing is lost by a
failed round: a claim is one transaction (all or nothing), and an inbox item claimed but not
enqueued is picked up by the sweeper.
"""
import logging
import signal
import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections

from executions.runtime import timers

SWEEP_EVERY_SECONDS = 5.0
FIRST_BACKOFF_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 5.0

log = logging.getLogger("executions.timers")


def is_database_busy(exc: BaseException) -> bool:
    """An error that goes away by itself: SQLite's "database is locked"/"busy", PostgreSQL's
    serialization failure, deadlock or lost connection (Django raises them all as
    OperationalError or InterfaceError)."""
    return isinstance(exc, OperationalError | InterfaceError)


def describe(exc: BaseException) -> str:
    first_line = (str(exc).strip().splitlines() or [""])[0][:300]
    return f"{type(exc).__name__}: {first_line}"


def retrying(function, what, *, stopping=lambda: False, sleep=time.sleep,
             first=FIRST_BACKOFF_SECONDS, maximum=MAX_BACKOFF_SECONDS):
    """function() until it returns, whatever it raises (except KeyboardInterrupt/SystemExit),
    pausing first, 2*first, ... up to `maximum` seconds between attempts. The first failure
    is logged (a busy database as a warning, anything else with its traceback), a different
    error again, the same one not; success after failures is logged once. Returns
    function()'s result, or None when stopping() turned true while waiting."""
    failures, delay, last, started = 0, first, None, 0.0
    while True:
        try:
            result = function()
        except Exception as exc:  # noqa: BLE001 - the loop must outlive every error
            if isinstance(exc, DatabaseError):
                close_old_connections()  # a broken connection is replaced on the next try
            failures += 1
            text = describe(exc)
            if failures == 1:
                started = time.monotonic()
            if text != last:
                if is_database_busy(exc):
                    log.warning("timer loop: %s failed, the database is busy or unreachable "
                                "(%s); retrying with backoff up to %g s",
                                what, text, maximum)
                else:
                    log.exception("timer loop: %s failed (%s); retrying with backoff up to %g s",
                                  what, text, maximum)
                last = text
            waited = 0.0
            while waited < delay:  # in slices, so a stop request is seen quickly
                if stopping():
                    return None
                step = min(0.1, delay - waited)
                sleep(step)
                waited += step
            delay = min(maximum, delay * 2)
            continue
        if failures:
            log.warning("timer loop: %s succeeded again after %d failed attempt(s) in %.1f s",
                        what, failures, time.monotonic() - started)
        return result


class Command(BaseCommand):
    help = "Run the timer loop beside the qcluster: fire due timers, sweep unfinished work."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="fire what is due, sweep, exit")

    def handle(self, *args, once=False, **options):
        poll = settings.DATA_MACHINES["TIMER_POLL_SECONDS"]
        stopping = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopping.append(True))

        def retry(function, what):
            if once:  # a one-off run reports its error instead of waiting it out
                return function()
            return retrying(function, what, stopping=lambda: bool(stopping))

        last_sweep = 0.0
        if not once:
            self.stdout.write(f"timer loop: polling every {poll:g} s")
        while not stopping:
            close_old_connections()
            fired = retry(timers.fire_due_timers, "firing due timers") or 0
            if time.monotonic() - last_sweep >= SWEEP_EVERY_SECONDS or once:
                retry(timers.sweep, "sweeping unfinished work")
                last_sweep = time.monotonic()
            if once:
                self.stdout.write(f"fired {fired} timer(s)")
                return
            if fired or stopping:
                continue
            due = retry(timers.next_timer_due, "reading the next timer")
            delay = poll if due is None else min(poll, max(0.0, due - time.time()))
            time.sleep(delay)
