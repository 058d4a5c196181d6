"""The provider contract. Providers are pure: no models, no settings, no Celery in this package.

Credentials come in through the constructor; `send()` returns a `SendResult` or raises one of the
`Provider*Error`s below, always keeping the provider's raw code. The service layer decides what
each error means for the delivery (retry, next route, final status).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import ClassVar

from .errors import (  # noqa: F401  (re-exported: the contract names its errors)
    MAX_RETRY_AFTER,
    ErrorClass,
    ProviderAuthError,
    ProviderBadRequestError,
    ProviderError,
    ProviderRejectedError,
    ProviderTemporaryError,
)
from .http import default_client


class ReportStatus(StrEnum):
    """Normalised provider-side status; the values are the delivery statuses they move a delivery to."""

    SENT = "sent"  # accepted by the provider or the operator, no receipt yet
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    EXPIRED = "expired"
    REJECTED = "rejected"
    FAILED = "failed"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class CredentialField:
    """One credential a provider needs; forms and the API schema are generated from these."""

    name: str
    label: dict[str, str]  # {"ru": ..., "en": ...}
    secret: bool = False
    help: dict[str, str] = field(default_factory=dict)
    required: bool = True


@dataclass(frozen=True)
class SendRequest:
    phone: str  # E.164, with "+"
    text: str
    reference: str  # our delivery id
    sender: str = ""
    validity_seconds: int | None = None
    callback_url: str | None = None


MAX_COST = Decimal(10) ** 8  # Attempt.cost: max_digits=12, decimal_places=4
MAX_PARTS = 255  # a concatenated SMS numbers its parts in one byte


@dataclass(frozen=True)
class SendResult:
    provider_message_id: str
    status: ReportStatus = ReportStatus.SENT
    cost: Decimal | None = None
    parts: int | None = None
    raw: dict | list | str | None = None

    def __post_init__(self):
        # A reply's cost and part count are stored in columns of a fixed size (12 digits with 4
        # decimals; a small integer): a value that does not fit is no cost or part count, so dropped.
        if self.cost is not None and not (isinstance(self.cost, Decimal) and self.cost.is_finite()
                                          and abs(self.cost) < MAX_COST):
            object.__setattr__(self, "cost", None)
        if self.parts is not None and not (isinstance(self.parts, int) and 0 <= self.parts <= MAX_PARTS):
            object.__setattr__(self, "parts", None)


@dataclass(frozen=True)
class StatusReport:
    provider_message_id: str
    status: ReportStatus
    provider_code: str = ""
    error_class: ErrorClass | None = None
    occurred_at: datetime | None = None
    raw: dict | list | str | None = None


@dataclass(frozen=True)
class StatusQuery:
    """One message to poll. Some providers find a message by id alone, some (SMSC) need the phone too."""

    provider_message_id: str
    phone: str = ""  # E.164, with "+"
    reference: str = ""  # our delivery id


@dataclass(frozen=True)
class Balance:
    amount: Decimal
    currency: str = ""


@dataclass(frozen=True)
class WebhookRequest:
    """A provider's callback as the webhook view received it (no Django objects past this point)."""

    url: str  # the full public URL the provider called
    method: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    form: dict[str, list[str]]
    query: dict[str, list[str]]
    # Other spellings of `url` the provider may have signed (the URL as this server saw it).
    alternate_urls: tuple[str, ...] = ()

    def value(self, name: str, default: str = "") -> str:
        """The last value of a form field, else of a query parameter."""
        values = self.form.get(name) or self.query.get(name)
        return values[-1] if values else default


@dataclass(frozen=True)
class WebhookReply:
    status: int = 200
    body: str = "ok"
    content_type: str = "text/plain"


class WebhookSignatureError(Exception):
    """The callback's signature is missing or wrong."""


