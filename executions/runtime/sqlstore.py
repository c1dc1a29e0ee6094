"""The store in the database (SQLite or PostgreSQL): `SqlStore`.

The few statements every start and advance runs are plain SQL: building them through the
ORM cost more than running them (a 3-statement advance spent most of its 2.3 ms compiling
queries), so they are written once here, from the models' own field definitions and
converters. Everything else uses the ORM.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import DEFAULT_DB_ALIAS, IntegrityError, connection, connections, transaction
from django.db.models import DateTimeField, F, JSONField
from django.utils import timezone

from executions import engine
from executions.models import (
    Execution,
    ExecutionAttribute,
    HistoryEntry,
    InboxItem,
    Timer,
    Work,
)
from executions.runtime import effects
from executions.runtime.store import (
    Conflict,
    Duplicate,
    Stale,
    Step,
    checked_result,
    checked_step,
    history_row,
    key_in_use_step,
    mark_processed,
    snapshot_columns,
    swapped,
)
from machines.lru import LRU
from machines.models import MachineVersion

VERSION_COLUMNS = ("id", "machine_id", "version", "content_hash")
FEW_ROWS = 50  # more rows than this are bound as column arrays on PostgreSQL (UNNEST)
INSERT_BATCH = 500  # rows per INSERT statement (SQLite allows 32,766 parameters)


def _db():
    """This thread's connection object (the `connection` proxy costs a lookup per use)."""
    return connections[DEFAULT_DB_ALIAS]


def _execute(db, sql: str, params: list) -> int:
    """Run one of the statements every advance runs (the compare-and-swap, the history
    INSERT); its row count. On the driver's own cursor, its errors turned into Django's as
    Django's cursor does: Django's cursor cost more than SQLite took to run a step's UPDATE
    (7 of 10 µs). Through Django's cursor wherever queries are logged (DEBUG, tests that
    count them) or wrapped (`connection.execute_wrapper`), which then see them as usual."""
    if db.queries_logged or db.execute_wrappers:
        with db.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.rowcount
    if db.connection is None:
        db.ensure_connection()
    db.validate_no_broken_transaction()
    with db.wrap_database_errors:
        cursor = db.connection.cursor()
        try:
            cursor.execute(sql.replace("%s", "?") if db.vendor == "sqlite" else sql, params)
            return cursor.rowcount
        finally:
            cursor.close()


def machine_version(machine_id, version=None) -> MachineVersion:
    """The version to start (the latest unless `version` is given), without its large text
    fields: they load only if the definition cache misses."""
    db = _db()
    quote = db.ops.quote_name
    sql = (f"SELECT {', '.join(quote(name) for name in VERSION_COLUMNS)}"
           f" FROM {quote(MachineVersion._meta.db_table)} WHERE {quote('machine_id')} = %s")
    params = [machine_id]
    if version is not None:
        sql += f" AND {quote('version')} = %s"
        params.append(MachineVersion._meta.get_field("version").get_prep_value(version))
    with db.cursor() as cursor:
        cursor.execute(sql + f" ORDER BY {quote('version')} DESC LIMIT 1", params)
        row = cursor.fetchone()
    if row is None:
        raise MachineVersion.DoesNotExist(
            f"no machine named {machine_id!r}" if version is None
            else f"no version {version} of machine {machine_id!r}")
    return MachineVersion.from_db(db.alias, VERSION_COLUMNS, row)


def _has_pending(quote, execution_id_column):
    """SQL that is true when inbox items of that execution wait to be applied."""
    return (f"EXISTS (SELECT 1 FROM {quote(InboxItem._meta.db_table)} i"
            f" WHERE i.{quote('execution_id')} = {execution_id_column}"
            f" AND i.{quote('processed_at')} IS NULL)")


