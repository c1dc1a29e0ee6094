"""The second edition's everyday helpers (set, reversed, isinstance, add, duration, today,
fail) in the real sandbox, attacked like every other builtin: they stay inside its time
and memory bounds, and what is not JSON is refused at the boundary. Also the save-time
checks of names and arity on whole definitions, and the examples' use of the new
constructs and the timeline's sentences for them."""
import html
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from executions import engine as E
from explorer import timeline
from expressions.errors import ExpressionError, RaisedError
from expressions.sandbox import evaluate
from machines import durations
from machines.definition import Expr
from machines.language import build, check, parse_text

EXAMPLES = sorted(Path(__file__).resolve().parent.parent.joinpath("examples").glob("*.yaml"))


def run(source, names=None, **limits):
    return evaluate(Expr("t", source=source), names or {}, **limits)


def failure(source, names=None, **limits) -> ExpressionError:
    with pytest.raises(ExpressionError) as caught:
        run(source, names, **limits)
    return caught.value


# The helpers ------------------------------------------------------------------------------
@pytest.mark.parametrize("source, value", [
    ("sorted(set(['b', 'a', 'b']))", ["a", "b"]),
    ("len(set(range(5)) & {1, 2, 9})", 2),
    ("reversed([1, 2, 3])", [3, 2, 1]),
    ("''.join(reversed('abc'))", "cba"),
    ("[isinstance(v, int) for v in (1, 1.5, 'x', None)]", [True, False, False, False]),
    ("isinstance({}, dict) and isinstance([], list) and isinstance('', str)", True),
    ("isinstance(1.5, (int, float))", True),
    ("isinstance({1}, set)", True),
    ("round(2.675, 2)", 2.67),
    ("add('2026-01-31T23:30:00Z', 'PT45M')", "2026-02-01T00:15:00+00:00"),
    ("add(0, '2d')", "1970-01-03T00:00:00+00:00"),
    ("add('2026-03-01T00:00:00+02:00', '-1h')", "2026-02-28T21:00:00+00:00"),
    ("duration('P1DT1H') - duration(90)", 89910.0),
    ("set = [1]\nset", [1]),  # a variable of its own may still be named like a new helper
])
def test_helpers(source, value):
    assert run(source) == value


@pytest.mark.parametrize("source, message", [
    ("{'s': set([1])}", "result['s'] is a set, not JSON"),
    ("isinstance(1, len)", "isinstance() takes str, int, float, bool, list, dict or set"),
    ("reversed({'a': 1})", "reversed() takes a list or a str, not a dict"),
    ("add('yesterday', 'P1D')", "add(): 'yesterday' is not an ISO-8601 time"),
    ("add(0, 'P1M')", "'P1M': years and months have no fixed length"),
    ("add('9999-12-31T00:00:00Z', 'P2D')", "add(): the result is outside the years 1 to 9999"),
    ("duration('soon')", "'soon' is not a duration"),
    ("duration(True)", "a duration must be"),
    ("fail('Not A Type')", "fail() needs an error type such as 'card_declined'"),
    ("fail('x', 3)", "fail() needs a message that is a str, not an int"),
    ("isinstance(1, (int,) * 10 ** 6)", "isinstance() takes at most one of each type"),
    ("duration(10 ** 400)", "1000000000000000000000000000000000000000 seconds is too long"),
    ("add(10 ** 20, 'P1D')", "out of range"),
])
def test_helpers_refuse_what_they_cannot_do_with_a_clear_message(source, message):
    assert message in failure(source).message


def test_fail_cannot_be_swallowed_and_carries_its_type_and_position():
    source = "try:\n    fail('card_declined', 'no funds')\nexcept Exception:\n    'caught'"
    error = failure(source)
    assert isinstance(error, RaisedError)
    assert error.to_dict() == {"type": "card_declined", "message": "no funds", "raised": True,
                               "path": "t", "line": 2, "column": 5}


def test_a_long_fail_message_is_cut():
    error = failure("fail('x', 'a' * 100000)")
    assert len(error.message) == 2000


@pytest.mark.parametrize("source", [
    "set(range(10 ** 6))",  # about 96 MB of set items estimated: past the budget
    "reversed('x' * 10 ** 6) * 10",
    "[set(range(10 ** 5)) for _ in range(100)]",
])
def test_the_helpers_are_bounded_by_the_allocation_budget(source):
    started = time.monotonic()
    error = failure(source)
    assert error.kind == "resource", error
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("source", [
    "while True:\n    isinstance(1, int)",
    "while True:\n    add(0, '1s')",
    "while True:\n    duration('P1D')",
])
def test_the_helpers_are_bounded_by_the_time_limit(source):
    started = time.monotonic()
    assert failure(source, time_limit=0.2).kind == "timeout"
    assert time.monotonic() - started < 2


