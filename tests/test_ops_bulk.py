"""Failure groups and bulk operations (executions/operations.py): a dry run listing what
would happen to each execution, then a background job, resumable, never acting twice."""
import signal
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.db.models import Count
from django.http import QueryDict
from django.utils import timezone

from executions import engine, operations, services
from executions.filters import ExecutionFilter
from executions.models import BulkItem, BulkOperation, Execution, HistoryEntry, InboxItem
from executions.services import InvalidRequest, NotAvailable
from tests.helpers import wait_until

REFUND = """
id: refund
execution_mode: sync
start_at: refund-requested
context: "{'amount': input['amount'], 'small': input['amount'] <= 100}"
states:
  refund-requested:
    actions:
      - {id: approve, on: approve, state: approved}
  approved: {return: "ctx['amount']"}
"""
OPERATOR = "user:olga"
TYPE_ERROR = "'<=' not supported between instances of 'str' and 'int'"


@pytest.fixture
def refund(save_machine):
    return save_machine(REFUND)


def start_many(failed, waiting=0):
    """`failed` executions that failed at the start (a text amount), `waiting` that wait."""
    ids = [services.start("refund", input={"amount": "5"}, actor=OPERATOR).execution.pk
           for _ in range(failed)]
    ids += [services.start("refund", input={"amount": 5}, actor=OPERATOR).execution.pk
            for _ in range(waiting)]
    return ids


def retried_counts(ids):
    counts = dict(HistoryEntry.objects.filter(execution_id__in=ids,
                                              kind=engine.EXECUTION_RETRIED)
                  .values_list("execution_id").annotate(n=Count("id")).order_by())
    return [counts.get(pk, 0) for pk in ids]


def test_failures_are_grouped_and_each_group_is_a_filter(refund):
    start_many(failed=4, waiting=2)
    groups = operations.failure_groups()
    assert len(groups) == 1
    group = groups[0]
    assert group["count"] == 4 and group["machine_id"] == "refund"
    assert group["error_type"] == "expression_error" and TYPE_ERROR in group["error_message"]
    filtered = ExecutionFilter(QueryDict(urlencode(group["filters"])),
                               queryset=Execution.objects.all())
    assert filtered.is_valid() and filtered.qs.count() == 4
    assert ExecutionFilter({"error_type": "nothing"},
                           queryset=Execution.objects.all()).qs.count() == 0


def test_dry_run_lists_each_execution_then_the_job_retries_each_once(refund):
    ids = start_many(failed=3, waiting=2)
    bulk = operations.preview_bulk({"ids": [str(pk) for pk in ids]},
                                   operations.request("retry"), actor=OPERATOR)
    verdicts = dict(BulkItem.objects.filter(operation=bulk).values_list("execution_id",
                                                                        "verdict"))
    assert [verdicts[pk] for pk in ids] == ["would_fail"] * 3 + ["not_available"] * 2
    previews = dict(BulkItem.objects.filter(operation=bulk).values_list("execution_id",
                                                                        "preview"))
    assert TYPE_ERROR in previews[ids[0]]
    assert previews[ids[3]] == "only a failed execution can be retried; this one is waiting"
    assert retried_counts(ids) == [0] * 5  # the dry run changed nothing
    with pytest.raises(InvalidRequest) as problem:
        operations.run_bulk(bulk.pk, actor=OPERATOR, reason="")
    assert problem.value.path == "reason"
    operations.run_bulk(bulk.pk, actor=OPERATOR, reason="the rate service is fixed")
    with pytest.raises(NotAvailable, match="queued already"):
        operations.run_bulk(bulk.pk, actor=OPERATOR, reason="twice")
    operations.bulk_job(str(bulk.pk))  # what the queued task runs
    operations.bulk_job(str(bulk.pk))  # run again: nothing is left to do
    assert retried_counts(ids) == [1, 1, 1, 0, 0]
    bulk.refresh_from_db()
    assert bulk.status == BulkOperation.DONE and bulk.actor == OPERATOR
    progress = operations.bulk_progress(bulk)
    assert progress["done"] == 5 and progress["outcomes"] == {"would_fail": 3,
                                                              "not_available": 2}
    row = HistoryEntry.objects.filter(execution_id=ids[0], kind=engine.EXECUTION_RETRIED).get()
    assert row.actor == OPERATOR and row.detail["reason"] == "the rate service is fixed"
    assert InboxItem.objects.filter(execution_id=ids[0],
                                    idempotency_key=f"bulk:{bulk.pk}").count() == 1


def test_a_bulk_retry_with_edited_input_by_failure_group_fixes_them(refund):
    ids = start_many(failed=3, waiting=1)
    group = operations.failure_groups()[0]
    fixed = operations.request("retry", input={"amount": 5})
    bulk = operations.preview_bulk({"filters": group["filters"]}, fixed, actor=OPERATOR)
    assert bulk.total == 3
    assert set(BulkItem.objects.filter(operation=bulk).values_list("verdict", flat=True)) == {
        "applies"}
    operations.run_bulk(bulk.pk, actor=OPERATOR, reason="amounts were text")
    operations.bulk_job(str(bulk.pk))
    statuses = dict(Execution.objects.filter(pk__in=ids).values_list("pk", "status"))
    assert [statuses[pk] for pk in ids] == ["waiting"] * 4
    edited = HistoryEntry.objects.filter(execution_id__in=ids[:3],
                                         kind=operations.INPUT_EDITED)
    assert edited.count() == 3 and {row.detail["operation"] for row in edited} == {
        f"bulk:{bulk.pk}"}


