"""Plain helpers the test modules share. Fixtures live in conftest.py; import these with
`from tests.helpers import ...` (never from another test module)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.db import connection

from executions import engine
from expressions.sandbox import evaluate
from machines.language import build

ROOT = Path(__file__).resolve().parent.parent

CART = """
id: cart
title: Cart
execution_mode: sync
start_at: open
context: {items: []}
states:
  open:
    actions:
      - {id: add, on: add, assign: {items: "ctx['items'] + [input['sku']]"}}
      - {id: close, on: close, when: "len(ctx['items']) > 0", state: closed}
  closed: {return: "ctx['items']"}
"""


def assert_error(response, status, type_=None):
    """Every error has the one shape: type, detail, errors[{path, message, hint}]."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["type"], str) and isinstance(body["detail"], str) and body["detail"]
    assert isinstance(body["errors"], list)
    for problem in body["errors"]:
        assert set(problem) >= {"path", "message", "hint"}
    if type_:
        assert body["type"] == type_
    return body


def wait_until(predicate, timeout, message="the condition never held", interval=0.05):
    """Poll `predicate` until it returns something truthy and return that; an AssertionError
    saying `message` (a string, or a function called for one) once `timeout` seconds passed.
    The one way tests wait for another process: never a bare sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(message() if callable(message) else message)
        time.sleep(interval)


def subprocess_database_url() -> str:
    """The URL of the database the tests run on, for subprocesses."""
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    host = settings.get("HOST") or "127.0.0.1"
    port = settings.get("PORT") or 5432
    user = settings.get("USER") or "postgres"
    return f"postgres://{user}@{host}:{port}/{settings['NAME']}"


class Cluster:
    """qcluster + run_timers subprocesses, as bin/serve runs them; stop()/start() to simulate
    a restart. Their output goes to `log` (a file in the test's tmp directory unless
    DM_CLUSTER_LOG names one)."""

    # The line each command writes once it is ready (qcluster logs at INFO, see start()).
    READY = {"qcluster": "] running.", "run_timers": "timer loop: polling every"}
    # The processes, as bin/serve starts them: the main qcluster, the qcluster of the IO
    # queue (settings IO_QUEUE, named by Q_CLUSTER_NAME), the timer loop.
    COMMANDS = (("qcluster", False), ("qcluster", True), ("run_timers", False))
    READY_WITHIN = 60.0  # seconds; a loaded machine takes a few
    # bin/serve: SIGTERM to each child, and what still runs 5 s later is killed.
    STOP_WITHIN = 5.0

    def __init__(self, env, log):
        self.env = {**env, "PYTHONUNBUFFERED": "1"}  # the ready lines reach the log at once
        self.log = Path(log)
        self.processes = []

    def start(self):
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            for command, io_queue in self.COMMANDS:
                env = self.env
                if command == "qcluster" and self.env.get("DM_LOG_LEVEL") != "DEBUG":
                    env = {**env, "DM_LOG_LEVEL": "INFO"}  # django-q2 says "running" at INFO
                if io_queue:
                    name = env.get("DM_Q_CLUSTER_NAME") or "datamachines"
                    env = {**env, "Q_CLUSTER_NAME": env.get("DM_IO_QUEUE", f"{name}-io")}
                self.processes.append(subprocess.Popen(
                    [sys.executable, "manage.py", command], cwd=ROOT, env=env,
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                ))
        wait_until(lambda: self._ready(offset), self.READY_WITHIN,
                   lambda: f"the cluster did not get ready:\n{self._tail(offset)}", interval=0.1)

    def _ready(self, offset) -> bool:
        for process in self.processes:
            if process.poll() is not None:
                raise AssertionError(f"{process.args[-1]} exited with {process.returncode}:\n"
                                     + self._tail(offset))
        with self.log.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        return all(text.count(self.READY[command]) >= sum(c == command for c, _ in self.COMMANDS)
                   for command in self.READY)

    def _tail(self, offset) -> str:
        with self.log.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")[-4000:]

    def stop(self, sig=signal.SIGTERM):
        """SIGTERM (the default) stops as bin/serve does: each main process shuts its own
        processes down, and what still runs after STOP_WITHIN is killed. (A SIGTERM to the
        whole process group instead leaves qcluster's main process hanging.) SIGKILL kills
        every process of the cluster at once: a crash."""
        for process in self.processes:
            self._signal(process, sig, group=sig == signal.SIGKILL)
        deadline = time.monotonic() + self.STOP_WITHIN
        for process in self.processes:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._signal(process, signal.SIGKILL, group=True)  # it and its children
                process.wait()
        self.processes = []

    @staticmethod
    def _signal(process, sig, *, group):
        try:
            if group:
                os.killpg(process.pid, sig)
            else:
                process.send_signal(sig)
        except ProcessLookupError:
            pass


# parallel and map: two machines and a way to drive the engine through them -----------------
GROUP_NOW = 1_000_000.0


def engine_env(now: float = GROUP_NOW) -> engine.Env:
    return engine.Env(now=now, evaluate=evaluate,
                      execution={"id": "e1", "machine": "m", "version": 1})


def kyc(join="all", on_failure="fail_fast", timeout=None, error_branch=True):
    invoke = {
        "parallel": {
            "identity": {"machine": "check", "input": "{'kind': 'identity', 'who': ctx['who']}"},
            "sanctions": {"machine": "check", "input": "{'kind': 'sanctions'}"},
            "address": {"machine": {"id": "check", "version": 2}},
        },
        "join": join, "on_failure": on_failure,
        "success": {"state": "approved", "assign": {"checks": "output"}},
    }
    if error_branch:
        invoke["error"] = {"state": "review", "assign": {"problem": "error"}}
    if timeout:
        invoke["timeout_seconds"] = timeout
    return build({
        "id": "kyc", "start_at": "checking", "context": "{'who': input['who']}",
        "states": {
            "checking": {"actions": [{"id": "run-checks", "invoke": invoke},
                                     {"id": "note", "on": "note", "assign": {"n": "1"}}]},
            "approved": {"return": "ctx['checks']"},
            "review": {"return": "ctx['problem']"},
        },
    })


def lines(max_concurrency=None, items="ctx['lines']", on_failure="fail_fast", join="all"):
    mapped = {"items": items, "machine": "price-line",
              "input": "{'sku': item['sku'], 'position': index}"}
    if max_concurrency:
        mapped["max_concurrency"] = max_concurrency
    return build({
        "id": "order-pricing", "start_at": "pricing", "context": "{'lines': input}",
        "states": {
            "pricing": {"actions": [{"id": "price-each", "invoke": {
                "map": mapped, "join": join, "on_failure": on_failure,
                "success": {"state": "priced", "assign": {"prices": "output"}}}}]},
            "priced": {"return": "sum(p['price'] for p in ctx['prices'] if p)"},
        },
    })


def starts(result):
    return [e for e in result.effects if isinstance(e, engine.StartChild)]


def cancels(result):
    return sorted(e.token for e in result.effects if isinstance(e, engine.CancelWork))


def json_round_trip(snapshot: engine.Snapshot) -> engine.Snapshot:
    """What the store does: the snapshot is kept as JSON."""
    return engine.Snapshot.from_dict(json.loads(json.dumps(snapshot.to_dict())))


def begin(machine, input):
    result = engine.transition(machine, None, engine.Start(input), engine_env())
    return result, json_round_trip(result.snapshot)


def report(machine, snapshot, token, ok=True, output=None, error=None):
    event = (engine.WorkSucceeded(token, output) if ok
             else engine.WorkFailed(token, error or {"type": "child_failed", "message": "no"}))
    result = engine.transition(machine, snapshot, event, engine_env())
    return result, json_round_trip(result.snapshot)
