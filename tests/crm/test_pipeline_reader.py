"""The pipeline's batch reader (crm.pipeline) against the fake amoCRM over real HTTP: leads and contacts read
250 at a time (the API calls counted at the fake), one phone per lead by the README's rule, the text
rendered from the lead and its contact, one delivery per event even when a run is repeated, leads with no
phone, unknown leads and leads in "unsorted" recorded with their reason, and amoCRM's failures."""

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.amocrm import ratelimit
from accounts.models import AmoToken
from crm.models import PipelineEvent, SmsTemplate
from crm.pipeline import (
    MAX_READS,
    pipeline_accounts_due,
    pipeline_claims_release,
    pipeline_events_process,
    pipeline_events_purge,
)
from deliveries.models import Delivery, DeliveryKind
from tests.conftest import REDIRECT_URI, SECRET
from tests.fakes.amocrm import FakeAmoCRM

pytestmark = pytest.mark.django_db

AMO_ID = 12345


@pytest.fixture(autouse=True)
def _limiter(settings, redis_url):
    settings.SMSGATE_REDIS_URL = redis_url
    # The CRM caps (crm.caps) have their own tests: here an account may send a whole pipeline stage.
    settings.SMSGATE_CRM_LIMIT_ACCOUNT_HOUR = settings.SMSGATE_CRM_LIMIT_ACCOUNT_DAY = 0
    ratelimit._limiter = None
    yield
    ratelimit._limiter = None


@pytest.fixture
def amo(settings, integration, account):
    with FakeAmoCRM(client_id=str(integration.client_uuid), client_secret=SECRET, redirect_uri=REDIRECT_URI) as fake:
        fake.add_account(AMO_ID, subdomain="acme")
        settings.AMO_BASE_URL = fake.url
        pair = fake.issue_token_pair(AMO_ID, subdomain="acme")
        AmoToken.objects.create(account=account, access_token=pair["access_token"],
                                refresh_token=pair["refresh_token"],
                                expires_at=timezone.now() + timedelta(seconds=pair["expires_in"]))
        yield fake


@pytest.fixture
def route(smsru_route):
    return smsru_route()


def events_for(account, lead_ids, *, text="Здравствуйте, {{contact.name}}! Сделка {{lead.name}}.", template=None,
               status_id=40000002, at=1764750000):
    return [PipelineEvent.objects.create(account=account, lead_id=lead_id, status_id=status_id, event_type=15,
                                         event_time=at, text=text, template_id=template)
            for lead_id in lead_ids]


def api_calls(amo, method="GET"):
    return [(c.path, c.query) for c in amo.request_log(AMO_ID) if c.method == method]


def test_600_leads_are_read_in_batches_of_250_and_each_gets_one_sms(amo, account, route):
    leads = amo.add_leads(AMO_ID, 600)
    events = events_for(account, leads)
    result = pipeline_events_process(account_id=account.pk, max_in_flight=0, gather=0)
    assert (result.events, result.sent) == (600, 600)
    calls = api_calls(amo)
    paths = [path for path, _query in calls]
    assert paths.count("/api/v4/leads") == 3 and paths.count("/api/v4/contacts") == 3
    assert paths.count("/api/v4/leads/pipelines") == 1 and len(paths) == 7
    assert result.amo_calls == 7
    assert 7 / (600 / 250) <= 3  # the API calls per 250 leads
    assert all(query.count("filter[id][]=") <= 250 for _path, query in calls)
    deliveries = Delivery.objects.filter(account=account)
    assert deliveries.count() == 600 and set(deliveries.values_list("kind", flat=True)) == {DeliveryKind.PIPELINE}
    first = PipelineEvent.objects.get(pk=events[0].pk)
    assert first.state == "sent" and first.phone == "+79120000000"
    delivery = Delivery.objects.get(pk=first.delivery_id)
    assert (delivery.phone, delivery.text) == ("+79120000000", f"Здравствуйте, Клиент 1! Сделка Сделка #{leads[0]}.")
    assert len(set(PipelineEvent.objects.values_list("delivery_id", flat=True))) == 600


def test_a_repeated_run_after_a_crash_sends_nothing_more(amo, account, route):
    leads = amo.add_leads(AMO_ID, 3)
    events_for(account, leads)
    pipeline_events_process(account_id=account.pk, max_in_flight=0, gather=0)
    first = dict(PipelineEvent.objects.values_list("id", "delivery_id"))
    # A worker that sent and died before recording it: its claim goes back to pending, and is read again.
    PipelineEvent.objects.update(state="reading", claimed_at=timezone.now() - timedelta(minutes=6), delivery_id=None)
    assert pipeline_claims_release() == 3
    result = pipeline_events_process(account_id=account.pk, max_in_flight=0, gather=0)
    assert result.sent == 3 and Delivery.objects.count() == 3
    assert dict(PipelineEvent.objects.values_list("id", "delivery_id")) == first


