"""Every sentence the explorer says is true, for every kind of history row, in every
execution mode, with sync and async children: table-driven over real runs of the runtime
(the in-memory store of test_runtime_memory, so milliseconds and no database)."""
import itertools
import re
from html import unescape

import pytest

from executions import engine, operations, services, steps
from executions.runtime import timers
from explorer import presenters, timeline
from tests.test_runtime_memory import mem  # noqa: F401 - the fixture

MODES = ("sync", "async-throughput", "async-latency")
CHILD_KINDS = ("sync", "async")

PARENT = """
id: parent
title: Order
execution_mode: {mode}
start_at: asking
context: {{sku: null}}
states:
  asking:
    label: Asking
    actions:
      - id: lookup
        label: the lookup service
        invoke:
          call: "io('http.request.json', 'GET', input['url'])"
          ok_if: "output['status'] == 200"
          retry: {{max_attempts: 2, delay_seconds: 1}}
          success: {{state: delegating}}
          error: {{state: delegating}}
  delegating:
    label: Delegating
    actions:
      - id: delegate
        invoke: {{machine: incident, input: "{{}}", async: {is_async},
                 success: {{state: waiting}}, error: {{state: waiting}}}}
  waiting:
    label: Waiting
    actions:
      - {{id: too-many-attempts, wait: {{seconds: 60}}, state: late}}
      - {{id: add, on: add, label: Add item, state: picked,
          assign: {{sku: "input['sku']"}}}}
      - {{id: check, on: check, label: Check stock, state: checking,
          assign: {{given: "input"}}}}
  checking:
    label: Checking
    actions:
      - {{id: count, label: Count stock, state: picked, assign: {{sku: "ctx['given']['sku']"}}}}
  late:
    label: Late
    actions:
      - {{id: go-on, state: canceled}}
  picked:
    label: Picked
    actions:
      - {{id: route, if: "ctx['sku'] == 'a'", then: {{state: done}},
          else: {{state: canceled}}}}
  done: {{return: "ctx['sku']"}}
  canceled: {{return: null}}
"""

INCIDENT = """
id: incident
execution_mode: {mode}
start_at: open
states:
  open:
    label: Open
    actions:
      - {{id: close, on: close, state: closed}}
  closed: {{return: 1}}
"""

MOCKS = {"http.request.json":
         "{'status': 500 if 'bad' in args[1] else 200, 'headers': {}, 'body': {}}"}


class World:
    """One parent execution and its incident child, moved by the runtime."""

    def __init__(self, store, mode, child_kind, url="http://ok.example/"):
        self.mem, self.mode = store, mode
        store.add_machine(INCIDENT.format(mode=mode))
        version = store.add_machine(PARENT.format(mode=mode,
                                                is_async=str(child_kind == "async").lower()))
        self.machine = version.parsed()
        self.execution = services.start("parent", input={"url": url}, mocks=MOCKS,
                                        actor="user:alice").execution
        self.settle()

    def settle(self):
        for _ in range(20):
            if not self.mem.queue.run():
                break
        self.mem.refresh(self.execution)

    def fire_timers(self):
        due = max((t.due_at for t in self.mem.timers.values()), default=None)
        if due is not None:
            timers.fire_due_timers(now=due + 1)
        self.settle()

    def child(self):
        work = self.execution.engine_state.get("work") or {}
        tokens = {row["detail"].get("token") for row in self.rows()
                  if row["kind"] == engine.WORK_STARTED and row["detail"].get("kind") == "machine"}
        for token in tokens | {work.get("token")}:
            found = self.mem.children(self.execution.pk, token) if token else []
            if found:
                self.mem.refresh(found[0])
                return found[0]
        return None

    def rows(self):
        return self.mem.history_of(self.execution.pk)

    def said(self):
        rows = self.rows()
        return timeline.sentences(rows, self.machine, steps.numbered_steps(rows))

    def status_line(self):
        e = self.execution
        step_rows = [r for r in self.rows() if r["kind"] in steps.STEP_KINDS]
        return text(timeline.status_line(
            self.machine, status=e.status, state=e.state, timer=e.engine_state.get("timer"),
            work=e.engine_state.get("work"), error=e.error, result=e.result,
            started=bool(e.engine_state),
            ended=timeline.ending(self.machine, step_rows[-1] if step_rows else None)))


def text(fragment) -> str:
    return unescape(re.sub(r"<[^>]+>", "", str(fragment)))


COMBINATIONS = list(itertools.product(MODES, CHILD_KINDS))


