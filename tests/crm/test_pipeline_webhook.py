"""POST /amocrm/pipeline: the digital pipeline's webhook in both encodings amoCRM uses, each lead event,
customer and other events acknowledged and ignored, the account's key (keyless, forged and another
account's calls refused, sending nothing, counted for the owner), duplicates recorded once, and hostile
input answered 4xx JSON, never 5xx. Bodies are built by the fake amoCRM's own encoder
(tests/fakes/amocrm/outgoing.py), the way amoCRM sends them."""

import json
import logging

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from crm.models import PipelineEvent, PipelineKey
from crm.pipeline_inbox import forget_pipeline_keys, pipeline_key_get_or_create, pipeline_key_rotate
from tests.fakes.amocrm.outgoing import dp_webhook_body, encode, php_form

pytestmark = pytest.mark.django_db

URL = "/amocrm/pipeline"
LEAD, STAGE, PIPELINE, AT = 20000123, 40000002, 7000001, 1764750000


@pytest.fixture(autouse=True)
def _fresh_keys():
    forget_pipeline_keys()
    yield
    forget_pipeline_keys()


@pytest.fixture
def key(account):
    return pipeline_key_get_or_create(account=account)


def body_for(*, key=None, amo_id=12345, lead=LEAD, event_type=15, element_type=2, at=AT,
             direction="went_to_trigger", settings=None, status=STAGE) -> dict:
    dp = {"message": "Здравствуйте, {{contact.first_name}}!", **(settings or {})}
    if key is not None:
        dp["key"] = key
    return dp_webhook_body(account_id=amo_id, subdomain="acme", lead_id=lead, status_id=status,
                           pipeline_id=PIPELINE, event_type=event_type, settings=dp, element_type=element_type,
                           direction=direction, event_time=at)


def post(client, body, encoding="form", **headers):
    data, content_type = encode(body, encoding) if isinstance(body, dict) else (body, headers.pop("content_type"))
    return client.generic("POST", URL, data, content_type=content_type, **headers)


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"detail", "code"} and body["code"] == code and body["detail"]
    return body


# --- both encodings, each lead event ------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["form", "json"])
@pytest.mark.parametrize("event_type", [1, 14, 15])
def test_a_lead_event_in_either_encoding_is_recorded(client, account, key, encoding, event_type):
    response = post(client, body_for(key=key.key, event_type=event_type, settings={"template_id": "17"}), encoding)
    assert response.status_code == 200, response.content
    assert response.json() == {"status": "accepted"}
    event = PipelineEvent.objects.get()
    assert (event.account, event.lead_id, event.status_id, event.pipeline_id, event.event_type, event.event_time,
            event.text, event.template_id, event.state) == (
        account, LEAD, STAGE, PIPELINE, event_type, AT, "Здравствуйте, {{contact.first_name}}!", 17, "pending")


def test_lead_added_without_a_direction_is_recorded(client, key):
    assert post(client, body_for(key=key.key, event_type=1, direction=None)).json() == {"status": "accepted"}
    assert PipelineEvent.objects.count() == 1


def test_a_json_body_may_carry_numbers_as_strings_and_settings_as_numbers(client, key):
    body = body_for(key=key.key, settings={"template_id": 5})
    body["event"]["data"]["id"] = str(LEAD)
    body["event"]["time"] = str(AT)
    body["account_id"] = "12345"
    assert post(client, body, "json").status_code == 200
    assert PipelineEvent.objects.values_list("lead_id", "event_time", "template_id").get() == (LEAD, AT, 5)


# --- events that send nothing -------------------------------------------------------------------------------
@pytest.mark.parametrize("event_type,element_type,reason", [
    (20, 12, "customer_event"), (21, 12, "customer_event"), (22, 12, "customer_event"),
    (15, 12, "customer_event"), (16, 2, "event_type"), (19, 2, "event_type")])
def test_customer_and_other_events_are_acknowledged_and_ignored_with_a_logged_reason(
        client, key, caplog, event_type, element_type, reason):
    caplog.set_level(logging.INFO, logger="crm.pipeline_inbox")
    response = post(client, body_for(key=key.key, event_type=event_type, element_type=element_type))
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ignored" and body["detail"].startswith(reason + ":")
    assert not PipelineEvent.objects.exists()
    assert any(r.getMessage() == f"pipeline webhook ignored: {reason}" for r in caplog.records)


