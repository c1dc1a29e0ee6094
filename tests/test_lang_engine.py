"""The language's second edition in the pure engine: errors by type (retry and error
branches matched in order, non-retryable types, jitter, a maximum delay, fail()), state
timers (`after:`) that a transition staying in the state does not restart, durations.
Machines go through the real language and sandbox; events are fed back as the runtime does.
"""
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from executions import engine as E
from expressions.sandbox import evaluate
from machines.definition import Retry, error_matches
from machines.language import build, check, parse_text

NOW = 1_000_000.0


def machine(text: str):
    return build(parse_text(text)[0])


def env(now: float = NOW, **kwargs) -> E.Env:
    return E.Env(now=now, evaluate=evaluate, execution={"id": "e1", "machine": "m"}, **kwargs)


def step(m, snapshot, event, now=NOW, **kwargs) -> E.Result:
    return E.transition(m, snapshot, event, env(now, **kwargs))


def of(effects, kind):
    return [effect for effect in effects if isinstance(effect, kind)]


# Errors by type ----------------------------------------------------------------------------
PAY = """
id: pay
start_at: charging
states:
  charging:
    actions:
      - id: charge
        invoke:
          call: "io('http.request.json', 'POST', 'http://psp/charge')"
          non_retryable: [card_declined, "http_status:4xx"]
          retry:
            - {on: "http_status:429", max_attempts: 5, delay_seconds: 10s, backoff: 3,
               max_delay_seconds: PT1M}
            - {on: [timeout, network_error, "http_status:5xx"], max_attempts: 3,
               delay_seconds: 2, jitter: 0.5}
          error:
            - {on: card_declined, state: declined, assign: {why: "error['message']"}}
            - {on: ["http_status:4xx"], state: rejected}
            - {state: unavailable}
          success: {state: paid}
  paid: {return: "'paid'"}
  declined: {return: "ctx['why']"}
  rejected: {return: "'rejected'"}
  unavailable: {return: "'unavailable'"}
"""


@pytest.fixture(scope="module")
def pay():
    return machine(PAY)


def charging(pay):
    return E.transition(pay, None, E.Start({}), env()).snapshot


def fail_work(m, s, error, now=NOW):
    return step(m, s, E.WorkFailed(s.work["token"], error), now)


def test_a_declined_card_is_not_retried_and_takes_its_own_branch(pay):
    r = fail_work(pay, charging(pay), {"type": "card_declined", "message": "insufficient funds"})
    assert (r.snapshot.status, r.snapshot.result) == ("finished", "insufficient funds")
    taken = [h for h in r.history if h["kind"] == E.TRANSITION_TAKEN][0]
    assert taken["detail"] == {"caught": "card_declined", "branch": "error"}
    assert not of(r.effects, E.ArmTimer)


def test_a_client_error_is_not_retried_but_too_many_requests_is(pay):
    r = fail_work(pay, charging(pay), {"type": "http_status", "status": 404, "message": "x"})
    assert r.snapshot.result == "rejected"
    # 429 is a 4xx, but the non_retryable list names http_status:4xx: not retried either
    r = fail_work(pay, charging(pay), {"type": "http_status", "status": 429, "message": "x"})
    assert r.snapshot.result == "rejected"


def test_server_errors_are_retried_with_jitter_then_go_to_the_catch_all(pay):
    s = charging(pay)
    delays = []
    for attempt in (1, 2):
        r = fail_work(pay, s, {"type": "http_status", "status": 503, "message": "busy"})
        timer = r.snapshot.timer
        assert timer["purpose"] == "retry" and r.snapshot.work["attempt"] == attempt
        delays.append(timer["due"] - NOW)
        scheduled = [h for h in r.history if h["kind"] == E.WORK_RETRY_SCHEDULED][0]
        assert scheduled["detail"]["error_type"] == "http_status"
        s = step(pay, r.snapshot, E.TimerFired(timer["token"])).snapshot
        assert s.status == "invoking" and s.work["attempt"] == attempt + 1
    assert 1 <= delays[0] <= 2 and 2 <= delays[1] <= 4  # 2 s then 4 s, shortened up to half
    r = fail_work(pay, s, {"type": "timeout", "message": "slow"})
    assert (r.snapshot.status, r.snapshot.result) == ("finished", "unavailable")


