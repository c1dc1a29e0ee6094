"""Security for production (docs/security.md): headers and CSP, HSTS and secure cookies
behind TLS, the refusal to run on the default secret key, login rate limiting. (The API
schema and docs behind login: tests/test_api_docs.py.)"""
import os
import re
import subprocess
import sys

import pytest
from django.test import override_settings

from tests.helpers import ROOT

PASSWORD = "pass-123-pass"


@pytest.fixture
def login_cache():
    """A private cache for the failure counts of one test."""
    with override_settings(CACHES={
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "login": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                  "LOCATION": f"login-{os.urandom(4).hex()}"},
    }):
        yield


def csp_nonce(response):
    policy = response["Content-Security-Policy"]
    return re.search(r"'nonce-([^']+)'", policy).group(1)


def test_pages_carry_the_security_headers(client, make_user):
    client.force_login(make_user("reader"))
    first, second = client.get("/"), client.get("/login/")
    assert first.status_code == 200
    for response in (first, second):
        policy = response["Content-Security-Policy"]
        assert "script-src 'self' 'nonce-" in policy and "'unsafe-inline'" not in policy.split(
            "script-src")[1].split(";")[0]
        assert "frame-ancestors 'none'" in policy and "object-src 'none'" in policy
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Referrer-Policy"] == "same-origin"
        assert response["X-Frame-Options"] == "DENY"
        assert "Strict-Transport-Security" not in response  # plain HTTP, not behind TLS
    assert csp_nonce(first) != csp_nonce(second)
    # The pages' own script is a file: no inline script needs the nonce.
    assert not re.search(r"<script(?![^>]*\bsrc=)", first.content.decode())


def test_the_admin_editors_inline_script_carries_the_nonce(admin_client):
    response = admin_client.get("/admin/machines/machine/add/")
    assert response.status_code == 200
    html = response.content.decode()
    inline = re.findall(r"<script(?![^>]*\bsrc=)([^>]*)>", html)
    assert inline, "the editor has its inline script"
    for attributes in inline:
        assert f'nonce="{csp_nonce(response)}"' in attributes


def run_settings(env, code):
    """Python `code` in a fresh process with Django set up from `env` (no test settings)."""
    full = {key: value for key, value in os.environ.items()
            if not key.startswith(("DJANGO_", "DM_"))}
    full.update({"DJANGO_SETTINGS_MODULE": "workflow_site.settings",
                 "DJANGO_SECRET_KEY_FILE": "/nonexistent/.secret_key", **env})
    script = "import django; django.setup()\n" + code
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=60)


def test_refuses_to_start_without_a_secret_key_unless_debug(tmp_path):
    refused = run_settings({}, "")
    assert refused.returncode != 0
    assert "DJANGO_SECRET_KEY is not set" in refused.stderr
    assert "refusing to run with the insecure default key" in refused.stderr
    # the old default, set explicitly, is refused the same way
    old = run_settings({"DJANGO_SECRET_KEY":
                        "insecure-dev-key: set DJANGO_SECRET_KEY in production"}, "")
    assert old.returncode != 0 and "DJANGO_SECRET_KEY" in old.stderr
    short = run_settings({"DJANGO_SECRET_KEY": "secret"}, "")
    assert short.returncode != 0 and "DJANGO_SECRET_KEY is too short" in short.stderr
    assert run_settings({"DJANGO_DEBUG": "true"}, "").returncode == 0
    key_file = tmp_path / "key"
    key_file.write_text("k" * 20 + "from-a-file-written-by-bin-serve\n")
    from_file = run_settings({"DJANGO_SECRET_KEY_FILE": str(key_file)},
                             "from django.conf import settings; print(settings.SECRET_KEY)")
    assert from_file.returncode == 0, from_file.stderr
    assert from_file.stdout.strip() == "k" * 20 + "from-a-file-written-by-bin-serve"


def test_behind_tls_hsts_redirect_and_secure_cookies():
    code = """
from django.conf import settings
from django.test import Client
client = Client()
plain = client.get("/login/")
print("redirect", plain.status_code, plain.get("Location"))
secure = client.get("/login/", headers={"X-Forwarded-Proto": "https"})
print("status", secure.status_code)
print("hsts", secure.get("Strict-Transport-Security"))
print("cookie", secure.cookies["csrftoken"]["secure"], secure.cookies["csrftoken"]["httponly"])
print("session", settings.SESSION_COOKIE_SECURE, settings.SESSION_COOKIE_HTTPONLY)
"""
    result = run_settings({"DJANGO_SECRET_KEY": "x" * 50, "DM_BEHIND_TLS": "true",
                           "DJANGO_ALLOWED_HOSTS": "testserver"}, code)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())
    assert lines["redirect"] == "301 https://testserver/login/"
    assert lines["status"] == "200"
    assert lines["hsts"] == "max-age=31536000"
    assert lines["cookie"] == "True True"
    assert lines["session"] == "True True"


