"""The pure engine: ``transition(machine, snapshot, event, env) -> Result``.

Data in, data out, in the spirit of XState's ``transition()`` and the original design's
core step. No Django, no I/O, no clock or randomness except what ``Env`` hands in.
The runtime (executions/runtime/) persists what comes out and performs the effects.

Semantics: "How an execution moves" in docs/language.md; the choices made where the
language leaves room are written down in docs/engine.md.
"""
from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any, TypeAlias

from executions import joins
from expressions.errors import ExpressionError
from expressions.names import HELPER_ARITY
from machines import durations
from machines.contracts import attribute_value
from machines.definition import (
    MAP_MAX_ITEMS,
    Decision,
    Expr,
    Machine,
    State,
    Transition,
    Update,
    error_branch_name,
    error_matches,
    first_matching,
)

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
BRANCH_ENDED = "branch_ended"  # one child of a parallel/map invoke finished, failed or ended
# A rejected action's reason quotes its expression's error; a KeyError can name a key of
# megabytes, and the reason is both answered (409) and stored: its message is cut here.
REJECTION_MESSAGE_LIMIT = 2000


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
    timers: tuple = ()  # the state's `after` timers: {"token", "due", "transition", "purpose"}

    def to_dict(self) -> dict:
        data = {name: getattr(self, name) for name in SNAPSHOT_FIELDS}
        data["queued"] = list(self.queued)
        data["timers"] = list(self.timers)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Snapshot:
        values = {key: value for key, value in data.items() if key in SNAPSHOT_FIELDS}
        values["queued"] = tuple(values.get("queued") or ())
        values["timers"] = tuple(values.get("timers") or ())
        return cls(**values)


# Read once: dataclasses.fields() filters the class's fields on every call, and a snapshot is
# converted four times per advance (both sides of the evaluation pool).
SNAPSHOT_FIELDS = tuple(f.name for f in fields(Snapshot))


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
    reason: str | None = None  # why the operator retried it (history shows it)


@dataclass(frozen=True)
class Continue:
    """Resume a `running` execution that stopped after `Env.max_steps` (async-latency)."""

    actor: str | None = None


Event: TypeAlias = (Start | Action | TimerFired | WorkSucceeded | WorkFailed | Cancel | Retry
                    | Continue)


# Effects ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ArmTimer:
    token: str
    due: float  # epoch seconds
    purpose: str  # wait | retry | timeout | after


@dataclass(frozen=True)
class CancelTimer:
    token: str


@dataclass(frozen=True)
class CallIO:
    token: str
    call: Expr  # the invoke's `call` expression; the runtime evaluates it with `io` bound
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


Effect: TypeAlias = (ArmTimer | CancelTimer | CallIO | StartChild | SendAction | CancelWork
                     | NotifyParent | ContinueLater)


# Environment and result ------------------------------------------------------------------
@dataclass(frozen=True)
class Env:
    now: float  # epoch seconds, for history timestamps, timers, time() and now()
    evaluate: Callable[[Expr, dict], Any]  # the sandbox; raises ExpressionError
    seed: int = 0  # seeds randint(), random(), uuid4() of expressions
    execution: dict = field(default_factory=dict)  # id, machine, version, started_at
    step_limit: int = 1000
    max_steps: int | None = None  # stop early, still running (async-latency)


@dataclass(frozen=True)
class Result:
    snapshot: Snapshot
    history: tuple = ()  # dicts, see docs/engine.md "History"
    effects: tuple[Effect, ...] = ()
    rejected: str | None = None  # why the event was not applied (snapshot unchanged)
    available_actions: tuple = ()


# Expression helpers ----------------------------------------------------------------------
def helpers(now: float, seed: int) -> dict:
    """time(), now(), uuid4(), randint(), random() for expressions: fixed by `now` and `seed`,
    so a replayed step computes the same values. The generator is made on first use."""
    rng = None

    def generator() -> random.Random:
        nonlocal rng
        if rng is None:
            rng = random.Random(seed)
        return rng

    return {
        "time": lambda: now,
        "now": lambda: _iso(now),
        "today": lambda: _iso(now)[:10],
        "uuid4": lambda: str(uuid.UUID(int=generator().getrandbits(128), version=4)),
        "randint": lambda a, b: generator().randint(a, b),
        "random": lambda: generator().random(),
    }


assert set(helpers(0, 0)) == set(HELPER_ARITY)  # the names the save-time checks know


def transition(machine: Machine, snapshot: Snapshot | None, event: Event, env: Env) -> Result:
    """Apply one event. `snapshot` is None only for `Start`."""
    if isinstance(event, Start):
        if snapshot is not None:
            return _rejected(machine, snapshot, "the execution has already started")
        snapshot = Snapshot(status=RUNNING, state=machine.start_at, context={}, input=event.input)
    elif snapshot is None:
        raise ValueError(f"{type(event).__name__} needs the execution's snapshot")
    handler = _HANDLERS.get(type(event))
    if handler is None:
        raise TypeError(f"not an engine event: {event!r}")
    run = _Run(machine, snapshot, env, event.actor)
    try:
        handler(run, event)
    except _Rejected as rejection:
        if rejection.entry is None:
            return _rejected(machine, snapshot, rejection.reason)
        after = replace(snapshot, seq=snapshot.seq + 1)
        return Result(after, (rejection.entry,), (), rejection.reason,
                      available_actions(machine, after))
    except _Failed as failure:
        run.fail(failure.error)
    return run.result()


