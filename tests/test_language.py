"""The definition language: every validation rule, the warnings, parsing and build()."""
import copy
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from machines import language
from machines.definition import Branch, Decision, Expr, Retry, Update
from machines.language import DefinitionError, Problem, build, check, parse_text

EXAMPLES = sorted(Path(__file__).resolve().parent.parent.joinpath("examples").glob("*.yaml"))
ID_RULE = (
    "use lowercase letters, digits, '.', '_' and '-', starting with a letter or digit, "
    "at most 100 characters"
)


def base() -> dict:
    """A small valid machine the cases below break in one place each."""
    return {
        "id": "demo",
        "start_at": "start",
        "states": {
            "start": {"actions": [{"id": "go", "on": "go", "state": "done"}]},
            "done": {"return": None},
        },
    }


def with_doc(**changes) -> dict:
    doc = base()
    doc.update(changes)
    return doc


def without(key: str) -> dict:
    doc = base()
    del doc[key]
    return doc


def with_state(**state) -> dict:
    doc = base()
    doc["states"]["start"] = state
    return doc


def with_transition(**transition) -> dict:
    doc = base()
    doc["states"]["start"]["actions"] = [transition]
    return doc


def with_invoke(**invoke) -> dict:
    return with_transition(id="work", invoke=invoke)


def triples(problems) -> list[tuple]:
    return [(p.path, p.message, p.hint) for p in problems]


def messages(problems) -> list[tuple]:
    return [(p.path, p.message) for p in problems]


T0 = "states.start.actions[0]"
INV = f"{T0}.invoke"
CALL = "io('http.request', 'GET', ctx['url'])"

