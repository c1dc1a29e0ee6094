"""The pure engine driven through `transition()` alone: every construct, status and event.

Machines are written in the definition language and built by machines.language; expressions
run in the real sandbox. Work outcomes, timers and child results are fed back as events,
the way the runtime does.
"""
import json
from pathlib import Path

import pytest

from executions import engine as E
from expressions.sandbox import evaluate
from machines.language import build, parse_text

# The two examples of the machine-definition spec, as the repository keeps them.
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOW = 1_000_000.0


def machine(text: str):
    return build(parse_text(text)[0])


def env(now: float = NOW, **kwargs) -> E.Env:
    facts = {"id": "e1", "machine": "m", "version": 1}
    return E.Env(now=now, evaluate=evaluate, execution=facts, **kwargs)


def start(m, input=None, **kwargs) -> E.Result:
    return E.transition(m, None, E.Start(input), env(**kwargs))


def step(m, snapshot, event, **kwargs) -> E.Result:
    return E.transition(m, snapshot, event, env(**kwargs))


def kinds(result: E.Result) -> list[str]:
    return [entry["kind"] for entry in result.history]


def only(effects, kind):
    found = [effect for effect in effects if isinstance(effect, kind)]
    assert len(found) == 1, effects
    return found[0]


def spec_example(name: str):
    return machine((EXAMPLES / f"{name}.yaml").read_text())


@pytest.fixture(scope="module")
def order():
    return spec_example("order")


@pytest.fixture(scope="module")
def shipment():
    return spec_example("shipment")


# The spec's examples -------------------------------------------------------------------
def test_order_runs_from_cart_to_shipped(order):
    r = start(order, {"courier_url": "http://courier"})
    s = r.snapshot
    assert (s.status, s.state) == ("waiting", "cart")
    assert s.context["order"]["id"].startswith("R")
    assert s.context["courier_url"] == "http://courier"
    assert kinds(r) == ["execution_started", "transition_taken"]
    assert r.history[0]["context"] == s.context
    assert r.available_actions == ("add", "remove", "place")

    s = step(order, s, E.Action("add", {"sku": "a", "qty": 3}, actor="ann")).snapshot
    r = step(order, s, E.Action("remove", {"sku": "a"}))
    assert r.snapshot.context["order"]["line_items"] == ["a", "a"]
    assert r.history[-1]["context"] == r.snapshot.context
    s = step(order, r.snapshot, E.Action("place")).snapshot
    assert (s.status, s.state) == ("waiting", "submitted")

    r = step(order, s, E.Action("fraud-approve", actor="bob"))
    s = r.snapshot
    assert (s.status, s.state) == ("invoking", "released")
    assert kinds(r) == ["action_received", "transition_taken", "transition_taken", "work_started"]
    assert {e["actor"] for e in r.history} == {"bob"}
    child = only(r.effects, E.StartChild)
    assert child == E.StartChild(f"e1:{s.seq}", "shipment", None,
                                 {"order": s.context["order"]["id"],
                                  "courier_url": "http://courier"}, False)
    assert s.work == {"token": child.token, "transition": "ship", "kind": "machine",
                      "attempt": 1, "state": "released"}

    r = step(order, s, E.WorkSucceeded(child.token, {"delivered": True}))
    assert (r.snapshot.status, r.snapshot.state, r.snapshot.result) == ("finished", "shipped", True)
    assert kinds(r) == ["work_succeeded", "transition_taken", "transition_taken",
                        "execution_finished"]
    success = r.history[1]
    assert (success["from_state"], success["to_state"], success["detail"]["branch"]) == (
        "released", "ship-finished", "success")
    assert r.history[2]["guards"] == [
        {"transition": "fulfilled", "when": "ctx['delivered']", "result": True}]
    assert r.history[-1]["output"] is True
    assert r.effects == (E.NotifyParent("finished", output=True),)


def test_order_child_failure_takes_the_error_branch(order):
    s = start(order, {}).snapshot
    for name in ("place", "fraud-approve"):
        s = step(order, s, E.Action(name)).snapshot
    r = step(order, s, E.WorkFailed(s.work["token"], {"type": "child_failed", "message": "x"}))
    assert (r.snapshot.state, r.snapshot.result) == ("canceled", False)
    assert r.history[1]["detail"]["branch"] == "error"


