"""Fake Twilio Messaging (https://www.twilio.com/docs/messaging/api/message-resource):
POST /2010-04-01/Accounts/{Sid}/Messages.json, GET .../Messages/{Sid}.json, GET .../Messages.json (the list,
newest first, filtered by `To`/`From`, `PageSize`), GET .../Balance.json.

HTTP Basic `AccountSid:AuthToken` (the path's AccountSid must match); success is 201 with the
Message resource; errors are `{"code", "message", "more_info", "status"}`. Status callbacks are
form POSTs to the message's `StatusCallback`, signed with `X-Twilio-Signature` the way Twilio signs
them (the same algorithm as twilio-python's RequestValidator; checked against its test vectors).

Magic recipients:
  +790000CCCCC   -> the send fails with Twilio error CCCCC (e.g. +79000021211 = invalid To), with the
                    HTTP status Twilio uses for it (429 + Retry-After for 20429, 500 for 20500);
  +79000099999   -> accepted, then the connection is dropped without an answer;
  +790001CCCCC   -> accepted, then `undelivered` (`failed` for 30001/30002/30034) with ErrorCode CCCCC;
  +7900020000N   -> accepted, then the final status N of FINAL_BY_INDEX (0 delivered, 1 read,
                    2 failed, 3 canceled, 4 partially_delivered, 5 undelivered);
  +79000200099   -> delivered, but the callbacks arrive out of order and twice (delivered, sent, delivered);
  anything else  -> queued -> sent -> delivered on a timer; callbacks for `sent` and `delivered`.
"""

import base64
import hashlib
import hmac
import itertools
import re
import threading
from email.utils import formatdate

from .base import FakeProviderServer, FakeRequest, FakeResponse, run_standalone

HTTP_STATUS = {20003: 401, 20429: 429, 20500: 500}
FAILED_CODES = {30001, 30002, 30034}
FINAL_BY_INDEX = ["delivered", "read", "failed", "canceled", "partially_delivered", "undelivered"]
_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<sid>[^/]+)/(?P<rest>.+)$")


def sign(auth_token: str, url: str, params: dict) -> str:
    """X-Twilio-Signature of a form POST (params: name -> value or list of values)."""
    payload = url
    for name in sorted(params):
        values = params[name] if isinstance(params[name], list) else [params[name]]
        for value in sorted(values):
            payload += name + value
    return base64.b64encode(hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()).decode()


