"""Accepting inputs: an input is stored before anyone is told "accepted" (docs/runtime.md).

Three ways, each a function of its own:

- `_apply_on_remembered`: the interactive fast path. An action for an execution this
  process persisted last is applied on that copy without reading it again; the
  compare-and-swap (which also requires an empty inbox) proves the copy is current.
- `_apply_now`: the caller waits (or the execution is sync) and nothing is pending: the
  input is stored and applied in ONE transaction; a rejection rolls it all back
  (NotAvailable) and nothing is stored.
- `_queue`: otherwise the input becomes an inbox item, applied in order later: by the
  caller's own inline loop when it waits, else by a worker.

The service functions (executions/services.py) check what callers send, then call these.
"""
from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError

from executions import engine
from executions.models import Execution, InboxItem
from executions.runtime import advancing, queue
from executions.runtime import store as stores
from executions.runtime.advancing import Advanced
from executions.runtime.store import Conflict, Duplicate
from expressions.values import InvalidValue
from machines import contracts
from machines.definition import Machine

POLL_SECONDS = 0.01
MAX_PROBLEMS = 20


class InvalidInput(InvalidValue):
    """The input does not match the machine's schema for it (or holds no business key);
    `problems` lists (path, message) of each mismatch. Nothing was stored."""

    def __init__(self, problems: list[tuple[str, str]]):
        path, message = problems[0]
        summary = f"{message} (at {path})" if len(problems) == 1 else (
            f"{len(problems)} problems: " + "; ".join(f"{p}: {m}" for p, m in problems))
        super().__init__(summary, path)
        self.problems = problems


def matching_input(schema: dict | None, value: dict, what: str) -> dict:
    """The input checked against its schema (machines/contracts.py), with the defaults of
    missing fields filled in; InvalidInput names every mismatch, paths from `what`."""
    if schema is None:
        return value
    found = contracts.problems(schema, value, MAX_PROBLEMS)
    if found:
        raise InvalidInput([(f"{what}.{path}" if path else what, message)
                            for path, message in found])
    return contracts.with_defaults(schema, value)


def _business_key(definition: Machine, value: dict) -> str | None:
    if definition.key is None or definition.key.in_context:  # a context key: read later
        return None
    try:
        return contracts.key_value(definition.key, value)
    except contracts.KeyUnavailable as exc:
        where = "input" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}"
                                  for part in definition.key.path)
        raise InvalidInput([(where, str(exc))]) from None


def _checked_action(execution: Execution, payload: dict) -> dict:
    """An action's payload with its input checked against the schema its machine version
    declares for the action (none declared: any object)."""
    schema = execution.machine_version.parsed().action_inputs.get(payload["action"])
    if schema is None:
        return payload
    return {**payload, "input": matching_input(schema, payload["input"], "input")}


class NotAvailable(Exception):
    """The action cannot be taken now; nothing was changed."""

    def __init__(self, reason: str, available_actions=()):
        super().__init__(reason)
        self.reason = reason
        self.available_actions = list(available_actions)


@dataclass
class Outcome:
    execution: Execution
    created: bool = True  # False when an idempotency key returned earlier work
    settled: bool = True  # False when `wait` timed out before the next pause


@dataclass(frozen=True)
class Parent:
    """The execution that starts a child (an invoke), and the work token the child answers."""

    execution: Execution
    token: str