def test_jitter_comes_from_the_env_seed(pay):
    error = {"type": "network_error", "message": "reset"}
    due = {seed: fail_work(pay, charging(pay), error).snapshot.timer["due"] for seed in (1, 1)}
    assert len(due) == 1  # the same seed, the same delay: a replayed step is identical
    s = charging(pay)
    dues = {E.transition(pay, s, E.WorkFailed(s.work["token"], error), env(seed=seed))
            .snapshot.timer["due"] for seed in range(8)}
    assert len(dues) > 1


def test_an_error_no_branch_catches_fails_the_execution_as_before():
    m = machine("""
id: narrow
start_at: a
states:
  a:
    actions:
      - id: go
        invoke: {call: "1", error: {on: timeout, state: b}}
  b: {return: null}
""")
    s = E.transition(m, None, E.Start({}), env()).snapshot
    r = fail_work(m, s, {"type": "network_error", "message": "reset"})
    assert r.snapshot.status == "failed"
    assert r.snapshot.error["type"] == "invoke_failed"
    assert r.snapshot.error["cause"]["type"] == "network_error"


def test_the_original_retry_and_error_forms_keep_their_meaning():
    m = machine("""
id: old
start_at: a
states:
  a:
    actions:
      - id: go
        invoke: {call: "1", retry: {max_attempts: 3, delay_seconds: 1, backoff: 3},
                 error: {state: b}}
  b: {return: null}
""")
    s = E.transition(m, None, E.Start({}), env()).snapshot
    dues = []
    for _ in range(2):
        s = fail_work(m, s, {"type": "anything", "message": "x"}).snapshot
        dues.append(s.timer["due"] - NOW)
        s = step(m, s, E.TimerFired(s.timer["token"])).snapshot
    assert dues == [1, 3]
    assert fail_work(m, s, {"type": "anything", "message": "x"}).snapshot.state == "b"


def test_max_delay_caps_the_backoff():
    policy = Retry(max_attempts=6, delay_seconds=10, backoff=3, max_delay_seconds=60)
    assert [policy.delay_before(attempt) for attempt in range(2, 7)] == [10, 30, 60, 60, 60]
    huge = Retry(max_attempts=100, delay_seconds=86400, backoff=10, max_delay_seconds=5)
    assert huge.delay_before(100) == 5  # not 10**98 days


def test_fail_in_an_expression_fails_the_execution_with_its_type_and_retry_redoes_it():
    m = machine("""
id: strict
start_at: a
context: "{'n': input['n']}"
states:
  a:
    actions:
      - {id: check, when: "ctx['n'] < 0 or fail('negative', 'n must be negative')",
         state: b}
  b: {return: null}
""")
    r = E.transition(m, None, E.Start({"n": 1}), env())
    error = r.snapshot.error
    assert r.snapshot.status == "failed"
    assert (error["type"], error["message"], error["raised"]) == (
        "negative", "n must be negative", True)
    assert error["path"] == "states.a.actions[0].when" and error["state"] == "a"


@pytest.mark.parametrize("pattern, error, matches", [
    ("timeout", {"type": "timeout"}, True),
    ("timeout", {"type": "network_error"}, False),
    ("http_status", {"type": "http_status", "status": 503}, True),
    ("http_status:5xx", {"type": "http_status", "status": 503}, True),
    ("http_status:50x", {"type": "http_status", "status": 503}, True),
    ("http_status:4xx", {"type": "http_status", "status": 503}, False),
    ("http_status:503", {"type": "http_status", "status": 503}, True),
    ("http_status:503", {"type": "http_status"}, False),
    ("child_failed:card_declined",
     {"type": "child_failed", "cause": {"type": "card_declined"}}, True),
    ("child_failed:card_declined", {"type": "child_failed", "cause": None}, False),
    ("expression_error:resource", {"type": "expression_error", "kind": "resource"}, True),
    ("expression_error:resource", {"type": "expression_error", "kind": "crashed"}, False),
])
def test_error_patterns(pattern, error, matches):
    assert error_matches(pattern, error) is matches