class FakeTwilio(FakeProviderServer):
    slug = "twilio"

    def __init__(self, *args, account_sid="AC" + "0" * 32, auth_token="test-auth-token", balance="12.34", **kwargs):
        super().__init__(*args, **kwargs)
        self.account_sid, self.auth_token, self.balance = account_sid, auth_token, str(balance)
        self.messages: dict[str, dict] = {}
        self._ids = itertools.count(1)
        self._id_lock = threading.Lock()

    @property
    def credentials(self) -> dict:
        return {"account_sid": self.account_sid, "auth_token": self.auth_token}

    def handle(self, request: FakeRequest) -> FakeResponse:
        match = _PATH.match(request.path)
        if not self._authorised(request) or not match or match["sid"] != self.account_sid:
            return self._error(20003, "Authenticate")
        rest = match["rest"]
        if rest == "Messages.json" and request.method == "POST":
            return self._send(request)
        if rest == "Messages.json" and request.method == "GET":
            return self._list(request)
        if rest.startswith("Messages/") and rest.endswith(".json") and request.method == "GET":
            with self.lock:
                message = self.messages.get(rest[len("Messages/"):-len(".json")])
            if message is None:
                return self._error(20404, "The requested resource was not found", status=404)
            return FakeResponse(200, dict(message))
        if rest == "Balance.json" and request.method == "GET":
            return FakeResponse(200, {"account_sid": self.account_sid, "balance": self.balance, "currency": "USD"})
        return self._error(20404, "The requested resource was not found", status=404)

    def _list(self, request: FakeRequest) -> FakeResponse:
        """One page of the account's messages, newest first (Twilio's order), optionally filtered."""
        try:
            size = max(1, min(1000, int(request.value("PageSize") or 50)))
        except ValueError:
            return self._error(20001, "Invalid PageSize")
        to, sender = request.value("To"), request.value("From")
        with self.lock:
            found = [dict(m) for m in reversed(self.messages.values())
                     if (not to or m["to"] == to) and (not sender or m["from"] == sender)]
        return FakeResponse(200, {"messages": found[:size], "page": 0, "page_size": size, "start": 0,
                                  "end": max(0, min(size, len(found)) - 1), "next_page_uri": None,
                                  "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"})

    def server_error(self, request):
        return self._error(20500, "Internal Server Error")

    def _authorised(self, request: FakeRequest) -> bool:
        header = request.headers.get("authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, token = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return user == self.account_sid and token == self.auth_token

    @staticmethod
    def _error(code: int, message: str, status: int | None = None) -> FakeResponse:
        status = status or HTTP_STATUS.get(code, 400)
        headers = {"Retry-After": "1"} if status == 429 else {}
        return FakeResponse(status, {"code": code, "message": message, "status": status,
                                     "more_info": f"https://www.twilio.com/docs/errors/{code}"}, headers=headers)

    def _send(self, request: FakeRequest) -> FakeResponse:
        to, body = request.value("To", ""), request.value("Body", "")
        sender, service = request.value("From", ""), request.value("MessagingServiceSid", "")
        if not to:
            return self._error(21604, "A 'To' phone number is required.")
        if not body:
            return self._error(21602, "Message body is required.")
        if len(body) > 1600:
            return self._error(21617, "The concatenated message body exceeds the 1600 character limit.")
        if not sender and not service:
            return self._error(21603, "A 'From' or 'MessagingServiceSid' parameter is required.")
        callback = request.value("StatusCallback")
        if callback and not callback.startswith(("http://", "https://")):
            return self._error(21609, "Invalid StatusCallback")
        digits = to.lstrip("+")
        if digits.startswith("790000") and digits[6:] != "99999":
            return self._error(int(digits[6:]), f"fake error {digits[6:]}")
        plan = self._plan(digits)
        with self._id_lock:
            sid = f"SM{next(self._ids):032x}"
        now = formatdate(usegmt=True).replace("GMT", "+0000")
        segments = 1 if len(body) <= 70 else -(-len(body) // 67)
        message = {"sid": sid, "account_sid": self.account_sid, "messaging_service_sid": service or None,
                   "from": sender or None, "to": to, "body": body, "status": "accepted" if service else "queued",
                   "num_segments": str(segments), "num_media": "0", "direction": "outbound-api",
                   "api_version": "2010-04-01", "price": None, "price_unit": "USD", "error_code": None,
                   "error_message": None, "date_created": now, "date_sent": None, "date_updated": now,
                   "validity_period": request.value("ValidityPeriod"),
                   "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
                   "subresource_uris": {"media": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}/Media.json"}}
        with self.lock:
            self.messages[sid] = message
        self.record_message(sid, to, body, sender=sender or service)
        first, second = self.status_delays
        for index, (status, error_code) in enumerate(plan):
            self.later(first + second * index, self._move, sid, status, error_code, callback)
        if digits == "79000099999":
            return FakeResponse(drop_connection=True)
        return FakeResponse(201, dict(message))

    @staticmethod
    def _plan(digits: str) -> list[tuple[str, int | None]]:
        """The statuses a message goes through after `queued`, with their ErrorCode."""
        if digits.startswith("790001"):
            code = int(digits[6:])
            return [("sent", None), ("failed" if code in FAILED_CODES else "undelivered", code)]
        if digits == "79000200099":
            return [("delivered", None), ("sent", None), ("delivered", None)]
        if digits.startswith("7900020000"):
            final = FINAL_BY_INDEX[int(digits[-1]) % len(FINAL_BY_INDEX)]
            return [("sent", None), (final, 30008 if final in ("failed", "undelivered") else None)]
        return [("sent", None), ("delivered", None)]

    def _move(self, sid, status, error_code, callback_url):
        with self.lock:
            message = self.messages[sid]
            rank = ["accepted", "queued", "sending", "sent"]
            if not (status in rank and message["status"] not in rank):  # the resource never goes back
                message.update(status=status, error_code=error_code, price="-0.0500" if status != "queued" else None,
                               date_updated=formatdate(usegmt=True).replace("GMT", "+0000"))
            snapshot = dict(message)
        if not callback_url:
            return
        params = {"MessageSid": sid, "SmsSid": sid, "MessageStatus": status, "SmsStatus": status,
                  "AccountSid": self.account_sid, "From": snapshot["from"] or "", "To": snapshot["to"],
                  "ApiVersion": "2010-04-01"}
        if snapshot["messaging_service_sid"]:
            params["MessagingServiceSid"] = snapshot["messaging_service_sid"]
        if error_code:
            params["ErrorCode"] = str(error_code)
        if status in ("delivered", "undelivered"):
            params["RawDlrDoneDate"] = "2401011201"
        self.post_callback(callback_url, data=params,
                           headers={"X-Twilio-Signature": sign(self.auth_token, callback_url, params),
                                    "I-Twilio-Idempotency-Token": f"{sid}-{status}"})


if __name__ == "__main__":
    run_standalone(FakeTwilio)
