"""The store: what the runtime needs from persistence, as one small interface.

The runtime never touches the ORM itself: it reads an execution and its pending inbox
items, and saves what the engine made of them as ONE unit (compare-and-swap of the
snapshot, history rows, inbox marks, timer and work rows). `sqlstore.SqlStore` is the
database; `memstore.MemoryStore` keeps everything in dicts so the runtime's tests run
without one. `active` is the store in use (set by the executions app; tests may swap it).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from executions import engine
from executions.models import Execution, InboxItem, Work
from machines.models import MachineVersion


class Conflict(Exception):
    """Another process advanced the execution between our read and our write."""


class Duplicate(Exception):
    """An execution with the same idempotency key exists already."""


@dataclass
class Step:
    """What the engine made of an execution and its inbox items, not yet persisted."""

    snapshot: engine.Snapshot | None
    history: list[dict] = field(default_factory=list)
    effects: list[engine.Effect] = field(default_factory=list)
    processed: list[InboxItem] = field(default_factory=list)  # consumed, with their outcome

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
    def read_execution(self, execution_id: Any, *, lock: bool = False) -> Execution: ...
    def refresh(self, execution: Execution) -> None: ...
    def execution_mode(self, execution_id: Any) -> str: ...
    def executions_not_started(self, after: Any, limit: int) -> list[Execution]: ...
    def children(self, execution_id: Any, token: str) -> list[Execution]: ...

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

