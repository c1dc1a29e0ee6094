"""IO operations that `invoke.call` expressions reach through `io(op, *args, **kwargs)`.

Operations are registered by name in settings.DATA_MACHINES["IO_OPERATIONS"]. Each gets the
call's arguments plus `idempotency_key` (execution id + seq of the work), which HTTP
operations send as the `Idempotency-Key` header so a re-run after a crash can be
deduplicated downstream. Network errors and time-outs raise IOFailure (-> the `error`
branch); a status code never does (machines decide with `ok_if`).
"""
from __future__ import annotations

import functools
import json

import httpx
from django.conf import settings
from django.utils.module_loading import import_string

DEFAULT_HTTP_TIMEOUT = 10.0
MAX_HTTP_TIMEOUT = 300.0


class IOFailure(Exception):
    """An operation failed; `error` is the JSON the `error` branch sees."""

    def __init__(self, error_type: str, message: str, **extra):
        super().__init__(message)
        self.error = {"type": error_type, "message": message, **extra}


@functools.cache
def _client() -> httpx.Client:
    """One client per process: pooled connections matter when a machine calls a service often."""
    return httpx.Client(follow_redirects=False)


def http_request(method, url, *, json=None, data=None, headers=None, params=None,
                 timeout=DEFAULT_HTTP_TIMEOUT, idempotency_key=None):
    """Send an HTTP request; returns {"status", "headers", "body"} with a text body."""
    if not isinstance(method, str) or not isinstance(url, str):
        raise IOFailure("bad_request", "http.request needs a method and a URL as strings")
    headers = {str(k): str(v) for k, v in (headers or {}).items()}
    if idempotency_key:
        headers.setdefault("Idempotency-Key", idempotency_key)
    try:
        timeout = min(float(timeout), MAX_HTTP_TIMEOUT)
    except (TypeError, ValueError) as exc:
        raise IOFailure(
            "bad_request", f"timeout must be a number of seconds, not {timeout!r}"
        ) from exc
    try:
        response = _client().request(
            method.upper(), url, json=json, data=data, headers=headers, params=params,
            timeout=timeout,
        )
    except httpx.TimeoutException as exc:
        raise IOFailure("timeout", f"{method.upper()} {url} timed out after {timeout:g} s") from exc
    except (httpx.HTTPError, ValueError) as exc:
        raise IOFailure("network_error", f"{method.upper()} {url} failed: {exc}") from exc
    return {
        "status": response.status_code,
        "headers": dict(response.headers),
        "body": response.text,
    }


def http_request_json(method, url, **kwargs):
    """Like http_request, with the body parsed as JSON (an empty body is null)."""
    response = http_request(method, url, **kwargs)
    body = response["body"]
    try:
        response["body"] = json.loads(body) if body.strip() else None
    except ValueError as exc:
        raise IOFailure(
            "invalid_json", f"the response of {url} is not JSON: {body[:200]!r}",
            status=response["status"],
        ) from exc
    return response


def operation(name: str):
    """The callable registered under `name`, or IOFailure naming the known ones."""
    registry = settings.DATA_MACHINES["IO_OPERATIONS"]
    if name not in registry:
        known = ", ".join(sorted(registry))
        raise IOFailure("unknown_operation", f"no IO operation named {name!r} (known: {known})")
    return import_string(registry[name])
