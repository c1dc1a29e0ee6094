"""The evaluation pool (executions/runtime/pool.py): children that run the engine and the
sandbox, bounded by OS limits and killed past their time; no database needed."""
import subprocess
import sys
import threading
import time

import pytest
from django.test import override_settings

from executions import engine
from executions.runtime import pool, pool_child
from tests.helpers import ROOT
from tests.test_runtime_memory import mem as memory_store

LIMIT = 1.0  # the expression time limit used here

RUNAWAY = """n = 0
while True:
    try:
        while True:
            n += 1
    finally:
        continue"""  # the sandbox's stop signal is swallowed: only a kill ends it
DEEP_HASH = """t = ()
for i in range(300000):
    t = (t,)
d = {'k': t}
{}.fromkeys(d.values())"""  # hashing recurses in C: a segfault
HIDDEN_ALLOCATION = """a = {*range(600000)}
l = []
for i in range(200):
    l.append(a | {-i})
len(l)"""  # set '|' copies are not counted by the sandbox's budget


def machine(context="{'n': 1}", update="ctx['n'] + 1", key=None):
    document = {
        "id": "pool-test", "start_at": "a", "context": context,
        "states": {"a": {"actions": [{"id": "go", "on": "go", "state": "b",
                                      "assign": {"n": update}}]},
                   "b": {"return": "ctx['n']"}},
    }
    return key or f"pool-test:{context}:{update}", document


def run(key_document, events, snapshot=None, lead=1, calls=None, **extra):
    key, document = key_document

    def fetch():
        if calls is not None:
            calls.append(1)
        return document

    return pool.compute(
        machine_key=key, document=fetch, snapshot=snapshot, lead=lead, refuse=False,
        events=[pool_child.event_data(event) for event in events],
        env={"now": 1000.0, "seed": 7, "execution": {"id": "e1", "machine": "pool-test",
                                                     "version": 1},
             "step_limit": 1000, "max_steps": None},
        time_limit=LIMIT, max_result_bytes=262144, **extra)


@pytest.fixture(autouse=True)
def fresh_pools():
    pool.shutdown()
    yield
    pool.shutdown()


def test_a_whole_computation_is_one_round_trip_and_comes_back_as_data():
    step = run(machine(), [engine.Start({"x": 1}), engine.Action("go", {"y": 2})])
    snapshot = engine.Snapshot.from_dict(step["snapshot"])
    assert (snapshot.status, snapshot.result) == (engine.FINISHED, 2)
    kinds = [entry["kind"] for entry in step["history"]]
    assert kinds[0] == engine.STARTED and kinds[-1] == engine.EXECUTION_FINISHED
    assert [result["rejected"] for result in step["results"]] == [None, None]
    assert sum(result["history"] for result in step["results"]) == len(step["history"])
    assert [pool_child.effect_from(e) for e in step["effects"]] == [
        engine.NotifyParent("finished", 2)]


def test_effects_round_trip_through_json():
    call = engine.CallIO("e1:3", pool_child.Expr(path="p", source="io('x')"), {"ctx": {}},
                         2, 5.0)
    assert pool_child.effect_from(pool_child.effect_data(call)) == call
    for event in (engine.Start({"a": 1}, "user:x"), engine.WorkFailed("t", {"type": "x"}),
                  engine.Cancel("u", "why"), engine.Continue()):
        assert pool_child.event_from(pool_child.event_data(event)) == event


def test_the_machine_is_sent_once_per_child_and_again_when_the_child_lost_it():
    calls: list = []
    key_document = machine()
    run(key_document, [engine.Start()], calls=calls)
    run(key_document, [engine.Start()], calls=calls)
    assert len(calls) == 1  # the second call sent only the key
    worker = pool.get("compute").idle[0]
    worker.machines.add("pool-test:unknown")
    step = run(("pool-test:unknown", key_document[1]), [engine.Start()], calls=calls)
    assert len(calls) == 2  # the child answered "miss", the parent sent the document
    assert step["snapshot"]["status"] == engine.WAITING


def test_a_runaway_expression_is_killed_and_its_child_replaced():
    compute_pool = pool.get("compute")
    began = time.monotonic()
    with pytest.raises(pool.Failure) as failure:
        run(machine(context=RUNAWAY), [engine.Start()])
    assert time.monotonic() - began < LIMIT + pool.MARGIN + 5
    assert failure.value.kind == "timeout"
    assert failure.value.path == "context"
    assert failure.value.index == 0
    assert compute_pool.count == 0  # the killed child is gone
    step = run(machine(), [engine.Start()])  # a new child answers
    assert step["snapshot"]["status"] == engine.WAITING
    assert compute_pool.started == 2


def test_a_crash_names_the_expression_it_was_in():
    snapshot = engine.Snapshot(status=engine.WAITING, state="a", context={"n": 1}, seq=1)
    with pytest.raises(pool.Failure) as failure:
        run(machine(update=DEEP_HASH), [engine.Action("go")], snapshot=snapshot.to_dict(),
            lead=0)
    assert failure.value.kind == "crashed"
    assert "SIGSEGV" in failure.value.message
    assert failure.value.path == "states.a.actions[0].assign.n"
    assert run(machine(), [engine.Start()])["snapshot"]["status"] == engine.WAITING


@override_settings(DATA_MACHINES={**__import__("django.conf").conf.settings.DATA_MACHINES,
                                  "POOL_MEMORY_MB": 256})
