"""SMS Aero API v2: https://gate.smsaero.ru/v2/ (sms-providers.md §3).

HTTP Basic auth (account e-mail : API key), JSON bodies, replies `{"success", "data", "message"}`;
the official libraries also handle the legacy `{"result": "no credits"}` and
`{"result": "reject", "reason"}` shapes. On a refused connection the next gate host is tried
(gate.smsaero.org, gate.smsaero.net), never plain http.

What is not public ([?] in the reference), so parsed tolerantly: the HTTP status codes of errors
(errors carry no code, only a message, so the class is read from the HTTP status and the text), and
the body of the `callbackUrl` status callback (taken to be the `sms/status` object, bare or under
`data`, JSON or form). Callbacks carry no signature: the route token in the URL is the check.
"""

import json
from decimal import Decimal

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
    WebhookRequest,
    decimal_or_none,
    int_or_none,
    timestamp_or_none,
    without_text,
)
from .http import json_or_none

DEFAULT_SIGN = "SMS Aero"

# Words in an error message -> what it means. Checked in this order; the first match wins.
_MESSAGE_CLASSES: tuple[tuple[tuple[str, ...], type[ProviderError], ErrorClass], ...] = (
    (("no credits", "money", "balance", "insufficient", "средств", "баланс"),
     ProviderAuthError, ErrorClass.INSUFFICIENT_FUNDS),
    (("credential", "auth", "password", "api key", "apikey", "unauthorized", "авториз", "логин", "парол"),
     ProviderAuthError, ErrorClass.AUTH),
    (("blocked", "blacklist", "stop list", "stop-list", "черн", "заблок"),
     ProviderRejectedError, ErrorClass.BLOCKED_RECIPIENT),
    (("sign", "sender", "подпис", "отправител"), ProviderRejectedError, ErrorClass.SENDER_REJECTED),
    (("number", "phone", "номер", "телефон"), ProviderRejectedError, ErrorClass.INVALID_RECIPIENT),
    (("spam", "forbidden", "prohibited", "запрещ", "спам"), ProviderRejectedError, ErrorClass.CONTENT_REJECTED),
    (("too many", "limit", "лимит", "слишком"), ProviderTemporaryError, ErrorClass.THROTTLED),
)


def _classify_message(message: str, default=(ProviderBadRequestError, ErrorClass.BAD_REQUEST)):
    lowered = message.lower()
    for words, exc_class, error_class in _MESSAGE_CLASSES:
        if any(word in lowered for word in words):
            return exc_class, error_class
    return default


def _message_object(data) -> dict | None:
    """The message object of a reply: a dict, or the first one of a list / index-keyed dict."""
    if isinstance(data, list):
        data = data[0] if data else None
    if isinstance(data, dict) and "id" not in data:
        first = next((v for k, v in data.items() if str(k).isascii() and str(k).isdigit() and isinstance(v, dict)),
                     None)
        data = first or data
    return data if isinstance(data, dict) else None


