"""A paginator for big tables: never a COUNT(*) over millions of rows.

PostgreSQL's own estimate comes first: the table's `pg_class.reltuples` without filters, the
planner's row estimate (EXPLAIN, nothing is run) with them. A big estimate is shown as it is. A
small one is checked with a bounded count (`SELECT count(*) FROM (... LIMIT n)`, ordered like the
page so it walks the same index and stops early): up to EXACT_UP_TO rows the count is exact, and
an estimate that was too low costs at most n rows. Other databases (SQLite in development) count
exactly.
"""

import json
import logging

from django.core.exceptions import EmptyResultSet
from django.core.paginator import Paginator
from django.db import DatabaseError, connections
from django.utils.functional import cached_property

logger = logging.getLogger(__name__)

EXACT_UP_TO = 10_000
# Estimates above this are trusted without a bounded count (they are rarely off by 10x).
TRUSTED_ESTIMATE = 10 * EXACT_UP_TO


def table_row_estimate(model, using="default") -> int | None:
    """PostgreSQL's row estimate of a whole table (kept by ANALYZE/autovacuum), or None if unknown."""
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [model._meta.db_table])
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] is not None and row[0] >= 0 else None


def query_row_estimate(queryset) -> int | None:
    """The planner's estimate of the rows a queryset returns (PostgreSQL EXPLAIN; nothing is run)."""
    sql, params = queryset.order_by().query.sql_with_params()
    with connections[queryset.db].cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


# The deepest page served: page N costs an OFFSET walk over N x per_page rows of the index, so a
# URL like ?p=100000 would scan millions; older rows are reached by narrowing the filters instead.
MAX_PAGES = 200


class EstimatedCountPaginator(Paginator):
    exact_up_to = EXACT_UP_TO
    trusted_estimate = TRUSTED_ESTIMATE
    max_pages = MAX_PAGES

    @cached_property
    def num_pages(self):
        return min(super().num_pages, self.max_pages)

    @cached_property
    def count(self):
        queryset = self.object_list
        connection = connections[queryset.db]
        if connection.vendor != "postgresql":
            return queryset.count()
        try:
            if queryset.query.where:
                estimate = query_row_estimate(queryset)
            else:
                estimate = table_row_estimate(queryset.model, using=queryset.db)
            if estimate is not None and estimate > self.trusted_estimate:
                return estimate
            # Ordered like the page, so the bounded count walks the same index and stops early.
            exact = queryset[: self.exact_up_to + 1].count()
            if exact <= self.exact_up_to:
                return exact
            return max(estimate or 0, exact)
        except EmptyResultSet:  # a filter that can match nothing (e.g. a search that names nothing)
            return 0
        except DatabaseError:  # never let an estimate break the page
            logger.warning("row estimate failed; counting exactly", exc_info=True)
            return queryset.count()
