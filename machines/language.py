"""The machine definition language: text -> document -> problems -> typed Machine.

`check()` reports every error and warning of a definition at once, each with the path of
the offending field, so an editor can fix them all in one go; `build()` turns a valid
document into the immutable objects of `machines.definition` that the engine runs.
The rules, and the choices made where the language leaves room, are written down in
docs/language.md. Pure Python: no Django.
"""
from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from expressions import checker, names
from machines import contracts, durations
from machines.definition import (
    DEFAULT_EXECUTION_MODE,
    DEFAULT_TIMEOUT_SECONDS,
    ERROR_MATCH_PATTERN,
    EXECUTION_MODES,
    MAP_MAX_ITEMS,
    RUNTIME_ERROR_TYPES,
    After,
    Branch,
    Decision,
    Expr,
    Group,
    GroupBranch,
    Invoke,
    Machine,
    Retry,
    Schedule,
    State,
    Transition,
    Update,
    Wait,
)
from machines.lru import LRU
from machines.schedules import MIN_EVERY_SECONDS, cron_problem, zone_problem

ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,99}$"
_ID_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")

DOCUMENT_KEYS = (
    "id", "version", "title", "description", "start_at", "execution_mode",
    "timeout_seconds", "context", "states", "schedules", "input", "inputs", "key",
    "attributes",
)
STATE_KEYS = ("label", "description", "actions", "return")
TRANSITION_KEYS = (
    "id", "label", "on", "when", "state", "context", "assign", "wait", "invoke",
    "if", "then", "else", "after",
)
INVOKE_KEYS = (
    "call", "machine", "trigger", "input", "async", "success", "error", "ok_if", "retry",
    "timeout_seconds", "non_retryable", "parallel", "map", "join", "on_failure",
)
INVOKE_KINDS = ("call", "machine", "trigger", "parallel", "map")
GROUP_KINDS = ("parallel", "map")
PARALLEL_BRANCH_KEYS = ("machine", "input")
MAP_KEYS = ("items", "machine", "input", "max_concurrency")
JOINS = ("all", "any")
ON_FAILURE = ("fail_fast", "collect")
MAX_PARALLEL_BRANCHES = 50
MAX_CONCURRENCY = 1000
SCHEDULE_KEYS = ("id", "cron", "every", "time_zone", "input")
MAX_SCHEDULES = 20
BRANCH_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$"
_BRANCH_NAME_RE = re.compile(BRANCH_NAME_PATTERN)
BRANCH_KEYS = ("state", "context", "assign")
ERROR_BRANCH_KEYS = ("on", *BRANCH_KEYS)
WAIT_KEYS = ("seconds", "until")
RETRY_KEYS = ("on", "max_attempts", "delay_seconds", "backoff", "max_delay_seconds", "jitter")
_ERROR_MATCH_RE = re.compile(ERROR_MATCH_PATTERN)
EXPRESSION_KINDS = ("runtime", "timeout", "resource", "crashed", "result", "syntax")
MACHINE_REF_KEYS = ("id", "version")
TRIGGER_KEYS = ("execution", "action", "input")
# What may stand beside `invoke` / `if` in a transition (docs/language.md, "Allowed combinations").
WITH_INVOKE = frozenset({"invoke", "on", "when", "id", "label", "after"})
WITH_IF = frozenset({"if", "then", "else", "on", "when", "id", "label"})
CACHE_SIZE = 256
# Durations a definition may give (wait.seconds, timeout_seconds): 10 years. Past that a
# time is no longer a time a page, a serializer or a database column can hold (1e300 s).
MAX_DURATION_SECONDS = 10 * 365 * 86400
MAX_EPOCH_SECONDS = 253402300799  # wait.until given as epoch seconds: up to 9999-12-31


# Results ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """One error or warning, located by the path of the field it is about."""

    path: str
    message: str
    hint: str | None = None
    line: int | None = None  # for expressions: inside the expression; for syntax: the text
    column: int | None = None

    def to_dict(self) -> dict:
        data: dict[str, str | int | None] = {"path": self.path, "message": self.message,
                                             "hint": self.hint}
        if self.line is not None:
            data["line"] = self.line
        if self.column is not None:
            data["column"] = self.column
        return data

    def __str__(self) -> str:
        where = self.path or "(document)"
        if self.line is not None:
            where += f":{self.line}" + (f":{self.column}" if self.column is not None else "")
        return f"{where}: {self.message}" + (f" ({self.hint})" if self.hint else "")


class DefinitionError(ValueError):
    """The text or document is not a valid definition; `errors` says everything wrong."""

    def __init__(self, errors: list[Problem], warnings: list[Problem] | None = None):
        self.errors = list(errors)
        self.warnings = list(warnings or [])
        count = len(self.errors)
        summary = "; ".join(str(p) for p in self.errors[:3])
        more = f" (and {count - 3} more)" if count > 3 else ""
        super().__init__(f"invalid machine definition: {summary}{more}")


@dataclass(frozen=True)
class Checked:
    document: dict | None
    source_format: str
    errors: tuple[Problem, ...]
    warnings: tuple[Problem, ...]
    machine: Machine | None

    @property
    def valid(self) -> bool:
        return not self.errors


# Public functions ------------------------------------------------------------------------
def parse_text(text: str) -> tuple[dict, str]:
    """The document in `text`: JSON when it parses as JSON, YAML otherwise."""
    if len(text) > MAX_DEFINITION_CHARS:
        raise DefinitionError([Problem(
            "", f"the definition is {len(text):,} characters long, more than the limit of "
            f"{MAX_DEFINITION_CHARS:,}", "split it into machines that invoke each other")])
    if text.lstrip().startswith("{"):
        try:
            return _top_level(_load_json(text)), "json"
        except json.JSONDecodeError as exc:
            json_problem = Problem("", f"invalid JSON: {exc.msg}", None, exc.lineno, exc.colno)
        except _DuplicateKey as exc:
            raise DefinitionError([Problem("", str(exc), "each key may appear once")]) from None
        try:  # a YAML flow mapping (`{id: x, ...}`) also starts with "{"
            return _top_level(_load_yaml(text)), "yaml"
        except DefinitionError:
            raise DefinitionError([json_problem]) from None
    return _top_level(_load_yaml(text)), "yaml"


def check(source: str | dict, *, machine_exists: Callable[[str], bool] | None = None) -> Checked:
    """Every error and warning of a definition, and its typed form when it is valid."""
    if isinstance(source, str):
        try:
            document, source_format = parse_text(source)
        except DefinitionError as exc:
            fmt = "json" if source.lstrip().startswith("{") else "yaml"
            return Checked(None, fmt, tuple(exc.errors), tuple(exc.warnings), None)
    else:
        document, source_format = source, "json"
        if not isinstance(document, dict):
            return Checked(None, source_format, (_not_an_object(document),), (), None)
    validator = _Validator(document, machine_exists, check_names=True)
    errors, warnings = validator.run()
    machine = None if errors else _construct(document)
    return Checked(document, source_format, tuple(errors), tuple(warnings), machine)


def build(document: dict) -> Machine:
    """The typed definition of a valid document; DefinitionError lists what is wrong."""
    if not isinstance(document, dict):
        raise DefinitionError([_not_an_object(document)])
    errors, warnings = _Validator(document, None).run()
    if errors:
        raise DefinitionError(errors, warnings)
    return _construct(document)