@pytest.mark.parametrize("direction", ["went_from_trigger", "went_in_trigger"])
def test_a_lead_not_entering_the_stage_gets_nothing(client, key, direction):
    response = post(client, body_for(key=key.key, direction=direction))
    assert response.json()["status"] == "ignored" and not PipelineEvent.objects.exists()


# --- the account's key --------------------------------------------------------------------------------------
def test_a_call_without_the_key_is_refused_sends_nothing_and_is_counted(client, account, key):
    response = post(client, body_for(key=None), HTTP_ACCEPT_LANGUAGE="en")
    assert assert_error(response, 403, "forbidden")["detail"].startswith("This call does not carry")
    assert not PipelineEvent.objects.exists()
    key.refresh_from_db()
    assert key.refused_count == 1 and key.refused_last_at is not None


def test_a_forged_key_is_refused_and_counted_on_the_account_it_names(client, key):
    for forged in ("x" * 32, key.key[:-1], key.key + "x", key.key.upper(), "ключ"):
        assert_error(post(client, body_for(key=forged)), 403, "forbidden")
    key.refresh_from_db()
    assert key.refused_count == 5
    assert not PipelineEvent.objects.exists()


def test_another_accounts_key_is_refused_and_counted_on_the_keys_account(client, account, other_account, key):
    others = pipeline_key_get_or_create(account=other_account)
    assert_error(post(client, body_for(key=others.key, amo_id=12345)), 403, "forbidden")
    others.refresh_from_db()
    key.refresh_from_db()
    assert (others.refused_count, key.refused_count) == (1, 0)
    assert not PipelineEvent.objects.exists()


def test_a_call_naming_no_known_account_is_refused_and_counted_nowhere(client, key):
    assert_error(post(client, body_for(key=None, amo_id=999999)), 403, "forbidden")
    key.refresh_from_db()
    assert key.refused_count == 0


def test_a_key_that_was_replaced_is_refused(client, account, key):
    old = key.key
    assert post(client, body_for(key=old)).status_code == 200
    new = pipeline_key_rotate(account=account)
    assert_error(post(client, body_for(key=old, at=AT + 1)), 403, "forbidden")
    assert post(client, body_for(key=new.key, at=AT + 2)).status_code == 200
    assert sorted(PipelineEvent.objects.values_list("event_time", flat=True)) == [AT, AT + 2]


def test_a_disabled_account_is_refused(client, account, key):
    account.is_active = False
    account.save()
    assert_error(post(client, body_for(key=key.key)), 403, "account_disabled")
    assert not PipelineEvent.objects.exists()


def test_the_refusal_speaks_the_requests_language(client, key):
    body = assert_error(post(client, body_for(key="nope"), HTTP_ACCEPT_LANGUAGE="ru"), 403, "forbidden")
    assert "ключ" in body["detail"]


def test_the_key_is_kept_encrypted(account, key):
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT key FROM crm_pipelinekey WHERE id = %s", [key.pk])
        [stored] = cursor.fetchone()
    assert key.key not in stored and PipelineKey.objects.get().key == key.key


# --- duplicates ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("second_encoding", ["form", "json"])
def test_the_same_event_twice_is_recorded_once(client, key, second_encoding):
    assert post(client, body_for(key=key.key)).json() == {"status": "accepted"}
    assert post(client, body_for(key=key.key), second_encoding).json() == {"status": "duplicate"}
    assert PipelineEvent.objects.count() == 1


def test_the_same_lead_entering_again_later_or_another_stage_is_a_new_event(client, key):
    assert post(client, body_for(key=key.key)).status_code == 200
    assert post(client, body_for(key=key.key, at=AT + 60)).json()["status"] == "accepted"
    assert post(client, body_for(key=key.key, status=STAGE + 1)).json()["status"] == "accepted"
    assert post(client, body_for(key=key.key, lead=LEAD + 1)).json()["status"] == "accepted"
    assert PipelineEvent.objects.count() == 4


def test_the_same_lead_and_time_in_two_accounts_are_two_events(client, key, other_account):
    others = pipeline_key_get_or_create(account=other_account)
    assert post(client, body_for(key=key.key)).status_code == 200
    assert post(client, body_for(key=others.key, amo_id=55555)).status_code == 200
    assert PipelineEvent.objects.count() == 2