def test_shipment_delivers_after_a_failed_attempt_and_a_wait(shipment):
    r = start(shipment, {"order": "R1", "courier_url": "http://c"})
    s = r.snapshot
    assert (s.status, s.state) == ("invoking", "outstanding")
    call = only(r.effects, E.CallIO)
    assert call.call.source.startswith("io('http.request.json'")
    assert call.names["ctx"] == s.context and call.names["input"] == {"order": "R1",
                                                                      "courier_url": "http://c"}
    assert call.names["execution"]["state"] == "outstanding"
    assert call.attempt == 1 and call.token == s.work["token"]

    # ok_if false -> error branch -> failed -> wait 5 s
    r = step(shipment, s, E.WorkSucceeded(call.token, {"status": 503, "body": None}))
    s = r.snapshot
    assert (s.status, s.state) == ("sleeping", "failed")
    assert kinds(r) == ["work_succeeded", "transition_taken", "timer_armed"]
    timer = only(r.effects, E.ArmTimer)
    assert (timer.due, timer.purpose) == (NOW + 5, "wait")
    assert s.timer == {"token": timer.token, "due": NOW + 5, "transition": "retry",
                       "purpose": "wait"}

    r = step(shipment, s, E.TimerFired(timer.token), now=NOW + 5)
    s = r.snapshot
    assert kinds(r)[:2] == ["timer_fired", "transition_taken"]
    assert r.history[0]["actor"] == "timer"
    assert (s.state, s.context["attempt"], s.status) == ("outstanding", 2, "invoking")
    token = only(r.effects, E.CallIO).token
    assert token != call.token

    r = step(shipment, s, E.WorkSucceeded(token, {"status": 200, "body": {"n": 1}}))
    assert (r.snapshot.status, r.snapshot.result) == ("finished", {"delivered": True})
    assert r.snapshot.context["n"] == 1


def test_shipment_gives_up_after_three_attempts(shipment):
    s = start(shipment, {"order": "R1", "courier_url": "http://c"}).snapshot
    for _ in range(3):
        s = step(shipment, s, E.WorkFailed(s.work["token"], {"type": "network"})).snapshot
        assert s.status == "sleeping"
        s = step(shipment, s, E.TimerFired(s.timer["token"])).snapshot
    assert (s.status, s.state, s.result) == ("finished", "canceled", {"delivered": False})


# Actions ---------------------------------------------------------------------------------
GUARDED = """
id: guarded
start_at: open
context: {n: 0}
states:
  open:
    actions:
      - {id: big, on: add, when: "input['n'] > 10", assign: {n: "ctx['n'] + 100"}}
      - {id: small, on: add, when: "input['n'] > 0", assign: {n: "ctx['n'] + input['n']"}}
      - {id: close, on: close, state: closed}
  closed: {return: "ctx['n']"}
"""


def test_first_matching_action_transition_is_taken_and_guards_are_recorded():
    m = machine(GUARDED)
    s = start(m).snapshot
    r = step(m, s, E.Action("add", {"n": 3}))
    assert r.snapshot.context == {"n": 3}
    taken = r.history[-1]
    assert (taken["transition"], taken["action"], taken["input"]) == ("small", "add", {"n": 3})
    assert taken["guards"] == [
        {"transition": "big", "when": "input['n'] > 10", "result": False},
        {"transition": "small", "when": "input['n'] > 0", "result": True},
    ]
    assert "guards" not in r.history[0]


def test_rejected_action_changes_nothing_but_seq_and_says_why(order):
    s = start(order, {}).snapshot
    r = step(order, s, E.Action("ship", {"x": 1}, actor="ann"))
    reason = "'ship' is not available in state 'cart'; available now: add, remove, place"
    assert r.rejected == reason
    assert r.snapshot == E.Snapshot.from_dict({**s.to_dict(), "seq": s.seq + 1})
    [entry] = r.history
    assert entry == {"seq": s.seq + 1, "kind": "action_rejected", "at": NOW, "actor": "ann",
                     "action": "ship", "input": {"x": 1},
                     "detail": {"reason": reason,
                                "available_actions": ["add", "remove", "place"]}}
    assert r.effects == () and r.available_actions == ("add", "remove", "place")


def test_action_whose_guards_are_false_is_rejected_with_the_guards():
    m = machine(GUARDED)
    s = start(m).snapshot
    r = step(m, s, E.Action("add", {"n": 0}))
    assert r.rejected == ("'add' cannot be taken in state 'open': guard `input['n'] > 10` of "
                          "'big' was false; guard `input['n'] > 0` of 'small' was false")
    assert [g["result"] for g in r.history[0]["guards"]] == [False, False]
    assert r.snapshot.context == s.context and r.snapshot.seq == s.seq + 1