def attributes(machine: Machine, snapshot: Snapshot, env: Env) -> dict:
    """The machine's searchable attributes computed from the snapshot's context (after a
    step): name -> value as stored (machines.contracts.attribute_value), None when the
    expression fails or gives a value of another type; an attribute never fails a step."""
    names = {"ctx": snapshot.context, "input": snapshot.input,
             "execution": {**env.execution, "state": snapshot.state},
             **helpers(env.now, env.seed)}
    found = {}
    for attribute in machine.attributes:
        try:
            value = env.evaluate(attribute.value, names)
        except ExpressionError:
            value = None
        found[attribute.name] = attribute_value(attribute.type, value)
    return found


def available_actions(machine: Machine, snapshot: Snapshot) -> tuple[str, ...]:
    """Action names that `transition` would consider now (guards are checked on use)."""
    return actions_in(machine, snapshot.status, snapshot.state)


def actions_in(machine: Machine, status: str, state: str) -> tuple[str, ...]:
    """available_actions from the status and state alone: all it depends on, so an answer
    about a stored execution need not rebuild its whole snapshot."""
    if status not in PAUSED_STATUSES:
        return ()
    return machine.state(state).action_names


def waits_for(work: dict | None, token: str) -> bool:
    """Whether outstanding work (a snapshot's `work`) still waits for the result of
    `token`: the invoke's own token, or a running branch of a parallel/map invoke."""
    if not work:
        return False
    if "branches" in work:
        return any(b["token"] == token and b["status"] == joins.RUNNING
                   for b in work["branches"])
    return work.get("token") == token


def cancel_effects(work: dict) -> list[CancelWork]:
    """What canceling outstanding work takes: the invoke's work, or every running branch."""
    if "branches" in work:
        return [CancelWork(b["token"], "machine") for b in work["branches"]
                if b["status"] == joins.RUNNING]
    return [] if work["token"] is None else [CancelWork(work["token"], work["kind"])]


# Internals -------------------------------------------------------------------------------
class _Rejected(Exception):
    """The event does not apply; `entry` is the action_rejected entry when there is one."""

    def __init__(self, reason: str, entry: dict | None = None):
        super().__init__(reason)
        self.reason = reason
        self.entry = entry


class _Failed(Exception):
    """The step cannot complete; the execution fails with `error`, keeping state and context."""

    def __init__(self, error: dict):
        super().__init__(error.get("message"))
        self.error = error


def _rejected(machine: Machine, snapshot: Snapshot, reason: str) -> Result:
    return Result(snapshot, (), (), reason, available_actions(machine, snapshot))


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat()