def test_bulk_cancel_and_action_with_a_reason(refund):
    ids = start_many(failed=1, waiting=2)
    action = operations.preview_bulk({"ids": [str(pk) for pk in ids]},
                                     operations.request("action", action="approve"),
                                     actor=OPERATOR)
    verdicts = list(BulkItem.objects.filter(operation=action).order_by("id")
                    .values_list("verdict", flat=True))
    assert verdicts == ["not_available", "applies", "applies"]
    operations.run_bulk(action.pk, actor=OPERATOR, reason="approved in the meeting")
    operations.bulk_job(str(action.pk))
    assert Execution.objects.filter(pk__in=ids[1:], status="finished").count() == 2
    cancel = operations.preview_bulk({"filters": {"status": "failed"}},
                                     operations.request("cancel"), actor=OPERATOR)
    operations.run_bulk(cancel.pk, actor=OPERATOR, reason="refunds closed")
    operations.bulk_job(str(cancel.pk))
    canceled = HistoryEntry.objects.get(execution_id=ids[0], kind=engine.EXECUTION_CANCELED)
    assert canceled.detail == {"reason": "refunds closed"} and canceled.actor == OPERATOR


def test_bad_selections_say_where(refund):
    cases = [
        ({}, "selection"),
        ({"ids": []}, "selection.ids"),
        ({"ids": ["not-a-uuid"]}, "selection.ids[0]"),
        ({"filters": {"status": "exploded"}}, "selection.filters.status"),
        ({"filters": {"status": {"a": 1}}}, "selection.filters.status"),
        ({"filters": []}, "selection.filters"),
    ]
    for selection, path in cases:
        with pytest.raises(InvalidRequest) as problem:
            operations.preview_bulk(selection, operations.request("cancel"), actor=OPERATOR)
        assert problem.value.path == path, (selection, problem.value.message)
    assert not BulkOperation.objects.exists()
    with pytest.raises(BulkOperation.DoesNotExist):
        operations.bulk_operation("nope")


@pytest.mark.django_db(transaction=True)
def test_a_job_killed_mid_way_resumes_and_acts_on_no_execution_twice(refund, cluster):
    ids = start_many(failed=400)
    bulk = operations.preview_bulk({"filters": {"status": "failed", "machine": "refund"}},
                                   operations.request("retry"), actor=OPERATOR)
    operations.run_bulk(bulk.pk, actor=OPERATOR, reason="retry them all")
    done = BulkItem.objects.filter(operation=bulk).exclude(outcome="")
    wait_until(lambda: done.count() >= 20, 60, "the job never started", interval=0.01)
    cluster.stop(signal.SIGKILL)
    at_kill = done.count()
    assert at_kill < 400, "the job finished before it could be killed"
    bulk.refresh_from_db()
    assert bulk.status == BulkOperation.RUNNING
    with pytest.raises(NotAvailable, match="still making progress"):
        operations.resume_bulk(bulk.pk)
    # Two minutes pass: the job is stalled, and the timer loop's sweep resumes it.
    BulkOperation.objects.filter(pk=bulk.pk).update(
        heartbeat_at=timezone.now() - operations.JOB_LOST_AFTER - timedelta(seconds=1))
    cluster.start()
    wait_until(lambda: BulkOperation.objects.get(pk=bulk.pk).status == BulkOperation.DONE, 120,
               "the job was not resumed")
    assert retried_counts(ids) == [1] * 400
    assert done.count() == 400


@pytest.mark.django_db(transaction=True)
def test_two_runs_of_a_job_at_once_edit_each_execution_once(refund):
    """A job resumed while the first run still works: each item is claimed in the
    transaction of its change, so the second run's change rolls back."""
    import threading

    from django.db import connections

    ids = start_many(failed=0, waiting=60)
    bulk = operations.preview_bulk({"ids": [str(pk) for pk in ids]},
                                   operations.request("edit", context={"amount": 7}),
                                   actor=OPERATOR)
    operations.run_bulk(bulk.pk, actor=OPERATOR, reason="both at once")

    def run():
        try:
            operations.bulk_job(str(bulk.pk))
        finally:
            connections.close_all()

    runs = [threading.Thread(target=run) for _ in range(2)]
    for thread in runs:
        thread.start()
    for thread in runs:
        thread.join()
    edited = dict(HistoryEntry.objects.filter(kind=operations.CONTEXT_EDITED)
                  .values_list("execution_id").annotate(n=Count("id")).order_by())
    assert [edited.get(pk) for pk in ids] == [1] * 60
    assert operations.bulk_progress(bulk)["outcomes"] == {"applies": 60}
