"""The few statements every start and advance runs, in plain SQL.

Building these through the ORM cost more than running them (a 3-statement advance spent
most of its 2.3 ms compiling queries), so they are written once here, from the models'
own field definitions and converters. Everything else uses the ORM.
"""
import functools
import uuid

from django.db import DEFAULT_DB_ALIAS, connections

from executions.models import Execution, InboxItem, StarterMarker
from machines.models import MachineVersion

VERSION_COLUMNS = ("id", "machine_id", "version", "content_hash")
FEW_ROWS = 50  # more rows than this are bound as column arrays on PostgreSQL (UNNEST)
INSERT_BATCH = 500  # rows per INSERT statement (SQLite allows 32,766 parameters)


def _db():
    """This thread's connection object (the `connection` proxy costs a lookup per use)."""
    return connections[DEFAULT_DB_ALIAS]


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
    `nothing_pending`, no inbox item waits); True when it did."""
    db = _db()
    meta, quote = Execution._meta, db.ops.quote_name
    assignments, params = [], []
    for name, value in columns.items():
        field = meta.get_field(name)
        assignments.append(f"{quote(field.column)} = %s")
        params.append(field.get_db_prep_save(value, db))
    execution_id = meta.pk.get_db_prep_value(execution.pk, db)
    sql = (f"UPDATE {quote(meta.db_table)} SET {', '.join(assignments)}, "
           f"{quote('version')} = {quote('version')} + 1 "
           f"WHERE {quote('id')} = %s AND {quote('version')} = %s")
    params += [execution_id, execution.version]
    if nothing_pending:
        own_id = f"{quote(meta.db_table)}.{quote('id')}"
        sql += f" AND NOT {_has_pending(quote, own_id)}"
    with db.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount == 1


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
        with db.cursor() as cursor:
            for sql, params in statements:
                cursor.execute(sql, params)

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
    return lambda value: field.get_db_prep_save(value, db)


def starter_pending_since(queue) -> float | None:
    """When the pending starter task of this queue was enqueued (None: none is pending)."""
    db = _db()
    quote = db.ops.quote_name
    with db.cursor() as cursor:
        cursor.execute(f"SELECT {quote('pending_since')} FROM"
                       f" {quote(StarterMarker._meta.db_table)} WHERE {quote('queue')} = %s",
                       [queue])
        row = cursor.fetchone()
    return row[0] if row else None


def mark_starter_pending(queue, now, lost_before) -> bool:
    """Mark a starter task pending unless one is (one marked before `lost_before` counts as
    lost); True when this call marked it. One statement, so of callers racing one wins."""
    db = _db()
    quote = db.ops.quote_name
    table, since = quote(StarterMarker._meta.db_table), quote("pending_since")
    with db.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({quote('queue')}, {since}) VALUES (%s, %s)"
            f" ON CONFLICT ({quote('queue')}) DO UPDATE SET {since} = excluded.{since}"
            f" WHERE {table}.{since} IS NULL OR {table}.{since} < %s",
            [queue, now, lost_before])
        return cursor.rowcount == 1


def clear_starter_pending(queue):
    """No starter task is pending any more: the one clearing it looks for executions to
    start once more after this."""
    StarterMarker.objects.filter(queue=queue).update(pending_since=None)
