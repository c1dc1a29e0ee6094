"""The runtime on the database: persistence, idempotency, rejection, concurrency, sync mode."""
import threading
import time
from datetime import timedelta
from unittest import mock

import pytest
from django.db import DataError, connection
from django.db.models import F
from django_q.models import OrmQ

from executions import engine, services, tasks
from executions.models import Execution, HistoryEntry, InboxItem, StarterMarker, Timer, Work
from executions.runtime import advancing, queue, sqlstore, timers

LOOP = """
id: loop
execution_mode: sync
start_at: counting
context: {n: 0}
states:
  counting:
    actions:
      - {id: step, when: "ctx['n'] < 900", assign: {n: "ctx['n'] + 1"}}
      - {id: done, state: done}
  done: {return: "ctx['n']"}
"""

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
      - id: nap
        on: nap
        state: napping
  napping:
    actions:
      - {id: wake, on: wake, state: open}
      - {id: doze, wait: {seconds: 60}, state: open}
  closed: {return: "ctx['items']"}
"""


def gap_free(execution):
    seqs = list(execution.history.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    return seqs


@pytest.mark.django_db(transaction=True)
def test_sync_run_of_900_automatic_steps_is_persisted_in_one_advance(save_machine):
    save_machine(LOOP)
    outcome = services.start("loop", actor="test")
    execution = outcome.execution
    assert execution.status == engine.FINISHED
    assert execution.result == 900
    assert execution.finished_at is not None
    seqs = gap_free(execution)
    taken = execution.history.filter(kind=engine.TRANSITION_TAKEN)
    assert taken.filter(transition="step").count() == 900
    assert len(seqs) == execution.engine_state["seq"]
    assert not InboxItem.objects.filter(execution=execution).exists()  # a start needs none


@pytest.mark.django_db(transaction=True)
def test_actions_apply_and_unavailable_ones_change_nothing(save_machine):
    save_machine(CART)
    execution = services.start("cart", actor="alice").execution
    assert execution.status == engine.WAITING
    services.trigger(execution.pk, "add", input={"sku": "x9"}, actor="alice", wait=True)
    before = list(execution.history.values_list("seq", "kind"))

    with pytest.raises(services.NotAvailable) as refused:
        services.trigger(execution.pk, "wake", actor="alice", wait=True)
    assert "wake" in refused.value.reason
    assert set(refused.value.available_actions) == {"add", "close", "nap"}
    execution.refresh_from_db()
    assert list(execution.history.values_list("seq", "kind")) == before
    assert execution.context == {"items": ["x9"]}
    assert not InboxItem.objects.filter(payload__action="wake").exists()


@pytest.mark.django_db(transaction=True)
def test_a_false_guard_is_a_rejection_with_the_reason(save_machine):
    save_machine(CART)
    execution = services.start("cart").execution
    with pytest.raises(services.NotAvailable):
        services.trigger(execution.pk, "close", wait=True)
    execution.refresh_from_db()
    assert execution.state == "open"


@pytest.mark.django_db(transaction=True)
def test_bad_input_is_refused_before_anything_is_stored(save_machine):
    save_machine(CART)
    execution = services.start("cart").execution
    count = InboxItem.objects.count()
    with pytest.raises(services.InvalidRequest):
        services.trigger(execution.pk, "add", input=["not", "an", "object"])
    with pytest.raises(services.InvalidRequest):
        services.start("cart", input="text")
    assert InboxItem.objects.count() == count


@pytest.mark.django_db(transaction=True)
def test_an_async_start_is_the_stored_row_and_queued_actions_follow_it(save_machine):
    save_machine(CART)
    execution = services.start("cart", input={"who": "ann"}, mode="async-throughput",
                             actor="user:ann").execution
    assert execution.version == 0 and not execution.engine_state
    assert not execution.history.exists() and not execution.inbox.exists()
    for sku in ("a", "b"):  # accepted before any worker started it: queued in order
        services.trigger(execution.pk, "add", input={"sku": sku})
    assert execution.inbox.filter(processed_at__isnull=True).count() == 2

    advancing.advance(execution.pk)
    execution.refresh_from_db()
    assert execution.status == engine.WAITING and execution.context["items"] == ["a", "b"]
    started = execution.history.get(seq=1)
    assert (started.kind, started.input, started.actor) == (engine.STARTED, {"who": "ann"},
                                                            "user:ann")
    assert not execution.inbox.filter(processed_at__isnull=True).exists()
    gap_free(execution)


QUICK = """
id: quick
start_at: a
states:
  a:
    actions:
      - {id: go, state: b}
  b: {return: "input['n']"}
