"""The reader's preferences: the time zone times are shown in (accounts.timezones)."""
from __future__ import annotations

from urllib.parse import unquote

from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme

from accounts import timezones
from explorer.views.access import page_context, viewer


def _next(request) -> str:
    asked = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(asked, allowed_hosts={request.get_host()},
                                       require_https=request.is_secure()):
        return asked
    return "/"


@viewer
def time_zone(request):
    """GET: the choice; POST: keep it in the session ("browser" follows the browser)."""
    error, status = "", 200
    if request.method == "POST":
        asked = request.POST.get("zone", "")
        if asked == timezones.BROWSER or timezones.valid(asked):
            request.session[timezones.SESSION_KEY] = asked
            return redirect(_next(request))
        error, status = "Choose a time zone from the list.", 400
    elif request.method != "GET":
        return render(request, "explorer/time_zone.html", {"error": "GET or POST only."},
                      status=405)
    current = timezones.of_request(request)
    browser = timezones.valid(unquote(request.COOKIES.get(timezones.COOKIE) or ""))
    chosen = request.session.get(timezones.SESSION_KEY) or timezones.BROWSER
    return render(request, "explorer/time_zone.html", {
        "current": current, "browser": browser, "chosen": chosen, "error": error,
        "zones": sorted(timezones.zone_names()), "next": _next(request),
        **page_context(request),
    }, status=status)