def login(client, username, password, path="/login/", address="10.0.0.1"):
    return client.post(path, {"username": username, "password": password},
                       REMOTE_ADDR=address)


@override_settings(LOGIN_MAX_FAILURES=3, LOGIN_FAILURE_WINDOW=600)
def test_login_rate_limit_per_username_and_address(client, make_user, login_cache):
    make_user("alice")
    make_user("bob")
    for _ in range(3):
        response = login(client, "alice", "wrong")
        assert response.status_code == 200 and b"errorlist" in response.content
    refused = login(client, "alice", PASSWORD)  # even the right password, for now
    assert refused.status_code == 429
    text = refused.content.decode()
    assert "Too many failed logins for this username from your address" in text
    assert "try again in 10 minutes" in text
    assert 590 <= int(refused["Retry-After"]) <= 600
    assert "_auth_user_id" not in client.session
    # the same username from elsewhere, and another username from here, may still log in
    assert login(client, "ALICE ", "wrong", address="10.0.0.1").status_code == 429
    assert login(client, "alice", PASSWORD, address="10.0.0.2").status_code == 302
    client.logout()
    assert login(client, "bob", PASSWORD).status_code == 302
    client.logout()
    # the admin's login form shares the count
    assert login(client, "alice", PASSWORD, path="/admin/login/").status_code == 429


@override_settings(LOGIN_MAX_FAILURES=2)
def test_login_failures_expire_and_a_success_clears_them(client, make_user, login_cache,
                                                         monkeypatch):
    import time

    from workflow_site import security

    make_user("carol")
    now = [time.time()]
    monkeypatch.setattr(security.time, "time", lambda: now[0])
    login(client, "carol", "wrong")
    assert login(client, "carol", PASSWORD).status_code == 302  # one failure: fine
    client.logout()
    login(client, "carol", "wrong")  # the success cleared the earlier one
    assert login(client, "carol", PASSWORD).status_code == 302
    client.logout()
    login(client, "carol", "wrong")
    login(client, "carol", "wrong")
    assert login(client, "carol", PASSWORD).status_code == 429
    now[0] += 901  # past the window (900 s by default)
    assert login(client, "carol", PASSWORD).status_code == 302


@pytest.mark.browser
def test_the_pages_work_under_the_content_security_policy(live_server, admin_user,
                                                          save_machine, monkeypatch):
    """Every kind of page in Chromium: no CSP violation, and the scripts that must run do
    (the admin editor's nonce'd inline script starts the code editor, which draws its line
    numbers; Swagger UI renders)."""
    chromium_path = "/usr/bin/chromium"
    if not os.path.exists(chromium_path):
        pytest.skip("no Chromium at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    from executions import services

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    save_machine("order.yaml")
    execution = services.start("order", mode="sync", actor="alice").execution
    base = live_server.url
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        violations = []
        page.on("console", lambda message: violations.append(message.text)
                if "Content Security Policy" in message.text else None)
        page.goto(f"{base}/login/")
        page.fill("#id_username", "admin")
        page.fill("#id_password", "admin-pass-123")
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/")
        for path in ("/", "/machines/order/", "/executions/", f"/executions/{execution.id}/",
                     "/admin/", "/admin/machines/machine/order/change/", "/api/docs/"):
            response = page.goto(base + path)
            assert response.status == 200, path
            page.wait_for_load_state("networkidle")
            if path.endswith("/change/"):
                page.wait_for_selector(".CodeMirror-linenumber", timeout=10_000)
            if path == "/api/docs/":
                page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
        browser.close()
    assert not violations, violations


@override_settings(LOGIN_MAX_FAILURES=1, CACHES={
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "login": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
              "LOCATION": "redis://127.0.0.1:1/0"}})  # nothing listens there
def test_logins_go_on_when_the_cache_is_unreachable(client, make_user):
    make_user("dave")
    assert login(client, "dave", "wrong").status_code == 200
    assert login(client, "dave", "wrong").status_code == 200  # not counted, not refused
    assert login(client, "dave", PASSWORD).status_code == 302
