"""The read-only admin pages of the CRM inboxes: pipeline events, pipeline keys, Salesbot requests and list
sends. Each list and page renders for staff on real PostgreSQL with a bounded number of queries, nothing can
be added, changed or deleted, URL tricks answer a 4xx or an empty list, and neither a text nor a key (nor
its digest) nor a whole phone reaches the HTML."""

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import Account
from crm.models import ListSend, PipelineEvent, PipelineKey, SalesbotRequest
from crm.pipeline_inbox import pipeline_key_get_or_create, pipeline_key_rotate
from deliveries.services.intake import delivery_create
from tests.staff import require_postgres, staff_client

pytestmark = pytest.mark.django_db

MODELS = [PipelineEvent, PipelineKey, SalesbotRequest, ListSend]
PHONE = "+79123456789"
SECRET_TEXTS = ["Ваш заказ готов к выдаче", "Напоминаем о встрече завтра", "Акция только для вас"]


def url(model, view="changelist", *args) -> str:
    return reverse(f"admin:crm_{model._meta.model_name}_{view}", args=args)


def listed_ids(response, model) -> set[str]:
    return set(re.findall(re.escape(url(model)) + r'([^/"]+)/change/', response.content.decode()))


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def fill(account, n: int, settings) -> dict:
    """`n` rows of each inbox for the account, the first of each with a delivery, every one with a text."""
    settings.SMSGATE_DEFAULT_ROUTE = "console"
    now = timezone.now()
    delivery = delivery_create(account=account, phone=PHONE, text=SECRET_TEXTS[0]).delivery
    events, requests, sends = [], [], []
    for i in range(n):
        events.append(PipelineEvent.objects.create(
            account=account, lead_id=7001 + i, status_id=40000002, event_type=15, event_time=1_700_000_000 + i,
            text=SECRET_TEXTS[0], state="sent" if i == 0 else "no_phone", reason="" if i == 0 else "no_phone",
            detail="" if i == 0 else "the lead has no contact", phone=PHONE if i == 0 else "",
            delivery_id=delivery.pk if i == 0 else None))
        requests.append(SalesbotRequest.objects.create(
            account=account, bot_id=31, continue_id=9001 + i, entity_type="leads", entity_id=8001 + i,
            text=SECRET_TEXTS[1], state="done", exit="sent" if i == 0 else "failed",
            reason="" if i == 0 else "limits", phone="8 (912) 345-67-89", delivery_id=delivery.pk if i == 0 else None,
            received_at=now, deadline_at=now + timedelta(minutes=5), next_at=now))
        sends.append(ListSend.objects.create(
            account=account, entity_type="leads", entity_ids=list(range(1, 121 + i)), text=SECRET_TEXTS[2],
            state="done", position=120 + i, sent=100, no_phone=15, not_found=4, refused=1 + i,
            refused_by={"limits": 1 + i}, created_at=now))
    key = pipeline_key_rotate(account=account)
    return {"event": events[0], "request": requests[0], "send": sends[0], "key": key, "delivery": delivery}


@pytest.fixture
def data(account, settings):
    return fill(account, 3, settings)


@pytest.fixture
def superuser(data):
    return staff_client(username="root", superuser=True)[0]


def objects(data) -> dict:
    return {PipelineEvent: data["event"], PipelineKey: data["key"], SalesbotRequest: data["request"],
            ListSend: data["send"]}


def assert_nothing_secret(body: str, data):
    key = PipelineKey.objects.get(pk=data["key"].pk)
    assert key.key not in body and key.key_digest not in body
    for text in SECRET_TEXTS:
        assert text not in body
    assert "3456789" not in body and "345-67-89" not in body


# --- the pages render ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_each_changelist_renders_for_a_superuser(superuser, data, model):
    require_postgres("the admin pages")
    response = superuser.get(url(model))
    assert response.status_code == 200
    assert listed_ids(response, model) >= {str(objects(data)[model].pk)}
    body = response.content.decode()
    assert "acme" in body
    assert_nothing_secret(body, data)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_each_change_page_renders_read_only(superuser, data, model):
    obj = objects(data)[model]
    response = superuser.get(url(model, "change", obj.pk))
    assert response.status_code == 200
    body = response.content.decode()
    assert "acme" in body
    assert 'name="_save"' not in body and "<textarea" not in body and 'type="text"' not in body
    assert_nothing_secret(body, data)