def test_terminal_execution_rejects_every_event():
    m = machine(GUARDED)
    s = step(m, start(m).snapshot, E.Action("close")).snapshot
    assert (s.status, s.result) == ("finished", 0)
    for event in (E.Cancel(), E.Retry(), E.Continue(), E.TimerFired("e1:1"),
                  E.WorkSucceeded("e1:1"), E.Start({})):
        r = step(m, s, event)
        assert r.rejected and r.snapshot == s and r.history == () and r.effects == ()
    r = step(m, s, E.Action("add", {"n": 1}))
    assert r.rejected == "'add' is not available: the execution is finished"
    assert r.snapshot.seq == s.seq + 1 and kinds(r) == ["action_rejected"]


INVOKER = """
id: invoker
start_at: idle
context: {log: []}
states:
  idle:
    actions:
      - id: fetch
        on: go
        invoke:
          call: "io('x')"
          success: {state: fetched, assign: {got: output}}
  fetched:
    actions:
      - {id: note, on: note, assign: {log: "ctx['log'] + [input]"}}
      - {id: done, on: done, state: end}
  end: {return: "ctx['log']"}
"""


def test_actions_received_while_invoking_are_queued_and_applied_in_order():
    m = machine(INVOKER)
    s = step(m, start(m).snapshot, E.Action("go", {"q": 1})).snapshot
    assert s.status == "invoking"
    call_token = s.work["token"]
    for name, value in (("note", 1), ("nope", 2), ("note", 3), ("done", 4), ("note", 5)):
        r = step(m, s, E.Action(name, value, actor=f"u{value}"))
        assert r.rejected is None and r.snapshot.state == "idle"
        assert r.history[0]["detail"] == {"queued": True}
        s = r.snapshot
    assert [q["action"] for q in s.queued] == ["note", "nope", "note", "done", "note"]

    r = step(m, s, E.WorkSucceeded(call_token, "payload"))
    assert kinds(r) == ["work_succeeded", "transition_taken", "transition_taken",
                        "action_rejected", "transition_taken", "transition_taken",
                        "execution_finished", "action_rejected"]
    assert r.snapshot.result == [1, 3] and r.snapshot.queued == ()
    rejected = r.history[3]
    assert rejected["actor"] == "u2" and rejected["detail"]["queued"] is True
    assert "available now: note, done" in rejected["detail"]["reason"]
    assert r.history[4]["detail"] == {"queued": True} and r.history[4]["input"] == 3
    assert r.history[-1]["detail"]["reason"] == "'note' was not applied: the execution has finished"


def test_stale_and_repeated_work_results_are_ignored():
    m = machine(INVOKER)
    s = step(m, start(m).snapshot, E.Action("go")).snapshot
    r = step(m, s, E.WorkSucceeded("e1:999", "x"))
    assert r.rejected and r.snapshot == s and r.history == ()
    done = step(m, s, E.WorkSucceeded(s.work["token"], "x")).snapshot
    again = step(m, done, E.WorkSucceeded(s.work["token"], "y"))
    assert again.rejected and again.snapshot == done and again.history == ()
    assert step(m, done, E.WorkFailed(s.work["token"])).snapshot == done


def test_action_input_is_bound_in_action_steps_and_start_input_in_automatic_ones():
    m = machine("""
id: inputs
start_at: a
context: "{'seen': [input['who']]}"
states:
  a:
    actions:
      - {id: hop, on: hop, state: b, assign: {seen: "ctx['seen'] + [input['who']]"}}
  b:
    actions:
      - {id: auto, state: c, assign: {seen: "ctx['seen'] + [input['who']]"}}
  c: {return: "ctx['seen'] + [input['who']]"}
""")
    s = start(m, {"who": "starter"}).snapshot
    r = step(m, s, E.Action("hop", {"who": "actor"}))
    assert r.snapshot.result == ["starter", "actor", "starter", "starter"]


# Automatic transitions, decisions, waits -------------------------------------------------
DECIDE = """
id: decide
start_at: check
context: "{'n': input['n']}"
states:
  check:
    actions:
      - {id: big, if: "ctx['n'] > 10", then: {state: large, assign: {size: "'L'"}}}
      - id: sign
        if: "ctx['n'] >= 0"
        then: {state: small}
        else: {state: negative, context: "{'n': -ctx['n']}"}
  large: {return: "ctx"}
  small: {return: "ctx"}
  negative: {return: "ctx"}
"""


