"""Plain-language sentences for every history kind, from history the real engine writes."""
import html
import re
from datetime import UTC, datetime

from executions import engine as E
from executions import steps
from explorer import timeline
from expressions.sandbox import evaluate
from machines.language import build, parse_text
from machines.words import moment, relative

FLOW = build(parse_text("""
id: flow
title: Checkout
start_at: cart
context: {big: false}
states:
  cart:
    label: Shopping cart
    actions:
      - {id: pay, on: pay, label: Pay now, when: "input.get('amount', 0) > 0", state: charge}
      - {id: give-up, on: give-up, state: done}
  charge:
    actions:
      - id: charge
        label: the payment service
        invoke:
          call: "io('payments.charge', ctx)"
          retry: {max_attempts: 3, delay_seconds: 5}
          success: {state: decide}
          error: {state: cart}
  decide:
    actions:
      - {id: size, if: "ctx['big']", then: {state: done}, else: {state: later}}
  later:
    label: Waiting a minute
    actions:
      - {id: nudge, wait: {seconds: 60}, state: done}
      - {id: hurry, on: hurry, state: done}
  stuck:
    actions:
      - {id: never, when: "False", state: done}
  done: {return: "ctx['big']"}
""")[0])

NOW = 1_800_000_000.0


def at(epoch, seconds=True):
    """A moment as the explorer writes it, with its date and zone (UTC in tests)."""
    return moment(datetime.fromtimestamp(epoch, tz=UTC), UTC, seconds=seconds)


def ahead(epoch):
    return relative(datetime.now(UTC).timestamp() - epoch)


def env(now=NOW):
    return E.Env(now=now, evaluate=evaluate, execution={"id": "x", "machine": "flow"})


class Run:
    """Feed events to the pure engine; keep history as HistoryEntry-shaped rows."""

    def __init__(self, machine=FLOW, actor="alice"):
        self.machine, self.rows, self.snapshot, self.now = machine, [], None, NOW
        self.result = None
        self.send(E.Start(input={"order": 7}, actor=actor))

    def send(self, event, seconds=1.0):
        self.now += seconds
        self.result = E.transition(self.machine, self.snapshot, event, env(self.now))
        self.snapshot = self.result.snapshot
        for entry in self.result.history:
            row = {**entry, "at": datetime.fromtimestamp(entry["at"], tz=UTC),
                   "branch": (entry.get("detail") or {}).get("branch", "")}
            self.rows.append(row)
        return self.result

    def effect(self, kind):
        return next(e for e in self.result.effects if isinstance(e, kind))

    def said(self):
        numbers = steps.numbered_steps(self.rows)
        return {s.seq: s for s in timeline.sentences(self.rows, self.machine, numbers)}

    def text_of(self, kind):
        return [s.text for s in self.said().values() if s.kind == kind]


def paid_and_charging():
    run = Run()
    run.send(E.Action("pay", {"amount": 0}, actor="bob"))
    run.send(E.Action("pay", {"amount": 5}, actor="bob"))
    return run


def test_start_names_who_and_where():
    assert Run().text_of(E.STARTED) == ["Started by alice in Shopping cart — input: order: 7"]


def test_a_rejected_action_says_why():
    (text,) = paid_and_charging().text_of(E.ACTION_REJECTED)
    assert text.startswith("bob’s pay was rejected — 'pay' cannot be taken in state 'cart'")
    assert "guard `input.get('amount', 0) > 0` of 'pay' was false" in text


def test_work_started_uses_the_label_and_the_guard_that_let_it_through():
    run = paid_and_charging()
    texts = run.text_of(E.TRANSITION_TAKEN) + run.text_of(E.WORK_STARTED)
    assert texts[0] == ("Step 1: bob chose Pay now → charge — input: amount: 5; "
                        "because input.get('amount', 0) > 0 was true")
    assert texts[1] == "Step 2: Calling the payment service (attempt 1 of 3)"


def test_the_receipt_of_an_action_taken_at_once_is_not_repeated():
    run = paid_and_charging()
    assert E.ACTION_RECEIVED in [r["kind"] for r in run.rows]
    assert run.text_of(E.ACTION_RECEIVED) == []


