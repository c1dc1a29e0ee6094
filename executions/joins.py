"""When a `parallel` or `map` invoke is over: a pure decision from its branches' statuses.

The engine keeps every branch's status in the snapshot (`work["branches"]`) and asks
`decide` after each branch ends; `to_start` says which pending branches the concurrency
cap lets start now. Nothing here knows about events or effects, so the decision can be
checked for every order in which branches end (tests/test_parallel_joins.py).
"""
from __future__ import annotations

from collections.abc import Sequence

PENDING, RUNNING, FINISHED, FAILED, CANCELED = (
    "pending", "running", "finished", "failed", "canceled")
OPEN = (PENDING, RUNNING)
WAIT, SUCCEEDED, GROUP_FAILED = "wait", "succeeded", "failed"


def needed(join: str | int, total: int) -> int:
    """How many branches must finish: all of them, one (`any`), or at least N."""
    if join == "all":
        return total
    if join == "any":
        return 1
    return int(join)


def decide(statuses: Sequence[str], join: str | int, on_failure: str) -> str:
    """WAIT, SUCCEEDED or GROUP_FAILED for branches with these statuses.

    The group succeeds as soon as enough branches have finished. fail_fast: the first
    failed branch fails the group. collect: failures are tolerated and every branch runs
    to its end, so the error names every failure; the group fails when none is left open
    and the join is not met."""
    finished = sum(1 for status in statuses if status == FINISHED)
    if on_failure == "fail_fast" and FAILED in statuses:
        return GROUP_FAILED
    if finished >= needed(join, len(statuses)):
        return SUCCEEDED
    if not any(status in OPEN for status in statuses):
        return GROUP_FAILED
    return WAIT


def to_start(statuses: Sequence[str], max_concurrency: int | None) -> list[int]:
    """Indexes of the pending branches to start now, in order, within the cap."""
    pending = [i for i, status in enumerate(statuses) if status == PENDING]
    if max_concurrency is None:
        return pending
    running = sum(1 for status in statuses if status == RUNNING)
    return pending[:max(0, max_concurrency - running)]
