"""A machine's contracts with its callers: input schemas, the business key, the searchable
attributes (docs/language.md, "Contracts").

Pure: the language module checks these sections with the functions here when a machine is
saved, and the runtime and the services use the typed results to check inputs and to
compute keys. JSON Schema is checked with the `jsonschema` library (imported on first use:
most machines declare no schema, and a management command should not pay for it).
"""
from __future__ import annotations

import ast
import json
import re
from datetime import UTC, datetime
from typing import Any

from machines.definition import Attribute, Key

# Short form ------------------------------------------------------------------------------
# A field is `type`, `type?` (optional), with comparisons for numbers (`integer >= 1`),
# and `= default`; or `a | b | c` (one of these strings). A mapping is a nested object.
TYPES = {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean",
         "object": "object", "list": "array", "any": None}
_FIELD = re.compile(
    r"^\s*(?P<type>[^?=<>]+?)\s*(?P<optional>\?)?\s*"
    r"(?P<bounds>(?:(?:>=|<=|>|<)\s*-?\d+(?:\.\d+)?\s*)*)"
    r"(?:=\s*(?P<default>.*?))?\s*$")
_BOUND = re.compile(r"(>=|<=|>|<)\s*(-?\d+(?:\.\d+)?)")
BOUND_KEYWORDS = {">=": "minimum", "<=": "maximum", ">": "exclusiveMinimum",
                  "<": "exclusiveMaximum"}
FULL_FORM_KEY = "json_schema"
MAX_SCHEMA_CHARS = 16 * 1024
MAX_FIELDS = 100
# A group repeated by a quantifier, itself quantified inside: the patterns that can take
# exponential time on a crafted input ((a+)+, (x|x*)*). Refused: inputs are checked in the
# web process, not in the bounded pool.
_NESTED_QUANTIFIER = re.compile(r"\)[*+{]|\)\?[*+]")

KEY_SCOPES = ("unfinished", "always")
ATTRIBUTE_TYPES = ("string", "number", "boolean", "timestamp")
ATTRIBUTE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
MAX_ATTRIBUTES = 10
MAX_KEY_CHARS = 200
MAX_ATTRIBUTE_TEXT = 200


__all__ = ["Attribute", "ContractError", "Key", "KeyUnavailable"]


class ContractError(ValueError):
    """A section is malformed; `problems` are (path, message, hint)."""

    def __init__(self, problems: list[tuple[str, str, str | None]]):
        super().__init__("; ".join(f"{p}: {m}" for p, m, _ in problems))
        self.problems = problems


# Input schemas ---------------------------------------------------------------------------
def input_schema(spec: Any, path: str) -> dict:
    """The JSON Schema of an input section (short form or {json_schema: ...}); ContractError
    says what is wrong, each problem with its path."""
    if not isinstance(spec, dict):
        raise ContractError([(path, "an input must be described by an object: field -> type, "
                              f"or {{{FULL_FORM_KEY}: ...}}", "e.g. {sku: string, qty: integer}")])
    if set(spec) == {FULL_FORM_KEY}:
        schema = spec[FULL_FORM_KEY]
        _check_json_schema(schema, f"{path}.{FULL_FORM_KEY}")
        return schema
    schema = _object_schema(spec, path)
    _check_json_schema(schema, path)
    return schema


def _object_schema(fields: dict, path: str) -> dict:
    if len(fields) > MAX_FIELDS:
        raise ContractError([(path, f"more than {MAX_FIELDS} fields", None)])
    problems: list[tuple[str, str, str | None]] = []
    properties: dict[str, dict] = {}
    required: list[str] = []
    for name, field_spec in fields.items():
        where = f"{path}.{name}"
        try:
            schema, optional = _field_schema(field_spec, where)
        except ContractError as exc:
            problems += exc.problems
            continue
        properties[name] = schema
        if not optional:
            required.append(name)
    if problems:
        raise ContractError(problems)
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


