"""Advancing: the engine on an execution's pending inputs, then ONE save; and the inline loop.

One advance = one unit of the store: the new snapshot, all its history rows, the inbox
items it consumed, the timers and work it asked for. The engine runs before the store's
transaction opens, so the write lock (all of the database on SQLite) is held only to write;
the compare-and-swap proves the snapshot read is still current, and a lost race is retried
from a fresh read. With nothing to apply, nothing is written at all.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import DataError, IntegrityError
from django.utils import timezone

from executions import engine
from executions.models import Execution, InboxItem, Work
from executions.runtime import queue
from executions.runtime import store as stores
from executions.runtime.store import Conflict, Step
from expressions import sandbox
from machines.definition import Expr

log = logging.getLogger(__name__)

CAS_RETRIES = 50
INBOX_BATCH = 100
START_BATCH = 50


class Refused(Exception):
    """The engine rejected an input that had to be applied now (nothing is saved)."""

    def __init__(self, reason: str, available_actions: tuple[str, ...] = ()):
        super().__init__(reason)
        self.reason = reason
        self.available_actions = available_actions


@dataclass
class Advanced:
    execution: Execution
    work: list[Work] = field(default_factory=list)  # created by this advance, to perform
    applied: int = 0  # inbox items consumed
    progressed: bool = False  # anything changed at all


# Settings and environment ----------------------------------------------------------------
def _config(name: str) -> Any:
    return settings.DATA_MACHINES[name]


def evaluate(expr: Expr, names: dict, time_limit: float | None = None) -> Any:
    """The sandbox with the configured bounds."""
    return sandbox.evaluate(
        expr,
        names,
        time_limit=time_limit or _config("EXPRESSION_TIME_LIMIT"),
        max_result_bytes=_config("EXPRESSION_MAX_RESULT_BYTES"),
    )


def _env(execution: Execution, *, max_steps: int | None = None) -> engine.Env:
    return engine.Env(
        now=time.time(),
        evaluate=evaluate,
        seed=random.getrandbits(32),
        execution=_facts(execution),
        step_limit=_config("STEP_LIMIT"),
        max_steps=max_steps,
    )


def _facts(execution: Execution) -> dict:
    """The read-only `execution` object expressions see."""
    return {
        "id": str(execution.id),
        "machine": execution.machine_id,
        "version": execution.machine_version.version,
        "started_at": (execution.created_at or timezone.now()).isoformat(),
    }


# Advancing -------------------------------------------------------------------------------
def advance(execution_id: Any, *, max_items: int = INBOX_BATCH) -> Advanced:
    """Apply pending inbox items in one unit of the store (retried on a compare-and-swap
    miss). With nothing to apply, nothing is written."""
    store = stores.active
    for _ in range(CAS_RETRIES):
        execution = store.read_execution(execution_id)
        step = compute(execution, pending_items(execution, max_items))
        if not step.changed:
            return Advanced(execution)
        try:
            with store.atomic():
                advanced = save(execution, step)
        except Conflict:
            time.sleep(random.uniform(0, 0.005))
            continue
        store.remember(advanced.execution)
        return advanced
    raise RuntimeError(f"could not advance {execution_id}: too many concurrent writers")


def pending_items(execution: Execution, max_items: int = INBOX_BATCH) -> list[InboxItem]:
    """The inbox items the next advance applies (none while a running execution continues)."""
    if not execution.has_pending or (execution.status == engine.RUNNING
                                     and execution.engine_state):
        return []
    latency = execution.execution_mode == "async-latency"
    return stores.active.pending_items(execution, 1 if latency else max_items)


def compute(execution: Execution, items: list[InboxItem]) -> Step:
    """Run the engine on the execution's snapshot and items (no store access). Each item
    gets its outcome: applied, rejected (recorded in history) or ignored."""
    return _compute(execution, items, refuse=False)


def compute_or_refuse(execution: Execution, items: list[InboxItem]) -> Step:
    """`compute`, for inputs that are applied as they are accepted: a rejected item raises
    Refused, so the caller's transaction rolls back and nothing is stored."""
    return _compute(execution, items, refuse=True)


