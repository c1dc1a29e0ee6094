"""The runner: durable executions on top of the pure engine.

Every surface (API, explorer, admin, commands) calls the functions here: `start`,
`trigger`, `cancel`, `retry`; workers call `advance`, `perform_work`, `fire_due_timers`
and `sweep`. The guarantees (docs/runtime.md):

- Everything that comes in is first stored as an InboxItem (durable acceptance, idempotency
  key, order), then applied by `advance`.
- One advance is ONE transaction: the new snapshot, all its history rows, the inbox items
  it consumed, the timers and work it asked for. The execution row is updated with
  compare-and-swap on `version`; a lost race is retried from a fresh read.
- Work that leaves the process (IO, child starts, actions sent, parent notices) is recorded
  as a Work row in that transaction and performed after the commit; its result comes back
  as an inbox item with an idempotency key, so it applies at most once.
- A sweeper re-enqueues what a dead process left behind.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import random
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DataError, IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from executions import engine, sql
from executions.io import IOFailure, operation
from executions.models import Execution, HistoryEntry, InboxItem, Timer, Work
from expressions import sandbox
from machines.definition import Expr
from machines.models import MachineVersion

log = logging.getLogger(__name__)

CAS_RETRIES = 50
INBOX_BATCH = 100
POLL_SECONDS = 0.01


class NotAvailable(Exception):
    """The action cannot be taken now; nothing was changed."""

    def __init__(self, reason: str, available_actions=()):
        super().__init__(reason)
        self.reason = reason
        self.available_actions = list(available_actions)


class InvalidRequest(ValueError):
    """The request itself is wrong (e.g. input that is not a JSON object)."""


@dataclass
class Outcome:
    execution: Execution
    created: bool = True  # False when an idempotency key returned earlier work
    settled: bool = True  # False when `wait` timed out before the next pause


# Settings and environment ----------------------------------------------------------------
def _config(name):
    return settings.DATA_MACHINES[name]


def _evaluate(expr: Expr, names: dict, time_limit: float | None = None):
    return sandbox.evaluate(
        expr,
        names,
        time_limit=time_limit or _config("EXPRESSION_TIME_LIMIT"),
        max_result_bytes=_config("EXPRESSION_MAX_RESULT_BYTES"),
    )


def _env(execution: Execution, *, max_steps=None) -> engine.Env:
    return engine.Env(
        now=time.time(),
        evaluate=_evaluate,
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


def _as_datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


# Public service functions ----------------------------------------------------------------
def start(machine_id, *, input=None, version=None, idempotency_key=None, mocks=None, mode=None,
          actor="system", user=None, wait=False, timeout=None, parent=None, parent_token=""):
    """Start an execution of a machine (latest version unless `version` is given).

    Sync mode and callers that wait apply the start in the same transaction that stores it;
    otherwise the stored row is the pending start, and a worker applies it: in
    async-throughput mode a starter task shared by all the starts waiting, woken once the
    row is committed (tasks.wake_starter); in async-latency mode a task of its own.

    The latest version comes from a per-process cache that the INSERT itself checks
    (sql.insert_execution): no read before a start, and never a version no longer the latest.
    """
    input = {} if input is None else input
    if not isinstance(input, dict):
        raise InvalidRequest("input must be a JSON object")
    if mocks is not None and not isinstance(mocks, dict):
        raise InvalidRequest("mocks must be an object of operation name -> expression")
    from executions import tasks

    cached = _latest_versions.get(machine_id) if version is None else None
    while True:
        machine_version = cached or sql.machine_version(machine_id, version)
        if version is None:
            _latest_versions[machine_id] = machine_version
        definition = machine_version.parsed()
        execution_mode = mode or definition.execution_mode
        inline = execution_mode == "sync" or wait
        execution = Execution(
            machine_id=machine_version.machine_id, machine_version=machine_version,
            execution_mode=execution_mode, status=engine.RUNNING, state=definition.start_at,
            input=input, parent=parent, parent_token=parent_token,
            idempotency_key=idempotency_key, mocks=mocks or {}, created_by=user, actor=actor,
        )
        # A transaction only when needed: to apply the start with the row, to enqueue its
        # own task with it (a broker in this database), or as a savepoint in the caller's
        # transaction; otherwise the INSERT is a transaction by itself.
        shared_task = execution_mode == "async-throughput" and not inline
        needs_transaction = inline or connection.in_atomic_block or (
            not shared_task and tasks.queue_in_database())
        try:
            with transaction.atomic() if needs_transaction else contextlib.nullcontext():
                if not sql.insert_execution(execution, if_latest=cached is not None):
                    cached = None  # a newer version was saved since it was cached: read it
                    continue
                if inline:  # otherwise the stored row, not yet started, is what a worker applies
                    advanced = _apply(execution, [])
                elif shared_task:  # right away, unless in the caller's transaction
                    transaction.on_commit(tasks.wake_starter)
                else:
                    schedule(execution.pk, execution_mode)
        except IntegrityError:
            if idempotency_key is None:
                raise
            existing = Execution.objects.get(machine_id=machine_version.machine_id,
                                             idempotency_key=idempotency_key)
            return Outcome(existing, created=False)
        break
    if not inline:
        return Outcome(execution, settled=False)
    _recent.remember(advanced.execution)
    settled = _continue_inline(advanced, timeout)
    return Outcome(_fresh(execution, advanced), settled=settled)


# The latest version of each machine this process started, checked by each start's INSERT.
_latest_versions: dict = {}


def trigger(execution_id, action, *, input=None, idempotency_key=None, actor="system",
            wait=False, timeout=None):
    """Accept an action for an execution; with `wait` (or in sync mode), apply it now.

    When nothing is pending before it, an action that is applied now is stored and applied
    in ONE transaction, and a rejection raises NotAvailable and stores nothing. Otherwise it
    is queued in order; an advance applies it, or records why it was rejected.
    """
    input = {} if input is None else input
    if not isinstance(input, dict):
        raise InvalidRequest("input must be a JSON object")
    if not isinstance(action, str) or not action:
        raise InvalidRequest("action must be a non-empty string")
    payload = {"action": action, "input": input}
    accepted = _accept(execution_id, InboxItem.ACTION, payload, actor, wait=wait,
                       idempotency_key=idempotency_key)
    if accepted.earlier is not None:
        return _settle_earlier(accepted.execution, accepted.earlier, wait=wait, timeout=timeout)
    return _settle(accepted, wait=wait, timeout=timeout)


def cancel(execution_id, *, actor="system", reason=None):
    """Cancel an execution (and the children it invoked synchronously)."""
    accepted = _accept(execution_id, InboxItem.CANCEL, {"reason": reason}, actor, wait=True,
                       allowed=lambda s: s not in engine.TERMINAL_STATUSES,
                       refusal="it has already {status}")
    return _settle(accepted, wait=True, timeout=None)


def retry(execution_id, *, actor="system"):
    """Resume a failed execution from where it failed."""
    accepted = _accept(execution_id, InboxItem.RETRY, {}, actor, wait=True,
                       allowed=lambda s: s == engine.FAILED,
                       refusal="only a failed execution can be retried; this one is {status}")
    return _settle(accepted, wait=True, timeout=None)


@dataclass
class _Accepted:
    execution: Execution
    item: InboxItem | None = None
    advanced: Advanced | None = None  # set when it was applied in the accepting transaction
    earlier: InboxItem | None = None  # set when the idempotency key was seen before


def _accept(execution_id, kind, payload, actor, *, wait, idempotency_key=None,
            allowed=None, refusal=""):
    if idempotency_key is None and allowed is None:
        accepted = _accept_on_recent(execution_id, kind, payload, actor, wait=wait)
        if accepted is not None:
            return accepted
    for _ in range(CAS_RETRIES):
        try:
            with transaction.atomic():
                execution = sql.read_execution(execution_id, lock=True)
                if idempotency_key is not None:
                    earlier = execution.inbox.filter(idempotency_key=idempotency_key).first()
                    if earlier is not None:
                        return _Accepted(execution, earlier=earlier)
                if allowed is not None and not allowed(execution.status):
                    raise NotAvailable(refusal.format(status=execution.status),
                                       execution.available_actions())
                item = InboxItem(execution=execution, kind=kind, payload=payload, actor=actor,
                                 idempotency_key=idempotency_key)
                now = (wait or execution.execution_mode == "sync") and \
                    execution.status != engine.RUNNING and not execution.has_pending
                if not now:
                    item.save()
                    return _Accepted(execution, item)
                advanced = _apply(execution, [item], reject=True)
            _recent.remember(advanced.execution)
            return _Accepted(execution, item, advanced=advanced)
        except _Conflict:
            time.sleep(random.uniform(0, 0.005))
    raise RuntimeError(f"could not update {execution_id}: too many concurrent writers")


def _accept_on_recent(execution_id, kind, payload, actor, *, wait):
    """The interactive fast path: apply on the snapshot this process persisted last.

    No read: the compare-and-swap update (which also requires that nothing waits in the
    inbox) proves the remembered snapshot is still current. Any doubt — a lost race, a
    rejection that might stem from a stale copy — falls back to the locked path.
    """
    execution = _recent.get(execution_id)
    if execution is None or execution.status == engine.RUNNING:
        return None
    if not (wait or execution.execution_mode == "sync"):
        return None
    item = InboxItem(execution=execution, kind=kind, payload=payload, actor=actor)
    try:
        with transaction.atomic():
            advanced = _apply(execution, [item], reject=True, nothing_pending=True)
    except (_Conflict, NotAvailable):
        _recent.forget(execution_id)
        return None
    _recent.remember(advanced.execution)
    return _Accepted(advanced.execution, item, advanced=advanced)


class _RecentExecutions:
    """Executions this process persisted last, by id (bounded; copies in and out)."""

    def __init__(self, size=4096):
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, execution_id):
        with self.lock:
            found = self.items.get(str(execution_id))
            return copy.copy(found) if found is not None else None

    def remember(self, execution):
        with self.lock:
            self.items[str(execution.pk)] = copy.copy(execution)
            self.items.move_to_end(str(execution.pk))
            while len(self.items) > self.size:
                self.items.popitem(last=False)

    def forget(self, execution_id):
        with self.lock:
            self.items.pop(str(execution_id), None)


_recent = _RecentExecutions()


def _settle(accepted: _Accepted, *, wait, timeout) -> Outcome:
    """After acceptance: finish inline, wait for a worker, or leave it to the queue."""
    execution = accepted.execution
    if accepted.advanced is not None:
        settled = _continue_inline(accepted.advanced, timeout)
        return Outcome(_fresh(execution, accepted.advanced), settled=settled)
    settled = _after_accept(execution, wait=wait, timeout=timeout)
    item = accepted.item
    if wait:
        item.refresh_from_db()
        if item.outcome == InboxItem.REJECTED:
            execution.refresh_from_db()
            raise NotAvailable(item.reason, execution.available_actions())
    execution.refresh_from_db()
    return Outcome(execution, settled=settled)


def _fresh(execution, advanced):
    """The execution as the inline run left it (re-read only when work ran since)."""
    if advanced.execution.status == engine.RUNNING or advanced.work:
        execution.refresh_from_db()
        return execution
    return advanced.execution


def _settle_earlier(execution, item, *, wait, timeout):
    """The same idempotency key again: report on the first acceptance, apply nothing."""
    settled = True
    if wait and item.processed_at is None:
        settled = _wait_processed(execution, [item.pk], timeout)
        item.refresh_from_db()
    if item.outcome == InboxItem.REJECTED:
        raise NotAvailable(item.reason, execution.available_actions())
    execution.refresh_from_db()
    return Outcome(execution, created=False, settled=settled)


# Accepting and dispatching ---------------------------------------------------------------
_inline = threading.local()


def _after_accept(execution: Execution, *, wait, timeout) -> bool:
    """Get what was queued applied: inline for sync mode and for callers that wait."""
    if execution.execution_mode == "sync" or wait:
        return run_inline(execution.pk, deadline=_deadline(execution, timeout),
                          perform=execution.execution_mode == "sync")
    schedule(execution.pk, execution.execution_mode)
    return False


def _deadline(execution, timeout) -> float:
    """Sync callers wait up to the machine's timeout_seconds; others up to `timeout` (30 s)."""
    if timeout is None:
        timeout = execution.machine_version.parsed().timeout_seconds
    return time.monotonic() + timeout


