"""Provider failures, kept apart from the contract so the HTTP helpers can raise them too."""

from __future__ import annotations

import math
from enum import StrEnum
from typing import ClassVar


class ErrorClass(StrEnum):
    TRANSPORT = "transport"  # the request never reached the provider (connect error): safe to resend
    TIMEOUT = "timeout"  # the request may have reached the provider: never resend blindly
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    THROTTLED = "throttled"
    ACCOUNT_RATE_LIMITED = "account_rate_limited"
    RECIPIENT_RATE_LIMITED = "recipient_rate_limited"
    INVALID_RECIPIENT = "invalid_recipient"
    BLOCKED_RECIPIENT = "blocked_recipient"
    NO_ROUTE = "no_route"
    CONTENT_REJECTED = "content_rejected"
    SENDER_REJECTED = "sender_rejected"
    AUTH = "auth"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    BAD_REQUEST = "bad_request"
    UNKNOWN = "unknown"


class ProviderError(Exception):
    """Base of every provider failure. `code` is the provider's own code, kept raw."""

    default_class: ClassVar[ErrorClass] = ErrorClass.UNKNOWN

    def __init__(self, message: str = "", *, code: str = "", error_class: ErrorClass | None = None, raw=None):
        self.message = message
        self.code = str(code) if code is not None else ""
        self.error_class = ErrorClass(error_class or self.default_class)
        self.raw = raw
        super().__init__(f"[{self.error_class}] {self.code} {message}".strip())


MAX_RETRY_AFTER = 86_400.0  # no login code or bulk SMS is worth sending a day later


class ProviderTemporaryError(ProviderError):
    """Retry later. `ambiguous` means the provider may have got (and sent) the message."""

    default_class = ErrorClass.PROVIDER_UNAVAILABLE

    def __init__(self, message="", *, retry_after: float | None = None, ambiguous: bool = False, **kwargs):
        # A provider's Retry-After is only a hint: "Infinity" or 1e400 would overflow the retry's date.
        if retry_after is not None and not (isinstance(retry_after, (int, float)) and math.isfinite(retry_after)):
            retry_after = None
        self.retry_after = min(max(retry_after, 0.0), MAX_RETRY_AFTER) if retry_after is not None else None
        self.ambiguous = ambiguous
        super().__init__(message, **kwargs)


class ProviderRejectedError(ProviderError):
    """Permanent: the recipient, the text or the sender was refused. Another route would not help."""

    default_class = ErrorClass.INVALID_RECIPIENT


class ProviderAuthError(ProviderError):
    """Permanent for this route: credentials, money or account limits. The next route may work."""

    default_class = ErrorClass.AUTH


class ProviderBadRequestError(ProviderError):
    """Permanent: our request was malformed (a bug on our side). Not retried."""

    default_class = ErrorClass.BAD_REQUEST