def test_huge_duration_texts_are_refused_at_once():
    started = time.monotonic()
    for text in ("P" + "1" * 1_000_000 + "X", "1" * 1_000_000 + "s"):
        assert not durations.looks_like(text)
        with pytest.raises(durations.DurationError):
            durations.seconds(text)
    assert time.monotonic() - started < 0.5


def test_today_and_now_are_the_steps_time():
    machine = build(parse_text("""
id: dates
start_at: a
context: "{'today': today(), 'tomorrow': add(now(), 'P1D')[:10]}"
states:
  a: {return: "ctx"}
""")[0])
    moment = datetime(2026, 12, 31, 23, 0, tzinfo=UTC).timestamp()
    result = E.transition(machine, None, E.Start({}), E.Env(now=moment, evaluate=evaluate))
    assert result.snapshot.result == {"today": "2026-12-31", "tomorrow": "2027-01-01"}


# Save-time checks of names and arity ------------------------------------------------------
def machine_with(**transition):
    return {"id": "m", "start_at": "a", "states": {
        "a": {"actions": [{"id": "t", **transition}]}, "b": {"return": None}}}


@pytest.mark.parametrize("document, path, message, hint", [
    ({"id": "m", "start_at": "a", "states": {"a": {"return": "v2"}}}, "states.a.return",
     "name 'v2' is not defined; did you mean the text 'v2'? quote it as \"'v2'\"", None),
    ({"id": "m", "start_at": "a", "states": {"a": {"return": "Payment declined"}}},
     "states.a.return", "invalid syntax",
     "did you mean the text 'Payment declined'? quote it: \"'Payment declined'\""),
    (machine_with(when="io('http.request', 'GET', ctx['u'])['status'] == 200", state="b"),
     "states.a.actions[0].when", "'io' is only available in 'invoke.call'; do the IO in an "
     "invoke: {invoke: {call: \"io(...)\", success: ...}}", None),
    (machine_with(assign={"x": "len(ctx['a'], 2)"}), "states.a.actions[0].assign.x",
     "len() takes 1 argument, not 2", None),
    (machine_with(assign={"x": "ctx['n'] + inpt['n']"}), "states.a.actions[0].assign.x",
     "name 'inpt' is not defined; did you mean 'input'?", None),
    (machine_with(assign={"x": "set(1, 2)"}), "states.a.actions[0].assign.x",
     "set() takes 0 to 1 arguments, not 2", None),
    (machine_with(invoke={"call": "1", "success": {"assign": {"x": "error"}}}),
     "states.a.actions[0].invoke.success.assign.x",
     "'error' is only bound in an invoke's 'error' branch", None),
])
def test_names_and_arity_are_checked_when_saving(document, path, message, hint):
    found = [p for p in check(document).errors if p.path == path]
    assert [(p.message, p.hint) for p in found] == [(message, hint)]


def test_names_bound_by_the_expression_or_its_position_are_fine():
    document = machine_with(invoke={
        "call": "r = io('x')\nitems = [i * 2 for i in r]\ndef f(a, *rest, k=1):\n    return a\n"
                "try:\n    f(items)\nexcept KeyError as e:\n    str(e)",
        "ok_if": "output is not None", "success": {"assign": {"x": "output"}},
        "error": [{"on": "timeout", "assign": {"why": "error['message']"}}]})
    assert check(document).errors == ()


def test_a_stored_version_with_an_undefined_name_still_loads():
    """The names check is a save-time check: build() (loading a stored version) skips it."""
    document = {"id": "m", "start_at": "a", "states": {"a": {"return": "v2"}}}
    assert not check(document).valid
    assert build(document).states["a"].returns.source == "v2"


# The examples and the timeline -------------------------------------------------------------
def test_the_examples_use_the_second_editions_constructs():
    machines = [check(p.read_text()).machine for p in EXAMPLES]
    transitions = [t for m in machines for s in m.states.values() for t in s.transitions]
    invokes = [t.invoke for t in transitions if t.invoke]
    used = {
        "after with a target": any(t.after and t.target for t in transitions),
        "after with an invoke": any(t.after and t.invoke for t in transitions),
        "error branches by type": any(any(b.on for b in i.errors) for i in invokes),
        "non_retryable": any(i.non_retryable for i in invokes),
        "jitter and max delay": any(r.jitter and r.max_delay_seconds for i in invokes
                                    for r in i.retries),
        "a duration text": any(t.after and not t.after.written.isdigit() for t in transitions),
        "fail()": any("fail(" in (i.call.source or "") for i in invokes if i.call),
    }
    assert [name for name, ok in used.items() if not ok] == []


