"""SMS.ru: https://sms.ru/api/send, /api/status, callbacks (see sms-providers.md §1).

Auth is the `api_id` parameter; replies are JSON with `json=1`. HTTP 200 carries API errors in
`status_code`, and a valid request can still fail per recipient inside `sms`.

Callbacks are registered once per SMS.ru account (`/callback/add`), not per message: a POST with
`data[]` records (`sms_status\n<sms_id>\n<code>\n<unix time>`) and `hash` = sha256(api_id + records).
The handler must answer `100`, or SMS.ru sends the batch again.
"""

import hashlib
import hmac
import re
from decimal import Decimal, InvalidOperation

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
    int_or_none,
    timestamp_or_none,
)
from .http import json_or_none

# Request and recipient error codes -> (exception, error class).
_ERRORS: dict[int, tuple[type[ProviderError], ErrorClass]] = {
    200: (ProviderAuthError, ErrorClass.AUTH),
    201: (ProviderAuthError, ErrorClass.INSUFFICIENT_FUNDS),
    202: (ProviderRejectedError, ErrorClass.INVALID_RECIPIENT),
    203: (ProviderBadRequestError, ErrorClass.BAD_REQUEST),
    204: (ProviderRejectedError, ErrorClass.SENDER_REJECTED),
    205: (ProviderBadRequestError, ErrorClass.BAD_REQUEST),
    206: (ProviderAuthError, ErrorClass.ACCOUNT_RATE_LIMITED),
    207: (ProviderRejectedError, ErrorClass.NO_ROUTE),
    208: (ProviderBadRequestError, ErrorClass.BAD_REQUEST),
    209: (ProviderRejectedError, ErrorClass.BLOCKED_RECIPIENT),
    210: (ProviderBadRequestError, ErrorClass.BAD_REQUEST),
    211: (ProviderBadRequestError, ErrorClass.BAD_REQUEST),
    212: (ProviderBadRequestError, ErrorClass.BAD_REQUEST),
    213: (ProviderBadRequestError, ErrorClass.BAD_REQUEST),
    214: (ProviderRejectedError, ErrorClass.BLOCKED_RECIPIENT),
    215: (ProviderRejectedError, ErrorClass.BLOCKED_RECIPIENT),
    220: (ProviderTemporaryError, ErrorClass.PROVIDER_UNAVAILABLE),
    230: (ProviderRejectedError, ErrorClass.RECIPIENT_RATE_LIMITED),
    231: (ProviderRejectedError, ErrorClass.RECIPIENT_RATE_LIMITED),
    232: (ProviderRejectedError, ErrorClass.RECIPIENT_RATE_LIMITED),
    233: (ProviderRejectedError, ErrorClass.RECIPIENT_RATE_LIMITED),
    300: (ProviderAuthError, ErrorClass.AUTH),
    301: (ProviderAuthError, ErrorClass.AUTH),
    302: (ProviderAuthError, ErrorClass.AUTH),
    500: (ProviderTemporaryError, ErrorClass.PROVIDER_UNAVAILABLE),
    501: (ProviderRejectedError, ErrorClass.RECIPIENT_RATE_LIMITED),
    502: (ProviderRejectedError, ErrorClass.RECIPIENT_RATE_LIMITED),
    503: (ProviderRejectedError, ErrorClass.RECIPIENT_RATE_LIMITED),
    504: (ProviderRejectedError, ErrorClass.RECIPIENT_RATE_LIMITED),
    505: (ProviderRejectedError, ErrorClass.RECIPIENT_RATE_LIMITED),
    506: (ProviderRejectedError, ErrorClass.BLOCKED_RECIPIENT),
    507: (ProviderBadRequestError, ErrorClass.BAD_REQUEST),
}


def _decimal(value) -> Decimal | None:
    try:
        return Decimal(str(value)) if value is not None else None
    except InvalidOperation:
        return None