class Provider(ABC):
    slug: ClassVar[str]
    name: ClassVar[str]
    credential_fields: ClassVar[tuple[CredentialField, ...]] = ()
    default_base_url: ClassVar[str] = ""
    # Raw provider status code -> normalised status. Anything not here maps to UNKNOWN.
    status_map: ClassVar[dict[str, ReportStatus]] = {}
    supports_callbacks: ClassVar[bool] = False
    supports_polling: ClassVar[bool] = False
    # After an ambiguous timeout the provider can tell whether it got the message (by our reference).
    supports_reconcile: ClassVar[bool] = False
    # How many messages one status request may ask about.
    poll_batch_size: ClassVar[int] = 1
    # HTTP methods the provider uses for its delivery-report callbacks.
    webhook_methods: ClassVar[tuple[str, ...]] = ("POST",)
    # Backup hosts tried, in order, when the default host refuses the connection (nothing was sent).
    fallback_base_urls: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, credentials: dict | None = None, sender: str = "", base_url: str | None = None, http=None):
        self.credentials = dict(credentials or {})
        self.sender = sender or ""
        # An override may list several hosts separated by "|" (tests: a dead primary and a live backup).
        urls = base_url.split("|") if base_url else [self.default_base_url, *self.fallback_base_urls]
        self.base_urls = [url.strip().rstrip("/") for url in urls if url.strip()]
        self.base_url = self.base_urls[0] if self.base_urls else ""
        self.http = http or default_client()

    def http_request(self, method: str, path: str, **kwargs):
        """A request to the first host that accepts the connection. Only a connect error moves on to
        the next host: after a timeout the first host may have acted on the request."""
        last_error = None
        for base in self.base_urls:
            try:
                return self.http.request(method, f"{base}{path}", **kwargs)
            except ProviderTemporaryError as exc:
                if exc.error_class != ErrorClass.TRANSPORT:
                    raise
                last_error = exc
        raise last_error or ProviderTemporaryError("no base URL", code="connect", error_class=ErrorClass.TRANSPORT)

    def credential(self, name: str) -> str:
        value = self.credentials.get(name)
        if not value:
            raise ProviderAuthError(f"credential {name!r} is not set", code="missing_credential")
        return str(value)

    @classmethod
    def map_status(cls, code) -> ReportStatus:
        return cls.status_map.get(str(code), ReportStatus.UNKNOWN)

    @abstractmethod
    def send(self, request: SendRequest) -> SendResult: ...

    def balance(self) -> Balance:
        raise NotImplementedError(f"{self.slug} cannot report a balance")

    def fetch_statuses(self, provider_message_ids: list[str]) -> list[StatusReport]:
        """Poll the provider for the current statuses of these messages."""
        return []

    def poll_statuses(self, queries: list[StatusQuery]) -> list[StatusReport]:
        """Poll for at most `poll_batch_size` messages. Providers that need more than the id override it."""
        return self.fetch_statuses([query.provider_message_id for query in queries])

    def reconcile(self, *, reference: str, phone: str, text: str = "", since: datetime | None = None
                  ) -> SendResult | None:
        """After an ambiguous timeout or a dead worker's call: the message if the provider has it
        (looked up by our own `reference`, or by the recipient, the `text` and the attempt's start
        `since` where the provider keeps no reference of ours), None if it never arrived. Raises
        ProviderError when it cannot tell."""
        raise NotImplementedError(f"{self.slug} cannot look a message up by our reference")

    def register_callback(self, url: str) -> None:
        """Register our delivery-report URL with the provider account (where the API allows it)."""
        raise NotImplementedError(f"{self.slug} takes its callback URL per message or in its own cabinet")

    # --- delivery-report webhooks -------------------------------------------------------------
    def verify_webhook(self, request: WebhookRequest) -> None:
        """Raise WebhookSignatureError unless the callback is authentic. The route token in the URL
        has already been checked; providers that sign their callbacks check that too."""

    def parse_webhook(self, request: WebhookRequest) -> list[StatusReport]:
        raise NotImplementedError(f"{self.slug} sends no delivery-report callbacks")

    def webhook_reply(self) -> WebhookReply:
        return WebhookReply()


def decimal_or_none(value) -> Decimal | None:
    """A money amount from a provider reply ("1.40", 1.4, None, garbage) as a Decimal, or None."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        amount = Decimal(str(value).strip().replace(",", "."))
    except (ArithmeticError, ValueError):
        return None
    return amount if amount.is_finite() else None  # "NaN" and "Infinity" are Decimals too


def int_or_none(value) -> int | None:
    """An integer from a provider (42, "42", " -42 "), or None. Only ASCII digits: int() also reads
    other scripts' digits, "1_000" and far longer numbers than any provider sends."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = value.strip() if isinstance(value, str) else ""
    digits = text[1:] if text[:1] in ("-", "+") else text
    return int(text) if digits.isascii() and digits.isdigit() and len(digits) <= 18 else None


def timestamp_or_none(value) -> datetime | None:
    """A Unix time from a provider ("1700000000", 1700000000, garbage, absurd values) as UTC, or None."""
    seconds = int_or_none(value)
    if not seconds:
        return None
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None


def without_text(raw, *keys: str):
    """A provider reply as we keep it: message texts are never stored outside the delivery row."""
    if isinstance(raw, dict):
        return {k: ("<text>" if k in keys else v) for k, v in raw.items()}
    return raw
