"""Typed, immutable objects of a validated machine definition.

These are what the language module produces and the engine consumes. They carry no
behaviour beyond simple derived facts, and no Django: the engine stays pure.
Every expression keeps its document path (``states.cart.actions[0].when``) so errors
raised while evaluating it can say where it came from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

EXECUTION_MODES = ("sync", "async-throughput", "async-latency")
DEFAULT_EXECUTION_MODE = "async-throughput"
DEFAULT_TIMEOUT_SECONDS = 30
MAP_MAX_ITEMS = 1000  # children one map invoke may start


@dataclass(frozen=True)
class Expr:
    """An expression position: Python source run in the sandbox, or a JSON literal."""

    path: str
    source: str | None = None  # Python source when this is code
    literal: Any = None  # the JSON value when it is not

    @property
    def is_code(self) -> bool:
        return self.source is not None

    def brief(self, limit: int = 60) -> str:
        """A one-line rendering for diagrams and the timeline."""
        import json

        text = self.source if self.is_code and self.source is not None \
            else json.dumps(self.literal)
        text = " ".join(text.split())
        return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Update:
    """How a step changes the context: replace it (`context`) or merge keys (`assign`)."""

    context: Expr | None = None
    assign: tuple[tuple[str, Expr], ...] = ()

    @property
    def is_empty(self) -> bool:
        return self.context is None and not self.assign


@dataclass(frozen=True)
class Branch:
    """The `then`/`else` of a decision, or the `success`/`error` of an invoke."""

    state: str | None = None  # None: stay in the current state
    update: Update = field(default_factory=Update)
    on: tuple[str, ...] = ()  # an error branch: the error types it catches (empty: any)


@dataclass(frozen=True)
class Wait:
    seconds: Expr | None = None
    until: Expr | None = None
    written: str | None = None  # `seconds` as the author wrote a duration text ("P1D")


@dataclass(frozen=True)
class After:
    """A state timer (`after:`): armed when the execution pauses in the state, kept while
    it stays there, canceled when it leaves."""

    seconds: float
    written: str  # as the author wrote it ("P3D", "90s", "3600"), for diagrams


@dataclass(frozen=True)
class Retry:
    max_attempts: int = 1  # total attempts, the first one included
    delay_seconds: float = 1.0
    backoff: float = 2.0
    on: tuple[str, ...] = ()  # the error types this policy retries (empty: any)
    max_delay_seconds: float | None = None  # no wait longer than this
    jitter: float = 0.0  # 0..1: each wait is shortened by up to this fraction, at random

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before attempt number `attempt` (2, 3, ...), before jitter."""
        try:
            delay = self.delay_seconds * (self.backoff ** max(0, attempt - 2))
        except OverflowError:
            delay = float("inf")
        if self.max_delay_seconds is not None:
            delay = min(delay, self.max_delay_seconds)
        return delay


@dataclass(frozen=True)
class GroupBranch:
    """One named branch of a `parallel` invoke: a child execution of `machine_id`."""

    key: str
    machine_id: str
    machine_version: int | None = None
    input: Expr | None = None


@dataclass(frozen=True)
class Group:
    """The children of a `parallel` or `map` invoke and how they are joined.

    `parallel` names its branches; `map` runs one child of `machine_id` per item of
    `items`, with `item` and `index` bound in `input`. `join` is "all", "any" or the
    number of branches that must finish ({at_least: N}); `on_failure` is "fail_fast"
    or "collect" (docs/language.md, "parallel and map")."""

    kind: str  # "parallel" | "map"
    branches: tuple[GroupBranch, ...] = ()  # parallel
    items: Expr | None = None  # map
    machine_id: str | None = None  # map
    machine_version: int | None = None  # map
    input: Expr | None = None  # map: evaluated per item
    max_concurrency: int | None = None  # None: every branch at once
    join: str | int = "all"  # "all" | "any" | at least this many
    on_failure: str = "fail_fast"  # "fail_fast" | "collect"


@dataclass(frozen=True)
class Invoke:
    """Work outside the execution. Exactly one of call / machine / trigger / parallel / map
    is set."""

    kind: str  # "call" | "machine" | "trigger" | "parallel" | "map"
    call: Expr | None = None
    machine_id: str | None = None
    machine_version: int | None = None  # None: the latest version when it starts
    input: Expr | None = None  # machine input, or the trigger's action input
    execution: Expr | None = None  # trigger: which execution
    action: str | None = None  # trigger: which action
    is_async: bool = False
    success: Branch | None = None
    errors: tuple[Branch, ...] = ()  # tried in order: the first whose `on` matches
    ok_if: Expr | None = None
    retries: tuple[Retry, ...] = ()  # tried in order: the first whose `on` matches
    timeout_seconds: float | None = None
    group: Group | None = None  # parallel and map
    non_retryable: tuple[str, ...] = ()  # error types that are never retried

    @property
    def error(self) -> Branch | None:
        """The first error branch (the only one in the original `error: {...}` form)."""
        return self.errors[0] if self.errors else None

    @property
    def retry(self) -> Retry | None:
        """The first retry policy (the only one in the original `retry: {...}` form)."""
        return self.retries[0] if self.retries else None


@dataclass(frozen=True)
class Decision:
    condition: Expr
    then: Branch
    otherwise: Branch | None = None


@dataclass(frozen=True)
class Transition:
    id: str
    path: str  # states.<name>.actions[i]
    label: str | None = None
    on: tuple[str, ...] = ()  # empty: automatic
    when: Expr | None = None
    target: str | None = None  # None: stay in the same state
    update: Update = field(default_factory=Update)
    wait: Wait | None = None
    invoke: Invoke | None = None
    decision: Decision | None = None
    after: After | None = None

    @property
    def is_automatic(self) -> bool:
        return not self.on

    @property
    def display(self) -> str:
        return self.label or self.id