def _epoch(value, path: str) -> float:
    """A `wait.until` value as epoch seconds: a number, or an ISO-8601 string (UTC if naive)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise ValueError(f"{path} is too large to be a time") from None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return moment.timestamp()
    raise ValueError(f"{path} must be epoch seconds or an ISO-8601 string, not {value!r}")


def _shown(expr: Expr):
    return expr.source if expr.is_code else expr.literal


class _Run:
    """One `transition()` call: a working copy of the snapshot plus the entries and effects
    it produces. Plain attributes, because a long automatic run must stay cheap per step."""

    def __init__(self, machine: Machine, snapshot: Snapshot, env: Env, actor):
        self.machine, self.env, self.actor = machine, env, actor
        self.status, self.state, self.context = snapshot.status, snapshot.state, snapshot.context
        self.start_input, self.result_value = snapshot.input, snapshot.result
        self.error, self.seq, self.auto_steps = snapshot.error, snapshot.seq, snapshot.auto_steps
        self.timer, self.work, self.queued = snapshot.timer, snapshot.work, list(snapshot.queued)
        self.timers = list(snapshot.timers)
        self.input = snapshot.input  # what `input` means in the step being taken
        self.history: list[dict] = []
        self.effects: list = []
        self.guards: list[dict] = []  # guard results waiting for the next entry
        self.receipt: dict | None = None  # action_received fields, recorded when taken
        self.steps_this_call = 0
        self.helpers = helpers(env.now, env.seed + snapshot.seq)
        self.execution_id = env.execution.get("id")
        self.bound: dict[str, dict] = {}  # the names but ctx and input, per state

    def result(self) -> Result:
        snapshot = Snapshot(
            status=self.status, state=self.state, context=self.context, input=self.start_input,
            result=self.result_value, error=self.error, seq=self.seq,
            auto_steps=self.auto_steps, timer=self.timer, work=self.work,
            queued=tuple(self.queued), timers=tuple(self.timers),
        )
        return Result(snapshot, tuple(self.history), tuple(self.effects), None,
                      available_actions(self.machine, snapshot))

    # history and expressions -------------------------------------------------------------
    def record(self, kind: str, with_guards: bool = True, **values) -> dict:
        self.seq += 1
        entry = {"seq": self.seq, "kind": kind, "at": self.env.now, "actor": self.actor}
        if with_guards and self.guards:
            entry["guards"] = self.guards
            self.guards = []
        entry.update(values)
        self.history.append(entry)
        return entry

    def next_token(self) -> str:
        """Token of whatever the next entry starts: unique, and the runtime's idempotency key."""
        return f"{self.execution_id}:{self.seq + 1}"

    def names(self, extra: dict | None) -> dict:
        bound = self.bound.get(self.state)
        if bound is None:  # `execution` says the state; the helpers are the step's
            bound = self.bound[self.state] = {
                **self.helpers, "execution": {**self.env.execution, "state": self.state}}
        names = bound.copy()  # a plain copy: cheaper than unpacking the helpers each time
        names["ctx"], names["input"] = self.context, self.input
        if extra:
            names.update(extra)
        return names

    def evaluate(self, expr: Expr, transition_id: str | None, extra: dict | None = None):
        try:
            return self.env.evaluate(expr, self.names(extra))
        except ExpressionError as exc:
            raise _Failed({
                **exc.to_dict(), "path": exc.path or expr.path,
                "machine": self.machine.id, "state": self.state, "transition": transition_id,
            }) from None

    def expression_error(self, message, transition_id, path, line=None, column=None) -> dict:
        return {
            "type": "expression_error", "message": message, "machine": self.machine.id,
            "state": self.state, "transition": transition_id, "path": path,
            "line": line, "column": column,
        }

    def passes(self, transition: Transition) -> bool:
        if transition.when is None:
            return True
        result = bool(self.evaluate(transition.when, transition.id))
        self.guards.append(
            {"transition": transition.id, "when": _shown(transition.when), "result": result})
        return result

    def decide(self, decision: Decision, transition_id: str):
        """(branch name, branch) of a decision, or (None, None) when it is false with no else."""
        result = bool(self.evaluate(decision.condition, transition_id))
        self.guards.append(
            {"transition": transition_id, "if": _shown(decision.condition), "result": result})
        if result:
            return "then", decision.then
        if decision.otherwise is not None:
            return "else", decision.otherwise
        return None, None

    def updated_context(self, update: Update, transition_id: str, extra: dict | None) -> dict:
        if update.context is not None:
            context = self.evaluate(update.context, transition_id, extra)
            if not isinstance(context, dict):
                raise _Failed(self.expression_error(
                    f"context is not a JSON object (the expression gave {type(context).__name__})",
                    transition_id, update.context.path))
            return context
        context = dict(self.context)
        for key, expr in update.assign:
            context[key] = self.evaluate(expr, transition_id, extra)
        return context

    # moving ------------------------------------------------------------------------------
    def move(self, transition: Transition, update: Update, target: str | None,
             branch: str | None = None, extra: dict | None = None, **values) -> None:
        """Apply an update and go to `target` (or stay); the state/context change only here."""
        changed = not update.is_empty
        if changed:
            context = self.updated_context(update, transition.id, extra)
        source = self.state
        if self.timers and target is not None and target != source:
            self.cancel_state_timers()
        entry = self.record(TRANSITION_TAKEN, transition=transition.id, from_state=source,
                            to_state=target or source, **values)
        if changed:
            self.context = entry["context"] = context
        if branch is not None:
            entry.setdefault("detail", {})["branch"] = branch
        self.state = target or source
        self.status = RUNNING

    def take(self, transition: Transition, automatic: bool, **values) -> bool:
        """Take a transition whose guard passed; False when a decision without else said no."""
        branch_name, branch = None, None
        if transition.decision is not None:
            branch_name, branch = self.decide(transition.decision, transition.id)
            if branch is None:
                return False
        if automatic:
            self.count_step()
        else:
            self.acknowledge()
            if self.status == SLEEPING and self.timer is not None:
                self.cancel_timer()
        if transition.wait is not None:
            self.arm_wait(transition)
        elif transition.invoke is not None:
            self.start_work(transition, 1, **values)
        elif branch is not None:
            self.move(transition, branch.update, branch.state, branch_name, **values)
        else:
            self.move(transition, transition.update, transition.target, **values)
        return True

    def count_step(self) -> None:
        limit = self.env.step_limit
        if self.auto_steps >= limit:
            raise _Failed({
                "type": "step_limit",
                "message": f"step limit exceeded: more than {limit} automatic transitions "
                           "without a pause (a loop?)",
                "machine": self.machine.id, "state": self.state,
            })
        self.auto_steps += 1
        self.steps_this_call += 1

    def settle(self) -> None:
        """After a transition: run automatic ones until a pause, then apply queued actions."""
        if self.status == RUNNING:
            self.advance()
        while self.status in (WAITING, SLEEPING) and self.queued:
            queued = self.queued.pop(0)
            self.actor = queued.get("actor")
            self.act(queued["action"], queued.get("input"), from_queue=True)
            if self.status == RUNNING:
                self.advance()

    def advance(self) -> None:
        machine, input_ = self.machine, self.start_input
        while True:
            self.input = input_
            state = machine.states[self.state]
            if state.is_terminal:
                self.finish(state)
                return
            if self.env.max_steps is not None and self.steps_this_call >= self.env.max_steps:
                self.status = RUNNING
                self.effects.append(ContinueLater())
                return
            for candidate in state.automatic:
                if self.passes(candidate) and self.take(candidate, True):
                    break
            else:
                self.pause(state)
                return
            if self.status != RUNNING:  # a wait or an invoke paused it
                if state.has_timers:
                    self.arm_state_timers(state)
                return

    def pause(self, state: State) -> None:
        self.status, self.auto_steps = WAITING, 0
        if state.has_timers and self.arm_state_timers(state) and not state.action_names:
            self.status = SLEEPING  # nothing to wait for but its timers
            return
        if state.action_names:
            self.guards = []  # nothing follows to carry them
            return
        self.record(EXECUTION_STUCK, detail={"message": (
            f"No transition can be taken from {state.name} and it accepts no actions")})

    def finish(self, state: State) -> None:
        output = None if state.returns is None else self.evaluate(state.returns, None)
        self.status, self.result_value, self.auto_steps = FINISHED, output, 0
        self.record(EXECUTION_FINISHED, output=output)
        self.effects.append(NotifyParent(FINISHED, output=output))
        self.reject_queued("the execution has finished")

    def fail(self, error: dict) -> None:
        self.input = self.start_input
        self.status, self.error, self.auto_steps = FAILED, error, 0
        self.drop_outstanding()
        self.record(EXECUTION_FAILED, error=error)
        self.effects.append(NotifyParent(FAILED, error=error))
        self.reject_queued("the execution has failed")

    def drop_outstanding(self) -> None:
        if self.timers:
            self.cancel_state_timers()
        if self.timer is not None:
            self.effects.append(CancelTimer(self.timer["token"]))
            self.record(TIMER_CANCELED, with_guards=False, transition=self.timer["transition"],
                        detail={"token": self.timer["token"], "purpose": self.timer["purpose"]})
            self.timer = None
        if self.work is not None:
            self.effects.extend(cancel_effects(self.work))
            self.work = None

    def reject_queued(self, why: str) -> None:
        for queued in self.queued:
            self.record(ACTION_REJECTED, action=queued["action"], input=queued.get("input"),
                        detail={"reason": f"'{queued['action']}' was not applied: {why}",
                                "available_actions": [], "queued": True})
        self.queued = []

    # actions -----------------------------------------------------------------------------
    def act(self, name: str, input_, from_queue: bool = False) -> None:
        """Take the first matching transition, or raise/record the rejection."""
        state = self.machine.states[self.state]
        available = state.action_names if self.status in PAUSED_STATUSES else ()
        self.input = input_
        taken = {"action": name, "input": input_}
        if from_queue:
            taken["detail"] = {"queued": True}
        self.receipt = None if from_queue else {"action": name, "input": input_}
        before = self.mark()
        try:
            if name in available:
                for candidate in state.transitions:
                    if (name in candidate.on and self.passes(candidate)
                            and self.take(candidate, False, **taken)):
                        return
        except _Failed as failure:
            self.reject_failed(name, input_, available, failure.error, before, from_queue)
            return
        reason = self.why_not(name, state, available)
        detail: dict[str, Any] = {"reason": reason, "available_actions": list(available)}
        if from_queue:
            detail["queued"] = True
        entry = self.record(ACTION_REJECTED, action=name, input=input_, detail=detail)
        if not from_queue:
            raise _Rejected(reason, entry)

    def mark(self) -> tuple:
        """What taking an action may change before one of its expressions fails."""
        return (self.seq, len(self.history), len(self.effects), self.timer, self.status,
                list(self.timers), self.work)

    def reject_failed(self, name: str, input_, available: tuple, error: dict, before: tuple,
                      from_queue: bool) -> None:
        """An expression of the action's transition failed: the action is rejected with the
        error and the execution stays as it was (docs/language.md, "An action never fails
        an execution"). Automatic transitions, timers and results still fail it."""
        self.seq, history, effects, self.timer, self.status, self.timers, self.work = before
        self.receipt = None
        del self.history[history:], self.effects[effects:]
        where = f" (at {error['path']})" if error.get("path") else ""
        exception = f"{error['exception']}: " if error.get("exception") else ""
        message = str(error.get("message"))
        if len(message) > REJECTION_MESSAGE_LIMIT:  # the reason is answered and stored
            message = (message[:REJECTION_MESSAGE_LIMIT]
                       + f"… [cut: {len(message):,} characters]")
        reason = (f"'{name}' was rejected: transition '{error.get('transition')}' failed: "
                  f"{exception}{message}{where}")
        detail: dict[str, Any] = {"reason": reason, "available_actions": list(available),
                                  "error": error}
        if from_queue:
            detail["queued"] = True
        entry = self.record(ACTION_REJECTED, action=name, input=input_, detail=detail)
        if not from_queue:
            raise _Rejected(reason, entry)

    def acknowledge(self) -> None:
        """Record the action as received, once, just before its transition is taken."""
        if self.receipt is not None:
            self.record(ACTION_RECEIVED, with_guards=False, **self.receipt)
            self.receipt = None

    def why_not(self, name: str, state: State, available: tuple) -> str:
        if self.status not in PAUSED_STATUSES:
            return f"'{name}' is not available: the execution is {self.status}"
        if name not in available:
            listed = ", ".join(available) or "none"
            return f"'{name}' is not available in state '{state.name}'; available now: {listed}"
        said_no = [
            f"guard `{g['when']}` of '{g['transition']}' was false" if "when" in g
            else f"`if {g['if']}` of '{g['transition']}' was false and it has no else"
            for g in self.guards if not g["result"]
        ]
        return f"'{name}' cannot be taken in state '{state.name}': " + "; ".join(said_no)

    # timers and work ---------------------------------------------------------------------
    def arm_timer(self, due: float, purpose: str, transition_id: str, kind=TIMER_ARMED,
                  **detail) -> None:
        token = self.next_token()
        self.timer = {"token": token, "due": due, "transition": transition_id,
                      "purpose": purpose}
        self.effects.append(ArmTimer(token, due, purpose))
        self.record(kind, transition=transition_id,
                    detail={"token": token, "due": due, "purpose": purpose, **detail})

    def cancel_timer(self) -> None:
        timer, self.timer = self.timer, None
        assert timer is not None
        self.effects.append(CancelTimer(timer["token"]))
        self.record(TIMER_CANCELED, with_guards=False, transition=timer["transition"],
                    detail={"token": timer["token"], "purpose": timer["purpose"]})

    def arm_state_timers(self, state: State) -> bool:
        """Arm the state's `after` timers not armed yet (each `when` checked now); True when
        any is armed. Kept while the execution stays in the state, so a transition back to
        it restarts only a timer that fired (docs/language.md "Timers")."""
        armed = {timer["transition"] for timer in self.timers}
        for t in state.transitions:
            if t.after is None or t.id in armed or not self.passes(t):
                continue
            token = self.next_token()
            due = self.env.now + t.after.seconds
            self.timers.append({"token": token, "due": due, "transition": t.id,
                                "purpose": "after"})
            self.effects.append(ArmTimer(token, due, "after"))
            self.record(TIMER_ARMED, transition=t.id, detail={
                "token": token, "due": due, "purpose": "after", "after": t.after.written})
        return bool(self.timers)

    def cancel_state_timers(self) -> None:
        """The execution leaves the state (or ends): its `after` timers will not fire."""
        for timer in self.timers:
            self.effects.append(CancelTimer(timer["token"]))
            self.record(TIMER_CANCELED, with_guards=False, transition=timer["transition"],
                        detail={"token": timer["token"], "purpose": "after"})
        self.timers = []

    def arm_wait(self, transition: Transition) -> None:
        wait = transition.wait
        assert wait is not None
        if wait.seconds is not None:
            seconds = self.evaluate(wait.seconds, transition.id)
            if isinstance(seconds, str):  # a computed duration text: 'P1D', '90s'
                try:
                    seconds = durations.seconds(seconds)
                except durations.DurationError as exc:
                    raise _Failed(self.expression_error(
                        f"wait.seconds: {exc}", transition.id, wait.seconds.path)) from None
            if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
                raise _Failed(self.expression_error(
                    f"wait.seconds must be a number, not {seconds!r}", transition.id,
                    wait.seconds.path))
            try:
                due = self.env.now + seconds
            except OverflowError:  # an integer past any float: no time at all
                raise _Failed(self.expression_error(
                    "wait.seconds is too large to be a time", transition.id,
                    wait.seconds.path)) from None
        else:
            assert wait.until is not None
            until = self.evaluate(wait.until, transition.id)
            try:
                due = _epoch(until, wait.until.path)
            except ValueError as exc:
                raise _Failed(self.expression_error(
                    str(exc), transition.id, wait.until.path)) from None
        self.arm_timer(due, "wait", transition.id)
        self.status, self.auto_steps = SLEEPING, 0

    def start_work(self, transition: Transition, attempt: int, **values) -> None:
        """Evaluate what the work needs, then record it and hand the runtime its effect."""
        invoke = transition.invoke
        assert invoke is not None
        if invoke.group is not None:
            self.start_group(transition, attempt, **values)
            return
        token = self.next_token()
        detail = {**values.pop("detail", {}), "token": token, "kind": invoke.kind,
                  "attempt": attempt}
        effect: Effect
        if invoke.kind == "call":
            assert invoke.call is not None
            effect = CallIO(token, invoke.call, {
                "ctx": self.context, "input": self.input,
                "execution": self.names(None)["execution"],
            }, attempt, invoke.timeout_seconds)
        elif invoke.kind == "machine":
            assert invoke.machine_id is not None
            child_input = (None if invoke.input is None
                           else self.evaluate(invoke.input, transition.id))
            effect = StartChild(token, invoke.machine_id, invoke.machine_version, child_input,
                                invoke.is_async)
            detail.update(machine=invoke.machine_id, version=invoke.machine_version,
                          work_input=child_input)
        else:
            assert invoke.execution is not None and invoke.action is not None
            target = self.evaluate(invoke.execution, transition.id)
            action_input = ({} if invoke.input is None
                            else self.evaluate(invoke.input, transition.id))
            effect = SendAction(token, target, invoke.action, action_input, invoke.is_async)
            detail.update(execution=target, action=invoke.action, work_input=action_input)
        self.record(WORK_STARTED, transition=transition.id, from_state=self.state,
                    detail=detail, **values)
        self.effects.append(effect)
        self.work = {"token": token, "transition": transition.id, "kind": invoke.kind,
                     "attempt": attempt, "state": self.state}
        self.status, self.auto_steps = INVOKING, 0
        if invoke.timeout_seconds:
            self.arm_timer(self.env.now + invoke.timeout_seconds, "timeout", transition.id)

    def work_done(self) -> Transition:
        """The reported work is over: forget it and its time-out; return its transition."""
        assert self.work is not None
        transition = self.machine.states[self.state].transition(self.work["transition"])
        self.work = None
        if self.timer is not None and self.timer["purpose"] == "timeout":
            self.cancel_timer()
        return transition

    def succeeded(self, transition: Transition, output, attempt: int) -> None:
        invoke = transition.invoke
        assert invoke is not None
        if invoke.ok_if is not None and not self.evaluate(
                invoke.ok_if, transition.id, {"output": output}):
            self.failed(transition, {"type": "ok_if", "message": "ok_if was false",
                                     "output": output}, attempt)
            return
        branch = invoke.success
        if branch is None:
            self.move(transition, Update(), None, "success")
        else:
            self.move(transition, branch.update, branch.state, "success", {"output": output})
        self.settle()

    def failed(self, transition: Transition, error: dict, attempt: int) -> None:
        invoke = transition.invoke
        assert invoke is not None
        retry = None if any(error_matches(pattern, error) for pattern in invoke.non_retryable) \
            else first_matching(invoke.retries, error)
        if retry is not None and attempt < retry.max_attempts:
            self.work = {"token": None, "transition": transition.id, "kind": invoke.kind,
                         "attempt": attempt, "state": self.state}
            delay = retry.delay_before(attempt + 1)
            if retry.jitter:
                delay *= 1 - retry.jitter * random.Random(self.env.seed + self.seq).random()
            extra = {"error_type": error.get("type")} if retry.on else {}
            self.arm_timer(self.env.now + delay, "retry", transition.id, WORK_RETRY_SCHEDULED,
                           attempt=attempt + 1, **extra)
            return
        branch = first_matching(invoke.errors, error)
        if branch is not None:
            caught = {"detail": {"caught": error.get("type")}} if branch.on else {}
            self.move(transition, branch.update, branch.state,
                      error_branch_name(invoke.errors.index(branch)), {"error": error}, **caught)
            self.settle()
            return
        message = error.get("message") if isinstance(error, dict) else None
        raise _Failed({
            "type": "invoke_failed",
            "message": f"{invoke.kind} of '{transition.id}' failed"
                       + (f": {message}" if message else ""),
            "cause": error, "machine": self.machine.id, "state": self.state,
            "transition": transition.id,
        })

    # parallel and map --------------------------------------------------------------------
    def start_group(self, transition: Transition, attempt: int, **values) -> None:
        """Evaluate every branch's input, record the group, and start the branches the
        concurrency cap allows. Each branch is a child execution whose work token is
        `<group token>/<key>`: the runtime's idempotency key for that child."""
        invoke = transition.invoke
        assert invoke is not None and invoke.group is not None
        group = invoke.group
        token = self.next_token()
        branches = [{"key": key, "token": f"{token}/{key}", "machine": machine,
                     "version": version, "status": joins.PENDING, "input": child_input}
                    for key, machine, version, child_input in self.group_children(transition)]
        entry = self.record(WORK_STARTED, transition=transition.id, from_state=self.state,
                            detail={**values.pop("detail", {}), "token": token,
                                    "kind": invoke.kind, "attempt": attempt,
                                    "branches": [b["key"] for b in branches],
                                    "join": group.join, "on_failure": group.on_failure,
                                    "max_concurrency": group.max_concurrency}, **values)
        self.work = {"token": token, "transition": transition.id, "kind": invoke.kind,
                     "attempt": attempt, "state": self.state, "branches": branches}
        self.status, self.auto_steps = INVOKING, 0
        started = self.group_over()
        if started is not None:
            entry["detail"]["started"] = started
            if invoke.timeout_seconds:
                self.arm_timer(self.env.now + invoke.timeout_seconds, "timeout",
                               transition.id)

    def group_children(self, transition: Transition) -> list[tuple]:
        """(key, machine, version, input) of each branch, in order."""
        invoke = transition.invoke
        assert invoke is not None and invoke.group is not None
        group = invoke.group
        if group.kind == "parallel":
            return [(b.key, b.machine_id, b.machine_version,
                     None if b.input is None else self.evaluate(b.input, transition.id))
                    for b in group.branches]
        assert group.items is not None
        items = self.evaluate(group.items, transition.id)
        if not isinstance(items, list):
            raise _Failed(self.expression_error(
                f"map.items must be a list, not {type(items).__name__}", transition.id,
                group.items.path))
        if len(items) > MAP_MAX_ITEMS:
            raise _Failed(self.expression_error(
                f"map.items has {len(items)} items; a map starts at most {MAP_MAX_ITEMS}",
                transition.id, group.items.path))
        return [(str(index), group.machine_id, group.machine_version,
                 None if group.input is None else self.evaluate(
                     group.input, transition.id, {"item": item, "index": index}))
                for index, item in enumerate(items)]

    def launch_branches(self, branches: list[dict], max_concurrency: int | None) -> list[str]:
        """Start the pending branches the cap allows; returns their keys."""
        started = []
        for index in joins.to_start([b["status"] for b in branches], max_concurrency):
            branch = branches[index] = {**branches[index], "status": joins.RUNNING}
            self.effects.append(StartChild(branch["token"], branch["machine"],
                                           branch["version"], branch.pop("input"), False))
            started.append(branch["key"])
        return started

    def group_over(self) -> list[str] | None:
        """Start what may start, or conclude the group once the join is decided. Returns
        the keys of the branches started now, or None when the group is over."""
        work = self.work
        assert work is not None
        transition = self.machine.states[self.state].transition(work["transition"])
        assert transition.invoke is not None and transition.invoke.group is not None
        group = transition.invoke.group
        branches = work["branches"]
        decision = joins.decide([b["status"] for b in branches], group.join, group.on_failure)
        if decision == joins.WAIT:
            return self.launch_branches(branches, group.max_concurrency)
        self.conclude_group(transition, decision)
        return None

    def branch_reported(self, event) -> None:
        """One child of a parallel/map invoke ended: record it, then start more or join."""
        work = self.work
        assert work is not None
        branches = list(work["branches"])
        index = next((i for i, b in enumerate(branches) if b["token"] == event.token), None)
        if index is None or branches[index]["status"] != joins.RUNNING:
            raise _Rejected(f"work {event.token} is not outstanding (stale or unknown)")
        ok = isinstance(event, WorkSucceeded)
        branch = branches[index] = {**branches[index],
                                    "status": joins.FINISHED if ok else joins.FAILED}
        if ok:
            branch["output"] = event.output
        else:
            branch["error"] = event.error
        self.work = {**work, "branches": branches}
        statuses = [b["status"] for b in branches]
        entry = self.record(BRANCH_ENDED, transition=work["transition"],
                            output=event.output if ok else None,
                            error=None if ok else event.error, detail={
                                "token": work["token"], "branch": branch["key"],
                                "status": branch["status"],
                                "finished": statuses.count(joins.FINISHED),
                                "failed": statuses.count(joins.FAILED),
                                "total": len(branches)})
        started = self.group_over()
        if started:
            entry["detail"]["started"] = started

    def conclude_group(self, transition: Transition, decision: str) -> None:
        """Cancel the branches still running, then take the success or error outcome with
        the outputs collected by name (parallel) or index (map)."""
        work = self.work
        assert work is not None and transition.invoke is not None
        invoke = transition.invoke
        branches = work["branches"]
        running = [b for b in branches if b["status"] == joins.RUNNING]
        for branch in running:
            self.effects.append(CancelWork(branch["token"], "machine"))
        if invoke.kind == "parallel":
            outputs: Any = {b["key"]: b.get("output") for b in branches
                            if b["status"] == joins.FINISHED}
        else:
            outputs = [b.get("output") for b in branches]
        detail = {"token": work["token"], "attempt": work["attempt"],
                  "canceled": [b["key"] for b in running]}
        if decision == joins.SUCCEEDED:
            self.record(WORK_SUCCEEDED, transition=transition.id, output=outputs,
                        detail=detail)
            self.work_done()
            self.succeeded(transition, outputs, work["attempt"])
            return
        error = self.group_error(transition, branches, outputs)
        self.record(WORK_FAILED, transition=transition.id, error=error, detail=detail)
        self.work_done()
        self.failed(transition, error, work["attempt"])

    def group_error(self, transition: Transition, branches: list[dict], outputs) -> dict:
        invoke = transition.invoke
        assert invoke is not None and invoke.group is not None
        errors = {b["key"]: b["error"] for b in branches if b["status"] == joins.FAILED}
        total = len(branches)
        if invoke.group.on_failure == "fail_fast" and errors:
            key, cause = next(iter(errors.items()))
            message = cause.get("message") if isinstance(cause, dict) else None
            return {"type": "branch_failed", "branch": key, "cause": cause,
                    "errors": errors, "outputs": outputs,
                    "message": f"{invoke.kind} branch {key} failed"
                               + (f": {message}" if message else "")}
        finished = sum(1 for b in branches if b["status"] == joins.FINISHED)
        need = joins.needed(invoke.group.join, total)
        return {"type": "join_failed", "errors": errors, "outputs": outputs,
                "message": f"{finished} of {total} branches finished; the join needs {need}"}


