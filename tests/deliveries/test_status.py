"""The one owner of status changes (deliveries/services/status.py) over models.TRANSITIONS: every
allowed transition moves the delivery, keeps its record and moves its counter; every forbidden one
changes nothing at all."""

import itertools

import pytest
from django.utils import timezone

from deliveries.models import FINAL_STATUSES, TRANSITIONS, Delivery, DeliveryStatus, StatusEvent
from deliveries.services.intake import delivery_create
from deliveries.services.status import Event, deliveries_move, delivery_move
from tests.staff import counters_snapshot, rebuilt_snapshot, set_state

pytestmark = pytest.mark.django_db

ALL = list(DeliveryStatus)
ALLOWED = [(source, target) for source in ALL for target in sorted(TRANSITIONS[source])]
FORBIDDEN = [(source, target) for source, target in itertools.product(ALL, ALL)
             if target not in TRANSITIONS[source]]


@pytest.fixture
def create(account, settings):
    settings.SMSGATE_DEFAULT_ROUTE = "console"

    def create(status: str) -> Delivery:
        delivery = delivery_create(account=account, phone="+79123456789", text="Код: 1234").delivery
        set_state(delivery, status=status, provider="smsru",
                  error_class="limit" if status in FINAL_STATUSES else "")
        delivery.refresh_from_db()
        return delivery

    return create


def test_the_declared_transitions_are_what_the_product_needs():
    assert TRANSITIONS[DeliveryStatus.DELIVERED] == TRANSITIONS[DeliveryStatus.REJECTED] == frozenset()
    assert TRANSITIONS[DeliveryStatus.SENT] == FINAL_STATUSES  # only reports move a sent SMS, always forward
    assert DeliveryStatus.PENDING in TRANSITIONS[DeliveryStatus.FAILED]  # staff retry
    assert DeliveryStatus.SENDING not in TRANSITIONS[DeliveryStatus.SENT]  # never sent twice by a claim


@pytest.mark.parametrize(("source", "target"), ALLOWED, ids=[f"{s}->{t}" for s, t in ALLOWED])
def test_an_allowed_transition_moves_keeps_its_record_and_its_counter(create, source, target):
    delivery = create(source)
    now = timezone.now()
    moved = deliveries_move(ids=[delivery.pk], to=target, event=Event(StatusEvent.Source.SYSTEM, raw={"why": "test"}),
                            values={"finished_at": now} if target in FINAL_STATUSES else {})
    assert moved.ids == [delivery.pk]
    delivery.refresh_from_db()
    assert delivery.status == target and delivery.updated_at >= now
    [event] = StatusEvent.objects.filter(delivery=delivery)
    assert (event.status, event.applied, event.raw) == (target, True, {"why": "test"})
    assert counters_snapshot() == rebuilt_snapshot()  # counted under its new key, once


def test_the_hot_path_keeps_its_record_on_the_row_without_an_event(create):
    pending = create(DeliveryStatus.PENDING)
    assert delivery_move(delivery_id=pending.pk, to=DeliveryStatus.SENDING, values={"claimed_at": timezone.now()})
    pending.refresh_from_db()
    assert pending.status == DeliveryStatus.SENDING and pending.claimed_at is not None
    assert not StatusEvent.objects.exists()
    assert counters_snapshot() == rebuilt_snapshot()


@pytest.mark.parametrize(("source", "target"), FORBIDDEN, ids=[f"{s}->{t}" for s, t in FORBIDDEN])
def test_a_forbidden_transition_changes_nothing(create, source, target):
    delivery = create(source)
    before_row = Delivery.objects.filter(pk=delivery.pk).values().get()
    before_counts = counters_snapshot()
    moved = deliveries_move(ids=[delivery.pk], to=target, event=Event(StatusEvent.Source.SYSTEM),
                            values={"error_text": "must not be written"})
    assert not moved and moved.ids == []
    assert Delivery.objects.filter(pk=delivery.pk).values().get() == before_row
    assert not StatusEvent.objects.exists() and counters_snapshot() == before_counts


def test_many_at_once_move_only_those_allowed(create):
    rows = [create(status) for status in (DeliveryStatus.PENDING, DeliveryStatus.SENT, DeliveryStatus.DELIVERED)]
    moved = deliveries_move(ids=[d.pk for d in rows], to=DeliveryStatus.FAILED, values={"error_class": "x"},
                            event=Event(StatusEvent.Source.SYSTEM))
    assert sorted(moved.ids) == sorted([rows[0].pk, rows[1].pk])
    assert StatusEvent.objects.count() == 2
    assert counters_snapshot() == rebuilt_snapshot()


def test_only_from_narrows_the_sources(create):
    sent = create(DeliveryStatus.SENT)
    assert not delivery_move(delivery_id=sent.pk, to=DeliveryStatus.FAILED, only_from=(DeliveryStatus.SENDING,))
    assert Delivery.objects.get(pk=sent.pk).status == DeliveryStatus.SENT


def test_two_changes_racing_for_one_delivery_move_it_once(create):
    """The conditional UPDATE: a claim and a cancel of the same pending delivery, one after the
    other as two processes would race; the second finds it already moved."""
    delivery = create(DeliveryStatus.PENDING)
    first = delivery_move(delivery_id=delivery.pk, to=DeliveryStatus.SENDING, only_from=(DeliveryStatus.PENDING,))
    second = delivery_move(delivery_id=delivery.pk, to=DeliveryStatus.FAILED, only_from=(DeliveryStatus.PENDING,))
    assert (first, second) == (True, False)
    assert Delivery.objects.get(pk=delivery.pk).status == DeliveryStatus.SENDING