def _continue_inline(advanced: Advanced, timeout) -> bool:
    execution = advanced.execution
    if not advanced.work and execution.status != engine.RUNNING:
        return True  # paused already: nothing more to do (the common interactive case)
    return run_inline(execution.pk, deadline=_deadline(execution, timeout),
                      perform=execution.execution_mode == "sync", first=advanced)


def schedule(execution_id, mode=None):
    """Make sure someone advances the execution: inline (sync mode) or a queued task."""
    active = _running_inline()
    if execution_id in active:
        active[execution_id] = True  # the loop on this thread's stack advances again
        return
    if mode is None:
        mode = Execution.objects.values_list("execution_mode", flat=True).get(pk=execution_id)
    if mode == "sync":
        execution = Execution.objects.select_related("machine_version").get(pk=execution_id)
        run_inline(execution_id, deadline=_deadline(execution, None), perform=True)
    else:
        from executions import tasks

        if tasks.queue_in_database():  # the task commits (or not) with what it advances
            tasks.enqueue_advance(execution_id, mode)
        else:
            transaction.on_commit(lambda: tasks.enqueue_advance(execution_id, mode))


def _running_inline() -> dict:
    """Executions advanced by a loop on this thread -> whether new input arrived meanwhile."""
    if not hasattr(_inline, "ids"):
        _inline.ids = {}
    return _inline.ids


