"""The sms_out note outbox (crm.notes) against the fake amoCRM over real HTTP: batches of at most 250 per
POST with lower-case params and a second of its own per note, amoCRM down then up, a POST whose answer was
lost (looked up, never written twice), notes amoCRM refuses on unsorted leads, "not delivered" notes for
final failures (feed sends included), and retention of the texts."""

from datetime import timedelta

import httpx
import pytest
from django.utils import timezone, translation

from accounts.models import AmoToken
from crm import notes
from crm.models import CrmMessage, CrmNote, NoteKind, NoteState
from crm.retention import crm_retention_run
from crm.sending import CrmSend, crm_sends_create
from deliveries.models import Delivery, DeliveryKind, DeliveryStatus
from deliveries.services.status import delivery_move

from .conftest import AMO_ID

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _english():
    with translation.override("en"):
        yield


@pytest.fixture
def routed(smsru_route, settings):
    smsru_route()
    settings.SMSGATE_CRM_LIMIT_ACCOUNT_HOUR = settings.SMSGATE_CRM_LIMIT_ACCOUNT_DAY = 0
    settings.SMSGATE_CRM_LIMIT_USER_HOUR = 0
    settings.SMSGATE_CRM_NOTE_BACKOFF = 0.05


def posts(fake, path="/api/v4/leads/notes"):
    return [c for c in fake.request_log(AMO_ID) if c.method == "POST" and c.path == path]


def send_to_leads(account, lead_ids, *, write_notes=True, text="Ваш заказ готов"):
    results = crm_sends_create(account=account, kind=DeliveryKind.CRM, write_notes=write_notes, items=[
        CrmSend("leads", lead_id, f"+7912{n:07d}", f"{text} #{n}") for n, lead_id in enumerate(lead_ids)])
    assert all(r.accepted for r in results), results
    return results


def due_now():
    CrmNote.objects.filter(state=NoteState.PENDING).update(next_attempt_at=timezone.now())


def test_notes_go_in_batches_of_at_most_250_each_once_with_lower_case_params(account, amocrm, routed):
    leads = amocrm.add_leads(AMO_ID, 260)
    results = send_to_leads(account, leads + leads[:3])  # three leads get two SMS each

    summary = notes.notes_write(account_id=account.pk)

    assert (summary.written, summary.batches, summary.retry) == (263, 2, 0)
    assert len(posts(amocrm)) == 2
    written = amocrm.notes(AMO_ID, "leads", note_type="sms_out")
    assert len(written) == 263
    by_text = {n["params"]["text"]: n for n in written}
    assert set(by_text) == {f"Ваш заказ готов #{n}" for n in range(263)}
    assert by_text["Ваш заказ готов #0"]["params"] == {"text": "Ваш заказ готов #0", "phone": "+79120000000"}
    # One note per second of an entity: the twice-texted leads' notes have different created_at.
    for lead in leads[:3]:
        seconds = [n["created_at"] for n in written if n["entity_id"] == lead]
        assert len(seconds) == 2 and len(set(seconds)) == 2
    rows = CrmNote.objects.all()
    assert {r.state for r in rows} == {NoteState.WRITTEN} and all(r.amo_note_id for r in rows)
    assert {(r.text, r.phone) for r in rows} == {("", "")}  # the texts left once written
    assert set(CrmMessage.objects.values_list("note_state", flat=True)) == {NoteState.WRITTEN}
    assert notes.notes_write(account_id=account.pk).batches == 0  # nothing due: nothing written again
    assert len(amocrm.notes(AMO_ID, "leads")) == 263 and len(results) == 263


def test_amocrm_down_then_up_the_notes_wait_and_are_written_once(account, amocrm, routed):
    lead = amocrm.ids_["lead"]
    send_to_leads(account, [lead])
    amocrm.fail_with = 503

    summary = notes.notes_write(account_id=account.pk)
    assert (summary.written, summary.retry) == (0, 1)
    note = CrmNote.objects.get()
    assert note.state == NoteState.PENDING and note.attempts == 1 and not note.maybe_written
    assert "HTTP 503" in note.last_error and len(amocrm.notes(AMO_ID, "leads", lead)) == 0

    amocrm.fail_with = None
    due_now()
    assert notes.notes_due_accounts() == [account.pk]
    assert notes.notes_write(account_id=account.pk).written == 1
    [written] = amocrm.notes(AMO_ID, "leads", lead)
    assert written["note_type"] == "sms_out" and written["params"]["text"] == "Ваш заказ готов #0"