def sentences_of(world, kind):
    return [s.text for s in world.said() if s.kind == kind]


# What must be true of each kind of row, given what the runtime actually did. Each check
# gets the world and the sentences of its kind, and returns nothing or fails.
def _started(world, said):
    assert said == ["Started by alice in Asking — input: url: \"http://ok.example/\""]


def _child_sentences(world, said):
    child = world.child()
    assert child is not None
    done = [s for s in world.said() if s.kind == engine.WORK_SUCCEEDED and "incident" in s.text]
    if child.status != engine.FINISHED:
        # A child still waiting is never said to have finished.
        assert not any("finished" in s.text for s in world.said()), world.said()
    if world.is_async:
        assert [s.text for s in done] == [done[0].text] and "was started" in done[0].text
        assert "runs on its own" in done[0].text and "finished" not in done[0].text
    elif child.status == engine.FINISHED:
        assert len(done) == 1 and "finished" in done[0].text
    else:
        assert done == []


def _timer_moves(world, said):
    """A move is "when the timer of X fired" only if X is a wait; the automatic move the
    timer's event goes on to take is "automatically"."""
    for s in world.said():
        if s.kind != engine.TRANSITION_TAKEN:
            continue
        row = next(r for r in world.rows() if r["seq"] == s.seq)
        transition = world.machine.states[row["from_state"]].transition(row["transition"])
        assert ("when the timer of" in s.text) == (transition.wait is not None), s.text


CHECKS = {
    engine.STARTED: _started,
    engine.WORK_STARTED: _child_sentences,
    engine.WORK_SUCCEEDED: _child_sentences,
    engine.TRANSITION_TAKEN: _timer_moves,
}


@pytest.fixture(params=COMBINATIONS, ids=["-".join(c) for c in COMBINATIONS])
def world(request, mem):  # noqa: F811 - the fixture
    mode, child_kind = request.param
    made = World(mem, mode, child_kind)
    made.is_async = child_kind == "async"
    return made


def check_all(world):
    for kind, check in CHECKS.items():
        check(world, sentences_of(world, kind))
    # Every row has a sentence that is not just the kind's name.
    for s in world.said():
        assert s.text and s.text != timeline.humanize(s.kind), s


def test_a_child_still_waiting_is_not_said_to_have_finished(world):
    assert world.child().status == engine.WAITING
    check_all(world)
    line = world.status_line()
    if world.is_async:  # the parent went on: it sleeps, its child works on its own
        assert world.execution.status == engine.SLEEPING
        assert line.startswith("Sleeping in Waiting until ") and "finished" not in line
    else:
        assert world.execution.status == engine.INVOKING
        assert line == "Waiting for incident execution to finish, in Delegating."


def test_a_child_that_finished_is_said_to_have_finished(world):
    services.trigger(world.child().pk, "close", actor="user:bob", wait=True)
    world.settle()
    assert world.child().status == engine.FINISHED
    check_all(world)
    assert world.execution.state == "waiting"


def test_a_timer_then_an_automatic_move_and_an_end_state_named_canceled(world):
    if not world.is_async:
        services.trigger(world.child().pk, "close", actor="user:bob", wait=True)
        world.settle()
    world.fire_timers()
    assert (world.execution.status, world.execution.state) == (engine.FINISHED, "canceled")
    check_all(world)
    moves = sentences_of(world, engine.TRANSITION_TAKEN)[-2:]
    assert moves[0].endswith("Moved Waiting → Late — when the timer of too many attempts fired")
    assert moves[1].endswith("Moved Late → canceled — automatically (go on)")
    line = world.status_line()
    assert line == ("Finished: it ended in canceled, one of the machine’s end states, reached "
                    "from Late by “go on”; it returned null.")
    assert presenters.running_for(world.execution).startswith("took ")


