"""smsgate.db.run_batch: the same statements, all or nothing, in one round trip on PostgreSQL."""

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from smsgate import db
from smsgate.db import CACHED_PARAMS, in_chunks, run_batch, update_rows

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def table():
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE run_batch_probe (id integer PRIMARY KEY, v text)")
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE run_batch_probe")


def values() -> list:
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, v FROM run_batch_probe ORDER BY id")
        return cursor.fetchall()


def test_statements_run_in_order_and_return_their_rows(table):
    results = run_batch([
        ("INSERT INTO run_batch_probe (id, v) VALUES (%s, %s)", [1, "a"]),
        ("INSERT INTO run_batch_probe (id, v) VALUES (%s, %s) RETURNING id", [2, "b"]),
        ("UPDATE run_batch_probe SET v = %s WHERE id = %s RETURNING id, v", ["c", 1]),
    ])
    assert results == [[], [(2,)], [(1, "c")]]
    assert values() == [(1, "c"), (2, "b")]


def test_all_or_nothing_and_the_connection_stays_usable(table):
    with pytest.raises(IntegrityError):
        run_batch([("INSERT INTO run_batch_probe (id, v) VALUES (%s, %s)", [1, "a"]),
                   ("INSERT INTO run_batch_probe (id, v) VALUES (%s, %s)", [1, "duplicate"])])
    assert values() == []
    run_batch([("INSERT INTO run_batch_probe (id, v) VALUES (%s, %s)", [3, "after"])])
    assert values() == [(3, "after")]


def test_inside_a_transaction_it_joins_it(table):
    with pytest.raises(RuntimeError), transaction.atomic():
        run_batch([("INSERT INTO run_batch_probe (id, v) VALUES (%s, %s)", [1, "a"])])
        assert values() == [(1, "a")]
        raise RuntimeError("roll back")
    assert values() == []


def test_a_transaction_of_its_own_sent_with_the_statements(table):
    with CaptureQueriesContext(connection) as captured:
        run_batch([("INSERT INTO run_batch_probe (id, v) VALUES (%s, %s)", [n, "x"]) for n in range(20)])
    assert len(values()) == 20
    sent = [q["sql"] for q in captured.captured_queries]
    if connection.vendor == "postgresql":  # one query of 20 statements: one implicit transaction
        assert len(sent) == 1 and sent[0].count("INSERT INTO run_batch_probe") == 20
    else:  # SQLite: the same statements inside Django's transaction
        assert len([sql for sql in sent if sql.startswith("INSERT")]) == 20


def test_values_travel_exactly_whatever_they_hold(table):
    """Statements are composed with their values (psycopg's client-side binding): quotes, percent
    signs, semicolons, placeholders and non-ASCII text in a value stay data."""
    hostile = ["it's; DROP TABLE run_batch_probe; --", "100% %s %(x)s", "Привет 😀", "", "\\'\""]
    run_batch([("INSERT INTO run_batch_probe (id, v) VALUES (%s, %s)", [n, text]) for n, text in enumerate(hostile)])
    assert values() == list(enumerate(hostile))


@pytest.mark.parametrize("way", ["_run_composed", "_run_pipelined"])
def test_both_ways_on_postgresql_are_all_or_nothing(table, way):
    """Client-side binding composes one query; server-side binding (a settings option) pipelines."""
    from tests.staff import require_postgres

    require_postgres("the two ways statements travel to PostgreSQL")
    run = getattr(db, way)
    assert run([("INSERT INTO run_batch_probe (id, v) VALUES (%s, %s) RETURNING id", [1, "a"]),
                ("UPDATE run_batch_probe SET v = %s WHERE id = %s", ["b", 1])]) == [[(1,)], []]
    with pytest.raises(IntegrityError):
        run([("UPDATE run_batch_probe SET v = %s WHERE id = %s", ["lost", 1]),
             ("INSERT INTO run_batch_probe (id, v) VALUES (%s, %s)", [1, "duplicate"])])
    assert values() == [(1, "b")]


def test_update_rows_gives_each_row_its_own_values_nulls_included(table):
    run_batch([("INSERT INTO run_batch_probe (id, v) VALUES (%s, %s)", [n, "old"]) for n in range(1, 4)])
    statements = update_rows("run_batch_probe", "id", ("v",), [(1, "one"), (3, None)])
    assert len(statements) == 1
    run_batch(statements)
    assert values() == [(1, "one"), (2, "old"), (3, None)]
    run_batch(update_rows("run_batch_probe", "id", ("v",), [(1, None), (2, None)]))  # a column of NULLs only
    assert values() == [(1, None), (2, None), (3, None)]


def test_update_rows_stays_within_psycopgs_statement_cache(table):
    rows = [(n, f"v{n}") for n in range(1, 61)]
    run_batch([("INSERT INTO run_batch_probe (id, v) VALUES (%s, %s)", [n, "old"]) for n in range(1, 61)])
    statements = update_rows("run_batch_probe", "id", ("v",), rows, also="id = id")
    assert all(len(params) <= CACHED_PARAMS for _sql, params in statements) and len(statements) == 4
    run_batch(statements)
    assert values() == rows


def test_in_chunks_keeps_order_and_size():
    assert in_chunks(list(range(7)), per_item=20) == [[0, 1], [2, 3], [4, 5], [6]]
    assert in_chunks(list(range(3)), per_item=60) == [[0], [1], [2]]  # never an empty statement
    assert in_chunks([], per_item=1) == []