# Starting --------------------------------------------------------------------------------
def start(machine_id: str, *, input: dict, version: int | None = None,
          idempotency_key: str | None = None, mocks: dict | None = None,
          mode: str | None = None, actor: str = "system",
          user: AbstractBaseUser | None = None, wait: bool = False,
          timeout: float | None = None, parent: Parent | None = None) -> Outcome:
    """Start an execution of a machine (latest version unless `version` is given).

    Sync mode and callers that wait apply the start in the same transaction that stores it;
    otherwise the stored row is the pending start, and a worker applies it: in
    async-throughput mode a starter task shared by all the starts waiting, woken once the
    row is committed (queue.wake_starter); in async-latency mode a task of its own.

    The latest version comes from a per-process cache that the INSERT itself checks
    (Store.insert_execution): no read before a start, and never a version no longer the
    latest.
    """
    store = stores.active
    cached = store.latest_versions.get(machine_id) if version is None else None
    while True:
        machine_version = cached or store.machine_version(machine_id, version)
        if version is None:
            store.latest_versions[machine_id] = machine_version
        definition = machine_version.parsed()
        try:
            start_input = matching_input(definition.input_schema, input, "input")
            business_key = _business_key(definition, start_input)
        except InvalidInput:
            if cached is None:
                raise
            cached = None  # judged by the version cached: judge by the latest for sure
            continue
        execution_mode = mode or definition.execution_mode
        inline = execution_mode == "sync" or wait
        execution = Execution(
            machine_id=machine_version.machine_id, machine_version=machine_version,
            execution_mode=execution_mode, status=engine.RUNNING, state=definition.start_at,
            input=start_input, parent=parent.execution if parent else None,
            parent_token=parent.token if parent else "",
            idempotency_key=idempotency_key, mocks=mocks or {}, created_by=user, actor=actor,
            business_key=business_key,
            key_scope=definition.key.unique if definition.key is not None else "",
        )
        # A transaction only when needed: to apply the start with the row, to enqueue its
        # own task with it (a broker in this database), or as a savepoint in the caller's
        # transaction; otherwise the INSERT is a transaction by itself.
        # The engine runs before any transaction opens (the row gets its id and version 0
        # when it is built; the save below is a compare-and-swap on that version).
        step = advancing.compute(execution, []) if inline else None
        shared_task = execution_mode == "async-throughput" and not inline
        needs_transaction = inline or store.in_transaction() or (
            not shared_task and queue.queue_in_database())
        try:
            with store.atomic() if needs_transaction else contextlib.nullcontext():
                if not store.insert_execution(execution, if_latest=cached is not None):
                    cached = None  # a newer version was saved since it was cached: read it
                    continue
                if step is not None:  # else the stored row, not started, is what a worker applies
                    advanced = advancing.save(execution, step)
                elif shared_task:  # right away, unless in the caller's transaction
                    store.on_commit(queue.wake_starter)
                else:
                    advancing.schedule(execution.pk, execution_mode)
        except Duplicate:
            earlier = _started_earlier(machine_version.machine_id, idempotency_key,
                                       business_key)
            if earlier is None:
                continue  # the key's holder finished meanwhile: the key is free again
            return Outcome(earlier, created=False)
        break
    if not inline:
        return Outcome(execution, settled=False)
    store.remember(advanced.execution)
    settled = _continue(advanced, timeout)
    return Outcome(_fresh(execution, advanced), settled=settled)


def _started_earlier(machine_id: str, idempotency_key: str | None,
                     business_key: str | None) -> Execution | None:
    """The execution a refused INSERT collided with: the one started with the same
    idempotency key, else the one holding the business key (None: it no longer does)."""
    store = stores.active
    if idempotency_key is not None:
        try:
            return store.started_with_key(machine_id, idempotency_key)
        except Execution.DoesNotExist:
            if business_key is None:
                raise
    assert business_key is not None
    return store.holding_key(machine_id, business_key)


# Inputs for a started execution ----------------------------------------------------------
def trigger(execution_id: Any, action: str, *, input: dict,
            idempotency_key: str | None = None, actor: str = "system", wait: bool = False,
            timeout: float | None = None) -> Outcome:
    """Accept an action for an execution; with `wait` (or in sync mode), apply it now.

    When nothing is pending before it, an action that is applied now is stored and applied
    in ONE transaction, and a rejection raises NotAvailable and stores nothing. Otherwise it
    is queued in order; an advance applies it, or records why it was rejected.
    """
    payload = {"action": action, "input": input}
    if idempotency_key is None:
        applied = _apply_on_remembered(execution_id, InboxItem.ACTION, payload, actor,
                                       wait=wait)
        if applied is not None:
            return _finish(applied, timeout)
    return _accept(execution_id, InboxItem.ACTION, payload, actor, wait=wait,
                   timeout=timeout, idempotency_key=idempotency_key)


