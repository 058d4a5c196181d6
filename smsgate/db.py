"""Running several SQL statements as one unit of work, the same SQL on PostgreSQL and SQLite.

The send path writes a handful of small statements per SMS (a status change, its attempt, its
counters). Each is written once, in SQL both databases speak; what differs is only how they travel:

- PostgreSQL: every statement in a single round trip, as one query of several statements, which
  the server runs as one transaction (or inside the caller's). psycopg binds parameters on the
  client (Django's default): its cursor's `mogrify` (public API) writes each statement with its
  values, exactly as `execute` would send it. Counter rows that many deliveries update are then
  locked only while the server runs the batch, never across a client round trip or a thread
  waiting for the interpreter lock. With server-side binding (OPTIONS "server_side_binding") a
  query holds one statement, so psycopg's pipeline mode sends them instead, also in one round trip
  (measured: ~65 us of client CPU per statement against ~15 us for a composed one, bench/README.md).
- SQLite (the embedded development database): one statement after the other in a transaction.

`run_batch` is the only place that knows the difference.

A batch of deliveries writes one statement per step for all of them, not one per delivery: each
statement costs the client more (the driver, the cursor) than its row costs the server.
`update_rows` builds such an UPDATE, each row with its own values. One limit shapes them: psycopg
keeps how it parsed a statement's placeholders only for statements of up to 50 parameters (and
4,096 characters); a longer one is parsed again at every call (~3 us a placeholder), which costs
more than a second statement in the same round trip. So a batch's rows go `in_chunks` of at most
CACHED_PARAMS.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import islice

from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.models import AutoField, DateTimeField

INSERT_ROWS = 500  # rows per INSERT statement at most (SQLite allows fewer parameters per statement)


def _rows(cursor) -> list:
    return cursor.fetchall() if cursor.description is not None else []


def run_batch(statements: list[tuple[str, list]]) -> list[list]:
    """Run the statements in order, all or nothing; return each one's rows ([] when it returns none)."""
    if not statements:
        return []
    if connection.vendor == "postgresql":
        if connection.settings_dict["OPTIONS"].get("server_side_binding"):
            return _run_pipelined(statements)
        return _run_composed(statements)
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        results = []
        for sql, params in statements:
            cursor.execute(sql, params)
            results.append(_rows(cursor))
        return results


def _run_composed(statements: list[tuple[str, list]]) -> list[list]:
    with connection.cursor() as cursor:
        with connection.wrap_database_errors:  # mogrify raises psycopg's own errors
            query = ";\n".join(cursor.cursor.mogrify(sql, params) for sql, params in statements)
        cursor.execute(query)  # no parameters: psycopg sends the text as it is
        results = [_rows(cursor)]
        while cursor.nextset():
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


CACHED_PARAMS = 50  # psycopg's MAX_CACHED_STATEMENT_PARAMS


def in_chunks(items: list, *, per_item: int, shared: int = 0) -> list[list]:
    """`items` cut into lists small enough that a statement with `per_item` parameters for each and
    `shared` more stays within CACHED_PARAMS (at least one item per list), in their order."""
    size, it = max(1, (CACHED_PARAMS - shared) // per_item), iter(items)
    return list(iter(lambda: list(islice(it, size)), []))


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
                also_params=()) -> list[tuple[str, list]]:
    """UPDATEs giving each row its own values, as few as CACHED_PARAMS allows: `rows` are (key value,
    value of each of `columns`), prepared for the database. Each column is set by `CASE key WHEN ...
    THEN ... ELSE column END`, so the column itself types the values (NULLs included) and the same
    text runs on PostgreSQL and SQLite; `also` adds assignments shared by every row (with
    `also_params`). Their texts are built once per shape."""
    statements = []
    for chunk in in_chunks(rows, per_item=2 * len(columns) + 1, shared=len(also_params)):
        params = [value for index in range(1, len(columns) + 1) for row in chunk for value in (row[0], row[index])]
        statements.append((_update_rows_sql(table, key, tuple(columns), len(chunk), also),
                           [*params, *also_params, *(row[0] for row in chunk)]))
    return statements


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
    # Rows per statement: no more than psycopg's statement cache takes (CACHED_PARAMS; a statement with
    # more parameters is parsed again at every call), the statements composed into one query by run_batch.
    step = max(1, min(rows, CACHED_PARAMS // len(columns), connection.ops.bulk_batch_size(list(columns), objs)))
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
