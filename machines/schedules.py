"""When a machine's `schedules:` fire: cron expressions (evaluated by cronsim, in the
schedule's time zone) and fixed intervals. Pure: times in and out as epoch seconds.

Policies (docs/language.md "schedules"):
- A cron time that does not exist in the zone (the hour skipped when clocks go forward)
  fires at the first minute after the gap; a time that happens twice (clocks go back)
  fires once, at the first of the two, unless the expression names every hour or minute
  (`*/30 * * * *` fires in both). This is Debian cron's behaviour, which cronsim follows.
- Fires missed while nothing ran (the timer loop was down) fire ONCE when it is back,
  then the schedule carries on from the next time after now: never a burst of N starts.
"""
from __future__ import annotations

import math
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from machines.definition import Schedule

MIN_EVERY_SECONDS = 60


def cron_problem(expression: str) -> str | None:
    """Why `expression` is not a cron expression cronsim accepts (None: it is)."""
    try:
        CronSim(expression, datetime(2000, 1, 1))
    except CronSimError as exc:
        return str(exc) or "not a cron expression"
    return None


def zone_problem(name: str) -> str | None:
    """Why `name` is not an IANA time zone (None: it is)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {name!r}"
    return None


def explain(cron: str) -> str:
    """A cron expression in words ("At 09:30 on Monday through Friday"), by cronsim."""
    return CronSim(cron, datetime(2000, 1, 1)).explain()


def next_after(schedule: Schedule, after: float) -> float:
    """The first fire time strictly after `after` (epoch seconds)."""
    if schedule.every is not None:
        return after + schedule.every
    assert schedule.cron is not None
    zone = ZoneInfo(schedule.time_zone)
    start = datetime.fromtimestamp(after, zone)
    return next(iter(CronSim(schedule.cron, start))).timestamp()


def following(schedule: Schedule, due: float, now: float) -> float:
    """After the fire that was due at `due` (claimed at `now`): the next fire time after
    now. Intervals keep their rhythm (due + k * every); fires missed in between are
    skipped, so a schedule that was down for a day fires once, not once per period."""
    if schedule.every is not None:
        periods = max(1, math.floor((now - due) / schedule.every) + 1)
        return due + periods * schedule.every
    return next_after(schedule, max(due, now))


def upcoming(schedule: Schedule, first: float, count: int) -> list[float]:
    """`first` and the fire times after it: what a page shows as "next runs"."""
    times = [first]
    while len(times) < count:
        times.append(next_after(schedule, times[-1]))
    return times
