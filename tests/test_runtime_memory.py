"""The runtime on the in-memory store: start, trigger, timers, work, cancel, retry, with no
database (nothing here is marked django_db, so any query fails the test). Milliseconds."""
import pytest

from executions import engine, services, tasks
from executions.models import Work
from executions.runtime import advancing, queue, store, timers
from executions.runtime.memstore import MemoryStore

CART = """
id: cart
execution_mode: sync
start_at: open
context: {items: []}
states:
  open:
    actions:
      - {id: add, on: add, assign: {items: "ctx['items'] + [input['sku']]"}}
      - {id: close, on: close, when: "len(ctx['items']) > 0", state: closed}
      - {id: nap, on: nap, state: napping}
  napping:
    actions:
      - {id: wake, on: wake, state: open}
      - {id: doze, wait: {seconds: 60}, state: open}
  closed: {return: "ctx['items']"}
"""

FRAGILE = """
id: fragile
execution_mode: sync
start_at: s
states:
  s:
    actions:
      - {id: go, on: go, assign: {given: "input"}, state: t}
  t:
    actions:
      # Automatic: its failure fails the execution (an action's own would only reject it).
      - {id: check, assign: {x: "ctx['given']['needed']"}, state: u}
  u: {return: "ctx['x']"}
"""

CALLER = """
id: caller
execution_mode: {mode}
start_at: calling
states:
  calling:
    actions:
      - id: fetch
        invoke:
          call: "io('http.request.json', 'GET', 'http://127.0.0.1:9/never')"
          ok_if: "output['status'] == 200"
          success: {{state: done, assign: {{n: "output['body']['n']"}}}}
          error: {{state: broken}}
  done: {{return: "ctx['n']"}}
  broken: {{return: null}}
"""
MOCKS = {"http.request.json": "{'status': 200, 'headers': {}, 'body': {'n': 7}}"}

PARENT = """
id: parent
execution_mode: sync
start_at: asking
states:
  asking:
    actions:
      - id: ask
        invoke: {machine: cart, input: "{}", success: {state: done, assign: {got: output}}}
  done: {return: "ctx['got']"}
"""


class Queue:
    """The task queue, played in the test: tasks are recorded, then run by `run()`."""

    def __init__(self):
        self.tasks = []

    def run(self):
        done = []
        while self.tasks:
            name, args = self.tasks.pop(0)
            getattr(tasks, name)(*args)
            done.append(name)
        return done


@pytest.fixture
def mem(monkeypatch):
    tasks_queue = Queue()
    add = tasks_queue.tasks.append
    monkeypatch.setattr(queue, "queue_in_database", lambda: False)
    monkeypatch.setattr(queue, "enqueue_advance",
                        lambda execution_id, mode=None: add(("advance_task", (execution_id, mode))))
    monkeypatch.setattr(queue, "enqueue_advances",
                        lambda pairs: add(("advance_many_task", (list(pairs),))))
    monkeypatch.setattr(queue, "enqueue_work",
                        lambda work_id, kind=None: add(("work_task", (work_id,))))
    monkeypatch.setattr(queue, "wake_starter", lambda: add(("start_task", ())))
    monkeypatch.setattr(queue, "clear_starter_marker", lambda: None)
    with store.using(MemoryStore()) as memory:
        memory.queue = tasks_queue
        yield memory


def kinds(memory, execution):
    return [row["kind"] for row in memory.history_of(execution.pk)]


def gap_free(memory, execution):
    seqs = [row["seq"] for row in memory.history_of(execution.pk)]
    assert seqs == list(range(1, len(seqs) + 1))


def test_a_sync_start_and_actions_apply_at_once(mem):
    mem.add_machine(CART)
    execution = services.start("cart", actor="test").execution
    assert (execution.status, execution.state) == (engine.WAITING, "open")
    execution = services.trigger(execution.pk, "add", input={"sku": "a"}).execution
    assert execution.context == {"items": ["a"]}
    execution = services.trigger(execution.pk, "close").execution
    assert (execution.status, execution.result) == (engine.FINISHED, ["a"])
    assert kinds(mem, execution)[0] == engine.STARTED
    gap_free(mem, execution)
    assert mem.queue.tasks == []


def test_an_unavailable_action_changes_nothing(mem):
    mem.add_machine(CART)
    execution = services.start("cart").execution
    before = len(mem.history_of(execution.pk))
    with pytest.raises(services.NotAvailable) as refused:
        services.trigger(execution.pk, "close", wait=True)  # the guard is false
    assert "guard" in refused.value.reason
    assert refused.value.available_actions == ["add", "close", "nap"]
    with pytest.raises(services.NotAvailable):
        services.trigger(execution.pk, "wake", wait=True)
    assert len(mem.history_of(execution.pk)) == before
    assert mem.inbox == {}


def test_bad_input_is_refused_with_where(mem):
    mem.add_machine(CART)
    execution = services.start("cart").execution
    with pytest.raises(services.InvalidRequest):
        services.trigger(execution.pk, "add", input=["not", "an", "object"])
    with pytest.raises(services.InvalidRequest) as bad:
        services.trigger(execution.pk, "add", input={"sku": float("nan")})
    assert bad.value.path == "input.sku"
    with pytest.raises(services.InvalidRequest):
        services.start("cart", input="text")
    with pytest.raises(services.InvalidRequest):
        services.trigger(execution.pk, "")