def _field_schema(spec: Any, path: str) -> tuple[dict, bool]:
    """(the field's schema, whether it may be left out)."""
    if isinstance(spec, dict):
        return _object_schema(spec, path), False
    if not isinstance(spec, str):
        raise ContractError([(path, f"a field's type must be text such as 'string' or "
                              f"'integer >= 1?', not {json.dumps(spec)}", None)])
    match = _FIELD.match(spec)
    if match is None or not match.group("type").strip():
        raise ContractError([(path, f"cannot read the field type {spec!r}",
                              "write e.g. 'string', 'integer >= 1', 'number?', "
                              "'low | high = low'")])
    kind = match.group("type").strip()
    schema: dict[str, Any] = {}
    if "|" in kind:
        choices = [choice.strip() for choice in kind.split("|")]
        if not all(choices):
            raise ContractError([(path, f"an empty choice in {kind!r}", None)])
        schema = {"type": "string", "enum": choices}
    elif kind in TYPES:
        if TYPES[kind] is not None:
            schema["type"] = TYPES[kind]
    else:
        raise ContractError([(path, f"unknown type {kind!r}",
                              "types: " + ", ".join(TYPES) + ", or choices a | b | c")])
    bounds = _BOUND.findall(match.group("bounds") or "")
    if bounds and schema.get("type") not in ("integer", "number"):
        raise ContractError([(path, f"comparisons apply to numbers, not to {kind!r}", None)])
    for operator, number in bounds:
        schema[BOUND_KEYWORDS[operator]] = json.loads(number)
    optional = match.group("optional") is not None
    default = match.group("default")
    if default is not None:
        schema["default"] = _default(default, schema, path)
        optional = True
    return schema, optional


def _default(text: str, schema: dict, path: str) -> Any:
    """A default as JSON (`1`, `true`, `"x"`); for text fields also bare text (`EUR`)."""
    try:
        value = json.loads(text)
    except ValueError:
        if schema.get("type") != "string":
            raise ContractError([(path, f"the default {text!r} is not a JSON value",
                                  None)]) from None
        value = text
    problem = first_problem(schema, value)
    if problem is not None:
        raise ContractError([(path, f"the default {text!r} does not fit: {problem[1]}", None)])
    return value


def _check_json_schema(schema: Any, path: str) -> None:
    if not isinstance(schema, dict):
        raise ContractError([(path, "a JSON Schema must be an object", None)])
    text = json.dumps(schema)
    if len(text) > MAX_SCHEMA_CHARS:
        raise ContractError([(path, f"the schema is {len(text):,} characters long, more than "
                              f"{MAX_SCHEMA_CHARS:,}", None)])
    from jsonschema import Draft202012Validator, exceptions

    try:
        Draft202012Validator.check_schema(schema)
    except exceptions.SchemaError as exc:
        where = _join_path(path, exc.absolute_path)
        raise ContractError([(where, f"not a valid JSON Schema: {exc.message}", None)]) from None
    for reference in _references(schema):
        if not _resolves(schema, reference):
            raise ContractError([(path, f"the reference {reference!r} is not a part of this "
                                  "schema", "a schema may refer only to its own parts, "
                                  "as '#/$defs/name'")])
    for pattern in _patterns(schema):
        if _NESTED_QUANTIFIER.search(pattern):
            raise ContractError([(path, f"the pattern {pattern!r} repeats a repeated group, "
                                  "which can take exponential time", "simplify it")])