def run_inline(execution_id, *, deadline: float, perform: bool, first=None) -> bool:
    """Advance in this process until the next pause (and, with `perform`, do the work too).

    Returns True when the execution paused before the deadline; past it, what is left goes
    on asynchronously through the queue.
    """
    from executions import tasks

    active = _running_inline()
    if execution_id in active:  # re-entered through the queue's sync mode: let the outer loop
        active[execution_id] = True
        return True
    active[execution_id] = False
    try:
        advanced = first or advance(execution_id)
        while True:
            performed = False
            for work in advanced.work:
                if perform and time.monotonic() < deadline:
                    perform_work(work.pk, report=False)
                    performed = True
                else:
                    tasks.enqueue_work(work.pk)
            running = advanced.execution.status == engine.RUNNING and advanced.progressed
            poked, active[execution_id] = active[execution_id], False
            more = running or performed or poked or advanced.applied == INBOX_BATCH
            if time.monotonic() >= deadline:
                if more:
                    tasks.enqueue_advance(execution_id)
                return False
            if not more:
                return True
            advanced = advance(execution_id)
    finally:
        active.pop(execution_id, None)


def _wait_processed(execution, item_ids, timeout) -> bool:
    deadline = time.monotonic() + (timeout if timeout is not None else 30)
    while time.monotonic() < deadline:
        if not InboxItem.objects.filter(pk__in=item_ids, processed_at__isnull=True).exists():
            return True
        time.sleep(POLL_SECONDS)
    return False