@pytest.mark.parametrize("invoke, path, message", [
    ({"call": "1", "retry": [{"max_attempts": 2}, {"on": "timeout", "max_attempts": 2}]},
     "retry[0]", "this item has no 'on', so it catches every error type and the items after it "
     "are never used"),
    ({"call": "1", "error": [{"on": "Bad Type"}]}, "error[0].on",
     "'Bad Type' is not an error type"),
    ({"call": "1", "error": {"on": "http_status:600"}}, "error.on",
     "'600' is not an HTTP status or class of them"),
    ({"call": "1", "error": {"on": "timeout:x"}}, "error.on",
     "'timeout:x': only 'http_status', 'child_failed' and 'expression_error' take a detail "
     "after ':'"),
    ({"call": "1", "error": {"on": "expression_error:boom"}}, "error.on",
     "'boom' is not how an expression fails"),
    ({"call": "1", "retry": {"max_attempts": 2, "jitter": 2}}, "retry.jitter",
     "'jitter' must be a number from 0 to 1, not 2"),
    ({"call": "1", "retry": {"max_attempts": 2, "delay_seconds": "P2D"}},
     "retry.delay_seconds", "'delay_seconds' must be at most 86400 seconds, not 'P2D'"),
    ({"call": "1", "non_retryable": []}, "non_retryable",
     "'non_retryable' must be an error type or a non-empty list of them"),
    ({"call": "1", "error": {"state": "a", "on": "timeout", "assign": {"x": "output"}}},
     "error.assign.x", "'output' is only bound in an invoke's 'success' branch and 'ok_if'"),
])
def test_errors_by_type_are_checked_at_save_time(invoke, path, message):
    document = {"id": "x", "start_at": "a",
                "states": {"a": {"actions": [{"id": "go", "invoke": invoke}]}}}
    errors = check(document).errors
    where = f"states.a.actions[0].invoke.{path}"
    assert [p.message for p in errors if p.path == where] == [message], errors


def test_a_near_miss_of_a_runtime_type_is_a_warning():
    document = {"id": "x", "start_at": "a", "states": {"a": {"actions": [
        {"id": "go", "invoke": {"call": "1", "error": {"on": "timout", "state": "a"}}}]}}}
    result = check(document)
    assert result.valid
    assert [w.message for w in result.warnings] == [
        "error type 'timout' is not one the runtime gives; did you mean 'timeout'?"]


# Timers ------------------------------------------------------------------------------------
THREE_D_SECURE = """
id: challenge
start_at: waiting
context: {reminders: 0, resent: 0}
states:
  waiting:
    actions:
      - {id: remind, after: P1D, assign: {reminders: "ctx['reminders'] + 1"}}
      - {id: expire, after: 3d, state: expired}
      - {id: resend, on: resend, assign: {resent: "ctx['resent'] + 1"}}
      - {id: pass, on: pass, state: passed}
  passed: {return: "'passed'"}
  expired: {return: "ctx['reminders']"}
"""
DAY = 86400


@pytest.fixture(scope="module")
def challenge():
    return machine(THREE_D_SECURE)


def armed(snapshot):
    return {t["transition"]: t for t in snapshot.timers}


def test_several_timers_are_armed_together_and_actions_stay_available(challenge):
    r = E.transition(challenge, None, E.Start({}), env())
    s = r.snapshot
    assert s.status == "waiting" and r.available_actions == ("resend", "pass")
    timers = armed(s)
    assert {k: t["due"] - NOW for k, t in timers.items()} == {"remind": DAY, "expire": 3 * DAY}
    assert sorted(e.due - NOW for e in of(r.effects, E.ArmTimer)) == [DAY, 3 * DAY]
    entries = [h for h in r.history if h["kind"] == E.TIMER_ARMED]
    assert [h["detail"]["after"] for h in entries] == ["P1D", "3d"]


