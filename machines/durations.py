"""Durations as people write them: ISO-8601 (`P1D`, `PT30M`, `P1DT12H`, `P2W`) and short
forms (`90s`, `30m`, `2h`, `2d`, `1w`, `1h30m`, `500ms`), and plain numbers of seconds.

Python's own regular expressions are enough here: the grammar is a few fixed units. Years
and months are refused, because they have no fixed length (a timer due "in a month" on
31 January has no good answer); write days (`P30D`). No library fitted: isodate returns
calendar durations for `P1M` that a due time in epoch seconds cannot hold, and it is not
installed. Pure Python: the definition, the engine and the diagrams use it.
"""
from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

_NUMBER = r"\d+(?:[.,]\d+)?"
_ISO = re.compile(
    rf"P(?:(?P<years>{_NUMBER})Y)?(?:(?P<months>{_NUMBER})M)?(?:(?P<weeks>{_NUMBER})W)?"
    rf"(?:(?P<days>{_NUMBER})D)?"
    rf"(?:T(?:(?P<hours>{_NUMBER})H)?(?:(?P<minutes>{_NUMBER})M)?(?:(?P<seconds>{_NUMBER})S)?)?",
    re.IGNORECASE)
_SHORT_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_SHORT = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+")
UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_ISO_SECONDS = {"weeks": 604800, "days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}
MAX_SECONDS = 10 * 365 * 86400  # 10 years: past that it is no longer a time a page can hold
SYNTAX = ("a number of seconds, an ISO-8601 duration (P1D, PT30M, P1DT12H) or a short "
          "form (90s, 30m, 2h, 2d, 1w, 1h30m)")


class DurationError(ValueError):
    """The text is not a duration; the message says what is accepted."""


MAX_TEXT = 64  # characters: no duration is longer, and a long text is refused at once


def looks_like(text: str) -> bool:
    """Whether `text` is written in the duration syntax (it may still be out of range)."""
    text = text.strip()
    if len(text) > MAX_TEXT:
        return False
    iso = _ISO.fullmatch(text) and len(text) > 1 and text[-1] not in "Tt"
    return bool(iso or _SHORT.fullmatch(text))


def seconds(value) -> float:
    """Seconds of a duration: a number (seconds) or a duration text; DurationError else."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DurationError(f"a duration must be {SYNTAX}, not {value!r:.40}")
    if isinstance(value, str):
        total = _parse(value.strip())
    else:
        try:
            total = float(value)
        except OverflowError:
            raise DurationError(f"{value!r:.40} seconds is too long for a duration") from None
    if not math.isfinite(total) or total < 0:
        raise DurationError(f"a duration must be 0 or more seconds, not {value!r:.40}")
    if total > MAX_SECONDS:
        raise DurationError(f"{value!r:.40} is longer than {MAX_SECONDS:,} seconds (10 years)")
    return total


def _parse(text: str) -> float:
    if len(text) > MAX_TEXT:
        raise DurationError(f"{text[:20]!r}… is not a duration: write {SYNTAX}")
    iso = _ISO.fullmatch(text)
    if iso and looks_like(text):
        parts = iso.groupdict()
        if parts["years"] or parts["months"]:
            raise DurationError(f"{text!r}: years and months have no fixed length; "
                                "write days instead (P30D, P365D)")
        return sum(float(parts[unit].replace(",", ".")) * factor
                   for unit, factor in _ISO_SECONDS.items() if parts[unit])
    if _SHORT.fullmatch(text):
        return sum(float(number) * UNIT_SECONDS[unit]
                   for number, unit in _SHORT_PART.findall(text))
    raise DurationError(f"{text!r} is not a duration: write {SYNTAX}")


def add(timestamp, duration) -> str:
    """`timestamp` (epoch seconds or ISO-8601, UTC when it has no offset) plus `duration`,
    as ISO-8601 in UTC (the `add()` helper of expressions)."""
    if isinstance(timestamp, (int, float)) and not isinstance(timestamp, bool):
        moment = datetime.fromtimestamp(timestamp, tz=UTC)
    elif isinstance(timestamp, str):
        try:
            moment = datetime.fromisoformat(timestamp)
        except ValueError:
            raise ValueError(f"add(): {timestamp!r} is not an ISO-8601 time") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    else:
        raise TypeError(f"add(): the time must be epoch seconds or an ISO-8601 text, "
                        f"not {type(timestamp).__name__}")
    if isinstance(duration, str) and duration.strip().startswith("-"):
        delta = -seconds(duration.strip()[1:])
    elif isinstance(duration, (int, float)) and not isinstance(duration, bool) and duration < 0:
        delta = -seconds(-duration)
    else:
        delta = seconds(duration)
    try:
        return (moment + timedelta(seconds=delta)).astimezone(UTC).isoformat()
    except OverflowError:
        raise ValueError("add(): the result is outside the years 1 to 9999") from None
