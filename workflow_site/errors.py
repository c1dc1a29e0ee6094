"""The site's error pages (templates/404.html, 403.html, 500.html) and /favicon.ico.

404 and 403 render with the request, so the top bar knows who is signed in. 500 must work
when nothing else does: it renders its template with no request, no context processors and
no database, and falls back to a plain sentence if even the template cannot be rendered.
"""
import logging
from pathlib import Path

from django.conf import settings
from django.http import HttpResponse, HttpResponseNotFound, HttpResponseServerError
from django.template import loader
from django.views.decorators.cache import cache_control
from django.views.decorators.csrf import requires_csrf_token
from django.views.decorators.http import require_safe

log = logging.getLogger("workflow_site.errors")
FAVICON = Path(settings.BASE_DIR) / "static" / "favicon.svg"


@requires_csrf_token
def page_not_found(request, exception=None):
    return HttpResponseNotFound(loader.render_to_string("404.html", {"path": request.path},
                                                        request))


@requires_csrf_token
def permission_denied(request, exception=None):
    reason = str(exception) if exception is not None and str(exception) else ""
    return HttpResponse(loader.render_to_string("403.html", {"reason": reason}, request),
                        status=403)


def server_error(request=None):
    try:
        body = loader.get_template("500.html").render({})
    except Exception:  # the page that must not fail: say it in plain words
        log.exception("the 500 page could not be rendered")
        body = ("<!doctype html><title>Server error · Data Machines</title>"
                "<h1>Something went wrong on our side</h1><p>Please try again in a moment.</p>")
    return HttpResponseServerError(body)


@require_safe
@cache_control(max_age=86400, public=True)
def favicon(request):
    """Browsers ask for /favicon.ico whatever the page links: answer the SVG icon."""
    return HttpResponse(FAVICON.read_bytes(), content_type="image/svg+xml")
