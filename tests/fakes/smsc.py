"""Fake SMSC.ru (https://smsc.ru/api/http/): /sys/send.php, /sys/status.php, /sys/balance.php, `fmt=3`.

Auth: `login` + `psw` (or `apikey`). Without `charset=utf-8` the body is read as windows-1251, as
SMSC does. An identical send (same phones and text) within `duplicate_window` seconds is refused
with error 9, as SMSC does; the client's `id` becomes the message id.

Magic recipients:
  +7900000000N   -> the send fails with error_code N (1..9; 3, 6, 7, 8 also carry the id);
  +79000000999   -> accepted, then the connection is dropped without an answer;
  +7900000 1NNN  -> accepted, then the status becomes NNN - 100 (e.g. +79000001101 -> 1 delivered,
                    +79000001120 -> 20 undeliverable, +79000001098 -> -2 stopped);
  anything else  -> accepted, -1 -> 0 -> 1 (delivered) on a timer.

Status callbacks [?]: SMSC's handler parameters are not public; this fake POSTs form fields `id`,
`phone`, `status`, `err`, `ts` to each `callback_url` (an account setting at SMSC), unsigned.
"""

import itertools
import threading
import time
from urllib.parse import parse_qs

from .base import FakeProviderServer, FakeRequest, FakeResponse, run_standalone

ERROR_TEXTS = {
    1: "parameters error", 2: "invalid login or password", 3: "no money on the account",
    4: "IP address temporarily blocked", 5: "invalid date format", 6: "message is prohibited",
    7: "invalid phone number format", 8: "message to the specified number cannot be delivered",
    9: "duplicate request, wait a minute",
}


class FakeSmsc(FakeProviderServer):
    slug = "smsc"

    def __init__(self, *args, login="test-login", password="test-password", balance="1234.50",
                 duplicate_window=60.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.login, self.password, self.balance = login, password, str(balance)
        self.duplicate_window = float(duplicate_window)
        self.messages: dict[tuple[str, str], dict] = {}  # (id, phone digits) -> message
        self._recent: dict[tuple[str, str], float] = {}  # (phones, text) -> when
        self._ids = itertools.count(1000)
        self._id_lock = threading.Lock()

    @property
    def credentials(self) -> dict:
        return {"login": self.login, "password": self.password}

    def handle(self, request: FakeRequest) -> FakeResponse:
        params = self._params(request)
        if not ((params.get("login") == self.login and params.get("psw") == self.password)
                or (params.get("apikey") == self.password and not params.get("login"))):
            return self._error(2)
        if request.path == "/sys/send.php":
            return self._send(params)
        if request.path == "/sys/status.php":
            return self._status(params)
        if request.path == "/sys/balance.php":
            reply = {"balance": self.balance}
            if params.get("cur") == "1":
                reply["currency"] = "RUR"
            return FakeResponse(200, reply)
        return self._error(1)

    def server_error(self, request):
        return FakeResponse(502, "<html><body>502 Bad Gateway</body></html>")

    @staticmethod
    def _params(request: FakeRequest) -> dict:
        """Query and form, decoded as SMSC would: windows-1251 unless `charset=utf-8`."""
        raw = request.body.decode("ascii", "replace") if request.body else ""
        charset = (parse_qs(raw).get("charset") or request.query.get("charset") or [""])[-1].lower()
        encoding = "utf-8" if charset == "utf-8" else "cp1251"
        values = {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True, encoding=encoding).items()}
        return {**{k: v[-1] for k, v in request.query.items()}, **values}

    @staticmethod
    def _error(code, message_id=None):
        body = {"error": ERROR_TEXTS.get(code, "error"), "error_code": code}
        if message_id is not None and code in (3, 6, 7, 8):
            body["id"] = message_id
        return FakeResponse(200, body)

    def _send(self, params: dict) -> FakeResponse:
        phones, text = params.get("phones", ""), params.get("mes", "")
        if not phones or not text:
            return self._error(1)
        digits = phones.lstrip("+")
        message_id = params.get("id") or str(next(self._ids))
        magic = digits[-4:] if digits.startswith("7900000") else ""
        if magic.startswith("000") and magic[3].isdigit() and int(magic[3]) in ERROR_TEXTS:
            return self._error(int(magic[3]), message_id)
        now = time.monotonic()
        with self._id_lock:
            last = self._recent.get((phones, text))
            if last is not None and now - last < self.duplicate_window:
                return self._error(9)
            self._recent[(phones, text)] = now
        final = int(magic[1:]) - 100 if magic.startswith("1") else 1
        with self.lock:
            self.messages[(message_id, digits)] = {"id": message_id, "phone": digits, "mes": text,
                                                   "sender": params.get("sender", ""), "status": -1, "err": 0,
                                                   "valid": params.get("valid", ""), "last_timestamp": int(time.time())}
        self.record_message(message_id, digits, text, sender=params.get("sender", ""), reference=params.get("id", ""))
        first, second = self.status_delays
        self.later(first, self._move, message_id, digits, 0)
        self.later(first + second, self._move, message_id, digits, final)
        if magic == "0999":
            return FakeResponse(drop_connection=True)
        parts = 1 if len(text) <= 70 else -(-len(text) // 67)
        reply = {"id": message_id, "cnt": parts}
        if params.get("cost") in ("2", "3"):
            reply["cost"] = f"{1.4 * parts:.2f}"
        if params.get("cost") == "3":
            reply["balance"] = self.balance
        return FakeResponse(200, reply)

    def _move(self, message_id, digits, status):
        with self.lock:
            message = self.messages[(message_id, digits)]
            message.update(status=status, last_timestamp=int(time.time()), err=1 if status in (20, 22) else 0)
            fields = {"id": message_id, "phone": digits, "status": str(status), "err": str(message["err"]),
                      "ts": str(message["last_timestamp"])}
            urls = list(self.callback_urls)
        for url in urls:
            self.post_callback(url, data=fields)

    def _status(self, params: dict) -> FakeResponse:
        ids = [i for i in params.get("id", "").split(",") if i]
        phones = [p.lstrip("+") for p in params.get("phone", "").split(",") if p]
        if not ids or len(ids) != len(phones):
            return self._error(1)
        items = []
        with self.lock:
            for message_id, digits in zip(ids, phones, strict=True):
                message = self.messages.get((message_id, digits))
                if message is None:
                    items.append({"id": message_id, "phone": digits, "status": -3})
                    continue
                item = {"id": message_id, "phone": digits, "status": message["status"],
                        "last_timestamp": message["last_timestamp"], "err": message["err"]}
                if params.get("all") in ("1", "2"):
                    item.update(send_timestamp=message["last_timestamp"], sender_id=message["sender"],
                                message=message["mes"])
                items.append(item)
        list_format = params.get("id", "").endswith(",") or len(ids) > 1
        return FakeResponse(200, items if list_format else {k: v for k, v in items[0].items() if k != "id"})

    # --- for assertions ---------------------------------------------------------------------------
    def sent_to(self, phone_digits: str) -> list[dict]:
        with self.lock:
            return [m for m in self.messages.values() if m["phone"] == phone_digits]


if __name__ == "__main__":
    run_standalone(FakeSmsc)
