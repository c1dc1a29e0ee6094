"""What makes an interactive action cheaper (docs/benchmarks.md, "After the evaluation
pool"), checked for what it must not change: what a reply may carry, what a step may store,
which errors the database raises, and what the process cache hands out."""
import struct
import time

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from executions import engine, services
from executions.models import Execution, HistoryEntry
from executions.runtime import pool, pool_child, sqlstore
from executions.runtime.store import history_row
from expressions import values
from expressions.values import InvalidValue, Limits

CLICKER = """
id: clicker
execution_mode: sync
start_at: open
context: {n: 0}
states:
  open:
    actions:
      - {id: click, on: click, assign: {n: "ctx['n'] + 1"}}
"""


# Replies: JSON, integers of any length -----------------------------------------------------
def test_a_reply_decodes_as_json_does():
    text = '{"ok":true,"n":[1,-2,3.5,12345678901234567890],"s":"\\u00e9"}'
    assert pool._decode(text) == {"ok": True, "n": [1, -2, 3.5, 12345678901234567890],
                                  "s": "é"}


@pytest.mark.parametrize("sign", ["", "-"])
def test_an_integer_past_cpythons_limit_stands_as_a_number_the_checks_refuse(sign):
    reply = pool._decode('{"n":' + sign + "7" * 5000 + ',"m":12}')
    assert reply["m"] == 12
    assert abs(reply["n"]) >= 10 ** 4999 and (reply["n"] < 0) == (sign == "-")
    with pytest.raises(values.TooLarge):
        values.check_value(reply["n"])


def test_an_unreadable_reply_is_still_refused():
    with pytest.raises(ValueError):
        pool._decode('{"ok": tru')


# Requests: marshal after their length -------------------------------------------------------
def test_a_child_whose_parent_stops_mid_request_exits_quietly():
    worker = pool.Worker(0)
    try:
        worker.stdin.write(struct.pack("<I", 100) + b"\x00" * 10)  # 10 of 100 bytes
        worker.stdin.close()
        assert worker.process.wait(timeout=10) == 0
    finally:
        worker.close()


# The rows of a step: one check for them all, the same verdict -------------------------------
LIMITS = Limits(history_row=2000)
ROWS = [{"seq": 1, "kind": engine.ACTION_RECEIVED, "at": 1000.0, "input": {"a": "x"}},
        {"seq": 2, "kind": engine.TRANSITION_TAKEN, "at": 1000.0, "context": {"n": 1}}]


def verdict(check):
    try:
        check()
    except InvalidValue as problem:
        return type(problem), problem.message, problem.path
    return None


@pytest.mark.parametrize("change", [
    {},  # fine
    {"input": {"a": "x\x00"}},  # NUL
    {"input": {"a": "x\ud800"}},  # lone surrogate
    {"input": {"a": float("nan")}},
    {"input": {"a": 10 ** 400}},  # past any JSON number
    {"input": {"a": {1, 2}}},  # not JSON
    {"input": {"a": "x" * 3000}},  # one row past the limit
    {"at": 1e300},  # a time past 9999
    {"detail": {"due": -5}},
])
def test_the_rows_checked_together_get_the_verdict_of_row_by_row(change):
    context = {"n": 1}
    rows = [dict(ROWS[0]), {**ROWS[1], "context": context, **change}]
    shared = (context, values.json_size(context))

    def one_by_one():
        for row in rows:
            values.check_history_row(row, LIMITS, f"history[{row['seq']}]", shared)

    expected = verdict(one_by_one)
    assert verdict(lambda: values.check_history_rows(rows, LIMITS, shared)) == expected
    assert (expected is None) == (change == {})


def test_rows_within_the_limit_each_pass_however_many_together():
    rows = [{"seq": seq, "kind": engine.TRANSITION_TAKEN, "at": 1000.0,
             "input": {"a": "x" * 900}} for seq in range(1, 20)]  # 19 x 900 > 2,000
    values.check_history_rows(rows, LIMITS)


def test_the_shared_context_counts_on_each_row_that_carries_it():
    context = {"big": "y" * 1500}
    rows = [{"seq": 1, "kind": engine.TRANSITION_TAKEN, "at": 1000.0, "context": context,
             "input": {"a": "x" * 600}}]  # 600 + 1,500 > 2,000
    with pytest.raises(values.TooLarge) as refused:
        values.check_history_rows(rows, LIMITS, (context, values.json_size(context)))
    assert refused.value.path == "history[1]"


# The advance's statements on the driver's cursor -----------------------------------------
@pytest.mark.django_db(transaction=True)
def test_the_advance_statements_raise_djangos_errors_and_show_where_queries_are_logged(
        save_machine):
    save_machine(CLICKER)
    execution = services.start("clicker").execution
    row = history_row(execution, {"seq": 1, "kind": engine.ACTION_RECEIVED, "at": time.time()})
    with pytest.raises(IntegrityError), transaction.atomic():  # seq 1 is stored already
        sqlstore.insert(HistoryEntry, [row])
    with CaptureQueriesContext(connection) as captured:
        services.trigger(execution.pk, "click", wait=True)
    statements = [query["sql"] for query in captured.captured_queries]
    assert any(sql.startswith("UPDATE") and "version" in sql for sql in statements)
    assert any(sql.startswith("INSERT INTO") and "history" in sql for sql in statements)
    execution.refresh_from_db()
    assert (execution.context, execution.version) == ({"n": 1}, 2)
    assert execution.history.count() == 3