def test_staying_in_the_state_keeps_the_deadline_and_the_reminder_repeats(challenge):
    s = E.transition(challenge, None, E.Start({}), env()).snapshot
    deadline = armed(s)["expire"]
    r = step(challenge, s, E.Action("resend"), now=NOW + 10)  # stays: nothing restarts
    assert armed(r.snapshot) == armed(s) and not of(r.effects, E.ArmTimer)
    assert not of(r.effects, E.CancelTimer)
    s = r.snapshot
    for day in (1, 2):
        reminder = armed(s)["remind"]
        r = step(challenge, s, E.TimerFired(reminder["token"]), now=reminder["due"])
        s = r.snapshot
        assert s.context["reminders"] == day and armed(s)["expire"] == deadline
        assert armed(s)["remind"]["due"] == reminder["due"] + DAY  # the fired one re-armed
    r = step(challenge, s, E.TimerFired(deadline["token"]), now=deadline["due"])
    assert (r.snapshot.status, r.snapshot.result) == ("finished", 2)
    assert r.snapshot.timers == ()
    assert [e.token for e in of(r.effects, E.CancelTimer)] == [armed(s)["remind"]["token"]]


def test_leaving_the_state_cancels_its_timers_and_a_stale_one_is_rejected(challenge):
    s = E.transition(challenge, None, E.Start({}), env()).snapshot
    r = step(challenge, s, E.Action("pass"))
    assert r.snapshot.result == "passed" and r.snapshot.timers == ()
    assert {e.token for e in of(r.effects, E.CancelTimer)} == {t["token"] for t in s.timers}
    late = step(challenge, r.snapshot, E.TimerFired(s.timers[0]["token"]))
    assert late.rejected


def test_a_deadline_interrupts_work_in_progress():
    m = machine("""
id: bounded
start_at: asking
states:
  asking:
    actions:
      - {id: give-up, after: 90s, state: late}
      - id: ask
        invoke: {call: "1", timeout_seconds: PT10M, success: {state: done}}
  done: {return: "'done'"}
  late: {return: "'late'"}
""")
    s = E.transition(m, None, E.Start({}), env()).snapshot
    assert s.status == "invoking" and armed(s)["give-up"]["due"] == NOW + 90
    assert s.timer["purpose"] == "timeout" and s.timer["due"] == NOW + 600
    r = step(m, s, E.TimerFired(armed(s)["give-up"]["token"]), now=NOW + 90)
    assert r.snapshot.result == "late"
    assert [e.token for e in of(r.effects, E.CancelWork)] == [s.work["token"]]
    assert [e.token for e in of(r.effects, E.CancelTimer)] == [s.timer["token"]]
    fired = [h for h in r.history if h["kind"] == E.TIMER_FIRED][0]
    assert fired["detail"]["interrupted"] == "call"
    assert step(m, r.snapshot, E.WorkSucceeded(s.work["token"], 1)).rejected


def test_a_state_with_only_timers_sleeps_and_a_false_when_arms_nothing():
    m = machine("""
id: only-timers
start_at: a
context: {armed: false}
states:
  a:
    actions:
      - {id: later, after: 2h, when: "ctx['armed']", state: b}
      - {id: sooner, after: PT30M, state: b}
  b: {return: null}
""")
    s = E.transition(m, None, E.Start({}), env()).snapshot
    assert s.status == "sleeping" and list(armed(s)) == ["sooner"]
    assert armed(s)["sooner"]["due"] == NOW + 1800


def test_the_old_wait_still_restarts_on_every_return_to_the_state():
    m = machine("""
id: nag
start_at: a
states:
  a:
    actions:
      - {id: nudge, on: nudge}
      - {id: expire, wait: {seconds: PT1H}, state: b}
  b: {return: null}
""")
    s = E.transition(m, None, E.Start({}), env()).snapshot
    assert s.timer["due"] == NOW + 3600
    s = step(m, s, E.Action("nudge"), now=NOW + 100).snapshot
    assert s.timer["due"] == NOW + 100 + 3600