# Advancing -------------------------------------------------------------------------------
@dataclass
class Advanced:
    execution: Execution
    work: list  # Work rows created by this advance, to perform after the commit
    applied: int = 0  # inbox items consumed
    progressed: bool = False  # anything changed at all


class _Conflict(Exception):
    """Another process advanced the execution between our read and our write."""


def advance(execution_id, *, max_items=INBOX_BATCH) -> Advanced:
    """Apply pending inbox items in one transaction (retried on a compare-and-swap miss).

    The engine runs before the transaction opens, so the write lock (all of the database on
    SQLite) is held only to write; the compare-and-swap proves the snapshot read is still
    current. With nothing to apply, no transaction is opened at all.
    """
    for _ in range(CAS_RETRIES):
        execution = sql.read_execution(execution_id)
        step = _compute(execution, _pending_items(execution, max_items))
        if not step.changed:
            return Advanced(execution, [])
        try:
            with transaction.atomic():
                advanced = _save(execution, step)
        except _Conflict:
            time.sleep(random.uniform(0, 0.005))
            continue
        _recent.remember(advanced.execution)
        return advanced
    raise RuntimeError(f"could not advance {execution_id}: too many concurrent writers")


START_BATCH = 50


def start_waiting(*, deadline: float) -> int | None:
    """async-throughput: one pass over the executions not started yet, in id order, applying
    the starts of up to START_BATCH of them per transaction; then each goes on to its next
    pause.

    One write (one lock, one commit) for many starts is what makes this mode fast; the
    starter task (tasks.start_task) calls this until a pass finds nothing. Returns how many
    it started, or None when the deadline came before the pass was done.
    """
    started, after = 0, None
    while True:
        waiting = sql.executions_not_started(after, START_BATCH)
        for advanced in _start_together(waiting):
            started += 1
            _recent.remember(advanced.execution)
            run_inline(advanced.execution.pk, deadline=deadline, perform=False, first=advanced)
        if len(waiting) < START_BATCH:
            return started
        if time.monotonic() >= deadline:
            return None
        after = waiting[-1].pk


def _start_together(executions) -> list[Advanced]:
    """Apply the starts of these executions in ONE transaction (_save_starts), each with its
    own compare-and-swap.

    One that cannot be started is logged and left waiting (the sweeper wakes a starter for
    it again later) without holding up the others: the engine runs for each on its own, and
    when the transaction fails on one's data, each is stored in a transaction of its own.
    """
    steps = []
    for execution in executions:
        try:
            steps.append((execution, _compute(execution, _pending_items(execution))))
        except Exception:
            log.exception("could not start execution %s", execution.pk)
    return _store_starts(steps)


def _store_starts(steps) -> list[Advanced]:
    if not steps:
        return []
    try:
        return _save_starts(steps)
    except (DataError, IntegrityError):
        if len(steps) == 1:
            log.exception("could not start execution %s", steps[0][0].pk)
            return []
        return [advanced for step in steps for advanced in _store_starts([step])]