# (document, path, message, hint or None when only path + message are asserted)
ERROR_CASES = {
    # Documents
    "missing id": (without("id"), "id", "missing 'id'", "the machine id, e.g. 'order'"),
    "id pattern": (
        with_doc(id="Order!"), "id",
        "'Order!' is not a valid machine id (pattern ^[a-z0-9][a-z0-9._-]{0,99}$)", ID_RULE,
    ),
    "id too long": (with_doc(id="a" * 101), "id", None, ID_RULE),
    "id not a string": (with_doc(id=7), "id", "7 is not a valid machine id (pattern "
                        "^[a-z0-9][a-z0-9._-]{0,99}$)", ID_RULE),
    "version bool": (with_doc(version=True), "version",
                     "'version' must be an integer >= 1, not true", None),
    "version zero": (with_doc(version=0), "version", "'version' must be an integer >= 1, not 0",
                     None),
    "version float": (with_doc(version=1.5), "version",
                      "'version' must be an integer >= 1, not 1.5", None),
    "unknown key near miss": (with_doc(strat_at="start"), "strat_at", "unknown key 'strat_at'",
                              "did you mean 'start_at'?"),
    "unknown key": (
        with_doc(colour="red"), "colour", "unknown key 'colour'",
        "document keys are: id, version, title, description, start_at, execution_mode, "
        "timeout_seconds, context, states, schedules, input, inputs, key, attributes",
    ),
    "execution mode": (with_doc(execution_mode="sinc"), "execution_mode",
                       "unknown execution mode 'sinc'", "did you mean 'sync'?"),
    "execution mode far off": (
        with_doc(execution_mode="fast"), "execution_mode", "unknown execution mode 'fast'",
        "use one of: sync, async-throughput, async-latency",
    ),
    "timeout zero": (with_doc(timeout_seconds=0), "timeout_seconds",
                     "'timeout_seconds' must be a number greater than 0, not 0", None),
    "timeout string": (with_doc(timeout_seconds="5"), "timeout_seconds",
                       "'timeout_seconds': '5' is not a duration: write a number of seconds, "
                       "an ISO-8601 duration (P1D, PT30M, P1DT12H) or a short form (90s, 30m, "
                       "2h, 2d, 1w, 1h30m)", None),
    "title not text": (with_doc(title=5), "title", "'title' must be a string, not a number", None),
    "context literal not object": (
        with_doc(context=[1]), "context",
        "'context' must be an expression (a string) or an object, not a list", None,
    ),
    "missing start_at": (without("start_at"), "start_at", "missing 'start_at'",
                         "the name of the first state"),
    "start_at unknown": (with_doc(start_at="strat"), "start_at", "unknown state 'strat'",
                         "did you mean 'start'?"),
    "start_at far off": (with_doc(start_at="zzz"), "start_at", "unknown state 'zzz'",
                         "states are: start, done"),
    "missing states": (without("states"), "states", "missing 'states'",
                       "an object: state name -> state"),
    "states not object": (with_doc(states=["start"]), "states",
                          "'states' must be an object: state name -> state, not a list", None),
    "states empty": (with_doc(states={}), "states", "'states' is empty",
                     "define at least the state named in 'start_at'"),
    # States
    "state not object": (with_doc(states={"start": "x"}), "states.start",
                         "'start' must be an object with 'actions' or 'return', not a string",
                         None),
    "actions and return": (
        with_state(actions=[{"id": "go", "state": "done"}], **{"return": 1}), "states.start",
        "state 'start' has both 'actions' and 'return'",
        "a state with 'return' is terminal: keep one of them",
    ),
    "neither actions nor return": (
        with_state(label="Start"), "states.start",
        "state 'start' has neither 'actions' nor 'return'",
        "add 'actions' to move on from it, or 'return' to finish there",
    ),
    "empty actions": (
        with_state(actions=[]), "states.start.actions", "'actions' is empty",
        "list at least one transition, or use 'return' to make the state terminal",
    ),
    "actions not list": (with_state(actions={"id": "go"}), "states.start.actions",
                         "'actions' must be a list of transitions, not an object", None),
    "state unknown key": (with_state(lable="x", **{"return": 1}), "states.start.lable",
                          "unknown key 'lable'", "did you mean 'label'?"),
    "state description": (with_state(description=["x"], **{"return": 1}),
                          "states.start.description",
                          "'description' must be a string, not a list", None),
    # Transitions
    "transition not object": (with_state(actions=["go"]), T0,
                              "'actions[0]' must be an object (a transition with an 'id'), "
                              "not a string", None),
    "missing transition id": (with_transition(on="go"), f"{T0}.id", "missing 'id'",
                              "name the transition, e.g. 'submit'"),
    "empty transition id": (with_transition(id=""), f"{T0}.id",
                            "'id' must be a transition id (a non-empty string), not ''", None),
    "transition unknown key": (with_transition(id="t", stat="done"), f"{T0}.stat",
                               "unknown key 'stat'", "did you mean 'state'?"),
    "unknown target": (with_transition(id="t", state="dne"), f"{T0}.state",
                       "unknown state 'dne'", "did you mean 'done'?"),
    "target not a name": (with_transition(id="t", state=3), f"{T0}.state",
                          "'state' must be a state name, not a number", None),
    "label not text": (with_transition(id="t", label=1), f"{T0}.label",
                       "'label' must be a string, not a number", None),
    "context with assign": (
        with_transition(id="t", context={}, assign={"a": 1}), T0,
        "use either 'context' (replaces the context) or 'assign' (merges keys into it), not both",
        None,
    ),
    "transition context literal": (
        with_transition(id="t", context=3), f"{T0}.context",
        "'context' must be an expression (a string) or an object, not a number", None,
    ),
    "assign not object": (with_transition(id="t", assign="ctx"), f"{T0}.assign",
                          "'assign' must be an object of key -> expression, not a string", None),
    "assign empty key": (with_transition(id="t", assign={"": 1}), f"{T0}.assign",
                         "'assign' keys must not be empty", None),
    "on empty": (with_transition(id="t", on=""), f"{T0}.on",
                 "'on' must be an action name or a non-empty list of action names",
                 "leave 'on' out to make the transition automatic"),
    "on empty list": (with_transition(id="t", on=[]), f"{T0}.on",
                      "'on' must be an action name or a non-empty list of action names", None),
    "on list item": (with_transition(id="t", on=["go", 3]), f"{T0}.on[1]",
                     "'on[1]' must be an action name (a non-empty string), not 3", None),
    "wait with on": (
        with_transition(id="t", on="go", wait={"seconds": 1}), f"{T0}.on",
        "'on' cannot be used with 'wait'",
        "a 'wait' transition fires by itself; use another transition for the action",
    ),
    "invoke with state": (
        with_transition(id="t", state="done", invoke={"call": CALL}), f"{T0}.state",
        "'state' cannot be used with 'invoke'",
        "put what happens next in 'invoke.success' / 'invoke.error'",
    ),
    "invoke with wait": (with_transition(id="t", wait={"seconds": 1}, invoke={"call": CALL}),
                         f"{T0}.wait", "'wait' cannot be used with 'invoke'", None),
    "invoke with if": (with_transition(id="t", invoke={"call": CALL}, **{"if": "True"},
                                       then={}), f"{T0}.if", "'if' cannot be used with 'invoke'",
                       None),
    "if with assign": (
        with_transition(id="t", assign={"a": 1}, then={"state": "done"}, **{"if": "True"}),
        f"{T0}.assign", "'assign' cannot be used with 'if'",
        "put 'state', 'context' or 'assign' in 'then' / 'else'",
    ),
    "if with wait": (with_transition(id="t", wait={"seconds": 1}, then={}, **{"if": "True"}),
                     f"{T0}.wait", "'wait' cannot be used with 'if'", None),
    "if without then": (
        with_transition(id="t", **{"if": "True", "else": {}}), f"{T0}.then",
        "'if' needs a 'then' branch", "then: {state: ...} is taken when the condition is true",
    ),
    "then without if": (with_transition(id="t", then={"state": "done"}), f"{T0}.then",
                        "'then' can only be used with 'if'", None),
    "else without if": (with_transition(id="t", **{"else": {}}), f"{T0}.else",
                        "'else' can only be used with 'if'", None),
    "branch unknown key": (with_transition(id="t", then={"stat": "done"}, **{"if": "True"}),
                           f"{T0}.then.stat", "unknown key 'stat'", "did you mean 'state'?"),
    "branch unknown state": (
        with_transition(id="t", then={"state": "don"}, **{"if": "True"}), f"{T0}.then.state",
        "unknown state 'don'", "did you mean 'done'?",
    ),
    "branch not object": (
        with_transition(id="t", then="done", **{"if": "True"}), f"{T0}.then",
        "'then' must be an object with 'state', 'context' or 'assign', not a string", None,
    ),
    "branch context with assign": (
        with_transition(id="t", then={"context": {}, "assign": {}}, **{"if": "True"}),
        f"{T0}.then",
        "use either 'context' (replaces the context) or 'assign' (merges keys into it), not both",
        None,
    ),
    # wait
    "wait not object": (with_transition(id="t", wait=5), f"{T0}.wait",
                        "'wait' must be an object: {seconds: N} or {until: expression}, "
                        "not a number", None),
    "wait neither": (with_transition(id="t", wait={}), f"{T0}.wait",
                     "'wait' needs exactly one of 'seconds' or 'until'", None),
    "wait both": (with_transition(id="t", wait={"seconds": 1, "until": "time()"}), f"{T0}.wait",
                  "'wait' needs exactly one of 'seconds' or 'until'", None),
    "wait negative": (with_transition(id="t", wait={"seconds": -1}), f"{T0}.wait.seconds",
                      "'seconds' must be a number >= 0 or an expression, not -1", None),
    "wait bool": (with_transition(id="t", wait={"seconds": True}), f"{T0}.wait.seconds",
                  "'seconds' must be a number >= 0 or an expression, not true", None),
    "wait until list": (
        with_transition(id="t", wait={"until": [2030]}), f"{T0}.wait.until",
        "'until' must be an expression or epoch seconds, not [2030]",
        "an ISO-8601 time is a string expression: \"'2030-01-01T00:00:00Z'\"",
    ),
    "wait unknown key": (with_transition(id="t", wait={"second": 1}), f"{T0}.wait.second",
                         "unknown key 'second'", "did you mean 'seconds'?"),
    # invoke
    "invoke not object": (with_transition(id="t", invoke="call"), f"{T0}.invoke",
                          "'invoke' must be an object with 'call', 'machine' or 'trigger', "
                          "not a string", None),
    "invoke none": (with_invoke(success={}), INV,
                    "'invoke' needs exactly one of 'call', 'machine', 'trigger', 'parallel' or "
                    "'map'", None),
    "invoke two": (with_invoke(call=CALL, machine="other"), INV,
                   "'invoke' needs exactly one of 'call', 'machine', 'trigger', 'parallel' or "
                   "'map', not 'call' and 'machine'", None),
    "invoke unknown key": (with_invoke(call=CALL, okif="True"), f"{INV}.okif",
                           "unknown key 'okif'", "did you mean 'ok_if'?"),
    "machine bad id": (with_invoke(machine="Other"), f"{INV}.machine",
                       "'Other' is not a valid machine id (pattern ^[a-z0-9][a-z0-9._-]{0,99}$)",
                       ID_RULE),
    "machine ref without id": (with_invoke(machine={"version": 1}), f"{INV}.machine.id",
                               "missing 'id'", "the child machine's id"),
    "machine ref version": (with_invoke(machine={"id": "other", "version": 0}),
                            f"{INV}.machine.version",
                            "'version' must be an integer >= 1, not 0", None),
    "machine ref unknown key": (with_invoke(machine={"id": "other", "ver": 1}),
                                f"{INV}.machine.ver", "unknown key 'ver'",
                                "did you mean 'version'?"),
    "machine ref type": (with_invoke(machine=5), f"{INV}.machine",
                         "'machine' must be a machine id or {id, version}, not a number", None),
    "async not bool": (with_invoke(machine="other", **{"async": "yes"}), f"{INV}.async",
                       "'async' must be true or false, not 'yes'", None),
    "async with call": (with_invoke(call=CALL, **{"async": True}), f"{INV}.async",
                        "'async' is only used with 'machine' or 'trigger'", None),
    "input with call": (with_invoke(call=CALL, input="ctx"), f"{INV}.input",
                        "'input' is only used with 'machine'",
                        "a 'call' reads ctx and input directly"),
    "input beside trigger": (
        with_invoke(trigger={"execution": "ctx['e']", "action": "go"}, input="ctx"),
        f"{INV}.input", "'input' is only used with 'machine'", "put 'input' inside 'trigger'",
    ),
    "trigger without execution": (with_invoke(trigger={"action": "go"}),
                                  f"{INV}.trigger.execution", "missing 'execution'",
                                  "an expression giving the execution id"),
    "trigger without action": (with_invoke(trigger={"execution": "ctx['e']"}),
                               f"{INV}.trigger.action", "missing 'action'",
                               "the action name to send"),
    "trigger empty action": (with_invoke(trigger={"execution": "ctx['e']", "action": ""}),
                             f"{INV}.trigger.action",
                             "'action' must be an action name (a non-empty string), not ''",
                             None),
    "trigger not object": (with_invoke(trigger="ctx['e']"), f"{INV}.trigger",
                           "'trigger' must be an object: {execution, action, input}, "
                           "not a string", None),
    "trigger unknown key": (
        with_invoke(trigger={"execution": "ctx['e']", "action": "go", "inputs": {}}),
        f"{INV}.trigger.inputs", "unknown key 'inputs'", "did you mean 'input'?",
    ),
    "invoke timeout": (with_invoke(call=CALL, timeout_seconds=-1), f"{INV}.timeout_seconds",
                       "'timeout_seconds' must be a number greater than 0, not -1", None),
    "success unknown state": (with_invoke(call=CALL, success={"state": "dnoe"}),
                              f"{INV}.success.state", "unknown state 'dnoe'",
                              "did you mean 'done'?"),
    "error branch not object": (with_invoke(call=CALL, error="failed"), f"{INV}.error",
                                "'error' must be an object with 'on', 'state', 'context' or "
                                "'assign', not a string", None),
    "error branches empty": (with_invoke(call=CALL, error=[]), f"{INV}.error",
                             "'error' must be an error branch, or a list of them, not an empty "
                             "list", None),
    # retry
    "retry not object": (with_invoke(call=CALL, retry=3), f"{INV}.retry",
                         "'retry' must be an object: {max_attempts, delay_seconds, backoff}, "
                         "not a number", None),
    "retry without attempts": (with_invoke(call=CALL, retry={"delay_seconds": 1}),
                               f"{INV}.retry.max_attempts", "missing 'max_attempts'",
                               "attempts in all, the first one included"),
    "max_attempts zero": (with_invoke(call=CALL, retry={"max_attempts": 0}),
                          f"{INV}.retry.max_attempts",
                          "'max_attempts' must be an integer from 1 to 100, not 0", None),
    "max_attempts too many": (with_invoke(call=CALL, retry={"max_attempts": 101}),
                              f"{INV}.retry.max_attempts",
                              "'max_attempts' must be an integer from 1 to 100, not 101", None),
    "max_attempts float": (with_invoke(call=CALL, retry={"max_attempts": 2.5}),
                           f"{INV}.retry.max_attempts",
                           "'max_attempts' must be an integer from 1 to 100, not 2.5", None),
    "delay negative": (with_invoke(call=CALL, retry={"max_attempts": 2, "delay_seconds": -1}),
                       f"{INV}.retry.delay_seconds",
                       "'delay_seconds' must be a number from 0 to 86400, not -1", None),
    "delay too long": (with_invoke(call=CALL, retry={"max_attempts": 2, "delay_seconds": 86401}),
                       f"{INV}.retry.delay_seconds",
                       "'delay_seconds' must be a number from 0 to 86400, not 86401", None),
    "backoff below one": (with_invoke(call=CALL, retry={"max_attempts": 2, "backoff": 0.5}),
                          f"{INV}.retry.backoff",
                          "'backoff' must be a number from 1 to 10, not 0.5", None),
    "backoff too big": (with_invoke(call=CALL, retry={"max_attempts": 2, "backoff": 11}),
                        f"{INV}.retry.backoff",
                        "'backoff' must be a number from 1 to 10, not 11", None),
    "retry unknown key": (with_invoke(call=CALL, retry={"max_attempts": 2, "delay": 1}),
                          f"{INV}.retry.delay", "unknown key 'delay'",
                          "did you mean 'delay_seconds'?"),
    # expressions: a string in any expression position must parse and stay in the language
    "empty expression": (with_transition(id="t", when="  "), f"{T0}.when",
                         "the expression is empty", "write an expression, or null for no value"),
    "import": (with_invoke(call="import os"), f"{INV}.call", "imports are not allowed", None),
    "dunder": (with_state(**{"return": "ctx.__class__"}), "states.start.return",
               "attribute '__class__' is not allowed: names starting with '_' are private", None),
}