def sleeping_after_a_retry():
    """Checks each sentence on the way: work fails, is retried, succeeds, a decision sends
    the execution to a state where a timer waits."""
    run = paid_and_charging()
    token = run.effect(E.CallIO).token
    run.rows[-1]["duration_ms"] = 1500
    run.send(E.WorkFailed(token, {"type": "http", "message": "the bank answered 503"}))
    run.rows[-2]["duration_ms"] = 250
    (failed,) = run.text_of(E.WORK_FAILED)
    assert failed == "The call to the payment service failed after 250 ms — the bank answered 503"
    (scheduled,) = run.text_of(E.WORK_RETRY_SCHEDULED)
    assert scheduled == f"Will try again at {at(NOW + 9)} (attempt 2 of 3) — in 5 s"
    run.send(E.TimerFired(run.effect(E.ArmTimer).token), seconds=5)
    assert run.text_of(E.TIMER_FIRED) == ["Time to try again"]
    assert run.text_of(E.WORK_STARTED)[-1] == "Step 3: Calling the payment service (attempt 2 of 3)"
    run.send(E.WorkSucceeded(run.effect(E.CallIO).token, {"ok": True}))
    said = run.said()
    assert [s.text for s in said.values() if s.kind == E.WORK_SUCCEEDED] == [
        'The call to the payment service succeeded — output: {"ok": true}']
    moves = [s.text for s in said.values() if s.kind == E.TRANSITION_TAKEN]
    assert moves[1] == "Step 4: The work succeeded: moved charge → decide"
    assert moves[2] == ("Step 5: Moved decide → Waiting a minute — automatically (size); "
                        "otherwise: ctx['big'] was false")
    (armed,) = run.text_of(E.TIMER_ARMED)
    assert armed.startswith(f"Sleeping until {at(NOW + 70)[:-6]}") and armed.endswith(
        "(nudge) — in 1 min")
    return run


def test_failed_work_retries_then_succeeds_then_a_decision_and_a_timer():
    assert sleeping_after_a_retry().snapshot.status == E.SLEEPING


def test_an_action_while_sleeping_cancels_the_timer_and_finishes():
    run = sleeping_after_a_retry()
    run.send(E.Action("hurry", {}, actor="carol"))
    assert run.text_of(E.TIMER_CANCELED) == ["The timer was canceled — no longer needed"]
    assert run.text_of(E.EXECUTION_FINISHED) == ["Finished in done — returned false"]


def test_a_timer_firing_moves_on_by_itself():
    run = sleeping_after_a_retry()
    run.send(E.TimerFired(run.effect(E.ArmTimer).token), seconds=60)
    assert run.text_of(E.TIMER_FIRED) == ["Time to try again", "The timer of nudge fired"]
    assert run.text_of(E.TRANSITION_TAKEN)[-1] == (
        "Step 6: Moved Waiting a minute → done — when the timer of nudge fired")


def test_cancel_fail_retry_and_stuck():
    run = Run()
    run.send(E.Cancel(actor="olga", reason="customer called"))
    assert run.text_of(E.EXECUTION_CANCELED) == ["Canceled by olga — reason: customer called"]

    broken = build({"id": "b", "start_at": "a", "states": {
        "a": {"actions": [{"id": "x", "state": "z", "assign": {"v": "1 / 0"}}]},
        "z": {"return": 1}}})
    run = Run(broken)
    (failed,) = run.text_of(E.EXECUTION_FAILED)
    assert failed.startswith("Failed in a — ") and "division by zero" in failed
    run.send(E.Retry(actor="olga"))
    assert run.text_of(E.EXECUTION_RETRIED)[0].startswith("Retried by olga — it had failed: ")

    stuck = build({"id": "s", "start_at": "a", "states": {
        "a": {"actions": [{"id": "x", "when": "False", "state": "z"}]}, "z": {"return": 1}}})
    assert Run(stuck).text_of(E.EXECUTION_STUCK) == [
        "Stuck in a — no transition can be taken and it accepts no actions"]