def test_a_post_whose_answer_was_lost_is_looked_up_and_not_written_again(account, amocrm, routed):
    lead = amocrm.ids_["lead"]
    send_to_leads(account, [lead])
    amocrm.drop_rate, amocrm.fault_paths = 1.0, {"/api/v4/leads/notes"}  # processed, then no answer

    summary = notes.notes_write(account_id=account.pk)
    assert (summary.written, summary.retry) == (0, 1)
    note = CrmNote.objects.get()
    assert note.maybe_written and note.state == NoteState.PENDING
    assert len(amocrm.notes(AMO_ID, "leads", lead)) == 1  # it did land

    amocrm.drop_rate = 0.0
    due_now()
    summary = notes.notes_write(account_id=account.pk)
    assert (summary.found, summary.written) == (1, 0)
    assert len(amocrm.notes(AMO_ID, "leads", lead)) == 1  # not written twice
    assert len(posts(amocrm)) == 1
    lookups = [c for c in amocrm.request_log(AMO_ID) if c.method == "GET" and c.path == "/api/v4/leads/notes"]
    assert len(lookups) == 1 and "sms_out" in lookups[0].query
    note.refresh_from_db()
    assert note.state == NoteState.WRITTEN and note.amo_note_id == amocrm.notes(AMO_ID, "leads", lead)[0]["id"]


def test_a_500_on_the_post_is_looked_up_and_then_written_once(account, amocrm, routed):
    lead = amocrm.ids_["lead"]
    send_to_leads(account, [lead])
    amocrm.fail_next(1, 500)  # not processed, but a 500 on a POST cannot be told from one that was

    assert notes.notes_write(account_id=account.pk).retry == 1
    assert CrmNote.objects.get().maybe_written
    due_now()
    summary = notes.notes_write(account_id=account.pk)
    assert (summary.found, summary.written) == (0, 1)
    assert len(amocrm.notes(AMO_ID, "leads", lead)) == 1 and len(posts(amocrm)) == 2


def test_a_worker_that_died_mid_post_leaves_a_note_that_is_looked_up_first(account, amocrm, routed):
    lead = amocrm.ids_["lead"]
    send_to_leads(account, [lead])
    note = CrmNote.objects.get()
    # As a worker leaves it: marked before its POST, the POST landed, the worker gone, its lease over.
    token = amocrm.issue_token_pair(AMO_ID)["access_token"]
    response = httpx.post(f"{amocrm.url}/api/v4/leads/notes", headers={"Authorization": f"Bearer {token}"},
                          json=[{"entity_id": lead, "note_type": "sms_out", "created_at": note.amo_created_at,
                                 "params": {"text": note.text, "phone": note.phone}}])
    assert response.status_code == 200
    CrmNote.objects.filter(pk=note.pk).update(maybe_written=True, first_attempt_at=timezone.now(),
                                              lease_until=timezone.now() - timedelta(seconds=1))

    assert notes.notes_write(account_id=account.pk).found == 1
    assert len(amocrm.notes(AMO_ID, "leads", lead)) == 1


def test_notes_on_unsorted_leads_are_recorded_as_not_possible_and_the_rest_written(account, amocrm, routed):
    contact = amocrm.add_contact(AMO_ID, name="Новый", phones=[("+79990001122", "MOB")])
    unsorted = amocrm.add_lead(AMO_ID, unsorted=True, contacts=[contact])
    normal = amocrm.ids_["lead"]
    results = send_to_leads(account, [unsorted, normal])

    summary = notes.notes_write(account_id=account.pk)
    assert (summary.not_possible, summary.written) == (1, 1)
    refused = CrmNote.objects.get(entity_id=unsorted)
    assert refused.state == NoteState.NOT_POSSIBLE and "entity_id" in refused.last_error
    assert CrmMessage.objects.get(pk=results[0].delivery_id).note_state == NoteState.NOT_POSSIBLE
    assert CrmMessage.objects.get(pk=results[1].delivery_id).note_state == NoteState.WRITTEN
    assert amocrm.notes(AMO_ID, "leads", unsorted) == [] and len(amocrm.notes(AMO_ID, "leads", normal)) == 1
    # The SMS itself is not affected.
    assert Delivery.objects.get(pk=results[0].delivery_id).status == DeliveryStatus.PENDING


