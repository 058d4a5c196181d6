"""End to end: Salesbot's widget_request over real HTTP to gunicorn (a bot token signed HS512 by the fake amoCRM)
→ recorded in PostgreSQL and answered 200 at once → a real Celery worker on the CRM lane reads the lead from the
fake amoCRM, sends the SMS to the fake SMS.ru, waits for the provider to take it and continues the bot at the fake
amoCRM with exit "sent"; one sms_out note on the lead. The same call twice sends once and continues once."""

import time
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from accounts.models import AmoToken
from crm.models import SalesbotRequest
from deliveries.models import Delivery, DeliveryKind
from tests.conftest import AUDIENCE, REDIRECT_URI, SECRET
from tests.fakes.amocrm import FakeAmoCRM
from tests.fakes.smsru import FakeSmsRu

from .stack import wait_for

pytestmark = pytest.mark.e2e

AMO_ID = 12345


def test_a_bot_step_sends_one_sms_and_continues_the_bot_once(stack, smsru_route, integration, account):
    with FakeSmsRu(status_delays=(0.05, 0.05)) as sms, FakeAmoCRM(
            client_id=str(integration.client_uuid), client_secret=SECRET, redirect_uri=REDIRECT_URI) as amo:
        amo.add_account(AMO_ID, subdomain="acme")
        pair = amo.issue_token_pair(AMO_ID, subdomain="acme")
        AmoToken.objects.create(account=account, access_token=pair["access_token"],
                                refresh_token=pair["refresh_token"],
                                expires_at=timezone.now() + timedelta(seconds=pair["expires_in"]))
        with amo._state:
            fake = amo.account(AMO_ID)
            olga = fake.add_contact(first_name="Ольга", name="Ольга Иванова", phones=[("+7 (912) 345-67-89", "MOB")])
            lead = fake.add_lead(name="Кухня на заказ", price=150000, contacts=[olga])
        stack.env.update(SMSGATE_PROVIDER_BASE_URLS=f"smsru={sms.url}", AMO_BASE_URL=amo.url,
                         SMSGATE_CRM_LIMIT_ACCOUNT_HOUR="0", SMSGATE_CRM_LIMIT_ACCOUNT_DAY="0")
        smsru_route(sender="ACME")
        stack.start_web()
        worker = stack.start_worker()

        body = amo.salesbot_request(AMO_ID, entity_id=lead, bot_id=77, aud=AUDIENCE,
                                    data={"text": "Ольга, ваш заказ «Кухня на заказ» готов."})
        started = time.monotonic()
        first = httpx.post(f"{stack.web_url}/amocrm/salesbot", json=body)
        answered = time.monotonic() - started
        assert first.status_code == 200 and first.json() == {"status": "accepted"}, first.text
        assert answered < 2.0
        again = httpx.post(f"{stack.web_url}/amocrm/salesbot", json=body)
        assert again.json() == {"status": "duplicate"}
        forged = httpx.post(f"{stack.web_url}/amocrm/salesbot", json={**body, "token": body["token"][:-6] + "AAAAAA"})
        assert forged.status_code == 401

        wait_for(lambda: amo.salesbot_continues(AMO_ID), 30, lambda: f"bot not continued; worker log:\n{worker.log()}")
        [done] = amo.salesbot_continues(AMO_ID)
        assert (done.bot_id, done.data) == (77, {"status": "sent"})
        [message] = sms.sent_to("79123456789")
        assert message["msg"] == "Ольга, ваш заказ «Кухня на заказ» готов." and message["from"] == "ACME"
        request = SalesbotRequest.objects.get()
        assert (request.state, request.exit) == ("done", "sent")
        assert Delivery.objects.get(pk=request.delivery_id).kind == DeliveryKind.SALESBOT
        wait_for(lambda: amo.notes(AMO_ID, "leads", lead, "sms_out"), 30,
                 lambda: f"no note; worker log:\n{worker.log()}")
        time.sleep(1.5)
        assert len(sms.sent_to("79123456789")) == 1 and len(amo.salesbot_continues(AMO_ID)) == 1
        assert len(amo.notes(AMO_ID, "leads", lead, "sms_out")) == 1
        log = worker.log()
        assert "ваш заказ" not in log and "79123456789" not in log and body["token"] not in log