@pytest.mark.parametrize("n, state, branch, result", [
    (50, "large", "then", {"n": 50, "size": "L"}),
    (5, "small", "then", {"n": 5}),
    (-5, "negative", "else", {"n": 5}),
])
def test_decisions_take_then_or_else_and_fall_through_without_else(n, state, branch, result):
    m = machine(DECIDE)
    r = start(m, {"n": n})
    assert (r.snapshot.state, r.snapshot.result) == (state, result)
    taken = r.history[1]
    assert taken["detail"] == {"branch": branch} and taken["to_state"] == state
    assert taken["guards"][0] == {"transition": "big", "if": "ctx['n'] > 10", "result": n > 10}
    assert len(taken["guards"]) == (1 if n > 10 else 2)


def test_a_state_whose_automatic_transitions_all_say_no_is_stuck():
    m = machine("""
id: stuck
start_at: a
states:
  a:
    actions:
      - {id: never, when: "False", state: b}
  b: {return: 1}
""")
    r = start(m)
    assert r.snapshot.status == "waiting" and r.available_actions == ()
    stuck = r.history[-1]
    assert stuck["kind"] == "execution_stuck"
    assert stuck["detail"]["message"] == (
        "No transition can be taken from a and it accepts no actions")
    assert stuck["guards"] == [{"transition": "never", "when": "False", "result": False}]


def test_a_state_with_actions_just_waits():
    m = machine("""
id: w
start_at: a
states:
  a:
    actions:
      - {id: never, when: "False", state: b}
      - {id: go, on: go, state: b}
  b: {return: 1}
""")
    r = start(m)
    assert r.snapshot.status == "waiting" and kinds(r) == ["execution_started"]


WAITS = """
id: waits
start_at: a
context: {}
states:
  a:
    actions:
      - {id: poke, on: poke, state: poked}
      - {id: later, wait: {seconds: "input['s']"}, state: b, assign: {at: "time()"}}
  b:
    actions:
      - {id: until-iso, wait: {until: "input['iso']"}, state: c}
  c:
    actions:
      - {id: until-epoch, wait: {until: 2000000}, state: done}
  poked: {return: "'poked'"}
  done: {return: "ctx"}
"""


def test_waits_arm_timers_and_fire_in_order():
    m = machine(WAITS)
    r = start(m, {"s": 30, "iso": "1970-01-12T14:00:00Z"})
    s = r.snapshot
    assert s.status == "sleeping" and r.available_actions == ("poke",)
    assert only(r.effects, E.ArmTimer) == E.ArmTimer("e1:2", NOW + 30, "wait")
    assert r.history[-1]["detail"] == {"token": "e1:2", "due": NOW + 30, "purpose": "wait"}

    r = step(m, s, E.TimerFired("e1:1"))
    assert r.rejected and r.snapshot == s

    r = step(m, s, E.TimerFired("e1:2"), now=NOW + 31)
    s = r.snapshot
    assert s.context == {"at": NOW + 31} and s.state == "b"
    assert only(r.effects, E.ArmTimer).due == 11 * 86400 + 14 * 3600
    r = step(m, s, E.TimerFired(s.timer["token"]))
    assert only(r.effects, E.ArmTimer).due == 2_000_000
    r = step(m, r.snapshot, E.TimerFired(r.snapshot.timer["token"]))
    assert r.snapshot.status == "finished"


def test_an_action_while_sleeping_cancels_the_timer():
    m = machine(WAITS)
    s = start(m, {"s": 30}).snapshot
    r = step(m, s, E.Action("poke"))
    assert kinds(r) == ["action_received", "timer_canceled", "transition_taken",
                        "execution_finished"]
    assert E.CancelTimer(s.timer["token"]) in r.effects
    assert r.snapshot.timer is None and r.snapshot.result == "poked"


def test_a_bad_until_value_fails_the_execution():
    m = machine(WAITS)
    s = start(m, {"s": 0, "iso": "next tuesday"}).snapshot
    r = step(m, s, E.TimerFired(s.timer["token"]))
    assert r.snapshot.status == "failed" and r.snapshot.state == "b"
    assert r.snapshot.error["path"] == "states.b.actions[0].wait.until"
    assert "ISO-8601" in r.snapshot.error["message"]


