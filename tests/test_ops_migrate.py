"""Migrating executions to another version, one at a time with compare-and-swap: what is
kept (a timer or call the new state still has), what is dropped and entered again, failed
executions, and what is refused."""
import pytest

from executions import engine, migrating, operations, services
from executions.models import Execution, HistoryEntry, Timer, Work
from executions.runtime import store as stores
from executions.runtime.store import Conflict
from executions.services import InvalidRequest, NotAvailable

PAYER = """
id: payer
execution_mode: async-throughput
start_at: paying
context: "{'n': input['n']}"
states:
  paying:
    actions:
      - id: pay
        invoke:
          call: "io('http.request.json', 'GET', 'http://127.0.0.1:9/x')"
          timeout_seconds: 30
          success: {state: paid}
  paid: {return: "ctx['n']"}
"""
RENAMED_CALL = PAYER.replace("id: pay\n", "id: charge\n")
CHECKER = """
id: checker
execution_mode: sync
start_at: open
context: {}
states:
  open:
    actions:
      - {id: check, on: check, state: checking}
  checking:
    actions:
      - {id: assess, assign: {ok: "input['x'] > 1"}, state: done}
  done: {return: null}
"""
EDITOR = "user:edith"


def migrate(execution, version, **mapping):
    return operations.perform(execution.pk, operations.request(
        "migrate", version=version, mapping=mapping or None), actor=EDITOR, reason="upgrade")


@pytest.fixture
def paying(save_machine):
    save_machine(PAYER)
    execution = services.start("payer", input={"n": 1}, wait=True).execution
    assert execution.status == engine.INVOKING
    return execution


def test_a_call_the_new_state_still_has_is_kept(paying, save_machine):
    save_machine(PAYER.replace("timeout_seconds: 30", "timeout_seconds: 30\n          "
                               "ok_if: 'True'"))
    work = Work.objects.get(execution=paying)
    migrate(paying, 2)
    paying.refresh_from_db()
    assert (paying.machine_version.version, paying.status) == (2, engine.INVOKING)
    assert Work.objects.get(execution=paying).status == Work.PENDING
    assert Work.objects.get(execution=paying).token == work.token
    assert Timer.objects.filter(execution=paying).count() == 1


def test_a_call_the_new_state_lacks_is_canceled_and_the_state_entered_again(paying,
                                                                            save_machine):
    save_machine(RENAMED_CALL)
    old_work = Work.objects.get(execution=paying)
    old_timer = Timer.objects.get(execution=paying)
    plan = migrating.plan("payer", 1, 2)
    (impact,) = [row for row in plan.states if row.state == "paying"]
    assert (impact.count, impact.outstanding_changed) == (1, 1)
    verdict = operations.preview(paying.pk, operations.request("migrate", version=2))
    assert verdict.changes == ["drops the call of pay", "drops the timeout timer of pay"] or \
        verdict.changes == ["drops the timeout timer of pay", "drops the call of pay"]
    migrate(paying, 2)
    paying.refresh_from_db()
    assert paying.status == engine.INVOKING and paying.engine_state["work"]["transition"] == \
        "charge"
    old_work.refresh_from_db()
    assert old_work.status == Work.CANCELED
    assert not Timer.objects.filter(token=old_timer.token).exists()
    assert Timer.objects.filter(execution=paying).count() == 1
    row = HistoryEntry.objects.get(execution=paying, kind=operations.EXECUTION_MIGRATED)
    assert row.detail["from_version"] == 1 and row.detail["to_version"] == 2
    assert sorted(row.detail["dropped"]) == ["the call of pay", "the timeout timer of pay"]


def test_a_failed_execution_keeps_its_failure_and_retries_on_the_new_version(save_machine):
    save_machine(CHECKER)
    execution = services.start("checker").execution
    services.trigger(execution.pk, "check")
    assert Execution.objects.get(pk=execution.pk).status == engine.FAILED  # no input['x']
    save_machine(CHECKER.replace("input['x'] > 1", "True"))
    migrate(execution, 2)
    execution.refresh_from_db()
    assert (execution.status, execution.machine_version.version) == (engine.FAILED, 2)
    retried = services.retry(execution.pk).execution
    assert retried.status == engine.FINISHED


def test_what_a_migration_refuses(save_machine):
    save_machine(CHECKER)
    execution = services.start("checker").execution
    services.trigger(execution.pk, "check")
    save_machine(CHECKER.replace("id: assess", "id: judge"))
    save_machine(CHECKER.replace("open", "start"))
    refusals = [
        (operations.request("migrate", version=1), "on version 1 already"),
        (operations.request("migrate", version=9), "checker has no version 9"),
        (operations.request("migrate", version=2), "it failed at assess"),
    ]
    for operation, words in refusals:
        verdict = operations.preview(execution.pk, operation)
        assert verdict.verdict == operations.NOT_AVAILABLE and words in verdict.reason
        with pytest.raises(NotAvailable):
            operations.perform(execution.pk, operation, actor=EDITOR, reason="x")
    waiting = services.start("checker", version=1).execution
    verdict = operations.preview(waiting.pk, operations.request("migrate", version=3))
    assert "version 3 has no state open: the mapping must name one" in verdict.reason
    migrate(waiting, 3, open="start")
    assert Execution.objects.get(pk=waiting.pk).state == "start"
    with pytest.raises(InvalidRequest) as problem:
        migrating.plan("checker", 1, 3, {"open": "nowhere"})
    assert problem.value.path == "map.open"


def test_a_migration_computed_on_a_stale_read_is_not_saved(save_machine):
    save_machine(CHECKER)
    execution = services.start("checker").execution
    save_machine(CHECKER.replace("{}", "{v: 2}"))
    stale = stores.active.read_execution(execution.pk)
    plan = operations._plan(stale, operations.request("migrate", version=2), actor=EDITOR,
                            reason="x", key=None)
    services.trigger(execution.pk, "check")  # moved on meanwhile (and failed)
    with pytest.raises(Conflict):
        operations._save(stale, plan, None)
    fresh = Execution.objects.get(pk=execution.pk)
    assert fresh.machine_version.version == 1
    assert not HistoryEntry.objects.filter(kind=operations.EXECUTION_MIGRATED).exists()
