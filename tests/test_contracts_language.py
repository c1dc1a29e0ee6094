"""The contracts sections of the language (issue 13): what is refused when a machine is
saved, what the short form means, and the engine's side: an action's own failure rejects it
(the execution as it was, timers included), attributes computed after each step."""
import pytest

from executions import engine
from expressions.sandbox import evaluate as sandbox_evaluate
from machines import contracts
from machines.language import check

BASE = """
id: m
start_at: a
states:
  a:
    actions:
      - {id: go, on: go, state: b}
      - {id: add, on: add, assign: {n: "input['qty'] * 2"}}
  b: {return: null}
"""


def errors(extra: str) -> list[tuple[str, str]]:
    result = check(BASE + extra)
    return [(p.path, p.message) for p in result.errors]


@pytest.mark.parametrize(("extra", "path", "message"), [
    ("input: {qty: integr}", "input.qty", "unknown type 'integr'"),
    ("input: {qty: string >= 1}", "input.qty", "comparisons apply to numbers"),
    ("input: {qty: integer = lots}", "input.qty", "is not a JSON value"),
    ("input: {qty: integer >= 1 = 0}", "input.qty", "does not fit"),
    ("input: {qty: 3}", "input.qty", "a field's type must be text"),
    ("input: [qty]", "input", "must be described by an object"),
    ("input: {json_schema: {type: objekt}}", "input.json_schema.type", "not a valid JSON Schema"),
    ("input: {json_schema: {$ref: 'https://example.com/s.json'}}", "input.json_schema",
     "is not a part"),
    ("input: {json_schema: {type: string, pattern: '(a+)+$'}}", "input.json_schema",
     "exponential time"),
    ("input: {json_schema: {$defs: {a: {type: string}}, properties: {x: {$ref: '#/$defs/a'},"
     " y: {$ref: 'http://example.com/s.json'}}}}", "input.json_schema", "is not a part"),
    ("input: {json_schema: {properties: {x: {$ref: '#/$defs/missing'}}}}", "input.json_schema",
     "is not a part"),
    ("input: {json_schema: {$id: 'http://example.com/', type: object}}", "input.json_schema",
     "is not a part"),
    ("inputs: {ad: {qty: integer}}", "inputs.ad", "no transition takes the action 'ad'"),
    ("inputs: []", "inputs", "'inputs' must be an object"),
    ("key: \"input['a'] + 'x'\"", "key", "the key must be a path into the start input"),
    ("key: \"execution['id']\"", "key", "the key must be a path into the start input"),
    ("key: \"input[x]\"", "key", "only fixed names and numbers"),
    ("key: {value: \"input['a']\", unique: forever}", "key.unique", "unknown uniqueness"),
    ("key: {unique: always}", "key.value", "missing 'value'"),
    ("attributes: {Amount: \"ctx['n']\"}", "attributes.Amount", "is not an attribute name"),
    ("attributes: {n: {type: integer, value: \"ctx['n']\"}}", "attributes.n.type",
     "unknown attribute type"),
    ("attributes: {n: \"ctx['n'\"}", "attributes.n", "was never closed"),
])
def test_each_contract_rule_reports_its_error_with_its_path(extra, path, message):
    found = errors(extra)
    assert any(p == path and message in m for p, m in found), found


def test_too_many_attributes_and_too_large_a_schema_are_refused():
    many = "attributes: {" + ", ".join(f"a{i}: \"ctx['n']\"" for i in range(11)) + "}"
    assert ("attributes", "at most 10 attributes") in errors(many)
    big = "input: {json_schema: {description: '" + "x" * 17_000 + "'}}"
    assert any("more than 16,384" in m for _, m in errors(big))


def test_the_short_form_is_a_strict_json_schema_with_defaults():
    schema = contracts.input_schema(
        {"sku": "string", "qty": "integer >= 1 <= 9 = 1", "size": "S | M | L = M",
         "note": "string?", "address": {"zip": "string", "street": "string?"}}, "input")
    assert schema["required"] == ["sku", "address"] and schema["additionalProperties"] is False
    assert schema["properties"]["qty"] == {"type": "integer", "minimum": 1, "maximum": 9,
                                           "default": 1}
    assert schema["properties"]["size"] == {"type": "string", "enum": ["S", "M", "L"],
                                            "default": "M"}
    assert schema["properties"]["address"]["required"] == ["zip"]
    assert contracts.problems(schema, {"sku": "a", "address": {"zip": "1"}, "qty": 0}) == [
        ("qty", "0 is less than the minimum of 1")]
    assert [p for p, _ in contracts.problems(schema, {"sku": 1, "address": {}, "x": 1})] == [
        "", "address", "sku"]
    assert contracts.with_defaults(schema, {"sku": "a"}) == {"sku": "a", "qty": 1, "size": "M"}
    assert contracts.needs_no_input(contracts.input_schema({}, "inputs.go"))


