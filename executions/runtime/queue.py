"""Enqueueing django-q2 tasks (the entry points are in executions/tasks.py).

The broker is django-q2's (ORM by default, Redis when REDIS_URL is set); one broker object
per process so enqueueing does not open a connection per task. This module imports no
other runtime module: the runtime calls it, the tasks call the runtime.

Starts in async-throughput mode share their tasks: one starter task starts every execution
waiting when it runs (`wake_starter`, tasks.start_task), so a start costs the cluster a
share of one task instead of a task of its own. Timers that come due together share tasks
the same way (`enqueue_advances`).
"""
from __future__ import annotations

import functools
import time
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.tasks import async_task

from executions.models import StarterMarker, Work

# A starter marked pending longer ago than this was lost (a worker killed, Redis
# restarted): the next caller or sweep enqueues another. Longer than a starter's budget, so
# one still at work is rarely taken for lost (which would only cost an extra task).
STARTER_LOST_AFTER_SECONDS = 10

# The task entry points (executions/tasks.py), by the dotted paths queued tasks name.
ADVANCE_TASK = "executions.tasks.advance_task"
ADVANCE_MANY_TASK = "executions.tasks.advance_many_task"
WORK_TASK = "executions.tasks.work_task"
START_TASK = "executions.tasks.start_task"
BULK_TASK = "executions.operations.bulk_job"  # a service: the job acts through them


@functools.cache
def _broker() -> Any:
    """The main queue's broker, the one whose workers start and advance executions (named
    for the site, whichever cluster this process serves: an IO worker enqueues advances)."""
    return get_broker(Conf.PREFIX)


@functools.cache
def _io_broker() -> Any:
    """The queue of IO calls, served by a cluster of its own (settings IO_QUEUE), so that
    calls waiting on slow services never hold the workers that start and advance
    executions; the main queue when IO_QUEUE is empty."""
    name = settings.DATA_MACHINES.get("IO_QUEUE")
    return get_broker(name) if name else _broker()


def queue_in_database() -> bool:
    """Whether tasks are rows in our own database (django-q2's ORM broker), so enqueueing one
    can join the transaction that makes it necessary."""
    return not Conf.REDIS and Conf.ORM == DEFAULT_DB_ALIAS


def enqueue_advance(execution_id: Any, mode: str | None = None) -> None:
    async_task(ADVANCE_TASK, str(execution_id), mode, broker=_broker(),
               task_name=f"advance {execution_id}")


def enqueue_advances(executions: Iterable[tuple[Any, str]]) -> None:
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
            async_task(ADVANCE_MANY_TASK, share, broker=_broker(),
                       task_name=f"advance {len(share)} executions")


def enqueue_work(work_id: int, kind: str | None = None) -> None:
    """Have a worker perform this work: an IO call on the IO queue, the rest (child starts,
    actions sent, notices, cancels: quick, and they start and advance executions) on the
    main queue."""
    broker = _io_broker() if kind == Work.CALL else _broker()
    async_task(WORK_TASK, work_id, broker=broker, task_name=f"work {work_id}")


def wake_starter() -> None:
    """Make sure a starter task runs after this; call it once new async-throughput starts
    are committed.

    A task is enqueued only when none is pending, as a shared marker says: a key beside the
    queue in Redis, else a StarterMarker row. The caller reads the marker and, if it is
    clear, sets it in one atomic statement (of callers racing, one wins); only the one that
    set it enqueues — with the ORM broker in the same transaction, so the marker is never set
    without its task.

    Why no start is left without a task: a starter clears the marker only once it has found
    nothing more to start, and then makes one more pass over the executions not started
    (tasks.start_task). A caller that found the marker set read it after its own commit and
    before the next clear, so that last pass, which runs after the clear, sees its
    execution; a caller that found it clear enqueued a task of its own. A marker set longer
    than STARTER_LOST_AFTER_SECONDS ago counts as clear: its task was lost, and the next
    caller, or the sweeper for executions left waiting (timers.sweep), enqueues another.
    """
    redis = _redis()
    if redis is not None:  # one round trip: set unless set (it expires when its task is lost)
        if redis.set(_marker_key(), time.time(), nx=True, ex=STARTER_LOST_AFTER_SECONDS):
            _enqueue_starter()
        return
    now = time.time()
    lost_before = now - STARTER_LOST_AFTER_SECONDS
    since = starter_pending_since(_broker().list_key)  # a read: no lock while one is
    if since is not None and since >= lost_before:
        return
    with transaction.atomic():
        if mark_starter_pending(_broker().list_key, now, lost_before):
            _enqueue_starter()


def _enqueue_starter() -> None:
    async_task(START_TASK, broker=_broker(), task_name="start waiting executions")


def clear_starter_marker() -> None:
    redis = _redis()
    if redis is not None:
        redis.delete(_marker_key())
    else:
        clear_starter_pending(_broker().list_key)


def _redis() -> Any:
    """The broker's Redis connection when tasks go through Redis, else None. (Told by the
    broker's module: importing the Redis client just to ask would slow a worker's first
    task with the ORM broker.)"""
    broker = _broker()
    return broker.connection if type(broker).__module__.endswith(".redis_broker") else None


def _marker_key() -> str:
    return f"{_broker().list_key}:starter"


# The starter marker without Redis: a StarterMarker row per queue, in plain SQL -----------
def starter_pending_since(queue: str) -> float | None:
    """When the pending starter task of this queue was enqueued (None: none is pending)."""
    db = connections[DEFAULT_DB_ALIAS]
    quote = db.ops.quote_name
    with db.cursor() as cursor:
        cursor.execute(f"SELECT {quote('pending_since')} FROM"
                       f" {quote(StarterMarker._meta.db_table)} WHERE {quote('queue')} = %s",
                       [queue])
        row = cursor.fetchone()
    return row[0] if row else None


def mark_starter_pending(queue: str, now: float, lost_before: float) -> bool:
    """Mark a starter task pending unless one is (one marked before `lost_before` counts as
    lost); True when this call marked it. One statement, so of callers racing one wins."""
    db = connections[DEFAULT_DB_ALIAS]
    quote = db.ops.quote_name
    table, since = quote(StarterMarker._meta.db_table), quote("pending_since")
    with db.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({quote('queue')}, {since}) VALUES (%s, %s)"
            f" ON CONFLICT ({quote('queue')}) DO UPDATE SET {since} = excluded.{since}"
            f" WHERE {table}.{since} IS NULL OR {table}.{since} < %s",
            [queue, now, lost_before])
        return cursor.rowcount == 1


def clear_starter_pending(queue: str) -> None:
    """No starter task is pending any more: the one clearing it looks for executions to
    start once more after this."""
    StarterMarker.objects.filter(queue=queue).update(pending_since=None)


def enqueue_bulk(operation_id: Any) -> None:
    """Run (or resume) a bulk operation's job (executions/operations.py)."""
    async_task(BULK_TASK, str(operation_id), broker=_broker(),
               task_name=f"bulk operation {operation_id}")
