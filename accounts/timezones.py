"""The time zone a person reads times in: the one they chose (kept in their session),
else their browser's (the `dm_tz` cookie static/dm.js sets), else UTC, said plainly.

`TimezoneMiddleware` activates it for the request (django.utils.timezone), so templates'
dates and the explorer's sentences are in it; `request.time_zone` says which and why.
"""
from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from functools import cache
from urllib.parse import unquote

from django.utils import timezone

SESSION_KEY = "dm_time_zone"  # a zone name the user chose, or "browser"
COOKIE = "dm_tz"  # the browser's zone, written by dm.js
BROWSER = "browser"


@cache
def zone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) | {"UTC"}


def valid(name: str | None) -> str | None:
    """`name` if it is a known IANA zone (at most 64 characters), else None."""
    if not name or len(name) > 64 or name not in zone_names():
        return None
    return name


@dataclass(frozen=True)
class TimeZone:
    name: str  # an IANA name
    source: str  # "chosen", "browser" or "default"

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.name)

    @property
    def said(self) -> str:
        how = {"chosen": "your choice", "browser": "your browser's",
               "default": "the default"}[self.source]
        return f"{self.name} ({how})"


def of_request(request) -> TimeZone:
    chosen = getattr(request, "session", {}).get(SESSION_KEY)
    if chosen != BROWSER and valid(chosen):
        return TimeZone(chosen, "chosen")
    browser = valid(unquote(request.COOKIES.get(COOKIE) or ""))
    if browser:
        return TimeZone(browser, "browser")
    return TimeZone("UTC", "default")


class TimezoneMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.time_zone = of_request(request)
        timezone.activate(request.time_zone.zone)
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()