LOOP = """
id: loop
start_at: count
context: {n: 0}
states:
  count:
    actions:
      - {id: inc, when: "ctx['n'] < input['to']", assign: {n: "ctx['n'] + 1"}}
      - {id: stop, state: done}
  done: {return: "ctx['n']"}
"""


def test_targetless_automatic_transitions_loop_until_their_guard_fails():
    m = machine(LOOP)
    r = start(m, {"to": 25})
    assert r.snapshot.result == 25
    assert [e["seq"] for e in r.history] == list(range(1, len(r.history) + 1))
    assert r.history[1]["from_state"] == r.history[1]["to_state"] == "count"


def test_step_limit_fails_a_loop_and_keeps_its_last_state():
    m = machine(LOOP)
    r = start(m, {"to": 10**9}, step_limit=50)
    s = r.snapshot
    assert s.status == "failed" and s.context == {"n": 50}
    assert s.error["type"] == "step_limit"
    assert s.error["message"] == ("step limit exceeded: more than 50 automatic transitions "
                                  "without a pause (a loop?)")
    assert r.history[-1]["kind"] == "execution_failed"
    assert r.effects == (E.NotifyParent("failed", error=s.error),)


def test_max_steps_stops_running_and_continue_resumes():
    m = machine(LOOP)
    r = start(m, {"to": 25}, max_steps=10)
    assert r.snapshot.status == "running" and r.snapshot.context == {"n": 10}
    assert r.effects == (E.ContinueLater(),)
    assert step(m, r.snapshot, E.Action("x")).rejected
    r = step(m, r.snapshot, E.Continue(), max_steps=10)
    assert r.snapshot.context == {"n": 20} and r.snapshot.auto_steps == 20
    r = step(m, r.snapshot, E.Continue(), max_steps=10)
    assert r.snapshot.result == 25
    assert step(m, r.snapshot, E.Continue()).rejected


def test_step_limit_counts_across_continues():
    m = machine(LOOP)
    s = start(m, {"to": 100}, max_steps=30, step_limit=50).snapshot
    r = step(m, s, E.Continue(), max_steps=30, step_limit=50)
    assert r.snapshot.status == "failed" and r.snapshot.context == {"n": 50}


# Invoke: call, machine, trigger, ok_if, retry, timeout ------------------------------------
def invoke_machine(invoke: str, extra: str = "") -> str:
    return f"""
id: inv
start_at: a
context: {{peer: "e9", tries: 0}}
states:
  a:
    actions:
      - id: work
        invoke:
{invoke}
{extra}
  ok: {{return: "ctx"}}
  bad: {{return: "ctx"}}
"""


def test_trigger_sends_an_action_with_evaluated_execution_and_input():
    m = machine(invoke_machine("""          trigger:
            {execution: "ctx['peer']", action: poke, input: "{'n': 1}"}
          async: true
          success: {state: ok, assign: {reply: output}}"""))
    r = start(m)
    send = only(r.effects, E.SendAction)
    assert send == E.SendAction("e1:2", "e9", "poke", {"n": 1}, True)
    r = step(m, r.snapshot, E.WorkSucceeded(send.token, {"accepted": True}))
    assert r.snapshot.result["reply"] == {"accepted": True}


def test_ok_if_false_is_a_failure_with_the_output():
    m = machine(invoke_machine("""          call: "io('x')"
          ok_if: "output['status'] == 200"
          success: {state: ok}
          error: {state: bad, assign: {why: error}}"""))
    s = start(m).snapshot
    r = step(m, s, E.WorkSucceeded(s.work["token"], {"status": 500}))
    assert r.snapshot.result["why"] == {"type": "ok_if", "message": "ok_if was false",
                                        "output": {"status": 500}}
    assert r.history[1]["detail"]["branch"] == "error"


def test_retry_waits_with_backoff_and_uses_a_new_token_per_attempt():
    m = machine(invoke_machine("""          call: "io('x')"
          retry: {max_attempts: 3, delay_seconds: 2, backoff: 3}
          success: {state: ok}
          error: {state: bad, assign: {why: "error['type']"}}"""))
    s = start(m).snapshot
    tokens = [s.work["token"]]
    for attempt, delay in ((2, 2), (3, 6)):
        r = step(m, s, E.WorkFailed(tokens[-1], {"type": "network", "message": "down"}))
        s = r.snapshot
        assert s.status == "invoking" and kinds(r) == ["work_failed", "work_retry_scheduled"]
        assert only(r.effects, E.ArmTimer) == E.ArmTimer(s.timer["token"], NOW + delay, "retry")
        assert r.history[-1]["detail"]["attempt"] == attempt
        assert step(m, s, E.WorkFailed(tokens[-1])).rejected  # reported once only
        r = step(m, s, E.TimerFired(s.timer["token"]))
        s = r.snapshot
        call = only(r.effects, E.CallIO)
        assert call.attempt == attempt and s.work["attempt"] == attempt
        tokens.append(call.token)
    assert len(set(tokens)) == 3
    r = step(m, s, E.WorkFailed(tokens[-1], {"type": "network"}))
    assert (r.snapshot.state, r.snapshot.result["why"]) == ("bad", "network")


