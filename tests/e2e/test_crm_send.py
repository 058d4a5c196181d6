"""End to end, SMS sent from an amoCRM card: the widget's POST to gunicorn → the card read from the fake
amoCRM → PostgreSQL → RabbitMQ's sms-crm queue → a real worker-crm Celery worker → the fake SMS.ru, and
the sms_out note written into the fake amoCRM exactly once; a phone not on the card refused; and the
amoCRM client's 7 requests/s holding with several worker processes writing notes at once (counted at
the fake amoCRM)."""

import time

import httpx
import pytest

import smsgate.celery
from crm import notes
from crm.models import CrmMessage, CrmNote, NoteState
from crm.sending import CrmSend, crm_sends_create
from deliveries.models import Delivery, DeliveryKind, DeliveryStatus
from smsgate.celery import app as smsgate_app
from tests.conftest import E2E_BROKER_URL, REDIRECT_URI, SECRET
from tests.crm.conftest import AMO_ID, connect
from tests.fakes.amocrm import FakeAmoCRM
from tests.fakes.smsru import FakeSmsRu

from .stack import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def amo(integration, account, settings):
    with FakeAmoCRM(client_id=str(integration.client_uuid), client_secret=SECRET, redirect_uri=REDIRECT_URI) as fake:
        fake.add_account(AMO_ID, subdomain=account.subdomain)
        settings.AMO_BASE_URL = fake.url
        connect(fake, account)
        yield fake


def _stack_env(stack, amo, sms):
    stack.env.update(AMO_BASE_URL=amo.url, SMSGATE_PROVIDER_BASE_URLS=f"smsru={sms.url}",
                     SMSGATE_CRM_NOTE_INTERVAL="1", SMSGATE_CRM_NOTE_BACKOFF="0.2")


def test_a_card_send_reaches_the_provider_and_amocrm_gets_one_sms_out_note(stack, amo, smsru_route, make_token):
    contact = amo.add_contact(AMO_ID, first_name="Ольга", phones=[("+7 912 345-67-89", "MOB")])
    lead = amo.add_lead(AMO_ID, name="Кухня", contacts=[contact])
    with FakeSmsRu(status_delays=(0.05, 0.05)) as sms:
        _stack_env(stack, amo, sms)
        smsru_route(sender="ACME")
        stack.start_web()
        worker = stack.start_worker(queues="sms-crm")  # worker-crm, as the Procfile runs it

        send = {"entity_type": "leads", "entity_id": lead, "phone": "89123456789",
                "text": "{{contact.first_name}}, ваш заказ готов", "client_key": "e2e-click-0001"}
        response = httpx.post(f"{stack.web_url}/api/v1/crm/sends/", json=send, timeout=15,
                              headers={"X-Auth-Token": make_token()})
        assert response.status_code == 201, response.text
        sent = response.json()
        assert (sent["phone"], sent["text"], sent["note_state"]) == ("+79123456789", "Ольга, ваш заказ готов",
                                                                     "pending")
        # A double click: the same key, the same SMS.
        again = httpx.post(f"{stack.web_url}/api/v1/crm/sends/", json=send, timeout=15,
                           headers={"X-Auth-Token": make_token()})
        assert again.status_code == 201 and again.json()["id"] == sent["id"]

        wait_for(lambda: Delivery.objects.get(pk=sent["id"]).status in (DeliveryStatus.SENT, DeliveryStatus.DELIVERED),
                 30, lambda: f"not sent; worker log:\n{worker.log()}")
        [message] = sms.sent_to("79123456789")
        assert message["msg"] == "Ольга, ваш заказ готов" and message["from"] == "ACME"

        wait_for(lambda: CrmMessage.objects.get(pk=sent["id"]).note_state == NoteState.WRITTEN, 30,
                 lambda: f"note not written; worker log:\n{worker.log()}")
        [note] = amo.notes(AMO_ID, "leads", lead)
        assert note["note_type"] == "sms_out"
        assert note["params"] == {"text": "Ольга, ваш заказ готов", "phone": "+79123456789"}
        assert note["created_at"] == CrmNote.objects.get(message_id=sent["id"]).amo_created_at
        time.sleep(1.5)  # a beat-less worker and a second POST: still exactly one note
        assert len(amo.notes(AMO_ID, "leads", lead)) == 1 and len(sms.sent_to("79123456789")) == 1

        history = httpx.get(f"{stack.web_url}/api/v1/crm/sends/", params={"entity_type": "leads", "entity_id": lead},
                            headers={"X-Auth-Token": make_token()}, timeout=15).json()
        assert [r["id"] for r in history["results"]] == [sent["id"]]
        assert history["results"][0]["note_state"] == "written"
        for log in (stack.processes[0].log(), worker.log()):
            assert "ваш заказ готов" not in log and "+79123456789" not in log