@functools.lru_cache(maxsize=64)
def _execution_query(db, where, lock):
    """A SELECT of executions (`where` names columns as `{column}`) and each column's
    converters, built once per connection."""
    quote = db.ops.quote_name
    fields = Execution._meta.concrete_fields
    columns = [f"e.{quote(field.column)}" for field in fields]
    columns += [f"v.{quote(name)}" for name in VERSION_COLUMNS]
    sql = (
        f"SELECT {', '.join(columns)}, {_has_pending(quote, 'e.' + quote('id'))}"
        f" FROM {quote(Execution._meta.db_table)} e"
        f" JOIN {quote(MachineVersion._meta.db_table)} v"
        f" ON v.{quote('id')} = e.{quote('machine_version_id')}"
        f" WHERE {where.format(**{field.column: quote(field.column) for field in fields})}"
    )
    if lock and db.features.has_select_for_update_of:
        sql += " FOR UPDATE OF e"
    converters = []
    for field in fields:
        column = field.get_col(Execution._meta.db_table)
        found = db.ops.get_db_converters(column) + column.get_db_converters(db)
        converters.append([(converter, column) for converter in found])
    return sql, [field.attname for field in fields], converters


def _executions(where, params, *, lock=False) -> list[Execution]:
    db = _db()
    sql, names, converters = _execution_query(db, where, lock)
    with db.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    executions = []
    for row in rows:
        values = list(row[: len(names)])
        for index, column_converters in enumerate(converters):
            for converter, column in column_converters:
                values[index] = converter(values[index], column, db)
        execution = Execution.from_db(db.alias, names, values)
        execution.machine_version = MachineVersion.from_db(
            db.alias, VERSION_COLUMNS, row[len(names): len(names) + len(VERSION_COLUMNS)])
        execution.has_pending = bool(row[-1])
        executions.append(execution)
    return executions


def read_execution(execution_id, *, lock=False) -> Execution:
    """The execution, its machine version (without the large text fields: the typed
    definition comes from the per-process cache) and `has_pending`: whether inbox items wait
    to be applied before anything new. With `lock`, the row is locked on PostgreSQL so inbox
    order matches acceptance order."""
    found = _executions("e.{id} = %s",
                        [Execution._meta.pk.get_db_prep_value(execution_id, _db())], lock=lock)
    if not found:
        raise Execution.DoesNotExist(f"no execution {execution_id}")
    return found[0]


# The execution whose business key a new start of the machine cannot take: one not finished
# or canceled, or one whose key is unique for all time. `IS NOT NULL` spelled out: it is the
# condition of the key's partial index, which is what lets SQLite's planner take it.
HOLDING_KEY = (
    "e.{business_key} IS NOT NULL AND e.{business_key} = %s AND e.{machine_id} = %s"
    " AND (e.{key_scope} = 'always' OR e.{status} NOT IN ("
    + ", ".join(f"'{status}'" for status in engine.TERMINAL_STATUSES) + ")) LIMIT 1"
)


def holding_key(machine_id, business_key) -> list[Execution]:
    return _executions(HOLDING_KEY, [business_key, machine_id])


NOT_STARTED = (
    # `version = 0` is written out so that the partial index `execution_not_started` serves
    # it; the batches of one pass go on in id order from the last id of the one before.
    "e.{version} = 0 AND e.{status} = %s AND e.{execution_mode} = %s{after}"
    " ORDER BY e.{id} LIMIT %s"
)


def executions_not_started(after, limit) -> list[Execution]:
    """Up to `limit` async-throughput executions not started yet, in id order: from the
    first, or after the id `after`."""
    params = ["running", "async-throughput"]
    if after is not None:
        params.append(Execution._meta.pk.get_db_prep_value(after, _db()))
    where = NOT_STARTED.replace("{after}", "" if after is None else " AND e.{id} > %s")
    return _executions(where, [*params, limit])


def compare_and_swap(execution: Execution, columns: dict, *, nothing_pending: bool) -> bool:
    """UPDATE the execution WHERE its version is still the one read (and, with
    `nothing_pending`, no inbox item waits); True when it did. Only the columns whose value
    is not the one read are set (the version proves the row is still as read): SQLite
    rewrites an index whenever a column of it is set, and status and state are in three."""
    db = _db()
    columns = {name: value for name, value in columns.items()
               if not _unchanged(getattr(execution, name), value)}
    sql, preparers = _update_statement(db, tuple(columns), nothing_pending)
    params = [prepare(value) for prepare, value in zip(preparers, columns.values(), strict=True)]
    params += [Execution._meta.pk.get_db_prep_value(execution.pk, db), execution.version]
    return _execute(db, sql, params) == 1


