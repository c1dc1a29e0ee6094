"""IO calls are bounded: a total deadline per call, a streamed size cap, a destination
policy, no proxy from the environment; work the engine gave up on is never performed again;
blocking IO does not hold up other executions; sync runs end within timeout_seconds.

A local HTTP server on 127.0.0.1 (threads, every response bounded in size and time) plays
the slow, huge, redirecting and proxying services. Nothing leaves the loopback interface:
refused destinations are refused before any connection is made.
"""
import contextlib
import gzip
import json
import os
import socket
import tempfile
import threading
import time
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock

import pytest
from django.conf import settings
from django.db import connections
from django.test import override_settings

from executions.runtime import io

MB = 1024 * 1024
SERVE_AT_MOST_SECONDS = 15  # no response of the test server lasts longer than this


class Service(BaseHTTPRequestHandler):
    """/ok, /drip (body one byte at a time), /drip-headers, /huge (100 MB without a length),
    /huge-declared, /bomb (gzip of 64 MB of zeros), /redirect?to=URL, /slow?seconds=S;
    every request is recorded."""

    protocol_version = "HTTP/1.1"
    seen: list = []

    def do_GET(self):
        Service.seen.append((self.path, dict(self.headers)))
        path, _, query = self.path.partition("?")
        try:
            getattr(self, "answer_" + path.strip("/").replace("-", "_"), self.answer_ok)(query)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            pass

    do_POST = do_GET

    def send(self, status, body, **headers):
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def answer_ok(self, query):
        self.send(200, json.dumps({"n": 1, "proxy": False}).encode(),
                  Content_Type="application/json")

    def answer_drip(self, query):
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self._drip(b"x" * 1000)

    def answer_drip_headers(self, query):
        self.wfile.write(b"HTTP/1.1 200 OK\r\n")
        self._drip(b"X-Slow: " + b"a" * 1000)

    def _drip(self, data):
        stop = time.monotonic() + SERVE_AT_MOST_SECONDS
        for byte in data:
            if time.monotonic() > stop:
                return
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(0.05)

    def answer_huge(self, query):
        self.send_response(200)
        self.send_header("Connection", "close")
        self.end_headers()
        chunk = b"y" * 65536
        stop = time.monotonic() + SERVE_AT_MOST_SECONDS
        for _ in range(100 * MB // len(chunk)):
            if time.monotonic() > stop:
                break
            self.wfile.write(chunk)
        self.close_connection = True

    def answer_huge_declared(self, query):
        self.send_response(200)
        self.send_header("Content-Length", str(500 * MB))
        self.end_headers()
        self.wfile.write(b"z" * 1000)
        self.close_connection = True

    def answer_bomb(self, query):
        self.send(200, BOMB, Content_Encoding="gzip")

    def answer_gzip(self, query):
        self.send(200, gzip.compress(b'{"small": true}'), Content_Encoding="gzip",
                  Content_Type="application/json")

    def answer_redirect(self, query):
        self.send(302, b"", Location=query.removeprefix("to="))

    def answer_slow(self, query):
        time.sleep(min(float(query.removeprefix("seconds=")), SERVE_AT_MOST_SECONDS))
        self.answer_ok(query)

    def answer_not_json(self, query):
        self.send(503, b"<html>down</html>")

    def log_message(self, *args):
        pass


class Proxy(Service):
    """A proxy that answers every request itself (and records it)."""

    def do_GET(self):
        Service.seen.append(("proxy", self.path))
        self.send(200, json.dumps({"proxy": True}).encode(), Content_Type="application/json")

    do_POST = do_GET


BOMB = gzip.compress(b"\0" * (64 * MB), compresslevel=9)


def serve(handler):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


@pytest.fixture
def service():
    server = serve(Service)
    Service.seen = []
    io.reset_clients()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    io.reset_clients()


def io_settings(**changes):
    return override_settings(DATA_MACHINES={**settings.DATA_MACHINES, **changes})


def failure(call):
    with pytest.raises(io.IOFailure) as failed:
        call()
    return failed.value.error


# Time ------------------------------------------------------------------------------------
def test_a_slow_drip_is_cut_at_the_total_deadline(service):
    started = time.monotonic()
    error = failure(lambda: io.http_request("GET", f"{service}/drip", timeout=1))
    elapsed = time.monotonic() - started
    assert error["type"] == "timeout", error
    assert elapsed < 4, f"a 1 s call took {elapsed:.1f} s"  # the drip would last 50 s


def test_headers_dripping_are_cut_at_the_total_deadline(service):
    started = time.monotonic()
    error = failure(lambda: io.http_request("GET", f"{service}/drip-headers", timeout=1))
    assert error["type"] == "timeout", error
    assert time.monotonic() - started < 4


def test_the_work_deadline_bounds_a_call_that_asks_for_more(service):
    started = time.monotonic()
    with io.deadline(1):
        error = failure(lambda: io.http_request("GET", f"{service}/slow?seconds=10",
                                                timeout=300))
    assert error["type"] == "timeout"
    assert time.monotonic() - started < 4


def test_a_call_within_its_deadline_answers(service):
    response = io.http_request_json("GET", f"{service}/ok", idempotency_key="e:1")
    assert response["status"] == 200 and response["body"]["n"] == 1
    assert Service.seen[-1][1]["Idempotency-Key"] == "e:1"


# Size ------------------------------------------------------------------------------------
def test_a_huge_body_is_cut_at_the_cap_and_memory_stays_small(service):
    tracemalloc.start()
    try:
        with io_settings(IO_MAX_RESPONSE_BYTES=MB):
            error = failure(lambda: io.http_request("GET", f"{service}/huge", timeout=20))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error["type"] == "response_too_large" and error["limit"] == MB
    assert peak < 16 * MB, f"reading a capped body peaked at {peak / MB:.0f} MB"


def test_a_declared_length_past_the_cap_fails_before_reading(service):
    started = time.monotonic()
    error = failure(lambda: io.http_request("GET", f"{service}/huge-declared"))
    assert error["type"] == "response_too_large"
    assert "larger than" in error["message"] and time.monotonic() - started < 5


def test_a_compressed_body_is_capped_after_decompression(service):
    with io_settings(IO_MAX_RESPONSE_BYTES=MB):
        error = failure(lambda: io.http_request("GET", f"{service}/bomb",
                                                headers={"Accept-Encoding": "gzip"}))
        assert error["type"] == "response_too_large"
        small = io.http_request_json("GET", f"{service}/gzip",
                                     headers={"Accept-Encoding": "gzip"})
    assert small["body"] == {"small": True}


def test_an_error_page_that_is_not_json_is_an_http_status_error(service):
    error = failure(lambda: io.http_request_json("GET", f"{service}/not-json"))
    assert error["type"] == "http_status" and error["status"] == 503


# Destinations ----------------------------------------------------------------------------
@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/",
    "http://[::ffff:169.254.169.254]/",  # the same address, IPv4-mapped
    "http://[64:ff9b::a9fe:a9fe]/",  # and through NAT64
    "http://2852039166/",  # 169.254.169.254 as one number
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://0.0.0.0:80/",
])
def test_link_local_and_metadata_are_refused_even_in_the_local_setup(url):
    with mock.patch("socket.create_connection") as connect:
        error = failure(lambda: io.http_request("GET", url, timeout=2))
    assert error["type"] == "destination_refused", error
    connect.assert_not_called()