def test_a_phone_not_on_the_card_is_refused_over_http(stack, amo, smsru_route, make_token):
    contact = amo.add_contact(AMO_ID, name="Ольга", phones=[("+79123456789", "MOB")])
    lead = amo.add_lead(AMO_ID, contacts=[contact])
    with FakeSmsRu() as sms:
        _stack_env(stack, amo, sms)
        smsru_route()
        stack.start_web()
        response = httpx.post(f"{stack.web_url}/api/v1/crm/sends/", timeout=15,
                              headers={"X-Auth-Token": make_token(), "Accept-Language": "ru"},
                              json={"entity_type": "leads", "entity_id": lead, "phone": "+79160000000",
                                    "text": "Привет"})
        assert response.status_code == 400
        assert response.json() == {"detail": "Этого номера нет среди телефонов контактов карточки в amoCRM.",
                                   "code": "phone_not_on_card"}
        assert not Delivery.objects.exists() and amo.notes(AMO_ID, "leads") == []


def test_the_7_rps_limit_holds_with_several_worker_processes_writing_notes(stack, amo, smsru_route, account,
                                                                           settings, monkeypatch):
    """Three worker processes of four threads each write 45 notes one per POST (SMSGATE_CRM_NOTE_BATCH=1):
    twelve writers that would each go as fast as amoCRM answers. The fake amoCRM counts the arrivals."""
    leads = amo.add_leads(AMO_ID, 45)
    amo.latency = 0.02
    smsru_route()
    settings.SMSGATE_CRM_LIMIT_ACCOUNT_HOUR = settings.SMSGATE_CRM_LIMIT_ACCOUNT_DAY = 0
    # This process publishes to the stack's RabbitMQ, on the stack's queues.
    monkeypatch.setattr(smsgate_app.conf, "broker_url", E2E_BROKER_URL)
    monkeypatch.setattr(smsgate_app.amqp, "_producer_pool", None)
    monkeypatch.setattr(smsgate.celery, "QUEUE_PREFIX", stack.queue_prefix)
    with FakeSmsRu() as sms:
        _stack_env(stack, amo, sms)
        stack.env.update(SMSGATE_CRM_NOTE_BATCH="1")
        workers = [stack.start_worker(queues="sms-crm", concurrency=4) for _ in range(3)]
        started = time.monotonic()
        # Committed: the SMS and a write of the notes are queued on the CRM lane; eleven more writers join.
        results = crm_sends_create(account=account, kind=DeliveryKind.PIPELINE, write_notes=True, items=[
            CrmSend("leads", lead, f"+7912{n:07d}", f"Напоминание {n}") for n, lead in enumerate(leads)])
        assert all(r.accepted for r in results)
        for _ in range(11):  # twelve writers at once, on three processes
            assert notes.notes_write_soon(account_id=account.pk)

        wait_for(lambda: CrmNote.objects.filter(state=NoteState.WRITTEN).count() == 45, 60,
                 lambda: "notes not written:\n" + "\n".join(w.log()[-3000:] for w in workers))
        took = time.monotonic() - started

    written = amo.notes(AMO_ID, "leads", note_type="sms_out")
    assert len(written) == 45 and len({n["entity_id"] for n in written}) == 45  # each once
    posts = [c for c in amo.request_log(AMO_ID) if c.method == "POST"]
    assert len(posts) == 45  # one note per POST, none repeated
    assert amo.refused_429(AMO_ID) == 0
    assert amo.peak_rps(AMO_ID) <= 7
    # The limit, not the writers, set the pace: read on the fake's own clock (the test's includes the
    # workers' start on a loaded machine): 45 arrivals at most 7 in any second span over five seconds.
    span = posts[-1].at - posts[0].at
    print(f"\n45 notes by 12 writers in 3 processes: {span:.2f} s first to last POST at the fake "
          f"({took:.2f} s from the send), peak {amo.peak_rps(AMO_ID)} in any second, 429s 0")
    assert span >= (45 - 7) / 7
    # The writing was shared: more than one process made POSTs (the client logs each call, no body).
    posting = [w for w in workers if any("amoCRM API call" in line and "method=POST" in line
                                         for line in w.log().splitlines())]
    assert len(posting) >= 2, [w.log()[-2000:] for w in workers]
