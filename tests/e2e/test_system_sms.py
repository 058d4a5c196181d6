"""End to end: a real form POST to gunicorn → PostgreSQL → Redis → a Celery worker → fake SMS.ru."""

import httpx
import pytest

from deliveries.models import Delivery, DeliveryStatus
from tests.fakes.smsru import FakeSmsRu

from .stack import wait_for

pytestmark = pytest.mark.e2e


def test_system_sms_goes_from_amocrm_to_the_provider(stack, smsru_route, make_token):
    with FakeSmsRu(status_delays=(0.05, 0.05)) as fake:
        stack.env["SMSGATE_PROVIDER_BASE_URLS"] = f"smsru={fake.url}"
        smsru_route(sender="ACME")
        stack.start_web()
        stack.start_worker()

        response = httpx.post(f"{stack.web_url}/amocrm/sms",
                              data={"phone": "+7 912 345-67-89", "text": "Код для входа: 834622",
                                    "token": make_token()}, timeout=10)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        body = response.json()
        assert body["status"] == "pending"

        wait_for(lambda: Delivery.objects.get(pk=body["id"]).status == DeliveryStatus.SENT, 30,
                 f"not sent; worker log:\n{stack.processes[-1].log()}")
        delivery = Delivery.objects.get(pk=body["id"])
        assert delivery.provider == "smsru" and delivery.provider_message_id
        [message] = fake.sent_to("79123456789")
        assert message["msg"] == "Код для входа: 834622" and message["from"] == "ACME"
        worker_log = stack.processes[-1].log()
        assert "834622" not in worker_log and "+79123456789" not in worker_log
        # One line per SMS, with the ids to follow it (Celery's own per-task lines are off).
        [sent_line] = [line for line in worker_log.splitlines() if "delivery sent" in line]
        assert f"delivery_id={body['id']}" in sent_line and "provider=smsru" in sent_line
        assert "succeeded in" not in worker_log


def test_replay_and_bad_token_over_real_http(stack, smsru_route, make_token):
    with FakeSmsRu() as fake:
        stack.env["SMSGATE_PROVIDER_BASE_URLS"] = f"smsru={fake.url}"
        smsru_route()
        stack.start_web()
        stack.start_worker()
        token = make_token()
        first = httpx.post(f"{stack.web_url}/amocrm/sms/", data={"phone": "+79123456789", "text": "1", "token": token})
        second = httpx.post(f"{stack.web_url}/amocrm/sms", data={"phone": "+79123456789", "text": "1", "token": token})
        assert first.status_code == second.status_code == 200
        assert first.json()["id"] == second.json()["id"]
        forged = httpx.post(f"{stack.web_url}/amocrm/sms", data={"phone": "+79123456789", "text": "1",
                                                                  "token": make_token(secret="x" * 64)})
        assert forged.status_code == 401 and forged.json()["code"] == "bad_signature"
        wait_for(lambda: Delivery.objects.get().status == DeliveryStatus.SENT, 30, "not sent")
        assert len(fake.sent_to("79123456789")) == 1