def test_the_same_idempotency_key_applies_once(mem):
    mem.add_machine(CART)
    first = services.start("cart", idempotency_key="k")
    again = services.start("cart", idempotency_key="k")
    assert again.created is False and again.execution.pk == first.execution.pk
    execution = first.execution
    for _ in range(3):
        services.trigger(execution.pk, "add", input={"sku": "a"}, idempotency_key="a",
                         wait=True)
    mem.refresh(execution)
    assert execution.context["items"] == ["a"]


def test_async_starts_share_a_starter_task_and_queued_actions_follow(mem):
    mem.add_machine(CART.replace("execution_mode: sync", "execution_mode: async-throughput"))
    executions = [services.start("cart").execution for _ in range(3)]
    assert all(e.version == 0 for e in executions)  # the stored row is the pending start
    services.trigger(executions[0].pk, "add", input={"sku": "x"})  # queued behind its start
    assert [name for name, _ in mem.queue.tasks] == ["start_task"] * 3 + ["advance_task"]
    mem.queue.run()
    for execution in executions:
        mem.refresh(execution)
        assert (execution.status, execution.state) == (engine.WAITING, "open")
        assert kinds(mem, execution).count(engine.STARTED) == 1
    assert executions[0].context == {"items": ["x"]}


def test_async_latency_takes_one_step_per_task(mem):
    mem.add_machine(CART.replace("execution_mode: sync", "execution_mode: async-latency"))
    execution = services.start("cart").execution
    assert mem.queue.run() == ["advance_task"]
    mem.refresh(execution)
    assert execution.status == engine.WAITING


def test_a_timer_fires_once_and_an_action_cancels_it(mem):
    mem.add_machine(CART)
    execution = services.start("cart").execution
    services.trigger(execution.pk, "nap", wait=True)
    (timer,) = mem.timers.values()
    assert timers.next_timer_due() == timer.due_at
    assert timers.fire_due_timers(now=timer.due_at - 1) == 0
    assert timers.fire_due_timers(now=timer.due_at + 1) == 1
    assert timers.fire_due_timers(now=timer.due_at + 2) == 0
    assert mem.queue.run() == ["advance_many_task"]
    mem.refresh(execution)
    assert (execution.status, execution.state) == (engine.WAITING, "open")
    assert kinds(mem, execution).count(engine.TIMER_FIRED) == 1

    services.trigger(execution.pk, "nap", wait=True)
    services.trigger(execution.pk, "wake", wait=True)
    assert mem.timers == {}
    assert engine.TIMER_CANCELED in kinds(mem, execution)
    gap_free(mem, execution)


def test_sync_work_is_performed_inline(mem):
    mem.add_machine(CALLER.format(mode="sync"))
    execution = services.start("caller", mocks=MOCKS).execution
    assert (execution.status, execution.result) == (engine.FINISHED, 7)
    (work,) = mem.work.values()
    assert work.status == Work.DONE
    assert engine.WORK_SUCCEEDED in kinds(mem, execution)
    assert mem.queue.tasks == []


def test_async_work_goes_through_the_queue(mem):
    mem.add_machine(CALLER.format(mode="async-throughput"))
    execution = services.start("caller", mocks=MOCKS).execution
    assert mem.queue.run() == ["start_task", "work_task", "advance_task"]
    mem.refresh(execution)
    assert (execution.status, execution.result) == (engine.FINISHED, 7)
    succeeded = [row for row in mem.history_of(execution.pk)
                 if row["kind"] == engine.WORK_SUCCEEDED]
    assert succeeded[0]["duration_ms"] is not None


def test_a_child_execution_reports_back_to_its_parent(mem):
    mem.add_machine(CART)
    mem.add_machine(PARENT)
    parent = services.start("parent").execution
    assert parent.status == engine.INVOKING
    (child,) = mem.children(parent.pk, parent.engine_state["work"]["token"])
    services.trigger(child.pk, "add", input={"sku": "y"})
    services.trigger(child.pk, "close")
    mem.refresh(parent)
    assert (parent.status, parent.result) == (engine.FINISHED, ["y"])


def test_cancel_and_retry_follow_the_engine_rules(mem):
    mem.add_machine(FRAGILE)
    execution = services.start("fragile").execution
    services.trigger(execution.pk, "go", input={}, wait=True)
    mem.refresh(execution)
    assert execution.status == engine.FAILED and execution.state == "t"

    services.retry(execution.pk, actor="ops")  # resumes where it failed: fails there again
    mem.refresh(execution)
    assert execution.status == engine.FAILED and execution.state == "t"
    assert engine.EXECUTION_RETRIED in kinds(mem, execution)
    waiting = services.start("fragile").execution
    with pytest.raises(services.NotAvailable) as refused:
        services.retry(waiting.pk)
    assert refused.value.reason == engine.retry_refused(engine.WAITING)

    services.cancel(execution.pk, actor="ops", reason="enough")
    mem.refresh(execution)
    assert execution.status == engine.CANCELED
    with pytest.raises(services.NotAvailable) as refused:
        services.cancel(execution.pk, reason="again")
    assert refused.value.reason == engine.cancel_refused(engine.CANCELED)
    assert kinds(mem, execution)[-1] == engine.EXECUTION_CANCELED
    gap_free(mem, execution)


def test_the_sweeper_re_enqueues_what_was_left(mem):
    mem.add_machine(CART.replace("execution_mode: sync", "execution_mode: async-throughput"))
    services.start("cart")
    mem.queue.tasks.clear()  # the starter task was lost
    assert timers.sweep(stale_after=0)["starts_waiting"] is True
    assert mem.queue.run() == ["start_task"]
    assert advancing.start_waiting(deadline=0) == 0