# Event handlers --------------------------------------------------------------------------
def _start(run: _Run, event: Start) -> None:
    try:
        context = _initial_context(run)
    except _Failed:
        run.record(STARTED, input=event.input, context={})
        raise
    run.context = context
    run.record(STARTED, input=event.input, context=context)
    run.settle()


def _initial_context(run: _Run) -> dict:
    """The machine's `context` with `input` bound; its errors name no state (Retry redoes it)."""
    try:
        context = run.evaluate(run.machine.context, None)
    except _Failed as failure:
        failure.error["state"] = None
        raise
    if not isinstance(context, dict):
        raise _Failed({**run.expression_error(
            f"context is not a JSON object (the expression gave {type(context).__name__})",
            None, run.machine.context.path), "state": None})
    return context


def _action(run: _Run, event: Action) -> None:
    if run.status == INVOKING:
        queued = {"action": event.name, "input": event.input, "actor": event.actor}
        run.queued.append(queued)
        run.record(ACTION_RECEIVED, action=event.name, input=event.input,
                   detail={"queued": True})
        return
    run.act(event.name, event.input)
    run.settle()


def _timer_fired(run: _Run, event: TimerFired) -> None:
    timer = run.timer
    state_timer = next((t for t in run.timers if t["token"] == event.token), None)
    if state_timer is not None:
        _state_timer_fired(run, state_timer)
        return
    if timer is None or timer["token"] != event.token:
        raise _Rejected(f"timer {event.token} is not armed (stale or unknown)")
    run.timer = None
    run.record(TIMER_FIRED, transition=timer["transition"],
               detail={"token": timer["token"], "purpose": timer["purpose"]})
    transition = run.machine.states[run.state].transition(timer["transition"])
    purpose = timer["purpose"]
    if purpose == "wait":
        run.move(transition, transition.update, transition.target)
        run.settle()
    elif purpose == "retry":
        assert run.work is not None
        run.start_work(transition, run.work["attempt"] + 1)
    else:  # the work's time-out
        work = run.work
        assert work is not None and transition.invoke is not None
        run.effects.extend(cancel_effects(work))
        run.work = None
        seconds = transition.invoke.timeout_seconds
        error = {"type": "timeout", "message": f"no result within {seconds:g} seconds"}
        run.record(WORK_FAILED, transition=transition.id, error=error,
                   detail={"token": work["token"], "attempt": work["attempt"]})
        run.failed(transition, error, work["attempt"])


