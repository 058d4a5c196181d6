"""End to end: amoCRM's digital-pipeline webhook over real HTTP to gunicorn → the event recorded in
PostgreSQL → a real Celery worker on the CRM lane reads the lead from the fake amoCRM → the SMS at the fake
SMS.ru → one `sms_out` note on the lead in the fake amoCRM. The same webhook twice sends once."""

import time
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from accounts.models import AmoToken
from crm.models import PipelineEvent
from crm.pipeline_inbox import pipeline_key_get_or_create
from deliveries.models import Delivery, DeliveryKind, DeliveryStatus
from tests.conftest import REDIRECT_URI, SECRET
from tests.fakes.amocrm import FakeAmoCRM
from tests.fakes.smsru import FakeSmsRu

from .stack import wait_for

pytestmark = pytest.mark.e2e

AMO_ID = 12345


def test_a_lead_entering_the_stage_gets_one_sms_and_one_note(stack, smsru_route, integration, account):
    with FakeSmsRu(status_delays=(0.05, 0.05)) as sms, FakeAmoCRM(
            client_id=str(integration.client_uuid), client_secret=SECRET, redirect_uri=REDIRECT_URI) as amo:
        amo.add_account(AMO_ID, subdomain="acme")
        pair = amo.issue_token_pair(AMO_ID, subdomain="acme")
        AmoToken.objects.create(account=account, access_token=pair["access_token"],
                                refresh_token=pair["refresh_token"],
                                expires_at=timezone.now() + timedelta(seconds=pair["expires_in"]))
        with amo._state:
            fake = amo.account(AMO_ID)
            olga = fake.add_contact(first_name="Ольга", name="Ольга Иванова",
                                    phones=[("+7 495 123-45-67", "WORK"), ("+7 (912) 345-67-89", "MOB")])
            lead = fake.add_lead(name="Кухня на заказ", price=150000, contacts=[olga])
        stack.env.update(SMSGATE_PROVIDER_BASE_URLS=f"smsru={sms.url}", AMO_BASE_URL=amo.url,
                         SMSGATE_CRM_LIMIT_ACCOUNT_HOUR="0", SMSGATE_CRM_LIMIT_ACCOUNT_DAY="0")
        smsru_route(sender="ACME")
        key = pipeline_key_get_or_create(account=account).key
        stack.start_web()
        worker = stack.start_worker()

        body, content_type = amo.dp_webhook_payload(
            AMO_ID, lead, settings={"key": key, "message": "{{contact.first_name}}, ваш заказ «{{lead.name}}» готов."})
        first = httpx.post(f"{stack.web_url}/amocrm/pipeline", content=body, headers={"Content-Type": content_type})
        assert first.status_code == 200 and first.json() == {"status": "accepted"}, first.text
        again = httpx.post(f"{stack.web_url}/amocrm/pipeline", content=body, headers={"Content-Type": content_type})
        assert again.json() == {"status": "duplicate"}
        forged = httpx.post(f"{stack.web_url}/amocrm/pipeline", content=body.replace(key.encode(), b"x" * len(key)),
                            headers={"Content-Type": content_type})
        assert forged.status_code == 403

        wait_for(lambda: sms.sent_to("79123456789"), 30, lambda: f"no SMS; worker log:\n{worker.log()}")
        [message] = sms.sent_to("79123456789")
        assert message["msg"] == "Ольга, ваш заказ «Кухня на заказ» готов." and message["from"] == "ACME"
        event = PipelineEvent.objects.get()
        assert (event.state, event.phone) == ("sent", "+7 (912) 345-67-89")
        delivery = Delivery.objects.get(pk=event.delivery_id)
        assert delivery.kind == DeliveryKind.PIPELINE
        wait_for(lambda: Delivery.objects.get(pk=delivery.pk).status in (DeliveryStatus.SENT, DeliveryStatus.DELIVERED),
                 30, "not recorded as sent")

        wait_for(lambda: amo.notes(AMO_ID, "leads", lead, "sms_out"), 30,
                 lambda: f"no note; worker log:\n{worker.log()}")
        [note] = amo.notes(AMO_ID, "leads", lead, "sms_out")
        assert note["params"]["text"] == "Ольга, ваш заказ «Кухня на заказ» готов."
        assert note["params"]["phone"] == "+79123456789"
        # Nothing more comes: one SMS, one note, one lead read and its contact.
        time.sleep(1.5)
        assert len(sms.sent_to("79123456789")) == 1 and len(amo.notes(AMO_ID, "leads", lead, "sms_out")) == 1
        paths = [c.path for c in amo.request_log(AMO_ID) if c.method == "GET"]
        assert paths.count("/api/v4/leads") == 1 and paths.count("/api/v4/contacts") == 1
        log = worker.log()
        assert "ваш заказ" not in log and "79123456789" not in log and key not in log
