"""Durations in words, for diagrams, timelines and pages. Pure Python: no Django.

One formatter with two readings: time that passed (how long work took, a median stay,
how long ago) is rounded to what a person needs ("2 min"); a duration written in a
definition (a wait of 90 seconds) is shown exactly ("90 s"), since rounding it would
misstate the machine.
"""
from __future__ import annotations


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
    if seconds < 1:
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