"""


def _stored_starts(count, first=0):
    """Async starts no worker has applied yet: no cluster runs, so the starter task they
    woke stays in the queue and the test plays the worker."""
    executions = [services.start("quick", input={"n": n}).execution
                  for n in range(first, first + count)]
    return sorted(executions, key=lambda execution: execution.pk.hex)  # the batches' order


def _starter_tasks():
    """How many starter tasks wait in the queue (the ORM broker's table)."""
    return sum(task.func() == "executions.tasks.start_task" for task in OrmQ.objects.all())


def _assert_started_once(executions):
    for execution in executions:
        execution.refresh_from_db()
        assert execution.status == engine.FINISHED, execution.error
        assert execution.result == execution.input["n"]
        assert execution.history.filter(kind=engine.STARTED).count() == 1
        gap_free(execution)


@pytest.mark.django_db(transaction=True)
def test_one_starter_task_starts_every_waiting_execution(save_machine):
    save_machine(QUICK)
    executions = _stored_starts(2 * advancing.START_BATCH + 5)  # three batches
    assert _starter_tasks() == 1  # woken by the first start; the others found it pending
    assert queue.starter_pending_since(queue._broker().list_key) is not None

    tasks.start_task()
    _assert_started_once(executions)
    assert queue.starter_pending_since(queue._broker().list_key) is None
    _stored_starts(1)  # nothing pending any more: the next start wakes a new one
    assert _starter_tasks() == 2


@pytest.mark.django_db(transaction=True)
def test_starts_accepted_while_a_starter_runs_are_not_left_waiting(save_machine):
    """The race the marker protocol is about, played in order: a caller commits and finds the
    marker still set just after the starter's last look found nothing (so it enqueues
    nothing), and another commits just after the starter cleared the marker."""
    save_machine(QUICK)
    executions = _stored_starts(3)
    found, late = [], []
    real = sqlstore.executions_not_started

    def look_then_start_one(after, limit):
        waiting = real(after, limit)
        found.append(len(waiting))
        if len(found) in (2, 3):  # the last look of the drain; the pass after the clear
            late.extend(_stored_starts(1, first=100 + len(found)))
        return waiting

    with mock.patch.object(sqlstore, "executions_not_started", side_effect=look_then_start_one):
        tasks.start_task()
    assert found == [3, 0, 1]
    _assert_started_once(executions + late[:1])  # the pass after the clear found the first
    assert Execution.objects.get(pk=late[1].pk).version == 0  # its caller saw it clear...
    assert _starter_tasks() == 2  # ...and woke a new starter
    tasks.start_task()
    _assert_started_once(late)


NUL_RESULT = r"""
id: nul
start_at: a
states:
  a:
    actions:
      - {id: go, state: b}
  b: {return: '"a\x00"'}
"""  # its result, a string with a NUL character, cannot be stored


@pytest.mark.django_db(transaction=True)
def test_a_start_whose_result_cannot_be_stored_fails_alone(save_machine):
    save_machine(QUICK)
    save_machine(NUL_RESULT)
    executions = _stored_starts(3)
    refused = services.start("nul").execution
    tasks.start_task()
    _assert_started_once(executions)
    refused = Execution.objects.get(pk=refused.pk)
    assert refused.status == engine.FAILED
    assert refused.error["type"] == "value_error"


@pytest.mark.django_db(transaction=True)
def test_a_start_the_database_refuses_does_not_hold_up_the_others(save_machine, caplog):
    save_machine(QUICK)
    executions = _stored_starts(3)
    refused = _stored_starts(1, first=3)[0]
    save_starts = sqlstore.SqlStore.save_starts

    def refusing(self, steps):
        if any(execution.pk == refused.pk for execution, _ in steps):
            raise DataError("value refused by the database")
        return save_starts(self, steps)

    with mock.patch.object(sqlstore.SqlStore, "save_starts", refusing):
        tasks.start_task()
    _assert_started_once(executions)
    assert Execution.objects.get(pk=refused.pk).version == 0  # left for a later starter
    assert f"could not start execution {refused.pk}" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_a_batch_start_skips_an_execution_another_worker_started_meanwhile(save_machine):
    save_machine(QUICK)
    executions = _stored_starts(3)
    stale = sqlstore.executions_not_started(None, 10)  # read before the other worker
    assert len(stale) == 3
    advancing.advance(executions[1].pk)  # the other worker
    with mock.patch.object(sqlstore, "executions_not_started", return_value=stale):
        assert advancing.start_waiting(deadline=time.monotonic() + 30) == 2
    _assert_started_once(executions)


@pytest.mark.django_db(transaction=True)
def test_a_starter_whose_task_was_lost_is_replaced(save_machine):
    save_machine(QUICK)
    executions = _stored_starts(2)
    OrmQ.objects.all().delete()  # its task is lost (say, a worker killed after taking it)
    executions += _stored_starts(1, first=2)  # the marker is trusted for a while
    assert _starter_tasks() == 0
    assert timers.sweep()["starts_waiting"] is False  # and the starts are new

    lost_for = queue.STARTER_LOST_AFTER_SECONDS + 1
    StarterMarker.objects.update(pending_since=F("pending_since") - lost_for)
    Execution.objects.update(created_at=F("created_at") - timedelta(seconds=lost_for))
    swept = timers.sweep()
    assert swept["starts_waiting"] is True and swept["executions"] == 0  # no task each
    assert _starter_tasks() == 1
    tasks.start_task()
    _assert_started_once(executions)


@pytest.mark.django_db(transaction=True)
def test_a_caller_replaces_a_starter_whose_task_was_lost(save_machine):
    save_machine(QUICK)
    executions = _stored_starts(1)
    OrmQ.objects.all().delete()
    StarterMarker.objects.update(
        pending_since=F("pending_since") - queue.STARTER_LOST_AFTER_SECONDS - 1)
    executions += _stored_starts(1, first=1)
    assert _starter_tasks() == 1
    tasks.start_task()
    _assert_started_once(executions)


@pytest.mark.django_db(transaction=True)
def test_a_start_after_a_new_version_was_saved_runs_the_new_version(save_machine):
    first = save_machine(QUICK)
    assert services.start("quick", input={"n": 1}).execution.machine_version_id == first.pk
    second = save_machine(QUICK.replace("input['n']", "input['n'] + 1"))  # as if elsewhere
    execution = services.start("quick", input={"n": 1}, wait=True).execution
    assert execution.machine_version_id == second.pk and execution.result == 2


@pytest.mark.django_db(transaction=True)
def test_same_idempotency_key_applies_once(save_machine):
    save_machine(CART)
    first = services.start("cart", idempotency_key="order-1")
    again = services.start("cart", idempotency_key="order-1")
    assert again.created is False and again.execution.pk == first.execution.pk
    assert Execution.objects.count() == 1

    execution = first.execution
    for _ in range(3):
        services.trigger(execution.pk, "add", input={"sku": "a"}, idempotency_key="add-a",
                         wait=True)
    execution.refresh_from_db()
    assert execution.context["items"] == ["a"]
    assert execution.history.filter(kind=engine.ACTION_RECEIVED).count() == 1


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_triggers_each_apply_exactly_once(save_machine):
    save_machine(CART)
    execution = services.start("cart").execution
    errors = []

    def send(i):
        try:
            services.trigger(execution.pk, "add", input={"sku": f"s{i}"}, wait=True,
                           idempotency_key=f"k{i}", actor=f"client-{i}")
        except Exception as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    execution.refresh_from_db()
    assert sorted(execution.context["items"]) == sorted(f"s{i}" for i in range(50))
    assert execution.history.filter(kind=engine.ACTION_RECEIVED).count() == 50
    gap_free(execution)
    assert not InboxItem.objects.filter(processed_at__isnull=True).exists()


@pytest.mark.django_db(transaction=True)
def test_sleeping_timer_is_stored_and_canceled_by_an_action(save_machine):
    save_machine(CART)
    execution = services.start("cart").execution
    services.trigger(execution.pk, "nap", wait=True)
    execution.refresh_from_db()
    assert execution.status == engine.SLEEPING
    timer = Timer.objects.get(execution=execution)
    assert timer.purpose == "wait"
    services.trigger(execution.pk, "wake", wait=True)
    execution.refresh_from_db()
    assert execution.status == engine.WAITING and execution.state == "open"
    assert not Timer.objects.filter(execution=execution).exists()


@pytest.mark.django_db(transaction=True)
def test_due_timer_fires_exactly_once(save_machine):
    save_machine(CART)
    execution = services.start("cart").execution
    services.trigger(execution.pk, "nap", wait=True)
    due = Timer.objects.get(execution=execution).due_at
    assert timers.fire_due_timers(now=due - 1) == 0
    assert timers.fire_due_timers(now=due + 1) == 1  # sync mode: enqueued for a worker
    assert timers.fire_due_timers(now=due + 2) == 0
    item = InboxItem.objects.get(execution=execution, kind=InboxItem.TIMER)
    advancing.advance(execution.pk)
    execution.refresh_from_db()
    assert execution.state == "open" and execution.status == engine.WAITING
    item.refresh_from_db()
    assert item.outcome == InboxItem.APPLIED
    assert execution.history.filter(kind=engine.TIMER_FIRED).count() == 1


def _run_queued_tasks():
    """Play the workers: run every task in the queue (the ORM broker's table), oldest first."""
    queued = [task.task for task in OrmQ.objects.order_by("id")]
    OrmQ.objects.all().delete()
    for task in queued:
        module, name = task["func"].rsplit(".", 1)
        assert module == "executions.tasks"
        getattr(tasks, name)(*task["args"])
    return [task["func"].rsplit(".", 1)[1] for task in queued]


@pytest.mark.django_db(transaction=True)
def test_timers_due_together_share_one_task_per_worker(save_machine):
    save_machine(CART)
    executions = []
    for _ in range(5):
        execution = services.start("cart").execution
        services.trigger(execution.pk, "nap", wait=True)
        executions.append(execution)
    OrmQ.objects.all().delete()
    due = max(Timer.objects.values_list("due_at", flat=True))
    assert timers.fire_due_timers(now=due + 1) == 5
    assert _run_queued_tasks() == ["advance_many_task"] * queue.Conf.WORKERS
    for execution in executions:
        execution.refresh_from_db()
        assert (execution.state, execution.status) == ("open", engine.WAITING)
        assert execution.history.filter(kind=engine.TIMER_FIRED).count() == 1
        gap_free(execution)


@pytest.mark.django_db(transaction=True)
def test_one_execution_failing_in_a_shared_task_does_not_hold_up_the_others(save_machine,
                                                                             caplog):
    save_machine(CART)
    execution = services.start("cart").execution
    services.trigger(execution.pk, "nap", wait=True)
    due = Timer.objects.get(execution=execution).due_at
    timers.fire_due_timers(now=due + 1)
    missing = "00000000-0000-4000-8000-000000000000"
    tasks.advance_many_task([(missing, "sync"), (str(execution.pk), "sync")])
    execution.refresh_from_db()
    assert execution.state == "open"
    assert f"could not advance execution {missing}" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_cancel_and_retry(save_machine):
    save_machine("""
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
""")
    execution = services.start("fragile").execution
    services.trigger(execution.pk, "go", input={}, wait=True)
    execution.refresh_from_db()
    assert execution.status == engine.FAILED
    assert execution.error["type"] == "expression_error"
    assert "needed" in execution.error["message"]
    assert execution.state == "t"

    services.retry(execution.pk, actor="ops")  # resumes where it failed: fails there again
    execution.refresh_from_db()
    assert execution.status == engine.FAILED and execution.state == "t"
    with pytest.raises(services.NotAvailable):
        services.retry(services.start("fragile").execution.pk)  # waiting: not failed

    services.cancel(execution.pk, actor="ops", reason="test")
    execution.refresh_from_db()
    assert execution.status == engine.CANCELED
    with pytest.raises(services.NotAvailable):
        services.cancel(execution.pk, reason="again")
    kinds = list(execution.history.order_by("seq").values_list("kind", flat=True))
    assert engine.EXECUTION_RETRIED in kinds and kinds[-1] == engine.EXECUTION_CANCELED
    gap_free(execution)


@pytest.mark.django_db(transaction=True)
def test_sync_call_with_mock_runs_inline_and_records_the_work(save_machine):
    save_machine("""
id: caller
execution_mode: sync
start_at: calling
states:
  calling:
    actions:
      - id: fetch
        invoke:
          call: "io('http.request.json', 'GET', 'http://127.0.0.1:9/never')"
          ok_if: "output['status'] == 200"
          success: {state: done, assign: {n: "output['body']['n']"}}
          error: {state: broken}
  done: {return: "ctx['n']"}
  broken: {return: null}
""")
    mocked = services.start(
        "caller", mocks={"http.request.json": "{'status': 200, 'headers': {}, 'body': {'n': 7}}"}
    ).execution
    assert mocked.status == engine.FINISHED and mocked.result == 7
    assert Work.objects.get(execution=mocked).status == Work.DONE
    succeeded = mocked.history.get(kind=engine.WORK_SUCCEEDED)
    assert succeeded.duration_ms is not None

    unmocked = services.start("caller").execution  # port 9: connection refused
    assert unmocked.status == engine.FINISHED and unmocked.state == "broken"
    failed = unmocked.history.get(kind=engine.WORK_FAILED)
    assert failed.error["type"] == "network_error"


@pytest.mark.django_db(transaction=True)
def test_history_rows_carry_what_the_explorer_needs(save_machine):
    save_machine(CART)
    execution = services.start("cart", actor="user:alice").execution
    services.trigger(execution.pk, "add", input={"sku": "x"}, actor="user:alice", wait=True)
    started = execution.history.get(seq=1)
    assert started.kind == engine.STARTED and started.actor == "user:alice"
    assert started.context == {"items": []}
    taken = HistoryEntry.objects.filter(execution=execution, transition="add").get()
    assert taken.from_state == "open" and taken.to_state == "open"
    assert taken.context == {"items": ["x"]}
    assert taken.machine_version_id == execution.machine_version_id


SENDER = """
id: sender
execution_mode: sync
start_at: s
states:
  s:
    actions:
      - id: send
        invoke:
          trigger: {execution: "input['to']", action: go}
          success: {state: done}
          error: {state: oops, assign: {why: "error"}}
  done: {return: "'sent'"}  # (output is bound in success only)
  oops: {return: "ctx['why']"}
"""


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("to, says", [
    ("not-a-uuid", "“not-a-uuid” is not a valid UUID."),
    ("00000000-0000-0000-0000-000000000000", "no execution 00000000-0000-0000-0000-000000000000"),
])
def test_sending_to_an_execution_that_cannot_exist_is_a_clear_error(save_machine, to, says):
    save_machine(SENDER)
    execution = services.start("sender", input={"to": to}).execution
    assert (execution.status, execution.state) == (engine.FINISHED, "oops")
    assert execution.result == {"type": "unknown_execution",
                                "message": f"cannot send to {to!r}: {says}"}