def test_actors_in_words():
    assert timeline.who("timer") == "the timer"
    assert timeline.who("") == "the system"
    assert timeline.who("execution:1a2b3c4d-0000") == "parent execution 1a2b3c4d"
    assert timeline.who("token:ci") == "API token ci"


def test_repeated_steps_collapse_into_one_group():
    machine = build({"id": "loop", "start_at": "a", "states": {"a": {"actions": [
        {"id": "tick", "when": "ctx.get('n', 0) < 900", "assign": {"n": "ctx.get('n', 0) + 1"}},
        {"id": "stop", "state": "z"}]}, "z": {"return": None}}})
    run = Run(machine)
    items = timeline.collapse(timeline.sentences(run.rows, machine,
                                                 steps.numbered_steps(run.rows)))
    groups = [i for i in items if isinstance(i, timeline.Group)]
    assert len(groups) == 1 and groups[0].count == 900
    assert groups[0].steps == "steps 1–900"
    assert len(items) == 4  # started, the group, the stop move, finished


# The status line ---------------------------------------------------------------------------------
def line(**facts):
    """The status line as text (quotes are escaped in the HTML, like every value)."""
    return html.unescape(re.sub(r"<[^>]+>", "", timeline.status_line(FLOW, **facts)))


def test_status_lines():
    assert line(status="waiting", state="cart") == (
        "Waiting for: Pay now or give up, in Shopping cart.")
    assert line(status="waiting", state="stuck") == (
        "Stuck in stuck: no transition can be taken and it accepts no actions.")
    assert line(status="sleeping", state="later", timer={
        "due": NOW + 300, "purpose": "wait", "transition": "nudge"}) == (
        f"Sleeping in Waiting a minute until {at(NOW + 300, False)} · {ahead(NOW + 300)}, "
        "when “nudge” moves it on. Or someone chooses hurry.")
    assert line(status="sleeping", state="charge",
                timer={"due": NOW, "purpose": "retry", "transition": "charge"},
                work={"transition": "charge", "attempt": 1}) == (
        "Sleeping in charge, then trying the payment service again (attempt 2 of 3) at "
        f"{at(NOW, False)} · {ahead(NOW)}.")
    assert line(status="invoking", state="charge", work={
        "kind": "call", "transition": "charge", "attempt": 2}) == (
        "Calling the payment service (attempt 2 of 3), in charge.")
    assert line(status="failed", state="charge", error={
        "message": "the courier answered 503", "state": "charge"}) == (
        "Failed in charge: the courier answered 503.")
    assert line(status="finished", state="done", result={"ok": 1}) == (
        'Finished: it ended in done, one of the machine’s end states; it returned {"ok": 1}.')
    assert line(status="canceled", state="cart") == "Canceled in Shopping cart."
    assert line(status="running", state="cart") == "Running: moving on from Shopping cart."
    assert line(status="running", state="cart", started=False) == (
        "Queued: a worker will start it in Shopping cart.")


def test_labels_inputs_and_actors_are_escaped_in_the_html():
    evil = "<script>alert(1)</script>"
    machine = build({"id": "x", "start_at": "a", "states": {
        "a": {"label": evil, "actions": [
            {"id": "go", "on": "go", "label": evil, "state": "z"}]},
        "z": {"return": None}}})
    run = Run(machine, actor=f"user:{evil}")
    run.send(E.Action("go", {"note": evil}, actor=f"user:{evil}"))
    said = list(run.said().values())
    fragments = [str(part) for s in said for part in (s.html, s.why)]
    fragments.append(str(timeline.status_line(machine, status="waiting", state="a")))
    assert all("<script>" not in part for part in fragments)
    assert any("&lt;script&gt;" in part for part in fragments)
    chose = next(s for s in said if s.kind == E.TRANSITION_TAKEN)
    assert chose.text.startswith(f"Step 1: {evil} chose {evil} → z")  # the words are unchanged
    assert f'input: note: "{evil}"' in chose.text


def test_users_read_the_same_whether_written_user_alice_or_alice():
    assert timeline.who("user:alice") == timeline.who("alice") == "alice"
