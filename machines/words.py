"""Durations in words, for diagrams, timelines and pages. Pure Python: no Django.

One formatter with two readings: time that passed (how long work took, a median stay,
how long ago) is rounded to what a person needs ("2 min"); a duration written in a
definition (a wait of 90 seconds) is shown exactly ("90 s"), since rounding it would
misstate the machine.
"""
from __future__ import annotations

from datetime import UTC, datetime, tzinfo


def duration(seconds: float | None, *, exact: bool = False) -> str:
    """Passed time: 250 ms, 1.2 s, 45 s, 3 min, 2 h 5 min, 3 days.
    `exact` (a definition's wait): 5 s, 90 s, 2.5 min, 3 h, 1.5 d."""
    if seconds is None:
        return ""
    if exact:
        for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
            if seconds >= 2 * size:
                return f"{round(seconds / size, 1):g} {unit}"
        return f"{seconds:g} s"
    if seconds < 0.9995:  # 0.9996 s is "1 s", not "1000 ms"
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.3g} s"
    minutes = seconds / 60
    if minutes < 60:
        return f"{minutes:.0f} min"
    hours, minutes = divmod(round(minutes), 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} days"


def relative(seconds: float) -> str:
    """How far a moment is from now, `seconds` after it (negative: still to come):
    "in 29 days", "3 min ago", "just now"."""
    if abs(seconds) < 1:
        return "just now"
    far = f"{round(abs(seconds))} s" if abs(seconds) < 59.5 else duration(abs(seconds))
    return f"in {far}" if seconds < 0 else f"{far} ago"


def moment(at: datetime, zone: tzinfo, *, now: datetime | None = None,
           seconds: bool = False) -> str:
    """A moment as a person reads it, with its date and zone: "Dec 31, 02:01 UTC";
    the year when it is not this year's; the seconds when asked."""
    local = at.astimezone(zone)
    today = (now or datetime.now(UTC)).astimezone(zone)
    day = f"{local:%b} {local.day}" + (f", {local.year}" if local.year != today.year else "")
    clock = f"{local:%H:%M:%S}" if seconds else f"{local:%H:%M}"
    return f"{day}, {clock} {zone_name(local)}"


def zone_name(local: datetime) -> str:
    """The zone's short name at that moment: "UTC", "CET", "EDT"; "UTC+04" where the
    zone has no letters (Asia/Dubai says "+04")."""
    name = local.tzname() or "UTC"
    return f"UTC{name}" if name[:1] in "+-" else name


def moment_and_relative(at: datetime, zone: tzinfo, *, now: datetime | None = None,
                        seconds: bool = False) -> str:
    """"Dec 31, 02:01 UTC · in 29 days"."""
    now = now or datetime.now(UTC)
    return (f"{moment(at, zone, now=now, seconds=seconds)} · "
            f"{relative((now - at).total_seconds())}")
