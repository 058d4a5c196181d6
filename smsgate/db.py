"""Running several SQL statements as one unit of work, the same SQL on PostgreSQL and SQLite.

The send path writes a handful of small statements per SMS (a status change, its attempt, its
counters). Each is written once, in SQL both databases speak; what differs is only how they travel:

- PostgreSQL: psycopg's pipeline mode (its public API) sends every statement, and the transaction's
  BEGIN and COMMIT when the caller is not already in one, in a single round trip. Counter rows that
  many deliveries update are then locked only while the server runs the batch, never across a
  client round trip or a thread waiting for the interpreter lock.
- SQLite (the embedded development database): one statement after the other in a transaction.

`run_batch` is the only place that knows the difference.

A batch of deliveries writes one statement per step for all of them, not one per delivery: each
statement costs the client more (the driver, the cursor, the pipeline) than its row costs the
server. `update_rows` builds such an UPDATE, each row with its own values.
"""

from __future__ import annotations

from functools import lru_cache

from django.db import connection, transaction


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


@lru_cache(maxsize=256)
def _update_rows_sql(table: str, key: str, columns: tuple[str, ...], rows: int, also: str) -> str:
    quote = connection.ops.quote_name
    whens = " ".join(["WHEN %s THEN %s"] * rows)
    assignments = [f"{quote(column)} = CASE {quote(key)} {whens} ELSE {quote(column)} END" for column in columns]
    if also:
        assignments.append(also)
    keys = f"IN ({', '.join(['%s'] * rows)})" if rows > 1 else "= %s"
    return f"UPDATE {quote(table)} SET {', '.join(assignments)} WHERE {quote(key)} {keys}"


def update_rows(table: str, key: str, columns: tuple[str, ...], rows: list[tuple], *, also: str = "",
                also_params=()) -> tuple[str, list]:
    """One UPDATE giving each row its own values: `rows` are (key value, value of each of `columns`),
    prepared for the database. Each column is set by `CASE key WHEN ... THEN ... ELSE column END`,
    so the column itself types the values (NULLs included) and the same text runs on PostgreSQL and
    SQLite; `also` adds assignments shared by every row (with `also_params`). Its text is built once
    per shape."""
    params = [value for index in range(1, len(columns) + 1) for row in rows for value in (row[0], row[index])]
    return (_update_rows_sql(table, key, tuple(columns), len(rows), also),
            [*params, *also_params, *(row[0] for row in rows)])
