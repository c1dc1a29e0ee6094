"""The engine's effects as rows: what a save writes beside the snapshot.

One function per effect type, found through a table keyed by the type (as the engine
dispatches its events). Timers become Timer rows (or deletions), outgoing work becomes Work
rows that performers carry out after the commit.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from executions import engine
from executions.models import Execution, Timer, Work

CANCEL = "cancel"  # the Work kind that cancels the children of canceled work

# Leases (docs/runtime.md "Recovery"). A worker that claims work holds it for its lease;
# past it the sweeper takes the worker for dead and the work is performed again — only if
# the execution still waits for it. A lease is longer than the work can take, so work that
# is still being performed is never performed a second time beside it:
# - an IO call's work (its expression and every io() call in it) ends within
#   `call_seconds`: min(the invoke's timeout_seconds, CALL_MAX_SECONDS) + 1, enforced by
#   the sandbox's time limit and io.deadline; its lease is that plus LEASE_MARGIN_SECONDS;
# - a child start or an action sent waits at most INTERNAL_WORK_SECONDS for the other
#   execution (performers); notices and cancels are quicker: their lease is
#   INTERNAL_LEASE_SECONDS.
CALL_MAX_SECONDS = 300.0
LEASE_MARGIN_SECONDS = 30.0
INTERNAL_WORK_SECONDS = 30.0
INTERNAL_LEASE_SECONDS = 60.0

# Work done on behalf of an invoke: worth performing only while the execution waits for its
# token. (Notices and cancels of children are bookkeeping, always carried out.)
INVOKE_KINDS = (Work.CALL, Work.CHILD, Work.SEND)


def call_seconds(timeout_seconds: float | None) -> float:
    """The most an IO call's work runs: its expression and the IO calls it makes."""
    return min(timeout_seconds or CALL_MAX_SECONDS, CALL_MAX_SECONDS) + 1


def still_wanted(work: Work, execution: Execution) -> bool:
    """Whether the execution still waits for this work's result. Work it no longer waits
    for (it finished, failed, was canceled, timed out or moved on) is never performed
    (again): the store marks it canceled instead."""
    if work.kind not in INVOKE_KINDS:
        return True
    outstanding = (execution.engine_state or {}).get("work")
    return execution.status == engine.INVOKING and engine.waits_for(outstanding, work.token)


@dataclass
class Rows:
    """What the effects of one step write, in this order: cancel_work, cancel_timers,
    timers, work."""

    timers: list[Timer] = field(default_factory=list)
    cancel_timers: list[str] = field(default_factory=list)  # tokens
    work: list[Work] = field(default_factory=list)
    cancel_work: list[str] = field(default_factory=list)  # tokens of pending work

    def __bool__(self) -> bool:
        return bool(self.timers or self.cancel_timers or self.work or self.cancel_work)


def rows(execution: Execution, effects: list[engine.Effect]) -> Rows:
    """The rows of these effects (after the compare-and-swap: notices use the version)."""
    found = Rows()
    for effect in effects:
        _ROWS[type(effect)](execution, effect, found)
    return found


def _arm_timer(execution: Execution, effect: engine.ArmTimer, rows: Rows) -> None:
    rows.timers.append(Timer(execution_id=execution.pk, token=effect.token, due_at=effect.due,
                             purpose=effect.purpose))


def _cancel_timer(execution: Execution, effect: engine.CancelTimer, rows: Rows) -> None:
    rows.cancel_timers.append(effect.token)


def _call_io(execution: Execution, effect: engine.CallIO, rows: Rows) -> None:
    rows.work.append(Work(
        execution_id=execution.pk, token=effect.token, kind=Work.CALL,
        lease_seconds=call_seconds(effect.timeout_seconds) + LEASE_MARGIN_SECONDS,
        payload={"path": effect.call.path, "source": effect.call.source,
                 "literal": effect.call.literal, "names": effect.names,
                 "attempt": effect.attempt, "timeout_seconds": effect.timeout_seconds,
                 "bound_seconds": call_seconds(effect.timeout_seconds)},
    ))


def _start_child(execution: Execution, effect: engine.StartChild, rows: Rows) -> None:
    rows.work.append(Work(
        execution_id=execution.pk, token=effect.token, kind=Work.CHILD,
        lease_seconds=INTERNAL_LEASE_SECONDS,
        payload={"machine": effect.machine_id, "version": effect.machine_version,
                 "input": effect.input, "async": effect.is_async},
    ))


def _send_action(execution: Execution, effect: engine.SendAction, rows: Rows) -> None:
    rows.work.append(Work(
        execution_id=execution.pk, token=effect.token, kind=Work.SEND,
        lease_seconds=INTERNAL_LEASE_SECONDS,
        payload={"execution": effect.execution_id, "action": effect.action,
                 "input": effect.input, "async": effect.is_async},
    ))


def _cancel_work(execution: Execution, effect: engine.CancelWork, rows: Rows) -> None:
    rows.cancel_work.append(effect.token)
    if effect.kind == Work.CHILD:
        rows.work.append(Work(execution_id=execution.pk, token=f"cancel:{effect.token}",
                              kind=CANCEL, payload={"token": effect.token},
                              lease_seconds=INTERNAL_LEASE_SECONDS))


def _notify_parent(execution: Execution, effect: engine.NotifyParent, rows: Rows) -> None:
    if execution.parent_id:
        rows.work.append(Work(
            execution_id=execution.pk, token=f"notify:{execution.pk}:{execution.version}",
            kind=Work.NOTIFY, lease_seconds=INTERNAL_LEASE_SECONDS,
            payload={"status": effect.status, "output": effect.output, "error": effect.error},
        ))


def _nothing(execution: Execution, effect: engine.ContinueLater, rows: Rows) -> None:
    """ContinueLater: the execution stays `running`; the task that advanced it goes on."""


_ROWS: dict[type, Callable[[Execution, Any, Rows], None]] = {
    engine.ArmTimer: _arm_timer,
    engine.CancelTimer: _cancel_timer,
    engine.CallIO: _call_io,
    engine.StartChild: _start_child,
    engine.SendAction: _send_action,
    engine.CancelWork: _cancel_work,
    engine.NotifyParent: _notify_parent,
    engine.ContinueLater: _nothing,
}