def test_memory_is_bounded_by_the_childs_address_space():
    try:
        step = run(machine(context=HIDDEN_ALLOCATION), [engine.Start()])
    except pool.Failure as failure:  # died before it could say so
        assert failure.kind in ("resource", "crashed")
    else:  # the sandbox turned the MemoryError into the execution's error
        assert step["snapshot"]["status"] == engine.FAILED
        assert step["snapshot"]["error"]["kind"] == "resource"
    assert run(machine(), [engine.Start()])["snapshot"]["status"] == engine.WAITING


def test_other_calls_go_on_while_one_child_is_stuck():
    stuck: dict = {}

    def runaway():
        try:
            run(machine(context=RUNAWAY), [engine.Start()])
        except pool.Failure as failure:
            stuck["kind"] = failure.kind

    thread = threading.Thread(target=runaway)
    thread.start()
    time.sleep(0.2)
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        run(machine(), [engine.Start()])["snapshot"]["status"])) for _ in range(6)]
    for each in threads:
        each.start()
    for each in threads:
        each.join(30)
    assert results == [engine.WAITING] * 6
    assert thread.is_alive()  # the runaway is still running: the others did not wait for it
    thread.join(30)
    assert stuck == {"kind": "timeout"}


def slow_operation(seconds, *, idempotency_key=None):
    time.sleep(seconds)
    return {"slept": seconds, "key": idempotency_key}


IO_OPERATIONS = {"test.slow": "tests.test_pool.slow_operation"}


@override_settings(DATA_MACHINES={**__import__("django.conf").conf.settings.DATA_MACHINES,
                                  "IO_OPERATIONS": IO_OPERATIONS})
def test_a_call_runs_its_operation_in_a_child_killed_at_the_calls_timeout():
    def call(source, timeout, mocks=None):
        return pool.call(expr={"path": "states.a.invoke.call", "source": source,
                               "literal": None},
                         names={"ctx": {"s": 0.01}}, mocks=mocks or {}, token="e1:2",
                         now=1000.0, seed=1, timeout=timeout, max_result_bytes=262144)

    assert call("io('test.slow', ctx['s'])", 5) == {
        "ok": True, "output": {"slept": 0.01, "key": "e1:2"}}
    assert call("io('test.slow', 60)", 5, mocks={"test.slow": "{'mocked': args}"}) == {
        "ok": True, "output": {"mocked": [60]}}
    began = time.monotonic()
    with pytest.raises(pool.Failure) as failure:
        call("io('test.slow', 60)", 1)
    assert time.monotonic() - began < 1 + pool.MARGIN + 5
    assert (failure.value.kind, failure.value.path) == ("timeout", "io:test.slow")
    reply = call("io('nope')", 5)
    assert reply["ok"] is False and reply["error"]["type"] == "unknown_operation"


def test_the_child_imports_no_django():
    code = ("import sys, executions.runtime.pool_child; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('django', 'rest_framework', 'django_q', 'httpx', 'psycopg')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True, env={"PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]"


SHAKY = """
id: shaky
execution_mode: async-throughput
start_at: open
context: {n: 0}
states:
  open:
    actions:
      - {id: ok, on: ok, assign: {n: "ctx['n'] + 1"}}
      - id: boom
        on: boom
        assign:
          n: |
""" + "\n".join("            " + line for line in RUNAWAY.splitlines()) + "\n"


mem = memory_store  # the in-memory store fixture (tests/test_runtime_memory.py)


def test_a_killed_child_rejects_the_action_it_was_on_and_keeps_the_ones_before(mem):
    """The action's own expression ran past its limit: the action is rejected with that
    error and the execution stays (an action never fails an execution by itself)."""
    from executions import services
    from executions.runtime import advancing, store

    mem.add_machine(SHAKY)
    execution = services.start("shaky").execution
    mem.queue.run()
    for action in ("ok", "boom", "ok"):
        services.trigger(execution.pk, action)
    advanced = advancing.advance(execution.pk)  # one computation for the three items
    assert advanced.applied == 2  # the first applied, the second rejected
    execution = store.active.read_execution(execution.pk)
    assert (execution.status, execution.context) == (engine.WAITING, {"n": 1})
    rejected = mem.history_of(execution.pk)[-1]
    assert rejected["kind"] == engine.ACTION_REJECTED and rejected["action"] == "boom"
    error = rejected["detail"]["error"]
    assert error["kind"] == "timeout" and "stopped" in error["message"]
    assert error["path"] == "states.open.actions[1].assign.n"
    assert execution.has_pending  # the third waits for the next advance
    assert advancing.advance(execution.pk).applied == 1
    assert store.active.read_execution(execution.pk).context == {"n": 2}


def test_values_that_cannot_be_sent_back_fail_the_execution_not_the_process():
    try:  # 5,000 digits: JSON cannot write it
        step = run(machine(context="{'n': 10 ** 5000}"), [engine.Start()])
    except pool.Failure as failure:  # the child could not send the step back
        assert failure.kind == "result"
    else:  # the sandbox's result check refused it first
        assert step["snapshot"]["status"] == engine.FAILED
        assert step["snapshot"]["error"]["kind"] == "result"
    assert run(machine(), [engine.Start()])["snapshot"]["status"] == engine.WAITING


def test_a_child_that_cannot_start_is_an_error_of_the_service(monkeypatch):
    monkeypatch.setattr(pool.sys, "executable", "/bin/false")
    with pytest.raises(RuntimeError, match="could not start a child"):
        run(machine(), [engine.Start()])
    assert pool.get("compute").count == 0
