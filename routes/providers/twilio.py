"""Twilio Programmable Messaging: https://www.twilio.com/docs/messaging/api/message-resource
(sms-providers.md §4).

Form POST to `/2010-04-01/Accounts/{AccountSid}/Messages.json` with HTTP Basic `AccountSid:AuthToken`;
success is HTTP 201 with the Message resource, an error is `{"code", "message", "more_info", "status"}`.
Status callbacks go to the per-message `StatusCallback` URL, signed with `X-Twilio-Signature` =
base64(HMAC-SHA1(auth token, URL + sorted params)) as twilio-python's RequestValidator computes it.
"""

import base64
import hashlib
import hmac
from datetime import datetime, timedelta
from decimal import Decimal
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit, urlunsplit

from .base import (
    Balance,
    CredentialField,
    ErrorClass,
    Provider,
    ProviderAuthError,
    ProviderBadRequestError,
    ProviderError,
    ProviderRejectedError,
    ProviderTemporaryError,
    ReportStatus,
    SendRequest,
    SendResult,
    StatusReport,
    WebhookReply,
    WebhookRequest,
    WebhookSignatureError,
    decimal_or_none,
    int_or_none,
    without_text,
)
from .http import json_or_none

API_VERSION = "2010-04-01"
MAX_VALIDITY_SECONDS = 36000
# Reconciling: how many of the newest messages to a number are looked at, and how far Twilio's clock
# may be from ours when a message's `date_created` is compared with the start of our attempt.
RECONCILE_PAGE_SIZE = 50
RECONCILE_CLOCK_SKEW = timedelta(seconds=120)

# Twilio error code -> (exception, error class). Codes 3xxxx normally arrive in status callbacks.
ERRORS: dict[int, tuple[type[ProviderError], ErrorClass]] = {
    20003: (ProviderAuthError, ErrorClass.AUTH),
    20429: (ProviderTemporaryError, ErrorClass.THROTTLED),
    20500: (ProviderTemporaryError, ErrorClass.PROVIDER_UNAVAILABLE),
    21211: (ProviderRejectedError, ErrorClass.INVALID_RECIPIENT),
    21408: (ProviderRejectedError, ErrorClass.NO_ROUTE),  # geo permission for the region is off
    21606: (ProviderRejectedError, ErrorClass.SENDER_REJECTED),
    21608: (ProviderAuthError, ErrorClass.AUTH),  # trial account, unverified recipient: a route problem
    21609: (ProviderBadRequestError, ErrorClass.BAD_REQUEST),
    21610: (ProviderRejectedError, ErrorClass.BLOCKED_RECIPIENT),
    21612: (ProviderRejectedError, ErrorClass.NO_ROUTE),
    21614: (ProviderRejectedError, ErrorClass.INVALID_RECIPIENT),
    21617: (ProviderBadRequestError, ErrorClass.BAD_REQUEST),
    21635: (ProviderRejectedError, ErrorClass.INVALID_RECIPIENT),
    30001: (ProviderTemporaryError, ErrorClass.THROTTLED),
    30002: (ProviderAuthError, ErrorClass.AUTH),  # account suspended
    30004: (ProviderRejectedError, ErrorClass.BLOCKED_RECIPIENT),
    30005: (ProviderRejectedError, ErrorClass.INVALID_RECIPIENT),
    30006: (ProviderRejectedError, ErrorClass.INVALID_RECIPIENT),
    30007: (ProviderRejectedError, ErrorClass.CONTENT_REJECTED),
    30034: (ProviderRejectedError, ErrorClass.SENDER_REJECTED),
}
# A `failed`/`undelivered` report with one of these codes is a rejection rather than a delivery failure.
REJECTION_CODES = frozenset(code for code, (exc, _) in ERRORS.items() if exc is ProviderRejectedError)


def twilio_signature(auth_token: str, url: str, params: dict[str, list[str]]) -> str:
    """X-Twilio-Signature: the URL, then each parameter name in sorted order followed by each of its
    values in sorted order, HMAC-SHA1 with the auth token, base64."""
    payload = url
    for name in sorted(params):
        for value in sorted(params[name]):
            payload += name + value
    digest = hmac.new(auth_token.encode("utf-8"), payload.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def url_variants(url: str) -> list[str]:
    """The URL with and without its default port: Twilio is not consistent about it."""
    parts = urlsplit(url)
    default_port = {"https": 443, "http": 80}.get(parts.scheme)
    if default_port is None or not parts.hostname:
        return [url]
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    bare = urlunsplit(parts._replace(netloc=f"{prefix}{host}"))
    with_port = urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default_port}"))
    if parts.port is None:
        return [url, with_port]
    if parts.port == default_port:
        return [url, bare]
    return [url]