def test_the_columns_staff_need(superuser, data):
    delivery = reverse("admin:deliveries_delivery_change", args=[data["delivery"].pk])
    events = superuser.get(url(PipelineEvent)).content.decode()
    assert "7001" in events and "40000002" in events and "no_phone" in events and delivery in events
    requests = superuser.get(url(SalesbotRequest)).content.decode()
    assert "leads/8001" in requests and "salesbot 31" in requests and "limits" in requests and delivery in requests
    sends = superuser.get(url(ListSend)).content.decode()
    for figure in ("<td class=\"field-progress\">120 / 120</td>",
                   "<td class=\"field-sent\">100</td>", "<td class=\"field-without_phone\">15</td>",
                   "<td class=\"field-missing\">4</td>", "<td class=\"field-refusals\">1</td>"):
        assert figure in sends
    keys = superuser.get(url(PipelineKey)).content.decode()
    assert "field-has_key" in keys and "icon-yes" in keys
    # The change pages: the phone masked (the Salesbot's as amoCRM gave it, national format), the key's times.
    assert "+7 912 ***-**-89" in superuser.get(url(PipelineEvent, "change", data["event"].pk)).content.decode()
    assert "+7 912 ***-**-89" in superuser.get(url(SalesbotRequest, "change", data["request"].pk)).content.decode()
    key_page = superuser.get(url(PipelineKey, "change", data["key"].pk)).content.decode()
    assert "field-rotated_at" in key_page and "field-refused_count" in key_page


@pytest.mark.parametrize("language, words", [
    ("ru", {ListSend: ["рассылки по списку", "обработано", "нет телефона", "не найдено", "отклонено"],
            PipelineKey: ["ключи воронки", "ключ задан"], PipelineEvent: ["события воронки", "id сделки"],
            SalesbotRequest: ["бот", "выход", "поддомен аккаунта"]}),
    ("en", {ListSend: ["list sends", "processed", "no phone", "not found", "refused"],
            PipelineKey: ["pipeline keys", "key set"], PipelineEvent: ["pipeline events", "lead id"],
            SalesbotRequest: ["bot", "exit", "subdomain"]}),
])
def test_pages_in_russian_and_english(superuser, data, language, words):
    for model, expected in words.items():
        body = superuser.get(url(model), HTTP_ACCEPT_LANGUAGE=language).content.decode().lower()
        assert [word for word in expected if word not in body] == [], model.__name__


def test_filters_and_search_narrow_the_lists(superuser, data, integration, settings):
    other = Account.objects.create(integration=integration, amo_id=777001, subdomain="globex", domain="amocrm.ru")
    theirs = fill(other, 1, settings)
    event, mine = str(theirs["event"].pk), str(data["event"].pk)
    assert listed_ids(superuser.get(url(PipelineEvent), {"state__exact": "sent"}), PipelineEvent) == {mine, event}
    assert listed_ids(superuser.get(url(PipelineEvent), {"q": "globex"}), PipelineEvent) == {event}
    assert listed_ids(superuser.get(url(PipelineEvent), {"q": "777001"}), PipelineEvent) == {event}
    assert listed_ids(superuser.get(url(PipelineEvent), {"q": "7001"}), PipelineEvent) == {mine, event}  # lead id
    assert listed_ids(superuser.get(url(PipelineEvent), {"q": "7002"}), PipelineEvent) == {
        str(PipelineEvent.objects.get(account=data["event"].account, lead_id=7002).pk)}
    assert listed_ids(superuser.get(url(SalesbotRequest), {"exit__exact": "sent", "q": "acme"}),
                      SalesbotRequest) == {str(data["request"].pk)}
    assert listed_ids(superuser.get(url(SalesbotRequest), {"q": "8001"}), SalesbotRequest) == {
        str(data["request"].pk), str(theirs["request"].pk)}
    assert listed_ids(superuser.get(url(ListSend), {"q": "GLOBEX.amocrm.ru"}), ListSend) == {str(theirs["send"].pk)}
    assert listed_ids(superuser.get(url(PipelineKey), {"q": "globex"}), PipelineKey) == {str(theirs["key"].pk)}
    # Never by text.
    for model, text in [(PipelineEvent, SECRET_TEXTS[0]), (SalesbotRequest, SECRET_TEXTS[1]),
                        (ListSend, SECRET_TEXTS[2]), (ListSend, "Акция")]:
        assert listed_ids(superuser.get(url(model), {"q": text}), model) == set()


# --- no N+1 ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_the_lists_take_a_fixed_number_of_queries(superuser, data, account, settings, model,
                                                  django_assert_max_num_queries):
    require_postgres("the query count")
    superuser.get(url(model))  # the session and the user, as on every page
    with django_assert_max_num_queries(10) as few:
        assert superuser.get(url(model)).status_code == 200
    for n in range(40):  # more rows of the other accounts: the same queries
        other = Account.objects.create(integration=account.integration, amo_id=500000 + n, subdomain=f"a{n}")
        PipelineEvent.objects.create(account=other, lead_id=n + 1, status_id=2, event_type=15, event_time=n)
        SalesbotRequest.objects.create(account=other, bot_id=1, continue_id=n + 1, entity_type="leads", entity_id=n,
                                       received_at=timezone.now(), deadline_at=timezone.now(), next_at=timezone.now())
        ListSend.objects.create(account=other, entity_type="contacts", entity_ids=[1, 2], created_at=timezone.now())
        pipeline_key_get_or_create(account=other)
    with django_assert_max_num_queries(len(few.captured_queries)):
        response = superuser.get(url(model))
    assert response.status_code == 200 and len(listed_ids(response, model)) >= 40