@dataclass(frozen=True)
class State:
    name: str
    label: str | None = None
    description: str | None = None
    transitions: tuple[Transition, ...] = ()
    returns: Expr | None = None  # set on terminal states (the literal may be None)
    is_terminal: bool = False

    @property
    def display(self) -> str:
        return self.label or self.name

    @cached_property
    def automatic(self) -> tuple[Transition, ...]:
        """The transitions tried on entering the state, in order: no `on`, not a timer."""
        return tuple(t for t in self.transitions if not t.on and t.after is None)

    @cached_property
    def has_timers(self) -> bool:
        """Whether the state has `after` timers (computed once: the engine asks often)."""
        return any(t.after is not None for t in self.transitions)

    def transition(self, transition_id: str) -> Transition:
        for t in self.transitions:
            if t.id == transition_id:
                return t
        raise KeyError(transition_id)

    @property
    def action_names(self) -> tuple[str, ...]:
        """Action names accepted here, in declaration order, without repeats."""
        seen: dict[str, None] = {}
        for t in self.transitions:
            for name in t.on:
                seen.setdefault(name, None)
        return tuple(seen)


@dataclass(frozen=True)
class Key:
    """The business key (machines/contracts.py): a path into the start input (read when
    the execution is created) or into its context (read after each step that changes it),
    unique per machine among the executions not finished or canceled ("unfinished"), or
    "always"."""

    path: tuple[str | int, ...]  # ("order", "id") for input['order']['id']
    source: str
    unique: str = "unfinished"
    in_context: bool = False  # ctx['payment_id'] rather than input['...']


@dataclass(frozen=True)
class Attribute:
    """A searchable attribute: computed from the context after each step."""

    name: str
    type: str  # string | number | boolean | timestamp
    value: Expr


@dataclass(frozen=True)
class Schedule:
    """An entry of `schedules:`: start an execution with `input` on a cron expression (in
    `time_zone`) or every `every` seconds (machines/schedules.py computes the times)."""

    id: str
    cron: str | None = None
    every: float | None = None
    time_zone: str = "UTC"
    input: Any = field(default_factory=dict)

    @property
    def timing(self) -> dict:
        """What decides the fire times; a new version that changes it restarts the count."""
        return {"cron": self.cron, "every": self.every, "time_zone": self.time_zone}


@dataclass(frozen=True)
class Machine:
    id: str
    start_at: str
    states: dict[str, State]
    version: int | None = None
    title: str | None = None
    description: str | None = None
    execution_mode: str = DEFAULT_EXECUTION_MODE
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    context: Expr = field(default_factory=lambda: Expr(path="context", literal={}))
    # Contracts (machines/contracts.py): JSON Schemas of the start input and of each declared
    # action's input, the business key, the searchable attributes.
    input_schema: dict | None = None
    action_inputs: dict[str, dict] = field(default_factory=dict)
    key: Key | None = None
    attributes: tuple[Attribute, ...] = ()
    schedules: tuple[Schedule, ...] = ()

    @property
    def display(self) -> str:
        return self.title or self.id

    def state(self, name: str) -> State:
        return self.states[name]


# Error types -------------------------------------------------------------------------------
# The types of errors the runtime and the engine give work and executions (docs/language.md
# "Errors by type"); a machine raises its own with fail(type, message).
RUNTIME_ERROR_TYPES = (
    "timeout", "network_error", "http_status", "invalid_json", "response_too_large",
    "destination_refused", "bad_request", "unknown_operation", "expression_error", "ok_if",
    "child_failed", "child_canceled", "unknown_machine", "unknown_execution", "invalid_input",
    "internal_error", "value_error", "step_limit", "invoke_failed", "branch_failed",
    "join_failed",
)
ERROR_TYPE_PATTERN = r"^[a-z][a-z0-9_.-]{0,99}$"
ERROR_MATCH_PATTERN = r"^[a-z][a-z0-9_.-]{0,99}(?::[a-z0-9_.-]{1,100})?$"


def error_matches(pattern: str, error: dict) -> bool:
    """Whether `error` is of the type a pattern names: `timeout`; `http_status:404` or
    `http_status:4xx` (a status, or a class of them); `child_failed:card_declined` (the
    type of the error the child failed with); `expression_error:resource` (how the
    expression failed: runtime, timeout, resource, crashed, result, syntax)."""
    kind, _, detail = pattern.partition(":")
    if not isinstance(error, dict) or error.get("type") != kind:
        return False
    if not detail:
        return True
    if kind == "http_status":
        status = str(error.get("status", ""))
        return len(status) == 3 and all(want in ("x", have) for want, have in zip(
            detail, status, strict=False)) and len(detail) == 3
    if kind == "expression_error":
        return error.get("kind") == detail
    cause = error.get("cause")
    return isinstance(cause, dict) and cause.get("type") == detail


def error_branch_name(index: int) -> str:
    """The `branch` of a history row for the error branch at `index`: "error" (the only one
    in the original form), then "error-1", "error-2", ... (and so the diagram's edge ids)."""
    return "error" if index == 0 else f"error-{index}"


def first_matching(items, error: dict):
    """The first item (a Retry or an error Branch) whose `on` catches `error`, or None."""
    for item in items:
        if not item.on or any(error_matches(pattern, error) for pattern in item.on):
            return item
    return None
