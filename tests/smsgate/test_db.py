"""smsgate.db.run_batch: the same statements, all or nothing, in one round trip on PostgreSQL."""

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from smsgate.db import run_batch

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
    if connection.vendor == "postgresql":  # one pipeline: BEGIN, the statements, COMMIT
        assert sent[0] == "BEGIN" and sent[-1] == "COMMIT" and len(sent) == 22
    else:  # SQLite: the same statements inside Django's transaction
        assert len([sql for sql in sent if sql.startswith("INSERT")]) == 20
