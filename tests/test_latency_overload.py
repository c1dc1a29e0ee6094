"""Shedding by time spent waiting for a thread (workflow_site.gunicorn_worker + the overload
middleware): a request that waited too long is answered 503 with Retry-After at once, a
prompt one is served, and a client cannot forge the wait."""
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from django.http import HttpResponse
from django.test import RequestFactory, override_settings

from tests.helpers import ROOT, subprocess_database_url, wait_until
from workflow_site.overload import ConcurrencyLimitMiddleware


def _middleware(view):
    with override_settings(DATA_MACHINES={"WEB_OVERLOAD": {
            "MAX_CONCURRENT": 2, "QUEUE_SECONDS": 0.05, "RETRY_AFTER_SECONDS": 3,
            "MAX_QUEUED_SECONDS": 0.1}}):
        return ConcurrencyLimitMiddleware(view)


@pytest.mark.parametrize("queued, served", [("0.5", False), ("0.101", False), ("0.05", True),
                                            ("", True), ("soon", True), ("-1", True)])
def test_a_request_that_waited_too_long_is_shed_without_running(queued, served):
    ran = []
    middleware = _middleware(lambda request: ran.append(request.path) or HttpResponse("ok"))
    answer = middleware(RequestFactory().post("/api/executions/x/actions/",
                                              HTTP_X_DM_QUEUED=queued))
    if served:
        assert answer.status_code == 200 and ran
    else:
        assert answer.status_code == 503 and not ran
        assert answer["Retry-After"] == "3" and answer["Content-Type"] == "application/json"
    assert middleware.slots.acquire(timeout=0) and middleware.slots.acquire(timeout=0)


def test_pages_are_never_shed_for_waiting():
    middleware = _middleware(lambda request: HttpResponse("page"))
    assert middleware(RequestFactory().get("/executions/", HTTP_X_DM_QUEUED="9")
                      ).status_code == 200


@pytest.fixture
def server(transactional_db, make_user, tmp_path):
    """gunicorn as bin/serve runs it, with one worker of one thread: a second request waits."""
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=make_user("olga", "operator")).key
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "DATABASE_URL": subprocess_database_url(),
           "DM_WEB_MAX_QUEUED_SECONDS": "0.1", "DM_WEB_RETRY_AFTER_SECONDS": "2"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "workflow_site.wsgi", "--bind", f"127.0.0.1:{port}",
         "--workers", "1", "--threads", "1", "--worker-class",
         "workflow_site.gunicorn_worker.QueueTimedWorker", "--log-level", "warning"],
        cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "gunicorn.log", "wb"))  # noqa: SIM115 - closed with the process
    base = f"http://127.0.0.1:{port}"

    def up():
        try:
            return httpx.get(base + "/api/machines/", timeout=2).status_code
        except httpx.TransportError:
            return None
    wait_until(up, 60, lambda: (tmp_path / "gunicorn.log").read_text())
    yield base, {"Authorization": f"Token {token}"}
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def test_requests_queued_behind_a_busy_thread_get_503_at_once(server):
    base, headers = server
    forged = httpx.get(base + "/api/executions/", headers={**headers, "X-DM-Queued": "999"},
                       timeout=10)
    assert forged.status_code == 200  # the client's own header is replaced by the real wait

    answers = {}
    host, port = base.removeprefix("http://").split(":")

    def slow():  # a client that sends its headers slowly holds the only thread for 1.5 s
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(b"GET /api/executions/ HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            time.sleep(1.5)
            sock.sendall(b"Accept: application/json\r\n\r\n")
            answers["slow"] = sock.recv(100)

    def quick(i):
        began = time.monotonic()
        answer = httpx.get(base + "/api/executions/", headers=headers, timeout=30)
        answers[i] = (answer, time.monotonic() - began)

    holder = threading.Thread(target=slow)
    holder.start()
    time.sleep(0.3)
    waiting = [threading.Thread(target=quick, args=(i,)) for i in range(3)]
    for thread in waiting:
        thread.start()
    for thread in [holder, *waiting]:
        thread.join(30)
    assert answers["slow"].startswith(b"HTTP/1.1 401")  # served: it did not wait in the queue
    for i in range(3):
        answer, took = answers[i]
        assert answer.status_code == 503, answer.content
        assert answer.headers["Retry-After"] == "2"
        assert answer.json()["type"] == "overloaded"
        assert took < 1.5 + 1.0  # answered once the thread was free, not served late
    assert httpx.get(base + "/api/executions/", headers=headers, timeout=10).status_code == 200
