"""django-q2 tasks: what the qcluster workers run, and how the runner enqueues them.

The broker is django-q2's (ORM by default, Redis when REDIS_URL is set); one broker object
per process so enqueueing does not open a connection per task.
"""
import functools
import time

from django.db import DEFAULT_DB_ALIAS
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.tasks import async_task

from executions import engine, runner
from executions.models import Execution, InboxItem

THROUGHPUT_BUDGET_SECONDS = 60


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


def enqueue_work(work_id):
    async_task("executions.tasks.work_task", work_id, broker=_broker(),
               task_name=f"work {work_id}")


def advance_task(execution_id, mode=None):
    """Advance an execution: until its next pause, or one step in async-latency mode.

    In async-throughput mode a task starting an execution starts others waiting with it.
    """
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
    deadline = time.monotonic() + THROUGHPUT_BUDGET_SECONDS
    if mode == "async-throughput" and runner.start_waiting(execution_id, deadline=deadline):
        return
    runner.run_inline(execution_id, deadline=deadline, perform=mode == "sync")


def work_task(work_id):
    runner.perform_work(work_id)
