"""Timers and recovery: due timers become inbox items, exactly once each; the sweeper
re-enqueues what a dead process left behind (docs/runtime.md "Timers", "Recovery")."""
from __future__ import annotations

import time

from executions.runtime import queue
from executions.runtime import store as stores


def fire_due_timers(now: float | None = None, limit: int = 200) -> int:
    """Turn due timers into inbox items, exactly once each, and have workers apply them.

    One transaction claims a batch (Store.claim_due_timers): the due rows are deleted and
    recorded as inbox items keyed `timer:<token>`; then the advances are enqueued.
    """
    now = time.time() if now is None else now
    claimed = stores.active.claim_due_timers(now, limit)
    if claimed:
        queue.enqueue_advances(dict.fromkeys(claimed))  # whatever the mode
    return len(claimed)


def next_timer_due() -> float | None:
    return stores.active.next_timer_due()


def sweep(stale_after: float = 5.0) -> dict:
    """Re-enqueue what a dead process left: unapplied inbox items, unfinished work and runs,
    and async-throughput starts no starter task took (wakes one, unless one is pending).
    Work past its lease, or never taken, is performed again only while its execution still
    waits for it; the rest is marked canceled (Store.stale)."""
    stale = stores.active.stale(stale_after)
    for execution_id in stale.executions:
        queue.enqueue_advance(execution_id)
    if stale.starts_waiting:
        queue.wake_starter()
    for work_id, kind in stale.work:
        queue.enqueue_work(work_id, kind)
    return {"executions": len(stale.executions), "starts_waiting": stale.starts_waiting,
            "work": len(stale.work)}
