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