def _state_timer_fired(run: _Run, timer: dict) -> None:
    """An `after` timer: its transition is taken whatever the execution is doing in the
    state; outstanding work (and its time-out or retry timer), or a `wait`, is dropped."""
    run.timers.remove(timer)
    detail = {"token": timer["token"], "purpose": "after"}
    if run.work is not None:
        detail["interrupted"] = run.work["kind"]
    run.record(TIMER_FIRED, transition=timer["transition"], detail=detail)
    if run.work is not None:
        if run.work["token"] is not None:
            run.effects.append(CancelWork(run.work["token"], run.work["kind"]))
        run.work = None
    if run.timer is not None:
        run.cancel_timer()
    transition = run.machine.states[run.state].transition(timer["transition"])
    run.status = RUNNING
    if transition.invoke is not None:  # a reminder that sends something: work in the state
        run.start_work(transition, 1)
        return
    run.move(transition, transition.update, transition.target)
    run.settle()


def _work_reported(run: _Run, event) -> None:
    work = run.work
    if run.status == INVOKING and work is not None and "branches" in work:
        run.branch_reported(event)
        return
    if run.status != INVOKING or work is None or work["token"] != event.token:
        raise _Rejected(f"work {event.token} is not outstanding (stale or unknown)")
    detail = {"token": work["token"], "attempt": work["attempt"]}
    if isinstance(event, WorkSucceeded):
        run.record(WORK_SUCCEEDED, transition=work["transition"], output=event.output,
                   detail=detail)
        run.succeeded(run.work_done(), event.output, work["attempt"])
    else:
        run.record(WORK_FAILED, transition=work["transition"], error=event.error,
                   detail=detail)
        run.failed(run.work_done(), event.error, work["attempt"])