def _pending_items(execution: Execution, max_items=INBOX_BATCH) -> list:
    """The inbox items the next advance applies (none while a running execution continues)."""
    if not execution.has_pending or (execution.status == engine.RUNNING
                                     and execution.engine_state):
        return []
    latency = execution.execution_mode == "async-latency"
    return list(InboxItem.objects.filter(execution_id=execution.pk, processed_at__isnull=True)
                .order_by("id")[: 1 if latency else max_items])


@dataclass
class _Step:
    """What the engine made of an execution and its inbox items, not yet persisted."""

    snapshot: engine.Snapshot | None
    history: list
    effects: list
    processed: list  # the items consumed, with their outcome

    @property
    def changed(self) -> bool:
        return bool(self.history or self.processed)


def _apply(execution: Execution, items, *, reject=False, nothing_pending=False) -> Advanced:
    """Feed items to the engine and persist the outcome (inside the caller's transaction).

    Items not yet saved are stored with it, already processed. With `reject`, a rejected
    item raises NotAvailable, which rolls the whole transaction back: nothing changes.
    """
    return _save(execution, _compute(execution, items, reject=reject),
                 nothing_pending=nothing_pending)


def _compute(execution: Execution, items, *, reject=False) -> _Step:
    """Run the engine on the execution's snapshot and items (no database access)."""
    machine = execution.machine_version.parsed()
    latency_mode = execution.execution_mode == "async-latency"
    env = _env(execution, max_steps=1 if latency_mode else None)
    snapshot = execution.snapshot() if execution.engine_state else None
    step = _Step(snapshot, [], [], [])

    def apply(event):
        result = engine.transition(machine, step.snapshot, event, env)
        step.snapshot = result.snapshot
        step.history.extend(result.history)
        step.effects.extend(result.effects)
        return result

    if snapshot is None:  # not started yet: the execution row holds what it starts with
        apply(engine.Start(execution.input, execution.actor or None))
    elif snapshot.status == engine.RUNNING:
        apply(engine.Continue())
    if step.snapshot.status != engine.RUNNING:
        for item in items:
            result = apply(_event(item))
            if reject and result.rejected:
                raise NotAvailable(result.rejected, result.available_actions)
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


def _save(execution: Execution, step: _Step, *, nothing_pending=False) -> Advanced:
    """Persist a step (inside the caller's transaction); _Conflict when the snapshot it was
    computed from is no longer current, before anything is written."""
    if not step.changed:
        return Advanced(execution, [])
    now = timezone.now()
    columns = _snapshot_columns(step, now)
    if not sql.compare_and_swap(execution, columns, nothing_pending=nothing_pending):
        raise _Conflict()
    _swapped(execution, columns)
    if step.history:
        sql.insert(HistoryEntry, [_history_row(execution, entry) for entry in step.history])
    _mark_processed(step.processed, now)
    work = _record_effects(execution, step.effects) if step.effects else []
    return Advanced(execution, work, applied=len(step.processed), progressed=True)


def _save_starts(steps) -> list[Advanced]:
    """Persist the starts of several executions in ONE transaction: ONE compare-and-swap
    UPDATE for all of them and ONE INSERT of all their history rows, both built before it
    opens (on SQLite it holds the write lock). One whose snapshot is no longer current
    (another process started it) is left out: nothing of it is written."""
    now = timezone.now()
    changes = [(execution, _snapshot_columns(step, now)) for execution, step in steps]
    rows = {execution.pk: [_history_row(execution, entry) for entry in step.history]
            for execution, step in steps}
    swap = sql.compare_and_swap_many(changes)
    insert_all = sql.prepare_insert(HistoryEntry, [row for own in rows.values() for row in own])
    with transaction.atomic():
        swapped = swap()
        if len(swapped) == len(steps):
            insert_all()
        else:
            sql.insert(HistoryEntry, [row for pk in swapped for row in rows[pk]])
        started, processed = [], []
        for (execution, step), (_, columns) in zip(steps, changes, strict=True):
            if execution.pk not in swapped:
                continue
            execution = copy.copy(execution)  # the transaction may yet roll back
            _swapped(execution, columns)
            processed += step.processed
            work = _record_effects(execution, step.effects) if step.effects else []
            started.append(Advanced(execution, work, applied=len(step.processed),
                                    progressed=True))
        _mark_processed(processed, now)
    return started


def _snapshot_columns(step: _Step, now) -> dict:
    """The execution columns a step writes."""
    data = step.snapshot.to_dict()
    columns = {key: data.pop(key) for key in SNAPSHOT_COLUMNS}
    columns.update(
        engine_state=data,
        updated_at=now,
        finished_at=now if step.snapshot.status in engine.TERMINAL_STATUSES else None,
    )
    return columns


