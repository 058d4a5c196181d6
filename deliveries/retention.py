"""Retention: message texts hold login codes and personal data; keep them no longer than needed.

- a system SMS's text is redacted N hours after its status is final (default 24): the text is
  emptied, its length, part count and a keyed hash are kept; provider replies and reports of that
  delivery are dropped too (some providers echo the text);
- every text is purged N days after it was sent (default 30), whatever its kind or status;
- phones can be replaced by a keyed hash after N days (off by default).

Each job works in small batches on partial indexes (only rows not yet redacted/hashed), so it
never scans the whole table and never holds long locks.
"""

import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .models import FINAL_STATUSES, Attempt, Delivery, DeliveryKind, StatusEvent

logger = logging.getLogger(__name__)

BATCH = 1000


def _keyed_hash(value: str, purpose: str) -> str:
    key = hashlib.sha256(f"smsgate-{purpose}:{settings.SECRET_KEY}".encode()).digest()
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def text_fingerprint(text: str) -> str:
    """Lets staff check a text they are given against a redacted delivery, without storing it."""
    return _keyed_hash(text, "text")


def phone_fingerprint(e164: str) -> str:
    """`+7#<15 hex>`: the country code stays (for statistics), the number is gone."""
    import phonenumbers

    try:
        country = f"+{phonenumbers.parse(e164, None).country_code}"
    except phonenumbers.NumberParseException:
        country = "+"
    return f"{country}#{_keyed_hash(e164, 'phone')[:20 - len(country) - 1]}"


@dataclass
class RetentionResult:
    redacted: int = 0
    purged: int = 0
    phones_hashed: int = 0


def _redact(queryset, *, dry_run: bool, limit: int | None) -> int:
    done = 0
    while limit is None or done < limit:
        size = BATCH if limit is None else min(BATCH, limit - done)
        rows = list(queryset.values_list("pk", "text")[:size])
        if not rows:
            break
        if dry_run:
            return queryset.count() if limit is None else min(queryset.count(), limit)
        now = timezone.now()
        with transaction.atomic():
            Delivery.objects.bulk_update(
                [Delivery(pk=pk, text="", text_length=len(text), text_hash=text_fingerprint(text),
                          text_redacted_at=now) for pk, text in rows],
                ["text", "text_length", "text_hash", "text_redacted_at"],
            )
            ids = [pk for pk, _ in rows]
            Attempt.objects.filter(delivery_id__in=ids).update(raw_response=None)
            StatusEvent.objects.filter(delivery_id__in=ids).update(raw=None)
        done += len(rows)
    return done


def redact_system_texts(*, dry_run=False, limit=None) -> int:
    cutoff = timezone.now() - timedelta(hours=settings.SMSGATE_REDACT_SYSTEM_TEXT_HOURS)
    candidates = Delivery.objects.filter(text_redacted_at__isnull=True, finished_at__lt=cutoff,
                                         kind=DeliveryKind.SYSTEM, status__in=FINAL_STATUSES).order_by()
    return _redact(candidates, dry_run=dry_run, limit=limit)


def purge_texts(*, dry_run=False, limit=None) -> int:
    cutoff = timezone.now() - timedelta(days=settings.SMSGATE_PURGE_TEXT_DAYS)
    candidates = Delivery.objects.filter(text_redacted_at__isnull=True, created_at__lt=cutoff).order_by()
    return _redact(candidates, dry_run=dry_run, limit=limit)


# The hourly job hashes the phones that crossed the cutoff lately; `purge_deliveries --all-phones`
# covers everything older (once, when hashing is first switched on). A window keeps the job on the
# created-at index without a whole extra index for a feature that is off by default.
PHONE_HASH_WINDOW = timedelta(days=2)


def hash_phones(*, dry_run=False, limit=None, all_phones=False) -> int:
    if settings.SMSGATE_HASH_PHONE_DAYS <= 0:
        return 0
    cutoff = timezone.now() - timedelta(days=settings.SMSGATE_HASH_PHONE_DAYS)
    candidates = Delivery.objects.filter(phone_hashed_at__isnull=True, created_at__lt=cutoff).order_by()
    if not all_phones:
        candidates = candidates.filter(created_at__gte=cutoff - PHONE_HASH_WINDOW)
    if dry_run:
        return candidates.count()
    done = 0
    while limit is None or done < limit:
        rows = list(candidates.values_list("pk", "phone")[:BATCH])
        if not rows:
            break
        now = timezone.now()
        Delivery.objects.bulk_update(
            [Delivery(pk=pk, phone=phone_fingerprint(phone), phone_hashed_at=now) for pk, phone in rows],
            ["phone", "phone_hashed_at"])
        done += len(rows)
    return done


def retention_run(*, dry_run=False, all_phones=False) -> RetentionResult:
    result = RetentionResult(
        redacted=redact_system_texts(dry_run=dry_run),
        purged=purge_texts(dry_run=dry_run),
        phones_hashed=hash_phones(dry_run=dry_run, all_phones=all_phones),
    )
    if not dry_run and (result.redacted or result.purged or result.phones_hashed):
        logger.info("retention: %d system texts redacted, %d texts purged, %d phones hashed",
                    result.redacted, result.purged, result.phones_hashed)
    return result
