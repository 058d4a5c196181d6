"""SMSC.ru (same engine as smsc.kz, smsc.ua, smscentre.com): https://smsc.ru/api/http/ (sms-providers.md §2).

Form POSTs to `/sys/<cmd>.php` with `login` + `psw`, `fmt=3` (JSON replies) and `charset=utf-8` (the
default is windows-1251). We pass our delivery id as SMSC's message `id`, so a message can be
looked up by our own reference: after a timeout `reconcile()` asks `status.php` instead of
resending, and SMSC's error 9 (an identical request within a minute) is checked the same way.

Callbacks: the handler URL is an account setting and its parameters are not publicly documented
([?] in the reference); the parser below is tolerant (`id`, `status`, `err`, `time`/`ts`, form or
query) and the route token in the URL is the only check. Polling is the main source of reports.
"""

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
    StatusQuery,
    StatusReport,
    WebhookRequest,
    decimal_or_none,
    int_or_none,
    timestamp_or_none,
    without_text,
)
from .http import json_or_none

# error_code -> (exception, error class, seconds to wait before retrying)
_ERRORS: dict[int, tuple[type[ProviderError], ErrorClass, float | None]] = {
    1: (ProviderBadRequestError, ErrorClass.BAD_REQUEST, None),
    2: (ProviderAuthError, ErrorClass.AUTH, None),  # bad login/password, or IP not allowed
    3: (ProviderAuthError, ErrorClass.INSUFFICIENT_FUNDS, None),
    4: (ProviderTemporaryError, ErrorClass.THROTTLED, 300.0),  # IP blocked for a while after frequent errors
    5: (ProviderBadRequestError, ErrorClass.BAD_REQUEST, None),
    6: (ProviderRejectedError, ErrorClass.CONTENT_REJECTED, None),  # forbidden by text or sender name
    7: (ProviderRejectedError, ErrorClass.INVALID_RECIPIENT, None),
    8: (ProviderRejectedError, ErrorClass.NO_ROUTE, None),
    9: (ProviderTemporaryError, ErrorClass.THROTTLED, 60.0),  # identical request within a minute / too many at once
}
DUPLICATE_REQUEST = 9
NOT_FOUND = "-3"