def _swapped(execution: Execution, columns):
    """The execution as the compare-and-swap just wrote it."""
    for key, value in columns.items():
        setattr(execution, key, value)
    execution.version += 1


def _event(item: InboxItem):
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


def _attach_duration(item: InboxItem, entries):
    """Work results carry how long the work took; put it on the history entry they made."""
    duration = item.payload.get("duration_ms") if item.kind == InboxItem.RESULT else None
    if duration is None:
        return
    for entry in entries:
        if entry["kind"] in (engine.WORK_SUCCEEDED, engine.WORK_FAILED):
            entry["duration_ms"] = duration


SNAPSHOT_COLUMNS = ("status", "state", "context", "input", "result", "error")
HISTORY_FIELDS = ("transition", "from_state", "to_state", "action", "actor")
HISTORY_JSON_FIELDS = ("input", "context", "output", "error", "guards", "detail")


def _mark_processed(items, now):
    for item in items:
        item.processed_at = now
    outcomes = {}
    for item in items:
        if item.pk is not None:
            outcomes.setdefault((item.outcome, item.reason), []).append(item.pk)
    for (outcome, reason), pks in outcomes.items():
        InboxItem.objects.filter(pk__in=pks).update(processed_at=now, outcome=outcome,
                                                    reason=reason)
    # Applied in the transaction that accepted them: the history is their record, but an
    # idempotency key must be kept to recognise a repeat.
    kept = [item for item in items if item.pk is None and item.idempotency_key is not None]
    if kept:
        InboxItem.objects.bulk_create(kept)


def _history_row(execution, entry) -> dict:
    """The HistoryEntry row of an engine history entry, as {field attname: value}."""
    row = {
        "execution_id": execution.pk,
        "machine_version_id": execution.machine_version_id,
        "seq": entry["seq"],
        "kind": entry["kind"],
        "at": _as_datetime(entry["at"]),
        "duration_ms": entry.get("duration_ms"),
        "branch": (entry.get("detail") or {}).get("branch") or "",
    }
    for key in HISTORY_FIELDS:
        row[key] = entry.get(key) or ""
    for key in HISTORY_JSON_FIELDS:
        row[key] = entry.get(key)
    return row


def _record_effects(execution: Execution, effects) -> list:
    """Store timers and outgoing work in the advance's transaction; return the new work."""
    timers, work, cancel_timers = [], [], []
    for effect in effects:
        if isinstance(effect, engine.ArmTimer):
            timers.append(Timer(execution_id=execution.pk, token=effect.token, due_at=effect.due,
                                purpose=effect.purpose))
        elif isinstance(effect, engine.CancelTimer):
            cancel_timers.append(effect.token)
        elif isinstance(effect, engine.CallIO):
            work.append(Work(
                execution_id=execution.pk, token=effect.token, kind=Work.CALL,
                lease_seconds=(effect.timeout_seconds or 300) + 30,
                payload={"path": effect.call.path, "source": effect.call.source,
                         "literal": effect.call.literal, "names": effect.names,
                         "attempt": effect.attempt, "timeout_seconds": effect.timeout_seconds},
            ))
        elif isinstance(effect, engine.StartChild):
            work.append(Work(
                execution_id=execution.pk, token=effect.token, kind=Work.CHILD,
                payload={"machine": effect.machine_id, "version": effect.machine_version,
                         "input": effect.input, "async": effect.is_async},
            ))
        elif isinstance(effect, engine.SendAction):
            work.append(Work(
                execution_id=execution.pk, token=effect.token, kind=Work.SEND,
                payload={"execution": effect.execution_id, "action": effect.action,
                         "input": effect.input, "async": effect.is_async},
            ))
        elif isinstance(effect, engine.CancelWork):
            unwanted = Work.objects.filter(token=effect.token, status=Work.PENDING)
            unwanted.update(status=Work.CANCELED)
            if effect.kind == Work.CHILD:
                work.append(Work(execution_id=execution.pk, token=f"cancel:{effect.token}",
                                 kind="cancel", payload={"token": effect.token}))
        elif isinstance(effect, engine.NotifyParent) and execution.parent_id:
            work.append(Work(
                execution_id=execution.pk, token=f"notify:{execution.pk}:{execution.version}",
                kind=Work.NOTIFY,
                payload={"status": effect.status, "output": effect.output, "error": effect.error},
            ))
    if cancel_timers:
        Timer.objects.filter(token__in=cancel_timers).delete()
    if timers:
        Timer.objects.bulk_create(timers)
    return Work.objects.bulk_create(work) if work else []