def _unchanged(old, new) -> bool:
    """Writing `new` over `old` would store the same: the same object (both null), or equal
    text (anything else is written: 1 == 1.0 == True would hide a change of type)."""
    return old is new or (type(old) is str and type(new) is str and old == new)


@functools.lru_cache(maxsize=64)
def _update_statement(db, names: tuple, nothing_pending: bool):
    """The compare-and-swap UPDATE of columns `names` and each value's preparer, built once
    per connection (building it on every advance cost as much as running it)."""
    meta, quote = Execution._meta, db.ops.quote_name
    fields = [meta.get_field(name) for name in names]
    sql = (f"UPDATE {quote(meta.db_table)} SET "
           f"{', '.join(f'{quote(field.column)} = %s' for field in fields)}, "
           f"{quote('version')} = {quote('version')} + 1 "
           f"WHERE {quote('id')} = %s AND {quote('version')} = %s")
    if nothing_pending:
        own_id = f"{quote(meta.db_table)}.{quote('id')}"
        sql += f" AND NOT {_has_pending(quote, own_id)}"
    return sql, [_preparer(field, db) for field in fields]


def compare_and_swap_many(changes):
    """For (execution, columns) pairs with the same columns: ONE UPDATE of every execution
    whose version is still the one read, built now and run by the function returned, which
    returns the ids of those it updated (so that a transaction opened in between does not
    wait for Python to build it).

    The new values come in as a VALUES list joined on id and version (UPDATE … FROM, which
    SQLite has since 3.33); PostgreSQL is told each value's type, which a list of
    parameters does not carry.
    """
    db = _db()
    meta, quote = Execution._meta, db.ops.quote_name
    names = list(changes[0][1])
    fields = [meta.pk, meta.get_field("version"), *(meta.get_field(name) for name in names)]
    if db.vendor == "postgresql":
        values = [f"CAST(v.column{index} AS {field.cast_db_type(db)})"
                  for index, field in enumerate(fields, 1)]
    else:
        values = [f"v.column{index}" for index in range(1, len(fields) + 1)]
    table = quote(meta.db_table)
    row = f"({', '.join(['%s'] * len(fields))})"
    sql = (f"UPDATE {table} SET "
           + ", ".join(f"{quote(field.column)} = {value}"
                       for field, value in zip(fields[2:], values[2:], strict=True))
           + f", {quote('version')} = {table}.{quote('version')} + 1"
           f" FROM (VALUES {', '.join([row] * len(changes))}) AS v"
           f" WHERE {table}.{quote('id')} = {values[0]}"
           f" AND {table}.{quote('version')} = {values[1]} RETURNING {table}.{quote('id')}")
    params = []
    for execution, columns in changes:
        params.append(meta.pk.get_db_prep_value(execution.pk, db))
        params.append(execution.version)
        params += [field.get_db_prep_save(columns[field.name], db) for field in fields[2:]]

    def run() -> set:
        with db.cursor() as cursor:
            cursor.execute(sql, params)
            return {uuid.UUID(str(found)) for found, in cursor.fetchall()}

    return run


def insert(model, rows):
    """INSERT rows given as {field attname: value}, without reading back their ids."""
    prepare_insert(model, rows)()