class SmsAeroProvider(Provider):
    slug = "smsaero"
    name = "SMS Aero"
    default_base_url = "https://gate.smsaero.ru/v2"
    fallback_base_urls = ("https://gate.smsaero.org/v2", "https://gate.smsaero.net/v2")
    supports_callbacks = True
    supports_polling = True
    webhook_methods = ("POST", "GET")
    credential_fields = (
        CredentialField(
            name="email",
            label={"ru": "E-mail (логин)", "en": "E-mail (login)"},
            help={"ru": "E-mail, с которым вы входите в кабинет SMS Aero.",
                  "en": "The e-mail you sign in to SMS Aero with."},
        ),
        CredentialField(
            name="api_key",
            label={"ru": "API-ключ", "en": "API key"},
            secret=True,
            help={"ru": "Кабинет SMS Aero → «Настройки» → «API и SMPP».",
                  "en": "SMS Aero cabinet → “Settings” → “API and SMPP”."},
        ),
    )
    status_map = {
        "0": ReportStatus.SENT,  # in queue
        "1": ReportStatus.DELIVERED,
        "2": ReportStatus.UNDELIVERED,
        "3": ReportStatus.SENT,  # passed to the operator
        "4": ReportStatus.SENT,  # waiting for a status
        "6": ReportStatus.REJECTED,
        "8": ReportStatus.SENT,  # on moderation
    }

    def _call(self, path: str, payload: dict, *, ambiguous_on_failure: bool = False):
        response = self.http_request("POST", path, json=payload,
                                     auth=(self.credential("email"), self.credential("api_key")))
        body = json_or_none(response)
        if isinstance(body, dict) and body.get("success") is True:
            return body.get("data")
        raise self._error(response, body, ambiguous_on_failure)

    def _error(self, response, body, ambiguous_on_failure: bool) -> ProviderError:
        status = response.status_code
        raw = body if isinstance(body, (dict, list)) else None
        if isinstance(body, dict) and body.get("result") == "no credits":
            return ProviderAuthError("no credits", code="no credits", error_class=ErrorClass.INSUFFICIENT_FUNDS,
                                     raw=raw)
        if isinstance(body, dict) and body.get("result") == "reject":
            reason = str(body.get("reason") or "reject")[:200]
            exc_class, error_class = _classify_message(reason, (ProviderRejectedError, ErrorClass.CONTENT_REJECTED))
            return exc_class(reason, code="reject", error_class=error_class, raw=raw)
        message = str(body.get("message") or "") if isinstance(body, dict) else ""
        if status in (401, 403):
            return ProviderAuthError(message or f"HTTP {status}", code=str(status), error_class=ErrorClass.AUTH,
                                     raw=raw)
        if status == 402:
            return ProviderAuthError(message or "payment required", code="402",
                                     error_class=ErrorClass.INSUFFICIENT_FUNDS, raw=raw)
        if status == 429:
            retry_after = decimal_or_none(response.headers.get("Retry-After"))
            return ProviderTemporaryError(message or "too many requests", code="429", error_class=ErrorClass.THROTTLED,
                                          retry_after=float(retry_after) if retry_after is not None else None, raw=raw)
        if status >= 500 or not isinstance(body, dict):
            return ProviderTemporaryError(message or f"unexpected reply: HTTP {status}", code=str(status),
                                          ambiguous=ambiguous_on_failure and status not in (500, 503), raw=raw)
        exc_class, error_class = _classify_message(message)
        code = str(status) if status != 200 else "error"
        return exc_class(message[:200], code=code, error_class=error_class, raw=raw)

    def send(self, request: SendRequest) -> SendResult:
        payload = {"number": request.phone.lstrip("+"), "text": request.text, "sign": self.sender or DEFAULT_SIGN}
        if request.callback_url:
            payload["callbackUrl"] = request.callback_url
        data = _message_object(self._call("/sms/send", payload, ambiguous_on_failure=True))
        if not data or data.get("id") in (None, ""):
            raise ProviderTemporaryError("no message id in the reply", code="bad_reply", ambiguous=True,
                                         raw=without_text(data, "text"))
        code = str(data.get("status", ""))
        status = self.map_status(code)
        return SendResult(provider_message_id=str(data["id"]),
                          status=status if status != ReportStatus.UNKNOWN else ReportStatus.SENT,
                          cost=decimal_or_none(data.get("cost")), raw=without_text(data, "text"))

    def fetch_statuses(self, provider_message_ids):
        reports = []
        for message_id in provider_message_ids:
            number = int_or_none(message_id)
            payload_id = message_id if number is None else number
            data = _message_object(self._call("/sms/status", {"id": payload_id}))
            if data:
                reports.append(self._report(str(data.get("id") or message_id), data))
        return reports

    def _report(self, message_id: str, data: dict) -> StatusReport:
        code = str(data.get("status", "")).strip()
        occurred_at = timestamp_or_none(data.get("dateAnswer"))
        return StatusReport(message_id, self.map_status(code), provider_code=code, occurred_at=occurred_at,
                            raw=without_text(data, "text"))

    def balance(self) -> Balance:
        data = self._call("/balance", {})
        amount = decimal_or_none(data.get("balance")) if isinstance(data, dict) else None
        return Balance(amount=amount or Decimal(0), currency="RUB")

    # --- delivery-report callbacks [?] -------------------------------------------------------------
    def parse_webhook(self, request: WebhookRequest) -> list[StatusReport]:
        data = None
        if request.body[:1] in (b"{", b"["):
            try:
                data = json.loads(request.body)
            except ValueError:
                raise ValueError("the callback body is not JSON") from None
            if isinstance(data, dict) and isinstance(data.get("data"), (dict, list)):
                data = data["data"]
        items = data if isinstance(data, list) else [data] if isinstance(data, dict) else []
        if not items and request.value("id"):
            items = [{name: values[-1] for name, values in {**request.query, **request.form}.items()}]
        reports = []
        for item in items:
            if not isinstance(item, dict) or item.get("id") in (None, "") or str(item.get("status", "")) == "":
                continue
            reports.append(self._report(str(item["id"]), item))
        return reports