def cancel(execution_id: Any, *, actor: str = "system", reason: str | None = None,
           idempotency_key: str | None = None) -> Outcome:
    """Cancel an execution (and the children it invoked synchronously). With
    `idempotency_key`, a repeat (a bulk job resumed) reports the first and applies nothing."""
    return _accept(execution_id, InboxItem.CANCEL, {"reason": reason}, actor, wait=True,
                   timeout=None, rule=engine.cancel_refused, idempotency_key=idempotency_key)


def retry(execution_id: Any, *, actor: str = "system", reason: str | None = None,
          idempotency_key: str | None = None) -> Outcome:
    """Resume a failed execution from where it failed (`idempotency_key` as for cancel)."""
    payload = {"reason": reason} if reason else {}
    return _accept(execution_id, InboxItem.RETRY, payload, actor, wait=True, timeout=None,
                   rule=engine.retry_refused, idempotency_key=idempotency_key)


def _accept(execution_id: Any, kind: str, payload: dict, actor: str, *, wait: bool,
            timeout: float | None, idempotency_key: str | None = None,
            rule: Callable[[str], str | None] | None = None) -> Outcome:
    """Apply now when the caller waits and nothing is pending, else queue. `rule`: the
    engine's rule for this kind of input, checked on the status before anything is stored
    (cancel and retry are refused at once, even when they would be queued).

    The engine (the machine's expressions, in the pool) never runs inside a transaction:
    an input applied now is computed on a plain read, then saved with compare-and-swap
    that also requires an empty inbox, so nothing was applied or queued in between (the
    same proof as the fast path); a lost race computes again on a fresh read. Queuing
    locks the execution row, so inbox order is acceptance order."""
    store = stores.active
    for _ in range(advancing.CAS_RETRIES):
        execution = store.read_execution(execution_id)
        earlier = (store.earlier_item(execution, idempotency_key)
                   if idempotency_key is not None else None)
        if earlier is not None:
            return _report_earlier(execution, earlier, wait=wait, timeout=timeout)
        _check_rule(execution, rule)
        if kind == InboxItem.ACTION:
            payload = _checked_action(execution, payload)
        item = InboxItem(execution=execution, kind=kind, payload=payload, actor=actor,
                         idempotency_key=idempotency_key)
        try:
            if _applies_now(execution, wait):
                advanced = _apply_now(execution, item)
                store.remember(advanced.execution)
                return _finish(advanced, timeout)
            with store.atomic():
                execution = store.read_execution(execution_id, lock=True)
                if idempotency_key is not None and store.earlier_item(execution,
                                                                      idempotency_key):
                    raise Conflict()  # accepted meanwhile: report on it from a fresh read
                _check_rule(execution, rule)
                if _applies_now(execution, wait):
                    raise Conflict()  # paused meanwhile: apply it now instead
                item.execution = execution
                store.add_item(item)
        except (Conflict, IntegrityError):  # IntegrityError: the same key, accepted meanwhile
            time.sleep(random.uniform(0, 0.005))
            continue
        return _queue(execution, item, wait=wait, timeout=timeout)
    raise RuntimeError(f"could not update {execution_id}: too many concurrent writers")


def _check_rule(execution: Execution, rule: Callable[[str], str | None] | None) -> None:
    refusal = rule(execution.status) if rule is not None else None
    if refusal is not None:
        raise NotAvailable(refusal, execution.available_actions())


def _applies_now(execution: Execution, wait: bool) -> bool:
    return (wait or execution.execution_mode == "sync") and \
        execution.status != engine.RUNNING and not execution.has_pending


def _apply_now(execution: Execution, item: InboxItem) -> Advanced:
    """Compute the item on the execution as read (outside any transaction), then store it
    applied in one transaction with compare-and-swap (Conflict: try again). A rejection
    raises NotAvailable: nothing is stored."""
    try:
        step = advancing.compute_or_refuse(execution, [item])
    except advancing.Refused as refused:
        raise NotAvailable(refused.reason, refused.available_actions) from None
    with stores.active.atomic():
        return advancing.save(execution, step, only_if_inbox_empty=True)