def _references(value: Any):
    """Every `$ref`/`$dynamicRef`; an `$id` counts as a reference (it moves the base)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("$ref", "$dynamicRef", "$id"):
                yield item if key != "$id" else f"$id {item}"
            else:
                yield from _references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item)


def _resolves(schema: dict, reference: Any) -> bool:
    """A JSON pointer into the schema itself ('#', '#/$defs/x') that leads somewhere."""
    if not isinstance(reference, str) or not reference.startswith("#"):
        return False
    target: Any = schema
    for part in [p for p in reference[1:].split("/") if p]:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(target, dict) and part in target:
            target = target[part]
        elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
            target = target[int(part)]
        else:
            return False
    return True


def _patterns(value: Any):
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "pattern" and isinstance(item, str):
                yield item
            elif key == "patternProperties" and isinstance(item, dict):
                yield from item
            yield from _patterns(item)
    elif isinstance(value, list):
        for item in value:
            yield from _patterns(item)


def _join_path(path: str, parts) -> str:
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


_validators: dict[str, Any] = {}


def problems(schema: dict, value: Any, limit: int = 20) -> list[tuple[str, str]]:
    """(path, message) of each way `value` breaks `schema`, at most `limit`, paths as the
    API writes them (`input.items[1].qty` relative: `items[1].qty`)."""
    key = json.dumps(schema, sort_keys=True)
    validator = _validators.get(key)
    if validator is None:
        from jsonschema import Draft202012Validator

        validator = _validators[key] = Draft202012Validator(schema)
        if len(_validators) > 512:
            _validators.pop(next(iter(_validators)))
    found = []
    for error in sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path)):
        found.append((_join_path("", error.absolute_path).lstrip("."), error.message))
        if len(found) >= limit:
            break
    return found


def first_problem(schema: dict, value: Any) -> tuple[str, str] | None:
    found = problems(schema, value, limit=1)
    return found[0] if found else None


def with_defaults(schema: dict, value: Any) -> Any:
    """The input with the defaults of missing top-level fields filled in."""
    properties = schema.get("properties")
    if not isinstance(value, dict) or not isinstance(properties, dict):
        return value
    missing = {name: field["default"] for name, field in properties.items()
               if name not in value and isinstance(field, dict) and "default" in field}
    return {**value, **missing} if missing else value


def needs_no_input(schema: dict | None) -> bool:
    """True when the action is declared to take nothing: a one-click action."""
    return (schema is not None and schema.get("type") == "object"
            and not schema.get("properties") and not schema.get("required")
            and schema.get("additionalProperties") is False)


# The business key ------------------------------------------------------------------------
KEY_ROOTS = ("input", "ctx")
KEY_HINT = ("write the start input's field, input['order_id'] or input['order']['id'], or "
            "the context's, ctx['payment_id']")


def key_of(spec: Any, path: str) -> Key:
    """`key: "input['order_id']"` or `key: {value: "ctx['payment_id']", unique: always}`."""
    unique = "unfinished"
    source = spec
    if isinstance(spec, dict):
        unknown = set(spec) - {"value", "unique"}
        if unknown:
            raise ContractError([(f"{path}.{sorted(unknown)[0]}", "unknown key",
                                  "key: {value: ..., unique: unfinished | always}")])
        if "value" not in spec:
            raise ContractError([(f"{path}.value", "missing 'value'", KEY_HINT)])
        source, unique = spec["value"], spec.get("unique", "unfinished")
        if unique not in KEY_SCOPES:
            raise ContractError([(f"{path}.unique", f"unknown uniqueness {unique!r}",
                                  "unfinished (the default) or always")])
        path = f"{path}.value"
    if not isinstance(source, str):
        raise ContractError([(path, "the key must be a path into the start input or the "
                              "context", KEY_HINT)])
    root, parts = _key_path(source, path)
    return Key(parts, source, unique, in_context=root == "ctx")


def _key_path(source: str, path: str) -> tuple[str, tuple[str | int, ...]]:
    """input['a']['b'] or ctx['items'][0] -> ("input", ("a", "b")) / ("ctx", ("items", 0))."""
    try:
        node = ast.parse(source.strip(), mode="eval").body
    except SyntaxError:
        raise ContractError([(path, f"cannot read the key {source!r}", KEY_HINT)]) from None
    parts: list[str | int] = []
    while isinstance(node, ast.Subscript):
        index = node.slice
        if not (isinstance(index, ast.Constant) and isinstance(index.value, (str, int))
                and not isinstance(index.value, bool)):
            raise ContractError([(path, "a key's path takes only fixed names and numbers",
                                  KEY_HINT)])
        parts.append(index.value)
        node = node.value
    if not (isinstance(node, ast.Name) and node.id in KEY_ROOTS) or not parts:
        raise ContractError([(path, "the key must be a path into the start input or the "
                              "context", KEY_HINT)])
    return node.id, tuple(reversed(parts))


class KeyUnavailable(ValueError):
    """The start input (or the context) does not hold a usable key."""


def key_value(key: Key, start_input: Any) -> str:
    """The key of an execution started with this input, as stored (text)."""
    value = _at(key.path, start_input)
    if value is _MISSING:
        raise KeyUnavailable(f"the business key {key.source} is missing from the input")
    return _key_text(key, value)


def context_key(key: Key, context: Any) -> str | None:
    """The key a context holds, as stored (text); None while the path is missing or null
    (the execution has no key yet). KeyUnavailable when it holds something else."""
    value = _at(key.path, context)
    return None if value is _MISSING or value is None else _key_text(key, value)


_MISSING = object()


def _at(path: tuple[str | int, ...], value: Any) -> Any:
    for part in path:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return value


def _key_text(key: Key, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise KeyUnavailable(f"the business key {key.source} must be text or an integer, "
                             f"not {json.dumps(value)[:40]}")
    text = str(value)
    if not text or len(text) > MAX_KEY_CHARS:
        raise KeyUnavailable(f"the business key {key.source} must be 1 to {MAX_KEY_CHARS} "
                             "characters long")
    return text


# Searchable attributes -------------------------------------------------------------------
def attributes_of(spec: Any, path: str) -> tuple[tuple[str, str, Any], ...]:
    """(name, type, expression source or literal) of each attribute; `name: expr` is a
    string attribute, `name: {type, value}` says its type."""
    if not isinstance(spec, dict):
        raise ContractError([(path, "'attributes' must be an object: name -> expression",
                              None)])
    if len(spec) > MAX_ATTRIBUTES:
        raise ContractError([(path, f"at most {MAX_ATTRIBUTES} attributes", None)])
    found, problems_found = [], []
    for name, item in spec.items():
        where = f"{path}.{name}"
        if not (isinstance(name, str) and ATTRIBUTE_NAME.match(name)):
            problems_found.append((where, f"{name!r} is not an attribute name",
                                   "lowercase letters, digits and _, starting with a letter, "
                                   "at most 40"))
            continue
        kind, value = "string", item
        if isinstance(item, dict):
            unknown = set(item) - {"type", "value"}
            if unknown or "value" not in item:
                problems_found.append((where, "an attribute is {type, value}",
                                       "e.g. {type: number, value: \"ctx['total']\"}"))
                continue
            kind, value = item.get("type", "string"), item["value"]
            if kind not in ATTRIBUTE_TYPES:
                problems_found.append((f"{where}.type", f"unknown attribute type {kind!r}",
                                       "types: " + ", ".join(ATTRIBUTE_TYPES)))
                continue
        found.append((name, kind, value))
    if problems_found:
        raise ContractError(problems_found)
    return tuple(found)


def attribute_value(kind: str, value: Any) -> Any:
    """The value of an attribute as stored (None: not set): text cut to 200 characters,
    numbers finite, timestamps as epoch seconds (from a number or an ISO-8601 text)."""
    if value is None:
        return None
    if kind == "string":
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            return None
        return str(value)[:MAX_ATTRIBUTE_TEXT]
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        number = float(value)
        return number if abs(number) < 1e300 else None
    return parse_timestamp(value)


def parse_timestamp(value: Any) -> float | None:
    """Epoch seconds from a number or an ISO-8601 text (UTC when it has no offset)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if 0 <= value <= 253402300799 else None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    return None