def prepare_insert(model, rows):
    """The INSERT of rows given as {field attname: value}, run by the function returned.

    Rows are plain dicts, not model instances: for the history rows of a batch of starts,
    building instances and letting the ORM prepare them cost a third of the batch. Plain
    SQL, built now so that a transaction opened in between (on SQLite, the write lock) does
    not wait for Python to build it: statements of up to INSERT_BATCH rows, or on PostgreSQL,
    for many rows (a long automatic run, a batch of starts), one statement binding whole
    columns as arrays (UNNEST, as bulk_create does): that measured 40% faster than
    thousands of single parameters.
    """
    db = _db()
    head, fields, preparers = _insert_head(model, db)
    if len(rows) > FEW_ROWS and db.vendor == "postgresql":
        arrays = ", ".join(f"%s::{field.db_type(db).split('(')[0]}[]" for field in fields)
        statements = [(f"{head} SELECT * FROM UNNEST({arrays})",
                       [[prepare(row[field.attname]) for row in rows]
                        for field, prepare in zip(fields, preparers, strict=True)])]
    else:
        placeholders = f"({', '.join(['%s'] * len(fields))})"
        statements = [(f"{head} VALUES " + ", ".join([placeholders] * len(batch)),
                       [prepare(row[field.attname]) for row in batch
                        for field, prepare in zip(fields, preparers, strict=True)])
                      for batch in (rows[start: start + INSERT_BATCH]
                                    for start in range(0, len(rows), INSERT_BATCH))]

    def run():
        for sql, params in statements:
            _execute(db, sql, params)

    return run


def insert_execution(execution, *, if_latest: bool) -> bool:
    """INSERT a new execution; with `if_latest`, only while its machine version is still the
    latest of its machine, which the same statement checks (so a start from a version
    cached in the process needs no read first). True when it was inserted."""
    db = _db()
    quote = db.ops.quote_name
    head, fields, _ = _insert_head(Execution, db)
    values = [field.get_db_prep_save(field.pre_save(execution, True), db) for field in fields]
    if if_latest:
        versions = quote(MachineVersion._meta.db_table)
        version = execution.machine_version
        sql = (f"{head} SELECT {', '.join(['%s'] * len(fields))} WHERE EXISTS ("
               f"SELECT 1 FROM {versions} v WHERE v.{quote('id')} = %s"
               f" AND v.{quote('content_hash')} = %s AND v.{quote('version')} = ("
               f"SELECT MAX(w.{quote('version')}) FROM {versions} w"
               f" WHERE w.{quote('machine_id')} = %s))")
        params = [*values, version.pk, version.content_hash, version.machine_id]
    else:
        sql, params = f"{head} VALUES ({', '.join(['%s'] * len(fields))})", values
    with db.cursor() as cursor:
        cursor.execute(sql, params)
        inserted = cursor.rowcount == 1
    if inserted:
        execution._state.adding, execution._state.db = False, db.alias
    return inserted


@functools.lru_cache(maxsize=16)
def _insert_head(model, db):
    """`INSERT INTO table (columns)`, its fields, and for each field the function that
    turns a value into what the database takes; built once per connection."""
    quote = db.ops.quote_name
    fields = [field for field in model._meta.concrete_fields
              if not (field.primary_key and field.db_returning)]
    head = (f"INSERT INTO {quote(model._meta.db_table)}"
            f" ({', '.join(quote(field.column) for field in fields)})")
    return head, fields, [_preparer(field, db) for field in fields]


# Field types whose values go to the database as they are (None included)
PLAIN_TYPES = {"CharField", "TextField", "IntegerField", "BigIntegerField", "FloatField",
               "PositiveIntegerField", "BooleanField", "BigAutoField", "AutoField"}


def _preparer(field, db):
    target = field.target_field if field.is_relation else field
    if target.get_internal_type() in PLAIN_TYPES:
        return lambda value: value
    if field.is_relation:
        return lambda value: target.get_db_prep_value(value, db)
    if isinstance(field, JSONField):  # plain data: what get_db_prep_save does, minus 4 calls
        adapt, encoder = db.ops.adapt_json_value, field.encoder
        return lambda value: None if value is None else adapt(value, encoder)
    if isinstance(field, DateTimeField):
        if db.vendor == "sqlite" and db.timezone is not None:
            return functools.partial(_sqlite_time, db.timezone)
        adapt_time = db.ops.adapt_datetimefield_value
        return lambda value: None if value is None else adapt_time(value)
    return lambda value: field.get_db_prep_save(value, db)


def _sqlite_time(zone, value):
    """What SQLite's adapt_datetimefield_value makes of a datetime (the naive time in the
    connection's zone, as text), without the settings and time-zone lookups it makes on
    each of the three a step writes."""
    if value is None:
        return None
    if value.utcoffset() is not None:
        value = value.astimezone(zone).replace(tzinfo=None)
    return str(value)


