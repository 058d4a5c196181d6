"""No query of the deliveries admin reads the whole deliveries table (PostgreSQL).

Every query a list page (each filter, each kind of search, a later page) and a delivery's page
run is captured and EXPLAINed with sequential scans disabled: if the planner still has to scan
the table sequentially, or reads a whole index with nothing stopping it early, no index serves
that query and it would crawl at five million rows. The same data is small here, so with
sequential scans allowed the planner would pick them for everything; disabling them asks which
plan is possible, not which is cheapest on a tiny table."""

import json

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from deliveries.models import Delivery
from tests.staff import queries_touching_deliveries, require_postgres, staff_client

pytestmark = pytest.mark.django_db

TABLE = Delivery._meta.db_table
LIST = reverse("admin:deliveries_delivery_changelist")
# Nodes that consume all of their input before returning a row.
BLOCKING = {"Sort", "Aggregate", "Hash", "Materialize", "Unique", "SetOp", "WindowAgg", "Gather Merge"}


def plan_of(sql: str) -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        try:
            cursor.execute("EXPLAIN (FORMAT JSON) " + sql)
            plan = cursor.fetchone()[0]
        finally:
            cursor.execute("RESET enable_seqscan")
    return (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]


def whole_table_reads(node: dict, ancestors=()) -> list[str]:
    """Scans of the deliveries table that would read all of it."""
    problems = []
    node_type = node["Node Type"]
    on_deliveries = node.get("Relation Name") == TABLE or node.get("Index Name", "").startswith(
        tuple(index.name for index in Delivery._meta.indexes) + ("deliveries_delivery_",))
    if on_deliveries and node_type == "Seq Scan":
        problems.append("Seq Scan")
    elif on_deliveries and node_type == "Bitmap Index Scan" and "Index Cond" not in node:
        problems.append(f"Bitmap Index Scan using {node['Index Name']} without a condition")
    elif on_deliveries and node_type in ("Index Scan", "Index Only Scan") and "Index Cond" not in node:
        # An ordered walk of an index is fine only when a Limit above it stops it early.
        for ancestor in reversed(ancestors):
            if ancestor in BLOCKING:
                problems.append(f"{node_type} using {node['Index Name']} read to the end under {ancestor}")
                break
            if ancestor == "Limit":
                break
        else:
            problems.append(f"{node_type} using {node['Index Name']} without a condition or a limit")
    for child in node.get("Plans", []):
        problems += whole_table_reads(child, (*ancestors, node_type))
    return problems


@pytest.fixture
def seeded():
    require_postgres("the query-plan test")
    call_command("seed_deliveries", count=4000, accounts=5, history_share=0.5, stdout=open("/dev/null", "w"))
    return Delivery.objects.filter(attempts__isnull=False, provider_message_id__gt="").first()


def test_no_list_or_delivery_page_query_reads_the_whole_table(seeded):
    delivery = seeded
    client, _ = staff_client("deliveries.view_delivery")
    pages = [
        LIST,
        LIST + "?p=3",
        LIST + "?status__exact=pending",
        LIST + "?status__exact=delivered",
        LIST + "?status__exact=failed&created=7d",
        LIST + "?kind__exact=test",
        LIST + "?provider=smsru",
        LIST + "?created=today",
        LIST + "?created=7d",
        LIST + "?created=30d&kind__exact=system&provider=smsru&status__exact=sent",
        LIST + "?q=%2B7+912+000-00-01",
        LIST + "?q=89120000003",
        LIST + f"?q={delivery.pk}",
        LIST + f"?q={delivery.provider_message_id}",
        LIST + "?q=seed0001",
        LIST + f"?q={delivery.account.amo_id}",
        LIST + f"?q={delivery.account_id}&status__exact=delivered",
        reverse("admin:deliveries_delivery_change", args=[delivery.pk]),
    ]
    checked = 0
    failures = {}
    for page in pages:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(page).status_code == 200, page
        for sql in queries_touching_deliveries(captured):
            if sql.lstrip().upper().startswith(("EXPLAIN", "SET", "RESET")):
                continue
            checked += 1
            problems = whole_table_reads(plan_of(sql))
            if problems:
                failures.setdefault(page, []).append((problems, sql[:300]))
    assert checked >= len(pages) * 2
    assert failures == {}


def test_the_check_catches_a_query_no_index_serves(seeded):
    """The check itself: sorting by an unindexed column, a LIKE search or a full count is caught."""
    def sql(queryset):
        return connection.ops.compose_sql(*queryset.query.sql_with_params())

    assert whole_table_reads(plan_of(sql(Delivery.objects.order_by("-text")[:50])))
    assert whole_table_reads(plan_of(sql(Delivery.objects.filter(phone__contains="912").values("id"))))
    assert whole_table_reads(plan_of(sql(Delivery.objects.filter(encoding="gsm7").values("id"))))
    assert whole_table_reads(plan_of("SELECT count(*) FROM " + TABLE))
