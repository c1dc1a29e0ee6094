"""django-q2 tasks: what the qcluster workers run, and how the runner enqueues them.

The broker is django-q2's (ORM by default, Redis when REDIS_URL is set); one broker object
per process so enqueueing does not open a connection per task.

Starts in async-throughput mode share their tasks: one starter task starts every execution
waiting when it runs (`wake_starter`, `start_task`), so a start costs the cluster a share of
one task instead of a task of its own. Timers that come due together share tasks the same
way (`enqueue_advances`).
"""
import functools
import logging
import time

from django.db import DEFAULT_DB_ALIAS, transaction
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.tasks import async_task

from executions import engine, runner, sql
from executions.models import Execution, InboxItem

THROUGHPUT_BUDGET_SECONDS = 60
# A starter hands over to a new task after this, so other tasks get their turn.
STARTER_BUDGET_SECONDS = 5
# A starter marked pending longer ago than this was lost (a worker killed, Redis
# restarted): the next caller or sweep enqueues another. Longer than a starter's budget, so
# one still at work is rarely taken for lost (which would only cost an extra task).
STARTER_LOST_AFTER_SECONDS = 10

log = logging.getLogger(__name__)


@functools.cache
def _broker():
    return get_broker()


def queue_in_database() -> bool:
    """Whether tasks are rows in our own database (django-q2's ORM broker), so enqueueing one
    can join the transaction that makes it necessary."""
    return not Conf.REDIS and Conf.ORM == DEFAULT_DB_ALIAS


def enqueue_advance(execution_id, mode=None):
    async_task("executions.tasks.advance_task", str(execution_id), mode, broker=_broker(),
               task_name=f"advance {execution_id}")


def enqueue_advances(executions):
    """Advance these (execution id, mode) pairs, for timers that came due together.

    async-latency executions get a task each (their one-step-per-task fairness); the others
    are dealt out to one task per worker, so a burst of timers costs the cluster a few tasks
    instead of one each, still spread over the workers.
    """
    shared = []
    for execution_id, mode in executions:
        if mode == "async-latency":
            enqueue_advance(execution_id, mode)
        else:
            shared.append((str(execution_id), mode))
    for share in (shared[worker::Conf.WORKERS] for worker in range(Conf.WORKERS)):
        if len(share) == 1:
            enqueue_advance(*share[0])
        elif share:
            async_task("executions.tasks.advance_many_task", share, broker=_broker(),
                       task_name=f"advance {len(share)} executions")


def advance_many_task(executions):
    """advance_task for each (execution id, mode) in turn. One that fails is logged and left
    to the sweeper (what it had to apply stays pending) instead of holding up the others."""
    for execution_id, mode in executions:
        try:
            advance_task(execution_id, mode)
        except Exception:
            log.exception("could not advance execution %s", execution_id)


def enqueue_work(work_id):
    async_task("executions.tasks.work_task", work_id, broker=_broker(),
               task_name=f"work {work_id}")


def wake_starter():
    """Make sure a starter task runs after this; call it once new async-throughput starts
    are committed.

    A task is enqueued only when none is pending, as a shared marker says: a key beside the
    queue in Redis, else a StarterMarker row. The caller reads the marker and, if it is
    clear, sets it in one atomic statement (of callers racing, one wins); only the one that
    set it enqueues — with the ORM broker in the same transaction, so the marker is never set
    without its task.

    Why no start is left without a task: a starter clears the marker only once it has found
    nothing more to start, and then makes one more pass over the executions not started
    (`start_task`). A caller that found the marker set read it after its own commit and
    before the next clear, so that last pass, which runs after the clear, sees its
    execution; a caller that found it clear enqueued a task of its own. A marker set longer
    than STARTER_LOST_AFTER_SECONDS ago counts as clear: its task was lost, and the next
    caller, or the sweeper for executions left waiting (`runner.sweep`), enqueues another.
    """
    redis = _redis()
    if redis is not None:  # one round trip: set unless set (it expires when its task is lost)
        if redis.set(_marker_key(), time.time(), nx=True, ex=STARTER_LOST_AFTER_SECONDS):
            _enqueue_starter()
        return
    now = time.time()
    lost_before = now - STARTER_LOST_AFTER_SECONDS
    since = sql.starter_pending_since(_broker().list_key)  # a read: no lock while one is
    if since is not None and since >= lost_before:
        return
    with transaction.atomic():
        if sql.mark_starter_pending(_broker().list_key, now, lost_before):
            _enqueue_starter()


def _enqueue_starter():
    async_task("executions.tasks.start_task", broker=_broker(),
               task_name="start waiting executions")


def _clear_starter_marker():
    redis = _redis()
    if redis is not None:
        redis.delete(_marker_key())
    else:
        sql.clear_starter_pending(_broker().list_key)


def _redis():
    """The broker's Redis connection when tasks go through Redis, else None. (Told by the
    broker's module: importing the Redis client just to ask would slow a worker's first
    task with the ORM broker.)"""
    broker = _broker()
    return broker.connection if type(broker).__module__.endswith(".redis_broker") else None


def _marker_key():
    return f"{_broker().list_key}:starter"


def start_task():
    """Start the async-throughput executions waiting to be started (runner.start_waiting),
    pass after pass until one finds nothing; then clear the starter marker and make one
    more pass, for the starts whose callers saw the marker still set (`wake_starter`).

    When the budget runs out first, the marker is cleared and the starter woken again: a
    new task (this one's, or a caller's that won the marker) goes on after the others queued.
    """
    deadline = time.monotonic() + STARTER_BUDGET_SECONDS
    drained = False
    while not drained and time.monotonic() < deadline:
        drained = runner.start_waiting(deadline=deadline) == 0
    _clear_starter_marker()
    if not drained or runner.start_waiting(deadline=deadline) is None:
        wake_starter()


def advance_task(execution_id, mode=None):
    """Advance an execution: until its next pause, or one step in async-latency mode."""
    if mode is None:
        mode = Execution.objects.values_list("execution_mode", flat=True).get(pk=execution_id)
    if mode == "async-latency":
        advanced = runner.advance(execution_id)
        for work in advanced.work:
            enqueue_work(work.pk)
        more = InboxItem.objects.filter(execution_id=execution_id, processed_at__isnull=True)
        if advanced.execution.status == engine.RUNNING or more.exists():
            enqueue_advance(execution_id, mode)  # re-enqueued behind other executions: fair
        return
    runner.run_inline(execution_id, deadline=time.monotonic() + THROUGHPUT_BUDGET_SECONDS,
                      perform=mode == "sync")


def work_task(work_id):
    runner.perform_work(work_id)