def _compute(execution: Execution, items: list[InboxItem], *, refuse: bool) -> Step:
    machine = execution.machine_version.parsed()
    latency_mode = execution.execution_mode == "async-latency"
    env = _env(execution, max_steps=1 if latency_mode else None)
    snapshot = execution.snapshot() if execution.engine_state else None
    step = Step(snapshot)

    def apply(event: engine.Event) -> engine.Result:
        result = engine.transition(machine, step.snapshot, event, env)
        step.snapshot = result.snapshot
        step.history.extend(result.history)
        step.effects.extend(result.effects)
        return result

    if snapshot is None:  # not started yet: the execution row holds what it starts with
        apply(engine.Start(execution.input, execution.actor or None))
    elif snapshot.status == engine.RUNNING:
        apply(engine.Continue())
    assert step.snapshot is not None
    if step.snapshot.status != engine.RUNNING:
        for item in items:
            result = apply(event_of(item))
            if refuse and result.rejected:
                raise Refused(result.rejected, result.available_actions)
            item.outcome = (
                InboxItem.APPLIED if not result.rejected
                else InboxItem.REJECTED if result.history else InboxItem.IGNORED
            )
            item.reason = result.rejected or ""
            _attach_duration(item, result.history)
            step.processed.append(item)
            if step.snapshot.status == engine.RUNNING:
                break  # async-latency: one step per task; the rest waits for the next one
    return step


def save(execution: Execution, step: Step, *, only_if_inbox_empty: bool = False) -> Advanced:
    """Persist a step (inside the caller's transaction); Conflict when the snapshot it was
    computed from is no longer current. `only_if_inbox_empty`: also when items wait."""
    if not step.changed:
        return Advanced(execution)
    work = stores.active.save(execution, step, only_if_inbox_empty=only_if_inbox_empty)
    return Advanced(execution, work, applied=len(step.processed), progressed=True)


def event_of(item: InboxItem) -> engine.Event:
    """The engine event an inbox item stands for."""
    payload, actor = item.payload, item.actor or None
    if item.kind == InboxItem.ACTION:
        return engine.Action(payload["action"], payload.get("input"), actor)
    if item.kind == InboxItem.TIMER:
        return engine.TimerFired(payload["token"])
    if item.kind == InboxItem.RESULT:
        if payload["ok"]:
            return engine.WorkSucceeded(payload["token"], payload.get("output"), actor)
        return engine.WorkFailed(payload["token"], payload.get("error") or {}, actor)
    if item.kind == InboxItem.CANCEL:
        return engine.Cancel(actor, payload.get("reason"))
    if item.kind == InboxItem.RETRY:
        return engine.Retry(actor)
    raise ValueError(f"unknown inbox kind {item.kind!r}")


def _attach_duration(item: InboxItem, entries: tuple[dict, ...]) -> None:
    """Work results carry how long the work took; put it on the history entry they made."""
    duration = item.payload.get("duration_ms") if item.kind == InboxItem.RESULT else None
    if duration is None:
        return
    for entry in entries:
        if entry["kind"] in (engine.WORK_SUCCEEDED, engine.WORK_FAILED):
            entry["duration_ms"] = duration


# Starting many at once (async-throughput) ------------------------------------------------
def start_waiting(*, deadline: float) -> int | None:
    """async-throughput: one pass over the executions not started yet, in id order, applying
    the starts of up to START_BATCH of them per transaction; then each goes on to its next
    pause.

    One write (one lock, one commit) for many starts is what makes this mode fast; the
    starter task (tasks.start_task) calls this until a pass finds nothing. Returns how many
    it started, or None when the deadline came before the pass was done.
    """
    store = stores.active
    started, after = 0, None
    while True:
        waiting = store.executions_not_started(after, START_BATCH)
        for advanced in _start_together(waiting):
            started += 1
            store.remember(advanced.execution)
            continue_inline(advanced, deadline=deadline, work=ENQUEUE)
        if len(waiting) < START_BATCH:
            return started
        if time.monotonic() >= deadline:
            return None
        after = waiting[-1].pk


def _start_together(executions: list[Execution]) -> list[Advanced]:
    """Apply the starts of these executions in ONE transaction (Store.save_starts), each
    with its own compare-and-swap.

    One that cannot be started is logged and left waiting (the sweeper wakes a starter for
    it again later) without holding up the others: the engine runs for each on its own, and
    when the transaction fails on one's data, each is stored in a transaction of its own.
    """
    steps = []
    for execution in executions:
        try:
            steps.append((execution, compute(execution, pending_items(execution))))
        except Exception:
            log.exception("could not start execution %s", execution.pk)
    return _store_starts(steps)


def _store_starts(steps: list[tuple[Execution, Step]]) -> list[Advanced]:
    if not steps:
        return []
    try:
        saved = stores.active.save_starts(steps)
    except (DataError, IntegrityError):
        if len(steps) == 1:
            log.exception("could not start execution %s", steps[0][0].pk)
            return []
        return [advanced for step in steps for advanced in _store_starts([step])]
    return [Advanced(execution, work, applied=len(step.processed), progressed=True)
            for execution, step, work in saved]


