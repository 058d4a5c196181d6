"""Devino Telecom, REST API v2 without sessions: https://integrationapi.net/rest/v2 (sms-providers.md §5.2).

Every call carries `Login` and `Password`. `POST /Sms/Send` answers a JSON array of message ids, one
per SMS part; the first part's id is the one we follow (`GET /Sms/State?messageId=`). Errors are
`{"Code", "Desc"}` with an HTTP status per code. This API has no delivery-report callbacks, so
Devino deliveries are followed by polling. (The newer devino.online API has callbacks, but their
body is not public: [?] in the reference.)
"""

import re
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
    decimal_or_none,
    int_or_none,
)
from .http import json_or_none

_ERRORS: dict[int, tuple[type[ProviderError], ErrorClass]] = {
    1: (ProviderBadRequestError, ErrorClass.BAD_REQUEST),  # argument null or empty
    2: (ProviderBadRequestError, ErrorClass.BAD_REQUEST),  # invalid argument (see _is_recipient_error)
    4: (ProviderAuthError, ErrorClass.AUTH),
    5: (ProviderAuthError, ErrorClass.INSUFFICIENT_FUNDS),
    6: (ProviderRejectedError, ErrorClass.SENDER_REJECTED),  # "invalid operation", e.g. a bad source address
    7: (ProviderAuthError, ErrorClass.AUTH),  # forbidden
    8: (ProviderTemporaryError, ErrorClass.PROVIDER_UNAVAILABLE),  # gateway error
    9: (ProviderTemporaryError, ErrorClass.PROVIDER_UNAVAILABLE),  # internal server error
}
_RECIPIENT_WORDS = ("destination", "phone", "number", "номер", "получател")
_LOOSE_CODE = re.compile(r"""["']?Code["']?\s*:\s*(-?[0-9]{1,18})""")
_LOOSE_DESC = re.compile(r"""["']?Desc["']?\s*:\s*["“”]?([^"“”}]*)""")


def _error_fields(response) -> tuple[int | None, str]:
    """Code and Desc of an error reply; the published samples are not strict JSON, so read loosely."""
    body = json_or_none(response)
    if isinstance(body, dict):
        return int_or_none(body.get("Code")), str(body.get("Desc") or "")
    text = response.text[:2000]
    code, desc = _LOOSE_CODE.search(text), _LOOSE_DESC.search(text)
    return (int(code.group(1)) if code else None), (desc.group(1).strip() if desc else "")


class DevinoProvider(Provider):
    slug = "devino"
    name = "Devino Telecom"
    default_base_url = "https://integrationapi.net/rest/v2"
    supports_callbacks = False
    supports_polling = True
    credential_fields = (
        CredentialField(
            name="login",
            label={"ru": "Логин", "en": "Login"},
            help={"ru": "Логин для HTTP API Devino Telecom.", "en": "Your Devino Telecom HTTP API login."},
        ),
        CredentialField(
            name="password",
            label={"ru": "Пароль", "en": "Password"},
            secret=True,
            help={"ru": "Пароль для HTTP API Devino Telecom.", "en": "Your Devino Telecom HTTP API password."},
        ),
    )
    status_map = {
        "-2": ReportStatus.SENT,  # queued
        "-1": ReportStatus.SENT,  # passed to the mobile network
        "0": ReportStatus.DELIVERED,
        "10": ReportStatus.REJECTED,  # invalid sender address
        "11": ReportStatus.REJECTED,  # invalid recipient address
        "41": ReportStatus.REJECTED,  # recipient address not allowed
        "42": ReportStatus.REJECTED,  # rejected by the SMSC
        "46": ReportStatus.EXPIRED,
        "47": ReportStatus.UNDELIVERED,  # deleted
        "48": ReportStatus.REJECTED,  # rejected by the platform
        "69": ReportStatus.REJECTED,
        "-98": ReportStatus.FAILED,  # stopped
        "99": ReportStatus.UNKNOWN,
        "255": ReportStatus.UNKNOWN,  # not in the database yet, or older than 48 hours
    }
    _report_classes = {
        "10": ErrorClass.SENDER_REJECTED,
        "11": ErrorClass.INVALID_RECIPIENT,
        "41": ErrorClass.BLOCKED_RECIPIENT,
    }

    def _auth(self) -> dict:
        return {"Login": self.credential("login"), "Password": self.credential("password")}

    def _check(self, response, *, ambiguous_on_failure=False):
        if response.status_code == 200:
            body = json_or_none(response)
            if body is not None:
                return body
            raise ProviderTemporaryError("unexpected reply", code="bad_reply", ambiguous=ambiguous_on_failure)
        code, desc = _error_fields(response)
        if code is None:
            raise ProviderTemporaryError(f"HTTP {response.status_code}", code=str(response.status_code),
                                         ambiguous=ambiguous_on_failure and response.status_code in (502, 504))
        exc_class, error_class = _ERRORS.get(code, (ProviderBadRequestError, ErrorClass.UNKNOWN))
        if code == 2 and any(word in desc.lower() for word in _RECIPIENT_WORDS):
            exc_class, error_class = ProviderRejectedError, ErrorClass.INVALID_RECIPIENT
        raise exc_class(desc[:200], code=str(code), error_class=error_class, raw={"Code": code, "Desc": desc[:200]})

    def send(self, request: SendRequest) -> SendResult:
        data = {**self._auth(), "DestinationAddress": request.phone.lstrip("+"), "Data": request.text,
                "SourceAddress": self.sender}
        if request.validity_seconds:
            data["Validity"] = str(max(1, request.validity_seconds // 60))
        body = self._check(self.http_request("POST", "/Sms/Send", data=data), ambiguous_on_failure=True)
        ids = [str(i) for i in body] if isinstance(body, list) else [str(body)] if isinstance(body, str) else []
        if not ids or not ids[0]:
            raise ProviderTemporaryError("no message id in the reply", code="bad_reply", ambiguous=True, raw=body)
        return SendResult(provider_message_id=ids[0], parts=len(ids), raw={"ids": ids})

    def fetch_statuses(self, provider_message_ids):
        reports = []
        for message_id in provider_message_ids:
            body = self._check(self.http_request("GET", "/Sms/State", params={**self._auth(), "messageId": message_id}))
            if not isinstance(body, dict):
                continue
            code = str(body.get("State", "")).strip()
            reports.append(StatusReport(message_id, self.map_status(code), provider_code=code,
                                        error_class=self._report_classes.get(code), raw=body))
        return reports

    def balance(self) -> Balance:
        body = self._check(self.http_request("GET", "/User/Balance", params=self._auth()))
        return Balance(amount=decimal_or_none(body) or Decimal(0), currency="RUB")
