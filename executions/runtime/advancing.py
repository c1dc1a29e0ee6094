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
from executions.runtime import pool, pool_child, queue
from executions.runtime import store as stores
from executions.runtime.store import Conflict, Step
from expressions.errors import ExpressionError
from machines.definition import Expr
from machines.lru import LRU

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


def _env(execution: Execution, *, max_steps: int | None = None) -> dict:
    """The engine's Env as data, for the pool's child (it binds the sandbox itself)."""
    return {"now": time.time(), "seed": random.getrandbits(32), "execution": _facts(execution),
            "step_limit": _config("STEP_LIMIT"), "max_steps": max_steps}


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
    """The engine runs in a child of the pool (executions/runtime/pool.py), never here: one
    round trip for the lead event (Start, or Continue of a running execution) and every
    item. When the child dies on event i (killed past its time limit, crashed, out of
    memory), the events before i are computed again in a fresh child, and event i fails the
    execution here through the engine's own failure path, with an `evaluate` that runs no
    code: it raises the child's error (kind timeout/resource/crashed, the expression's path)
    at the event's first expression. Items after i stay pending for the next advance."""
    version = execution.machine_version
    latency_mode = execution.execution_mode == "async-latency"
    snapshot = execution.snapshot() if execution.engine_state else None
    lead: list[engine.Event] = []
    if snapshot is None:  # not started yet: the execution row holds what it starts with
        lead.append(engine.Start(execution.input, execution.actor or None))
    elif snapshot.status == engine.RUNNING:
        lead.append(engine.Continue())
    events = lead + [event_of(item) for item in items]
    if not events:  # nothing to apply: no round trip
        return Step(snapshot)
    env = _env(execution, max_steps=1 if latency_mode else None)
    key = f"{version.machine_id}:{version.version}:{version.content_hash}"
    request = {
        "machine_key": key,
        "document": lambda: _documents.get(key, lambda: version.definition),
        "snapshot": snapshot.to_dict() if snapshot is not None else None,
        "events": [pool_child.event_data(event) for event in events], "lead": len(lead),
        "refuse": refuse, "env": env, "time_limit": _config("EXPRESSION_TIME_LIMIT"),
        "max_result_bytes": _config("EXPRESSION_MAX_RESULT_BYTES"),
    }
    try:
        data = pool.compute(**request)
    except pool.Failure as failure:
        data = _failed(version.parsed(), snapshot, events, env, failure, request)
    step = Step(engine.Snapshot.from_dict(data["snapshot"]))
    step.history = data["history"]
    step.effects = [pool_child.effect_from(effect) for effect in data["effects"]]
    step.attributes = data.get("attributes")
    results = data["results"]
    offset = sum(result["history"] for result in results[:len(lead)])
    for index, item in enumerate(items, start=len(lead)):
        if index >= len(results):
            break
        result = results[index]
        if refuse and result["rejected"]:
            raise Refused(result["rejected"], tuple(result["available_actions"]))
        entries = step.history[offset:offset + result["history"]]
        offset += result["history"]
        item.outcome = (
            InboxItem.APPLIED if not result["rejected"]
            else InboxItem.REJECTED if entries else InboxItem.IGNORED
        )
        item.reason = result["rejected"] or ""
        _attach_duration(item, entries)
        step.processed.append(item)
    return step


# The documents sent to the pool's children, by content key: read from the database once
# per process (the field is deferred), not once per child.
_documents: LRU[dict] = LRU(256)


def _failed(machine, snapshot: engine.Snapshot | None, events: list[engine.Event], env: dict,
            failure: pool.Failure, request: dict) -> dict:
    """The step when the pool's child could not finish event `failure.index`: the events
    before it (computed again, in a fresh child), then that event failing the execution."""
    log.warning("execution %s: %s %s (%s)", env["execution"]["id"], failure.kind,
                failure.message, failure.path)
    index = min(max(failure.index, 0), len(events) - 1)
    data: dict = {"snapshot": request["snapshot"], "history": [], "effects": [],
                  "results": []}
    if index > 0:
        try:
            data = pool.compute(**{**request, "stop_before": index})
        except pool.Failure:
            index = 0
        index = len(data["results"])
        if index >= len(events):  # the events replayed fine this time
            return data
    where = f" in {failure.path}" if failure.path else ""
    messages = {
        "timeout": f"the expression{where} ran past its time limit and its process was "
                   "stopped",
        "resource": f"the expression{where} used more memory than its process may "
                    f"({pool.config('POOL_MEMORY_MB')} MiB) and its process was stopped",
        "crashed": f"the evaluation of the expression{where} crashed its process "
                   f"({failure.message})",
        "result": f"what the step computed cannot be stored ({failure.message})",
    }
    error = ExpressionError(messages.get(failure.kind, failure.message), kind=failure.kind,
                            path=failure.path)

    def evaluate(expr: Expr, names: dict) -> Any:  # runs no code: the child's error
        raise error

    current = engine.Snapshot.from_dict(data["snapshot"]) if data["snapshot"] else None
    result = engine.transition(machine, current, events[index], engine.Env(
        now=env["now"], evaluate=evaluate, seed=env["seed"], execution=env["execution"],
        step_limit=env["step_limit"], max_steps=env["max_steps"]))
    return {"snapshot": result.snapshot.to_dict(),
            "history": data["history"] + list(result.history),
            "effects": data["effects"] + [pool_child.effect_data(e) for e in result.effects],
            "results": data["results"] + [{
                "rejected": result.rejected, "available_actions": list(result.available_actions),
                "history": len(result.history)}]}


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
        return engine.Retry(actor, payload.get("reason"))
    raise ValueError(f"unknown inbox kind {item.kind!r}")


def _attach_duration(item: InboxItem, entries: list[dict] | tuple[dict, ...]) -> None:
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
