"""A child started ahead (pool.prestart, what `manage.py trigger` does before Django sets
itself up): the first computation uses it, after its first answer, with the same bounds as
any child; one that cannot start fails at that first use and leaves room for another."""
import time

import pytest

from executions import engine
from executions.runtime import pool, pool_child

LIMIT = 1.0  # the expression time limit used here
RUNAWAY = """n = 0
while True:
    try:
        while True:
            n += 1
    finally:
        continue"""  # the sandbox's stop signal is swallowed: only the parent's kill ends it


def machine(context="{'n': 1}"):
    return f"prestart-test:{context}", {
        "id": "prestart-test", "start_at": "a", "context": context,
        "states": {"a": {"actions": [{"id": "go", "on": "go", "state": "a"}]}}}


def run(key_document, events):
    key, document = key_document
    return pool.compute(
        machine_key=key, document=lambda: document, snapshot=None, lead=1, refuse=False,
        events=[pool_child.event_data(event) for event in events],
        env={"now": 1000.0, "seed": 7, "step_limit": 1000, "max_steps": None,
             "execution": {"id": "e1", "machine": "prestart-test", "version": 1}},
        time_limit=LIMIT, max_result_bytes=262144)


@pytest.fixture(autouse=True)
def fresh_pools():
    pool.shutdown()
    yield
    pool.shutdown()


def test_a_prestarted_child_is_not_waited_for_and_serves_the_first_computation():
    pool.prestart()
    compute_pool = pool.get("compute")
    (worker,) = compute_pool.idle
    assert not worker.confirmed and worker.calls == 0  # started, its answer not awaited
    pool.prestart()  # one is idle already: nothing more
    assert (compute_pool.started, compute_pool.count) == (1, 1)
    step = run(machine(), [engine.Start()])
    assert step["snapshot"]["status"] == engine.WAITING
    assert worker.confirmed and worker.calls == 2  # the ping, then the computation
    assert compute_pool.started == 1 and compute_pool.idle == [worker]


def test_prestart_never_goes_past_the_pool_s_size(settings):
    settings.DATA_MACHINES = {**settings.DATA_MACHINES, "POOL_SIZE": 1}
    compute_pool = pool.get("compute")
    worker = compute_pool.acquire()  # busy
    pool.prestart()
    assert (compute_pool.started, compute_pool.count, compute_pool.idle) == (1, 1, [])
    compute_pool.release(worker)


def test_a_runaway_expression_in_a_prestarted_child_is_killed():
    pool.prestart()
    began = time.monotonic()
    with pytest.raises(pool.Failure) as failure:
        run(machine(context=RUNAWAY), [engine.Start()])
    assert failure.value.kind == "timeout" and failure.value.path == "context"
    assert time.monotonic() - began < LIMIT + pool.MARGIN + 5
    assert pool.get("compute").count == 0
    assert run(machine(), [engine.Start()])["snapshot"]["status"] == engine.WAITING


def test_a_prestarted_child_that_cannot_start_fails_at_first_use(monkeypatch):
    monkeypatch.setattr(pool.sys, "executable", "/bin/false")
    pool.prestart()  # the process is made; that it exits at once is seen at first use
    with pytest.raises(RuntimeError, match="could not start a child"):
        run(machine(), [engine.Start()])
    compute_pool = pool.get("compute")
    assert (compute_pool.count, compute_pool.idle, compute_pool.workers) == (0, [], set())
    monkeypatch.undo()
    assert run(machine(), [engine.Start()])["snapshot"]["status"] == engine.WAITING
    assert compute_pool.started == 2
