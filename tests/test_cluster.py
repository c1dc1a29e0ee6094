"""End to end with real worker processes: qcluster + the timer loop, as bin/serve runs them.

A local HTTP server on 127.0.0.1 stands in for the courier of the shipment example.
"""
import json
import os
import signal
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock

import pytest
import redis
from django.db import connection
from django_q.brokers import get_broker
from django_q.conf import Conf

from executions import engine, services
from executions.models import Execution, HistoryEntry
from executions.runtime import queue as task_queue
from expressions import sandbox
from machines.definition import Expr
from tests.helpers import Cluster, subprocess_database_url, wait_until

pytestmark = [pytest.mark.cluster]


class Courier(BaseHTTPRequestHandler):
    """/ok answers 200, /flaky-* fails once then answers, /down always answers 503."""

    calls: dict = {}
    lock = threading.Lock()

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        with self.lock:
            count = self.calls[self.path] = self.calls.get(self.path, 0) + 1
            Courier.keys = getattr(Courier, "keys", []) + [self.headers.get("Idempotency-Key")]
        failing = self.path == "/down" or (self.path.startswith("/flaky") and count == 1)
        body = json.dumps({"error": "busy"} if failing else {"n": 1}).encode()
        self.send_response(503 if failing else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def courier():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Courier)
    Courier.calls, Courier.keys = {}, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def wait_for(execution_id, statuses, timeout):
    def settled():
        execution = Execution.objects.get(pk=execution_id)
        return execution if execution.status in statuses else None

    def still():
        execution = Execution.objects.get(pk=execution_id)
        return f"{execution_id} still {execution.status} in {execution.state}"

    return wait_until(settled, timeout, still, interval=0.1)


def place_order(courier_url):
    order = services.start("order", input={"courier_url": courier_url}, actor="test").execution
    for action, payload in (("add", {"sku": "bns12", "qty": 2}), ("place", {}),
                            ("fraud-approve", {})):
        services.trigger(order.pk, action, input=payload, actor="test", wait=True)
    return order


def gap_free(execution):
    seqs = list(execution.history.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))


def test_order_and_shipment_against_a_courier_that_works_flakes_and_is_down(
    cluster, save_machine, courier
):
    save_machine("shipment.yaml")
    save_machine("order.yaml")
    ok = place_order(f"{courier}/ok")
    flaky = place_order(f"{courier}/flaky-{uuid.uuid4().hex}")
    down = place_order(f"{courier}/down")

    ok = wait_for(ok.pk, {engine.FINISHED, engine.FAILED}, 20)
    assert (ok.status, ok.state, ok.result) == (engine.FINISHED, "shipped", True)
    child = ok.children.get()
    assert child.machine_id == "shipment" and child.result == {"delivered": True}

    flaky = wait_for(flaky.pk, {engine.FINISHED, engine.FAILED}, 30)
    assert (flaky.state, flaky.result) == ("shipped", True)
    flaky_child = flaky.children.get()
    assert flaky_child.history.filter(kind=engine.TIMER_FIRED).count() == 1
    assert flaky_child.context["attempt"] == 2

    down = wait_for(down.pk, {engine.FINISHED, engine.FAILED}, 40)
    assert (down.state, down.result) == ("canceled", False)
    down_child = down.children.get()
    assert down_child.state == "canceled" and down_child.context["attempt"] == 4
    assert Courier.calls["/down"] == 3

    for execution in (ok, flaky, down, child, flaky_child, down_child):
        gap_free(execution)
    keys = [k for k in Courier.keys if k]
    assert len(keys) == len(Courier.keys) and len(set(keys)) == len(keys)


SLOW_GUARD = "len([x * x for x in range(input['work'])]) > 0"
SLOW = f"""
id: slow
start_at: counting
context: {{n: 0}}
states:
  counting:
    actions:
      - id: step
        when: "{SLOW_GUARD} and ctx['n'] < 900"
        assign: {{n: "ctx['n'] + 1"}}
      - {{id: done, state: done}}
  done: {{return: "ctx['n']"}}
"""


def work_lasting(seconds):
    """The `work` input that makes SLOW's 900-step advance last about `seconds` on this
    machine, so that the kill lands inside it however fast the machine is."""
    guard = Expr(path="calibration", source=SLOW_GUARD)
    started = time.perf_counter()
    for _ in range(20):
        sandbox.evaluate(guard, {"input": {"work": 1000}}, time_limit=5)
    per_step = (time.perf_counter() - started) / 20
    return max(100, int(1000 * seconds / 900 / per_step))


def test_a_worker_killed_mid_advance_loses_nothing(cluster, save_machine):
    save_machine(SLOW)
    execution = services.start("slow", input={"work": work_lasting(5)}, actor="test").execution
    # a worker took the starter task: it is inside the advance, which lasts about 5 s
    wait_until(lambda: get_broker().queue_size() == 0, 20, "no worker took the start")
    cluster.stop(signal.SIGKILL)
    execution.refresh_from_db()
    assert execution.status == engine.RUNNING, "the advance finished before the kill"
    assert execution.history.count() == 0  # nothing half-written
    assert execution.version == 0 and not execution.engine_state  # still not started

    cluster.start()  # the sweeper finds the unapplied start and re-enqueues it
    execution = wait_for(execution.pk, {engine.FINISHED}, 60)
    assert execution.result == 900
    assert execution.history.filter(kind=engine.STARTED).count() == 1
    gap_free(execution)


