"""The HTTP seam's clients: one per thread (no pool shared by many sending threads), reused within
a thread, and kept apart by read timeout. Real HTTP to a local fake."""

import threading

from deliveries.providers.http import default_client
from tests.fakes.smsru import FakeSmsRu


def test_a_thread_reuses_its_client_and_its_connection():
    with FakeSmsRu() as fake:
        client = default_client(5.0)
        assert default_client(5.0) is client
        assert default_client(7.0) is not client  # another read timeout, another client
        for _ in range(3):
            assert client.request("GET", f"{fake.url}/my/balance", params={"api_id": "x", "json": 1}).status_code == 200
        # Three requests, one keep-alive connection: the fake saw one client port.
        assert len({r.client_port for r in fake.requests_to("/my/balance")}) == 1


def test_each_thread_has_its_own_client():
    mine = default_client(5.0)
    theirs = []
    worker = threading.Thread(target=lambda: theirs.append(default_client(5.0)))
    worker.start()
    worker.join()
    assert theirs[0] is not mine and default_client(5.0) is mine