def test_timeout_fails_the_work_and_cancels_it():
    m = machine(invoke_machine("""          call: "io('x')"
          timeout_seconds: 10
          success: {state: ok}
          error: {state: bad, assign: {why: error}}"""))
    r = start(m)
    s = r.snapshot
    assert only(r.effects, E.ArmTimer) == E.ArmTimer(s.timer["token"], NOW + 10, "timeout")
    assert only(r.effects, E.CallIO).timeout_seconds == 10
    r = step(m, s, E.TimerFired(s.timer["token"]), now=NOW + 10)
    assert E.CancelWork(s.work["token"], "call") in r.effects
    assert kinds(r)[:2] == ["timer_fired", "work_failed"]
    assert r.snapshot.result["why"]["type"] == "timeout"
    assert step(m, r.snapshot, E.WorkSucceeded(s.work["token"], 1)).rejected


def test_work_reported_in_time_cancels_its_timeout():
    m = machine(invoke_machine("""          call: "io('x')"
          timeout_seconds: 10
          success: {state: ok}"""))
    s = start(m).snapshot
    r = step(m, s, E.WorkSucceeded(s.work["token"], 1))
    assert E.CancelTimer(s.timer["token"]) in r.effects
    assert r.snapshot.status == "finished" and r.snapshot.timer is None


def test_success_without_a_branch_stays_and_tries_again():
    m = machine("""
id: poll
start_at: a
context: {polls: 0}
states:
  a:
    actions:
      - {id: enough, when: "ctx['polls'] >= 1", state: b}
      - {id: count, when: "ctx.get('counted') is None", assign: {polls: 1, counted: true}}
      - {id: work, invoke: {call: "io('x')"}}
  b: {return: "ctx['polls']"}
""")
    s = start(m).snapshot
    assert s.status == "finished" and s.result == 1
    m2 = machine("""
id: poll2
start_at: a
states:
  a:
    actions:
      - {id: work, on: go, invoke: {call: "io('x')"}}
""")
    s = step(m2, start(m2).snapshot, E.Action("go")).snapshot
    r = step(m2, s, E.WorkSucceeded(s.work["token"], 7))
    assert (r.snapshot.status, r.snapshot.state, r.snapshot.context) == ("waiting", "a", {})
    assert r.history[-1]["detail"] == {"branch": "success"}


# Failure, retry, cancel -------------------------------------------------------------------
def test_invoke_failure_without_error_branch_fails_and_retry_restarts_the_work():
    m = machine(invoke_machine("""          call: "io('x')"
          success: {state: ok}"""))
    s = start(m).snapshot
    first = s.work["token"]
    r = step(m, s, E.WorkFailed(first, {"type": "network", "message": "down"}))
    s = r.snapshot
    assert (s.status, s.state) == ("failed", "a")
    assert s.error == {"type": "invoke_failed", "message": "call of 'work' failed: down",
                       "cause": {"type": "network", "message": "down"}, "machine": "inv",
                       "state": "a", "transition": "work"}
    assert r.effects == (E.NotifyParent("failed", error=s.error),)
    r = step(m, s, E.Retry(actor="ops"))
    assert kinds(r) == ["execution_retried", "work_started"]
    assert r.snapshot.status == "invoking" and r.snapshot.error is None
    call = only(r.effects, E.CallIO)
    assert call.attempt == 1 and call.token != first