# The store -------------------------------------------------------------------------------
class RecentExecutions:
    """Executions this process persisted last, by id (bounded; copies in and out)."""

    def __init__(self, size: int = 4096):
        self.items: LRU[Execution] = LRU(size)

    def get(self, execution_id: Any) -> Execution | None:
        found = self.items.find(str(execution_id))
        return _copied(found) if found is not None else None

    def remember(self, execution: Execution) -> None:
        self.items.put(str(execution.pk), _copied(execution))


    def forget(self, execution_id: Any) -> None:
        self.items.forget(str(execution_id))


def _copied(execution: Execution) -> Execution:
    """What copy.copy makes of an execution (its fields, its own ModelState and cache of
    related objects) without the pickling protocol copy.copy goes through: half the cost,
    twice on every interactive action."""
    clone = Execution.__new__(Execution)
    clone.__dict__.update(execution.__dict__)
    clone._state = copy.copy(execution._state)
    clone._state.fields_cache = dict(execution._state.fields_cache)
    return clone


class SqlStore:
    """The runtime's store in the database (see store.Store)."""

    shared_between_threads = True  # what one thread commits, another reads

    def __init__(self) -> None:
        # The latest version of each machine this process started, checked by each start's
        # INSERT (insert_execution): no read before a start.
        self.latest_versions: dict[str, MachineVersion] = {}
        self.recent = RecentExecutions()

    # Transactions
    def atomic(self) -> Any:
        return transaction.atomic()

    def on_commit(self, callback: Callable[[], object]) -> None:
        transaction.on_commit(callback)

    def in_transaction(self) -> bool:
        return connection.in_atomic_block

    # Machines and executions
    def machine_version(self, machine_id: str, version: int | None = None) -> MachineVersion:
        return machine_version(machine_id, version)

    def insert_execution(self, execution: Execution, *, if_latest: bool) -> bool:
        try:
            return insert_execution(execution, if_latest=if_latest)
        except IntegrityError as exc:
            if execution.idempotency_key is None and execution.business_key is None:
                raise
            raise Duplicate() from exc

    def started_with_key(self, machine_id: str, idempotency_key: str) -> Execution:
        return Execution.objects.get(machine_id=machine_id, idempotency_key=idempotency_key)

    def holding_key(self, machine_id: str, business_key: str) -> Execution | None:
        found = holding_key(machine_id, business_key)
        return found[0] if found else None

    def read_execution(self, execution_id: Any, *, lock: bool = False) -> Execution:
        return read_execution(execution_id, lock=lock)

    def refresh(self, execution: Execution) -> None:
        execution.refresh_from_db()

    def execution_mode(self, execution_id: Any) -> str:
        return Execution.objects.values_list("execution_mode", flat=True).get(pk=execution_id)

    def executions_not_started(self, after: Any, limit: int) -> list[Execution]:
        return executions_not_started(after, limit)

    def children(self, execution_id: Any, token: str) -> list[Execution]:
        return list(Execution.objects.filter(parent_id=execution_id, parent_token=token))

    def parent_awaits(self, child: Execution) -> bool:
        payload = Work.objects.filter(
            execution_id=child.parent_id, token=child.parent_token, kind=Work.CHILD,
        ).values_list("payload", flat=True).first()
        return not (payload or {}).get("async")

    # The process cache
    def remembered(self, execution_id: Any) -> Execution | None:
        return self.recent.get(execution_id)

    def remember(self, execution: Execution) -> None:
        self.recent.remember(execution)

    def forget(self, execution_id: Any) -> None:
        self.recent.forget(execution_id)

    # Inbox
    def pending_items(self, execution: Execution, limit: int) -> list[InboxItem]:
        return list(InboxItem.objects.filter(execution_id=execution.pk, processed_at__isnull=True)
                    .order_by("id")[:limit])

    def earlier_item(self, execution: Execution, idempotency_key: str) -> InboxItem | None:
        return execution.inbox.filter(idempotency_key=idempotency_key).first()

    def add_item(self, item: InboxItem) -> None:
        item.save()

    def refresh_item(self, item: InboxItem) -> None:
        item.refresh_from_db()

    def all_processed(self, item_ids: list[int]) -> bool:
        return not InboxItem.objects.filter(pk__in=item_ids, processed_at__isnull=True).exists()

    def has_pending(self, execution_id: Any) -> bool:
        return InboxItem.objects.filter(execution_id=execution_id,
                                        processed_at__isnull=True).exists()

    # Saving
    def save(self, execution: Execution, step: Step, *, only_if_inbox_empty: bool = False
             ) -> list[Work]:
        """Persist a step (inside the caller's transaction); Conflict when the snapshot it
        was computed from is no longer current, before anything is written."""
        assert step.snapshot is not None
        step = checked_step(execution, step)
        assert step.snapshot is not None
        now = timezone.now()
        columns = snapshot_columns(step.snapshot, now)
        attributes = _changed_attributes(execution, step)
        if attributes is not None:
            columns["attributes"] = attributes
        if step.business_key is not None:
            step, columns = _swap_taking_key(execution, step, columns, only_if_inbox_empty)
            attributes = columns.get("attributes")
        elif not compare_and_swap(execution, columns, nothing_pending=only_if_inbox_empty):
            raise Conflict()
        swapped(execution, columns)
        if attributes is not None:
            _write_attributes([execution])
        if step.history:
            insert(HistoryEntry, [history_row(execution, entry) for entry in step.history])
        _save_processed(step.processed, now)
        return _write_rows(execution, step.effects) if step.effects else []

    def save_starts(self, steps: list[tuple[Execution, Step]]
                    ) -> list[tuple[Execution, Step, list[Work]]]:
        """Persist the starts of several executions in ONE transaction: ONE compare-and-swap
        UPDATE for all of them and ONE INSERT of all their history rows, both built before
        it opens (on SQLite it holds the write lock). One whose snapshot is no longer
        current (another process started it) is left out: nothing of it is written."""
        now = timezone.now()
        steps = [(execution, checked_step(execution, step)) for execution, step in steps]
        if any(step.business_key is not None for _, step in steps):
            return self._save_each(steps)
        changes = [(execution, snapshot_columns(step.snapshot, now))
                   for execution, step in steps if step.snapshot is not None]
        if any(step.attributes is not None for _, step in steps):  # one set of columns
            for (execution, step), (_, columns) in zip(steps, changes, strict=True):
                columns["attributes"] = (step.attributes if step.attributes is not None
                                         else execution.attributes)
        rows = {execution.pk: [history_row(execution, entry) for entry in step.history]
                for execution, step in steps}
        swap = compare_and_swap_many(changes)
        insert_all = prepare_insert(HistoryEntry, [row for own in rows.values() for row in own])
        with transaction.atomic():
            done = swap()
            if len(done) == len(steps):
                insert_all()
            else:
                insert(HistoryEntry, [row for pk in done for row in rows[pk]])
            started, processed = [], []
            for (execution, step), (_, columns) in zip(steps, changes, strict=True):
                if execution.pk not in done:
                    continue
                execution = copy.copy(execution)  # the transaction may yet roll back
                swapped(execution, columns)
                processed += step.processed
                work = _write_rows(execution, step.effects) if step.effects else []
                started.append((execution, step, work))
            _save_processed(processed, now)
            _write_attributes([execution for execution, step, _ in started
                               if step.attributes])
        return started

    def _save_each(self, steps: list[tuple[Execution, Step]]
                   ) -> list[tuple[Execution, Step, list[Work]]]:
        """`save_starts` one by one in ONE transaction, when some start gives its execution
        a business key from its context: the unique index may refuse that one alone."""
        started = []
        with transaction.atomic():
            for execution, step in steps:
                execution = copy.copy(execution)  # the transaction may yet roll back
                try:
                    work = self.save(execution, step)
                except Conflict:
                    continue
                started.append((execution, step, work))
        return started

    # Timers
    def claim_due_timers(self, now: float, limit: int) -> list[tuple[Any, str]]:
        """The due timers (up to `limit`), deleted and stored as inbox items keyed
        `timer:<token>` in one transaction; (execution id, mode) of each. The rows are read
        under the write lock (SQLite's IMMEDIATE transactions, or FOR UPDATE SKIP LOCKED on
        PostgreSQL, so several timer loops share the work)."""
        if not Timer.objects.filter(due_at__lte=now).exists():
            return []  # a plain read: no write lock taken while nothing is due
        with transaction.atomic():
            due = Timer.objects.filter(due_at__lte=now).order_by("due_at")
            if connection.features.has_select_for_update_skip_locked:
                due = due.select_for_update(skip_locked=True, of=("self",))
            claimed = list(due.values_list("pk", "execution_id", "token",
                                           "execution__execution_mode")[:limit])
            if not claimed:
                return []
            Timer.objects.filter(pk__in=[pk for pk, *_ in claimed]).delete()
            InboxItem.objects.bulk_create([
                InboxItem(execution_id=execution_id, kind=InboxItem.TIMER,
                          payload={"token": token}, idempotency_key=f"timer:{token}",
                          actor="timer")
                for _, execution_id, token, _ in claimed
            ], ignore_conflicts=True)
        return [(execution_id, mode) for _, execution_id, _, mode in claimed]

    def next_timer_due(self) -> float | None:
        return Timer.objects.order_by("due_at").values_list("due_at", flat=True).first()

    # Work
    def claim_work(self, work_id: int) -> Work | None:
        claimed = Work.objects.filter(pk=work_id, status=Work.PENDING).update(
            status=Work.RUNNING, claimed_at=timezone.now(), attempts=F("attempts") + 1
        )
        if not claimed:
            return None
        work = Work.objects.select_related("execution__machine_version").get(pk=work_id)
        if not effects.still_wanted(work, work.execution):
            Work.objects.filter(pk=work_id, status=Work.RUNNING).update(status=Work.CANCELED)
            return None  # given up on: never performed (again)
        return work

    def finish_work(self, work_id: int) -> None:
        Work.objects.filter(pk=work_id, status=Work.RUNNING).update(status=Work.DONE)

    def deliver(self, work: Work, execution_id: Any, payload: dict, key: str,
                actor: str) -> None:
        """Store a work result as an inbox item (once per key) and mark the work done."""
        payload = checked_result(payload)
        with transaction.atomic():
            with contextlib.suppress(IntegrityError), transaction.atomic():
                InboxItem.objects.create(execution_id=execution_id, kind=InboxItem.RESULT,
                                         payload=payload, idempotency_key=key, actor=actor)
            Work.objects.filter(pk=work.pk, status=Work.RUNNING).update(status=Work.DONE)

    # Recovery
    def stale(self, stale_after: float) -> Stale:
        cutoff = timezone.now() - timedelta(seconds=stale_after)
        stale_inbox = set(
            InboxItem.objects.filter(processed_at__isnull=True, created_at__lt=cutoff)
            .values_list("execution_id", flat=True).distinct()
        )
        stale_runs = set(
            Execution.objects.filter(status=engine.RUNNING, updated_at__lt=cutoff)
            .exclude(version=0, execution_mode="async-throughput")
            .values_list("pk", flat=True)
        )
        waiting = Execution.objects.filter(version=0, execution_mode="async-throughput",
                                           status=engine.RUNNING,
                                           created_at__lt=cutoff).exists()
        # Work whose worker outlived its lease (taken for dead), and work no worker took:
        # performed (again) only while its execution still waits for it, else canceled.
        now = timezone.now()
        expired: list[int] = []
        given_up: list[int] = []
        pending: list[tuple[int, str]] = []
        for work in (Work.objects.filter(status=Work.RUNNING, claimed_at__lt=cutoff)
                     .select_related("execution")):
            if work.claimed_at + timedelta(seconds=work.lease_seconds) < now:
                wanted = effects.still_wanted(work, work.execution)
                (expired if wanted else given_up).append(work.pk)
                if wanted:
                    pending.append((work.pk, work.kind))
        for work in (Work.objects.filter(status=Work.PENDING, created_at__lt=cutoff)
                     .select_related("execution")):
            if effects.still_wanted(work, work.execution):
                pending.append((work.pk, work.kind))
            else:
                given_up.append(work.pk)
        Work.objects.filter(pk__in=expired, status=Work.RUNNING).update(status=Work.PENDING)
        Work.objects.filter(pk__in=given_up, status__in=(Work.RUNNING, Work.PENDING)).update(
            status=Work.CANCELED)
        return Stale(stale_inbox | stale_runs, waiting, pending)


