"""Fake SMS.ru (https://sms.ru/api): /sms/send, /sms/status, /my/balance, /callback/add|get|del,
with `json=1` replies, and signed, batched delivery-report callbacks.

Magic recipients (valid Russian mobile numbers):
  +7900000 0XXX  -> the send fails with code XXX (request-level for 200/201/206/210-212/220/300-302/500,
                    per recipient otherwise), e.g. +79000000207 = "no route";
  +7900000 0999  -> the connection is dropped without an answer (the SMS counts as sent);
  +7900000 1XXX  -> accepted, then the status becomes XXX (e.g. +79000001104 ends "expired");
  anything else  -> accepted, 100 -> 102 -> 103 (delivered) on a timer.

Callbacks go to every registered URL (`/callback/add`, or `callback_url=`): records that change
within `callback_batch_window` seconds travel in one POST (`data[]` several times, plus `hash` =
sha256(api_id + records)); a handler that does not answer `100` gets the batch again, up to
`callback_attempts` times.
"""

import hashlib
import itertools
import threading
import time

from .base import FakeProviderServer, FakeRequest, FakeResponse, run_standalone

REQUEST_LEVEL = {200, 201, 206, 210, 211, 212, 220, 300, 301, 302, 500}


class FakeSmsRu(FakeProviderServer):
    slug = "smsru"

    def __init__(self, *args, api_id="test-api-id", balance=4122.56, callback_batch_window=0.02,
                 callback_attempts=3, callback_retry_delay=0.2, **kwargs):
        super().__init__(*args, **kwargs)
        self.api_id = api_id
        self.balance = float(balance)
        self.callback_batch_window = float(callback_batch_window)
        self.callback_attempts = int(callback_attempts)
        self.callback_retry_delay = float(callback_retry_delay)
        self.messages: dict[str, dict] = {}  # sms_id -> {"to", "msg", "from", "status_code"}
        self._ids = itertools.count(10000000)
        self._id_lock = threading.Lock()
        self._outbox: list[str] = []  # callback records waiting for the next batch

    @property
    def credentials(self) -> dict:
        return {"api_id": self.api_id}

    # --- protocol -----------------------------------------------------------------------------------
    def handle(self, request: FakeRequest) -> FakeResponse:
        if request.method != "POST":
            return self._error(210, "Используется GET, где необходимо использовать POST")
        if request.value("api_id") != self.api_id:
            return self._error(200, "Неправильный api_id")
        if request.path == "/sms/send":
            return self._send(request)
        if request.path == "/sms/status":
            return self._status(request)
        if request.path == "/my/balance":
            return FakeResponse(200, {"status": "OK", "status_code": 100, "balance": self.balance})
        if request.path == "/callback/add":
            url = request.value("url", "")
            if not url.startswith(("http://", "https://")):
                return self._error(901, "Неправильный URL")
            with self.lock:
                if url not in self.callback_urls:
                    self.callback_urls.append(url)
            return self._callbacks()
        if request.path == "/callback/get":
            return self._callbacks()
        if request.path == "/callback/del":
            with self.lock:
                self.callback_urls[:] = [u for u in self.callback_urls if u != request.value("url")]
            return self._callbacks()
        return self._error(211, "Метод не найден")

    def server_error(self, request):
        return FakeResponse(503, "<html><body>503 Service Temporarily Unavailable</body></html>")

    @staticmethod
    def _error(code, text):
        return FakeResponse(200, {"status": "ERROR", "status_code": code, "status_text": text})

    def _callbacks(self):
        with self.lock:
            return FakeResponse(200, {"status": "OK", "status_code": 100, "callback": list(self.callback_urls)})

    def _send(self, request: FakeRequest) -> FakeResponse:
        to, msg = request.value("to", ""), request.value("msg") or request.value("text") or ""
        if not msg:
            return self._error(203, "Нет текста сообщения")
        magic = to[-4:] if to.startswith("7900000") else ""
        if magic == "0999":
            self._accept(to, msg, request, final=None)
            return FakeResponse(drop_connection=True)
        if magic.startswith("0"):
            code = int(magic[1:])
            if code in REQUEST_LEVEL:
                return self._error(code, f"fake error {code}")
            return FakeResponse(200, {"status": "OK", "status_code": 100, "balance": self.balance, "sms": {
                to: {"status": "ERROR", "status_code": code, "status_text": f"fake error {code}"}}})
        final = int(magic[1:]) if magic.startswith("1") else 103
        sms_id = self._accept(to, msg, request, final=final)
        return FakeResponse(200, {"status": "OK", "status_code": 100, "balance": self.balance,
                                  "sms": {to: {"status": "OK", "status_code": 100, "sms_id": sms_id, "cost": "3.50"}}})

    def _accept(self, to, msg, request, *, final):
        with self._id_lock:
            sms_id = f"000000-{next(self._ids):08d}"
        with self.lock:
            self.messages[sms_id] = {"to": to, "msg": msg, "from": request.value("from"), "status_code": 100}
        self.record_message(sms_id, to, msg, sender=request.value("from") or "")
        if final is not None:
            first, second = self.status_delays
            self.later(first, self._move, sms_id, 102)
            self.later(first + second, self._move, sms_id, final)
        return sms_id

    def _move(self, sms_id, code):
        with self.lock:
            self.messages[sms_id]["status_code"] = code
            if not self.callback_urls:
                return
            start_batch = not self._outbox
            self._outbox.append(f"sms_status\n{sms_id}\n{code}\n{int(time.time())}")
        if start_batch:
            self.later(self.callback_batch_window, self._flush)

    def _flush(self):
        with self.lock:
            records, self._outbox = self._outbox, []
            urls = list(self.callback_urls)
        for url in urls:
            self._deliver(url, records, 1)

    def _deliver(self, url, records, attempt):
        response = self.post_callback(url, data={"data[]": records, "hash": self.sign(records)})
        if (response is None or response.text.strip() != "100") and attempt < self.callback_attempts:
            self.later(self.callback_retry_delay, self._deliver, url, records, attempt + 1)

    def sign(self, records: list[str]) -> str:
        return hashlib.sha256((self.api_id + "".join(records)).encode()).hexdigest()

    def _status(self, request: FakeRequest) -> FakeResponse:
        ids = [i for i in (request.value("sms_id") or "").split(",") if i]
        reply = {}
        with self.lock:
            for sms_id in ids:
                message = self.messages.get(sms_id)
                if message is None:
                    reply[sms_id] = {"status": "ERROR", "status_code": -1, "status_text": "Сообщение не найдено"}
                else:
                    reply[sms_id] = {"status": "OK", "status_code": message["status_code"], "cost": 3.5}
        return FakeResponse(200, {"status": "OK", "status_code": 100, "sms": reply})

    # --- for assertions -------------------------------------------------------------------------------
    def sent_to(self, phone_digits: str) -> list[dict]:
        with self.lock:
            return [m for m in self.messages.values() if m["to"] == phone_digits]


if __name__ == "__main__":
    run_standalone(FakeSmsRu)
