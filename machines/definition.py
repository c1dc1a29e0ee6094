"""Typed, immutable objects of a validated machine definition.

These are what the language module produces and the engine consumes. They carry no
behaviour beyond simple derived facts, and no Django: the engine stays pure.
Every expression keeps its document path (``states.cart.actions[0].when``) so errors
raised while evaluating it can say where it came from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

EXECUTION_MODES = ("sync", "async-throughput", "async-latency")
DEFAULT_EXECUTION_MODE = "async-throughput"
DEFAULT_TIMEOUT_SECONDS = 30


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


@dataclass(frozen=True)
class Wait:
    seconds: Expr | None = None
    until: Expr | None = None


@dataclass(frozen=True)
class Retry:
    max_attempts: int = 1  # total attempts, the first one included
    delay_seconds: float = 1.0
    backoff: float = 2.0

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before attempt number `attempt` (2, 3, ...)."""
        return self.delay_seconds * (self.backoff ** max(0, attempt - 2))


@dataclass(frozen=True)
class Invoke:
    """Work outside the execution. Exactly one of call / machine / trigger is set."""

    kind: str  # "call" | "machine" | "trigger"
    call: Expr | None = None
    machine_id: str | None = None
    machine_version: int | None = None  # None: the latest version when it starts
    input: Expr | None = None  # machine input, or the trigger's action input
    execution: Expr | None = None  # trigger: which execution
    action: str | None = None  # trigger: which action
    is_async: bool = False
    success: Branch | None = None
    error: Branch | None = None
    ok_if: Expr | None = None
    retry: Retry | None = None
    timeout_seconds: float | None = None


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
    """The business key (machines/contracts.py): a path into the start input, unique per
    machine among the executions not finished or canceled ("unfinished"), or "always"."""

    path: tuple[str | int, ...]  # ("order", "id") for input['order']['id']
    source: str
    unique: str = "unfinished"


@dataclass(frozen=True)
class Attribute:
    """A searchable attribute: computed from the context after each step."""

    name: str
    type: str  # string | number | boolean | timestamp
    value: Expr


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

    @property
    def display(self) -> str:
        return self.title or self.id

    def state(self, name: str) -> State:
        return self.states[name]
