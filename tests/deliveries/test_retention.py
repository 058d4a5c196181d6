"""Retention: redaction of system SMS texts, purge of all texts, optional phone hashing."""

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from deliveries.models import Attempt, Delivery, DeliveryKind, DeliveryStatus, StatusEvent
from deliveries.retention import phone_fingerprint, retention_run, text_fingerprint

pytestmark = pytest.mark.django_db


@pytest.fixture
def make(account):
    def make(*, kind=DeliveryKind.SYSTEM, status=DeliveryStatus.DELIVERED, finished_hours_ago=None,
             created_days_ago=0, text="Ваш код: 834622", phone="+79123456789"):
        now = timezone.now()
        delivery = Delivery.objects.create(account=account, kind=kind, phone=phone, text=text, encoding="ucs2",
                                           segments=1, status=status, valid_until=now)
        finished = now - timedelta(hours=finished_hours_ago) if finished_hours_ago is not None else None
        Delivery.objects.filter(pk=delivery.pk).update(created_at=now - timedelta(days=created_days_ago),
                                                       finished_at=finished)
        Attempt.objects.create(delivery=delivery, provider="smsaero", started_at=now,
                               raw_response={"data": {"text": text}})
        StatusEvent.objects.create(delivery=delivery, source="webhook", status=status, raw={"text": text})
        return delivery

    return make


def test_system_text_is_redacted_a_day_after_it_is_final(make):
    old = make(finished_hours_ago=25)
    recent = make(finished_hours_ago=23)
    running = make(status=DeliveryStatus.SENT)
    result = retention_run()
    assert result.redacted == 1
    old.refresh_from_db()
    assert old.text == "" and old.text_length == 15 and old.segments == 1
    assert old.text_hash == text_fingerprint("Ваш код: 834622") and old.text_redacted_at
    assert old.attempts.get().raw_response is None and old.events.get().raw is None
    for kept in (recent, running):
        kept.refresh_from_db()
        assert kept.text == "Ваш код: 834622" and kept.attempts.get().raw_response


def test_other_kinds_keep_their_text_until_the_purge(make, settings):
    bulk = make(kind=DeliveryKind.BULK, finished_hours_ago=48)
    old_bulk = make(kind=DeliveryKind.BULK, finished_hours_ago=48, created_days_ago=31)
    stuck = make(status=DeliveryStatus.UNKNOWN, created_days_ago=31)
    result = retention_run()
    assert (result.redacted, result.purged) == (0, 2)
    bulk.refresh_from_db()
    assert bulk.text
    for purged in (old_bulk, stuck):
        purged.refresh_from_db()
        assert purged.text == "" and purged.text_redacted_at


def test_phones_are_hashed_only_when_configured(make, settings):
    recent = make(created_days_ago=91)
    old = make(created_days_ago=100, phone="+79123456780")
    assert retention_run().phones_hashed == 0
    settings.SMSGATE_HASH_PHONE_DAYS = 90
    # The hourly job takes the phones that crossed the cutoff in the last two days ...
    assert retention_run().phones_hashed == 1
    recent.refresh_from_db()
    assert recent.phone == phone_fingerprint("+79123456789")
    assert recent.phone.startswith("+7#") and "9123456789" not in recent.phone and len(recent.phone) <= 20
    assert retention_run().phones_hashed == 0
    # ... and the command's --all-phones everything older, once, when hashing is switched on.
    call_command("purge_deliveries", "--all-phones", stdout=io.StringIO())
    old.refresh_from_db()
    assert old.phone == phone_fingerprint("+79123456780")


def test_purge_command_dry_run_changes_nothing(make):
    delivery = make(finished_hours_ago=30)
    out = io.StringIO()
    call_command("purge_deliveries", "--dry-run", stdout=out)
    assert "1 system SMS texts would be redacted" in out.getvalue()
    delivery.refresh_from_db()
    assert delivery.text
    call_command("purge_deliveries", stdout=out)
    delivery.refresh_from_db()
    assert delivery.text == ""


def test_redaction_runs_in_batches(make, monkeypatch):
    from deliveries import retention

    monkeypatch.setattr(retention, "BATCH", 2)
    for _ in range(5):
        make(finished_hours_ago=30)
    assert retention_run().redacted == 5
    assert not Delivery.objects.exclude(text="").exists()