def _apply_on_remembered(execution_id: Any, kind: str, payload: dict, actor: str, *,
                         wait: bool) -> Advanced | None:
    """The interactive fast path: apply on the snapshot this process persisted last.

    No read: the compare-and-swap update (which also requires that nothing waits in the
    inbox) proves the remembered snapshot is still current. Any doubt — a lost race, a
    rejection that might stem from a stale copy — returns None: the caller takes the
    locked path.
    """
    store = stores.active
    execution = store.remembered(execution_id)
    if execution is None or execution.status == engine.RUNNING:
        return None
    if not (wait or execution.execution_mode == "sync"):
        return None
    if kind == InboxItem.ACTION:
        payload = _checked_action(execution, payload)
    item = InboxItem(execution=execution, kind=kind, payload=payload, actor=actor)
    try:  # the engine (and the expressions) run before the transaction opens
        step = advancing.compute_or_refuse(execution, [item])
        with store.atomic():
            advanced = advancing.save(execution, step, only_if_inbox_empty=True)
    except (Conflict, advancing.Refused):
        store.forget(execution_id)
        return None
    store.remember(advanced.execution)
    return advanced


# Settling: what the caller hears ---------------------------------------------------------
def _finish(advanced: Advanced, timeout: float | None) -> Outcome:
    """Applied on acceptance: go on inline to the next pause when there is more to do."""
    execution = advanced.execution
    settled = _continue(advanced, timeout)
    return Outcome(_fresh(execution, advanced), settled=settled)


def _queue(execution: Execution, item: InboxItem, *, wait: bool,
           timeout: float | None) -> Outcome:
    """Queued: apply it inline for sync mode and callers that wait, else leave it to a
    worker. A caller that waits hears of a rejection (NotAvailable)."""
    store = stores.active
    if execution.execution_mode == "sync" or wait:
        settled = advancing.run_inline(
            execution.pk, deadline=advancing.deadline_for(execution, timeout),
            work=advancing.policy_for(execution.execution_mode))
    else:
        advancing.schedule(execution.pk, execution.execution_mode)
        settled = False
    if wait:
        store.refresh_item(item)
        if item.outcome == InboxItem.REJECTED:
            store.refresh(execution)
            raise NotAvailable(item.reason, execution.available_actions())
    store.refresh(execution)
    return Outcome(execution, settled=settled)


def _continue(advanced: Advanced, timeout: float | None) -> bool:
    execution = advanced.execution
    if not advanced.work and execution.status != engine.RUNNING:
        return True  # paused already: nothing more to do (the common interactive case)
    return advancing.continue_inline(
        advanced, deadline=advancing.deadline_for(execution, timeout),
        work=advancing.policy_for(execution.execution_mode))


def _fresh(execution: Execution, advanced: Advanced) -> Execution:
    """The execution as the inline run left it (re-read only when work ran since)."""
    if advanced.execution.status == engine.RUNNING or advanced.work:
        stores.active.refresh(execution)
        return execution
    return advanced.execution


def _report_earlier(execution: Execution, item: InboxItem, *, wait: bool,
                    timeout: float | None) -> Outcome:
    """The same idempotency key again: report on the first acceptance, apply nothing."""
    store = stores.active
    settled = True
    if wait and item.processed_at is None:
        settled = _wait_processed([item.pk], timeout)
        store.refresh_item(item)
    if item.outcome == InboxItem.REJECTED:
        raise NotAvailable(item.reason, execution.available_actions())
    store.refresh(execution)
    return Outcome(execution, created=False, settled=settled)


def _wait_processed(item_ids: list[int], timeout: float | None) -> bool:
    deadline = time.monotonic() + (timeout if timeout is not None else 30)
    while time.monotonic() < deadline:
        if stores.active.all_processed(item_ids):
            return True
        time.sleep(POLL_SECONDS)
    return False