def _swap_taking_key(execution: Execution, step: Step, columns: dict,
                     nothing_pending: bool) -> tuple[Step, dict]:
    """The compare-and-swap of a step that gives the execution its business key (once in
    its life), in a savepoint: when another execution holds the key, the unique index
    refuses the UPDATE (on PostgreSQL that would abort the whole transaction), and the
    step that fails the execution with `key_in_use` is written instead. The step written
    and its columns; Conflict, with nothing written, when the execution is not current."""
    assert step.business_key is not None
    keyed = {**columns, "business_key": step.business_key}
    try:
        with transaction.atomic():
            if not compare_and_swap(execution, keyed, nothing_pending=nothing_pending):
                raise Conflict()
        return step, keyed
    except IntegrityError:
        pass
    holder = holding_key(execution.machine_id, step.business_key)
    step = key_in_use_step(execution, step, holder[0] if holder else None)
    assert step.snapshot is not None
    columns = snapshot_columns(step.snapshot, columns["updated_at"])
    if not compare_and_swap(execution, columns, nothing_pending=nothing_pending):
        raise Conflict()
    return step, columns


def _changed_attributes(execution: Execution, step: Step) -> dict | None:
    """The attributes a step computed when they differ from the stored ones, else None."""
    if step.attributes is None or step.attributes == execution.attributes:
        return None
    return step.attributes


