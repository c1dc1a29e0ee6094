"""The timer loop: fires due timers through django-q2, starts the executions schedules ask
for (about once a second), and sweeps up after dead processes.

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

from executions import operations
from executions.runtime import schedules, timers

SWEEP_EVERY_SECONDS = 5.0
# Schedules fire on whole minutes (cron) or every minute at most: a look each second is
# soon enough, and spares the database a query per 50 ms round.
SCHEDULES_EVERY_SECONDS = 1.0
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


class Attempts:
    """One recurring step of the loop. run() never raises: a failure is logged once per
    streak (a busy database as a warning, anything else with its traceback; a different
    error again), `pause` says how long to wait before the next try (first, 2*first, ... up
    to maximum), and the first success after failures is logged."""

    def __init__(self, what, *, first=FIRST_BACKOFF_SECONDS, maximum=MAX_BACKOFF_SECONDS):
        self.what, self.first, self.maximum = what, first, maximum
        self.failures, self.last, self.started = 0, None, 0.0
        self.pause, self.next_pause = 0.0, first

    def run(self, function):
        """(True, function()) or (False, None) when it raised."""
        try:
            result = function()
        except Exception as exc:  # noqa: BLE001 - the loop must outlive every error
            if isinstance(exc, DatabaseError):
                close_old_connections()  # a broken connection is replaced on the next try
            self.failures += 1
            if self.failures == 1:
                self.started = time.monotonic()
            text = describe(exc)
            if text != self.last:
                if is_database_busy(exc):
                    log.warning("timer loop: %s failed, the database is busy or unreachable "
                                "(%s); retrying with backoff up to %g s",
                                self.what, text, self.maximum)
                else:
                    log.exception("timer loop: %s failed (%s); retrying with backoff up to %g s",
                                  self.what, text, self.maximum)
                self.last = text
            self.pause, self.next_pause = self.next_pause, min(self.maximum, self.next_pause * 2)
            return False, None
        if self.failures:
            log.warning("timer loop: %s succeeded again after %d failed attempt(s) in %.1f s",
                        self.what, self.failures, time.monotonic() - self.started)
            self.failures, self.last, self.next_pause = 0, None, self.first
        self.pause = 0.0
        return True, result


def sweep() -> None:
    """What dead processes left: the runtime's unfinished work, and bulk jobs that stopped."""
    timers.sweep()
    operations.resume_stalled()


def pause(seconds, stopping, sleep=time.sleep) -> bool:
    """Sleep in slices so a stop request is seen quickly; False when asked to stop."""
    waited = 0.0
    while waited < seconds:
        if stopping():
            return False
        step = min(0.1, seconds - waited)
        sleep(step)
        waited += step
    return not stopping()


def retrying(function, what, *, stopping=lambda: False, sleep=time.sleep,
             first=FIRST_BACKOFF_SECONDS, maximum=MAX_BACKOFF_SECONDS):
    """function() until it returns, whatever it raises (except KeyboardInterrupt/SystemExit),
    with Attempts' logging and backoff. Returns its result, or None when stopping() turned
    true while waiting."""
    attempts = Attempts(what, first=first, maximum=maximum)
    while True:
        ok, result = attempts.run(function)
        if ok:
            return result
        if not pause(attempts.pause, stopping, sleep):
            return None


class Command(BaseCommand):
    help = ("Run the timer loop beside the qcluster: fire due timers, start scheduled "
            "executions, sweep unfinished work.")

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="fire what is due, sweep, exit")

    def handle(self, *args, once=False, **options):
        poll = settings.DATA_MACHINES["TIMER_POLL_SECONDS"]
        stopping = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopping.append(True))

        if once:  # a one-off run reports its error instead of waiting it out
            fired = timers.fire_due_timers()
            started = schedules.fire_due_schedules()
            sweep()
            self.stdout.write(f"fired {fired} timer(s) and {started} schedule(s)")
            return

        def stop_requested():
            return bool(stopping)

        # Each step on its own: a sweep that keeps failing does not hold up the timers.
        firing = Attempts("firing due timers")
        sweeping = Attempts("sweeping unfinished work")
        reading = Attempts("reading the next timer")
        scheduling = Attempts("starting scheduled executions")
        next_sweep = next_schedules = 0.0
        self.stdout.write(f"timer loop: polling every {poll:g} s")
        while not stopping:
            close_old_connections()
            ok, fired = firing.run(timers.fire_due_timers)
            if time.monotonic() >= next_schedules:
                scheduled, _ = scheduling.run(schedules.fire_due_schedules)
                next_schedules = time.monotonic() + (SCHEDULES_EVERY_SECONDS if scheduled
                                                     else scheduling.pause)
            if time.monotonic() >= next_sweep:
                swept, _ = sweeping.run(sweep)
                next_sweep = time.monotonic() + (SWEEP_EVERY_SECONDS if swept
                                                 else sweeping.pause)
            if not ok:
                pause(firing.pause, stop_requested)
                continue
            if fired:
                continue
            ok, due = reading.run(timers.next_timer_due)
            if not ok:
                pause(reading.pause, stop_requested)
                continue
            delay = poll if due is None else min(poll, max(0.0, due - time.time()))
            time.sleep(delay)