# Timers ----------------------------------------------------------------------------------
def fire_due_timers(now: float | None = None, limit: int = 200) -> int:
    """Turn due timers into inbox items, exactly once each, and have workers apply them.

    One transaction claims a batch: the due rows are read under the write lock (SQLite's
    IMMEDIATE transactions, or FOR UPDATE SKIP LOCKED on PostgreSQL, so several timer
    loops share the work), deleted, and recorded as inbox items keyed `timer:<token>`.
    """
    from executions import tasks

    now = time.time() if now is None else now
    if not Timer.objects.filter(due_at__lte=now).exists():
        return 0  # a plain read: no write lock taken while nothing is due
    with transaction.atomic():
        due = Timer.objects.filter(due_at__lte=now).order_by("due_at")
        if connection.features.has_select_for_update_skip_locked:
            due = due.select_for_update(skip_locked=True, of=("self",))
        claimed = list(due.values_list("pk", "execution_id", "token",
                                       "execution__execution_mode")[:limit])
        if not claimed:
            return 0
        Timer.objects.filter(pk__in=[pk for pk, *_ in claimed]).delete()
        InboxItem.objects.bulk_create([
            InboxItem(execution_id=execution_id, kind=InboxItem.TIMER, payload={"token": token},
                      idempotency_key=f"timer:{token}", actor="timer")
            for _, execution_id, token, _ in claimed
        ], ignore_conflicts=True)
    tasks.enqueue_advances(dict.fromkeys((e, m) for _, e, _, m in claimed))  # whatever the mode
    return len(claimed)


def next_timer_due() -> float | None:
    return Timer.objects.order_by("due_at").values_list("due_at", flat=True).first()


def _store_once(execution_id, kind, payload, key, actor) -> bool:
    """Insert an inbox item unless one with the same key exists (inside a transaction)."""
    try:
        with transaction.atomic():
            InboxItem.objects.create(execution_id=execution_id, kind=kind, payload=payload,
                                     idempotency_key=key, actor=actor)
        return True
    except IntegrityError:
        return False


# Work ------------------------------------------------------------------------------------
def perform_work(work_id, *, report=True):
    """Perform one piece of outgoing work, outside any transaction, and report its result.

    `report=False` is used by the inline loop, which advances the execution itself.
    """
    claimed = Work.objects.filter(pk=work_id, status=Work.PENDING).update(
        status=Work.RUNNING, claimed_at=timezone.now(), attempts=F("attempts") + 1
    )
    if not claimed:
        return
    work = Work.objects.select_related("execution__machine_version").get(pk=work_id)
    started = time.monotonic()
    performer = PERFORMERS[work.kind]
    try:
        outcome = performer(work)
    except Exception as exc:  # a bug or an unreachable database must not lose the work
        log.exception("work %s failed unexpectedly", work.token)
        outcome = (False, None, {"type": "internal_error", "message": str(exc)})
    if outcome is None:
        Work.objects.filter(pk=work_id).update(status=Work.DONE)
        return
    ok, output, error = outcome
    deliver_result(work, ok=ok, output=output, error=error,
                   duration_ms=(time.monotonic() - started) * 1000, schedule_it=report)


def deliver_result(work: Work, *, ok, output=None, error=None, duration_ms=None,
                   schedule_it=True, execution_id=None, token=None):
    """Store a work result as an inbox item (once per token) and mark the work done."""
    execution_id = execution_id or work.execution_id
    token = token or work.token
    payload = {"token": token, "ok": ok, "output": output, "error": error,
               "duration_ms": duration_ms}
    with transaction.atomic():
        _store_once(execution_id, InboxItem.RESULT, payload, f"result:{token}",
                    f"execution:{work.execution_id}" if work.kind == Work.NOTIFY else "work")
        Work.objects.filter(pk=work.pk).update(status=Work.DONE)
    if schedule_it:
        schedule(execution_id)


def _perform_call(work: Work):
    payload = work.payload
    execution = work.execution
    failures = []

    def io(op, *args, **kwargs):
        try:
            if op in execution.mocks:
                return _evaluate(Expr(path=f"mocks.{op}", source=execution.mocks[op])
                                 if isinstance(execution.mocks[op], str)
                                 else Expr(path=f"mocks.{op}", literal=execution.mocks[op]),
                                 {"args": list(args), "kwargs": kwargs, **payload["names"]})
            return operation(op)(*args, idempotency_key=work.token, **kwargs)
        except IOFailure as failure:
            failures.append(failure.error)
            raise

    expr = Expr(path=payload["path"], source=payload["source"], literal=payload["literal"])
    names = {**payload["names"], "io": io, **engine.helpers(time.time(), random.getrandbits(32))}
    try:
        output = _evaluate(expr, names, time_limit=(payload.get("timeout_seconds") or 300) + 1)
    except sandbox.ExpressionError as exc:
        return False, None, failures[-1] if failures else exc.to_dict()
    return True, output, None


