"""Past capacity, answer 503 at once instead of queueing (README.md "Overload").

Each web worker process does at most MAX_CONCURRENT API requests at a time (a semaphore).
An API request that finds every slot taken waits up to QUEUE_SECONDS for one, then is
answered 503 with `Retry-After`, in the API's error shape. The explorer's pages are not
limited: a person's page, and the thumbnails and polls it loads at once, wait their turn
in the worker's threads instead of failing half-drawn. The worker runs more
threads than slots (bin/serve: gthread, WEB_THREADS), so the threads beyond the slots
answer the excess quickly instead of leaving it in gunicorn's queue for tens of seconds;
no connection is dropped, every request gets an answer.

A request holds its slot until its answer is built, a `wait` included (bounded by the
API's MAX_WAIT_SECONDS): as before, when a waiting request held a thread.

Requests also wait before any of this runs: in the worker's queue for a thread. Served by
workflow_site.gunicorn_worker (bin/serve), a request carries how long it waited there
(`X-DM-Queued`); one that waited more than MAX_QUEUED_SECONDS is answered 503 at once,
without taking a slot: serving it would be late anyway, and answering it frees the
thread for the requests behind it.
"""
from __future__ import annotations

import json
import threading

from django.conf import settings
from django.http import HttpResponse

LIMITED_PREFIX = "/api/"


def bounds() -> dict:
    return getattr(settings, "DATA_MACHINES", {}).get("WEB_OVERLOAD", {})


class ConcurrencyLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        given = bounds()
        limit = int(given.get("MAX_CONCURRENT", 0))
        self.slots = threading.BoundedSemaphore(limit) if limit > 0 else None  # 0: no limit
        self.queue_seconds = max(0.0, float(given.get("QUEUE_SECONDS", 0.1)))
        self.retry_after = max(1, int(given.get("RETRY_AFTER_SECONDS", 1)))
        self.max_queued = float(given.get("MAX_QUEUED_SECONDS", 0.1))

    def __call__(self, request):
        if self.slots is None or not request.path.startswith(LIMITED_PREFIX):
            return self.get_response(request)
        if self.queued_too_long(request) or not self.slots.acquire(timeout=self.queue_seconds):
            return self.overloaded(request)
        try:
            return self.get_response(request)
        finally:
            self.slots.release()

    def queued_too_long(self, request) -> bool:
        """Whether the request waited for a thread longer than MAX_QUEUED_SECONDS (the
        header workflow_site.gunicorn_worker sets; absent under other servers)."""
        try:
            return float(request.META.get("HTTP_X_DM_QUEUED", 0)) > self.max_queued
        except ValueError:
            return False

    def overloaded(self, request) -> HttpResponse:
        """503 in the API's error shape."""
        detail = (f"The server is at capacity; nothing was done. Try again in "
                  f"{self.retry_after} s.")
        response = HttpResponse(
            json.dumps({"type": "overloaded", "detail": detail, "errors": []}),
            status=503, content_type="application/json")
        response["Retry-After"] = str(self.retry_after)
        response["Cache-Control"] = "no-store"
        response["Content-Length"] = str(len(response.content))  # outside CommonMiddleware
        # Not logged as a server error per request: past capacity that would be thousands
        # of lines a second, written by the process that is already short of time.
        response._has_been_logged = True
        return response
