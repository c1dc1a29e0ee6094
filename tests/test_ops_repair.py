"""Repairs of one execution (executions/operations.py): edit the context and retry, retry a
failed action step with edited input, move to another state, cancel with a reason; each
previewed first, recorded with who and why, and saved with compare-and-swap."""
import pytest

from executions import engine, operations, services
from executions.models import Execution, HistoryEntry, Timer
from executions.runtime.store import Conflict
from executions.services import InvalidRequest, NotAvailable

REFUND = """
id: refund
execution_mode: sync
start_at: refund-requested
context: {amount: 0}
states:
  refund-requested:
    actions:
      - {id: set, on: set, assign: {amount: "input['amount']"}}
      - {id: check, on: check, state: checking}
      # An action whose work fails fails the execution in a step the action started (its
      # own expressions failing would only reject it): the step whose input can be edited.
      - id: approve
        on: approve
        invoke: {call: "input['amount'] <= 100",
                 success: {state: approved, assign: {small: "output"}}}
      - {id: hold, on: hold, state: held}
  checking:
    actions:
      - {id: assess, assign: {small: "ctx['amount'] <= 100"}, state: approved}
  held:
    actions:
      - {id: release, wait: {seconds: 3600}, state: approved}
  approved:
    actions:
      - {id: pay, on: pay, state: paid}
  paid: {return: "ctx['amount']"}
"""
OPERATOR, EDITOR = "user:olga", "user:edith"


@pytest.fixture
def refund(save_machine):
    return save_machine(REFUND)


def started():
    return services.start("refund", actor=OPERATOR).execution


def failed_on_check():
    """Failed in checking: TypeError, '<=' between str and int."""
    execution = started()
    services.trigger(execution.pk, "set", input={"amount": "50"}, actor=OPERATOR)
    failed = services.trigger(execution.pk, "check", actor=OPERATOR).execution
    assert failed.status == engine.FAILED and failed.state == "checking"
    return failed


def history_kinds(execution):
    return list(HistoryEntry.objects.filter(execution=execution).order_by("seq")
                .values_list("kind", flat=True))


def test_the_preview_says_a_plain_retry_would_fail_again_and_writes_nothing(refund):
    execution = failed_on_check()
    before = history_kinds(execution)
    verdict = operations.preview(execution.pk, operations.request("retry"))
    assert verdict.verdict == operations.WOULD_FAIL
    assert "'<=' not supported between instances of 'str' and 'int'" in verdict.reason
    assert history_kinds(execution) == before
    assert Execution.objects.get(pk=execution.pk).version == execution.version


def test_edit_the_context_and_retry_in_one_step_with_who_and_why(refund):
    execution = failed_on_check()
    fixed = operations.request("retry", context={"amount": 50})
    verdict = operations.preview(execution.pk, fixed)
    assert (verdict.verdict, verdict.after_status, verdict.after_state) == (
        operations.APPLIES, engine.WAITING, "approved")
    outcome = operations.perform(execution.pk, fixed, actor=EDITOR, reason="amount was text")
    assert (outcome.execution.status, outcome.execution.state) == (engine.WAITING, "approved")
    assert outcome.execution.context == {"amount": 50, "small": True}
    edited = HistoryEntry.objects.get(execution=execution, kind=operations.CONTEXT_EDITED)
    assert edited.actor == EDITOR and edited.context == {"amount": 50}
    assert edited.detail == {"reason": "amount was text", "changed": ["amount"]}
    retried = HistoryEntry.objects.get(execution=execution, kind=engine.EXECUTION_RETRIED)
    assert retried.seq == edited.seq + 1 and retried.actor == EDITOR
    assert retried.detail["reason"] == "amount was text"
    assert operations.request("retry", context={"amount": 50}).role == "editor"
    assert operations.request("retry").role == "operator"


def test_a_plain_retry_records_the_reason(refund):
    execution = failed_on_check()
    operations.perform(execution.pk, operations.request("retry"), actor=OPERATOR,
                       reason="the service is back")
    retried = HistoryEntry.objects.get(execution=execution, kind=engine.EXECUTION_RETRIED)
    assert retried.actor == OPERATOR and retried.detail["reason"] == "the service is back"


def test_retry_the_failed_action_step_with_edited_input(refund):
    execution = started()
    failed = services.trigger(execution.pk, "approve", input={"amount": "70"},
                              actor=OPERATOR).execution
    assert failed.status == engine.FAILED
    again = operations.request("retry", input={"amount": 70})
    # The dry run performs no work: the action's work starts again, where it failed.
    assert operations.preview(execution.pk, again).after_state == "refund-requested"
    outcome = operations.perform(execution.pk, again, actor=OPERATOR, reason="typo in amount")
    assert (outcome.execution.status, outcome.execution.state) == (engine.WAITING, "approved")
    received = HistoryEntry.objects.filter(execution=execution,
                                           kind=engine.ACTION_RECEIVED).last()
    assert received.action == "approve" and received.input == {"amount": 70}


def test_edited_input_is_refused_when_no_action_started_the_failed_step(refund):
    execution = failed_on_check()  # it failed on an automatic transition
    with_input = operations.request("retry", input={"amount": 1})
    verdict = operations.preview(execution.pk, with_input)
    assert verdict.verdict == operations.NOT_AVAILABLE and "no input to edit" in verdict.reason
    with pytest.raises(NotAvailable, match="no input to edit"):
        operations.perform(execution.pk, with_input, actor=OPERATOR, reason="again")
    failed = services.start("refund", actor=OPERATOR).execution
    with pytest.raises(NotAvailable, match="only a failed execution"):
        operations.perform(failed.pk, with_input,
                           actor=OPERATOR, reason="x")


