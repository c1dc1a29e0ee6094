"""Work performers: what leaves the process (IO calls, child starts, actions sent to other
executions, notices to a parent, cancels of children), performed after the commit that
asked for it, outside any transaction. Each result comes back as an inbox item keyed
`result:<token>`, so it applies at most once.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connections

from executions import engine
from executions.models import Execution, Work
from executions.runtime import accepting, advancing, effects, pool, queue
from executions.runtime import store as stores
from expressions.values import InvalidValue, check_object
from machines.models import MachineVersion

log = logging.getLogger(__name__)

# What a performer returns: (ok, output, error) to report now, or None when the work is
# done without a result of its own (a child reports back when it ends).
Result = tuple[bool, Any, dict | None] | None

# The deadline (time.monotonic()) of the sync run performing work in this thread: a child
# started or an action sent inline runs no longer than the caller has left.
_inline_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "inline_deadline", default=None)


def _internal_seconds() -> float:
    """How long a child start or an action sent may run inline: INTERNAL_WORK_SECONDS, or
    less when a sync run's deadline comes first (never 0: the other execution is stored
    and its start applied even when the caller has no time left)."""
    deadline = _inline_deadline.get()
    if deadline is None:
        return effects.INTERNAL_WORK_SECONDS
    return max(0.001, min(effects.INTERNAL_WORK_SECONDS, deadline - time.monotonic()))


def PERFORM(execution_id: Any, work: Work, deadline: float | None = None) -> bool:
    """The sync-mode work policy (advancing.policy_for): perform the work in this process;
    results for other executions get them advanced.

    An IO call may take longer than the sync run has left (its own bound is
    effects.call_seconds): it is performed in a helper thread and the caller waits for it
    only until `deadline`. Past it the caller is answered (the run did not settle) and the
    call goes on; its result is applied by a worker (_perform_in_thread)."""
    if work.kind == Work.CALL and deadline is not None and _threads_may_share(stores.active):
        return _perform_in_thread(execution_id, work, deadline)
    bound = _inline_deadline.set(deadline)
    try:
        for other in perform_work(work.pk):
            if str(other) != str(execution_id):
                advancing.schedule(other)
    finally:
        _inline_deadline.reset(bound)
    return True


def _threads_may_share(store: Any) -> bool:
    """Whether another thread sees what this one committed: a database store, outside a
    transaction (the memory store has one thread; work written by an open transaction is
    not visible to another connection yet)."""
    return bool(getattr(store, "shared_between_threads", False)) and not store.in_transaction()


@functools.cache
def _helper_slots() -> threading.BoundedSemaphore:
    """Helper threads a process runs for sync calls at once (IO_INLINE_CALLS)."""
    return threading.BoundedSemaphore(max(1, int(settings.DATA_MACHINES["IO_INLINE_CALLS"])))


def _perform_in_thread(execution_id: Any, work: Work, deadline: float) -> bool:
    """Perform an IO call in a helper thread, waiting for it until `deadline`. True when it
    was performed in time (its results are applied by the caller's loop); False when the
    caller stops waiting: the thread goes on, and once the call is over enqueues the
    advances its result needs. With every helper thread busy, the call goes to the IO
    workers' queue instead."""
    slots = _helper_slots()
    if not slots.acquire(blocking=False):
        queue.enqueue_work(work.pk, work.kind)
        return False
    lock = threading.Lock()
    state: dict[str, Any] = {"done": False, "gave_up": False, "results": []}

    def perform() -> None:
        try:
            try:
                results = perform_work(work.pk)
            except Exception:  # perform_work stores its own failures; this is the database
                log.exception("work %s failed in a helper thread", work.token)
                results = []  # the work stays claimed: the sweeper performs it after its lease
            with lock:
                state["done"], state["results"] = True, results
                gave_up = state["gave_up"]
            if gave_up:  # the caller has gone: a worker applies the results
                for other in results:
                    queue.enqueue_advance(other)
        finally:
            slots.release()
            connections.close_all()  # this thread's connections only

    thread = threading.Thread(target=perform, daemon=True, name=f"work {work.token}")
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    with lock:
        if not state["done"]:
            state["gave_up"] = True
            return False
    for other in state["results"]:
        if str(other) != str(execution_id):
            advancing.schedule(other)
    return True


def perform_work(work_id: int) -> list[Any]:
    """Perform one piece of outgoing work and store its result; returns the ids of the
    executions that got a result to apply (the caller has them advanced)."""
    store = stores.active
    work = store.claim_work(work_id)
    if work is None:
        return []
    started = time.monotonic()
    performer = PERFORMERS[work.kind]
    try:
        outcome = performer(work)
    except Exception as exc:  # a bug or an unreachable database must not lose the work
        log.exception("work %s failed unexpectedly", work.token)
        outcome = (False, None, {"type": "internal_error", "message": str(exc)})
    if outcome is None:
        store.finish_work(work_id)
        return [work.execution.parent_id] if work.kind == Work.NOTIFY else []
    ok, output, error = outcome
    deliver_result(work, ok=ok, output=output, error=error,
                   duration_ms=(time.monotonic() - started) * 1000)
    return [work.execution_id]


def deliver_result(work: Work, *, ok: bool, output: Any = None, error: dict | None = None,
                   duration_ms: float | None = None, execution_id: Any = None,
                   token: str | None = None) -> None:
    """Store a work result as an inbox item (once per token) and mark the work done."""
    execution_id = execution_id or work.execution_id
    token = token or work.token
    payload = {"token": token, "ok": ok, "output": output, "error": error,
               "duration_ms": duration_ms}
    actor = f"execution:{work.execution_id}" if work.kind == Work.NOTIFY else "work"
    stores.active.deliver(work, execution_id, payload, f"result:{token}", actor)


def _perform_call(work: Work) -> Result:
    """The call's expression, with io(), in a child of the IO pool: killed after the call's
    `timeout_seconds` of wall clock (a hung operation, a runaway expression), the
    operations resolved there by dotted path, mocks evaluated there as expressions."""
    payload = work.payload
    execution = work.execution
    # The work's bound (effects.call_seconds, which its lease exceeds): the expression's time
    # limit, the deadline every io() call inside it ends by, and the wall-clock kill.
    timeout = float(payload.get("bound_seconds")
                    or effects.call_seconds(payload.get("timeout_seconds")))
    try:
        reply = pool.call(
            expr={"path": payload["path"], "source": payload["source"],
                  "literal": payload["literal"]},
            names=payload["names"], mocks=execution.mocks or {}, token=work.token,
            now=time.time(), seed=random.getrandbits(32), timeout=timeout,
            max_result_bytes=settings.DATA_MACHINES["EXPRESSION_MAX_RESULT_BYTES"],
            deadline="executions.runtime.io.deadline")
    except pool.Failure as failure:
        return False, None, _call_failure(payload, failure, timeout)
    if reply.get("ok"):
        return True, reply["output"], None
    error = reply.get("error")
    if not isinstance(error, dict):  # the child could not send what it computed
        error = {"type": "expression_error", "kind": reply.get("kind", "crashed"),
                 "message": reply.get("message", "the call failed"), "path": payload["path"]}
    return False, None, error


def _call_failure(payload: dict, failure: pool.Failure, timeout: float) -> dict:
    """The error the `error` branch sees when the call's process was killed or died."""
    path = failure.path or payload["path"]
    if path.startswith("io:"):  # in an IO operation
        operation = path[3:]
        if failure.kind == "timeout":
            return {"type": "timeout", "message": f"io({operation!r}) did not finish within "
                    f"the call's timeout of {timeout:g} s", "operation": operation}
        path = payload["path"]
    messages = {
        "timeout": f"the call did not finish within its timeout of {timeout:g} s and its "
                   "process was stopped",
        "resource": "the call used more memory than its process may and was stopped",
    }
    return {"type": "expression_error", "kind": failure.kind,
            "message": messages.get(failure.kind, f"the call {failure.message}"),
            "path": path, "line": None, "column": None, "exception": None}


def _perform_child(work: Work) -> Result:
    payload = work.payload
    parent = work.execution
    try:
        outcome = accepting.start(
            payload["machine"], input=check_object(payload["input"]),
            version=payload["version"], idempotency_key=f"child:{work.token}",
            mocks=parent.mocks, actor=f"execution:{parent.pk}",
            parent=accepting.Parent(parent, work.token), wait=False,
            timeout=_internal_seconds(),  # a sync child runs inline this long at most
        )
    except MachineVersion.DoesNotExist:
        version = f" version {payload['version']}" if payload["version"] else ""
        return False, None, {"type": "unknown_machine",
                             "message": f"no machine {payload['machine']!r}{version}"}
    except InvalidValue as exc:
        return False, None, {"type": "invalid_input", "message": str(exc)}
    if payload["async"]:
        return True, {"execution_id": str(outcome.execution.pk)}, None
    if outcome.execution.parent_token != work.token:  # its business key was held already
        return False, None, {"type": "key_in_use", "message": (
            f"the business key {outcome.execution.business_key!r} of {payload['machine']!r} "
            f"is held by execution {outcome.execution.pk}, which this one did not start")}
    return None  # the child reports back when it finishes, fails or is canceled


def _perform_send(work: Work) -> Result:
    payload = work.payload
    try:
        outcome = accepting.trigger(
            payload["execution"], payload["action"], input=check_object(payload["input"]),
            idempotency_key=f"send:{work.token}", actor=f"execution:{work.execution_id}",
            wait=not payload["async"], timeout=_internal_seconds())
    except accepting.NotAvailable as exc:
        target = stores.active.read_execution(payload["execution"])
        return True, {"accepted": False, "status": target.status, "state": target.state,
                      "reason": exc.reason}, None
    except (Execution.DoesNotExist, ValueError, ValidationError) as exc:
        why = " ".join(exc.messages) if isinstance(exc, ValidationError) else exc
        return False, None, {"type": "unknown_execution",
                             "message": f"cannot send to {payload['execution']!r}: {why}"}
    target = outcome.execution
    return True, {"accepted": True, "status": target.status, "state": target.state}, None


def _perform_notify(work: Work) -> Result:
    """A child's end, to the parent invoking it. Not to a parent whose invoke was async: it
    had its answer, {"execution_id"}, when the child started (even when the child, in sync
    mode, finished during its own start)."""
    child = work.execution
    payload = work.payload
    if not stores.active.parent_awaits(child):
        return None
    ok = payload["status"] == engine.FINISHED
    error = {
        "type": f"child_{payload['status']}",
        "message": f"{child.machine_id} execution {child.short_id} {payload['status']}",
    }
    if payload["error"]:  # the child's own error is the cause: child_failed:<its type>
        cause = payload["error"]
        error = {**error, "message": f"{error['message']}: {cause.get('message')}",
                 "cause": cause}
    if not ok:
        error = {**error, "execution_id": str(child.pk)}
    deliver_result(work, ok=ok, output=payload["output"] if ok else None,
                   error=None if ok else error, execution_id=child.parent_id,
                   token=child.parent_token)
    return None


def _perform_cancel(work: Work) -> Result:
    for child in stores.active.children(work.execution_id, work.payload["token"]):
        with contextlib.suppress(accepting.NotAvailable):
            accepting.cancel(child.pk, actor=f"execution:{work.execution_id}",
                             reason="the parent execution was canceled")
    return None


PERFORMERS: dict[str, Callable[[Work], Result]] = {
    Work.CALL: _perform_call,
    Work.CHILD: _perform_child,
    Work.SEND: _perform_send,
    Work.NOTIFY: _perform_notify,
    effects.CANCEL: _perform_cancel,
}