def _hh_mm(seconds: int) -> str:
    minutes = max(1, min(24 * 60, seconds // 60))
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


class SmscProvider(Provider):
    slug = "smsc"
    name = "SMSC.ru"
    default_base_url = "https://smsc.ru"
    fallback_base_urls = ("https://www2.smsc.ru",)
    supports_callbacks = True
    supports_polling = True
    supports_reconcile = True
    poll_batch_size = 50
    webhook_methods = ("POST", "GET")
    credential_fields = (
        CredentialField(
            name="login",
            label={"ru": "Логин", "en": "Login"},
            help={"ru": "Логин личного кабинета SMSC.ru.", "en": "Your SMSC.ru account login."},
        ),
        CredentialField(
            name="password",
            label={"ru": "Пароль или API-ключ", "en": "Password or API key"},
            secret=True,
            help={
                "ru": "Пароль от кабинета SMSC.ru (или пароль для API из «Настроек»).",
                "en": "Your SMSC.ru password (or the API password from “Settings”).",
            },
        ),
    )
    status_map = {
        "-3": ReportStatus.UNKNOWN,  # not found
        "-2": ReportStatus.FAILED,  # stopped
        "-1": ReportStatus.SENT,  # waiting to be sent
        "0": ReportStatus.SENT,  # passed to the operator
        "1": ReportStatus.DELIVERED,
        "2": ReportStatus.DELIVERED,  # read
        "3": ReportStatus.EXPIRED,
        "4": ReportStatus.DELIVERED,  # link clicked
        "20": ReportStatus.UNDELIVERED,
        "22": ReportStatus.REJECTED,  # invalid number
        "23": ReportStatus.REJECTED,  # prohibited
        "24": ReportStatus.FAILED,  # insufficient funds
        "25": ReportStatus.UNDELIVERED,  # unavailable number
    }
    _report_classes = {
        "22": ErrorClass.INVALID_RECIPIENT,
        "23": ErrorClass.CONTENT_REJECTED,
        "24": ErrorClass.INSUFFICIENT_FUNDS,
    }

    def _call(self, command: str, params: dict, *, ambiguous_on_failure: bool = False):
        data = {"login": self.credential("login"), "psw": self.credential("password"), "fmt": "3",
                "charset": "utf-8", **params}
        response = self.http_request("POST", f"/sys/{command}.php", data=data)
        if response.status_code >= 500:
            raise ProviderTemporaryError(f"HTTP {response.status_code}", code=str(response.status_code),
                                         ambiguous=ambiguous_on_failure and response.status_code in (502, 504))
        body = json_or_none(response)
        if response.status_code != 200 or not isinstance(body, (dict, list)):
            raise ProviderTemporaryError(f"unexpected reply: HTTP {response.status_code}",
                                         code=str(response.status_code), ambiguous=ambiguous_on_failure)
        if isinstance(body, dict) and "error_code" in body:
            raise self._error(body)
        return body

    def _error(self, body: dict) -> ProviderError:
        code = int_or_none(body.get("error_code"))
        code = -1 if code is None else code
        exc_class, error_class, retry_after = _ERRORS.get(code, (ProviderBadRequestError, ErrorClass.UNKNOWN, None))
        message = str(body.get("error", ""))[:200]
        if exc_class is ProviderTemporaryError:
            return exc_class(message, code=str(code), error_class=error_class, retry_after=retry_after, raw=body)
        return exc_class(message, code=str(code), error_class=error_class, raw=body)

    # --- sending -------------------------------------------------------------------------------
    def send(self, request: SendRequest) -> SendResult:
        params = {"phones": request.phone, "mes": request.text, "id": request.reference, "cost": "3"}
        if self.sender:
            params["sender"] = self.sender
        if request.validity_seconds:
            params["valid"] = _hh_mm(request.validity_seconds)
        try:
            body = self._call("send", params, ambiguous_on_failure=True)
        except ProviderTemporaryError as exc:
            if exc.code != str(DUPLICATE_REQUEST):
                raise
            # "Identical request within a minute": the first one may have gone through.
            try:
                found = self.reconcile(reference=request.reference, phone=request.phone)
            except ProviderError:
                raise exc from None
            if found is not None:
                return found
            raise
        if not isinstance(body, dict):
            raise ProviderTemporaryError("unexpected send reply", code="bad_reply", ambiguous=True, raw=body)
        parts = int_or_none(body.get("cnt"))
        # The message is known to SMSC by the id we gave it.
        return SendResult(provider_message_id=request.reference, cost=decimal_or_none(body.get("cost")), parts=parts,
                          raw=body)

    def reconcile(self, *, reference: str, phone: str, text: str = "", since=None) -> SendResult | None:
        reports = self.poll_statuses([StatusQuery(reference, phone, reference)])
        report = next((r for r in reports if r.provider_message_id == reference), None)
        if report is None or report.provider_code in ("", NOT_FOUND):
            return None
        return SendResult(provider_message_id=reference, status=report.status, raw=report.raw)

    # --- statuses ------------------------------------------------------------------------------
    def poll_statuses(self, queries: list[StatusQuery]) -> list[StatusReport]:
        if not queries:
            return []
        # A trailing comma asks for the list format even for one message.
        body = self._call("status", {
            "id": ",".join(q.provider_message_id for q in queries) + ",",
            "phone": ",".join(q.phone for q in queries) + ",",
            "all": "1",
        })
        items = body if isinstance(body, list) else [body]
        reports = []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                continue
            message_id = str(item.get("id") or (queries[index].provider_message_id if index < len(queries) else ""))
            if not message_id:
                continue
            reports.append(self._report(message_id, item))
        return reports

    def fetch_statuses(self, provider_message_ids):
        raise NotImplementedError("SMSC needs the phone number with the id: use poll_statuses")

    def _report(self, message_id: str, item: dict) -> StatusReport:
        if "error_code" in item and "status" not in item:
            code = NOT_FOUND
        else:
            code = str(item.get("status", "")).strip()
        return StatusReport(message_id, self.map_status(code), provider_code=code,
                            error_class=self._report_classes.get(code),
                            occurred_at=timestamp_or_none(item.get("last_timestamp") or item.get("ts")),
                            raw=without_text(item, "message", "mes"))

    def balance(self) -> Balance:
        body = self._call("balance", {"cur": "1"})
        if not isinstance(body, dict):
            raise ProviderTemporaryError("unexpected balance reply", code="bad_reply", raw=body)
        return Balance(amount=decimal_or_none(body.get("balance")) or Decimal(0),
                       currency=str(body.get("currency") or ""))

    # --- delivery-report callbacks [?] ----------------------------------------------------------
    def parse_webhook(self, request: WebhookRequest) -> list[StatusReport]:
        message_id, code = request.value("id").strip(), request.value("status").strip()
        if not message_id or not (code.isascii() and code.lstrip("-").isdigit()):  # "²".isdigit() is true
            return []  # not a status report (SMSC also forwards incoming messages to this URL)
        fields = without_text({name: values[-1] for name, values in {**request.query, **request.form}.items()
                               if name not in ("login", "psw", "md5", "sha1")}, "message", "mes")
        return [StatusReport(message_id, self.map_status(code), provider_code=code,
                             error_class=self._report_classes.get(code),
                             occurred_at=timestamp_or_none(request.value("ts") or request.value("time")), raw=fields)]