def test_a_computed_wait_may_give_a_duration_text():
    m = machine("""
id: computed
start_at: a
states:
  a:
    actions:
      - {id: later, wait: {seconds: "input['after']"}, state: b}
  b: {return: null}
""")
    assert E.transition(m, None, E.Start({"after": "P1DT1H"}), env()).snapshot.timer["due"] \
        == NOW + DAY + 3600
    r = E.transition(m, None, E.Start({"after": "P1M"}), env())
    assert r.snapshot.status == "failed"
    assert "years and months have no fixed length" in r.snapshot.error["message"]


@pytest.mark.parametrize("transition, path, message", [
    ({"id": "t", "after": "P1M", "state": "a"}, "after",
     "'after': 'P1M': years and months have no fixed length; write days instead (P30D, P365D)"),
    ({"id": "t", "after": "soon", "state": "a"}, "after", None),
    ({"id": "t", "after": "1d", "on": "x"}, "on", "'on' cannot be used with 'after'"),
    ({"id": "t", "after": "1d", "on": "x", "invoke": {"call": "1"}}, "on",
     "'on' cannot be used with 'after'"),
    ({"id": "t", "after": "1d", "invoke": {"call": "1"}, "state": "a"}, "state",
     "'state' cannot be used with 'invoke'"),
    ({"id": "t", "after": -1}, "after",
     "'after': a duration must be 0 or more seconds, not -1"),
])
def test_timers_are_checked_at_save_time(transition, path, message):
    document = {"id": "x", "start_at": "a", "states": {"a": {"actions": [
        transition, {"id": "go", "on": "go"}]}}}
    errors = [p for p in check(document).errors if p.path == f"states.a.actions[0].{path}"]
    assert errors and (message is None or errors[0].message == message), errors


# Properties --------------------------------------------------------------------------------
@st.composite
def timer_machines(draw):
    """A state with up to three `after` timers (some guarded, some staying, some leaving),
    an action that stays, one that loops through another state, and work that can fail."""
    timers = []
    for index in range(draw(st.integers(1, 3))):
        timer = {"id": f"t{index}", "after": draw(st.sampled_from(["30s", "PT1M", 90, "1h"])),
                 "assign": {"n": "ctx['n'] + 1"}}
        if draw(st.booleans()):
            timer["state"] = draw(st.sampled_from(["a", "b", "end"]))
        if draw(st.booleans()):
            timer["when"] = "ctx['n'] % 2 == 0"
        timers.append(timer)
    actions = [*timers, {"id": "stay", "on": "stay", "assign": {"n": "ctx['n'] + 1"}},
               {"id": "away", "on": "away", "state": "b"}]
    if draw(st.booleans()):
        actions.append({"id": "work", "on": "work", "invoke": {
            "call": "1", "retry": [{"on": "boom", "max_attempts": 2, "jitter": 0.5,
                                    "delay_seconds": "5s", "max_delay_seconds": 8}],
            "error": [{"on": "other", "state": "end"}, {}]}})
    document = {"id": "gen", "start_at": "a", "context": {"n": 0}, "states": {
        "a": {"actions": actions},
        "b": {"actions": [{"id": "back", "on": "back", "state": "a"}]},
        "end": {"return": "ctx['n']"}}}
    return build(document)