# The inline loop -------------------------------------------------------------------------
# What the loop does with the work an advance created: perform it here (sync mode) or
# enqueue it for a worker. The deadline is the loop's: work performed here gives the caller
# back by then (performers.PERFORM), what is left goes on through the queue.
WorkPolicy = Callable[[Any, Work, float], bool]  # (execution id, work, deadline) -> performed


def ENQUEUE(execution_id: Any, work: Work, deadline: float | None = None) -> bool:
    queue.enqueue_work(work.pk, work.kind)
    return False


# Performing work here can start or trigger other executions, which comes back into
# acceptance, above this module: executions.apps plugs performers.PERFORM in here, as it
# plugs in the store, so that no runtime module imports one above it.
perform_here: WorkPolicy | None = None


def policy_for(mode: str) -> WorkPolicy:
    """sync mode performs its work in the caller's process; the others in workers."""
    if mode != "sync":
        return ENQUEUE
    if perform_here is None:
        raise RuntimeError("no work performer in use: executions.apps sets it")
    return perform_here


_inline = threading.local()


def _running_inline() -> dict:
    """Executions advanced by a loop on this thread -> whether new input arrived meanwhile."""
    if not hasattr(_inline, "ids"):
        _inline.ids = {}
    return _inline.ids


def run_inline(execution_id: Any, *, deadline: float, work: WorkPolicy) -> bool:
    """Advance in this process until the next pause, handling work by `work` (policy_for:
    performed here or enqueued). True when the execution paused before the deadline; past
    it, what is left
    goes on asynchronously through the queue."""
    return _loop(execution_id, None, deadline, work)


def continue_inline(advanced: Advanced, *, deadline: float, work: WorkPolicy) -> bool:
    """run_inline, after an advance done already (by the caller, in its transaction)."""
    return _loop(advanced.execution.pk, advanced, deadline, work)


def _loop(execution_id: Any, advanced: Advanced | None, deadline: float,
          policy: WorkPolicy) -> bool:
    active = _running_inline()
    if execution_id in active:  # re-entered through the queue's sync mode: let the outer loop
        active[execution_id] = True
        return True
    active[execution_id] = False
    try:
        advanced = advanced or advance(execution_id)
        while True:
            performed = False
            for work in advanced.work:
                if time.monotonic() < deadline:
                    performed = policy(execution_id, work, deadline) or performed
                else:
                    queue.enqueue_work(work.pk, work.kind)
            running = advanced.execution.status == engine.RUNNING and advanced.progressed
            poked, active[execution_id] = active[execution_id], False
            more = running or performed or poked or advanced.applied == INBOX_BATCH
            if time.monotonic() >= deadline:
                if more:
                    queue.enqueue_advance(execution_id)
                return False
            if not more:
                return True
            advanced = advance(execution_id)
    finally:
        active.pop(execution_id, None)


def deadline_for(execution: Execution, timeout: float | None) -> float:
    """Callers wait up to `timeout`, else the machine's timeout_seconds; a sync run never
    longer than its machine's timeout_seconds (end to end: work performed inline included)."""
    limit = execution.machine_version.parsed().timeout_seconds
    if timeout is None or (execution.execution_mode == "sync" and timeout > limit):
        timeout = limit
    return time.monotonic() + timeout


def schedule(execution_id: Any, mode: str | None = None) -> None:
    """Make sure someone advances the execution: inline (sync mode) or a queued task."""
    active = _running_inline()
    if execution_id in active:
        active[execution_id] = True  # the loop on this thread's stack advances again
        return
    store = stores.active
    if mode is None:
        mode = store.execution_mode(execution_id)
    if mode == "sync":
        execution = store.read_execution(execution_id)
        run_inline(execution_id, deadline=deadline_for(execution, None), work=policy_for(mode))
    elif queue.queue_in_database():  # the task commits (or not) with what it advances
        queue.enqueue_advance(execution_id, mode)
    else:
        store.on_commit(lambda: queue.enqueue_advance(execution_id, mode))


def advance_queued(execution_id: Any, mode: str | None = None, *, budget: float) -> None:
    """What a queued advance task does: advance until the next pause (at most `budget`
    seconds), or one step in async-latency mode, re-enqueued behind other executions."""
    store = stores.active
    if mode is None:
        mode = store.execution_mode(execution_id)
    if mode == "async-latency":
        advanced = advance(execution_id)
        for work in advanced.work:
            queue.enqueue_work(work.pk, work.kind)
        if advanced.execution.status == engine.RUNNING or store.has_pending(execution_id):
            queue.enqueue_advance(execution_id, mode)  # re-enqueued behind others: fair
        return
    run_inline(execution_id, deadline=time.monotonic() + budget, work=policy_for(mode))