def _perform_child(work: Work):
    payload = work.payload
    parent = work.execution
    try:
        outcome = start(
            payload["machine"], input=payload["input"], version=payload["version"],
            idempotency_key=f"child:{work.token}", mocks=parent.mocks,
            actor=f"execution:{parent.pk}", parent=parent, parent_token=work.token,
            wait=False,
        )
    except MachineVersion.DoesNotExist:
        version = f" version {payload['version']}" if payload["version"] else ""
        return False, None, {"type": "unknown_machine",
                             "message": f"no machine {payload['machine']!r}{version}"}
    except InvalidRequest as exc:
        return False, None, {"type": "invalid_input", "message": str(exc)}
    if payload["async"]:
        return True, {"execution_id": str(outcome.execution.pk)}, None
    return None  # the child reports back when it finishes, fails or is canceled


def _perform_send(work: Work):
    payload = work.payload
    try:
        outcome = trigger(payload["execution"], payload["action"], input=payload["input"],
                          idempotency_key=f"send:{work.token}",
                          actor=f"execution:{work.execution_id}", wait=not payload["async"])
    except NotAvailable as exc:
        target = Execution.objects.get(pk=payload["execution"])
        return True, {"accepted": False, "status": target.status, "state": target.state,
                      "reason": exc.reason}, None
    except (Execution.DoesNotExist, InvalidRequest, ValueError, ValidationError) as exc:
        why = " ".join(exc.messages) if isinstance(exc, ValidationError) else exc
        return False, None, {"type": "unknown_execution",
                             "message": f"cannot send to {payload['execution']!r}: {why}"}
    target = outcome.execution
    return True, {"accepted": True, "status": target.status, "state": target.state}, None


def _perform_notify(work: Work):
    child = work.execution
    payload = work.payload
    ok = payload["status"] == engine.FINISHED
    error = payload["error"] or {
        "type": f"child_{payload['status']}",
        "message": f"{child.machine_id} execution {child.short_id} {payload['status']}",
    }
    if not ok:
        error = {**error, "execution_id": str(child.pk)}
    deliver_result(work, ok=ok, output=payload["output"] if ok else None,
                   error=None if ok else error, execution_id=child.parent_id,
                   token=child.parent_token)
    return None


def _perform_cancel(work: Work):
    children = Execution.objects.filter(parent_id=work.execution_id,
                                        parent_token=work.payload["token"])
    for child in children:
        with contextlib.suppress(NotAvailable):
            cancel(child.pk, actor=f"execution:{work.execution_id}",
                   reason="the parent execution was canceled")
    return None


PERFORMERS = {
    Work.CALL: _perform_call,
    Work.CHILD: _perform_child,
    Work.SEND: _perform_send,
    Work.NOTIFY: _perform_notify,
    "cancel": _perform_cancel,
}


# Recovery --------------------------------------------------------------------------------
def sweep(stale_after: float = 5.0) -> dict:
    """Re-enqueue what a dead process left: unapplied inbox items, unfinished work and runs,
    and async-throughput starts no starter task took (wakes one, unless one is pending)."""
    from executions import tasks

    cutoff = timezone.now() - timedelta(seconds=stale_after)
    stale_inbox = set(
        InboxItem.objects.filter(processed_at__isnull=True, created_at__lt=cutoff)
        .values_list("execution_id", flat=True).distinct()
    )
    stale_runs = set(
        Execution.objects.filter(status=engine.RUNNING, updated_at__lt=cutoff)
        .exclude(version=0, execution_mode="async-throughput")
        .values_list("pk", flat=True)
    )
    for execution_id in stale_inbox | stale_runs:
        tasks.enqueue_advance(execution_id)
    waiting = Execution.objects.filter(version=0, execution_mode="async-throughput",
                                       status=engine.RUNNING, created_at__lt=cutoff).exists()
    if waiting:
        tasks.wake_starter()
    expired = []
    for work in Work.objects.filter(status=Work.RUNNING, claimed_at__lt=cutoff):
        if work.claimed_at + timedelta(seconds=work.lease_seconds) < timezone.now():
            expired.append(work.pk)
    Work.objects.filter(pk__in=expired, status=Work.RUNNING).update(status=Work.PENDING)
    pending = list(Work.objects.filter(status=Work.PENDING, created_at__lt=cutoff)
                   .values_list("pk", flat=True))
    for work_id in pending:
        tasks.enqueue_work(work_id)
    return {"executions": len(stale_inbox | stale_runs), "starts_waiting": waiting,
            "work": len(pending)}
