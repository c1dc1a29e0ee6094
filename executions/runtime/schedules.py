"""Schedules: the timer loop starts the executions a machine's `schedules:` ask for.

A fire is claimed twice over, so that neither two timer loops nor a crash can start it
twice or lose it:
1. the execution is started with the idempotency key `schedule:<name>:<due>`: whoever
   starts the fire first creates it, anyone else (another loop, this loop after a crash)
   gets the same execution back (the unique (machine, idempotency_key) of executions);
2. then `next_fire_at` moves on with compare-and-swap (UPDATE ... WHERE next_fire_at =
   due): one loop moves it, the others see it moved.
A crash between 1 and 2 leaves the fire due: the next round starts it again, gets the
execution it already made and moves on. The rows are the machines app's (they belong to a
machine's definition, not to an execution), so they are read here directly rather than
through the execution store.
"""
from __future__ import annotations

import logging
import time

from django.db import DatabaseError

from executions.runtime import accepting
from machines import schedules
from machines.models import Schedule

log = logging.getLogger("executions.schedules")


def fire_key(name: str, due: float) -> str:
    """The idempotency key of one fire of a schedule: the same for every loop."""
    return f"schedule:{name}:{due:.3f}"


def fire_due_schedules(now: float | None = None, limit: int = 50) -> int:
    """Start one execution for each schedule that is due (once, however many fires were
    missed) and move each on to its next fire time. Returns how many fires this call
    claimed."""
    now = time.time() if now is None else now
    claimed = 0
    for row in Schedule.objects.filter(next_fire_at__lte=now).order_by("next_fire_at")[:limit]:
        due = row.next_fire_at
        try:
            started = accepting.start(row.machine_id, input=dict(row.input),
                                      idempotency_key=fire_key(row.name, due),
                                      actor=f"schedule:{row.name}").execution.pk
        except DatabaseError:
            raise  # the loop retries the round; the fire is still due
        except Exception:  # noqa: BLE001 - one broken schedule must not stop the others
            log.exception("schedule %s of %s could not start an execution for %s; it "
                          "fires again at its next time", row.name, row.machine_id, due)
            started = None
        following = schedules.following(row.declared(), due, now)
        moved = Schedule.objects.filter(pk=row.pk, next_fire_at=due).update(
            next_fire_at=following, last_fired_at=due)
        if moved:
            claimed += 1
            log.info("schedule %s of %s fired for %s: execution %s", row.name,
                     row.machine_id, due, started)
    return claimed
