"""The store in memory: `MemoryStore`, for tests of the runtime without a database.

Model instances are kept unsaved in dicts (copies in and out, as rows would be); a
transaction is a copy of everything, put back when it fails. It has no process cache of
recent executions (every trigger takes the locked path) and no locks: one thread.
"""
from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from django.utils import timezone

from executions import engine
from executions.models import Execution, InboxItem, Timer, Work
from executions.runtime import effects
from executions.runtime.store import (
    Conflict,
    Duplicate,
    Stale,
    Step,
    checked_result,
    checked_step,
    history_row,
    key_in_use_step,
    mark_processed,
    snapshot_columns,
    swapped,
)
from machines import language
from machines.models import MachineVersion


class MemoryStore:
    def __init__(self) -> None:
        self.latest_versions: dict[str, MachineVersion] = {}
        self.versions: dict[str, list[MachineVersion]] = {}
        self.executions: dict[str, Execution] = {}
        self.inbox: dict[int, InboxItem] = {}
        self.history: dict[str, list[dict]] = {}
        self.timers: dict[str, Timer] = {}
        self.work: dict[int, Work] = {}
        self._ids = itertools.count(1)
        self._depth = 0
        self._after_commit: list[Callable[[], object]] = []

    # Test helpers
    def add_machine(self, source: str) -> MachineVersion:
        """Store a new version of the machine defined by `source` (YAML or JSON)."""
        document, source_format = language.parse_text(source)
        language.build(document)
        versions = self.versions.setdefault(document["id"], [])
        number = len(versions) + 1
        version = MachineVersion(
            pk=next(self._ids), machine_id=document["id"], version=number, source=source,
            source_format=source_format, definition={**document, "version": number},
            content_hash=language.canonical_hash(document))
        versions.append(version)
        return version

    def history_of(self, execution_id: Any) -> list[dict]:
        return self.history.get(str(execution_id), [])

    # Transactions
    @contextmanager
    def atomic(self) -> Iterator[None]:
        saved = self._copy() if self._depth == 0 else None
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            if saved is not None:
                self._restore(saved)
                self._after_commit = []
            raise
        self._depth -= 1
        if self._depth == 0:
            callbacks, self._after_commit = self._after_commit, []
            for callback in callbacks:
                callback()

    def on_commit(self, callback: Callable[[], object]) -> None:
        if self._depth:
            self._after_commit.append(callback)
        else:
            callback()

    def in_transaction(self) -> bool:
        return self._depth > 0

    def _copy(self) -> tuple:
        return ({k: copy.copy(v) for k, v in self.executions.items()},
                {k: copy.copy(v) for k, v in self.inbox.items()},
                {k: list(v) for k, v in self.history.items()},
                dict(self.timers),
                {k: copy.copy(v) for k, v in self.work.items()})

    def _restore(self, saved: tuple) -> None:
        self.executions, self.inbox, self.history, self.timers, self.work = saved

    # Machines and executions
    def machine_version(self, machine_id: str, version: int | None = None) -> MachineVersion:
        versions = self.versions.get(machine_id, [])
        found = [v for v in versions if version is None or v.version == version]
        if not found:
            raise MachineVersion.DoesNotExist(
                f"no machine named {machine_id!r}" if version is None
                else f"no version {version} of machine {machine_id!r}")
        return found[-1]

    def insert_execution(self, execution: Execution, *, if_latest: bool) -> bool:
        if if_latest and self.versions[execution.machine_id][-1] is not execution.machine_version:
            return False
        key = execution.idempotency_key
        if key is not None and any(e.machine_id == execution.machine_id
                                   and e.idempotency_key == key
                                   for e in self.executions.values()):
            raise Duplicate()
        if execution.business_key is not None and self.holding_key(
                execution.machine_id, execution.business_key) is not None:
            raise Duplicate()
        now = timezone.now()
        execution.created_at = execution.created_at or now
        execution.updated_at = now
        execution._state.adding = False
        self.executions[str(execution.pk)] = copy.copy(execution)
        return True

    def holding_key(self, machine_id: str, business_key: str) -> Execution | None:
        for execution in self.executions.values():
            if (execution.machine_id == machine_id and execution.business_key == business_key
                    and (execution.key_scope == "always"
                         or execution.status not in engine.TERMINAL_STATUSES)):
                return copy.copy(execution)
        return None

    def started_with_key(self, machine_id: str, idempotency_key: str) -> Execution:
        for execution in self.executions.values():
            if execution.machine_id == machine_id and execution.idempotency_key == idempotency_key:
                return copy.copy(execution)
        raise Execution.DoesNotExist(idempotency_key)

    def _stored(self, execution_id: Any) -> Execution:
        try:
            return self.executions[str(execution_id)]
        except KeyError:
            raise Execution.DoesNotExist(f"no execution {execution_id}") from None

    def read_execution(self, execution_id: Any, *, lock: bool = False) -> Execution:
        execution = copy.copy(self._stored(execution_id))
        execution.has_pending = self.has_pending(execution_id)
        return execution

    def refresh(self, execution: Execution) -> None:
        stored = self._stored(execution.pk)
        for field in Execution._meta.concrete_fields:
            setattr(execution, field.attname, getattr(stored, field.attname))

    def execution_mode(self, execution_id: Any) -> str:
        return self._stored(execution_id).execution_mode

    def executions_not_started(self, after: Any, limit: int) -> list[Execution]:
        waiting = sorted(
            (e for e in self.executions.values()
             if e.version == 0 and e.status == engine.RUNNING
             and e.execution_mode == "async-throughput"
             and (after is None or str(e.pk) > str(after))),
            key=lambda e: str(e.pk))
        return [self.read_execution(e.pk) for e in waiting[:limit]]

    def children(self, execution_id: Any, token: str) -> list[Execution]:
        return [copy.copy(e) for e in self.executions.values()
                if str(e.parent_id) == str(execution_id) and e.parent_token == token]

    def parent_awaits(self, child: Execution) -> bool:
        return not any(
            (work.payload or {}).get("async") for work in self.work.values()
            if str(work.execution_id) == str(child.parent_id)
            and work.token == child.parent_token and work.kind == Work.CHILD)

    # No process cache: every input takes the locked path
    def remembered(self, execution_id: Any) -> Execution | None:
        return None

    def remember(self, execution: Execution) -> None:
        pass

    def forget(self, execution_id: Any) -> None:
        pass

    # Inbox
    def _items(self, execution_id: Any) -> list[InboxItem]:
        return [i for i in self.inbox.values() if str(i.execution_id) == str(execution_id)]

    def pending_items(self, execution: Execution, limit: int) -> list[InboxItem]:
        pending = [i for i in self._items(execution.pk) if i.processed_at is None]
        return [copy.copy(i) for i in sorted(pending, key=lambda i: i.pk)[:limit]]

    def earlier_item(self, execution: Execution, idempotency_key: str) -> InboxItem | None:
        for item in self._items(execution.pk):
            if item.idempotency_key == idempotency_key:
                return copy.copy(item)
        return None

    def add_item(self, item: InboxItem) -> None:
        if item.idempotency_key is not None and self.earlier_item(
                item.execution, item.idempotency_key) is not None:
            raise Duplicate()
        item.pk = next(self._ids)
        item.created_at = timezone.now()
        self.inbox[item.pk] = copy.copy(item)

    def refresh_item(self, item: InboxItem) -> None:
        stored = self.inbox[item.pk]
        for name in ("processed_at", "outcome", "reason"):
            setattr(item, name, getattr(stored, name))

    def all_processed(self, item_ids: list[int]) -> bool:
        return all(self.inbox[pk].processed_at is not None for pk in item_ids)

    def has_pending(self, execution_id: Any) -> bool:
        return any(i.processed_at is None for i in self._items(execution_id))

    # Saving
    def save(self, execution: Execution, step: Step, *, only_if_inbox_empty: bool = False
             ) -> list[Work]:
        assert step.snapshot is not None
        stored = self._stored(execution.pk)
        if stored.version != execution.version or (
                only_if_inbox_empty and self.has_pending(execution.pk)):
            raise Conflict()
        step = checked_step(execution, step)
        assert step.snapshot is not None
        if step.business_key is not None:
            step = self._taking_key(execution, step)
        assert step.snapshot is not None
        now = timezone.now()
        columns = snapshot_columns(step.snapshot, now)
        if step.business_key is not None:
            columns["business_key"] = step.business_key
        swapped(execution, columns)
        swapped(stored, columns)
        self.history.setdefault(str(execution.pk), []).extend(
            history_row(execution, entry) for entry in step.history)
        mark_processed(step.processed, now)
        for item in step.processed:
            if item.pk is not None:
                self.inbox[item.pk] = copy.copy(item)
            elif item.idempotency_key is not None:
                self.add_item(item)  # gives it a pk
                self.inbox[item.pk].processed_at = now  # type: ignore[index]
        return self._write_rows(execution, step.effects)

    def _taking_key(self, execution: Execution, step: Step) -> Step:
        """What the database's unique index does: a step giving the execution a key
        another execution holds fails it with `key_in_use` instead (one that ends it
        holds no `unfinished` key)."""
        assert step.snapshot is not None and step.business_key is not None
        if (execution.key_scope != "always"
                and step.snapshot.status in engine.TERMINAL_STATUSES):
            return step
        holder = self.holding_key(execution.machine_id, step.business_key)
        return step if holder is None else key_in_use_step(execution, step, holder)

    def save_starts(self, steps: list[tuple[Execution, Step]]
                    ) -> list[tuple[Execution, Step, list[Work]]]:
        started = []
        with self.atomic():
            for execution, step in steps:
                execution = copy.copy(execution)
                try:
                    work = self.save(execution, step)
                except Conflict:
                    continue
                started.append((execution, step, work))
        return started

    def _write_rows(self, execution: Execution, effects_of_step: list) -> list[Work]:
        rows = effects.rows(execution, effects_of_step)
        for work in self.work.values():  # not yet started, or in flight
            if work.token in rows.cancel_work and work.status in (Work.PENDING, Work.RUNNING):
                work.status = Work.CANCELED
        for token in rows.cancel_timers:
            self.timers.pop(token, None)
        for timer in rows.timers:
            self.timers[timer.token] = timer
        for work in rows.work:
            work.pk = next(self._ids)
            work.created_at = timezone.now()
            self.work[work.pk] = copy.copy(work)
        return rows.work

    # Timers
    def claim_due_timers(self, now: float, limit: int) -> list[tuple[Any, str]]:
        due = sorted((t for t in self.timers.values() if t.due_at <= now),
                     key=lambda t: t.due_at)[:limit]
        claimed = []
        for timer in due:
            del self.timers[timer.token]
            execution = self._stored(timer.execution_id)
            item = InboxItem(execution=execution, kind=InboxItem.TIMER,
                             payload={"token": timer.token},
                             idempotency_key=f"timer:{timer.token}", actor="timer")
            if self.earlier_item(execution, item.idempotency_key) is None:
                self.add_item(item)
            claimed.append((timer.execution_id, execution.execution_mode))
        return claimed

    def next_timer_due(self) -> float | None:
        return min((t.due_at for t in self.timers.values()), default=None)

    # Work
    def claim_work(self, work_id: int) -> Work | None:
        stored = self.work.get(work_id)
        if stored is None or stored.status != Work.PENDING:
            return None
        stored.status, stored.claimed_at = Work.RUNNING, timezone.now()
        stored.attempts += 1
        work = copy.copy(stored)
        work.execution = self.read_execution(work.execution_id)
        if not effects.still_wanted(work, work.execution):
            stored.status = Work.CANCELED
            return None  # given up on: never performed (again)
        return work

    def finish_work(self, work_id: int) -> None:
        if self.work[work_id].status == Work.RUNNING:
            self.work[work_id].status = Work.DONE

    def deliver(self, work: Work, execution_id: Any, payload: dict, key: str,
                actor: str) -> None:
        payload = checked_result(payload)
        with self.atomic():
            execution = self._stored(execution_id)
            if self.earlier_item(execution, key) is None:
                self.add_item(InboxItem(execution=execution, kind=InboxItem.RESULT,
                                        payload=payload, idempotency_key=key, actor=actor))
            self.finish_work(work.pk)

    # Recovery
    def stale(self, stale_after: float) -> Stale:
        now = timezone.now()
        cutoff = now - timedelta(seconds=stale_after)
        executions = {i.execution_id for i in self.inbox.values()
                      if i.processed_at is None and i.created_at < cutoff}
        executions |= {e.pk for e in self.executions.values()
                       if e.status == engine.RUNNING and e.updated_at < cutoff
                       and not (e.version == 0 and e.execution_mode == "async-throughput")}
        waiting = any(e.version == 0 and e.execution_mode == "async-throughput"
                      and e.status == engine.RUNNING and e.created_at < cutoff
                      for e in self.executions.values())
        pending = []
        for work in self.work.values():
            expired = (work.status == Work.RUNNING and work.claimed_at < cutoff
                       and work.claimed_at + timedelta(seconds=work.lease_seconds) < now)
            if not (expired or (work.status == Work.PENDING and work.created_at < cutoff)):
                continue
            if effects.still_wanted(work, self._stored(work.execution_id)):
                work.status = Work.PENDING
                pending.append((work.pk, work.kind))
            else:
                work.status = Work.CANCELED
        return Stale(executions, waiting, pending)
