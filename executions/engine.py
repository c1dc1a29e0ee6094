"""The pure engine: ``transition(machine, snapshot, event, env) -> Result``.

Data in, data out, in the spirit of XState's ``transition()`` and the original design's
core step. No Django, no I/O, no clock or randomness except what ``Env`` hands in.
The runner (executions/runner.py) persists what comes out and performs the effects.

Semantics: ../shared/spec/machine-definition.md "How an execution moves"; the choices the
spec leaves open are written down in docs/language.md.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from machines.definition import Expr, Machine

# Statuses --------------------------------------------------------------------------------
RUNNING, WAITING, SLEEPING, INVOKING = "running", "waiting", "sleeping", "invoking"
FINISHED, FAILED, CANCELED = "finished", "failed", "canceled"
STATUSES = (RUNNING, WAITING, SLEEPING, INVOKING, FINISHED, FAILED, CANCELED)
TERMINAL_STATUSES = (FINISHED, CANCELED)  # failed is not terminal: it can be retried
PAUSED_STATUSES = (WAITING, SLEEPING, INVOKING)

# History kinds ---------------------------------------------------------------------------
STARTED = "execution_started"
ACTION_RECEIVED = "action_received"
ACTION_REJECTED = "action_rejected"
TRANSITION_TAKEN = "transition_taken"
TIMER_ARMED, TIMER_FIRED, TIMER_CANCELED = "timer_armed", "timer_fired", "timer_canceled"
WORK_STARTED, WORK_SUCCEEDED, WORK_FAILED = "work_started", "work_succeeded", "work_failed"
WORK_RETRY_SCHEDULED = "work_retry_scheduled"
EXECUTION_FINISHED, EXECUTION_FAILED = "execution_finished", "execution_failed"
EXECUTION_CANCELED, EXECUTION_RETRIED = "execution_canceled", "execution_retried"
EXECUTION_STUCK = "execution_stuck"


# Snapshot --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Snapshot:
    """Everything the engine needs to continue an execution. JSON-serializable."""

    status: str
    state: str
    context: dict
    input: Any = None  # the start input
    result: Any = None  # the return value once finished
    error: dict | None = None  # {"type", "message", ...} while failed
    seq: int = 0  # history entries so far; the next entry gets seq + 1
    auto_steps: int = 0  # automatic transitions since the last pause (for the step limit)
    timer: dict | None = None  # {"token", "due", "transition", "purpose": wait|retry|timeout}
    work: dict | None = None  # {"token", "transition", "kind", "attempt"}
    queued: tuple = ()  # actions received while invoking: {"action", "input", "actor"}

    def to_dict(self) -> dict: ...

    @classmethod
    def from_dict(cls, data: dict) -> Snapshot: ...


# Events ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Start:
    input: Any = None
    actor: str | None = None


@dataclass(frozen=True)
class Action:
    name: str
    input: Any = None
    actor: str | None = None


@dataclass(frozen=True)
class TimerFired:
    token: str
    actor: str | None = "timer"


@dataclass(frozen=True)
class WorkSucceeded:
    token: str
    output: Any = None
    actor: str | None = None


@dataclass(frozen=True)
class WorkFailed:
    token: str
    error: dict = field(default_factory=dict)  # {"type", "message", ...}
    actor: str | None = None


@dataclass(frozen=True)
class Cancel:
    actor: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Retry:
    actor: str | None = None


@dataclass(frozen=True)
class Continue:
    """Resume a `running` execution that stopped after `Env.max_steps` (async-latency)."""

    actor: str | None = None


# Effects ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ArmTimer:
    token: str
    due: float  # epoch seconds
    purpose: str  # wait | retry | timeout


@dataclass(frozen=True)
class CancelTimer:
    token: str


@dataclass(frozen=True)
class CallIO:
    token: str
    call: Expr  # the invoke's `call` expression; the runner evaluates it with `io` bound
    names: dict  # ctx, input, execution as they were when the work started
    attempt: int = 1
    timeout_seconds: float | None = None


@dataclass(frozen=True)
class StartChild:
    token: str
    machine_id: str
    machine_version: int | None
    input: Any
    is_async: bool


@dataclass(frozen=True)
class SendAction:
    token: str
    execution_id: str
    action: str
    input: Any
    is_async: bool


@dataclass(frozen=True)
class CancelWork:
    """Outstanding work is no longer wanted (the execution was canceled or timed out)."""

    token: str
    kind: str  # call | machine | trigger


@dataclass(frozen=True)
class NotifyParent:
    """The execution finished, failed or was canceled; a parent invoking it resumes."""

    status: str
    output: Any = None
    error: dict | None = None


@dataclass(frozen=True)
class ContinueLater:
    """Stopped after `Env.max_steps`; enqueue a `Continue` event (async-latency mode)."""


# Environment and result ------------------------------------------------------------------
@dataclass(frozen=True)
class Env:
    now: float  # epoch seconds, for history timestamps, timers, time() and now()
    evaluate: Callable[[Expr, dict], Any]  # the sandbox; raises sandbox.ExpressionError
    seed: int = 0  # seeds randint(), random(), uuid4() of expressions
    execution: dict = field(default_factory=dict)  # id, machine, version, started_at
    step_limit: int = 1000
    max_steps: int | None = None  # stop early, still running (async-latency)


@dataclass(frozen=True)
class Result:
    snapshot: Snapshot
    history: tuple = ()  # dicts, see docs/runtime.md "History"
    effects: tuple = ()
    rejected: str | None = None  # why the event was not applied (snapshot unchanged)
    available_actions: tuple = ()


def transition(machine: Machine, snapshot: Snapshot | None, event, env: Env) -> Result:
    """Apply one event. `snapshot` is None only for `Start`."""
    raise NotImplementedError


def available_actions(machine: Machine, snapshot: Snapshot) -> tuple[str, ...]:
    """Action names that `transition` would consider now (guards are checked on use)."""
    raise NotImplementedError