def test_expression_error_fails_with_where_it_happened_and_retry_resumes():
    m = machine("""
id: fragile
start_at: a
context: {k: 1}
states:
  a:
    actions:
      - {id: go, on: go, state: b}
  b:
    actions:
      - id: divide
        state: c
        assign:
          x: |
            y = 1
            y / (time() - 1000000)
  c: {return: "ctx['x']"}
""")
    s = start(m).snapshot
    r = step(m, s, E.Action("go"))
    s = r.snapshot
    assert (s.status, s.state, s.context) == ("failed", "b", {"k": 1})
    error = s.error
    assert error["type"] == "expression_error"
    assert (error["machine"], error["state"], error["transition"]) == ("fragile", "b", "divide")
    assert error["path"] == "states.b.actions[0].assign.x" and error["line"] == 2
    assert "division" in error["message"]
    assert kinds(r)[-1] == "execution_failed" and r.history[-1]["error"] == error
    assert E.NotifyParent("failed", error=error) in r.effects

    assert step(m, s, E.Action("go")).rejected
    r = step(m, s, E.Retry(), now=NOW + 1)
    assert (r.snapshot.status, r.snapshot.result) == ("finished", 1.0)
    assert kinds(r) == ["execution_retried", "transition_taken", "execution_finished"]


def test_failing_initial_context_is_reevaluated_on_retry():
    m = machine("""
id: early
start_at: a
context: "{'t': 1 / (time() - 1000000)}"
states:
  a: {return: "ctx['t']"}
""")
    r = start(m)
    assert kinds(r) == ["execution_started", "execution_failed"]
    s = r.snapshot
    assert (s.status, s.state, s.context, s.error["state"]) == ("failed", "a", {}, None)
    assert s.error["path"] == "context"
    r = step(m, s, E.Retry(), now=NOW + 2)
    assert r.snapshot.result == 0.5 and r.history[0]["context"] == {"t": 0.5}


def test_context_must_stay_an_object():
    m = machine("""
id: notdict
start_at: a
states:
  a:
    actions:
      - {id: go, on: go, state: a, context: "[1, 2]"}
""")
    s = start(m).snapshot
    r = step(m, s, E.Action("go"))  # an action's own failure rejects it (issue 13)
    assert r.snapshot.status == "waiting" and r.snapshot.context == {}
    assert "context is not a JSON object" in r.rejected
    assert start(machine("{id: x, start_at: a, context: '5', states: {a: {return: 1}}}")
                 ).snapshot.error["message"].startswith("context is not a JSON object")


def test_retry_is_only_for_failed_executions(order):
    s = start(order, {}).snapshot
    r = step(order, s, E.Retry())
    assert r.rejected == "only a failed execution can be retried; this one is waiting"
    assert r.snapshot == s and r.history == ()


def test_cancel_drops_outstanding_work_and_timers_and_notifies_the_parent():
    m = machine(invoke_machine("""          call: "io('x')"
          timeout_seconds: 10
          success: {state: ok}"""))
    s = step(m, start(m).snapshot, E.Action("late")).snapshot  # queued while invoking
    r = step(m, s, E.Cancel(actor="ops", reason="no longer needed"))
    assert r.snapshot.status == "canceled" and r.snapshot.work is None
    assert r.snapshot.timer is None and r.snapshot.queued == ()
    assert set(r.effects) == {E.CancelTimer(s.timer["token"]),
                              E.CancelWork(s.work["token"], "call"),
                              E.NotifyParent("canceled")}
    assert kinds(r) == ["timer_canceled", "execution_canceled", "action_rejected"]
    assert r.history[1]["detail"] == {"reason": "no longer needed"}
    again = step(m, r.snapshot, E.Cancel())
    assert again.rejected == "the execution is already canceled"


def test_a_failed_execution_can_be_canceled():
    m = machine(LOOP)
    s = start(m, {"to": 10**9}, step_limit=5).snapshot
    r = step(m, s, E.Cancel())
    assert r.snapshot.status == "canceled" and r.effects == (E.NotifyParent("canceled"),)


# Helpers, bindings, snapshots ------------------------------------------------------------
def test_helpers_are_deterministic_for_a_seed_and_bound_to_now():
    m = machine("""
id: helpers
start_at: a
context: >-
  {'u': uuid4(), 'r': randint(1, 10**9), 'f': random(),
   't': time(), 'n': now(), 'e': execution}
states:
  a: {return: "ctx"}
""")
    one, two = start(m, seed=7).snapshot.result, start(m, seed=7).snapshot.result
    assert one == two and start(m, seed=8).snapshot.result["u"] != one["u"]
    assert one["t"] == NOW and one["n"] == "1970-01-12T13:46:40+00:00"
    assert one["e"] == {"id": "e1", "machine": "m", "version": 1, "state": "a"}
    assert len(one["u"]) == 36 and one["u"][14] == "4"


