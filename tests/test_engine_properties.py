"""Properties of the engine over generated machines and event sequences.

Small machines are generated as definition documents (so they go through the real
language and sandbox), then driven by random events, some valid and many stale or
unknown. Whatever happens, the invariants below must hold after every event.
"""
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from executions import engine as E
from expressions.sandbox import evaluate
from machines.language import build

STATES = ("s0", "s1", "s2", "s3")
ACTIONS = ("a", "b", "c")
GUARDS = (None, "ctx['n'] % 2 == 0", "ctx['n'] < 3", "input.get('ok', True)", "1 / ctx['d']")


@st.composite
def transitions(draw, index: int, targets):
    automatic = draw(st.booleans())
    t = {"id": f"t{index}"}
    if not automatic:
        t["on"] = draw(st.sampled_from(ACTIONS))
    guard = draw(st.sampled_from(GUARDS))
    if guard:
        t["when"] = guard
    kind = draw(st.sampled_from(("plain", "plain", "decision", "wait", "invoke")))
    if kind == "wait" and not automatic:
        kind = "plain"
    target = draw(st.sampled_from(targets))
    if kind == "plain":
        if target:
            t["state"] = target
        t["assign"] = {"n": "ctx['n'] + 1"}
    elif kind == "decision":
        t["if"] = "ctx['n'] % 3 == 0"
        t["then"] = {"state": target or "s0", "assign": {"n": "ctx['n'] + 1"}}
        if draw(st.booleans()):
            t["else"] = {"assign": {"n": "ctx['n'] + 2"}}
    elif kind == "wait":
        t["wait"] = {"seconds": draw(st.integers(0, 100))}
        t["assign"] = {"n": "ctx['n'] + 1"}
        if target:
            t["state"] = target
    else:
        invoke = {"call": "io('x')", "success": {"assign": {"n": "ctx['n'] + 1"}}}
        if target:
            invoke["success"]["state"] = target
        if draw(st.booleans()):
            invoke["error"] = {"state": draw(st.sampled_from(STATES + ("end",)))}
        if draw(st.booleans()):
            invoke["retry"] = {"max_attempts": 2, "delay_seconds": 1}
        if draw(st.booleans()):
            invoke["timeout_seconds"] = 5
        t["invoke"] = invoke
    return t


@st.composite
def machines(draw):
    targets = (None, *STATES, "end")
    states = {}
    for name in STATES:
        count = draw(st.integers(1, 3))
        states[name] = {"actions": [draw(transitions(i, targets)) for i in range(count)]}
    states["end"] = {"return": "ctx['n']"}
    document = {"id": "gen", "start_at": "s0",
                "context": {"n": 0, "d": draw(st.sampled_from((0, 1, 1, 1)))}, "states": states}
    return build(document)


def events(snapshot: E.Snapshot, seen_tokens: list[str]):
    """Events that may or may not apply: mostly the live token, sometimes a stale one."""
    live = [held["token"] for held in (snapshot.timer, snapshot.work)
            if held and held.get("token")]
    token = st.one_of(st.sampled_from(live or ["e1:999"]),
                      st.sampled_from(seen_tokens + ["e1:999"]))
    action = st.builds(E.Action, st.sampled_from(ACTIONS + ("zz",)),
                       st.fixed_dictionaries({"ok": st.booleans()}))
    return st.one_of(
        action, action, action,
        st.builds(E.TimerFired, token), st.builds(E.TimerFired, token),
        st.builds(E.WorkSucceeded, token, st.integers(0, 5)),
        st.builds(E.WorkSucceeded, token, st.integers(0, 5)),
        st.builds(E.WorkFailed, token, st.just({"type": "boom", "message": "no"})),
        st.just(E.Retry()), st.just(E.Continue()),
        st.sampled_from([E.Cancel()] + [E.Continue()] * 4),
    )


def check_invariants(machine, before: E.Snapshot | None, result: E.Result) -> None:
    after = result.snapshot
    base = 0 if before is None else before.seq
    assert [entry["seq"] for entry in result.history] == list(
        range(base + 1, base + 1 + len(result.history)))
    assert after.seq == base + len(result.history)
    assert after.state in machine.states and after.status in E.STATUSES
    assert isinstance(after.context, dict)
    data = json.loads(json.dumps(after.to_dict()))
    assert E.Snapshot.from_dict(data) == after
    json.dumps(result.history)
    if result.rejected is not None:
        assert result.effects == () and len(result.history) <= 1
        assert after == E.Snapshot.from_dict({**before.to_dict(), "seq": after.seq})
    if before is not None and before.status in E.TERMINAL_STATUSES:
        assert result.rejected is not None
    if after.status == "sleeping":
        assert after.timer and after.timer["purpose"] == "wait"
    if after.status == "invoking":
        assert after.work is not None
    if after.status in ("waiting", "finished", "failed", "canceled"):
        assert after.timer is None and after.work is None
    if after.status not in ("invoking", "running"):  # running: cut short by max_steps;
        assert after.queued == ()  # its Continue applies them once it pauses


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_generated_machines_keep_the_invariants(data):
    machine = data.draw(machines())
    env = E.Env(now=1000.0, evaluate=evaluate, execution={"id": "e1"}, step_limit=30,
                max_steps=data.draw(st.sampled_from((None, 7))))
    result = E.transition(machine, None, E.Start({}), env)
    check_invariants(machine, None, result)
    snapshot, tokens = result.snapshot, []
    for _ in range(data.draw(st.integers(1, 20))):
        event = data.draw(events(snapshot, tokens))
        tokens += [held["token"] for held in (snapshot.timer, snapshot.work)
                   if held and held.get("token")]
        result = E.transition(machine, snapshot, event, env)
        check_invariants(machine, snapshot, result)
        snapshot = result.snapshot


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_the_same_events_give_the_same_history(data):
    """Determinism: with the same env, a replay produces identical results."""
    machine = data.draw(machines())
    env = E.Env(now=5.0, evaluate=evaluate, execution={"id": "e1"}, seed=3, step_limit=30)
    first = E.transition(machine, None, E.Start({}), env)
    second = E.transition(machine, None, E.Start({}), env)
    assert first == second