@pytest.mark.django_db(transaction=True)
def test_a_lost_compare_and_swap_writes_nothing(save_machine):
    save_machine(CLICKER)
    execution = services.start("clicker").execution
    services.trigger(execution.pk, "click", wait=True)  # the row is at version 2 now
    stale = sqlstore.read_execution(execution.pk)
    stale.version = 1
    columns = {"status": "waiting", "state": "open", "context": {"n": 99}}
    with transaction.atomic():
        assert sqlstore.compare_and_swap(stale, columns, nothing_pending=True) is False
    execution.refresh_from_db()
    assert execution.context == {"n": 1}


# The process cache hands out copies ---------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_the_process_cache_keeps_and_hands_out_copies(save_machine):
    save_machine(CLICKER)
    execution = services.start("clicker").execution
    recent = sqlstore.RecentExecutions()
    recent.remember(execution)
    execution.context = {"n": 5}
    execution._state.fields_cache.clear()
    out = recent.get(execution.pk)
    assert out.context == {"n": 0} and out.machine_version.machine_id == "clicker"
    assert out._state is not execution._state and out._state.db == "default"
    out.version = 42
    out._state.fields_cache.clear()
    again = recent.get(execution.pk)
    assert again.version == 1 and "machine_version" in again._state.fields_cache


def test_snapshots_events_and_effects_convert_both_ways():
    snapshot = engine.Snapshot(status=engine.WAITING, state="a", context={"n": 1}, seq=3,
                               queued=({"action": "x", "input": {}, "actor": None},))
    assert engine.Snapshot.from_dict({**snapshot.to_dict(), "unknown": 1}) == snapshot
    assert list(snapshot.to_dict())[:3] == ["status", "state", "context"]
    assert pool_child.event_data(engine.Action("go", {"a": 1}, "u")) == {
        "name": "go", "input": {"a": 1}, "actor": "u", "type": "Action"}


@pytest.mark.django_db
@pytest.mark.parametrize("model", [HistoryEntry, Execution])
def test_the_statements_prepare_each_value_as_django_would(model):
    from datetime import UTC, datetime, timedelta, timezone

    samples = {
        "JSONField": [{"a": [1, "é", None]}, [], "text", None],
        "DateTimeField": [datetime(2026, 12, 1, 7, 0, tzinfo=UTC),
                          datetime(2026, 12, 1, 7, 0, 0, 123, tzinfo=timezone(timedelta(hours=5))),
                          datetime.fromtimestamp(1796108567.7121193, tz=UTC), None],
    }
    db = sqlstore._db()
    db.ensure_connection()
    checked = 0
    for field in model._meta.concrete_fields:
        prepare = sqlstore._preparer(field, db)
        for value in samples.get(field.get_internal_type(), []):
            ours, django = prepare(value), field.get_db_prep_save(value, db)
            assert getattr(ours, "obj", ours) == getattr(django, "obj", django), field.name
            checked += 1
    assert checked >= 12


@pytest.mark.django_db(transaction=True)
def test_the_statements_open_the_connection_when_it_was_closed(save_machine):
    save_machine(CLICKER)
    execution = services.start("clicker").execution
    connection.close()
    row = history_row(execution, {"seq": 2, "kind": engine.ACTION_RECEIVED, "at": time.time()})
    sqlstore.insert(HistoryEntry, [row])  # autocommit: stored at once
    assert execution.history.filter(seq=2).exists()


DOOR = """
id: door
execution_mode: sync
start_at: shut
context: {n: 1}
states:
  shut:
    actions:
      - {id: knock, on: knock, assign: {n: "ctx['n'] * 1.0"}}
      - {id: open, on: open, state: opened}
  opened: {return: "ctx['n']"}
"""


@pytest.mark.django_db(transaction=True)
def test_the_compare_and_swap_sets_what_changed_and_only_that(save_machine):
    save_machine(DOOR)
    execution = services.start("door").execution
    with CaptureQueriesContext(connection) as captured:
        services.trigger(execution.pk, "knock", wait=True)
    update = next(q["sql"] for q in captured.captured_queries if q["sql"].startswith("UPDATE"))
    assert '"context"' in update and '"updated_at"' in update
    assert '"status"' not in update and '"state"' not in update  # the same: indexes untouched
    execution.refresh_from_db()
    assert execution.context == {"n": 1.0} and type(execution.context["n"]) is float  # 1 -> 1.0
    with CaptureQueriesContext(connection) as captured:
        services.trigger(execution.pk, "open", wait=True)
    update = next(q["sql"] for q in captured.captured_queries if q["sql"].startswith("UPDATE"))
    assert '"status"' in update and '"state"' in update and '"finished_at"' in update
    execution.refresh_from_db()
    assert (execution.status, execution.state, execution.result) == (
        engine.FINISHED, "opened", 1.0)
    assert execution.finished_at is not None