def timer_events(snapshot, seen):
    live = [t["token"] for t in snapshot.timers] + [
        held["token"] for held in (snapshot.timer, snapshot.work) if held and held.get("token")]
    token = st.sampled_from(live + seen + ["e1:999"])
    return st.one_of(
        st.builds(E.Action, st.sampled_from(["stay", "away", "back", "work"])),
        st.builds(E.TimerFired, token), st.builds(E.TimerFired, token),
        st.builds(E.WorkSucceeded, token),
        st.builds(E.WorkFailed, token, st.sampled_from(
            [{"type": "boom", "message": "x"}, {"type": "other", "message": "y"}])),
        st.just(E.Cancel()) | st.just(E.Retry()),
    )


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_state_timers_are_kept_while_staying_and_gone_after_leaving(data):
    machine_ = data.draw(timer_machines())
    now = 1000.0
    result = E.transition(machine_, None, E.Start({}), E.Env(
        now=now, evaluate=evaluate, execution={"id": "e1"}))
    snapshot, seen = result.snapshot, []
    for _ in range(data.draw(st.integers(1, 15))):
        now += data.draw(st.sampled_from([0, 1, 45, 100]))
        event = data.draw(timer_events(snapshot, seen))
        seen += [t["token"] for t in snapshot.timers]
        result = E.transition(machine_, snapshot, event, E.Env(
            now=now, evaluate=evaluate, execution={"id": "e1"}, seed=len(seen)))
        after = result.snapshot
        assert E.Snapshot.from_dict(json.loads(json.dumps(after.to_dict()))) == after
        tokens = [t["token"] for t in after.timers]
        assert len(tokens) == len(set(tokens))
        if after.status in ("finished", "failed", "canceled") or after.state != "a":
            assert after.timers == ()
        fired = getattr(event, "token", None)
        if after.state == snapshot.state == "a" and not result.rejected:
            # staying: every timer armed before and not fired is still armed, unchanged
            kept = [t for t in snapshot.timers if t["token"] != fired]
            if after.status not in ("failed", "canceled"):
                assert all(t in after.timers for t in kept), (snapshot.timers, after.timers)
        if result.rejected:
            assert after.timers == snapshot.timers
        if after.status == "sleeping" and after.timer is None:
            assert after.timers and not machine_.state(after.state).action_names
        if after.timer and after.timer["purpose"] == "retry":
            delay = after.timer["due"] - now
            assert 2.5 <= delay <= 8  # 5 s, capped at 8, shortened by up to half
        snapshot = after


def test_the_trial_examples_timers_count_from_the_start_of_the_trial():
    from pathlib import Path

    trial = machine((Path(__file__).resolve().parent.parent / "examples" /
                     "trial-subscription.yaml").read_text())
    r = E.transition(trial, None, E.Start({"customer": "c1", "plan": "pro"}), env())
    s = r.snapshot
    assert s.context["started_on"] == "1970-01-12" and s.context["trial_ends"].startswith(
        "1970-01-26")
    assert {k: t["due"] - NOW for k, t in armed(s).items()} == {
        "remind": 11 * DAY, "end-of-trial": 14 * DAY}
    s = step(trial, s, E.Action("change-plan", {"plan": "basic"}), now=NOW + DAY).snapshot
    assert s.context["plan"] == "basic" and armed(s) == armed(r.snapshot)
    remind = armed(s)["remind"]
    s = step(trial, s, E.TimerFired(remind["token"]), now=remind["due"]).snapshot
    assert s.status == "invoking" and s.work["kind"] == "call"
    s = step(trial, s, E.WorkFailed(s.work["token"], {"type": "timeout", "message": "x"}),
             now=remind["due"] + 5).snapshot
    assert s.context["reminded"] is True and list(armed(s)) == ["end-of-trial"]  # not again
    end = armed(s)["end-of-trial"]
    s = step(trial, s, E.TimerFired(end["token"]), now=end["due"]).snapshot
    assert (s.state, s.status) == ("charging", "invoking")
    r = step(trial, s, E.WorkFailed(s.work["token"], {"type": "card_declined",
                                                      "message": "expired card"}))
    assert r.snapshot.result == {"plan": "basic", "paid": False, "reason": "expired card"}

    bad = E.transition(trial, None, E.Start({"customer": "c1", "plan": "gold"}), env())
    assert bad.snapshot.status == "failed"
    assert bad.snapshot.error["type"] == "unknown_plan"
    assert bad.snapshot.error["message"] == "no plan 'gold': choose one of basic, pro"