# --- hostile input ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field,value", [
    ("lead", 2**70), ("lead", -5), ("lead", 0), ("lead", "١٢٣"), ("lead", "１２３"), ("lead", "12_3"), ("lead", " 12"),
    ("lead", "0123"), ("lead", 1.5), ("lead", True), ("lead", [1]), ("lead", {"a": 1}), ("lead", "9" * 40),
    ("at", 2**62), ("at", "²³"), ("status", "x"), ("lead", None), ("status", None), ("at", None),
])
def test_bad_numbers_are_a_clear_400(client, key, field, value):
    body = body_for(key=key.key)
    target = {"lead": ("data", "id"), "status": ("data", "status_id"), "at": ("time",)}[field]
    node = body["event"]
    for part in target[:-1]:
        node = node[part]
    node[target[-1]] = value
    assert_error(post(client, body, "json", HTTP_ACCEPT_LANGUAGE="en"), 400, "invalid")
    assert not PipelineEvent.objects.exists()


def test_bad_numbers_in_the_form_encoding_are_a_clear_400(client, key):
    for lead in ("١٢٣", "99999999999999999999999", "-1", "1e3", ""):
        body = body_for(key=key.key)
        body["event"]["data"]["id"] = lead
        assert_error(post(client, body, "form"), 400, "invalid")
    assert not PipelineEvent.objects.exists()


def test_a_template_id_that_is_not_an_id_is_a_clear_400(client, key):
    for template in ("abc", "٣", 2**70, -1):
        assert_error(post(client, body_for(key=key.key, settings={"template_id": template}), "json"), 400, "invalid")


@pytest.mark.parametrize("message", ["a\x00b", "x" * 5000, ["list"]])
def test_a_message_that_cannot_be_stored_is_a_clear_400(client, key, message):
    assert_error(post(client, body_for(key=key.key, settings={"message": message}), "json"), 400, "invalid")


def test_deep_json_is_refused_without_recursion(client, key):
    deep = "[" * 20_000 + "]" * 20_000
    assert_error(post(client, deep.encode(), content_type="application/json"), 400, "bad_body")
    nested = body_for(key=key.key)
    nested["action"]["settings"]["widget"]["settings"]["deep"] = json.loads("[" * 20 + "]" * 20)
    assert_error(post(client, nested, "json"), 400, "bad_body")


@pytest.mark.parametrize("raw", [b"not json", b"[]", b'"text"', b"\xff\xfe", b"{\"event\": NaN}", b" "])
def test_a_json_body_that_is_not_an_object_is_a_400(client, key, raw):
    assert_error(post(client, raw, content_type="application/json"), 400, "bad_body")


def test_a_multipart_body_with_a_file_is_a_400(client, key):
    response = client.post(URL, {"event[type]": "15", "file": SimpleUploadedFile("lead.txt", b"x" * 100)})
    assert_error(response, 400, "bad_body")


def test_an_oversized_body_is_a_413_before_it_is_read(client, key):
    body = body_for(key=key.key, settings={"message": "x" * 70_000})
    assert_error(post(client, php_form(body).encode(), content_type="application/x-www-form-urlencoded"),
                 413, "body_too_large")


def test_too_many_form_fields_is_a_400(client, key):
    raw = "&".join(f"f{n}=1" for n in range(1500)).encode()
    assert_error(post(client, raw, content_type="application/x-www-form-urlencoded"), 400, "bad_body")


def test_an_empty_or_foreign_shaped_body_is_refused_for_its_missing_key(client, key):
    assert_error(post(client, b"", content_type="application/x-www-form-urlencoded"), 403, "forbidden")
    assert_error(post(client, b'{"leads": {"status": [{"id": 1}]}}', content_type="application/json"),
                 403, "forbidden")


def test_a_call_with_the_key_but_no_event_is_a_400(client, key):
    assert_error(post(client, f'{{"action": {{"settings": {{"widget": {{"settings": {{"key": "{key.key}"}}}}}}}}}}'
                      .encode(), content_type="application/json"), 400, "invalid")


def test_other_methods(client):
    assert client.get(URL).json()["endpoint"] == "amoCRM digital pipeline"
    assert client.get(URL + "/").status_code == 200  # with or without the slash, never a redirect
    response = client.put(URL, b"", content_type="application/json")
    assert_error(response, 405, "method_not_allowed")
    assert response["Allow"] == "GET, HEAD, POST"