def _write_attributes(executions: list[Execution]) -> None:
    """The attribute rows of these executions as their `attributes` now say (rewritten:
    a step that changes one changes few), each value in the column of its declared type."""
    if not executions:
        return
    ExecutionAttribute.objects.filter(execution_id__in=[e.pk for e in executions]).delete()
    rows = []
    for execution in executions:
        types = {a.name: a.type for a in execution.machine_version.parsed().attributes}
        for name, value in execution.attributes.items():
            if value is None or name not in types:
                continue
            row = {"execution_id": execution.pk, "machine_id": execution.machine_id,
                   "name": name, "text": None, "number": None, "boolean": None, "moment": None}
            column = ExecutionAttribute.COLUMNS[types[name]]
            row[column] = (datetime.fromtimestamp(value, tz=UTC) if column == "moment"
                           else value)
            rows.append(row)
    if rows:
        insert(ExecutionAttribute, rows)


def _save_processed(items: list[InboxItem], now) -> None:
    mark_processed(items, now)
    outcomes: dict[tuple[str, str], list[int]] = {}
    for item in items:
        if item.pk is not None:
            outcomes.setdefault((item.outcome, item.reason), []).append(item.pk)
    for (outcome, reason), pks in outcomes.items():
        InboxItem.objects.filter(pk__in=pks).update(processed_at=now, outcome=outcome,
                                                    reason=reason)
    # Applied in the transaction that accepted them: the history is their record, but an
    # idempotency key must be kept to recognise a repeat.
    kept = [item for item in items if item.pk is None and item.idempotency_key is not None]
    if kept:
        InboxItem.objects.bulk_create(kept)


def _write_rows(execution: Execution, effects_of_step: list) -> list[Work]:
    """Store timers and outgoing work in the advance's transaction; return the new work."""
    rows = effects.rows(execution, effects_of_step)
    if rows.cancel_work:  # not yet started, or in flight: never performed (again)
        Work.objects.filter(token__in=rows.cancel_work,
                            status__in=(Work.PENDING, Work.RUNNING)).update(status=Work.CANCELED)
    if rows.cancel_timers:
        Timer.objects.filter(token__in=rows.cancel_timers).delete()
    if rows.timers:
        Timer.objects.bulk_create(rows.timers)
    return Work.objects.bulk_create(rows.work) if rows.work else []