def test_a_key_is_read_from_the_start_input():
    key = contracts.key_of({"value": "input['order']['id']", "unique": "always"}, "key")
    assert key.path == ("order", "id") and key.unique == "always"
    assert contracts.key_value(key, {"order": {"id": 42}}) == "42"
    for bad in ({}, {"order": {"id": True}}, {"order": {"id": ""}}, {"order": {"id": [1]}}):
        with pytest.raises(contracts.KeyUnavailable):
            contracts.key_value(key, bad)


# The engine ------------------------------------------------------------------------------
def env(now=1000.0):
    return engine.Env(now=now, evaluate=sandbox_evaluate)


def machine(text):
    return check(text).machine


def test_a_failing_action_on_a_sleeping_execution_keeps_its_timer_and_context():
    m = machine("""
id: s
start_at: a
context: {n: 1}
attributes: {n: {type: number, value: "ctx['n']"}, label: "str(ctx['n'])"}
states:
  a:
    actions:
      - {id: later, wait: {seconds: 60}, state: b}
      - {id: add, on: add, assign: {n: "ctx['n'] + input['qty']"}}
  b: {return: null}
""")
    started = engine.transition(m, None, engine.Start({}), env())
    asleep = started.snapshot
    assert asleep.status == engine.SLEEPING and asleep.timer is not None
    result = engine.transition(m, asleep, engine.Action("add", {}), env())
    assert result.rejected and "KeyError" in result.rejected and not result.effects
    assert result.snapshot.timer == asleep.timer and result.snapshot.context == {"n": 1}
    assert result.snapshot.status == engine.SLEEPING
    (entry,) = result.history
    assert entry["kind"] == engine.ACTION_REJECTED
    assert entry["detail"]["error"]["path"] == "states.a.actions[1].assign.n"
    applied = engine.transition(m, asleep, engine.Action("add", {"qty": 2}), env())
    assert applied.snapshot.context == {"n": 3}
    assert engine.attributes(m, applied.snapshot, env()) == {"n": 3.0, "label": "3"}


def test_an_attribute_that_fails_or_has_another_type_is_empty_not_a_failure():
    m = machine("""
id: t
start_at: a
context: {when: "2026-01-02T00:00:00Z", flag: 1}
attributes:
  missing: "ctx['nope']"
  flag: {type: boolean, value: "ctx['flag']"}
  when: {type: timestamp, value: "ctx['when']"}
states:
  a: {actions: [{id: go, on: go, state: a}]}
""")
    snapshot = engine.transition(m, None, engine.Start({}), env()).snapshot
    assert snapshot.status == engine.WAITING
    assert engine.attributes(m, snapshot, env()) == {"missing": None, "flag": None,
                                                     "when": 1767312000.0}


def test_automatic_transitions_still_fail_the_execution():
    m = machine("""
id: u
start_at: a
states:
  a: {actions: [{id: go, on: go, state: b}]}
  b: {actions: [{id: auto, assign: {x: "1 / 0"}, state: c}]}
  c: {return: null}
""")
    waiting = engine.transition(m, None, engine.Start({}), env()).snapshot
    result = engine.transition(m, waiting, engine.Action("go", {}), env())
    assert result.rejected is None and result.snapshot.status == engine.FAILED
    assert result.snapshot.state == "b"


def test_a_schema_may_refer_to_its_own_parts():
    schema = contracts.input_schema({"json_schema": {
        "type": "object", "$defs": {"line": {"type": "object", "required": ["sku"]}},
        "properties": {"lines": {"type": "array", "items": {"$ref": "#/$defs/line"}}}}},
        "input")
    assert contracts.problems(schema, {"lines": [{"sku": "a"}, {}]}) == [
        ("lines[1]", "'sku' is a required property")]