def test_the_phone_rule_main_contact_first_mobile_first(amo, account, route):
    with amo._state:
        fake = amo.account(AMO_ID)
        work_then_mobile = fake.add_contact(name="А", phones=[("+79160000001", "WORK"), ("+79160000002", "MOB")])
        no_phone = fake.add_contact(name="Б")
        landline_only = fake.add_contact(name="В", phones=[("+7 495 123-45-67", "WORK"), ("не номер", "MOB")])
        second = fake.add_contact(name="Г", phones=[("8 916 000-00-03", "OTHER")])
        leads = {
            "mobile_first": fake.add_lead(contacts=[work_then_mobile]),
            "main_first": fake.add_lead(contacts=[(second, False), (work_then_mobile, True)]),
            "fallback": fake.add_lead(contacts=[no_phone, landline_only, second]),
            "none_usable": fake.add_lead(contacts=[no_phone, landline_only]),
            "no_contact": fake.add_lead(),
        }
    events_for(account, leads.values(), text="Привет, {{contact.name}}")
    pipeline_events_process(account_id=account.pk, max_in_flight=0, gather=0)
    outcome = {name: PipelineEvent.objects.get(lead_id=lead) for name, lead in leads.items()}
    assert outcome["mobile_first"].phone == "+79160000002"
    assert outcome["main_first"].phone == "+79160000002"
    assert outcome["fallback"].phone == "8 916 000-00-03"
    assert Delivery.objects.get(pk=outcome["fallback"].delivery_id).text == "Привет, Г"  # that contact's name
    assert (outcome["none_usable"].state, outcome["none_usable"].reason) == ("no_phone", "no_phone")
    assert outcome["no_contact"].state == "no_phone" and outcome["no_contact"].detail == "the lead has no contact"
    assert Delivery.objects.count() == 3
    # The other contacts were read only for the leads whose main contact had no usable phone: one more call.
    assert [p for p, _q in api_calls(amo)].count("/api/v4/contacts") == 2


def test_an_unsorted_lead_gets_its_sms_without_a_note_and_says_why(amo, account, route):
    with amo._state:
        fake = amo.account(AMO_ID)
        contact = fake.add_contact(name="Д", phones=[("+79160000009", "MOB")])
        unsorted = fake.add_lead(contacts=[contact], unsorted=True)
        sorted_lead = fake.add_lead(contacts=[contact])
    events_for(account, [unsorted, sorted_lead])
    pipeline_events_process(account_id=account.pk, max_in_flight=0, gather=0)
    event = PipelineEvent.objects.get(lead_id=unsorted)
    assert (event.state, event.reason) == ("sent", "unsorted") and event.delivery_id
    assert "no notes" in event.detail
    assert PipelineEvent.objects.get(lead_id=sorted_lead).reason == ""


def test_a_lead_amocrm_does_not_have_is_recorded(amo, account, route):
    [lead] = amo.add_leads(AMO_ID, 1)
    events_for(account, [lead, 29_999_999])
    pipeline_events_process(account_id=account.pk, max_in_flight=0, gather=0)
    gone = PipelineEvent.objects.get(lead_id=29_999_999)
    assert (gone.state, gone.reason) == ("not_found", "lead_not_found")
    assert PipelineEvent.objects.get(lead_id=lead).state == "sent"


def test_a_template_is_rendered_and_a_missing_one_falls_back_to_the_text(amo, account, route):
    template = SmsTemplate.objects.create(account=account, name="T", text="{{lead.name}}: {{lead.price}} руб.")
    gone = SmsTemplate.objects.create(account=account, name="Old", text="old", deleted_at=timezone.now())
    with amo._state:
        fake = amo.account(AMO_ID)
        contact = fake.add_contact(name="Е", phones=[("+79160000010", "MOB")])
        by_template = fake.add_lead(name="Кухня", price=150000, contacts=[contact])
        fallback = fake.add_lead(contacts=[contact])
        nothing = fake.add_lead(contacts=[contact])
    events_for(account, [by_template], template=template.pk, text="")
    events_for(account, [fallback], template=gone.pk, text="Свой текст")
    events_for(account, [nothing], template=gone.pk, text=" ")
    pipeline_events_process(account_id=account.pk, max_in_flight=0, gather=0)
    sent = PipelineEvent.objects.get(lead_id=by_template)
    assert Delivery.objects.get(pk=sent.delivery_id).text == "Кухня: 150000 руб."
    assert Delivery.objects.get(pk=PipelineEvent.objects.get(lead_id=fallback).delivery_id).text == "Свой текст"
    assert PipelineEvent.objects.get(lead_id=nothing).reason == "no_text"


