"""Two middlewares for production safety (docs/security.md).

ContentSecurityPolicyMiddleware: every HTML answer gets settings.CONTENT_SECURITY_POLICY as
its Content-Security-Policy header, with "{nonce}" replaced by a fresh random value per
response that templates put on their few inline scripts (`nonce="{{ request.csp_nonce }}"`).

LoginRateLimitMiddleware: a POST to a login form (the site's and the admin's) is refused
with 429 once one username has failed LOGIN_MAX_FAILURES times from one address within
LOGIN_FAILURE_WINDOW seconds; a success clears the count. Failures are counted from Django's
user_login_failed signal, in the cache (shared by the processes of one host, or by every
host with Redis). If the cache cannot be reached, logins go on unlimited (logged), rather
than nobody being able to log in.
"""
from __future__ import annotations

import hashlib
import logging
import math
import secrets
import time

from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.cache import caches
from django.dispatch import receiver
from django.http import HttpResponse
from django.utils.functional import SimpleLazyObject
from django.utils.html import escape

log = logging.getLogger("workflow_site.security")


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.csp_nonce = SimpleLazyObject(lambda: secrets.token_urlsafe(16))
        response = self.get_response(request)
        policy = settings.CONTENT_SECURITY_POLICY
        if policy and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = policy.replace("{nonce}",
                                                                 str(request.csp_nonce))
        return response


# Login rate limiting -------------------------------------------------------------------
def _cache():
    return caches[settings.LOGIN_RATE_LIMIT_CACHE]


def client_address(request) -> str:
    return request.META.get("REMOTE_ADDR") or "unknown"


def _key(username: str, address: str) -> str:
    digest = hashlib.sha256(f"{username.strip().lower()}\0{address}".encode()).hexdigest()
    return f"dm-login-failures:{digest}"


def _failures(key: str) -> list[float]:
    now = time.time()
    window = settings.LOGIN_FAILURE_WINDOW
    try:
        stored = _cache().get(key, [])
    except Exception:  # noqa: BLE001 - an unreachable cache must not stop every login
        log.warning("login rate limit: cannot read the failure counts", exc_info=True)
        return []
    return [t for t in stored if now - t < window]


def blocked_for(username: str, address: str) -> float:
    """Seconds until this username may try again from this address (0: it may now)."""
    failures = _failures(_key(username, address))
    if len(failures) < settings.LOGIN_MAX_FAILURES:
        return 0.0
    oldest_counted = sorted(failures)[-settings.LOGIN_MAX_FAILURES]
    return max(1.0, oldest_counted + settings.LOGIN_FAILURE_WINDOW - time.time())


@receiver(user_login_failed)
def _count_failure(sender, credentials, request=None, **kwargs):
    if request is None:
        return
    username = str(credentials.get("username", ""))
    key = _key(username, client_address(request))
    failures = _failures(key)[-100:] + [time.time()]
    try:
        _cache().set(key, failures, timeout=math.ceil(settings.LOGIN_FAILURE_WINDOW))
    except Exception:  # noqa: BLE001
        log.warning("login rate limit: cannot store a failure", exc_info=True)


@receiver(user_logged_in)
def _clear_failures(sender, request=None, user=None, **kwargs):
    if request is not None and user is not None:
        try:
            _cache().delete(_key(user.get_username(), client_address(request)))
        except Exception:  # noqa: BLE001
            log.warning("login rate limit: cannot clear the failure counts", exc_info=True)


class LoginRateLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.method == "POST" and request.path in settings.LOGIN_RATE_LIMITED_PATHS:
            username = request.POST.get("username", "")
            wait = blocked_for(username, client_address(request))
            if wait:
                minutes = math.ceil(wait / 60)
                message = (f"Too many failed logins for this username from your address: try "
                           f"again in {minutes} minute{'s' if minutes != 1 else ''}.")
                response = HttpResponse(
                    f"<!doctype html><title>Too many failed logins</title>"
                    f"<h1>Too many failed logins</h1><p>{escape(message)}</p>"
                    f'<p><a href="{escape(request.path)}">Back to the login page</a></p>',
                    status=429, content_type="text/html; charset=utf-8")
                response["Retry-After"] = str(math.ceil(wait))
                return response
        return self.get_response(request)
