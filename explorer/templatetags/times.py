"""Times on the explorer's pages: never a time without its date and zone, always with how
far it is from now ("Dec 31, 02:01 UTC · in 29 days"), in the reader's time zone (the one
accounts.timezones activated). static/dm.js keeps the relative part up to date."""
from __future__ import annotations

from datetime import UTC, datetime

from django import template
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from machines.words import moment, relative

register = template.Library()


def as_datetime(value) -> datetime | None:
    """A datetime, or an epoch number (timers store those), else None."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, ValueError, OSError):
            return None
    return None


def when_html(value, *, seconds: bool = False, countdown: bool = False,
              now: datetime | None = None) -> SafeString:
    """<time> with the date, time and zone, then " · in 29 days" in a span dm.js updates
    (`data-countdown`: every second, for what the banner waits for)."""
    at = as_datetime(value)
    if at is None:
        return format_html("{}", "?" if value is None else f"{value} (out of range)")
    now = now or datetime.now(UTC)
    zone = timezone.get_current_timezone()
    tick = " data-countdown" if countdown else ""
    return format_html(
        '<time datetime="{}" title="{}">{}</time><span class="when-sep"> · </span>'
        '<span class="when-rel" data-rel="{}"{}>{}</span>',
        at.astimezone(UTC).isoformat(), moment(at, UTC, now=now, seconds=True),
        moment(at, zone, now=now, seconds=seconds), f"{at.timestamp():.3f}",
        SafeString(tick), relative((now - at).total_seconds()))


@register.filter
def when(value, arg: str = ""):
    """{{ at|when }}, {{ at|when:"s" }} with seconds, {{ due|when:"countdown" }}."""
    return when_html(value, seconds="s" in arg.split(","),
                     countdown="countdown" in arg.split(","))