def test_a_failed_execution_says_what_was_missing_and_is_not_running(world):
    if not world.is_async:
        services.trigger(world.child().pk, "close", actor="user:bob", wait=True)
        world.settle()
    # An action whose own expression fails is rejected; the execution stays (issue 13).
    with pytest.raises(services.NotAvailable) as rejected:
        services.trigger(world.execution.pk, "add", input={"qty": 2}, actor="user:bob",
                         wait=True)
    assert "KeyError: 'sku'" in rejected.value.reason
    world.settle()
    assert world.execution.status == engine.SLEEPING and world.execution.state == "waiting"
    # An automatic transition's failure still fails it.
    services.trigger(world.execution.pk, "check", input={"qty": 2}, actor="user:bob",
                     wait=True)
    world.settle()
    assert world.execution.status == engine.FAILED
    check_all(world)
    plain = ("The update of sku in “Count stock” needs sku in ctx['given'], which had no "
             "sku. The expression: ctx['given']['sku']")
    assert world.status_line() == f"Failed in Checking: {plain}"
    assert sentences_of(world, engine.EXECUTION_FAILED) == [f"Failed in Checking — {plain}"]
    assert "'sku'" not in world.status_line().replace("['sku']", "")
    assert presenters.running_for(world.execution).startswith("failed after ")

    services.retry(world.execution.pk, actor="user:olga")
    world.settle()
    (retried,) = sentences_of(world, engine.EXECUTION_RETRIED)
    assert retried == f"Retried by olga — it had failed: {plain}"
    services.cancel(world.execution.pk, actor="user:olga", reason="customer left")
    world.settle()
    assert sentences_of(world, engine.EXECUTION_CANCELED) == [
        "Canceled by olga — reason: customer left"]
    assert world.status_line() == "Canceled in Checking."
    assert presenters.running_for(world.execution).startswith("canceled after ")


def test_a_decision_says_why_and_the_end_says_how(world):
    if not world.is_async:
        services.trigger(world.child().pk, "close", actor="user:bob", wait=True)
        world.settle()
    services.trigger(world.execution.pk, "add", input={"sku": "a"}, actor="user:bob", wait=True)
    world.settle()
    assert (world.execution.status, world.execution.state) == (engine.FINISHED, "done")
    check_all(world)
    moves = sentences_of(world, engine.TRANSITION_TAKEN)
    assert moves[-1].endswith("Moved Picked → done — automatically (route); because "
                              "ctx['sku'] == 'a' was true")
    assert sentences_of(world, engine.TIMER_CANCELED) == [
        "The timer was canceled — no longer needed"]
    assert world.status_line().endswith("from Picked by “route”; it returned \"a\".")


@pytest.mark.parametrize("mode", MODES)
def test_an_answer_its_success_check_refused_is_not_called_a_success(mem, mode):  # noqa: F811
    world = World(mem, mode, "sync", url="http://bad.example/")
    world.fire_timers()  # the retry
    answers = sentences_of(world, engine.WORK_SUCCEEDED)
    assert len(answers) == 2
    for said in answers:
        assert "succeeded" not in said and "answered" in said and "but not with a success" in said
        assert "output['status'] == 200 was false" in said
    assert "(attempt 2 of 2)" in sentences_of(world, engine.WORK_RETRY_SCHEDULED)[0]
    assert sentences_of(world, engine.TIMER_FIRED) == ["Time to try again"]


@pytest.mark.parametrize("mode", MODES)
def test_a_sync_child_canceled_is_said_canceled_not_finished(mem, mode):  # noqa: F811
    world = World(mem, mode, "sync")
    services.cancel(world.child().pk, actor="user:olga", reason="duplicate")
    world.settle()
    (failed,) = sentences_of(world, engine.WORK_FAILED)
    assert failed.startswith("The incident execution was canceled") and "finished" not in failed
    assert sentences_of(world, engine.TRANSITION_TAKEN)[-1].endswith(
        "The incident execution did not finish: moved Delegating → Waiting")
    assert world.execution.state == "waiting"


def test_every_history_kind_has_been_said_by_these_stories(mem):  # noqa: F811
    """This story reaches every kind but those said above (finished), in test_timeline
    (rejected, stuck; an action received and taken at once is one sentence) and in
    test_parallel_views (a branch of a parallel or map ended)."""
    world = World(mem, "sync", "sync", url="http://bad.example/")
    world.fire_timers()
    services.cancel(world.child().pk, actor="user:olga", reason="not needed")
    world.settle()
    services.trigger(world.execution.pk, "check", input={}, actor="user:bob", wait=True)
    services.retry(world.execution.pk, actor="user:olga")
    services.cancel(world.execution.pk, actor="user:olga", reason="done with it")
    world.settle()
    seen = {s.kind for s in world.said()}
    said_elsewhere = {engine.ACTION_REJECTED, engine.EXECUTION_STUCK, engine.ACTION_RECEIVED,
                      engine.EXECUTION_FINISHED, engine.BRANCH_ENDED,
                      # the operators' rows: tests/test_ops_timeline.py
                      operations.CONTEXT_EDITED, operations.INPUT_EDITED,
                      operations.EXECUTION_MOVED, operations.EXECUTION_MIGRATED}
    assert set(timeline._SENTENCES) - said_elsewhere <= seen, set(timeline._SENTENCES) - seen