def test_private_and_loopback_are_refused_when_the_setting_says_so(service):
    assert io.http_request("GET", f"{service}/ok")["status"] == 200  # the local default
    port = service.rsplit(":", 1)[1]
    Service.seen.clear()
    with io_settings(IO_ALLOW_PRIVATE=False):
        for url in (f"{service}/ok", f"http://localhost:{port}/ok", "http://10.1.2.3/",
                    "http://192.168.0.1/", "http://[::1]:9/"):
            error = failure(lambda url=url: io.http_request("GET", url, timeout=2))
            assert error["type"] == "destination_refused", (url, error)
        assert not Service.seen
        with io_settings(IO_ALLOW_PRIVATE=False, IO_ALLOWED_HOSTS=["127.0.0.1"]):
            assert io.http_request("GET", f"{service}/ok")["status"] == 200


def test_the_address_connected_to_is_the_address_checked(service):
    """The host is resolved once: the connection goes to the address that was checked,
    so a name answering differently the second time (DNS rebinding) gains nothing."""
    port = int(service.rsplit(":", 1)[1])
    answers = [[(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]]
    lookups = []
    real = socket.getaddrinfo

    def dns(host, *args, **kwargs):
        if host != "rebind.test":
            return real(host, *args, **kwargs)  # an address, as the connection gives it
        lookups.append(host)
        return answers.pop(0)

    with mock.patch("socket.getaddrinfo", side_effect=dns):
        response = io.http_request("GET", f"http://rebind.test:{port}/ok")
        assert response["status"] == 200 and lookups == ["rebind.test"]
        assert Service.seen[-1][1]["Host"] == f"rebind.test:{port}"
        answers.append([(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", 80))])
        io.reset_clients()
        error = failure(lambda: io.http_request("GET", "http://rebind.test/ok"))
    assert error["type"] == "destination_refused"


def test_redirects_are_not_followed_unless_asked_and_every_hop_is_checked(service):
    refused = f"{service}/redirect?to=http://169.254.169.254/latest/meta-data/"
    answered = io.http_request("GET", refused)
    assert answered["status"] == 302  # not followed: the machine sees the redirect
    with mock.patch("socket.create_connection", wraps=socket.create_connection) as connect:
        error = failure(lambda: io.http_request("GET", refused, follow_redirects=True))
    assert error["type"] == "destination_refused"
    assert all(call.args[0][0] == "127.0.0.1" for call in connect.call_args_list)
    followed = io.http_request_json("GET", f"{service}/redirect?to={service}/ok",
                                    follow_redirects=True)
    assert followed["body"]["n"] == 1


def test_proxy_variables_in_the_environment_are_ignored(service, monkeypatch):
    proxy = serve(Proxy)
    try:
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.server_port}")
        io.reset_clients()
        assert io.http_request_json("GET", f"{service}/ok")["body"]["proxy"] is False
        assert ("proxy", f"{service}/ok") not in Service.seen
        with io_settings(IO_TRUST_ENV=True):  # when configured, the proxy is used
            assert io.http_request_json("GET", f"{service}/ok")["body"]["proxy"] is True
    finally:
        proxy.shutdown()
        proxy.server_close()
        io.reset_clients()


def test_only_http_urls_are_taken():
    for url in ("file:///etc/passwd", "ftp://127.0.0.1/", "gopher://127.0.0.1:6379/_FLUSHALL"):
        assert failure(lambda url=url: io.http_request("GET", url))["type"] == "bad_request"


# Work given up on is never performed again (memory store and the database) --------------
# IO operations run in the evaluation pool's children: the calls are counted in a file
# (its path inherited through the environment), not in this process's memory.
CALLS_FILE = os.environ.setdefault(
    "DM_TEST_IO_CALLS", os.path.join(tempfile.mkdtemp(prefix="dm-io-calls-"), "calls"))


class _Calls:
    def _read(self) -> list:
        try:
            with open(CALLS_FILE) as calls:
                return calls.read().split()
        except FileNotFoundError:
            return []

    def append(self, key) -> None:
        with open(CALLS_FILE, "a") as calls:
            calls.write(f"{key}\n")

    def clear(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(CALLS_FILE)

    def __eq__(self, other) -> bool:
        return self._read() == list(other)

    def __len__(self) -> int:
        return len(self._read())

    def __repr__(self) -> str:
        return repr(self._read())


CALLS = _Calls()


def counting(*args, idempotency_key=None, **kwargs):
    """An IO operation that records each time it is performed."""
    CALLS.append(idempotency_key)
    return {"n": len(CALLS)}


def machine_calling(mode, invoke_timeout=5, call="io('count')"):
    return f"""
id: caller
execution_mode: {mode}
start_at: calling
states:
  calling:
    actions:
      - id: fetch
        invoke:
          call: "{call}"
          timeout_seconds: {invoke_timeout}
          success: {{state: done}}
          error: {{state: broken}}
      - {{id: stop, on: stop, state: broken}}
  done: {{return: "'done'"}}
  broken: {{return: "'broken'"}}
"""


class Tasks:
    """The task queue, played in the test: recorded, then run by `run()`."""

    def __init__(self):
        self.tasks = []

    def add(self, name, *args):
        self.tasks.append((name, args))

    def run(self, skip=()):
        from executions import tasks

        kept, done = [], []
        while self.tasks:
            name, args = self.tasks.pop(0)
            if name in skip:
                kept.append((name, args))
                continue
            getattr(tasks, name)(*args)
            done.append(name)
        self.tasks = kept
        return done


ON_THE_DATABASE = pytest.mark.django_db(transaction=True)  # tasks are enqueued on commit


@pytest.fixture(params=["memory", pytest.param("database", marks=ON_THE_DATABASE)])
def runtime(request, monkeypatch):
    """The runtime on the memory store, then on the database (SQLite, or DATABASE_URL),
    with the task queue played in the test and the counting IO operation registered."""
    from executions.runtime import queue, store
    from executions.runtime.memstore import MemoryStore

    tasks = Tasks()
    monkeypatch.setattr(queue, "queue_in_database", lambda: False)
    monkeypatch.setattr(queue, "enqueue_advance",
                        lambda execution_id, mode=None: tasks.add("advance_task", execution_id,
                                                                  mode))
    monkeypatch.setattr(queue, "enqueue_advances",
                        lambda pairs: tasks.add("advance_many_task", list(pairs)))
    monkeypatch.setattr(queue, "enqueue_work",
                        lambda work_id, kind=None: tasks.add("work_task", work_id))
    monkeypatch.setattr(queue, "wake_starter", lambda: tasks.add("start_task"))
    monkeypatch.setattr(queue, "clear_starter_marker", lambda: None)
    CALLS.clear()
    operations = {**settings.DATA_MACHINES["IO_OPERATIONS"],
                  "count": "tests.test_io_bounds.counting"}
    with io_settings(IO_OPERATIONS=operations):
        if request.param == "memory":
            with store.using(MemoryStore()) as memory:
                yield Runtime(memory, tasks)
        else:
            yield Runtime(store.active, tasks)


class Runtime:
    def __init__(self, store, tasks):
        self.store, self.tasks = store, tasks
        self.memory = hasattr(store, "add_machine")

    def add_machine(self, source):
        if self.memory:
            return self.store.add_machine(source)
        from machines.services import save_version
        return save_version(source)[0]

    def works(self):
        from executions.models import Work
        if self.memory:
            return sorted(self.store.work.values(), key=lambda w: w.pk)
        return list(Work.objects.order_by("pk"))

    def work(self, pk):
        return next(w for w in self.works() if w.pk == pk)

    def claimed_long_ago(self, pk, seconds):
        """The worker that claimed this work did so `seconds` ago (and was killed since)."""
        from datetime import timedelta

        from django.utils import timezone

        from executions.models import Work
        when = timezone.now() - timedelta(seconds=seconds)
        if self.memory:
            self.store.work[pk].claimed_at = self.store.work[pk].created_at = when
        else:
            Work.objects.filter(pk=pk).update(claimed_at=when, created_at=when)

    def execution(self, pk):
        return self.store.read_execution(pk)


def started_call(runtime, invoke_timeout=5):
    """An async execution whose IO call work is written and enqueued, not performed."""
    from executions import services

    runtime.add_machine(machine_calling("async-throughput", invoke_timeout))
    execution = services.start("caller", actor="test").execution
    assert runtime.tasks.run(skip=("work_task",)) == ["start_task"]
    (work,) = runtime.works()
    assert runtime.tasks.tasks == [("work_task", (work.pk,))]
    runtime.tasks.tasks.clear()
    return execution, work


def test_leases_cover_the_work_s_real_bound(runtime):
    from executions.runtime import effects

    _, work = started_call(runtime, invoke_timeout=5)
    assert work.lease_seconds == 5 + 1 + effects.LEASE_MARGIN_SECONDS
    assert work.payload["bound_seconds"] == 6
    assert effects.call_seconds(None) == effects.call_seconds(10_000) == 301
    assert effects.INTERNAL_LEASE_SECONDS > effects.INTERNAL_WORK_SECONDS


def test_a_call_in_flight_when_its_invoke_times_out_is_never_performed_again(runtime):
    from executions import engine, services
    from executions.models import Work
    from executions.runtime import performers, timers

    execution, work = started_call(runtime)
    assert runtime.store.claim_work(work.pk) is not None  # a worker took it... and hangs
    assert timers.fire_due_timers(now=time.time() + 60) == 1  # the invoke times out
    runtime.tasks.run()
    execution = runtime.execution(execution.pk)
    assert (execution.status, execution.state) == (engine.FINISHED, "broken")
    assert runtime.work(work.pk).status == Work.CANCELED  # in flight, and given up on

    runtime.claimed_long_ago(work.pk, 3600)  # far past its lease: the worker died
    assert timers.sweep(stale_after=0)["work"] == 0
    assert performers.perform_work(work.pk) == []  # a late task for it does nothing
    assert CALLS == [] and runtime.tasks.tasks == []
    assert services.start  # (the execution moved on; nothing re-ran behind it)


def test_work_past_its_lease_is_performed_again_only_while_the_execution_waits(runtime):
    from executions import engine
    from executions.models import Work
    from executions.runtime import timers

    execution, work = started_call(runtime)
    assert runtime.store.claim_work(work.pk) is not None
    runtime.claimed_long_ago(work.pk, work.lease_seconds - 5)  # within its lease
    assert timers.sweep(stale_after=0)["work"] == 0
    assert runtime.work(work.pk).status == Work.RUNNING

    runtime.claimed_long_ago(work.pk, work.lease_seconds + 5)  # the worker died
    assert timers.sweep(stale_after=0)["work"] == 1  # the execution still waits for it
    runtime.tasks.run()
    assert CALLS == [work.token]
    execution = runtime.execution(execution.pk)
    assert (execution.status, execution.state) == (engine.FINISHED, "done")
    assert runtime.work(work.pk).status == Work.DONE


@pytest.mark.parametrize("claimed", [False, True])
def test_work_of_an_execution_that_moved_on_is_canceled_not_performed(runtime, claimed):
    from executions import engine, services
    from executions.models import Work
    from executions.runtime import performers, timers

    execution, work = started_call(runtime)
    if claimed:
        assert runtime.store.claim_work(work.pk) is not None
    services.cancel(execution.pk, actor="test", reason="test")
    assert runtime.execution(execution.pk).status == engine.CANCELED
    runtime.claimed_long_ago(work.pk, 3600)
    assert timers.sweep(stale_after=0)["work"] == 0
    assert runtime.work(work.pk).status == Work.CANCELED
    assert performers.perform_work(work.pk) == []
    assert CALLS == []


def test_a_pending_call_whose_execution_moved_on_is_not_performed_by_a_late_task(runtime):
    """The sweeper has not seen it yet: the claim itself checks."""
    from executions.models import Work
    from executions.runtime import performers, timers

    execution, work = started_call(runtime)
    assert timers.fire_due_timers(now=time.time() + 60) == 1
    runtime.tasks.run()
    # cancel_work marked it already; undo that to prove the claim checks on its own
    if runtime.memory:
        runtime.store.work[work.pk].status = Work.PENDING
    else:
        Work.objects.filter(pk=work.pk).update(status=Work.PENDING)
    assert performers.perform_work(work.pk) == []
    assert runtime.work(work.pk).status == Work.CANCELED and CALLS == []


# End to end through the API (real threads, the database) ---------------------------------
def calling_machine(name, call, *, mode="sync", machine_timeout=None, error_branch=False):
    timeout = f"timeout_seconds: {machine_timeout}\n" if machine_timeout else ""
    error = "\n          error: {state: broken}" if error_branch else ""
    return f"""
id: {name}
execution_mode: {mode}
{timeout}start_at: calling
states:
  calling:
    actions:
      - id: fetch
        invoke:
          call: "{call}"
          success: {{state: done, assign: {{status: "output['status']"}}}}{error}
  done: {{return: "ctx['status']"}}
  broken: {{return: "'broken'"}}
"""


def start_over_api(client, machine):
    started = time.monotonic()
    response = client.post(f"/api/machines/{machine}/executions/", {"input": {}}, format="json")
    return response, time.monotonic() - started


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path, error_type", [
    ("/drip", "timeout"),
    ("/huge", "response_too_large"),
    ("@169.254.169.254/latest/meta-data/", "destination_refused"),
])
def test_a_machine_calling_a_bad_service_fails_with_the_typed_error(
        service, api, save_machine, path, error_type):
    url = ("http://169.254.169.254/latest/meta-data/" if path.startswith("@")
           else f"{service}{path}")
    save_machine(calling_machine("fetcher", f"io('http.request', 'GET', '{url}', timeout=1)"))
    response, _ = start_over_api(api("operator"), "fetcher")
    assert response.status_code in (200, 201), response.content
    body = response.json()
    assert body["status"] == "failed", body
    assert body["error"]["type"] == "invoke_failed"
    assert body["error"]["cause"]["type"] == error_type, body["error"]


@pytest.mark.django_db(transaction=True)
def test_other_requests_are_answered_while_a_call_drips(service, api, save_machine):
    save_machine(calling_machine(
        "dripper", f"io('http.request', 'GET', '{service}/drip', timeout=3)"))
    save_machine(calling_machine("quick", f"io('http.request', 'GET', '{service}/ok')"))
    operator = api("operator")
    slow = {}

    def call_the_drip():
        try:
            slow["response"], slow["took"] = start_over_api(api("operator", "second"),
                                                            "dripper")
        finally:
            connections.close_all()  # this thread's

    thread = threading.Thread(target=call_the_drip)
    thread.start()
    wait_until_seen("/drip")
    answered = []
    while thread.is_alive() and len(answered) < 20:
        response, took = start_over_api(operator, "quick")
        assert response.json()["status"] == "finished", response.json()["error"]
        assert response.json()["result"] == 200
        answered.append(took)
    thread.join(30)
    assert answered and max(answered) < 2, answered  # while the drip held its caller
    assert slow["response"].json()["error"]["cause"]["type"] == "timeout"
    assert slow["took"] < 8


def wait_until_seen(path, within=10):
    stop = time.monotonic() + within
    while not any(seen.startswith(path) for seen, _ in list(Service.seen)):
        assert time.monotonic() < stop, f"the service never got {path}"
        time.sleep(0.02)


@pytest.mark.django_db(transaction=True)
def test_a_sync_run_answers_within_its_timeout_and_the_call_goes_on(service, api, save_machine):
    """timeout_seconds: 1 and a call that takes 3 s: the caller is answered after about
    1 s (the run did not settle), the call goes on in its helper thread, and its result is
    applied by a worker (enqueued; run here)."""
    from django_q.brokers import get_broker
    from django_q.conf import Conf

    from executions import tasks
    from executions.models import Execution, Work

    save_machine(calling_machine(
        "patient", f"io('http.request', 'GET', '{service}/slow?seconds=3', timeout=10)",
        machine_timeout=1))
    queued_before = get_broker(Conf.PREFIX).queue_size()
    response, took = start_over_api(api("operator"), "patient")
    assert took < 2.5, f"a sync run with timeout_seconds 1 held its caller {took:.1f} s"
    body = response.json()
    assert response.status_code == 202 and body["status"] == "invoking", body
    execution = Execution.objects.get(pk=body["id"])
    work = Work.objects.get(execution=execution)
    stop = time.monotonic() + 15
    while Work.objects.get(pk=work.pk).status != Work.DONE:
        assert time.monotonic() < stop, "the call in its helper thread never ended"
        time.sleep(0.05)
    wait = time.monotonic() + 5  # the helper thread enqueues the advance after delivering
    while get_broker(Conf.PREFIX).queue_size() <= queued_before:
        assert time.monotonic() < wait, "no advance was enqueued for the result"
        time.sleep(0.05)
    tasks.advance_task(str(execution.pk))  # what a worker does with it
    execution.refresh_from_db()
    assert (execution.status, execution.result) == ("finished", 200)


# Blocking IO does not starve the workers that start and advance executions ---------------
QUICK = """
id: quick-async
execution_mode: async-throughput
start_at: a
states:
  a:
    actions:
      - {id: go, state: b}
  b: {return: "1"}
"""


@pytest.mark.cluster
def test_slow_calls_do_not_delay_other_executions(cluster, service, save_machine):
    """More slow calls in flight than the main cluster has workers: they wait on the IO
    queue's workers, and another execution is still started and finished at once."""
    from executions import engine, services
    from executions.models import Execution

    save_machine(calling_machine(
        "sleepy", f"io('http.request', 'GET', '{service}/slow?seconds=8', timeout=20)",
        mode="async-throughput"))
    save_machine(QUICK)
    workers = int(settings.Q_CLUSTER["workers"])
    slow = [services.start("sleepy", actor="test").execution.pk for _ in range(workers + 2)]
    wait_until_seen("/slow", within=20)  # the calls are in flight
    started = time.monotonic()
    quick = services.start("quick-async", actor="test").execution.pk
    stop = started + 20
    while Execution.objects.get(pk=quick).status != engine.FINISHED:
        assert time.monotonic() < stop, "the quick execution never finished"
        time.sleep(0.05)
    took = time.monotonic() - started
    assert took < 5, f"another execution waited {took:.1f} s behind slow IO calls"
    assert Execution.objects.filter(pk__in=slow, status=engine.INVOKING).exists()
