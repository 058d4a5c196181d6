"""Running several SQL statements as one unit of work, the same SQL on PostgreSQL and SQLite.

The send path writes a handful of small statements per SMS (a status change, its attempt, its
counters). Each is written once, in SQL both databases speak; what differs is only how they travel:

- PostgreSQL: psycopg's pipeline mode (its public API) sends every statement, and the transaction's
  BEGIN and COMMIT when the caller is not already in one, in a single round trip. Counter rows that
  many deliveries update are then locked only while the server runs the batch, never across a
  client round trip or a thread waiting for the interpreter lock.
- SQLite (the embedded development database): one statement after the other in a transaction.

`run_batch` is the only place that knows the difference.
"""

from __future__ import annotations

from functools import lru_cache

from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.models import AutoField, DateTimeField

INSERT_ROWS = 500  # rows per INSERT statement (SQLite allows fewer parameters per statement)


def _rows(cursor) -> list:
    return cursor.fetchall() if cursor.description is not None else []


def run_batch(statements: list[tuple[str, list]]) -> list[list]:
    """Run the statements in order, all or nothing; return each one's rows ([] when it returns none)."""
    if not statements:
        return []
    if connection.vendor == "postgresql":
        return _run_pipelined(statements)
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        results = []
        for sql, params in statements:
            cursor.execute(sql, params)
            results.append(_rows(cursor))
        return results


def _run_pipelined(statements: list[tuple[str, list]]) -> list[list]:
    connection.ensure_connection()
    own_transaction = connection.get_autocommit() and not connection.in_atomic_block
    raw = connection.connection
    cursors = []
    try:
        # Errors surface at sync, outside Django's cursor: translate them as its cursor would.
        with connection.wrap_database_errors, raw.pipeline() as pipeline:
            if own_transaction:
                with connection.cursor() as cursor:
                    cursor.execute("BEGIN")
            for sql, params in statements:
                cursor = connection.cursor()
                cursor.execute(sql, params)
                cursors.append(cursor)
            if own_transaction:
                with connection.cursor() as cursor:
                    cursor.execute("COMMIT")
            pipeline.sync()
            results = [_rows(cursor) for cursor in cursors]
    except Exception:
        if own_transaction and not raw.closed:
            raw.rollback()  # the failed BEGIN ... COMMIT left the session in an aborted transaction
        raise
    finally:
        for cursor in cursors:
            cursor.close()
    return results


# --- INSERTs of new rows, as statements for run_batch ------------------------------------------------
def insert_statements(model, objs: list, *, rows: int = INSERT_ROWS) -> list[tuple[str, list]]:
    """INSERT statements for new instances of `model`, for `run_batch` (so rows of several tables and
    their counters travel in one round trip). Values are prepared as the ORM's INSERT prepares them;
    `auto_now`/`auto_now_add` times already set on an instance are kept; an auto-increment key left
    empty and a field left to its database default (an expression) are left to the database."""
    if not objs:
        return []
    columns = _insert_columns(model, objs)
    names = tuple(field.column for field in columns)
    step = max(1, min(rows, connection.ops.bulk_batch_size(list(columns), objs)))
    statements = []
    for start in range(0, len(objs), step):
        indexes = range(start, min(start + step, len(objs)))
        statements.append((_insert_sql(model._meta.db_table, names, len(indexes)),
                           [values[index] for index in indexes for values in columns.values()]))
    return statements


def _is_time_stamp(field) -> bool:
    return isinstance(field, DateTimeField) and (field.auto_now or field.auto_now_add)


def _insert_columns(model, objs: list) -> dict:
    db = connections[DEFAULT_DB_ALIAS]  # the thread's own wrapper, not the proxy, once per value
    columns = {}
    for field in model._meta.local_concrete_fields:
        if isinstance(field, AutoField) and all(getattr(obj, field.attname) is None for obj in objs):
            continue
        values = [getattr(obj, field.attname)
                  if _is_time_stamp(field) and getattr(obj, field.attname) is not None
                  else field.pre_save(obj, add=True) for obj in objs]
        if not any(hasattr(value, "resolve_expression") for value in values):
            columns[field] = [field.get_db_prep_save(value, db) for value in values]
    return columns


@lru_cache(maxsize=64)
def _insert_sql(table: str, columns: tuple[str, ...], rows: int) -> str:
    quote = connection.ops.quote_name
    row = "(" + ", ".join(["%s"] * len(columns)) + ")"
    return f"INSERT INTO {quote(table)} ({', '.join(quote(c) for c in columns)}) VALUES {', '.join([row] * rows)}"