def test_snapshots_round_trip_through_json(order):
    s = start(order, {"courier_url": "u"}).snapshot
    s = step(order, s, E.Action("place")).snapshot
    s = step(order, s, E.Action("fraud-approve")).snapshot
    s = step(order, s, E.Action("cancel")).snapshot  # queued
    data = json.loads(json.dumps(s.to_dict()))
    assert E.Snapshot.from_dict(data) == s and data == s.to_dict()


def test_available_actions_only_while_paused(order):
    s = start(order, {}).snapshot
    assert E.available_actions(order, s) == ("add", "remove", "place")
    for status in ("running", "finished", "failed", "canceled"):
        assert E.available_actions(order, E.Snapshot.from_dict(
            {**s.to_dict(), "status": status})) == ()


def test_start_twice_and_events_without_a_snapshot(order):
    s = start(order, {}).snapshot
    assert step(order, s, E.Start({})).rejected == "the execution has already started"
    with pytest.raises(ValueError):
        E.transition(order, None, E.Action("add"), env())


def test_queued_actions_are_rejected_when_the_work_fails_the_execution():
    m = machine(invoke_machine("""          call: "io('x')"
          success: {state: ok}"""))
    s = start(m).snapshot
    s = step(m, s, E.Action("later", {"v": 1}, actor="ann")).snapshot
    r = step(m, s, E.WorkFailed(s.work["token"], {"type": "boom", "message": "no"}))
    assert kinds(r) == ["work_failed", "execution_failed", "action_rejected"]
    rejected = r.history[-1]
    assert rejected["detail"]["reason"] == "'later' was not applied: the execution has failed"
    assert rejected["input"] == {"v": 1} and r.snapshot.queued == ()


def test_queued_action_is_applied_after_the_error_branch():
    m = machine("""
id: q
start_at: a
states:
  a:
    actions:
      - id: work
        invoke: {call: "io('x')", error: {state: b}}
  b:
    actions:
      - {id: go, on: go, state: c, assign: {by: "input['who']"}}
  c: {return: "ctx['by']"}
""")
    s = start(m).snapshot
    s = step(m, s, E.Action("go", {"who": "ann"}, actor="ann")).snapshot
    r = step(m, s, E.WorkFailed(s.work["token"], {"type": "boom"}))
    assert r.snapshot.result == "ann"
    assert [e["actor"] for e in r.history[-2:]] == ["ann", "ann"]


def test_cancel_while_waiting_to_retry_cancels_only_the_timer():
    m = machine(invoke_machine("""          call: "io('x')"
          retry: {max_attempts: 2, delay_seconds: 1}
          success: {state: ok}"""))
    s = start(m).snapshot
    s = step(m, s, E.WorkFailed(s.work["token"], {"type": "boom"})).snapshot
    assert s.work["token"] is None and s.timer["purpose"] == "retry"
    r = step(m, s, E.Cancel())
    assert r.effects == (E.CancelTimer(s.timer["token"]), E.NotifyParent("canceled"))


def test_an_expression_error_in_a_queued_action_rejects_it_and_the_execution_goes_on():
    m = machine("""
id: q
start_at: a
states:
  a:
    actions:
      - {id: work, on: go, invoke: {call: "io('x')", success: {}}}
      - {id: boom, on: boom, when: "input['missing']", state: a}
""")
    s = step(m, start(m).snapshot, E.Action("go")).snapshot
    s = step(m, s, E.Action("boom", {})).snapshot
    r = step(m, s, E.WorkSucceeded(s.work["token"], 1))
    assert r.snapshot.status == "waiting" and r.snapshot.state == "a"
    rejected = [e for e in r.history if e["kind"] == "action_rejected"]
    assert rejected[-1]["detail"]["error"]["exception"] == "KeyError"
    assert rejected[-1]["detail"]["queued"] is True


def test_guards_of_a_pause_do_not_leak_into_a_queued_action_applied_after_it():
    m = machine("""
id: leak
start_at: a
states:
  a:
    actions:
      - {id: work, on: go, invoke: {call: "io('x')", success: {state: b}}}
  b:
    actions:
      - {id: never, when: "False", state: c}
      - {id: go, on: go, state: c}
  c: {return: 1}
""")
    s = step(m, start(m).snapshot, E.Action("go")).snapshot
    s = step(m, s, E.Action("go")).snapshot
    r = step(m, s, E.WorkSucceeded(s.work["token"], 1))
    queued = r.history[-2]
    assert queued["kind"] == "transition_taken" and queued["transition"] == "go"
    assert "guards" not in queued
