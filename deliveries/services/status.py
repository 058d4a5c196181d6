"""Every status change of a delivery, and nothing else.

Owns: applying a transition declared in `models.TRANSITIONS` to one delivery or many, with its
conditional UPDATE (only deliveries whose status may move to the target change, so two processes
racing for one delivery never both move it), what records the change, the counters
(deliveries.counters) and the metric. May call: models, counters, metrics, smsgate.db.

What records a change:
- a worker's own provider call (claiming the delivery, the provider's answer: sent, a final
  outcome, unknown; a retry scheduled) is recorded on the delivery row (claimed_at, sent_at,
  finished_at, the error columns) and in its Attempt rows: the hot path writes nothing more;
- every other change writes a StatusEvent (`event=`): provider reports (webhooks, polls), staff
  actions (retry, cancel), and what smsgate decides without a provider call (a missed validity, a
  disabled account, no route left, a dead worker's claim, a lookup at the provider, the report
  horizon).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from smsgate.db import run_batch

from .. import metrics
from ..counters import IN_PROGRESS, KEY_COLUMNS, moved_counts
from ..models import Delivery, DeliveryStatus, StatusEvent, may_precede


@dataclass(frozen=True)
class Event:
    """The StatusEvent a change keeps (see the module docstring for which changes keep one)."""

    source: str  # StatusEvent.Source
    provider_code: str = ""
    error_class: str = ""
    occurred_at: datetime | None = None
    raw: Any = None


@dataclass
class Moved:
    """What a change did: the ids it moved (in id order), the moved deliveries themselves when they
    were asked for (`read=True`), and the rows of the statements run alongside."""

    ids: list = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    alongside: list[list] = field(default_factory=list)

    def __bool__(self):
        return bool(self.ids)


def deliveries_move(*, ids, to: str, values: dict | None = None, per_row: dict | None = None,
                    only_from=None, due_by: datetime | None = None, increment: tuple[str, ...] = (),
                    event: Event | None = None, read: bool = False, alongside=(), now=None) -> Moved:
    """Move every delivery of `ids` whose status may become `to` (TRANSITIONS, narrowed to
    `only_from` if given), setting `values` on each (or each its own `per_row[id]` values, the same
    fields for all), adding 1 to the `increment` fields, and, with `due_by`, only those whose next
    attempt is due by then. `event` is the StatusEvent each moved delivery keeps. `read` returns the
    moved deliveries whole. `alongside`: statements of the caller's own to run in the same
    transaction, before the change (their rows come back in `Moved.alongside`).

    One transaction; a change within pending/sending (a claim, a retry scheduled) moves no counter and
    keeps no event, so it is a single statement."""
    to = DeliveryStatus(to)
    sources = tuple(sorted(s for s in may_precede(to) if only_from is None or s in set(only_from)))
    ids = sorted({Delivery._meta.pk.to_python(i) for i in ids})
    if not ids or not sources:
        return Moved()
    now = now or timezone.now()
    if per_row is not None:
        fields = tuple(sorted(next(iter(per_row.values())).keys())) if per_row else ()
        statements = [(_update_sql(to, sources, fields, increment, due_by is not None, 1, read),
                       _params(to, now, fields, per_row[i], sources, [i], due_by)) for i in ids]
    else:
        fields = tuple(sorted((values or {}).keys()))
        statements = [(_update_sql(to, sources, fields, increment, due_by is not None, len(ids), read),
                       _params(to, now, fields, values or {}, sources, ids, due_by))]
    keeps_counts = not (to in IN_PROGRESS and all(s in IN_PROGRESS for s in sources))
    if not keeps_counts and event is None and not alongside:
        rows = _run_one_by_one(statements, read)
        return _done(Moved(ids=[row["id"] for row in rows], deliveries=_instances(rows, read)), to, rows)
    with transaction.atomic(savepoint=False):
        results = run_batch([*alongside, *statements])
        rows = [_as_row(values, read) for result in results[len(alongside):] for values in result]
        follow_up = moved_counts(rows) if keeps_counts else []
        if event is not None and rows:
            follow_up.append(_events_sql(event, [row["id"] for row in rows], to, now))
        run_batch(follow_up)
    moved = Moved(ids=sorted(row["id"] for row in rows), deliveries=_instances(rows, read),
                  alongside=results[:len(alongside)])
    return _done(moved, to, rows)


def delivery_move(*, delivery_id, to: str, **options) -> bool:
    """`deliveries_move` for one delivery: whether it moved."""
    return bool(deliveries_move(ids=[delivery_id], to=to, **options))


def _done(moved: Moved, to, rows: list[dict]) -> Moved:
    """Count the change (smsgate_delivery_status_total counts deliveries reaching sent, unknown or a
    final status; new deliveries count as pending where they are created)."""
    if to not in IN_PROGRESS:
        for provider, count in Counter(row["provider"] for row in rows).items():
            metrics.delivery_status(to, provider, count)
    return moved


# --- SQL, built once per shape -------------------------------------------------------------------------
_COLUMNS = tuple(f.column for f in Delivery._meta.concrete_fields)


@lru_cache(maxsize=256)
def _update_sql(to, sources: tuple, fields: tuple, increment: tuple, due: bool, count: int, read: bool) -> str:
    quote = connection.ops.quote_name
    meta = Delivery._meta
    assignments = ["status = %s", "updated_at = %s"]
    assignments += [f"{quote(meta.get_field(name).column)} = %s" for name in fields]
    assignments += [f"{quote(meta.get_field(name).column)} = {quote(meta.get_field(name).column)} + 1"
                    for name in increment]
    where = [f"id IN ({', '.join(['%s'] * count)})" if count > 1 else "id = %s",
             f"status IN ({', '.join(['%s'] * len(sources))})"]
    if due:
        where.append("(next_attempt_at IS NULL OR next_attempt_at <= %s)")
    returning = _COLUMNS if read else KEY_COLUMNS
    return (f"UPDATE {quote(meta.db_table)} SET {', '.join(assignments)} WHERE {' AND '.join(where)} "
            f"RETURNING {', '.join(quote(c) for c in returning)}")


def _params(to, now, fields, values: dict, sources, ids, due_by) -> list:
    meta = Delivery._meta
    prepare_id = meta.pk.get_db_prep_value
    params = [to.value, meta.get_field("updated_at").get_db_prep_save(now, connection)]
    params += [_prepared(meta.get_field(name), values[name]) for name in fields]
    params += [prepare_id(i, connection) for i in ids]
    params += [str(s) for s in sources]
    if due_by is not None:
        params.append(meta.get_field("next_attempt_at").get_db_prep_save(due_by, connection))
    return params


def _prepared(model_field, value):
    if model_field.is_relation and value is not None and hasattr(value, "pk"):  # a route, an account: its id
        value = value.pk
    return model_field.get_db_prep_save(value, connection)


_READ_FIELDS = tuple(f for f in Delivery._meta.concrete_fields)


@lru_cache(maxsize=2)
def _row_shape(read: bool) -> tuple[tuple[str, ...], tuple]:
    """The attribute names of a returned row, and the ORM's converters of those columns that have any
    (the database's own types converted as the ORM converts them): looked up once per process."""
    fields = _READ_FIELDS if read else tuple(Delivery._meta.get_field(
        "account" if c == "account_id" else c) for c in KEY_COLUMNS)
    converting = []
    for model_field in fields:
        expression = model_field.get_col(Delivery._meta.db_table)
        converters = connection.ops.get_db_converters(expression) + expression.get_db_converters(connection)
        if converters:
            converting.append((model_field.attname, tuple(converters)))
    return tuple(f.attname for f in fields), tuple(converting)


def _as_row(values: tuple, read: bool) -> dict:
    """A returned row as Python values."""
    names, converting = _row_shape(read)
    row = dict(zip(names, values, strict=True))
    for name, converters in converting:
        value = row[name]
        for converter in converters:
            value = converter(value, None, connection)
        row[name] = value
    return row


def _instances(rows: list[dict], read: bool) -> list[Delivery]:
    if not read:
        return []
    names = [f.attname for f in _READ_FIELDS]
    return [Delivery.from_db(connection.alias, names, [row[name] for name in names]) for row in rows]


def _run_one_by_one(statements, read: bool) -> list[dict]:
    rows = []
    with connection.cursor() as cursor:
        for sql, params in statements:
            cursor.execute(sql, params)
            rows += [_as_row(values, read) for values in cursor.fetchall()]
    return rows


@lru_cache(maxsize=1)
def _event_columns() -> tuple[str, ...]:
    return ("delivery_id", "source", "status", "provider_code", "error_class", "occurred_at", "received_at",
            "applied", "raw")


@lru_cache(maxsize=64)
def _events_insert_sql(count: int) -> str:
    quote = connection.ops.quote_name
    columns = _event_columns()
    row = "(" + ", ".join(["%s"] * len(columns)) + ")"
    return (f"INSERT INTO {quote(StatusEvent._meta.db_table)} ({', '.join(quote(c) for c in columns)}) "
            f"VALUES {', '.join([row] * count)}")


def _events_sql(event: Event, ids: list, to, now) -> tuple[str, list]:
    meta = StatusEvent._meta
    raw = meta.get_field("raw").get_db_prep_save(event.raw, connection)
    occurred = meta.get_field("occurred_at").get_db_prep_save(event.occurred_at, connection)
    received = meta.get_field("received_at").get_db_prep_save(now, connection)
    prepare_id = Delivery._meta.pk.get_db_prep_value
    params = []
    for delivery_id in ids:
        params += [prepare_id(delivery_id, connection), str(event.source), str(to), str(event.provider_code)[:50],
                   str(event.error_class)[:30], occurred, received, True, raw]
    return _events_insert_sql(len(ids)), params