def test_move_a_sleeping_execution_drops_its_timer_and_records_it(refund):
    execution = started()
    sleeping = services.trigger(execution.pk, "hold", actor=OPERATOR).execution
    assert sleeping.status == engine.SLEEPING and Timer.objects.filter(execution=execution)
    move = operations.request("move", state="approved", context={"amount": 5})
    verdict = operations.preview(execution.pk, move)
    assert verdict.after_state == "approved" and verdict.changes == [
        "drops the wait timer of release"]
    outcome = operations.perform(execution.pk, move, actor=EDITOR, reason="approved by phone")
    assert (outcome.execution.status, outcome.execution.state) == (engine.WAITING, "approved")
    assert outcome.execution.context == {"amount": 5}
    assert not Timer.objects.filter(execution=execution).exists()
    moved = HistoryEntry.objects.get(execution=execution, kind=operations.EXECUTION_MOVED)
    assert (moved.from_state, moved.to_state, moved.actor) == ("held", "approved", EDITOR)
    assert moved.detail["reason"] == "approved by phone"
    assert moved.detail["dropped"] == ["the wait timer of release"]
    paid = services.trigger(execution.pk, "pay", actor=OPERATOR).execution
    assert paid.status == engine.FINISHED and paid.result == 5


def test_moving_into_a_final_state_finishes_it(refund):
    execution = failed_on_check()
    outcome = operations.perform(execution.pk, operations.request("move", state="paid"),
                                 actor=EDITOR, reason="paid by hand")
    assert outcome.execution.status == engine.FINISHED and outcome.execution.result == "50"


def test_bad_requests_say_what_and_where(refund):
    execution = started()
    cases = [
        (lambda: operations.request("explode"), "operation"),
        (lambda: operations.request("edit"), "context"),
        (lambda: operations.request("edit", context=[1]), "context"),
        (lambda: operations.request("edit", context={"x": float("nan")}), "context.x"),
        (lambda: operations.request("move", state=""), "state"),
        (lambda: operations.request("cancel", state="x"), "state"),
        (lambda: operations.request("migrate", version="2"), "version"),
        (lambda: operations.request("migrate", version=2, mapping={"a": 3}), "mapping.a"),
        (lambda: operations.perform(execution.pk, operations.request("cancel"),
                                    actor=OPERATOR, reason="  "), "reason"),
        (lambda: operations.perform(execution.pk, operations.request("cancel"),
                                    actor=OPERATOR, reason=None), "reason"),
    ]
    for call, path in cases:
        with pytest.raises(InvalidRequest) as problem:
            call()
        assert problem.value.path == path, (path, problem.value.message)
    assert Execution.objects.get(pk=execution.pk).status == engine.WAITING


def test_not_available_changes_nothing(refund):
    execution = started()
    verdict = operations.preview(execution.pk, operations.request("move", state="nowhere"))
    assert verdict.verdict == operations.NOT_AVAILABLE and "no state 'nowhere'" in verdict.reason
    with pytest.raises(NotAvailable):
        operations.perform(execution.pk, operations.request("move", state="nowhere"),
                           actor=EDITOR, reason="x")
    operations.perform(execution.pk, operations.request("cancel"), actor=OPERATOR,
                       reason="customer left")
    for operation in (operations.request("edit", context={}),
                      operations.request("move", state="paid"), operations.request("cancel")):
        assert operations.preview(execution.pk, operation).verdict == operations.NOT_AVAILABLE
        with pytest.raises(NotAvailable):
            operations.perform(execution.pk, operation, actor=EDITOR, reason="x")
    canceled = HistoryEntry.objects.get(execution=execution, kind=engine.EXECUTION_CANCELED)
    assert canceled.actor == OPERATOR and canceled.detail == {"reason": "customer left"}


def test_an_edit_computed_on_a_stale_read_is_not_saved(refund):
    """The compare-and-swap: what changed between the read and the save wins."""
    from executions.runtime import store as stores

    execution = started()
    stale = stores.active.read_execution(execution.pk)
    plan = operations._plan(stale, operations.request("edit", context={"amount": 1}),
                            actor=EDITOR, reason="x", key=None)
    services.trigger(execution.pk, "set", input={"amount": 9}, actor=OPERATOR)
    with pytest.raises(Conflict):
        operations._save(stale, plan, None)
    fresh = Execution.objects.get(pk=execution.pk)
    assert fresh.context == {"amount": 9}
    assert not HistoryEntry.objects.filter(kind=operations.CONTEXT_EDITED).exists()
    operations.perform(execution.pk, operations.request("edit", context={"amount": 1}),
                       actor=EDITOR, reason="x")  # perform reads again: it applies
    assert Execution.objects.get(pk=execution.pk).context == {"amount": 1}


def test_roles(make_user, refund):
    viewer, operator, editor = (make_user("v", "viewer"), make_user("o", "operator"),
                                make_user("e", "editor"))
    retry, edit = operations.request("retry"), operations.request("edit", context={})
    assert [operations.permitted(u, retry) for u in (viewer, operator, editor)] == [
        False, True, True]
    assert [operations.permitted(u, edit) for u in (viewer, operator, editor)] == [
        False, False, True]
