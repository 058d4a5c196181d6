"""Fake Devino Telecom REST v2 without sessions (https://integrationapi.net/rest/v2):
POST /rest/v2/Sms/Send, GET /rest/v2/Sms/State, GET /rest/v2/User/Balance.

`Login`/`Password` on every call (query or form). Success of a send is a JSON array with one id per
SMS part; errors are `{"Code", "Desc"}` with the HTTP status of Devino's table. No callbacks: this
API has none.

Magic recipients:
  +7900000000N   -> the send fails with Code N (1, 2, 5, 6, 7, 8, 9; 4 comes from bad credentials);
  +79000000999   -> accepted, then the connection is dropped without an answer;
  +7900000 1NNN  -> accepted, then the State becomes NNN - 100 (e.g. +79000001146 -> 46 expired,
                    +79000001002 -> -98 stopped);
  anything else  -> accepted, State -2 -> -1 -> 0 (delivered) on a timer.
Texts over 70 UCS-2 / 160 GSM characters get one id per part ("SAR-GW01+7...-<hex>-<n>-<i>").
"""

import itertools
import threading
import time

from .base import FakeProviderServer, FakeRequest, FakeResponse, run_standalone

ERRORS = {
    1: (400, "Argument cannot be null or empty"),
    2: (400, "Invalid argument: DestinationAddress"),
    4: (401, "Invalid user login or password"),
    5: (403, "Not enough credits"),
    6: (400, "Invalid source address"),
    7: (403, "Forbidden"),
    8: (500, "Gateway error"),
    9: (500, "Internal server error"),
}
STATE_TEXT = {-2: "В очереди", -1: "Отправлено", 0: "Доставлено", 46: "Просрочено", 255: "Неизвестный"}


class FakeDevino(FakeProviderServer):
    slug = "devino"

    def __init__(self, *args, login="test-login", password="test-password", balance=20015.3, **kwargs):
        super().__init__(*args, **kwargs)
        self.login, self.password, self.balance = login, password, float(balance)
        self.segments: dict[str, dict] = {}  # segment id -> {"state", ...}
        self._ids = itertools.count(0x261BBD6B3)
        self._id_lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"{self.url}/rest/v2"

    @property
    def credentials(self) -> dict:
        return {"login": self.login, "password": self.password}

    def handle(self, request: FakeRequest) -> FakeResponse:
        if request.value("Login") != self.login or request.value("Password") != self.password:
            return self._error(4)
        path = request.path.lower()
        if path == "/rest/v2/sms/send" and request.method == "POST":
            return self._send(request)
        if path == "/rest/v2/sms/state":
            message_id = request.value("messageId") or request.value("messageID")
            if not message_id:
                return FakeResponse(400, {"Code": 1, "Desc": "MessageID can not be null or empty"})
            with self.lock:
                segment = self.segments.get(message_id)
            state = segment["state"] if segment else 255
            return FakeResponse(200, {"State": state, "CreationDateUtc": None, "SubmittedDateUtc": None,
                                      "ReportedDateUtc": None, "TimeStampUtc": f"/Date({int(time.time() * 1000)})/",
                                      "StateDescription": STATE_TEXT.get(state, ""), "Price": 1.5 if segment else None})
        if path == "/rest/v2/user/balance":
            return FakeResponse(200, self.balance)
        return FakeResponse(404, {"Code": 1, "Desc": "Not found"})

    def server_error(self, request):
        return self._error(9)

    @staticmethod
    def _error(code):
        status, text = ERRORS[code]
        return FakeResponse(status, {"Code": code, "Desc": text})

    def _send(self, request: FakeRequest) -> FakeResponse:
        to = (request.value("DestinationAddress") or "").lstrip("+")
        text, sender = request.value("Data") or "", request.value("SourceAddress") or ""
        if not to or not text or not sender:
            return self._error(1)
        magic = to[-4:] if to.startswith("7900000") else ""
        if magic.startswith("000") and int(magic[3]) in ERRORS and magic[3] != "4":
            return self._error(int(magic[3]))
        parts = 1 if len(text) <= 70 else -(-len(text) // 67)
        with self._id_lock:
            base = next(self._ids)
        ids = [f"GW0{base:X}"] if parts == 1 else [f"SAR-GW01+{to}-{base:x}-{parts}-{i}" for i in range(1, parts + 1)]
        with self.lock:
            for segment_id in ids:
                self.segments[segment_id] = {"state": -2, "to": to, "validity": request.value("Validity")}
        self.record_message(ids[0], to, text, sender=sender)
        final = int(magic[1:]) - 100 if magic.startswith("1") else 0
        first, second = self.status_delays
        self.later(first, self._move, ids, -1)
        self.later(first + second, self._move, ids, final)
        if magic == "0999":
            return FakeResponse(drop_connection=True)
        return FakeResponse(200, ids)

    def _move(self, ids, state):
        with self.lock:
            for segment_id in ids:
                self.segments[segment_id]["state"] = state


if __name__ == "__main__":
    run_standalone(FakeDevino)
