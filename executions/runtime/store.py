"""The store: what the runtime needs from persistence, as one small interface.

The runtime never touches the ORM itself: it reads an execution and its pending inbox
items, and saves what the engine made of them as ONE unit (compare-and-swap of the
snapshot, history rows, inbox marks, timer and work rows). `sqlstore.SqlStore` is the
database; `memstore.MemoryStore` keeps everything in dicts so the runtime's tests run
without one. `active` is the store in use (set by the executions app; tests may swap it).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from django.conf import settings

from executions import engine
from executions.models import Execution, InboxItem, Work
from expressions import values
from expressions.values import InvalidValue, Limits
from machines import contracts
from machines.models import MachineVersion


class Conflict(Exception):
    """Another process advanced the execution between our read and our write."""


class Duplicate(Exception):
    """An execution with the same idempotency key (or business key) exists already."""


@dataclass
class Step:
    """What the engine made of an execution and its inbox items, not yet persisted."""

    snapshot: engine.Snapshot | None
    history: list[dict] = field(default_factory=list)
    effects: list[engine.Effect] = field(default_factory=list)
    processed: list[InboxItem] = field(default_factory=list)  # consumed, with their outcome
    attributes: dict | None = None  # the searchable attributes after it (None: unchanged)
    business_key: str | None = None  # the key it gives the execution (None: unchanged)

    @property
    def changed(self) -> bool:
        return bool(self.history or self.processed)


@dataclass
class Stale:
    """What a dead process left behind (`Store.stale`)."""

    executions: set = field(default_factory=set)  # ids to advance again
    starts_waiting: bool = False  # async-throughput starts no starter took
    work: list = field(default_factory=list)  # (work id, kind) to perform (again)


class Store(Protocol):
    # Transactions
    def atomic(self) -> AbstractContextManager[Any]: ...
    def on_commit(self, callback: Callable[[], object]) -> None: ...
    def in_transaction(self) -> bool: ...

    # Machines and executions
    latest_versions: dict[str, MachineVersion]  # the latest version of each machine started
    def machine_version(self, machine_id: str, version: int | None = None
                        ) -> MachineVersion: ...
    def insert_execution(self, execution: Execution, *, if_latest: bool) -> bool: ...
    def started_with_key(self, machine_id: str, idempotency_key: str) -> Execution: ...
    def holding_key(self, machine_id: str, business_key: str) -> Execution | None: ...
    def read_execution(self, execution_id: Any, *, lock: bool = False) -> Execution: ...
    def refresh(self, execution: Execution) -> None: ...
    def execution_mode(self, execution_id: Any) -> str: ...
    def executions_not_started(self, after: Any, limit: int) -> list[Execution]: ...
    def children(self, execution_id: Any, token: str) -> list[Execution]: ...
    def parent_awaits(self, child: Execution) -> bool: ...

    # The process cache of executions it persisted last (the interactive fast path)
    def remembered(self, execution_id: Any) -> Execution | None: ...
    def remember(self, execution: Execution) -> None: ...
    def forget(self, execution_id: Any) -> None: ...

    # Inbox
    def pending_items(self, execution: Execution, limit: int) -> list[InboxItem]: ...
    def earlier_item(self, execution: Execution, idempotency_key: str) -> InboxItem | None: ...
    def add_item(self, item: InboxItem) -> None: ...
    def refresh_item(self, item: InboxItem) -> None: ...
    def all_processed(self, item_ids: list[int]) -> bool: ...
    def has_pending(self, execution_id: Any) -> bool: ...

    # Saving a step: ONE unit, Conflict (before anything is written) when not current
    def save(self, execution: Execution, step: Step, *, only_if_inbox_empty: bool = False
             ) -> list[Work]: ...
    def save_starts(self, steps: list[tuple[Execution, Step]]
                    ) -> list[tuple[Execution, Step, list[Work]]]: ...

    # Timers
    def claim_due_timers(self, now: float, limit: int) -> list[tuple[Any, str]]: ...
    def next_timer_due(self) -> float | None: ...

    # Work
    def claim_work(self, work_id: int) -> Work | None: ...
    def finish_work(self, work_id: int) -> None: ...
    def deliver(self, work: Work, execution_id: Any, payload: dict, key: str,
                actor: str) -> None: ...

    # Recovery
    def stale(self, stale_after: float) -> Stale: ...


class _Unset:
    """The store before the executions app is ready."""

    def __getattr__(self, name):
        raise RuntimeError("no store in use: executions.apps sets store.active")


active: Store = _Unset()


@contextmanager
def using(store: Store) -> Iterator[Store]:
    """Run with another store in use (tests)."""
    global active
    previous, active = active, store
    try:
        yield store
    finally:
        active = previous


# The rows a step writes, the same for every store ---------------------------------------
SNAPSHOT_COLUMNS = ("status", "state", "context", "input", "result", "error")
HISTORY_FIELDS = ("transition", "from_state", "to_state", "action", "actor")
HISTORY_JSON_FIELDS = ("input", "context", "output", "error", "guards", "detail")


def snapshot_columns(snapshot: engine.Snapshot, now: datetime) -> dict:
    """The execution columns a step writes."""
    data = snapshot.to_dict()
    columns = {key: data.pop(key) for key in SNAPSHOT_COLUMNS}
    columns.update(
        engine_state=data,
        updated_at=now,
        finished_at=now if snapshot.status in engine.TERMINAL_STATUSES else None,
    )
    return columns


def swapped(execution: Execution, columns: dict) -> None:
    """The execution as the compare-and-swap just wrote it."""
    for key, value in columns.items():
        setattr(execution, key, value)
    execution.version += 1


def history_row(execution: Execution, entry: dict) -> dict:
    """The HistoryEntry row of an engine history entry, as {field attname: value}."""
    row = {
        "execution_id": execution.pk,
        "machine_version_id": execution.machine_version_id,
        "seq": entry["seq"],
        "kind": entry["kind"],
        "at": datetime.fromtimestamp(entry["at"], tz=UTC),
        "duration_ms": entry.get("duration_ms"),
        "branch": (entry.get("detail") or {}).get("branch") or "",
    }
    for key in HISTORY_FIELDS:
        row[key] = entry.get(key) or ""
    for key in HISTORY_JSON_FIELDS:
        row[key] = entry.get(key)
    return row


def mark_processed(items: list[InboxItem], now: datetime) -> None:
    for item in items:
        item.processed_at = now


# What may be stored: every store calls these before it writes anything ------------------
def limits() -> Limits:
    """The size bounds of settings.DATA_MACHINES (README: configuration), worked out again
    only when the setting is another object (settings are not changed in place; tests
    replace them)."""
    global _limits
    config = settings.DATA_MACHINES
    known = _limits
    if known is not None and known[0] is config:
        return known[1]
    default = Limits()
    bounds = Limits(
        input=config.get("MAX_INPUT_CHARS", default.input),
        context=config.get("MAX_CONTEXT_CHARS", default.context),
        history_row=config.get("MAX_HISTORY_ROW_CHARS", default.history_row),
        error_text=config.get("MAX_ERROR_CHARS", default.error_text),
    )
    _limits = (config, bounds)
    return bounds


_limits: tuple[dict, Limits] | None = None


def checked_step(execution: Execution, step: Step) -> Step:
    """The step as it may be stored (expressions.values): its errors bounded (texts escaped
    and cut, never refused), and when what the engine produced breaks a bound (the whole
    context, a history row, a number out of range, text a database cannot hold, a time past
    9999) the step that FAILS the execution instead, with a `value_error` saying what and
    where. Called before anything of the step is written: nothing half-written."""
    snapshot = step.snapshot
    if snapshot is None:
        return step
    bounds = limits()
    if snapshot.error is not None:
        snapshot = step.snapshot = dataclasses.replace(
            snapshot, error=values.bounded_error(snapshot.error, bounds))
    for entry in step.history:
        _bound_errors(entry, bounds)
    try:
        values.check_history_rows(step.history, bounds,
                                  (snapshot.context, _check_snapshot(snapshot, bounds)))
    except InvalidValue as problem:
        return failed_step(execution, step, problem)
    return keyed_step(execution, step) if execution.key_scope else step


def _bound_errors(entry: dict, bounds: Limits) -> None:
    """The errors a history entry carries (its own, a retry's detail), bounded in place."""
    if entry.get("error") is not None:
        entry["error"] = values.bounded_error(entry["error"], bounds)
    detail = entry.get("detail")
    if isinstance(detail, dict) and detail.get("error") is not None:
        detail["error"] = values.bounded_error(detail["error"], bounds)


def _check_snapshot(snapshot: engine.Snapshot, bounds: Limits) -> int:
    """Check what the snapshot's columns hold; the size of its context."""
    size = values.check_context(snapshot.context, bounds)
    if snapshot.result is not None:
        values.check_sized(snapshot.result, "result", bounds.context)
    if snapshot.timer is not None:
        values.check_timestamp(snapshot.timer.get("due"), "timer.due")
    if snapshot.queued:
        values.check_sized(list(snapshot.queued), "queued actions", bounds.context, "queued")
    return size


def keyed_step(execution: Execution, step: Step) -> Step:
    """The step with the business key it gives the execution (`step.business_key`), when
    its machine reads the key from the context (docs/language.md, "Business key"): while
    the path is missing or null the execution has no key; once set the key is fixed, and
    a step changing it fails the execution (`key_changed`), as does a value that is not a
    key (`value_error`). Dropping it from the context keeps the key. Whether another
    execution holds it, the store's unique index settles (`key_in_use_step`)."""
    key = _context_key(execution.machine_version)
    if key is None or step.snapshot is None:
        return step
    try:
        value = contracts.context_key(key, step.snapshot.context)
    except contracts.KeyUnavailable as problem:
        return failed_step(execution, step, InvalidValue(str(problem), key.source))
    if value is None or value == execution.business_key:
        return step
    if execution.business_key is not None:
        return failing_step(execution, step, {
            "type": "key_changed", "path": key.source,
            "message": f"The business key {key.source} changed from "
                       f"{execution.business_key!r} to {value!r}: once set, an execution's "
                       "key is fixed.",
            "key": execution.business_key, "value": value})
    step.business_key = value
    return step


def _context_key(version: MachineVersion) -> contracts.Key | None:
    """The version's key when it is read from the context, by content hash (the key
    depends on the document alone): a dict lookup, where `parsed()` (a locked LRU) cost
    1.8 µs on every step of a machine with an input key."""
    try:
        return _context_keys[version.content_hash]
    except KeyError:
        pass
    if len(_context_keys) >= 1024:
        _context_keys.clear()
    key = version.parsed().key
    found = _context_keys[version.content_hash] = key if key and key.in_context else None
    return found


_context_keys: dict[str, contracts.Key | None] = {}


def key_in_use_step(execution: Execution, step: Step, holder: Execution | None) -> Step:
    """Instead of a step that gives the execution a business key another execution holds
    (the store's unique index refused it): the execution failed with `key_in_use`, naming
    the holder; nothing of the step is kept but the inputs it consumed."""
    key = step.business_key
    held = f"execution {holder.short_id}" if holder is not None else "another execution"
    return failing_step(execution, step, {
        "type": "key_in_use", "key": key,
        "message": f"The business key {key!r} of {execution.machine_id!r} is held by {held}.",
        "holder": str(holder.pk) if holder is not None else None})


def failed_step(execution: Execution, step: Step, problem: InvalidValue) -> Step:
    """Instead of `step`: the execution as it was before, failed with a `value_error`
    (see `failing_step`)."""
    where = problem.path or "the value"
    return failing_step(execution, step, {
        "type": "value_error", "kind": problem.kind,
        "message": f"A value the machine produced cannot be stored: {problem.message} "
                   f"(at {where}, in state {execution.state}).",
        "path": problem.path})


def failing_step(execution: Execution, step: Step, error: dict) -> Step:
    """Instead of `step`: the execution as it was before, failed with `error` (its `state`
    added).

    Nothing of what the engine produced is kept but the inputs it consumed (they were
    applied: they led to the failure). A timer or work the execution had outstanding is
    canceled, a parent waiting on it hears of the failure, and Retry resumes from the last
    state stored (docs/runtime.md).
    """
    before = execution.snapshot() if execution.engine_state else None
    if before is None:  # the start itself produced it: fail where it starts
        before = engine.Snapshot(status=engine.FAILED, state=execution.state,
                                 context={}, input=execution.input)
    error = values.bounded_error({**error, "state": before.state}, limits())
    actor = next((entry.get("actor") for entry in step.history if entry.get("actor")), None)
    at = next((entry["at"] for entry in reversed(step.history) if "at" in entry), None)
    effects: list[engine.Effect] = []
    if before.timer is not None:
        effects.append(engine.CancelTimer(before.timer["token"]))
    if before.work is not None and before.work.get("token") is not None:
        effects.append(engine.CancelWork(before.work["token"], before.work["kind"]))
    effects.append(engine.NotifyParent(engine.FAILED, error=error))
    seq = before.seq + 1
    entry = {"seq": seq, "kind": engine.EXECUTION_FAILED,
             "at": at if isinstance(at, (int, float)) else datetime.now(UTC).timestamp(),
             "actor": actor, "error": error}
    snapshot = dataclasses.replace(before, status=engine.FAILED, error=error, seq=seq,
                                   auto_steps=0, timer=None, work=None, queued=())
    return Step(snapshot, [entry], effects, step.processed)


def checked_result(payload: dict) -> dict:
    """A work result as it may be stored in the inbox: its error bounded; an output that
    cannot be stored (or is larger than a whole context may be) becomes a failure of the
    work with a `value_error`, which the machine handles like any other error."""
    bounds = limits()
    payload = dict(payload)
    if payload.get("error") is not None:
        payload["error"] = values.bounded_error(payload["error"], bounds)
    if payload.get("ok"):
        try:
            values.check_sized(payload.get("output"), "output", bounds.context)
        except InvalidValue as problem:
            payload.update(ok=False, output=None, error=values.bounded_error({
                "type": "value_error", "kind": problem.kind,
                "message": f"The result cannot be stored: {problem.message}",
                "path": problem.path}, bounds))
    return payload
