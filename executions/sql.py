"""The few statements every start and advance runs, in plain SQL.

Building these through the ORM cost more than running them (a 3-statement advance spent
most of its 2.3 ms compiling queries), so they are written once here, from the models'
own field definitions and converters. Everything else uses the ORM.
"""
import functools

from django.db import DEFAULT_DB_ALIAS, connections

from executions.models import Execution, InboxItem
from machines.models import MachineVersion

VERSION_COLUMNS = ("id", "machine_id", "version", "content_hash")
FEW_ROWS = 50  # more rows than this go through bulk_create on PostgreSQL
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
    # it; ids are random, so workers starting from different ids rarely pick the same rows.
    "e.{version} = 0 AND e.{id} >= %s AND e.{status} = %s AND e.{execution_mode} = %s"
    " ORDER BY e.{id} LIMIT %s"
)


def executions_not_started(execution_id, limit) -> list[Execution]:
    """Up to `limit` async-throughput executions not started yet, from `execution_id` on in
    id order (it comes first when it is one of them)."""
    pk = Execution._meta.pk.get_db_prep_value(execution_id, _db())
    return _executions(NOT_STARTED, [pk, "running", "async-throughput", limit])


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


def insert(model, rows):
    """INSERT model instances without reading back their ids (auto_now fields are set).

    Plain SQL, in statements of up to INSERT_BATCH rows, except many rows on PostgreSQL
    (a long automatic run): there bulk_create binds whole columns as arrays (UNNEST), which
    measured 40% faster than thousands of single parameters.
    """
    db = _db()
    if len(rows) > FEW_ROWS and db.vendor == "postgresql":
        model.objects.bulk_create(rows, batch_size=INSERT_BATCH)
        return
    meta, quote = model._meta, db.ops.quote_name
    fields = [field for field in meta.concrete_fields
              if not (field.primary_key and field.db_returning)]
    placeholders = f"({', '.join(['%s'] * len(fields))})"
    head = (f"INSERT INTO {quote(meta.db_table)}"
            f" ({', '.join(quote(field.column) for field in fields)}) VALUES ")
    with db.cursor() as cursor:
        for start in range(0, len(rows), INSERT_BATCH):
            batch = rows[start: start + INSERT_BATCH]
            params = [field.get_db_prep_save(field.pre_save(row, True), db)
                      for row in batch for field in fields]
            cursor.execute(head + ", ".join([placeholders] * len(batch)), params)
    for row in rows:
        row._state.adding, row._state.db = False, db.alias