_machines: LRU[Machine] = LRU(CACHE_SIZE)


def load_cached(machine_id: str, version: int, content_hash: str,
                document: dict | Callable[[], dict]) -> Machine:
    """build() once per stored version in this process (versions are immutable).

    `document` may be a function that fetches it, called only when the cache misses."""
    return _machines.get((machine_id, version, content_hash),
                         lambda: build(document() if callable(document) else document))


_IO_CALL = re.compile(r"""\bio\(\s*(['"])([\w.\-]+)\1""")


def io_operation(source: str | None) -> str | None:
    """The operation a call expression reaches through `io('op', ...)`, if it names one:
    ``io('http.request.json', 'GET', url)`` -> ``http.request.json``."""
    found = _IO_CALL.search(source or "")
    return found.group(2) if found else None


def canonical_hash(document: dict) -> str:
    """Same content, same hash, whatever the key order or version number."""
    content = {key: value for key, value in document.items() if key != "version"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


# Parsing ---------------------------------------------------------------------------------
class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    result = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(f"duplicate key '{key}'")
        result[key] = value
    return result


def _load_json(text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except RecursionError:
        raise DefinitionError([Problem("", "the definition is nested too deeply")]) from None


class _Loader(yaml.SafeLoader):
    """YAML as a JSON author expects it: only true/false are booleans (so a bare `on:` stays
    the key "on", not True as in YAML 1.1), dates stay strings, repeated keys are errors."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                repeated = key in seen
                seen.add(key)
            except TypeError:
                continue  # unhashable: the base class reports it
            if repeated:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found duplicate key '{key}'", key_node.start_mark,
                )
        return yaml.constructor.SafeConstructor.construct_mapping(self, node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


# libyaml's parser when PyYAML has it: the pure-Python scanner read about 40 KB/s on a busy
# machine (a 400-state definition took a second to check). The constructor and resolvers
# stay _Loader's; a document that does not parse is read again by _Loader for its messages.
_FastLoader = type("_FastLoader", (yaml.CSafeLoader,), {
    "construct_mapping": _Loader.construct_mapping,
    "yaml_implicit_resolvers": _Loader.yaml_implicit_resolvers,
}) if getattr(yaml, "__with_libyaml__", False) else _Loader

MAX_DOCUMENT_VALUES = 100_000
MAX_DEFINITION_CHARS = 512 * 1024  # checking is linear in this, about 1 s at the limit


def _load_yaml(text: str) -> Any:
    try:
        try:
            document = yaml.load(text, Loader=_FastLoader)  # noqa: S506 - SafeLoader's
        except yaml.YAMLError:
            document = yaml.load(text, Loader=_Loader)  # noqa: S506 - the messages
        _refuse_expansion_bombs(document)
        return document
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(part for part in (exc.context, exc.problem) if part)
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        problem = Problem("", f"invalid YAML: {message}", None, line, column)
        raise DefinitionError([problem]) from None
    except yaml.YAMLError as exc:
        raise DefinitionError([Problem("", f"invalid YAML: {exc}")]) from None
    except RecursionError:
        raise DefinitionError([Problem("", "the definition is nested too deeply")]) from None


def _refuse_expansion_bombs(document: Any) -> None:
    """YAML aliases share one object many times; a few lines can stand for billions of
    values. Count values as JSON would write them and stop early past a sane size (and at
    a value that contains itself)."""
    count = 0
    inside = set()

    def walk(value):
        nonlocal count
        count += 1
        if count > MAX_DOCUMENT_VALUES:
            raise DefinitionError([Problem(
                "", f"the definition expands to more than {MAX_DOCUMENT_VALUES} values",
                "YAML aliases (*name) that repeat large parts multiply its size",
            )])
        if isinstance(value, dict | list):
            if id(value) in inside:
                raise DefinitionError([Problem(
                    "", "the definition refers to itself or is nested too deeply")])
            inside.add(id(value))
            for child in value.values() if isinstance(value, dict) else value:
                walk(child)
            inside.discard(id(value))

    walk(document)


def _top_level(document: Any) -> dict:
    if document is None:
        raise DefinitionError([Problem("", "the definition is empty", "start with 'id:'")])
    if not isinstance(document, dict):
        raise DefinitionError([_not_an_object(document)])
    return document


def _not_an_object(document: Any) -> Problem:
    return Problem("", f"the definition must be an object, not {_kind(document)}")


# Validation ------------------------------------------------------------------------------
def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f"'{value}'"
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _did_you_mean(name: Any, choices) -> str | None:
    if not isinstance(name, str):
        return None
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    close = close or [c for c in choices if len(name) >= 3 and c.startswith(name)]  # "delay"
    return f"did you mean '{close[0]}'?" if close else None


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _field(path: str) -> str:
    return path.rsplit(".", 1)[-1]


# Expression positions that bind more than ctx, input, execution and the helpers, by path.
# (A construct that binds names of its own adds its positions here.)
POSITION_NAMES: tuple[tuple[re.Pattern, tuple[str, ...]], ...] = (
    (re.compile(r"\.invoke\.call$"), ("io",)),
    (re.compile(r"\.invoke\.(success\.|ok_if$)"), ("output",)),
    (re.compile(r"\.invoke\.error(\[\d+\])?\."), ("error",)),
    (re.compile(r"\.invoke\.map\.input$"), ("item", "index")),
)


def names_at(path: str) -> frozenset[str]:
    """The names an expression at `path` may use."""
    extra = [name for pattern, bound in POSITION_NAMES if pattern.search(path) for name in bound]
    return names.available(*extra)


class _Validator:
    """Walks a document once, collecting every error and warning with its path."""

    def __init__(self, document: dict, machine_exists: Callable[[str], bool] | None,
                 check_names: bool = False):
        self.document = document
        self.machine_exists = machine_exists
        # Names and arity are checked when a machine is saved (check()), not when a stored
        # one is built: a version saved before these checks keeps loading and running.
        self.check_names = check_names
        states = document.get("states")
        self.states = states if isinstance(states, dict) else {}
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []

    def run(self) -> tuple[list[Problem], list[Problem]]:
        self._json_values(self.document)
        self._document(self.document)
        self._contracts(self.document)
        self._warn_unreachable()
        for name, _, transitions in self._action_lists():
            self._warn_shadowed(name, transitions)
            self._warn_stuck(name, transitions)
        self._warn_unknown_machines()
        return self.errors, self.warnings

    def error(self, path, message, hint=None, line=None, column=None):
        self.errors.append(Problem(path, message, hint, line, column))

    def warn(self, path, message, hint=None):
        self.warnings.append(Problem(path, message, hint))

    # JSON-ness of the whole document ------------------------------------------------------
    def _json_values(self, document: dict) -> None:
        """Only JSON values may be stored and evaluated (YAML can express more)."""
        stack, seen = [(document, "")], set()
        while stack:
            value, path = stack.pop()
            if isinstance(value, (dict, list)):
                if id(value) in seen:
                    continue  # a YAML alias: the same object was checked already
                seen.add(id(value))
            if isinstance(value, dict):
                for key, item in value.items():
                    if not isinstance(key, str):
                        self._non_string_key(path, key)
                    stack.append((item, _join(path, key)))
            elif isinstance(value, list):
                stack.extend((item, f"{path}[{i}]") for i, item in enumerate(value))
            elif isinstance(value, float) and not math.isfinite(value):
                self.error(path, f"{value} is not a JSON number")
            elif not (value is None or isinstance(value, (str, int, float, bool))):
                self.error(path, f"{type(value).__name__} is not a JSON value",
                           "use only objects, lists, strings, numbers, booleans and null")
        if not self.errors:
            try:
                json.dumps(document)
            except (ValueError, RecursionError):
                self.error("", "the definition refers to itself or is nested too deeply",
                           "YAML aliases must not contain themselves")

    def _non_string_key(self, path: str, key: Any) -> None:
        if key is True:
            hint = ("YAML 1.1 reads a bare 'on' as true: parse the text with "
                    "machines.language.parse_text (or quote the key: 'on')")
        else:
            hint = "quote it: object keys are strings"
        self.error(_join(path, key), f"key {_show(key)} is not a string", hint)

    # Shared field checks -----------------------------------------------------------------
    def _unknown_keys(self, obj: dict, path: str, allowed, what: str) -> None:
        for key in obj:
            if isinstance(key, str) and key not in allowed:
                hint = _did_you_mean(key, allowed) or f"{what} keys are: {', '.join(allowed)}"
                self.error(_join(path, key), f"unknown key '{key}'", hint)

    def _require(self, obj: dict, key: str, path: str, hint: str | None = None) -> bool:
        if key in obj:
            return True
        self.error(_join(path, key), f"missing '{key}'", hint)
        return False

    def _object(self, value: Any, path: str, what: str) -> bool:
        if isinstance(value, dict):
            return True
        self.error(path, f"'{_field(path)}' must be {what}, not {_kind(value)}")
        return False

    def _text(self, obj: dict, key: str, path: str) -> None:
        if key in obj and not isinstance(obj[key], str):
            self.error(_join(path, key), f"'{key}' must be a string, not {_kind(obj[key])}")

    def _name(self, value: Any, path: str, what: str) -> bool:
        if isinstance(value, str) and value.strip():
            return True
        self.error(path, f"'{_field(path)}' must be {what} (a non-empty string), "
                   f"not {_show(value)}")
        return False

    def _number(self, value, path, *, low=None, high=None, above=None, integer=False) -> None:
        kind = "an integer" if integer else "a number"
        if low is not None and high is not None:
            bounds = f"from {low} to {high}"
        elif above is not None:
            bounds = f"greater than {above}"
        else:
            bounds = f">= {low}"
        ok = _is_integer(value) if integer else _is_number(value)
        ok = ok and (low is None or value >= low) and (high is None or value <= high)
        ok = ok and (above is None or value > above)
        if not ok:
            self.error(path, f"'{_field(path)}' must be {kind} {bounds}, not {_show(value)}")

    def _duration(self, value: Any, path: str) -> None:
        """Seconds greater than 0, at most MAX_DURATION_SECONDS (10 years); or a duration
        text (docs/language.md "Durations") of more than 0 seconds."""
        if isinstance(value, str):
            self._literal_duration(value, path, above_zero=True)
            return
        if _is_number(value) and value > MAX_DURATION_SECONDS:
            self.error(path, f"'{_field(path)}' must be at most {MAX_DURATION_SECONDS:,} "
                       f"seconds (10 years), not {_show(value)}")
            return
        self._number(value, path, above=0)

    def _version(self, value: Any, path: str) -> None:
        self._number(value, path, low=1, integer=True)

    def _machine_id(self, value: Any, path: str) -> None:
        if not (isinstance(value, str) and _ID_RE.fullmatch(value)):
            self.error(path, f"{_show(value)} is not a valid machine id (pattern {ID_PATTERN})",
                       "use lowercase letters, digits, '.', '_' and '-', starting with a letter "
                       "or digit, at most 100 characters")

    def _state_ref(self, value: Any, path: str) -> None:
        if not isinstance(value, str):
            self.error(path, f"'{_field(path)}' must be a state name, not {_kind(value)}")
        elif self.states and value not in self.states:
            names = [name for name in self.states if isinstance(name, str)]
            hint = _did_you_mean(value, names) or f"states are: {', '.join(names)}"
            self.error(path, f"unknown state '{value}'", hint)

    def _expr(self, value: Any, path: str, *, object_literal: bool = False) -> None:
        """A string is Python source and must pass the static checks; else a literal."""
        if isinstance(value, str):
            if not value.strip():
                self.error(path, "the expression is empty",
                           "write an expression, or null for no value")
            problems = checker.check(value)
            for problem in problems:
                self.error(path, problem.message, checker.prose_hint(value),
                           line=problem.line, column=problem.column)
            if self.check_names and not problems:
                for problem in checker.check_names(value, names_at(path)):
                    self.error(path, problem.message, line=problem.line, column=problem.column)
        elif object_literal and not isinstance(value, dict):
            self.error(path, f"'{_field(path)}' must be an expression (a string) or an object, "
                       f"not {_kind(value)}")

    def _update(self, obj: dict, path: str) -> None:
        if "context" in obj:
            self._expr(obj["context"], _join(path, "context"), object_literal=True)
        if "assign" in obj:
            self._assign(obj["assign"], _join(path, "assign"))
        if "context" in obj and "assign" in obj:
            self.error(path, "use either 'context' (replaces the context) or 'assign' "
                       "(merges keys into it), not both")

    def _assign(self, value: Any, path: str) -> None:
        if not self._object(value, path, "an object of key -> expression"):
            return
        for key, expr in value.items():
            if isinstance(key, str) and not key:
                self.error(path, "'assign' keys must not be empty")
            self._expr(expr, _join(path, key))

    def _branch(self, value: Any, path: str) -> None:
        if not self._object(value, path, "an object with 'state', 'context' or 'assign'"):
            return
        self._unknown_keys(value, path, BRANCH_KEYS, f"'{_field(path)}'")
        if "state" in value:
            self._state_ref(value["state"], _join(path, "state"))
        self._update(value, path)

    # Document, states, transitions -------------------------------------------------------
    def _document(self, doc: dict) -> None:
        self._unknown_keys(doc, "", DOCUMENT_KEYS, "document")
        if self._require(doc, "id", "", "the machine id, e.g. 'order'"):
            self._machine_id(doc["id"], "id")
        if "version" in doc:
            self._version(doc["version"], "version")
        self._text(doc, "title", "")
        self._text(doc, "description", "")
        if "execution_mode" in doc and doc["execution_mode"] not in EXECUTION_MODES:
            mode = doc["execution_mode"]
            modes = ", ".join(EXECUTION_MODES)
            hint = _did_you_mean(mode, EXECUTION_MODES) or f"use one of: {modes}"
            self.error("execution_mode", f"unknown execution mode {_show(mode)}", hint)
        if "timeout_seconds" in doc:
            self._duration(doc["timeout_seconds"], "timeout_seconds")
        if "context" in doc:
            self._expr(doc["context"], "context", object_literal=True)
        if "schedules" in doc:
            self._schedules(doc["schedules"])
        has_states = self._require(doc, "states", "", "an object: state name -> state")
        if has_states and self._object(doc["states"], "states", "an object: state name -> state"):
            if not doc["states"]:
                self.error("states", "'states' is empty",
                           "define at least the state named in 'start_at'")
            for name, state in doc["states"].items():
                self._state(name, state, _join("states", name))
        if self._require(doc, "start_at", "", "the name of the first state"):
            self._state_ref(doc["start_at"], "start_at")

    def _contracts(self, doc: dict) -> None:
        """`input`, `inputs`, `key` and `attributes` (machines/contracts.py)."""
        checks: list[Callable[[], object]] = []
        if "input" in doc:
            checks.append(functools.partial(contracts.input_schema, doc["input"], "input"))
        if "inputs" in doc and self._object(doc["inputs"], "inputs",
                                            "an object: action -> input"):
            actions = self._action_names()
            for name, spec in doc["inputs"].items():
                where = _join("inputs", name)
                if name not in actions:
                    hint = _did_you_mean(name, actions) or (
                        "actions: " + (", ".join(sorted(actions)) or "none"))
                    self.error(where, f"no transition takes the action '{name}'", hint)
                checks.append(functools.partial(contracts.input_schema, spec, where))
        if "key" in doc:
            checks.append(functools.partial(contracts.key_of, doc["key"], "key"))
        if "attributes" in doc:
            checks.append(functools.partial(self._attributes, doc["attributes"]))
        for run in checks:
            try:
                run()
            except contracts.ContractError as exc:
                for path, message, advice in exc.problems:
                    self.error(path, message, advice)

    def _attributes(self, spec: Any) -> None:
        for name, _, value in contracts.attributes_of(spec, "attributes"):
            self._expr(value, f"attributes.{name}" + (
                ".value" if isinstance(spec[name], dict) else ""))

    def _action_names(self) -> set[str]:
        names: set[str] = set()
        for _, _, transitions in self._action_lists():
            for _, t in transitions:
                on = t.get("on")
                names.update([on] if isinstance(on, str) else
                             [n for n in on if isinstance(n, str)] if isinstance(on, list)
                             else [])
        return names

    def _state(self, name: Any, state: Any, path: str) -> None:
        if isinstance(name, str) and not name.strip():
            self.error(path, "a state name must not be empty")
        if not self._object(state, path, "an object with 'actions' or 'return'"):
            return
        self._unknown_keys(state, path, STATE_KEYS, "state")
        self._text(state, "label", path)
        self._text(state, "description", path)
        if "actions" in state and "return" in state:
            self.error(path, f"state '{name}' has both 'actions' and 'return'",
                       "a state with 'return' is terminal: keep one of them")
        elif "actions" not in state and "return" not in state:
            self.error(path, f"state '{name}' has neither 'actions' nor 'return'",
                       "add 'actions' to move on from it, or 'return' to finish there")
        if "return" in state:
            self._expr(state["return"], _join(path, "return"))
        if "actions" in state:
            self._actions(state["actions"], _join(path, "actions"))

    def _actions(self, actions: Any, path: str) -> None:
        if not isinstance(actions, list):
            self.error(path, f"'actions' must be a list of transitions, not {_kind(actions)}")
            return
        if not actions:
            self.error(path, "'actions' is empty",
                       "list at least one transition, or use 'return' to make the state terminal")
        first_use: dict[str, int] = {}
        for index, transition in enumerate(actions):
            item = f"{path}[{index}]"
            self._transition(transition, item)
            tid = transition.get("id") if isinstance(transition, dict) else None
            if isinstance(tid, str):
                if tid in first_use:
                    self.error(_join(item, "id"), f"duplicate transition id '{tid}'",
                               f"actions[{first_use[tid]}] already uses it; "
                               "ids are unique within a state")
                first_use.setdefault(tid, index)

    def _transition(self, t: Any, path: str) -> None:
        if not self._object(t, path, "an object (a transition with an 'id')"):
            return
        self._unknown_keys(t, path, TRANSITION_KEYS, "transition")
        if self._require(t, "id", path, "name the transition, e.g. 'submit'"):
            self._name(t["id"], _join(path, "id"), "a transition id")
        self._text(t, "label", path)
        self._combinations(t, path)
        if "on" in t:
            self._on(t["on"], _join(path, "on"))
        for key in ("when", "if"):
            if key in t:
                self._expr(t[key], _join(path, key))
        if "state" in t:
            self._state_ref(t["state"], _join(path, "state"))
        if "context" in t:
            self._expr(t["context"], _join(path, "context"), object_literal=True)
        if "assign" in t:
            self._assign(t["assign"], _join(path, "assign"))
        for key in ("then", "else"):
            if key in t:
                self._branch(t[key], _join(path, key))
        if "wait" in t:
            self._wait(t["wait"], _join(path, "wait"))
        if "after" in t:
            self._literal_duration(t["after"], _join(path, "after"))
        if "invoke" in t:
            self._invoke(t["invoke"], _join(path, "invoke"))

    def _combinations(self, t: dict, path: str) -> None:
        """The "Allowed combinations" of docs/language.md, each conflict reported once."""
        known = [key for key in t if key in TRANSITION_KEYS]
        if "invoke" in t:
            for key in known:
                if key not in WITH_INVOKE:
                    self.error(_join(path, key), f"'{key}' cannot be used with 'invoke'",
                               "put what happens next in 'invoke.success' / 'invoke.error'")
            if "after" in t and "on" in t:  # a timer that starts work fires by itself
                self.error(_join(path, "on"), "'on' cannot be used with 'after'",
                           "an 'after' timer fires by itself; use another transition")
            return
        if "if" in t:
            for key in known:
                if key not in WITH_IF:
                    self.error(_join(path, key), f"'{key}' cannot be used with 'if'",
                               "put 'state', 'context' or 'assign' in 'then' / 'else'")
            if "then" not in t:
                self.error(_join(path, "then"), "'if' needs a 'then' branch",
                           "then: {state: ...} is taken when the condition is true")
            return
        if "wait" in t and "on" in t:
            self.error(_join(path, "on"), "'on' cannot be used with 'wait'",
                       "a 'wait' transition fires by itself; use another transition for the action")
        self._after_combinations(t, path)
        for key in ("then", "else"):
            if key in t:
                self.error(_join(path, key), f"'{key}' can only be used with 'if'")
        if "context" in t and "assign" in t:
            self.error(path, "use either 'context' (replaces the context) or 'assign' "
                       "(merges keys into it), not both")

    def _on(self, value: Any, path: str) -> None:
        if isinstance(value, list) and value:
            for index, name in enumerate(value):
                self._name(name, f"{path}[{index}]", "an action name")
        elif not (isinstance(value, str) and value.strip()):
            self.error(path, "'on' must be an action name or a non-empty list of action names",
                       "leave 'on' out to make the transition automatic")

    def _wait(self, value: Any, path: str) -> None:
        if not self._object(value, path, "an object: {seconds: N} or {until: expression}"):
            return
        self._unknown_keys(value, path, WAIT_KEYS, "'wait'")
        given = [key for key in WAIT_KEYS if key in value]
        if len(given) != 1:
            self.error(path, "'wait' needs exactly one of 'seconds' or 'until'")
        if "seconds" in value:
            seconds = value["seconds"]
            if isinstance(seconds, str) and durations.looks_like(seconds):
                self._literal_duration(seconds, _join(path, "seconds"))
            elif isinstance(seconds, str):
                self._expr(seconds, _join(path, "seconds"))
            elif not (_is_number(seconds) and seconds >= 0):
                self.error(_join(path, "seconds"), "'seconds' must be a number >= 0 or an "
                           f"expression, not {_show(seconds)}")
            elif seconds > MAX_DURATION_SECONDS:
                self.error(_join(path, "seconds"), "'seconds' must be at most "
                           f"{MAX_DURATION_SECONDS:,} (10 years), not {_show(seconds)}")
        if "until" in value:
            until = value["until"]
            if isinstance(until, str):
                self._expr(until, _join(path, "until"))
            elif not _is_number(until):
                self.error(_join(path, "until"),
                           f"'until' must be an expression or epoch seconds, not {_show(until)}",
                           "an ISO-8601 time is a string expression: \"'2030-01-01T00:00:00Z'\"")
            elif not 0 <= until <= MAX_EPOCH_SECONDS:
                self.error(_join(path, "until"),
                           "'until' must be epoch seconds from 0 to 9999-12-31 "
                           f"({MAX_EPOCH_SECONDS}), not {_show(until)}",
                           "an ISO-8601 time is a string expression: \"'2030-01-01T00:00:00Z'\"")

    def _invoke(self, value: Any, path: str) -> None:
        if not self._object(value, path, "an object with 'call', 'machine' or 'trigger'"):
            return
        self._unknown_keys(value, path, INVOKE_KEYS, "'invoke'")
        kinds = [key for key in INVOKE_KINDS if key in value]
        if len(kinds) != 1:
            given = f", not {' and '.join(repr(k) for k in kinds)}" if kinds else ""
            self.error(path, "'invoke' needs exactly one of 'call', 'machine', 'trigger', "
                       f"'parallel' or 'map'{given}")
        if "call" in value:
            self._expr(value["call"], _join(path, "call"))
        if "machine" in value:
            self._machine_ref(value["machine"], _join(path, "machine"))
        if "trigger" in value:
            self._trigger(value["trigger"], _join(path, "trigger"))
        if "input" in value:
            self._expr(value["input"], _join(path, "input"))
            if kinds and "machine" not in kinds:
                hint = ("put 'input' inside 'trigger'" if "trigger" in kinds
                        else "give each branch its own 'input'" if "parallel" in kinds
                        else "put 'input' inside 'map'" if "map" in kinds
                        else "a 'call' reads ctx and input directly")
                self.error(_join(path, "input"), "'input' is only used with 'machine'", hint)
        if "async" in value:
            if not isinstance(value["async"], bool):
                self.error(_join(path, "async"),
                           f"'async' must be true or false, not {_show(value['async'])}")
            if "call" in kinds or any(kind in GROUP_KINDS for kind in kinds):
                self.error(_join(path, "async"), "'async' is only used with 'machine' or 'trigger'")
        if "success" in value:
            self._branch(value["success"], _join(path, "success"))
        if "error" in value:
            self._by_type(value["error"], _join(path, "error"), self._error_branch,
                          "an error branch, or a list of them")
        if "ok_if" in value:
            self._expr(value["ok_if"], _join(path, "ok_if"))
        if "retry" in value:
            self._by_type(value["retry"], _join(path, "retry"), self._retry,
                          "a retry policy, or a list of them")
        if "timeout_seconds" in value:
            self._duration(value["timeout_seconds"], _join(path, "timeout_seconds"))
        if "non_retryable" in value:
            self._error_types(value["non_retryable"], _join(path, "non_retryable"))
        self._group(value, path, kinds)

    # schedules ---------------------------------------------------------------------------
    def _schedules(self, value: Any) -> None:
        if not isinstance(value, list):
            self.error("schedules", f"'schedules' must be a list, not {_kind(value)}",
                       "- {id: nightly, cron: '0 2 * * *', time_zone: Europe/Paris}")
            return
        if len(value) > MAX_SCHEDULES:
            self.error("schedules", f"a machine has at most {MAX_SCHEDULES} schedules, "
                       f"not {len(value)}")
        seen: set[str] = set()
        for index, schedule in enumerate(value):
            path = f"schedules[{index}]"
            if not self._object(schedule, path, "an object: {id, cron or every, time_zone, "
                                "input}"):
                continue
            self._unknown_keys(schedule, path, SCHEDULE_KEYS, "a schedule's")
            name = schedule.get("id")
            if self._require(schedule, "id", path, "a name for the schedule, e.g. 'nightly'"):
                if not (isinstance(name, str) and _BRANCH_NAME_RE.fullmatch(name)):
                    self.error(_join(path, "id"), f"{_show(name)} is not a valid schedule id "
                               f"(pattern {BRANCH_NAME_PATTERN})")
                elif name in seen:
                    self.error(_join(path, "id"), f"duplicate schedule id '{name}'")
                else:
                    seen.add(name)
            self._schedule_timing(schedule, path)
            if "input" in schedule and not isinstance(schedule["input"], dict):
                self.error(_join(path, "input"), "'input' must be an object (the start "
                           f"input, given as it is), not {_kind(schedule['input'])}")

    def _schedule_timing(self, schedule: dict, path: str) -> None:
        given = [key for key in ("cron", "every") if key in schedule]
        if len(given) != 1:
            self.error(path, "a schedule needs exactly one of 'cron' or 'every'",
                       "cron: '0 9 * * 1-5' (at 09:00 on weekdays) or every: 3600 (seconds)")
        cron = schedule.get("cron")
        if "cron" in schedule:
            hint = "five fields: minute hour day-of-month month day-of-week"
            if not isinstance(cron, str):
                self.error(_join(path, "cron"), f"'cron' must be a string, not {_kind(cron)}",
                           hint)
            elif problem := cron_problem(cron):
                self.error(_join(path, "cron"), f"'cron' {_show(cron)}: {problem}", hint)
        if "every" in schedule:
            path_every = _join(path, "every")
            try:
                every = durations.seconds(schedule["every"])
            except durations.DurationError as exc:
                self.error(path_every, f"'every': {exc}")
            else:
                if every < MIN_EVERY_SECONDS:
                    self.error(path_every, f"'every' must be at least {MIN_EVERY_SECONDS} "
                               f"seconds, not {_show(schedule['every'])}")
        if "time_zone" in schedule:
            zone = schedule["time_zone"]
            problem = (zone_problem(zone) if isinstance(zone, str) and zone
                       else f"'time_zone' must be a zone name, not {_show(zone)}")
            if problem:
                self.error(_join(path, "time_zone"), problem,
                           "an IANA name such as 'Europe/Amsterdam' or 'UTC'")

    # parallel and map ----------------------------------------------------------------------
    def _group(self, value: dict, path: str, kinds: list[str]) -> None:
        """`parallel`/`map` and the keys only they use: `join`, `on_failure`."""
        grouped = [kind for kind in kinds if kind in GROUP_KINDS]
        if not grouped:
            for key in ("join", "on_failure"):
                if key in value:
                    self.error(_join(path, key),
                               f"'{key}' is only used with 'parallel' or 'map'")
            return
        if "parallel" in value:
            self._parallel(value["parallel"], _join(path, "parallel"))
        if "map" in value:
            self._map(value["map"], _join(path, "map"))
        if "join" in value:
            self._join_rule(value["join"], value.get("parallel"), _join(path, "join"))
        if "on_failure" in value and value["on_failure"] not in ON_FAILURE:
            self.error(_join(path, "on_failure"),
                       f"'on_failure' must be 'fail_fast' or 'collect', not "
                       f"{_show(value['on_failure'])}")

    def _parallel(self, value: Any, path: str) -> None:
        if not self._object(value, path, "an object: branch name -> {machine, input}"):
            return
        if not value:
            self.error(path, "'parallel' needs at least one branch",
                       "name each branch: {identity: {machine: check-identity}}")
        if len(value) > MAX_PARALLEL_BRANCHES:
            self.error(path, f"'parallel' has {len(value)} branches; at most "
                       f"{MAX_PARALLEL_BRANCHES}", "use 'map' for many children of one machine")
        for name, branch in value.items():
            branch_path = _join(path, name)
            if not (isinstance(name, str) and _BRANCH_NAME_RE.fullmatch(name)):
                self.error(branch_path, f"{_show(name)} is not a valid branch name (pattern "
                           f"{BRANCH_NAME_PATTERN})", "letters, digits, '_' and '-'")
            if not self._object(branch, branch_path, "an object: {machine, input}"):
                continue
            self._unknown_keys(branch, branch_path, PARALLEL_BRANCH_KEYS, "a branch's")
            if self._require(branch, "machine", branch_path, "the machine this branch runs"):
                self._machine_ref(branch["machine"], _join(branch_path, "machine"))
            if "input" in branch:
                self._expr(branch["input"], _join(branch_path, "input"))

    def _map(self, value: Any, path: str) -> None:
        if not self._object(value, path, "an object: {items, machine, input, max_concurrency}"):
            return
        self._unknown_keys(value, path, MAP_KEYS, "'map'")
        if self._require(value, "items", path, "an expression giving the list to map over"):
            self._expr(value["items"], _join(path, "items"))
            if not isinstance(value["items"], (str, list)):
                self.error(_join(path, "items"), "'items' must be an expression or a list, "
                           f"not {_kind(value['items'])}")
        if self._require(value, "machine", path, "the machine each item runs"):
            self._machine_ref(value["machine"], _join(path, "machine"))
        if "input" in value:
            self._expr(value["input"], _join(path, "input"))
        if "max_concurrency" in value:
            self._number(value["max_concurrency"], _join(path, "max_concurrency"),
                         low=1, high=MAX_CONCURRENCY, integer=True)

    def _join_rule(self, value: Any, parallel: Any, path: str) -> None:
        if value in JOINS:
            return
        if not isinstance(value, dict) or set(value) != {"at_least"}:
            self.error(path, f"'join' must be 'all', 'any' or {{at_least: N}}, not "
                       f"{_show(value)}")
            return
        at_least = value["at_least"]
        self._number(at_least, _join(path, "at_least"), low=1, high=MAP_MAX_ITEMS,
                     integer=True)
        if isinstance(parallel, dict) and _is_integer(at_least) and at_least > len(parallel):
            self.error(_join(path, "at_least"), f"'at_least' is {at_least} but 'parallel' has "
                       f"only {len(parallel)} branches")

    def _machine_ref(self, value: Any, path: str) -> None:
        if isinstance(value, str):
            self._machine_id(value, path)
        elif isinstance(value, dict):
            self._unknown_keys(value, path, MACHINE_REF_KEYS, "'machine'")
            if self._require(value, "id", path, "the child machine's id"):
                self._machine_id(value["id"], _join(path, "id"))
            if "version" in value:
                self._version(value["version"], _join(path, "version"))
        else:
            self.error(path, "'machine' must be a machine id or {id, version}, "
                       f"not {_kind(value)}")

    def _trigger(self, value: Any, path: str) -> None:
        if not self._object(value, path, "an object: {execution, action, input}"):
            return
        self._unknown_keys(value, path, TRIGGER_KEYS, "'trigger'")
        if self._require(value, "execution", path, "an expression giving the execution id"):
            self._expr(value["execution"], _join(path, "execution"))
        if self._require(value, "action", path, "the action name to send"):
            self._name(value["action"], _join(path, "action"), "an action name")
        if "input" in value:
            self._expr(value["input"], _join(path, "input"))

    def _retry(self, value: Any, path: str) -> None:
        if not self._object(value, path, "an object: {max_attempts, delay_seconds, backoff}"):
            return
        self._unknown_keys(value, path, RETRY_KEYS, "'retry'")
        if self._require(value, "max_attempts", path, "attempts in all, the first one included"):
            self._number(value["max_attempts"], _join(path, "max_attempts"),
                         low=1, high=100, integer=True)
        for key in ("delay_seconds", "max_delay_seconds"):
            if isinstance(value.get(key), str):
                self._literal_duration(value[key], _join(path, key), most=86400)
            elif key in value:
                self._number(value[key], _join(path, key), low=0, high=86400)
        if "backoff" in value:
            self._number(value["backoff"], _join(path, "backoff"), low=1, high=10)
        if "jitter" in value:
            self._number(value["jitter"], _join(path, "jitter"), low=0, high=1)
        if "on" in value:
            self._error_types(value["on"], _join(path, "on"))

    # Errors by type, timers and durations (docs/language.md) ------------------------------
    def _by_type(self, value: Any, path: str, check_one: Callable[[Any, str], None],
                 what: str) -> None:
        """`retry` and `error`: one object, or a list tried in order, where an item without
        `on` catches every type and so must come last."""
        if not isinstance(value, list):
            check_one(value, path)
            return
        if not value:
            self.error(path, f"'{_field(path)}' must be {what}, not an empty list")
        for index, item in enumerate(value):
            item_path = f"{path}[{index}]"
            check_one(item, item_path)
            if isinstance(item, dict) and "on" not in item and index < len(value) - 1:
                self.error(item_path, "this item has no 'on', so it catches every error type "
                           "and the items after it are never used",
                           "move it last, or give it 'on: [types]'")

    def _error_branch(self, value: Any, path: str) -> None:
        if not self._object(value, path, "an object with 'on', 'state', 'context' or 'assign'"):
            return
        self._unknown_keys(value, path, ERROR_BRANCH_KEYS, "an error branch")
        if "on" in value:
            self._error_types(value["on"], _join(path, "on"))
        if "state" in value:
            self._state_ref(value["state"], _join(path, "state"))
        self._update(value, path)

    def _error_types(self, value: Any, path: str) -> None:
        """An error type (`timeout`, `card_declined`, `http_status:4xx`, ...) or a non-empty
        list of them."""
        items = value if isinstance(value, list) else [value]
        if not items:
            self.error(path, f"'{_field(path)}' must be an error type or a non-empty list of "
                       "them")
        for index, item in enumerate(items):
            where = f"{path}[{index}]" if isinstance(value, list) else path
            if not (isinstance(item, str) and _ERROR_MATCH_RE.fullmatch(item)):
                self.error(where, f"{_show(item)} is not an error type",
                           "lowercase letters, digits, '_', '.', '-', e.g. 'timeout', "
                           "'card_declined', 'http_status:4xx', 'child_failed:card_declined'")
                continue
            kind, _, detail = item.partition(":")
            if kind == "http_status" and detail and not re.fullmatch(r"[1-5][0-9x]{2}", detail):
                self.error(where, f"'{detail}' is not an HTTP status or class of them",
                           "write a code (404) or a class (4xx)")
            elif kind == "expression_error" and detail and detail not in EXPRESSION_KINDS:
                self.error(where, f"'{detail}' is not how an expression fails",
                           f"one of: {', '.join(EXPRESSION_KINDS)}")
            elif detail and kind not in ("http_status", "child_failed", "expression_error"):
                self.error(where, f"'{kind}:{detail}': only 'http_status', 'child_failed' and "
                           "'expression_error' take a detail after ':'")
            close = difflib.get_close_matches(kind, RUNTIME_ERROR_TYPES, n=1, cutoff=0.8)
            if close and close[0] != kind:
                self.warn(where, f"error type '{kind}' is not one the runtime gives; did you "
                          f"mean '{close[0]}'?", "types of your own, raised with fail(), "
                          "are fine")

    def _after_combinations(self, t: dict, path: str) -> None:
        if "after" not in t:
            return
        for key in ("on", "wait", "if"):
            if key in t:
                self.error(_join(path, key), f"'{key}' cannot be used with 'after'",
                           "an 'after' timer fires by itself; use another transition")

    def _literal_duration(self, value: Any, path: str, *, most: float | None = None,
                          above_zero: bool = False) -> None:
        """A duration written as a number of seconds or a text ('P1D', '90s')."""
        try:
            seconds = durations.seconds(value)
        except durations.DurationError as exc:
            self.error(path, f"'{_field(path)}': {exc}")
            return
        if above_zero and seconds <= 0:
            self.error(path, f"'{_field(path)}' must be more than 0 seconds, not {_show(value)}")
        if most is not None and seconds > most:
            self.error(path, f"'{_field(path)}' must be at most {most:g} seconds, "
                       f"not {_show(value)}")

    # Warnings ----------------------------------------------------------------------------
    def _action_lists(self):
        """(state name, path, transitions that are objects) for every state with actions."""
        for name, state in self.states.items():
            if isinstance(state, dict) and isinstance(state.get("actions"), list):
                items = [(i, t) for i, t in enumerate(state["actions"]) if isinstance(t, dict)]
                yield name, f"states.{name}.actions", items

    def _warn_unreachable(self) -> None:
        start = self.document.get("start_at")
        if not (isinstance(start, str) and start in self.states):
            return
        targets: dict[str, set[str]] = {name: set() for name in self.states}
        for name, _, transitions in self._action_lists():
            for _, t in transitions:
                targets[name].update(_targets(t))
        reached, todo = {start}, [start]
        while todo:
            for target in targets[todo.pop()]:
                if target in self.states and target not in reached:
                    reached.add(target)
                    todo.append(target)
        for name in self.states:
            if name not in reached:
                self.warn(f"states.{name}", f"state '{name}' cannot be reached from '{start}'",
                          "add a transition that leads to it, or remove it")

    def _warn_shadowed(self, name: str, transitions: list) -> None:
        blocker = next(((i, t) for i, t in transitions if _unconditional(t)), None)
        if blocker is None:
            return
        b_index, b = blocker
        b_id = b.get("id")
        # Before the blocker, only an invoke or a wait lets the execution pause in this state.
        can_pause = any("invoke" in t or "wait" in t for i, t in transitions if i <= b_index)
        for index, t in transitions:
            path = f"states.{name}.actions[{index}]"
            if index > b_index:
                self.warn(path, f"transition '{t.get('id')}' can never be taken: "
                          f"'{b_id}' (actions[{b_index}]) before it is automatic and unconditional",
                          f"move it above '{b_id}', or give '{b_id}' a 'when'")
            elif ("on" in t or "after" in t) and not can_pause:
                self.warn(path, f"{'timer' if 'after' in t else 'action'} '{t.get('id')}' can "
                          "never be taken: the execution never "
                          f"waits in '{name}' because '{b_id}' (actions[{b_index}]) is automatic "
                          "and unconditional", f"give '{b_id}' a 'when' or a 'wait'")

    def _warn_stuck(self, name: str, transitions: list) -> None:
        if not transitions or any("on" in t for _, t in transitions):
            return
        if not any(_always_takeable(t) for _, t in transitions):
            self.warn(f"states.{name}", f"state '{name}' can get stuck: it has no 'on' transition "
                      "and every automatic transition is guarded",
                      "add a last transition without 'when' as a fallback, or one with 'on'")

    def _warn_unknown_machines(self) -> None:
        if self.machine_exists is None:
            return
        for _, path, transitions in self._action_lists():
            for index, t in transitions:
                invoke = t.get("invoke")
                for ref, child_path in _machine_refs(invoke, f"{path}[{index}].invoke"):
                    self._warn_unknown_machine(ref, child_path)

    def _warn_unknown_machine(self, ref: Any, child_path: str) -> None:
        assert self.machine_exists is not None
        if isinstance(ref, dict):
            ref, child_path = ref.get("id"), child_path + ".id"
        if (isinstance(ref, str) and _ID_RE.fullmatch(ref)
                and ref != self.document.get("id") and not self.machine_exists(ref)):
            self.warn(child_path, f"machine '{ref}' does not exist yet",
                      "save it before an execution reaches this transition")


def _machine_refs(invoke: Any, path: str) -> list[tuple[Any, str]]:
    """(machine reference, its path) of every child an invoke may start."""
    if not isinstance(invoke, dict):
        return []
    refs = [(invoke["machine"], f"{path}.machine")] if "machine" in invoke else []
    parallel, mapped = invoke.get("parallel"), invoke.get("map")
    if isinstance(parallel, dict):
        refs += [(branch["machine"], f"{path}.parallel.{name}.machine")
                 for name, branch in parallel.items()
                 if isinstance(branch, dict) and "machine" in branch]
    if isinstance(mapped, dict) and "machine" in mapped:
        refs.append((mapped["machine"], f"{path}.map.machine"))
    return refs


def _targets(t: dict) -> list[str]:
    """Every state a transition can lead to, its outcome branches included."""
    branches = [t.get("then"), t.get("else")]
    if isinstance(t.get("invoke"), dict):
        error = t["invoke"].get("error")
        branches += [t["invoke"].get("success"), *(error if isinstance(error, list) else [error])]
    found = [t.get("state")] + [b.get("state") for b in branches if isinstance(b, dict)]
    return [target for target in found if isinstance(target, str)]


def _always_takeable(t: dict) -> bool:
    """Automatic, unguarded, and not an `if` that may fall through (one without `else`)."""
    return "on" not in t and "when" not in t and ("if" not in t or "else" in t)


def _unconditional(t: dict) -> bool:
    """Taken as soon as the state is entered, so nothing after it is ever tried."""
    return _always_takeable(t) and "wait" not in t and "after" not in t


# Building --------------------------------------------------------------------------------
def _construct(document: dict) -> Machine:
    doc = copy.deepcopy(document)  # the Machine must not change when the caller's dict does
    return Machine(
        id=doc["id"],
        start_at=doc["start_at"],
        states={name: _build_state(name, state) for name, state in doc["states"].items()},
        version=doc.get("version"),
        title=doc.get("title"),
        description=doc.get("description"),
        execution_mode=doc.get("execution_mode", DEFAULT_EXECUTION_MODE),
        timeout_seconds=durations.seconds(doc.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)),
        context=_expr_of(doc.get("context", {}), "context"),
        schedules=tuple(Schedule(id=s["id"], cron=s.get("cron"),
                                 every=durations.seconds(s["every"]) if "every" in s else None,
                                 time_zone=s.get("time_zone", "UTC"), input=s.get("input", {}))
                        for s in doc.get("schedules", ())),
        **_build_contracts(doc),
    )


def _build_contracts(doc: dict) -> dict:
    """The Machine fields of `input`, `inputs`, `key` and `attributes` (a valid document)."""
    built: dict[str, Any] = {}
    if "input" in doc:
        built["input_schema"] = contracts.input_schema(doc["input"], "input")
    if "inputs" in doc:
        built["action_inputs"] = {name: contracts.input_schema(spec, f"inputs.{name}")
                                  for name, spec in doc["inputs"].items()}
    if "key" in doc:
        built["key"] = contracts.key_of(doc["key"], "key")
    if "attributes" in doc:
        built["attributes"] = tuple(
            contracts.Attribute(name, kind, _expr_of(
                value, f"attributes.{name}" + (".value" if isinstance(doc["attributes"][name],
                                                                     dict) else "")))
            for name, kind, value in contracts.attributes_of(doc["attributes"], "attributes"))
    return built


def _expr_of(value: Any, path: str) -> Expr:
    return Expr(path, source=value) if isinstance(value, str) else Expr(path, literal=value)


def _optional_expr(obj: dict, key: str, path: str) -> Expr | None:
    return _expr_of(obj[key], _join(path, key)) if key in obj else None


def _build_state(name: str, state: dict) -> State:
    path = f"states.{name}"
    if "return" in state:
        return State(name, state.get("label"), state.get("description"),
                     returns=_expr_of(state["return"], f"{path}.return"), is_terminal=True)
    transitions = tuple(
        _build_transition(t, f"{path}.actions[{i}]") for i, t in enumerate(state["actions"])
    )
    return State(name, state.get("label"), state.get("description"), transitions=transitions)


def _build_transition(t: dict, path: str) -> Transition:
    on = t.get("on", ())
    decision = None
    if "if" in t:
        otherwise = _build_branch(t["else"], f"{path}.else") if "else" in t else None
        then = _build_branch(t["then"], f"{path}.then")
        decision = Decision(_expr_of(t["if"], f"{path}.if"), then, otherwise)
    wait = t.get("wait")
    after = t.get("after")
    return Transition(
        id=t["id"],
        path=path,
        label=t.get("label"),
        on=(on,) if isinstance(on, str) else tuple(on),
        when=_optional_expr(t, "when", path),
        target=t.get("state"),
        update=_build_update(t, path),
        wait=_build_wait(wait, f"{path}.wait") if wait is not None else None,
        invoke=_build_invoke(t["invoke"], f"{path}.invoke") if "invoke" in t else None,
        decision=decision,
        after=After(durations.seconds(after), str(after)) if after is not None else None,
    )


def _build_wait(wait: dict, path: str) -> Wait:
    seconds = wait.get("seconds")
    if isinstance(seconds, str) and durations.looks_like(seconds):
        literal = Expr(f"{path}.seconds", literal=durations.seconds(seconds))
        return Wait(literal, written=seconds)
    return Wait(_optional_expr(wait, "seconds", path), _optional_expr(wait, "until", path))


def _build_update(obj: dict, path: str) -> Update:
    assign = tuple(
        (key, _expr_of(value, f"{path}.assign.{key}"))
        for key, value in obj.get("assign", {}).items()
    )
    return Update(context=_optional_expr(obj, "context", path), assign=assign)


def _build_branch(branch: dict, path: str) -> Branch:
    on = branch.get("on", ())
    return Branch(state=branch.get("state"), update=_build_update(branch, path),
                  on=(on,) if isinstance(on, str) else tuple(on))


def _build_retry(retry: dict) -> Retry:
    on = retry.get("on", ())
    values = {key: retry[key] for key in ("max_attempts", "backoff", "jitter") if key in retry}
    for key in ("delay_seconds", "max_delay_seconds"):
        if key in retry:
            values[key] = durations.seconds(retry[key])
    return Retry(on=(on,) if isinstance(on, str) else tuple(on), **values)


def _listed(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _optional_branch(obj: dict, key: str, path: str) -> Branch | None:
    return _build_branch(obj[key], f"{path}.{key}") if key in obj else None


def _build_invoke(invoke: dict, path: str) -> Invoke:
    kind = next(key for key in INVOKE_KINDS if key in invoke)
    machine = invoke.get("machine")
    if isinstance(machine, dict):
        machine_id, machine_version = machine["id"], machine.get("version")
    else:
        machine_id, machine_version = machine, None
    trigger = invoke.get("trigger", {})
    trigger_path = f"{path}.trigger"
    retry = invoke.get("retry")
    return Invoke(
        kind=kind,
        call=_optional_expr(invoke, "call", path),
        machine_id=machine_id,
        machine_version=machine_version,
        input=_optional_expr(trigger, "input", trigger_path) if kind == "trigger"
        else _optional_expr(invoke, "input", path),
        execution=_optional_expr(trigger, "execution", trigger_path),
        action=trigger.get("action"),
        is_async=invoke.get("async", False),
        success=_optional_branch(invoke, "success", path),
        errors=tuple(
            _build_branch(branch, f"{path}.error" + (f"[{i}]" if isinstance(
                invoke["error"], list) else ""))
            for i, branch in enumerate(_listed(invoke.get("error", [])))),
        ok_if=_optional_expr(invoke, "ok_if", path),
        retries=tuple(_build_retry(policy) for policy in _listed(retry or [])),
        timeout_seconds=(durations.seconds(invoke["timeout_seconds"])
                         if "timeout_seconds" in invoke else None),
        non_retryable=tuple(_listed(invoke.get("non_retryable", []))),
        group=_build_group(invoke, path) if kind in GROUP_KINDS else None,
    )


def _reference(machine: str | dict) -> tuple[str, int | None]:
    """(id, version) of a machine reference: an id, or {id, version}."""
    if isinstance(machine, dict):
        return machine["id"], machine.get("version")
    return machine, None


def _build_group(invoke: dict, path: str) -> Group:
    join = invoke.get("join", "all")
    common = {"join": join["at_least"] if isinstance(join, dict) else join,
              "on_failure": invoke.get("on_failure", "fail_fast")}
    if "parallel" in invoke:
        return Group(kind="parallel", branches=tuple(
            GroupBranch(name, *_reference(branch["machine"]),
                        input=_optional_expr(branch, "input", f"{path}.parallel.{name}"))
            for name, branch in invoke["parallel"].items()), **common)
    mapped = invoke["map"]
    machine_id, machine_version = _reference(mapped["machine"])
    return Group(kind="map", items=_expr_of(mapped["items"], f"{path}.map.items"),
                 machine_id=machine_id, machine_version=machine_version,
                 input=_optional_expr(mapped, "input", f"{path}.map"),
                 max_concurrency=mapped.get("max_concurrency"), **common)
