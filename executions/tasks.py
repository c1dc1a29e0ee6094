"""django-q2 task entry points: what the qcluster workers run.

Enqueued by executions/runtime/queue.py under these dotted paths (tasks already queued name
them: keep the names). Each is a thin call into the runtime.
"""
import logging
import time

from executions.runtime import advancing, performers, queue

THROUGHPUT_BUDGET_SECONDS = 60
# A starter hands over to a new task after this, so other tasks get their turn.
STARTER_BUDGET_SECONDS = 5

log = logging.getLogger(__name__)


def advance_task(execution_id, mode=None):
    """Advance an execution: until its next pause, or one step in async-latency mode."""
    advancing.advance_queued(execution_id, mode, budget=THROUGHPUT_BUDGET_SECONDS)


def advance_many_task(executions):
    """advance_task for each (execution id, mode) in turn. One that fails is logged and left
    to the sweeper (what it had to apply stays pending) instead of holding up the others."""
    for execution_id, mode in executions:
        try:
            advance_task(execution_id, mode)
        except Exception:
            log.exception("could not advance execution %s", execution_id)


def work_task(work_id):
    for execution_id in performers.perform_work(work_id):
        advancing.schedule(execution_id)


def start_task():
    """Start the async-throughput executions waiting to be started (advancing.start_waiting),
    pass after pass until one finds nothing; then clear the starter marker and make one
    more pass, for the starts whose callers saw the marker still set (queue.wake_starter).

    When the budget runs out first, the marker is cleared and the starter woken again: a
    new task (this one's, or a caller's that won the marker) goes on after the others queued.
    """
    deadline = time.monotonic() + STARTER_BUDGET_SECONDS
    drained = False
    while not drained and time.monotonic() < deadline:
        drained = advancing.start_waiting(deadline=deadline) == 0
    queue.clear_starter_marker()
    if not drained or advancing.start_waiting(deadline=deadline) is None:
        queue.wake_starter()