def test_a_final_failure_gets_a_not_delivered_note_feed_sends_included(account, amocrm, routed):
    lead = amocrm.ids_["lead"]
    panel = send_to_leads(account, [lead])[0]
    feed = send_to_leads(account, [lead], write_notes=False, text="Из ленты")[0]
    delivered = send_to_leads(account, [lead], text="Дошло")[0]
    no_report = send_to_leads(account, [lead], text="Без отчёта")[0]
    assert delivery_move(delivery_id=panel.delivery_id, to=DeliveryStatus.FAILED,
                         values={"error_class": "insufficient_funds", "finished_at": timezone.now()})
    assert delivery_move(delivery_id=feed.delivery_id, to=DeliveryStatus.UNDELIVERED,
                         values={"finished_at": timezone.now()})
    assert delivery_move(delivery_id=delivered.delivery_id, to=DeliveryStatus.DELIVERED,
                         values={"finished_at": timezone.now()})
    assert delivery_move(delivery_id=no_report.delivery_id, to=DeliveryStatus.FAILED,
                         values={"error_class": "no_report", "finished_at": timezone.now()})

    assert notes.crm_outcomes_conclude() == 4
    assert notes.crm_outcomes_conclude() == 0  # concluded once
    failures = CrmNote.objects.filter(kind=NoteKind.FAILURE).order_by("amo_created_at")
    assert [f.message_id for f in failures] == [panel.delivery_id, feed.delivery_id]
    assert failures[0].text == "SMS на +79120000000 не доставлено: у аккаунта SMS-провайдера нет средств."
    assert failures[1].text.startswith("SMS на +79120000000 не доставлено: оператор")

    notes.notes_write(account_id=account.pk)
    in_amocrm = amocrm.notes(AMO_ID, "leads", lead)
    assert len([n for n in in_amocrm if n["note_type"] == "sms_out"]) == 3  # panel, delivered, no_report
    service = [n for n in in_amocrm if n["note_type"] == "service_message"]
    assert len(service) == 2 and {n["params"]["service"] for n in service} == {"smsgate"}
    assert len({n["created_at"] for n in in_amocrm}) == len(in_amocrm) == 5


def test_failure_notes_are_in_english_for_kommo_accounts():
    text = notes.failure_text(status=DeliveryStatus.EXPIRED, error_class="validity", phone="+15550001111",
                              language="en")
    assert text == "SMS to +15550001111 was not delivered: it could not be sent in time."


def test_a_disconnected_account_waits_and_is_given_up_after_the_limit(account, amocrm, routed, settings):
    send_to_leads(account, [amocrm.ids_["lead"]])
    AmoToken.objects.filter(account=account).delete()
    assert notes.notes_write(account_id=account.pk).retry == 1
    note = CrmNote.objects.get()
    assert note.state == NoteState.PENDING and "no amoCRM token pair" in note.last_error

    CrmNote.objects.update(created_at=timezone.now() - timedelta(hours=settings.SMSGATE_CRM_NOTE_GIVE_UP_HOURS + 1))
    due_now()
    assert notes.notes_write(account_id=account.pk).gave_up == 1
    note.refresh_from_db()
    assert note.state == NoteState.GAVE_UP and note.text == "" and note.phone == ""
    assert CrmMessage.objects.get().note_state == NoteState.GAVE_UP


def test_retention_gives_up_forgotten_notes_and_deletes_old_finished_ones(account, amocrm, routed, settings):
    leads = amocrm.add_leads(AMO_ID, 3)
    send_to_leads(account, leads)
    old = timezone.now() - timedelta(days=settings.SMSGATE_PURGE_TEXT_DAYS + 1)
    first, second, third = CrmNote.objects.order_by("entity_id")
    CrmNote.objects.filter(pk=first.pk).update(created_at=old)  # never written for a month
    CrmNote.objects.filter(pk=second.pk).update(state=NoteState.WRITTEN, created_at=old, finished_at=old)
    CrmNote.objects.filter(pk=third.pk).update(state=NoteState.WRITTEN)  # written, text left behind

    result = crm_retention_run()
    assert (result.given_up, result.deleted) == (1, 1) and result.redacted >= 1
    first.refresh_from_db()
    assert first.state == NoteState.GAVE_UP and first.text == ""
    assert not CrmNote.objects.filter(pk=second.pk).exists()
    assert CrmNote.objects.get(pk=third.pk).text == ""


def test_the_beat_task_concludes_outcomes_and_queues_a_write_per_account_with_notes_due(account, amocrm, routed):
    lead = amocrm.ids_["lead"]
    failed = send_to_leads(account, [lead])[0]
    delivery_move(delivery_id=failed.delivery_id, to=DeliveryStatus.FAILED,
                  values={"error_class": "no_route", "finished_at": timezone.now()})
    assert notes.notes_flush() == {"concluded": 1, "accounts": 1}
    assert CrmNote.objects.filter(kind=NoteKind.FAILURE, state=NoteState.PENDING).count() == 1
    notes.notes_write(account_id=account.pk)
    assert notes.notes_flush() == {"concluded": 0, "accounts": 0}
    texts = sorted(n["params"]["text"] for n in amocrm.notes(AMO_ID, "leads", lead))
    # In the account's language (amocrm.ru: Russian), whatever language the process is in.
    assert texts == ["SMS на +79120000000 не доставлено: ни один SMS-провайдер не смог его отправить.",
                     "Ваш заказ готов #0"]
