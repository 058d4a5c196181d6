"""Fake SMS Aero v2 (https://gate.smsaero.ru/v2/): /v2/sms/send, /v2/sms/status, /v2/balance, /v2/auth.

HTTP Basic auth `email:api_key`; JSON or form bodies; replies `{"success", "data", "message"}`.
The HTTP status of errors and the callback body are not public ([?] in the reference): this fake
answers 401 for bad credentials, 400 for refusals and POSTs the `sms/status` object as JSON to the
message's `callbackUrl` (unsigned).

Magic recipients:
  +79000000001  -> legacy `{"result": "no credits"}`
  +79000000002  -> legacy `{"result": "reject", "reason": ...}`
  +79000000003  -> 400 "Validation error: invalid number" (invalid recipient)
  +79000000004  -> 400 "Sign is not approved" (sender rejected)
  +79000000005  -> 402 "Insufficient funds on the balance"
  +79000000006  -> 429 "Too many requests" with Retry-After
  +79000000007  -> 500
  +79000000008  -> 400 "Text contains forbidden words (spam)" (content rejected)
  +79000000009  -> 400 "Unknown parameter" (bad request)
  +79000000999  -> accepted, then the connection is dropped without an answer
  +7900000 1NNN -> accepted, then the status becomes NNN - 100 (e.g. +79000001102 -> 2 undelivered)
  anything else -> accepted, 0 (queue) -> 3 (operator) -> 1 (delivered) on a timer.
"""

import base64
import itertools
import threading
import time

from .base import FakeProviderServer, FakeRequest, FakeResponse, run_standalone

EXTEND_STATUS = {0: "queue", 1: "delivery", 2: "delivery failure", 3: "smsc submit", 4: "smsc reject",
                 6: "reject", 8: "moderation"}
MAGIC_ERRORS = {
    "0001": FakeResponse(200, {"result": "no credits"}),
    "0002": FakeResponse(200, {"result": "reject", "reason": "Number is in the blacklist"}),
    "0003": FakeResponse(400, {"success": False, "data": None, "message": "Validation error: invalid number"}),
    "0004": FakeResponse(400, {"success": False, "data": None, "message": "Sign is not approved"}),
    "0005": FakeResponse(402, {"success": False, "data": None, "message": "Insufficient funds on the balance"}),
    "0006": FakeResponse(429, {"success": False, "data": None, "message": "Too many requests"},
                         headers={"Retry-After": "2"}),
    "0007": FakeResponse(500, {"success": False, "data": None, "message": "Internal server error"}),
    "0008": FakeResponse(400, {"success": False, "data": None, "message": "Text contains forbidden words (spam)"}),
    "0009": FakeResponse(400, {"success": False, "data": None, "message": "Unknown parameter: dateSend"}),
}


class FakeSmsAero(FakeProviderServer):
    slug = "smsaero"

    def __init__(self, *args, email="test@example.com", api_key="a" * 32, balance=337.03, **kwargs):
        super().__init__(*args, **kwargs)
        self.email, self.api_key, self.balance = email, api_key, float(balance)
        self.messages: dict[int, dict] = {}
        self._ids = itertools.count(12345)
        self._id_lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"{self.url}/v2"

    @property
    def credentials(self) -> dict:
        return {"email": self.email, "api_key": self.api_key}

    def handle(self, request: FakeRequest) -> FakeResponse:
        if not self._authorised(request):
            return FakeResponse(401, {"success": False, "data": None,
                                      "message": "Your request was made with invalid credentials."})
        params = self._params(request)
        if request.path == "/v2/auth":
            return self._ok(None)
        if request.path == "/v2/balance":
            return self._ok({"balance": self.balance})
        if request.path == "/v2/sms/send":
            return self._send(params)
        if request.path == "/v2/sms/status":
            with self.lock:
                message = self.messages.get(int(params.get("id") or 0))
            if message is None:
                return FakeResponse(404, {"success": False, "data": None, "message": "Not found"})
            return self._ok(dict(message))
        return FakeResponse(404, {"success": False, "data": None, "message": "Not found"})

    def server_error(self, request):
        return FakeResponse(503, {"success": False, "data": None, "message": "Service unavailable"})

    def _authorised(self, request: FakeRequest) -> bool:
        header = request.headers.get("authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, key = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return user == self.email and key == self.api_key

    @staticmethod
    def _params(request: FakeRequest) -> dict:
        if request.headers.get("content-type", "").startswith("application/json"):
            data = request.json()
            return data if isinstance(data, dict) else {}
        return {k: v[-1] for k, v in {**request.query, **request.form}.items()}

    @staticmethod
    def _ok(data):
        return FakeResponse(200, {"success": True, "data": data, "message": None})

    def _send(self, params: dict) -> FakeResponse:
        number, text = str(params.get("number") or ""), str(params.get("text") or "")
        if not number or not text:
            return FakeResponse(400, {"success": False, "data": None, "message": "Validation error: text is empty"})
        magic = number[-4:] if number.startswith("7900000") else ""
        if magic in MAGIC_ERRORS:
            return MAGIC_ERRORS[magic]
        with self._id_lock:
            message_id = next(self._ids)
        now = int(time.time())
        message = {"id": message_id, "from": params.get("sign") or "SMS Aero", "number": number, "text": text,
                   "status": 0, "extendStatus": "queue", "channel": "FREE SIGN", "cost": 5.49,
                   "dateCreate": now, "dateSend": now}
        with self.lock:
            self.messages[message_id] = message
        self.record_message(message_id, number, text, sender=message["from"])
        final = int(magic[1:]) - 100 if magic.startswith("1") else 1
        first, second = self.status_delays
        callback = params.get("callbackUrl")
        self.later(first, self._move, message_id, 3, callback)
        self.later(first + second, self._move, message_id, final, callback)
        if magic == "0999":
            return FakeResponse(drop_connection=True)
        return self._ok(dict(message))

    def _move(self, message_id, status, callback_url):
        with self.lock:
            message = self.messages[message_id]
            message.update(status=status, extendStatus=EXTEND_STATUS.get(status, ""), dateAnswer=int(time.time()))
            snapshot = dict(message)
        if callback_url:
            self.post_callback(callback_url, json=snapshot)


if __name__ == "__main__":
    run_standalone(FakeSmsAero)
