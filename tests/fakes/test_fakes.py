"""The fake providers themselves: fault injection, the record of received messages, running standalone."""

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import eventually
from tests.e2e.stack import free_port
from tests.fakes.registry import FAKES
from tests.fakes.smsru import FakeSmsRu

CLIENT = httpx.Client(timeout=5)  # one client: creating one per request costs ~0.1 s


def send(fake, to="79123456789", text="hello"):
    return CLIENT.post(f"{fake.url}/sms/send", data={"api_id": fake.api_id, "json": "1", "to": to, "msg": text})


def test_error_rate_answers_5xx_and_receives_nothing():
    with FakeSmsRu(error_rate=1.0) as fake:
        assert send(fake).status_code == 503
        assert fake.received == [] and fake.faults["error"] == 1


def test_drop_rate_receives_the_message_and_answers_nothing():
    with FakeSmsRu(drop_rate=1.0) as fake:
        with pytest.raises(httpx.HTTPError):
            send(fake)
        assert [m.text for m in fake.received] == ["hello"] and fake.faults["drop"] == 1


def test_faults_hit_about_the_configured_fraction_reproducibly():
    outcomes = []
    for _ in range(2):
        with FakeSmsRu(error_rate=0.2, drop_rate=0.1, seed=7) as fake:
            for i in range(100):
                try:
                    send(fake, text=f"m{i}")
                except httpx.HTTPError:
                    pass
            outcomes.append((fake.faults["error"], fake.faults["drop"], len(fake.received)))
    assert outcomes[0] == outcomes[1]  # same seed, same faults
    errors, drops, received = outcomes[0]
    assert 10 <= errors <= 30 and 3 <= drops <= 20 and received == 100 - errors


def test_fault_paths_limit_the_faults():
    with FakeSmsRu(error_rate=1.0, fault_paths=["/sms/send"]) as fake:
        assert send(fake).status_code == 503
        balance = httpx.post(f"{fake.url}/my/balance", data={"api_id": fake.api_id, "json": "1"})
        assert balance.json()["status"] == "OK"


def test_duplicates_are_found():
    with FakeSmsRu() as fake:
        send(fake, text="code 1")
        send(fake, text="code 1")
        send(fake, text="code 2")
        assert fake.duplicates() == {("79123456789", "code 1"): 2}


def test_latency_delays_the_answer():
    with FakeSmsRu(latency=0.2) as fake:
        started = time.monotonic()
        send(fake)
        assert time.monotonic() - started >= 0.2


def test_smsru_resends_a_callback_until_the_handler_says_100():
    answers = []

    class Handler(FakeSmsRu):  # a second fake stands in for our webhook: first "error", then "100"
        def handle(self, request):
            from tests.fakes.base import FakeResponse

            answers.append(request.form["data[]"])
            return FakeResponse(200, "100" if len(answers) > 1 else "error")

    with Handler() as webhook, FakeSmsRu(status_delays=(0.01, 0.01), callback_retry_delay=0.01,
                                         callback_url=f"{webhook.url}/hook") as fake:
        send(fake)
        eventually(lambda: len(answers) >= 2 and len(fake.callbacks) >= 2)
        assert answers[0] == answers[1] and len(answers[0]) == 2  # the batch of 102 and 103, sent again
        assert [c.body for c in fake.callbacks] == ["error", "100"]


@pytest.mark.parametrize("slug", sorted(FAKES))
def test_every_fake_runs_standalone(slug):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", f"tests.fakes.{slug}", "--port", str(port), "--latency", "0",
                                "--error-rate", "0", "--drop-rate", "0", "--seed", "1", "--status-delays", "0.1,0.1"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
                               start_new_session=True)
    try:
        line = process.stdout.readline()
        assert f"listening on http://127.0.0.1:{port}" in line, line
        assert "credentials" in process.stdout.readline()
        # Any request gets a protocol answer (unauthenticated here), not a connection error.
        response = httpx.post(f"http://127.0.0.1:{port}/", data={}, timeout=5)
        assert 200 <= response.status_code < 500
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)