class SmsRuProvider(Provider):
    slug = "smsru"
    name = "SMS.ru"
    default_base_url = "https://sms.ru"
    supports_callbacks = True
    supports_polling = True
    poll_batch_size = 100  # `sms_id` takes a comma-separated list
    credential_fields = (
        CredentialField(
            name="api_id",
            label={"ru": "API-ключ (api_id)", "en": "API key (api_id)"},
            secret=True,
            help={
                "ru": "Личный кабинет SMS.ru → «Программистам» → ваш api_id.",
                "en": "SMS.ru cabinet → “For developers” → your api_id.",
            },
        ),
    )
    status_map = {
        "-1": ReportStatus.UNKNOWN,
        "100": ReportStatus.SENT,
        "101": ReportStatus.SENT,
        "102": ReportStatus.SENT,
        "103": ReportStatus.DELIVERED,
        "104": ReportStatus.EXPIRED,
        "105": ReportStatus.UNDELIVERED,
        "106": ReportStatus.UNDELIVERED,
        "107": ReportStatus.UNDELIVERED,
        "108": ReportStatus.REJECTED,
        "110": ReportStatus.DELIVERED,
        "130": ReportStatus.REJECTED,
        "131": ReportStatus.REJECTED,
        "132": ReportStatus.REJECTED,
        "150": ReportStatus.REJECTED,
    }

    def _post(self, path: str, data: dict) -> dict:
        response = self.http_request("POST", path, data={"api_id": self.credential("api_id"), "json": "1", **data})
        if response.status_code >= 500:
            raise ProviderTemporaryError(f"HTTP {response.status_code}", code=str(response.status_code),
                                         ambiguous=response.status_code == 504)
        body = json_or_none(response)
        if response.status_code != 200 or not isinstance(body, dict):
            raise ProviderTemporaryError(f"unexpected reply: HTTP {response.status_code}",
                                         code=str(response.status_code), ambiguous=True)
        if body.get("status") != "OK":
            raise self._error(body)
        return body

    def _error(self, entry: dict) -> ProviderError:
        code = int_or_none(entry.get("status_code"))
        code = -1 if code is None else code
        exc_class, error_class = _ERRORS.get(code, (ProviderBadRequestError, ErrorClass.UNKNOWN))
        return exc_class(str(entry.get("status_text", ""))[:200], code=str(code), error_class=error_class, raw=entry)

    def send(self, request: SendRequest) -> SendResult:
        to = request.phone.lstrip("+")
        data = {"to": to, "msg": request.text}
        if self.sender:
            data["from"] = self.sender
        if request.validity_seconds:
            data["ttl"] = str(max(1, min(1440, request.validity_seconds // 60)))
        body = self._post("/sms/send", data)
        entry = (body.get("sms") or {}).get(to)
        if not isinstance(entry, dict):
            raise ProviderTemporaryError("no entry for the recipient in the reply", code="no_entry",
                                         ambiguous=True, raw=body)
        if entry.get("status") != "OK":
            raise self._error(entry)
        return SendResult(provider_message_id=str(entry["sms_id"]), cost=_decimal(entry.get("cost")), raw=body)

    def balance(self) -> Balance:
        body = self._post("/my/balance", {})
        return Balance(amount=_decimal(body.get("balance")) or Decimal(0), currency="RUB")

    def fetch_statuses(self, provider_message_ids):
        body = self._post("/sms/status", {"sms_id": ",".join(provider_message_ids)})
        reports = []
        for message_id, entry in (body.get("sms") or {}).items():
            if not isinstance(entry, dict):
                continue
            code = str(entry.get("status_code", ""))
            reports.append(StatusReport(message_id, self.map_status(code), provider_code=code, raw=entry))
        return reports

    def register_callback(self, url: str) -> None:
        self._post("/callback/add", {"url": url})

    # --- delivery-report callbacks --------------------------------------------------------------
    def verify_webhook(self, request: WebhookRequest) -> None:
        records = _callback_records(request)
        if not records:
            return  # nothing to apply (SMS.ru checking the handler): answered with 100, changes nothing
        given = request.value("hash").strip().lower()
        api_id = str(self.credentials.get("api_id") or "")
        if not given or not api_id:
            raise WebhookSignatureError("missing hash")
        expected = hashlib.sha256((api_id + "".join(records)).encode("utf-8")).hexdigest()
        if not hmac.compare_digest(expected, given):
            raise WebhookSignatureError("hash mismatch")

    def parse_webhook(self, request: WebhookRequest) -> list[StatusReport]:
        reports = []
        for record in _callback_records(request):
            lines = record.replace("\r\n", "\n").split("\n")
            if len(lines) < 3 or lines[0].strip() != "sms_status":
                continue  # e.g. `callcheck_status` records of SMS.ru's call authentication
            sms_id, code = lines[1].strip(), lines[2].strip()
            occurred_at = timestamp_or_none(lines[3]) if len(lines) > 3 else None
            reports.append(StatusReport(sms_id, self.map_status(code), provider_code=code, occurred_at=occurred_at,
                                        raw={"record": record}))
        return reports

    def webhook_reply(self) -> WebhookReply:
        return WebhookReply(200, "100")


_INDEXED_DATA = re.compile(r"^data\[([0-9]{1,4})\]$")  # not \d: it matches every script's digits


def _callback_records(request: WebhookRequest) -> list[str]:
    """`data[]` values in order; tolerate `data[0]`, `data[1]` ... as well."""
    if request.form.get("data[]"):
        return list(request.form["data[]"])
    indexed = sorted((int(m.group(1)), values[-1]) for name, values in request.form.items()
                     if (m := _INDEXED_DATA.match(name)) and values)
    return [value for _, value in indexed]