SNOOZE = """
id: snooze
start_at: resting
states:
  resting:
    actions:
      - {id: ring, wait: {seconds: 1}, state: awake}
  awake: {return: "'ok'"}
"""


def test_a_timer_due_while_workers_were_down_fires_once_after_restart(cluster, save_machine):
    save_machine(SNOOZE)
    execution = services.start("snooze", wait=True).execution
    assert execution.status == engine.SLEEPING
    due_at = max(execution.timers.values_list("due_at", flat=True))
    cluster.stop()
    wait_until(lambda: time.time() > due_at, 10, "the timer never became due")
    execution.refresh_from_db()
    assert execution.status == engine.SLEEPING  # overdue, nobody to fire it
    cluster.start()
    execution = wait_for(execution.pk, {engine.FINISHED}, 20)
    assert execution.history.filter(kind=engine.TIMER_FIRED).count() == 1
    gap_free(execution)


QUICK = """
id: quick-start
start_at: a
states:
  a:
    actions:
      - {id: go, state: b}
  b: {return: "input['n']"}
"""


def start_from_threads(count, threads=8):
    """`count` async-throughput starts from `threads` threads at once, as many web workers
    would make them: each caller commits its row and wakes a starter only if none is
    pending. Their executions."""
    started, errors = [], []

    def make(first):
        try:
            for n in range(first, count, threads):
                started.append(services.start("quick-start", input={"n": n}).execution)
        except Exception as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    callers = [threading.Thread(target=make, args=(first,)) for first in range(threads)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert errors == []
    return started


def all_finish_once(executions, timeout):
    """Every execution reaches its end, started exactly once."""
    ids = [execution.pk for execution in executions]
    finished = Execution.objects.filter(pk__in=ids, status=engine.FINISHED)
    wait_until(lambda: finished.count() == len(ids), timeout,
               lambda: f"{len(ids) - finished.count()} of {len(ids)} never finished", interval=0.1)
    assert all(execution.result == execution.input["n"] for execution in finished)
    starts = HistoryEntry.objects.filter(execution_id__in=ids, kind=engine.STARTED)
    assert starts.count() == len(ids)


def test_concurrent_starts_all_reach_their_end(cluster, save_machine):
    save_machine(QUICK)
    all_finish_once(start_from_threads(400), 60)
    # the last starter cleared the marker on its way out
    wait_until(lambda: task_queue.starter_pending_since(task_queue._broker().list_key) is None, 10,
               "the starter marker stayed set", interval=0.1)


REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def redis_reachable():
    try:
        return redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError:
        return False


@pytest.fixture
def redis_cluster(transactional_db, cluster_log):
    """The cluster on the Redis broker, and this process enqueueing to it."""
    if not redis_reachable():
        pytest.skip(f"Redis not reachable at {REDIS_URL}")
    redis.from_url(REDIS_URL).flushdb()  # a database of its own: no other queue's tasks
    env = {**os.environ, "DATABASE_URL": subprocess_database_url(), "REDIS_URL": REDIS_URL}
    with mock.patch.object(Conf, "ORM", None), mock.patch.object(Conf, "REDIS", REDIS_URL):
        task_queue._broker.cache_clear()
        cluster = Cluster(env, cluster_log)
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop()
            task_queue._broker.cache_clear()


def test_redis_broker_runs_async_executions(redis_cluster, save_machine):
    save_machine(SNOOZE)
    save_machine(SLOW.replace("id: slow", "id: quick"))
    assert type(task_queue._broker()).__name__ == "Redis"
    quick = [services.start("quick", input={"work": 2}).execution for _ in range(5)]
    snooze = services.start("snooze").execution
    for execution in quick:
        assert wait_for(execution.pk, {engine.FINISHED}, 30).result == 900
    assert wait_for(snooze.pk, {engine.FINISHED}, 20).result == "ok"


def test_redis_broker_concurrent_starts_all_reach_their_end(redis_cluster, save_machine):
    save_machine(QUICK)
    all_finish_once(start_from_threads(400), 60)


def test_redis_starter_task_lost_with_its_marker_set_is_replaced(redis_cluster, save_machine):
    save_machine(QUICK)
    redis_cluster.stop()
    waiting = start_from_threads(20, threads=4)
    queue = redis.from_url(REDIS_URL)
    assert queue.llen(task_queue._broker().list_key) == 1  # one starter task for all of them
    queue.delete(task_queue._broker().list_key)  # a worker took it and was killed; marker stays set
    redis_cluster.start()
    # the marker expires after STARTER_LOST_AFTER_SECONDS; the sweeper then wakes a starter
    all_finish_once(waiting, task_queue.STARTER_LOST_AFTER_SECONDS + 30)