# --- nothing can be changed ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_nothing_is_addable_changeable_or_deletable(superuser, data, model):
    obj = objects(data)[model]
    before = model.objects.count()
    assert superuser.get(url(model, "add")).status_code == 403
    assert superuser.post(url(model, "add"), {"account": obj.account_id, "state": "done"}).status_code == 403
    assert superuser.post(url(model, "change", obj.pk), {"state": "done", "detail": "x"}).status_code == 403
    assert superuser.get(url(model, "delete", obj.pk)).status_code == 403
    assert superuser.post(url(model, "delete", obj.pk), {"post": "yes"}).status_code == 403
    listing = superuser.get(url(model)).content.decode()
    assert url(model, "add") not in listing and 'name="action"' not in listing  # no delete_selected either
    assert superuser.post(url(model), {"action": "delete_selected", "_selected_action": [obj.pk],
                                       "post": "yes"}).status_code in (200, 302)
    assert model.objects.count() == before
    obj.refresh_from_db()


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_staff_with_the_view_permission_only_reads(data, model):
    viewer, _ = staff_client(f"crm.view_{model._meta.model_name}", username="viewer")
    obj = objects(data)[model]
    assert viewer.get(url(model)).status_code == 200
    assert viewer.get(url(model, "change", obj.pk)).status_code == 200
    assert viewer.post(url(model, "change", obj.pk), {"state": "done"}).status_code == 403
    assert viewer.post(url(model, "delete", obj.pk), {"post": "yes"}).status_code == 403
    others = [m for m in MODELS if m is not model]
    assert all(viewer.get(url(other)).status_code == 403 for other in others)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_a_user_who_is_not_staff_is_sent_to_the_login(data, model):
    plain = User.objects.create_user("plain", password="pw-plain")
    client = Client()
    client.force_login(plain)
    obj = objects(data)[model]
    for address in (url(model), url(model, "change", obj.pk)):
        for response in (client.get(address), Client().get(address)):
            assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login"))
    assert client.post(url(model, "delete", obj.pk), {"post": "yes"}).status_code == 302
    assert model.objects.filter(pk=obj.pk).exists()


# --- URL tricks ---------------------------------------------------------------------------------------------------
TRICKS = [
    {"state__exact": "bogus"}, {"exit__exact": "bogus"}, {"entity_type__exact": "bogus"}, {"o": "999"},
    {"o": "-1.2.3.999"}, {"o": "x"}, {"q": "x" * 20_000}, {"q": "9" * 40}, {"q": "9223372036854775808"},
    {"q": "٣٤٥"}, {"q": "' OR 1=1 --"}, {"q": "%"}, {"p": "999"}, {"p": "-1"}, {"state__exact": "\x00"},
    {"text__startswith": "В"}, {"text__contains": "заказ"}, {"key_digest__startswith": "a"},
    {"key__startswith": "a"}, {"phone__startswith": "+7"}, {"state__isnull": "True"}, {"account__id__exact": "1"},
    {"_to_field": "key_digest"}, {"_to_field": "text"}, {"nonsense": "1"},
]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("params", TRICKS, ids=lambda p: "&".join(f"{k}={v[:12]!r}" for k, v in p.items()))
def test_url_tricks_answer_a_4xx_or_an_empty_list(superuser, data, model, params):
    response = superuser.get(url(model), params)
    if response.status_code == 200:
        if "o" in params:  # a column that is not sortable: ignored, the newest first as always
            assert response.context["cl"].get_ordering_field_columns() == {}
            assert listed_ids(response, model)
        elif "p" in params:  # a page out of range: Django's nearest page
            assert listed_ids(response, model)
        else:  # a search or a filter value that names nothing
            assert listed_ids(response, model) == set(), params
        assert_nothing_secret(response.content.decode(), data)
    elif response.status_code == 302:  # Django's answer to a wrong filter value or page: the list, with ?e=1
        assert response["Location"].endswith("?e=1"), params
        assert superuser.get(response["Location"]).status_code == 200
    else:
        assert 400 <= response.status_code < 500, (params, response.status_code)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_a_nul_in_the_search_is_django_s_form_error(superuser, data, model):
    """Django's search form refuses it with a message and lists as without a search: no database error."""
    response = superuser.get(url(model), {"q": "a\x00b"})
    assert response.status_code == 200
    assert [str(message) for message in response.context["messages"]]
    assert_nothing_secret(response.content.decode(), data)


ODD_IDS = ["0", "123456789", "abc", "²", "٣", "99999999999999999999", "-1", "1.5",
           "00000000-0000-0000-0000-000000000001", "%00", "1;DROP"]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("object_id", ODD_IDS)
def test_an_id_that_names_nothing_is_a_404(superuser, data, model, object_id):
    for view in ("change", "history", "delete"):
        address = url(model, view, "0").replace("/0/", f"/{object_id}/")
        assert superuser.get(address).status_code == 404, (view, object_id)
    assert superuser.post(url(model, "change", "0").replace("/0/", f"/{object_id}/"), {}).status_code in (403, 404)