class TwilioProvider(Provider):
    slug = "twilio"
    name = "Twilio"
    default_base_url = "https://api.twilio.com"
    supports_callbacks = True
    supports_polling = True
    # Twilio keeps no reference of ours, but lists the messages sent to a number, newest first.
    supports_reconcile = True
    credential_fields = (
        CredentialField(
            name="account_sid",
            label={"ru": "Account SID", "en": "Account SID"},
            help={"ru": "Twilio Console → Account Info (начинается с AC).",
                  "en": "Twilio Console → Account Info (starts with AC)."},
        ),
        CredentialField(
            name="auth_token",
            label={"ru": "Auth Token", "en": "Auth Token"},
            secret=True,
            help={"ru": "Twilio Console → Account Info. Им же подписываются отчёты о доставке.",
                  "en": "Twilio Console → Account Info. Delivery reports are signed with it too."},
        ),
        CredentialField(
            name="messaging_service_sid",
            label={"ru": "Messaging Service SID", "en": "Messaging Service SID"},
            required=False,
            help={"ru": "Необязательно (MG…). Без него укажите отправителя: номер Twilio или буквенное имя.",
                  "en": "Optional (MG…). Without it, set the sender: a Twilio number or an alphanumeric ID."},
        ),
    )
    status_map = {
        "accepted": ReportStatus.SENT,
        "scheduled": ReportStatus.SENT,
        "queued": ReportStatus.SENT,
        "sending": ReportStatus.SENT,
        "sent": ReportStatus.SENT,
        "delivered": ReportStatus.DELIVERED,
        "read": ReportStatus.DELIVERED,
        "undelivered": ReportStatus.UNDELIVERED,
        "partially_delivered": ReportStatus.UNDELIVERED,  # some parts only: the text is not readable
        "failed": ReportStatus.FAILED,
        "canceled": ReportStatus.FAILED,
    }

    @property
    def _account_path(self) -> str:
        return f"/{API_VERSION}/Accounts/{self.credential('account_sid')}"

    def _call(self, method: str, path: str, *, data=None, params=None, ambiguous_on_failure=False) -> dict:
        response = self.http_request(method, f"{self._account_path}{path}", data=data, params=params,
                                     auth=(self.credential("account_sid"), self.credential("auth_token")))
        body = json_or_none(response)
        if response.status_code in (200, 201) and isinstance(body, dict):
            return body
        raise self._error(response, body, ambiguous_on_failure)

    def _error(self, response, body, ambiguous_on_failure) -> ProviderError:
        status = response.status_code
        raw = body if isinstance(body, dict) else None
        code = int_or_none(body.get("code")) if isinstance(body, dict) else None
        message = str(body.get("message") or "")[:200] if isinstance(body, dict) else ""
        if code in ERRORS:
            exc_class, error_class = ERRORS[code]
        elif status == 401:
            exc_class, error_class = ProviderAuthError, ErrorClass.AUTH
        elif status == 429:
            exc_class, error_class = ProviderTemporaryError, ErrorClass.THROTTLED
        elif status >= 500 or raw is None:
            exc_class, error_class = ProviderTemporaryError, ErrorClass.PROVIDER_UNAVAILABLE
        else:
            exc_class, error_class = ProviderBadRequestError, ErrorClass.BAD_REQUEST
        text_code = str(code) if code is not None else str(status)
        if exc_class is ProviderTemporaryError:
            retry_after = decimal_or_none(response.headers.get("Retry-After"))
            # A 5xx other than "unavailable" may come after Twilio queued the message.
            ambiguous = ambiguous_on_failure and status in (502, 504)
            return exc_class(message or f"HTTP {status}", code=text_code, error_class=error_class, raw=raw,
                             retry_after=float(retry_after) if retry_after is not None else None, ambiguous=ambiguous)
        return exc_class(message or f"HTTP {status}", code=text_code, error_class=error_class, raw=raw)

    def send(self, request: SendRequest) -> SendResult:
        data = {"To": request.phone, "Body": request.text}
        service = self.credentials.get("messaging_service_sid")
        if service:
            data["MessagingServiceSid"] = service
        if self.sender:
            data["From"] = self.sender
        if not service and not self.sender:
            raise ProviderBadRequestError("set a sender (From) or a Messaging Service SID", code="no_sender")
        if request.callback_url:
            data["StatusCallback"] = request.callback_url
        if request.validity_seconds:
            data["ValidityPeriod"] = str(max(1, min(MAX_VALIDITY_SECONDS, request.validity_seconds)))
        body = self._call("POST", "/Messages.json", data=data, ambiguous_on_failure=True)
        if not body.get("sid"):
            raise ProviderTemporaryError("no sid in the reply", code="bad_reply", ambiguous=True,
                                         raw=without_text(body, "body"))
        report = self._report(body)
        parts = int_or_none(body.get("num_segments"))
        price = decimal_or_none(body.get("price"))
        return SendResult(provider_message_id=str(body["sid"]),
                          status=report.status if report.status != ReportStatus.UNKNOWN else ReportStatus.SENT,
                          cost=abs(price) if price is not None else None, parts=parts, raw=without_text(body, "body"))

    def reconcile(self, *, reference: str, phone: str, text: str = "", since: datetime | None = None
                  ) -> SendResult | None:
        """Whether Twilio took a message whose answer we never got: `GET .../Messages.json?To=`
        (newest first) and the first outbound message created since the attempt started (give or take
        the clocks' skew) with the same text and sender (sms-providers.md §4.7). Twilio has no
        reference of ours, so the same text to the same number inside that window counts as ours."""
        if since is None or not text:
            raise ProviderTemporaryError("cannot reconcile without the text and the attempt's time",
                                         code="reconcile_unsupported")
        body = self._call("GET", "/Messages.json", params={"To": phone, "PageSize": str(RECONCILE_PAGE_SIZE)})
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise ProviderTemporaryError("unexpected list reply", code="bad_reply", raw=without_text(body, "body"))
        service = self.credentials.get("messaging_service_sid") or None
        for message in messages:
            if not isinstance(message, dict) or message.get("body") != text:
                continue
            if str(message.get("direction", "outbound-api")).startswith("inbound"):
                continue
            if (service and message.get("messaging_service_sid") != service) or (
                    not service and self.sender and message.get("from") not in (self.sender, None)):
                continue
            try:
                created = parsedate_to_datetime(str(message.get("date_created") or ""))
            except (TypeError, ValueError):
                continue
            if created.tzinfo is None or created < since - RECONCILE_CLOCK_SKEW:
                continue
            report = self._report(message)
            return SendResult(provider_message_id=report.provider_message_id,
                              status=report.status if report.status != ReportStatus.UNKNOWN else ReportStatus.SENT,
                              raw=report.raw)
        return None

    def fetch_statuses(self, provider_message_ids):
        return [self._report(self._call("GET", f"/Messages/{message_id}.json")) for message_id in provider_message_ids]

    def _report(self, message: dict) -> StatusReport:
        """A Message resource (API) or a status callback (form fields) as a normalised report."""
        status = str(message.get("status") or message.get("MessageStatus") or message.get("SmsStatus") or "")
        error_code = message.get("error_code") or message.get("ErrorCode") or ""
        normalised = self.map_status(status)
        error_class = None
        numeric = int_or_none(error_code)
        if numeric is not None and normalised in (ReportStatus.FAILED, ReportStatus.UNDELIVERED):
            if numeric in REJECTION_CODES:
                normalised = ReportStatus.REJECTED
            error_class = ERRORS[numeric][1] if numeric in ERRORS else None
        code = f"{status}:{numeric}" if numeric is not None else status
        sid = str(message.get("sid") or message.get("MessageSid") or message.get("SmsSid") or "")
        return StatusReport(sid, normalised, provider_code=code, error_class=error_class,
                            raw=without_text(message, "body", "Body"))

    def balance(self) -> Balance:
        body = self._call("GET", "/Balance.json")
        return Balance(amount=decimal_or_none(body.get("balance")) or Decimal(0),
                       currency=str(body.get("currency", "")))

    # --- status callbacks ------------------------------------------------------------------------
    def verify_webhook(self, request: WebhookRequest) -> None:
        given = request.headers.get("x-twilio-signature", "")
        token = str(self.credentials.get("auth_token") or "")
        if not given or not token:
            raise WebhookSignatureError("missing X-Twilio-Signature")
        for url in dict.fromkeys([request.url, *request.alternate_urls]):
            for variant in url_variants(url):
                if hmac.compare_digest(twilio_signature(token, variant, request.form), given):
                    return
        raise WebhookSignatureError("X-Twilio-Signature does not match")

    def parse_webhook(self, request: WebhookRequest) -> list[StatusReport]:
        fields = {name: values[-1] for name, values in request.form.items()}
        if not (fields.get("MessageSid") or fields.get("SmsSid")):
            return []
        if fields.get("AccountSid") and fields["AccountSid"] != self.credentials.get("account_sid"):
            raise ValueError("the report is for another Twilio account")
        return [self._report(fields)]

    def webhook_reply(self) -> WebhookReply:
        return WebhookReply(204, "")