def cancel_refused(status: str) -> str | None:
    """Why an execution with this status cannot be canceled (None: it can)."""
    return f"the execution is already {status}" if status in TERMINAL_STATUSES else None


def retry_refused(status: str) -> str | None:
    """Why an execution with this status cannot be retried (None: it can)."""
    if status != FAILED:
        return f"only a failed execution can be retried; this one is {status}"
    return None


def _cancel(run: _Run, event: Cancel) -> None:
    reason = cancel_refused(run.status)
    if reason is not None:
        raise _Rejected(reason)
    run.drop_outstanding()
    run.status, run.error, run.auto_steps = CANCELED, None, 0
    run.record(EXECUTION_CANCELED, detail={"reason": event.reason} if event.reason else {})
    run.effects.append(NotifyParent(CANCELED))
    run.reject_queued("the execution was canceled")


def _retry(run: _Run, event: Retry) -> None:
    reason = retry_refused(run.status)
    if reason is not None:
        raise _Rejected(reason)
    error = run.error
    assert error is not None
    run.status, run.error, run.auto_steps = RUNNING, None, 0
    detail = {"error": error, **({"reason": event.reason} if event.reason else {})}
    if (error.get("type") == "expression_error" or error.get("raised")) \
            and error.get("state") is None:
        run.record(EXECUTION_RETRIED, detail=detail)
        run.context = _initial_context(run)
        run.history[-1]["context"] = run.context
        run.settle()
        return
    run.record(EXECUTION_RETRIED, detail=detail)
    if error.get("type") == "invoke_failed":
        state = run.machine.states[run.state]
        run.start_work(state.transition(error["transition"]), 1)
        if state.has_timers:
            run.arm_state_timers(state)
    else:
        run.settle()


def _continue(run: _Run, event: Continue) -> None:
    if run.status != RUNNING:
        raise _Rejected(f"only a running execution continues; this one is {run.status}")
    run.settle()


_HANDLERS: dict[type, Callable[[_Run, Any], None]] = {
    Start: _start, Action: _action, TimerFired: _timer_fired, WorkSucceeded: _work_reported,
    WorkFailed: _work_reported, Cancel: _cancel, Retry: _retry, Continue: _continue,
}