@pytest.mark.parametrize("case", ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_each_rule_reports_its_error_with_path_message_and_hint(case):
    document, path, message, hint = case
    result = check(document)
    assert not result.valid and result.machine is None
    found = [p for p in result.errors if p.path == path and message in (None, p.message)]
    assert found, f"no error at {path!r}: {triples(result.errors)}"
    if hint is not None:
        assert hint in [p.hint for p in found]


EXPRESSION_POSITIONS = {
    "context": with_doc(context="{'a': }"),
    f"{T0}.when": with_transition(id="t", state="done", when="{'a': }"),
    f"{T0}.context": with_transition(id="t", context="{'a': }"),
    f"{T0}.assign.total": with_transition(id="t", assign={"total": "{'a': }"}),
    f"{T0}.wait.seconds": with_transition(id="t", wait={"seconds": "{'a': }"}),
    f"{T0}.wait.until": with_transition(id="t", wait={"until": "{'a': }"}),
    f"{T0}.if": with_transition(id="t", then={}, **{"if": "{'a': }"}),
    f"{T0}.then.context": with_transition(id="t", then={"context": "{'a': }"}, **{"if": "1"}),
    f"{T0}.else.assign.x": with_transition(id="t", then={}, **{"if": "1", "else": {
        "assign": {"x": "{'a': }"}}}),
    f"{INV}.call": with_invoke(call="{'a': }"),
    f"{INV}.input": with_invoke(machine="other", input="{'a': }"),
    f"{INV}.ok_if": with_invoke(call=CALL, ok_if="{'a': }"),
    f"{INV}.success.assign.n": with_invoke(call=CALL, success={"assign": {"n": "{'a': }"}}),
    f"{INV}.error.context": with_invoke(call=CALL, error={"context": "{'a': }"}),
    f"{INV}.trigger.execution": with_invoke(trigger={"execution": "{'a': }", "action": "go"}),
    f"{INV}.trigger.input": with_invoke(
        trigger={"execution": "ctx['e']", "action": "go", "input": "{'a': }"}),
    "states.done.return": with_doc(states={**base()["states"], "done": {"return": "{'a': }"}}),
}


@pytest.mark.parametrize("path", EXPRESSION_POSITIONS)
def test_expressions_that_do_not_parse_are_reported_at_their_field_with_line_and_column(path):
    result = check(EXPRESSION_POSITIONS[path])
    assert [(p.path, p.message, p.line, p.column) for p in result.errors] == [
        (path, "expression expected after dictionary key and ':'", 1, 5)
    ]


def test_expression_problems_give_the_line_inside_a_multi_line_expression():
    source = "items = list(ctx['items'])\nitems.append(\n"
    result = check(with_transition(id="t", context=source))
    [problem] = result.errors
    assert (problem.path, problem.line) == (f"{T0}.context", 2)
    assert problem.to_dict() == {"path": f"{T0}.context", "message": problem.message,
                                 "hint": None, "line": 2, "column": problem.column}


@pytest.mark.parametrize("source", [
    "{**ctx, 'n': ctx['n'] + 1}",
    "[*ctx['items'], 3]",
    "dict(ctx, n=len(input.get('items', [])))",
    "total = 0\nfor item in ctx['items']:\n    total += item['price']\n{**ctx, 'total': total}",
])
def test_ordinary_python_expressions_are_accepted(source):
    assert check(with_transition(id="t", state="done", context=source)).valid


@pytest.mark.parametrize("value", [None, 0, True, [1, 2], {"a": [1, {"b": None}]}, 2.5])
def test_non_string_values_in_expression_positions_are_literals(value):
    doc = with_transition(id="t", state="done", when=value, assign={"x": value})
    doc["states"]["done"]["return"] = value
    transition = check(doc).machine.state("start").transitions[0]
    assert transition.when == Expr(f"{T0}.when", literal=value)
    assert transition.update.assign == (("x", Expr(f"{T0}.assign.x", literal=value)),)


def test_all_errors_are_reported_at_once():
    doc = with_doc(id="Bad", version=0, execution_mode="fast")
    doc["states"]["start"]["actions"].append({"id": "go", "state": "nowhere"})
    assert messages(check(doc).errors) == [
        ("id", "'Bad' is not a valid machine id (pattern ^[a-z0-9][a-z0-9._-]{0,99}$)"),
        ("version", "'version' must be an integer >= 1, not 0"),
        ("execution_mode", "unknown execution mode 'fast'"),
        ("states.start.actions[1].state", "unknown state 'nowhere'"),
        ("states.start.actions[1].id", "duplicate transition id 'go'"),
    ]


def test_duplicate_transition_ids_name_the_first_use():
    doc = base()
    doc["states"]["start"]["actions"] += [{"id": "stay", "on": "x"}, {"id": "go", "on": "y"}]
    [problem] = check(doc).errors
    assert (problem.path, problem.message, problem.hint) == (
        "states.start.actions[2].id", "duplicate transition id 'go'",
        "actions[0] already uses it; ids are unique within a state",
    )


def test_the_same_transition_id_in_two_states_is_fine():
    doc = base()
    doc["states"]["done"] = {"actions": [{"id": "go", "on": "go", "state": "start"}]}
    assert check(doc).valid


# Warnings --------------------------------------------------------------------------------
def warnings_of(doc, **kwargs) -> list[tuple]:
    result = check(doc, **kwargs)
    assert result.valid, triples(result.errors)
    return triples(result.warnings)


def test_unreachable_states_are_warned_about():
    doc = base()
    doc["states"]["orphan"] = {"actions": [{"id": "back", "state": "done"}]}
    assert warnings_of(doc) == [(
        "states.orphan", "state 'orphan' cannot be reached from 'start'",
        "add a transition that leads to it, or remove it",
    )]


def test_states_reached_only_through_branches_are_reachable():
    doc = yaml.safe_load("""
      id: m
      start_at: a
      states:
        a:
          actions:
            - {id: d, if: "True", then: {state: b}, else: {state: c}}
        b:
          actions:
            - id: w
              invoke: {call: "1", success: {state: d}, error: {state: e}}
        c: {return: 1}
        d: {return: 2}
        e: {return: 3}
    """)
    assert warnings_of(doc) == []


def test_transitions_after_an_unconditional_automatic_one_are_warned_about():
    doc = with_state(actions=[
        {"id": "guarded", "when": "ctx['x']", "state": "done"},
        {"id": "always", "state": "done"},
        {"id": "later", "when": "True", "state": "start"},
    ])
    assert warnings_of(doc) == [(
        "states.start.actions[2]",
        "transition 'later' can never be taken: 'always' (actions[1]) before it is automatic "
        "and unconditional", "move it above 'always', or give 'always' a 'when'",
    )]


def test_actions_in_a_state_that_never_waits_are_warned_about():
    doc = with_state(actions=[{"id": "cancel", "on": "cancel"}, {"id": "go", "state": "done"}])
    assert warnings_of(doc) == [(
        "states.start.actions[0]",
        "action 'cancel' can never be taken: the execution never waits in 'start' because "
        "'go' (actions[1]) is automatic and unconditional", "give 'go' a 'when' or a 'wait'",
    )]


WAIT = {"id": "timer", "wait": {"seconds": 5}, "state": "done"}  # arms a timer
MAYBE = {"id": "maybe", "if": "ctx['x']", "then": {"state": "done"}}  # no else: falls through
WORK = {"id": "work", "invoke": {"call": "1", "success": {"state": "done"}}}  # pauses: invoking


@pytest.mark.parametrize("first", [WAIT, MAYBE], ids=["wait", "if without else"])
def test_a_wait_or_an_if_without_else_shadows_nothing(first):
    assert warnings_of(with_state(actions=[first, {"id": "next", "state": "done"}])) == []


@pytest.mark.parametrize("pause", [[WAIT, {"id": "next", "state": "done"}], [WORK]],
                         ids=["wait", "invoke"])
def test_actions_before_a_wait_or_an_invoke_can_be_taken(pause):
    doc = with_state(actions=[{"id": "cancel", "on": "cancel", "state": "done"}, *pause])
    assert warnings_of(doc) == []


def test_an_if_with_an_else_is_unconditional():
    doc = with_state(actions=[
        {"id": "d", "if": "ctx['x']", "then": {"state": "done"}, "else": {"state": "done"}},
        {"id": "never", "state": "done"},
    ])
    assert [w[0] for w in warnings_of(doc)] == ["states.start.actions[1]"]


def test_states_that_can_get_stuck_are_warned_about():
    doc = with_state(actions=[
        {"id": "a", "when": "ctx['a']", "state": "done"},
        {"id": "b", "if": "ctx['b']", "then": {"state": "done"}},
    ])
    assert warnings_of(doc) == [(
        "states.start",
        "state 'start' can get stuck: it has no 'on' transition and every automatic "
        "transition is guarded",
        "add a last transition without 'when' as a fallback, or one with 'on'",
    )]


@pytest.mark.parametrize("escape", [
    {"id": "act", "on": "go", "state": "done"},
    {"id": "fallback", "state": "done"},
    {"id": "timer", "wait": {"seconds": 1}, "state": "done"},
])
def test_a_state_with_an_action_or_an_unguarded_way_out_is_not_stuck(escape):
    doc = with_state(actions=[{"id": "a", "when": "ctx['a']", "state": "done"}, escape])
    assert warnings_of(doc) == []


def test_missing_child_machines_are_warned_about_only_when_asked():
    doc = with_state(actions=[
        {"id": "a", "on": "a", "invoke": {"machine": "missing", "success": {"state": "done"}}},
        {"id": "b", "on": "b", "invoke": {"machine": {"id": "there"}}},
        {"id": "c", "on": "c", "invoke": {"machine": {"id": "gone", "version": 2}}},
        {"id": "d", "on": "d", "invoke": {"machine": "demo"}},  # itself: exists once saved
    ])
    assert warnings_of(doc) == []
    assert warnings_of(doc, machine_exists=lambda mid: mid == "there") == [
        ("states.start.actions[0].invoke.machine", "machine 'missing' does not exist yet",
         "save it before an execution reaches this transition"),
        ("states.start.actions[2].invoke.machine.id", "machine 'gone' does not exist yet",
         "save it before an execution reaches this transition"),
    ]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_the_examples_are_valid_without_warnings(path):
    known = {parse_text(p.read_text())[0]["id"] for p in EXAMPLES}
    result = check(path.read_text(), machine_exists=known.__contains__)
    assert (triples(result.errors), triples(result.warnings)) == ([], [])
    assert result.source_format == "yaml" and "#" in path.read_text()


def test_the_examples_use_the_whole_language():
    machines = [check(p.read_text()).machine for p in EXAMPLES]
    transitions = [t for m in machines for s in m.states.values() for t in s.transitions]
    invokes = [t.invoke for t in transitions if t.invoke]
    used = {
        "wait seconds": any(t.wait and t.wait.seconds for t in transitions),
        "wait until": any(t.wait and t.wait.until for t in transitions),
        "if/else": any(t.decision and t.decision.otherwise for t in transitions),
        "if without else": any(t.decision and not t.decision.otherwise for t in transitions),
        "context": any(t.update.context for t in transitions),
        "call": any(i.kind == "call" for i in invokes),
        "retry": any(i.retry and i.retry.backoff > 1 for i in invokes),
        "timeout": any(i.timeout_seconds for i in invokes),
        "ok_if": any(i.ok_if for i in invokes),
        "sync child": any(i.kind == "machine" and not i.is_async for i in invokes),
        "async child": any(i.kind == "machine" and i.is_async for i in invokes),
        "pinned child": any(i.machine_version for i in invokes),
        "trigger": any(i.kind == "trigger" for i in invokes),
        "error branch": any(i.error for i in invokes),
        "labelled": all(t.label for m in machines if m.id not in ("order", "shipment")
                        for s in m.states.values() for t in s.transitions),
        "sync mode": any(m.execution_mode == "sync" for m in machines),
        "parallel": any(i.kind == "parallel" for i in invokes),
        "map with a cap": any(i.kind == "map" and i.group.max_concurrency for i in invokes),
        "cron schedule": any(s.cron for m in machines for s in m.schedules),
    }
    assert [name for name, ok in used.items() if not ok] == []


# Parsing ---------------------------------------------------------------------------------
def test_yaml_bare_on_is_the_key_on_and_only_true_false_are_booleans():
    document, fmt = parse_text("id: m\nx: {on: add, a: yes, b: no, c: true, d: 2024-01-01}\n")
    assert fmt == "yaml"
    assert document["x"] == {"on": "add", "a": "yes", "b": "no", "c": True, "d": "2024-01-01"}


def test_a_document_loaded_with_plain_yaml_safe_load_explains_the_on_trap():
    doc = yaml.safe_load("id: m\nstart_at: a\nstates:\n  a:\n    actions: [{id: t, on: go}]\n")
    [problem] = check(doc).errors
    assert problem.path == "states.a.actions[0].True"
    assert problem.message == "key true is not a string"
    assert "parse_text" in problem.hint


def test_json_is_parsed_as_json():
    text = json.dumps(base(), indent=2)
    assert parse_text(text) == (base(), "json")
    assert check(text).source_format == "json"


def test_a_yaml_flow_mapping_is_yaml():
    assert parse_text("{id: m, start_at: a}") == ({"id": "m", "start_at": "a"}, "yaml")


@pytest.mark.parametrize("text, message, line, column", [
    ("id: m\nstates:\n  a: [1\n", "invalid YAML: while parsing a flow sequence expected ',' or "
     "']', but got '<stream end>'", 4, 1),
    ("id: m\n  bad: indent\n", "invalid YAML: mapping values are not allowed here", 2, 6),
    ('{"id": "m",\n "states": [}', "invalid JSON: Expecting value", 2, 13),
    ("id: m\nid: n\n", "invalid YAML: while constructing a mapping found duplicate key 'id'", 2, 1),
])
def test_syntax_errors_carry_line_and_column(text, message, line, column):
    with pytest.raises(DefinitionError) as caught:
        parse_text(text)
    [problem] = caught.value.errors
    assert (problem.path, problem.message, problem.line, problem.column) == (
        "", message, line, column)
    result = check(text)
    assert result.document is None and result.errors == (problem,)


def test_duplicate_json_keys_are_errors():
    with pytest.raises(DefinitionError, match="duplicate key 'id'"):
        parse_text('{"id": "a", "id": "b"}')


@pytest.mark.parametrize("text, message", [
    ("", "the definition is empty"),
    ("# only a comment\n", "the definition is empty"),
    ("- id: m\n", "the definition must be an object, not a list"),
    ("just text", "the definition must be an object, not a string"),
])
def test_a_top_level_that_is_not_an_object_is_an_error(text, message):
    with pytest.raises(DefinitionError) as caught:
        parse_text(text)
    assert [p.message for p in caught.value.errors] == [message]


@pytest.mark.parametrize("text, path, message", [
    ("id: m\nstart_at: a\nstates:\n  a: {return: !!set {x}}\n", "states.a.return",
     "set is not a JSON value"),
    ("id: m\nstart_at: a\nstates:\n  a: {return: .nan}\n", "states.a.return",
     "nan is not a JSON number"),
    ('{"id": "m", "start_at": "a", "states": {"a": {"return": NaN}}}', "states.a.return",
     "nan is not a JSON number"),
    ("id: m\nstart_at: a\nstates:\n  a: {return: {1: x}}\n", "states.a.return.1",
     "key 1 is not a string"),
    ("id: m\nstart_at: a\nstates:\n  a: {return: &r [*r]}\n", "",
     "the definition refers to itself or is nested too deeply"),
])
def test_values_yaml_can_express_but_json_cannot_are_errors(text, path, message):
    assert messages(check(text).errors) == [(path, message)]


def test_shared_yaml_anchors_are_fine():
    text = "id: m\nstart_at: a\nstates:\n  a: {return: &v {x: [1, 2]}}\n  b: {return: *v}\n"
    assert check(text).errors == ()


# build() ---------------------------------------------------------------------------------
def order():
    return check((EXAMPLES[0].parent / "order.yaml").read_text()).machine


def test_build_of_order_yaml():
    machine = order()
    assert (machine.id, machine.version, machine.start_at, machine.title) == (
        "order", 1, "create", "Order")
    assert machine.context.path == "context" and machine.context.source.startswith("{'order'")
    cart = machine.state("cart")
    assert cart.label == "Shopping cart" and not cart.is_terminal
    assert [(t.id, t.path, t.on, t.target) for t in cart.transitions] == [
        ("add", "states.cart.actions[0]", ("add",), None),
        ("remove", "states.cart.actions[1]", ("remove",), None),
        ("place", "states.cart.actions[2]", ("place",), "submitted"),
    ]
    [(key, expr)] = cart.transitions[0].update.assign
    assert key == "order" and expr.path == "states.cart.actions[0].assign.order"
    assert cart.transitions[1].update.context.path == "states.cart.actions[1].context"
    ship = machine.state("released").transition("ship")
    assert ship.on == () and ship.is_automatic
    invoke = ship.invoke
    assert (invoke.kind, invoke.machine_id, invoke.machine_version, invoke.is_async) == (
        "machine", "shipment", None, False)
    assert invoke.input.path == "states.released.actions[0].invoke.input"
    assert invoke.success == Branch("ship-finished", Update(assign=((
        "delivered",
        Expr("states.released.actions[0].invoke.success.assign.delivered",
             source="output['delivered']"),
    ),)))
    assert invoke.error == Branch("canceled")
    fulfilled = machine.state("ship-finished").transitions[0]
    assert fulfilled.when == Expr("states.ship-finished.actions[0].when", source="ctx['delivered']")
    shipped = machine.state("shipped")
    assert shipped.is_terminal and shipped.returns == Expr("states.shipped.return", literal=True)
    assert list(machine.states) == list(parse_text(EXAMPLES[0].parent.joinpath(
        "order.yaml").read_text())[0]["states"])


def test_build_defaults_and_return_null():
    machine = build(base())
    assert machine.context == Expr("context", literal={})
    assert (machine.version, machine.execution_mode, machine.timeout_seconds) == (
        None, "async-throughput", 30)
    done = machine.state("done")
    assert done.is_terminal and done.returns == Expr("states.done.return", literal=None)


def test_build_waits_decisions_triggers_and_retries():
    doc = yaml.safe_load("""
      id: m
      start_at: a
      execution_mode: sync
      timeout_seconds: 2.5
      states:
        a:
          actions:
            - {id: nap, wait: {seconds: 5}, state: b}
            - {id: later, wait: {until: "ctx['due']"}}
        b:
          actions:
            - {id: d, "on": [x, y], if: "ctx['ok']", then: {state: c, assign: {n: 1}},
               else: {context: "{}"}}
            - {id: e, if: "ctx['ok']", then: {state: c}}
        c:
          actions:
            - id: poke
              invoke:
                trigger: {execution: "ctx['other']", action: go, input: {n: 1}}
                async: true
                retry: {max_attempts: 3, backoff: 1.5}
                timeout_seconds: 9
            - id: child
              invoke: {machine: {id: kid, version: 4}, input: "ctx", success: {state: c}}
            - id: fetch
              invoke:
                {call: "io('x')", ok_if: "output", error: {state: c}, retry: {max_attempts: 2}}
    """)
    machine = build(doc)
    assert (machine.execution_mode, machine.timeout_seconds) == ("sync", 2.5)
    nap, later = machine.state("a").transitions
    assert nap.wait.seconds == Expr("states.a.actions[0].wait.seconds", literal=5)
    assert nap.wait.until is None
    assert later.wait.until == Expr("states.a.actions[1].wait.until", source="ctx['due']")
    assert later.target is None
    d, e = machine.state("b").transitions
    assert d.on == ("x", "y") and d.target is None and d.update.is_empty
    assert d.decision == Decision(
        Expr("states.b.actions[0].if", source="ctx['ok']"),
        Branch("c", Update(assign=(("n", Expr("states.b.actions[0].then.assign.n", literal=1)),))),
        Branch(None, Update(context=Expr("states.b.actions[0].else.context", source="{}"))),
    )
    assert e.decision.otherwise is None
    poke, child, fetch = (t.invoke for t in machine.state("c").transitions)
    assert (poke.kind, poke.action, poke.is_async, poke.timeout_seconds) == (
        "trigger", "go", True, 9)
    assert poke.execution == Expr("states.c.actions[0].invoke.trigger.execution",
                                  source="ctx['other']")
    assert poke.input == Expr("states.c.actions[0].invoke.trigger.input", literal={"n": 1})
    assert poke.retry == Retry(max_attempts=3, delay_seconds=1.0, backoff=1.5)
    assert (child.kind, child.machine_id, child.machine_version) == ("machine", "kid", 4)
    assert child.input == Expr("states.c.actions[1].invoke.input", source="ctx")
    assert (fetch.kind, fetch.call.source, fetch.ok_if.source, fetch.retry.max_attempts) == (
        "call", "io('x')", "output", 2)
    assert fetch.error == Branch("c") and fetch.success is None


def test_build_refuses_invalid_documents_with_every_error():
    with pytest.raises(DefinitionError) as caught:
        build(with_doc(id="X", start_at="nowhere"))
    assert [p.path for p in caught.value.errors] == ["id", "start_at"]
    assert "invalid machine definition: id: 'X' is not a valid machine id" in str(caught.value)
    with pytest.raises(DefinitionError, match="must be an object, not a list"):
        build([])


def test_the_built_machine_does_not_change_with_the_document():
    doc = with_doc(context={"n": 1})
    machine = build(doc)
    doc["context"]["n"] = 2
    assert machine.context.literal == {"n": 1}


def test_canonical_hash_ignores_version_and_key_order():
    doc = base()
    reordered = dict(reversed(list(copy.deepcopy(doc).items())), version=7)
    assert language.canonical_hash(doc) == language.canonical_hash(reordered)
    assert len(language.canonical_hash(doc)) == 64
    assert language.canonical_hash(doc) != language.canonical_hash(with_doc(title="T"))


def test_load_cached_builds_once_per_id_version_and_hash():
    doc = with_doc(version=1)
    first = language.load_cached("demo", 1, "h1", doc)
    assert language.load_cached("demo", 1, "h1", doc) is first
    assert language.load_cached("demo", 1, "h2", doc) is not first
    with pytest.raises(DefinitionError):
        language.load_cached("demo", 2, "h3", with_doc(id="BAD"))


def test_problem_to_dict_leaves_out_an_unknown_position():
    assert Problem("id", "missing 'id'").to_dict() == {
        "path": "id", "message": "missing 'id'", "hint": None}


def test_a_non_object_document_is_an_error_not_a_crash():
    result = check(["not", "a", "machine"])
    assert (result.valid, result.document, messages(result.errors)) == (
        False, None, [("", "the definition must be an object, not a list")])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 200) | st.text(max_size=6)
    | st.sampled_from(["ctx", "a +", "done", "start", "go", "call", "state", "on"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(language.TRANSITION_KEYS + language.INVOKE_KEYS + ("x",)), inner,
        max_size=4),
    max_leaves=12,
)


def _paths(value, prefix=()):
    yield prefix
    items = value.items() if isinstance(value, dict) else enumerate(value) \
        if isinstance(value, list) else ()
    for key, item in items:
        yield from _paths(item, (*prefix, key))


ORDER = parse_text((EXAMPLES[0].parent / "order.yaml").read_text())[0]


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_check_never_crashes_on_a_mangled_definition(data):
    doc = copy.deepcopy(ORDER)
    path = data.draw(st.sampled_from(list(_paths(doc))[1:]))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = data.draw(JSON)
    result = check(doc)
    assert result.valid == (result.machine is not None)


def test_yaml_alias_expansion_bombs_are_refused_quickly():
    import time

    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 9):
        refs = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{refs}]")
    began = time.monotonic()
    checked = language.check("id: lol\nstart_at: a\n" + "\n".join(lines))
    assert time.monotonic() - began < 2
    assert [p.message for p in checked.errors] == [
        f"the definition expands to more than {language.MAX_DOCUMENT_VALUES} values"]