def sentence_texts(machine, rows):
    return [re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", "", str(s.html) + " | "
                                                     + str(s.why))))
            for s in timeline.sentences(rows, machine)]


def test_the_timeline_says_what_state_timers_and_typed_errors_did():
    machine = check((Path(EXAMPLES[0]).parent / "card-payment.yaml").read_text()).machine
    now = datetime(2026, 12, 1, 8, 0, tzinfo=UTC).timestamp()
    env = E.Env(now=now, evaluate=evaluate, execution={"id": "e1"})
    first = E.transition(machine, None, E.Start({"amount": 5}), env)
    s, history = first.snapshot, list(first.history)
    for event in (E.WorkSucceeded(s.work["token"], {"id": "c", "challenge_url": "u"}),):
        r = E.transition(machine, s, event, env)
        s, history = r.snapshot, history + list(r.history)
    remind = next(t for t in s.timers if t["transition"] == "remind")
    r = E.transition(machine, s, E.TimerFired(remind["token"]), E.Env(
        now=remind["due"], evaluate=evaluate, execution={"id": "e1"}))
    s, history = r.snapshot, history + list(r.history)
    r = E.transition(machine, s, E.WorkSucceeded(s.work["token"], 200), E.Env(
        now=remind["due"] + 1, evaluate=evaluate, execution={"id": "e1"}))
    s, history = r.snapshot, history + list(r.history)
    assert "The work succeeded: stayed in Waiting for 3-D Secure" in sentence_texts(
        machine, [{**h, "at": datetime.fromtimestamp(h["at"], tz=UTC),
                   "branch": (h.get("detail") or {}).get("branch")} for h in r.history])[1]
    expire = next(t for t in s.timers if t["transition"] == "expire")
    r = E.transition(machine, s, E.TimerFired(expire["token"]), E.Env(
        now=expire["due"], evaluate=evaluate, execution={"id": "e1"}))
    history += list(r.history)
    rows = [{**h, "at": datetime.fromtimestamp(h["at"], tz=UTC),
             "branch": (h.get("detail") or {}).get("branch")} for h in history]
    said = "\n".join(sentence_texts(machine, rows))
    assert "Timer No answer in time set: it fires at" in said
    assert "unless the execution leaves Waiting for 3-D Secure first" in said
    assert "(PT15M); moves that stay in the state do not restart it" in said
    assert "The timer of Remind the customer fired" in said
    assert "Moved Waiting for 3-D Secure → 3-D Secure expired | when the timer of" in said
    assert "The timer Remind the customer was canceled | the execution left the state" in said
    assert "Sleeping until" not in said  # it was waiting for the customer, not sleeping
    line = timeline.status_line(machine, status=s.status, state=s.state, timer=s.timer,
                                work=s.work, timers=s.timers)
    assert "Its timer “Remind the customer” fires at" in str(line)  # the next of the two
    assert str(line).endswith("(1 more timer later).")


# Durations, as a property -----------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(weeks=st.integers(0, 5), days=st.integers(0, 30), hours=st.integers(0, 48),
       minutes=st.integers(0, 120), seconds=st.integers(0, 120))
def test_iso_and_short_forms_of_a_duration_agree(weeks, days, hours, minutes, seconds):
    expected = (((weeks * 7 + days) * 24 + hours) * 60 + minutes) * 60 + seconds
    time_part = "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M"), (seconds, "S"))
                        if n)
    iso = "P" + "".join(f"{n}{u}" for n, u in ((weeks, "W"), (days, "D")) if n) + (
        f"T{time_part}" if time_part else "")
    short = "".join(f"{n}{u}" for n, u in ((weeks, "w"), (days, "d"), (hours, "h"),
                                             (minutes, "m"), (seconds, "s")) if n)
    if iso != "P":
        assert durations.looks_like(iso) and durations.seconds(iso) == expected
        assert durations.seconds(short) == expected
        assert durations.seconds(iso.lower()) == expected


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_any_text_is_a_duration_or_a_clear_error(text):
    try:
        value = durations.seconds(text)
    except durations.DurationError as exc:
        assert "duration" in str(exc) or "years and months" in str(exc) or "10 years" in str(
            exc)
    else:
        assert 0 <= value <= durations.MAX_SECONDS