def test_amocrm_unavailable_puts_the_events_back_and_gives_up_after_max_reads(amo, account, route):
    [lead] = amo.add_leads(AMO_ID, 1)
    events_for(account, [lead])
    amo.fail_with = 503
    result = pipeline_events_process(account_id=account.pk, max_in_flight=0, gather=0)
    event = PipelineEvent.objects.get()
    assert result.again_in and result.again_in >= 2 and (event.state, event.attempts) == ("pending", 1)
    PipelineEvent.objects.update(attempts=MAX_READS - 1)
    pipeline_events_process(account_id=account.pk, max_in_flight=0, gather=0)
    event.refresh_from_db()
    assert (event.state, event.reason) == ("failed", "amocrm_unavailable")
    assert not Delivery.objects.exists()


def test_an_account_without_amocrm_tokens_fails_its_events_with_the_reason(amo, account, route):
    AmoToken.objects.all().delete()
    events_for(account, [1, 2])
    pipeline_events_process(account_id=account.pk, max_in_flight=0, gather=0)
    assert set(PipelineEvent.objects.values_list("state", "reason")) == {("failed", "amocrm_refused")}


def test_the_reader_waits_while_the_account_has_many_sms_unsent(amo, account, route):
    leads = amo.add_leads(AMO_ID, 5)
    events_for(account, leads)
    result = pipeline_events_process(account_id=account.pk, batch=2, max_in_flight=3, gather=0)
    # Two batches of two went out (4 unsent SMS >= 3): the run stops and comes back in a second.
    assert result.sent == 4 and result.again_in == 1.0
    assert PipelineEvent.objects.filter(state="pending").count() == 1


def test_the_sweeper_finds_accounts_whose_events_wait(account, other_account):
    events_for(account, [1])
    events_for(other_account, [2])
    assert pipeline_accounts_due() == []
    PipelineEvent.objects.filter(account=other_account).update(received_at=timezone.now() - timedelta(seconds=30))
    assert pipeline_accounts_due() == [other_account.pk]


def test_a_small_batch_waits_for_more_events_then_is_read_in_one_go(amo, account, route):
    leads = amo.add_leads(AMO_ID, 3)
    events_for(account, leads[:2])
    result = pipeline_events_process(account_id=account.pk, max_in_flight=0, gather=30)
    assert result.events == 0 and 29 < result.again_in <= 30  # fresh: the burst may still be arriving
    assert api_calls(amo) == []
    events_for(account, leads[2:])
    PipelineEvent.objects.update(received_at=timezone.now() - timedelta(seconds=31))
    result = pipeline_events_process(account_id=account.pk, max_in_flight=0, gather=30)
    assert result.sent == 3 and result.again_in is None
    assert [p for p, _q in api_calls(amo)].count("/api/v4/leads") == 1


def test_one_run_per_account_at_a_time(amo, account, route):
    from django.core.cache import cache

    [lead] = amo.add_leads(AMO_ID, 1)
    events_for(account, [lead])
    assert cache.add(f"crm:dp:run:{account.pk}", 1, timeout=60)  # another run holds the account
    assert pipeline_events_process(account_id=account.pk, max_in_flight=0, gather=0).events == 0
    cache.delete(f"crm:dp:run:{account.pk}")
    assert pipeline_events_process(account_id=account.pk, max_in_flight=0, gather=0).sent == 1


def test_finished_events_past_the_retention_are_deleted(account, settings):
    settings.SMSGATE_PURGE_TEXT_DAYS = 30
    old_sent, old_pending, recent = events_for(account, [1, 2, 3])
    PipelineEvent.objects.filter(pk=old_sent.pk).update(state="sent", phone="+79120000000")
    PipelineEvent.objects.filter(pk__in=[old_sent.pk, old_pending.pk]).update(
        received_at=timezone.now() - timedelta(days=31))
    assert pipeline_events_purge(batch=1) == 1
    assert set(PipelineEvent.objects.values_list("pk", flat=True)) == {old_pending.pk, recent.pk}
