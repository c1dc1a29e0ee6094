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
        lease_seconds=(effect.timeout_seconds or 300) + 30,
        payload={"path": effect.call.path, "source": effect.call.source,
                 "literal": effect.call.literal, "names": effect.names,
                 "attempt": effect.attempt, "timeout_seconds": effect.timeout_seconds},
    ))


def _start_child(execution: Execution, effect: engine.StartChild, rows: Rows) -> None:
    rows.work.append(Work(
        execution_id=execution.pk, token=effect.token, kind=Work.CHILD,
        payload={"machine": effect.machine_id, "version": effect.machine_version,
                 "input": effect.input, "async": effect.is_async},
    ))


def _send_action(execution: Execution, effect: engine.SendAction, rows: Rows) -> None:
    rows.work.append(Work(
        execution_id=execution.pk, token=effect.token, kind=Work.SEND,
        payload={"execution": effect.execution_id, "action": effect.action,
                 "input": effect.input, "async": effect.is_async},
    ))


def _cancel_work(execution: Execution, effect: engine.CancelWork, rows: Rows) -> None:
    rows.cancel_work.append(effect.token)
    if effect.kind == Work.CHILD:
        rows.work.append(Work(execution_id=execution.pk, token=f"cancel:{effect.token}",
                              kind=CANCEL, payload={"token": effect.token}))


def _notify_parent(execution: Execution, effect: engine.NotifyParent, rows: Rows) -> None:
    if execution.parent_id:
        rows.work.append(Work(
            execution_id=execution.pk, token=f"notify:{execution.pk}:{execution.version}",
            kind=Work.NOTIFY,
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
