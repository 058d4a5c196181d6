"""The fake amoCRM itself, over real HTTP: auth and token expiry, the rate limit's counting rule, leads,
contacts, users, notes, tasks, Salesbot, account states, and what it builds for amoCRM's own calls."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from urllib.parse import parse_qsl

import httpx
import jwt
import pytest

from tests.e2e.stack import free_port
from tests.fakes.amocrm import FakeAmoCRM

CLIENT = httpx.Client(timeout=5)
CLIENT_ID = "0b0832f6-d123-4123-9123-e73f2368833c"
SECRET = "fake-amo-secret-" + "s" * 48
REDIRECT_URI = "https://smsgate.example.com/amocrm/oauth"
ACCOUNT = 12345


@pytest.fixture
def amo():
    with FakeAmoCRM(client_id=CLIENT_ID, client_secret=SECRET, redirect_uri=REDIRECT_URI) as fake:
        fake.add_account(ACCOUNT, subdomain="acme")
        yield fake


class Api:
    """A bare client of one account's API (no limiter: the tests decide the pace)."""

    def __init__(self, fake, account_id=ACCOUNT, *, token=None, **pair_args):
        self.fake, self.account_id = fake, account_id
        self.token = token or fake.issue_token_pair(account_id, **pair_args)["access_token"]

    def get(self, path, params=None):
        return CLIENT.get(self.fake.url + path, params=params, headers={"Authorization": f"Bearer {self.token}"})

    def post(self, path, body):
        return CLIENT.post(self.fake.url + path, json=body, headers={"Authorization": f"Bearer {self.token}"})


@pytest.fixture
def api(amo):
    amo.account(ACCOUNT).limit_rps = 0  # most tests make many calls; the limit has its own tests
    return Api(amo)


def ids_params(ids, **extra):
    return [("filter[id][]", i) for i in ids] + list(extra.items())


# --- auth -------------------------------------------------------------------------------------------------------
def test_an_unknown_token_gets_401_problem_json(amo):
    response = Api(amo, token="not-a-token").get("/api/v4/account")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 401 and response.json()["title"] == "Unauthorized"
    assert amo.request_log(ACCOUNT) == []  # no account to count it for


def test_a_token_pair_without_a_code_exchange_works_and_names_the_account_and_user(amo):
    pair = amo.issue_token_pair(777, subdomain="shop")
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    assert claims["account_id"] == 777 and int(claims["sub"]) == amo.account(777).admin_id
    assert claims["exp"] - claims["iat"] == pair["expires_in"] == 86400
    account = Api(amo, token=pair["access_token"]).get("/api/v4/account")
    assert account.status_code == 200 and account.headers["content-type"] == "application/hal+json"
    assert (account.json()["id"], account.json()["subdomain"]) == (777, "shop")
    assert amo.live_refresh_tokens(777) == [pair["refresh_token"]]


def test_expired_access_tokens_answer_401_until_the_client_refreshes(amo):
    pair = amo.issue_token_pair(ACCOUNT)
    client = Api(amo, token=pair["access_token"])
    assert client.get("/api/v4/account").status_code == 200
    amo.expire_access_tokens(ACCOUNT)
    assert client.get("/api/v4/account").status_code == 401
    refreshed = CLIENT.post(f"{amo.url}/oauth2/access_token", json={
        "client_id": CLIENT_ID, "client_secret": SECRET, "redirect_uri": REDIRECT_URI,
        "grant_type": "refresh_token", "refresh_token": pair["refresh_token"]})
    assert refreshed.status_code == 200
    assert Api(amo, token=refreshed.json()["access_token"]).get("/api/v4/account").status_code == 200
    assert client.get("/api/v4/account").status_code == 401  # the old one stays dead


def test_the_exp_of_an_access_token_is_enforced(amo):
    amo.expires_in = 1
    client = Api(amo)
    assert client.get("/api/v4/account").status_code == 200
    time.sleep(1.05)
    assert client.get("/api/v4/account").status_code == 401


def test_revoked_tokens_answer_401_and_cannot_be_refreshed(amo):
    pair = amo.issue_token_pair(ACCOUNT)
    amo.revoke_tokens(ACCOUNT)
    assert Api(amo, token=pair["access_token"]).get("/api/v4/account").status_code == 401
    assert amo.live_refresh_tokens(ACCOUNT) == []


def test_a_code_exchange_gives_a_pair_that_reads_the_api(amo):
    code = amo.issue_code(account_id=4242, subdomain="newco")
    pair = CLIENT.post(f"{amo.url}/oauth2/access_token", json={
        "client_id": CLIENT_ID, "client_secret": SECRET, "redirect_uri": REDIRECT_URI,
        "grant_type": "authorization_code", "code": code}).json()
    assert Api(amo, token=pair["access_token"]).get("/api/v4/account").json()["subdomain"] == "newco"


# --- the rate limit ---------------------------------------------------------------------------------------------
def test_a_burst_of_8_gets_7_accepted_and_1_refused(amo):
    client = Api(amo)
    statuses = [client.get("/api/v4/account").status_code for _ in range(8)]
    assert statuses == [200] * 7 + [429]
    assert amo.peak_rps(ACCOUNT) == 8 and amo.refused_429(ACCOUNT) == 1
    log = amo.request_log(ACCOUNT)
    assert [(c.method, c.path, c.status) for c in log] == [("GET", "/api/v4/account", s) for s in statuses]
    assert log[-1].at - log[0].at < 1.0


def test_a_concurrent_burst_gets_exactly_7_accepted(amo):
    client = Api(amo)
    barrier, statuses = threading.Barrier(16), []

    def call():
        barrier.wait()
        statuses.append(client.get("/api/v4/account").status_code)

    threads = [threading.Thread(target=call) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log = amo.request_log(ACCOUNT)
    assert log[-1].at - log[0].at < 1.0  # the rule below holds for arrivals within one second
    assert sorted(statuses) == [200] * 7 + [429] * 9
    assert amo.refused_429(ACCOUNT) == 9 and amo.peak_rps(ACCOUNT) == 16


def test_refused_requests_do_not_count_and_the_window_slides(amo):
    client = Api(amo)
    for _ in range(7):
        assert client.get("/api/v4/account").status_code == 200
    assert client.get("/api/v4/account").status_code == 429
    first = amo.request_log(ACCOUNT)[0].at
    while time.monotonic() < first + 1.02:  # the first accepted request leaves the window
        time.sleep(0.01)
    assert client.get("/api/v4/account").status_code == 200
    assert client.get("/api/v4/account").status_code in (200, 429)  # depends on when the 2nd left the window
    assert amo.refused_429(ACCOUNT) >= 1


def test_a_client_paced_under_7_per_second_is_never_refused(amo):
    client = Api(amo)
    statuses = []
    for _ in range(15):
        statuses.append(client.get("/api/v4/account").status_code)
        time.sleep(0.15)
    assert statuses == [200] * 15 and amo.refused_429(ACCOUNT) == 0
    assert amo.peak_rps(ACCOUNT) <= 7


def test_the_limit_is_per_account_and_can_be_switched_off(amo):
    busy, quiet = Api(amo), Api(amo, 999, subdomain="other")
    assert [busy.get("/api/v4/account").status_code for _ in range(8)][-1] == 429
    assert quiet.get("/api/v4/account").status_code == 200
    amo.account(999).limit_rps = 0
    assert {quiet.get("/api/v4/account").status_code for _ in range(20)} == {200}
    assert amo.peak_rps(999) == 21 and amo.refused_429(999) == 0


def test_requests_with_an_expired_token_still_count(amo):
    client = Api(amo)
    amo.expire_access_tokens(ACCOUNT)
    statuses = [client.get("/api/v4/account").status_code for _ in range(8)]
    assert statuses == [401] * 7 + [429]


# --- leads -------------------------------------------------------------------------------------------------------
def test_a_lead_reads_with_its_contacts_and_custom_fields_in_amocrms_shape(amo, api):
    address = amo.add_custom_field(ACCOUNT, "leads", "Адрес", "text")
    source = amo.add_custom_field(ACCOUNT, "leads", "Источник", "select", enums=("Сайт", "Звонок"))
    main, other = amo.add_contact(ACCOUNT, name="Ольга"), amo.add_contact(ACCOUNT, name="Пётр")
    lead_id = amo.add_lead(ACCOUNT, name="Кухня", price=150000, contacts=[main, other],
                           custom_fields={address: "ул. Ленина, 1", source: "Звонок"})
    lead = api.get(f"/api/v4/leads/{lead_id}", {"with": "contacts"}).json()
    account = amo.account(ACCOUNT)
    assert {k: lead[k] for k in ("id", "name", "price", "pipeline_id", "responsible_user_id", "account_id")} == {
        "id": lead_id, "name": "Кухня", "price": 150000, "pipeline_id": account.main_pipeline.id,
        "responsible_user_id": account.admin_id, "account_id": ACCOUNT}
    assert lead["status_id"] == account.main_pipeline.statuses[1].id
    assert isinstance(lead["created_at"], int) and isinstance(lead["updated_at"], int)
    [select_enum] = [i for i, v in account.fields[source].enums if v == "Звонок"]
    assert lead["custom_fields_values"] == [
        {"field_id": address, "field_name": "Адрес", "field_code": None, "field_type": "text",
         "values": [{"value": "ул. Ленина, 1"}]},
        {"field_id": source, "field_name": "Источник", "field_code": None, "field_type": "select",
         "values": [{"value": "Звонок", "enum_id": select_enum}]}]
    assert [(c["id"], c["is_main"]) for c in lead["_embedded"]["contacts"]] == [(main, True), (other, False)]
    assert "contacts" not in api.get(f"/api/v4/leads/{lead_id}").json()["_embedded"]


def test_an_unknown_lead_and_another_accounts_lead_are_204(amo, api):
    amo.add_account(999, subdomain="other")
    foreign = amo.add_lead(999)
    assert api.get("/api/v4/leads/1").status_code == 204
    assert api.get(f"/api/v4/leads/{foreign}").status_code == 204
    assert api.get("/api/v4/leads", ids_params([foreign])).status_code == 204


def test_leads_by_ids_come_250_per_page_with_a_next_link(amo, api):
    lead_ids = amo.add_leads(ACCOUNT, 300)
    first = api.get("/api/v4/leads", ids_params(lead_ids, limit=250, **{"with": "contacts"}))
    assert first.status_code == 200 and first.json()["_page"] == 1
    leads = first.json()["_embedded"]["leads"]
    assert len(leads) == 250 and all(len(lead["_embedded"]["contacts"]) == 1 for lead in leads)
    second = CLIENT.get(first.json()["_links"]["next"]["href"], headers={"Authorization": f"Bearer {api.token}"})
    rest = second.json()["_embedded"]["leads"]
    assert len(rest) == 50 and "next" not in second.json()["_links"]
    assert sorted(lead["id"] for lead in leads + rest) == sorted(lead_ids)
    assert "contacts" in rest[0]["_embedded"]  # the next link keeps the query


def test_a_full_page_links_to_a_next_page_that_is_204(amo, api):
    lead_ids = amo.add_leads(ACCOUNT, 250)
    first = api.get("/api/v4/leads", ids_params(lead_ids, limit=250))
    assert len(first.json()["_embedded"]["leads"]) == 250
    following = CLIENT.get(first.json()["_links"]["next"]["href"], headers={"Authorization": f"Bearer {api.token}"})
    assert following.status_code == 204 and following.content == b""


def test_a_limit_above_250_is_cut_to_250(amo, api):
    amo.add_leads(ACCOUNT, 260)
    assert len(api.get("/api/v4/leads", {"limit": 500}).json()["_embedded"]["leads"]) == 250


@pytest.mark.parametrize("key", ["filter[id]", "filter[id][]", "filter[id][0]"])
def test_each_form_of_the_id_filter_works(amo, api, key):
    wanted, _ = amo.add_lead(ACCOUNT), amo.add_lead(ACCOUNT)
    assert [lead["id"] for lead in api.get("/api/v4/leads", {key: wanted}).json()["_embedded"]["leads"]] == [wanted]


def test_an_id_filter_matching_nothing_is_204(amo, api):
    amo.add_lead(ACCOUNT)
    assert api.get("/api/v4/leads", {"filter[id][]": "abc"}).status_code == 204
    assert api.get("/api/v4/leads", {"filter[id][]": 1}).status_code == 204


def test_every_pipeline_has_an_unsorted_status_and_won_and_lost(amo, api):
    unsorted = amo.add_lead(ACCOUNT, unsorted=True)
    pipeline = api.get("/api/v4/leads/pipelines").json()["_embedded"]["pipelines"][0]
    statuses = {s["id"]: s for s in pipeline["_embedded"]["statuses"]}
    [unsorted_status] = [s for s in statuses.values() if s["type"] == 1]
    assert unsorted_status["name"] == "Неразобранное"
    assert {142, 143} <= set(statuses)
    assert api.get(f"/api/v4/leads/{unsorted}").json()["status_id"] == unsorted_status["id"]
    other = amo.add_pipeline(ACCOUNT, "Вторая")
    assert other.unsorted_status_id != unsorted_status["id"] and {142, 143} <= {s.id for s in other.statuses}


def test_lead_filters_by_pipeline_and_status(amo, api):
    account = amo.account(ACCOUNT)
    moved, stays = amo.add_lead(ACCOUNT), amo.add_lead(ACCOUNT)
    amo.move_lead(ACCOUNT, moved, 142)
    found = api.get("/api/v4/leads", {"filter[statuses][0][pipeline_id]": account.main_pipeline.id,
                                      "filter[statuses][0][status_id]": 142}).json()["_embedded"]["leads"]
    assert [lead["id"] for lead in found] == [moved] and found[0]["closed_at"] is not None
    assert api.get(f"/api/v4/leads/{stays}").json()["closed_at"] is None


# --- contacts ------------------------------------------------------------------------------------------------------
def test_a_contacts_phones_and_emails_read_in_amocrms_shape(amo, api):
    contact_id = amo.add_contact(ACCOUNT, first_name="Ольга", last_name="Иванова",
                                 phones=[("+7 (912) 345-67-89", "MOB"), "8 495 123-45-67"],
                                 emails=[("olga@example.com", "PRIV")])
    contact = api.get(f"/api/v4/contacts/{contact_id}").json()
    assert (contact["name"], contact["first_name"], contact["last_name"]) == ("Ольга Иванова", "Ольга", "Иванова")
    phone, email = contact["custom_fields_values"]
    account = amo.account(ACCOUNT)
    enum = dict((code, i) for i, code in account.phone_field.enums)
    assert phone == {"field_id": account.phone_field.id, "field_name": "Телефон", "field_code": "PHONE",
                     "field_type": "multitext",
                     "values": [{"value": "+7 (912) 345-67-89", "enum_id": enum["MOB"], "enum_code": "MOB"},
                                {"value": "8 495 123-45-67", "enum_id": enum["WORK"], "enum_code": "WORK"}]}
    assert email["field_code"] == "EMAIL" and email["values"][0]["enum_code"] == "PRIV"
    assert api.get("/api/v4/contacts/1").status_code == 204


def test_contacts_by_ids_by_phone_digits_and_with_their_leads(amo, api):
    olga = amo.add_contact(ACCOUNT, name="Ольга", phones=["+7 (912) 345-67-89"])
    petr = amo.add_contact(ACCOUNT, name="Пётр", phones=["+79160000000"])
    lead_id = amo.add_lead(ACCOUNT, contacts=[olga])
    by_ids = api.get("/api/v4/contacts", ids_params([olga, petr], limit=250)).json()["_embedded"]["contacts"]
    assert [c["id"] for c in by_ids] == [olga, petr]
    for query in ("89123456789", "+79123456789", "Ольга"):
        found = api.get("/api/v4/contacts", {"query": query}).json()["_embedded"]["contacts"]
        assert [c["id"] for c in found] == [olga], query
    assert api.get("/api/v4/contacts", {"query": "70000000001"}).status_code == 204
    with_leads = api.get(f"/api/v4/contacts/{olga}", {"with": "leads"}).json()
    assert [lead["id"] for lead in with_leads["_embedded"]["leads"]] == [lead_id]


# --- users and the account -------------------------------------------------------------------------------------------
def test_users_are_listed_for_an_admin_and_refused_to_others(amo, api):
    manager = amo.add_user(ACCOUNT, "Иван Петров", email="ivan@acme.example")
    users = api.get("/api/v4/users").json()["_embedded"]["users"]
    assert [(u["id"], u["rights"]["is_admin"]) for u in users] == [(amo.account(ACCOUNT).admin_id, True),
                                                                    (manager, False)]
    one = api.get(f"/api/v4/users/{manager}").json()
    assert (one["name"], one["email"]) == ("Иван Петров", "ivan@acme.example")
    as_manager = Api(amo, user_id=manager)
    assert as_manager.get("/api/v4/users").status_code == 403
    assert as_manager.get("/api/v4/account").json()["current_user_id"] == manager


def test_the_account_tolerates_with(api):
    body = api.get("/api/v4/account", {"with": "task_types,users_groups,amojo_id,unknown"}).json()
    assert (body["id"], body["subdomain"]) == (ACCOUNT, "acme")
    assert [t["code"] for t in body["_embedded"]["task_types"]] == ["FOLLOW_UP", "MEETING"]


# --- notes --------------------------------------------------------------------------------------------------------
def sms(entity_id=None, **extra):
    note = {"note_type": "sms_out", "params": {"text": "Ваш заказ готов", "phone": "+79123456789"}, **extra}
    if entity_id is not None:
        note["entity_id"] = entity_id
    return note


def test_sms_notes_are_written_and_read_back(amo, api):
    lead_id = amo.add_lead(ACCOUNT)
    response = api.post("/api/v4/leads/notes", [sms(lead_id, request_id="mine"), sms(lead_id, created_at=1700000000)])
    assert response.status_code == 200 and response.headers["content-type"] == "application/hal+json"
    created = response.json()["_embedded"]["notes"]
    assert [(n["entity_id"], n["request_id"]) for n in created] == [(lead_id, "mine"), (lead_id, "1")]
    read = api.get(f"/api/v4/leads/{lead_id}/notes").json()["_embedded"]["notes"]
    assert [n["id"] for n in read] == [n["id"] for n in created]
    assert read[0]["note_type"] == "sms_out"
    assert read[0]["params"] == {"text": "Ваш заказ готов", "phone": "+79123456789"}
    assert abs(read[0]["created_at"] - time.time()) < 5 and read[1]["created_at"] == 1700000000
    assert read[0]["created_by"] == amo.account(ACCOUNT).admin_id
    assert [n["id"] for n in amo.notes(ACCOUNT, "leads", lead_id, "sms_out")] == [n["id"] for n in created]
    note_id = created[0]["id"]
    assert api.get(f"/api/v4/leads/notes/{note_id}").json()["id"] == note_id
    assert api.get(f"/api/v4/leads/{lead_id}/notes/{note_id}").json()["entity_id"] == lead_id
    assert api.get(f"/api/v4/contacts/notes/{note_id}").status_code == 204


@pytest.mark.parametrize("entity_type", ["leads", "contacts", "companies", "customers"])
def test_notes_on_each_entity_through_its_own_route(amo, api, entity_type):
    entity_id = {"leads": amo.add_lead, "contacts": amo.add_contact, "companies": amo.add_company,
                 "customers": amo.add_customer}[entity_type](ACCOUNT)
    response = api.post(f"/api/v4/{entity_type}/{entity_id}/notes", [
        {"note_type": "service_message", "params": {"service": "smsgate", "text": "Доставлено"}},
        {"note_type": "common", "params": {"text": "Клиент просил перезвонить"}}])
    assert response.status_code == 200
    assert [n["note_type"] for n in amo.notes(ACCOUNT, entity_type, entity_id)] == ["service_message", "common"]


def test_invalid_notes_get_validation_errors_and_nothing_of_the_batch_is_written(amo, api):
    lead_id = amo.add_lead(ACCOUNT)
    response = api.post("/api/v4/leads/notes", [
        sms(lead_id),  # valid, but the batch fails
        {"entity_id": lead_id, "note_type": "sms_out", "params": {"phone": "+79123456789"}},
        {"entity_id": lead_id, "note_type": "service_message", "params": {"text": "x"}, "request_id": "svc"},
        {"entity_id": lead_id, "note_type": "mail_message", "params": {}},
        {"note_type": "common", "params": {"text": "x"}},
        {"entity_id": lead_id, "note_type": "sms_in", "params": {"text": None, "phone": 79123456789}},
    ])
    assert response.status_code == 400 and response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert (body["title"], body["status"], body["detail"]) == ("Bad Request", 400, "Request validation failed")
    errors = {e["request_id"]: [(x["code"], x["path"]) for x in e["errors"]] for e in body["validation-errors"]}
    assert errors == {"1": [("FieldMissing", "params.text")],
                      "svc": [("FieldMissing", "params.service")],
                      "3": [("NotSupportedChoice", "note_type")],
                      "4": [("FieldMissing", "entity_id")],
                      "5": [("NotNullable", "params.text"), ("InvalidType", "params.phone")]}
    assert amo.notes(ACCOUNT, "leads") == []


def test_a_note_body_must_be_a_json_array(amo, api):
    lead_id = amo.add_lead(ACCOUNT)
    assert api.post("/api/v4/leads/notes", sms(lead_id)).status_code == 400
    assert api.post("/api/v4/leads/notes", []).status_code == 400
    bad_json = CLIENT.post(f"{amo.url}/api/v4/leads/notes", content=b"[{",
                           headers={"Authorization": f"Bearer {api.token}", "Content-Type": "application/json"})
    assert bad_json.status_code == 400


def test_upper_case_sms_params_are_stored_but_read_back_as_nulls(amo, api):
    lead_id = amo.add_lead(ACCOUNT)
    note = {"entity_id": lead_id, "note_type": "sms_out", "params": {"TEXT": "Ваш код 1234", "PHONE": "+79123456789"}}
    assert api.post("/api/v4/leads/notes", [note]).status_code == 200
    [read] = api.get(f"/api/v4/leads/{lead_id}/notes").json()["_embedded"]["notes"]
    assert read["params"] == {"text": None, "phone": None}


def test_notes_on_an_unsorted_lead_or_an_unknown_entity_are_refused(amo, api):
    unsorted = amo.add_lead(ACCOUNT, unsorted=True)
    for target in (unsorted, 1):
        response = api.post("/api/v4/leads/notes", [sms(target)])
        assert response.status_code == 400
        [error] = response.json()["validation-errors"][0]["errors"]
        assert error["path"] == "entity_id"
    assert api.post(f"/api/v4/leads/{unsorted}/notes", [sms()]).status_code == 400
    assert amo.notes(ACCOUNT, "leads") == []
    amo.move_lead(ACCOUNT, unsorted, amo.account(ACCOUNT).main_pipeline.statuses[1].id)  # accepted
    assert api.post(f"/api/v4/leads/{unsorted}/notes", [sms()]).status_code == 200


def test_notes_are_read_with_filters_and_pages(amo, api):
    first, second = amo.add_lead(ACCOUNT), amo.add_lead(ACCOUNT)
    api.post("/api/v4/leads/notes", [sms(first), sms(second), {"entity_id": first, "note_type": "common",
                                                               "params": {"text": "x"}}])
    everything = amo.notes(ACCOUNT, "leads")
    updated = everything[0]["updated_at"]

    def read(params):
        response = api.get("/api/v4/leads/notes", params)
        return [] if response.status_code == 204 else [n["id"] for n in response.json()["_embedded"]["notes"]]

    sms_of_first = [n["id"] for n in everything if n["entity_id"] == first and n["note_type"] == "sms_out"]
    assert read([("filter[entity_id][]", first), ("filter[note_type][]", "sms_out")]) == sms_of_first
    assert read([("filter[entity_id][]", first), ("filter[entity_id][]", second),
                 ("filter[note_type]", "sms_out")]) == [n["id"] for n in everything if n["note_type"] == "sms_out"]
    assert len(read({"filter[updated_at][from]": updated, "filter[updated_at][to]": updated + 5})) == 3
    assert read({"filter[updated_at][from]": updated + 10}) == []
    assert read({"filter[updated_at]": updated - 1}) == [n["id"] for n in everything]
    paged = api.get("/api/v4/leads/notes", {"limit": 2}).json()
    assert len(paged["_embedded"]["notes"]) == 2 and "next" in paged["_links"]
    assert api.get(f"/api/v4/contacts/{first}/notes").status_code == 204


def test_note_ids_are_unique_across_accounts_and_concurrent_writers(amo, api):
    other = Api(amo, 999, subdomain="other")
    amo.account(999).limit_rps = 0
    targets = [(api, amo.add_lead(ACCOUNT)), (other, amo.add_lead(999))]

    def write(client, lead_id):
        for _ in range(5):
            assert client.post("/api/v4/leads/notes", [sms(lead_id), sms(lead_id)]).status_code == 200

    threads = [threading.Thread(target=write, args=target) for target in targets * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [n["id"] for account_id in (ACCOUNT, 999) for n in amo.notes(account_id, "leads")]
    assert len(ids) == len(set(ids)) == 60


# --- tasks and Salesbot -------------------------------------------------------------------------------------------
def test_tasks_are_recorded_and_validated(amo, api):
    lead_id = amo.add_lead(ACCOUNT)
    task = {"text": "Перезвонить: SMS не доставлено", "complete_till": 1893456000, "entity_id": lead_id,
            "entity_type": "leads", "responsible_user_id": amo.account(ACCOUNT).admin_id, "task_type_id": 1}
    response = api.post("/api/v4/tasks", [task])
    assert response.status_code == 200 and response.json()["_embedded"]["tasks"][0]["request_id"] == "0"
    [recorded] = amo.tasks(ACCOUNT)
    assert (recorded.text, recorded.entity_id, recorded.entity_type) == (task["text"], lead_id, "leads")
    bad = api.post("/api/v4/tasks", [{"text": "x"}, {**task, "entity_id": 1}])
    assert bad.status_code == 400 and len(amo.tasks(ACCOUNT)) == 1
    assert {e["request_id"] for e in bad.json()["validation-errors"]} == {"0", "1"}


def test_a_salesbot_request_carries_an_hs512_bot_token(amo):
    lead_id = amo.add_lead(ACCOUNT)
    body = amo.salesbot_request(ACCOUNT, entity_id=lead_id, data={"text": "Здравствуйте, {{contact.name}}"},
                                aud="https://smsgate.example.com")
    assert set(body) == {"token", "data", "return_url"} and body["data"]["text"].startswith("Здравствуйте")
    assert jwt.get_unverified_header(body["token"])["alg"] == "HS512"
    claims = jwt.decode(body["token"], SECRET, algorithms=["HS512"], audience="https://smsgate.example.com")
    assert {k: claims[k] for k in ("account_id", "subdomain", "entity_type", "entity_id", "bot_type")} == {
        "account_id": ACCOUNT, "subdomain": "acme", "entity_type": 2, "entity_id": lead_id, "bot_type": "salesbot"}
    assert claims["iss"] == "https://acme.amocrm.ru" and claims["exp"] - claims["iat"] == 1800
    assert "jti" not in claims and "client_uuid" not in claims
    with pytest.raises(jwt.InvalidAlgorithmError):
        jwt.decode(body["token"], SECRET, algorithms=["HS256"], audience="https://smsgate.example.com")
    assert re.fullmatch(rf"{amo.url}/api/v4/salesbot/\d+/continue/\d+", body["return_url"])
    forged = amo.salesbot_request(ACCOUNT, entity_id=lead_id, secret="wrong-" + "x" * 60)["token"]
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(forged, SECRET, algorithms=["HS512"], options={"verify_aud": False})
    expired = amo.salesbot_request(ACCOUNT, entity_id=lead_id, issued_at=int(time.time()) - 3600)["token"]
    with pytest.raises(jwt.ExpiredSignatureError):
        jwt.decode(expired, SECRET, algorithms=["HS512"])


def test_a_salesbot_continue_works_once(amo, api):
    body = amo.salesbot_request(ACCOUNT, entity_id=amo.add_lead(ACCOUNT), entity_type=12, bot_id=321)
    headers = {"Authorization": f"Bearer {api.token}"}
    answer = {"data": {"status": "sent"}, "execute_handlers": [{"handler": "goto", "params": {"type": "question",
                                                                                             "step": 2}}]}
    too_many = {"execute_handlers": [{"handler": "show", "params": {"type": "text", "value": "x"}}] * 11}
    assert CLIENT.post(body["return_url"], json=too_many, headers=headers).status_code == 400
    first = CLIENT.post(body["return_url"], json=answer, headers=headers)
    assert first.status_code == 202 and first.content == b""
    assert CLIENT.post(body["return_url"], json=answer, headers=headers).status_code == 404
    [done] = amo.salesbot_continues(ACCOUNT)
    assert (done.bot_id, done.data, done.execute_handlers) == (321, {"status": "sent"}, answer["execute_handlers"])
    assert amo.pending_continues(ACCOUNT) == []
    # Another account cannot continue this account's bot.
    other = amo.salesbot_request(ACCOUNT, entity_id=1)
    assert CLIENT.post(other["return_url"], json={}, headers={
        "Authorization": f"Bearer {amo.issue_token_pair(999)['access_token']}"}).status_code == 404


# --- account states and faults --------------------------------------------------------------------------------------
def test_a_blocked_account_gets_403_and_an_unpaid_one_402(amo, api):
    amo.account(ACCOUNT).blocked = True
    blocked = api.get("/api/v4/leads")
    assert blocked.status_code == 403 and "text/html" in blocked.headers["content-type"]
    assert api.post("/api/v4/leads/notes", [sms(1)]).status_code == 403
    amo.account(ACCOUNT).blocked, amo.account(ACCOUNT).unpaid = False, True
    unpaid = api.get("/api/v4/account")
    assert unpaid.status_code == 402 and unpaid.json()["status"] == 402
    amo.account(ACCOUNT).unpaid = False
    assert api.get("/api/v4/account").status_code == 200


def test_fail_next_injects_transient_failures_then_recovers(amo, api):
    amo.fail_next(2, 503)
    amo.fail_next(1, 429, account_id=ACCOUNT)
    assert [api.get("/api/v4/account").status_code for _ in range(4)] == [503, 503, 429, 200]
    assert amo.refused_429(ACCOUNT) == 0  # an injected 429 is not the limit's
    amo.fail_next(1, "drop", account_id=999)
    assert api.get("/api/v4/account").status_code == 200  # aimed at another account
    amo.fail_next(1, "drop")
    with pytest.raises(httpx.HTTPError):
        api.get("/api/v4/account")
    assert amo.request_log(ACCOUNT)[-1].status is None


def test_unknown_routes_are_404_and_wrong_methods_405(api):
    assert api.get("/api/v4/nothing").status_code == 404
    assert api.post("/api/v4/leads", [{"name": "x"}]).status_code == 405


# --- amoCRM's own calls -------------------------------------------------------------------------------------------
def parse_php_form(body: bytes) -> dict:
    """A PHP-style reading of bracket keys (`a[b][c]=v`), written apart from the fake's encoder."""
    out = {}
    for key, value in parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=True):
        head, *rest = key.split("[")
        path = [head] + [part.rstrip("]") for part in rest]
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def stringified(value):
    return {k: stringified(v) for k, v in value.items()} if isinstance(value, dict) else str(value)


def test_the_dp_webhook_payload_in_both_encodings(amo):
    lead_id = amo.add_lead(ACCOUNT)
    lead = amo.account(ACCOUNT).leads[lead_id]
    settings = {"key": "s3cr3t-key", "message": "Заказ готов, {{lead.name}} & co"}
    form, form_type = amo.dp_webhook_payload(ACCOUNT, lead_id, settings=settings, event_time=1700000000)
    raw, json_type = amo.dp_webhook_payload(ACCOUNT, lead_id, settings=settings, event_time=1700000000,
                                            encoding="json")
    assert (form_type, json_type) == ("application/x-www-form-urlencoded", "application/json")
    body = json.loads(raw)
    assert body == {"event": {"type": 15, "type_code": "lead_appeared_in_status",
                              "data": {"id": lead_id, "element_type": 2, "status_id": lead.status_id,
                                       "pipeline_id": lead.pipeline_id, "direction_of_movement": "went_to_trigger"},
                              "time": 1700000000},
                    "action": {"settings": {"widget": {"settings": settings}}},
                    "subdomain": "acme", "account_id": ACCOUNT}
    assert b"event%5Bdata%5D%5Bid%5D=" in form and b"+%26+co" in form  # PHP's http_build_query escaping
    assert parse_php_form(form) == stringified(body)


def test_the_dp_webhook_for_another_stage_event_or_a_customer(amo):
    lead_id = amo.add_lead(ACCOUNT)
    body = json.loads(amo.dp_webhook_payload(ACCOUNT, lead_id, 555, 777, event_type=14, encoding="json")[0])
    assert body["event"]["type_code"] == "lead_status_changed"
    assert (body["event"]["data"]["status_id"], body["event"]["data"]["pipeline_id"]) == (555, 777)
    customer = parse_php_form(amo.dp_webhook_payload(ACCOUNT, 42, 9, event_type=20, element_type=12)[0])
    assert customer["event"]["type_code"] == "customer_added"
    assert customer["event"]["data"] == {"id": "42", "element_type": "12", "status_id": "9"}


# --- standalone ----------------------------------------------------------------------------------------------------
def test_it_runs_standalone_with_a_demo_account():
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tests.fakes.amocrm", "--port", str(port), "--seed-demo"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
                               start_new_session=True)
    try:
        lines = [process.stdout.readline() for _ in range(4)]
        assert f"listening on http://127.0.0.1:{port}" in lines[0], lines
        tokens = json.loads(lines[3].split("demo tokens ", 1)[1])
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        leads = CLIENT.get(f"http://127.0.0.1:{port}/api/v4/leads", params={"with": "contacts"},
                           headers=headers).json()["_embedded"]["leads"]
        assert len(leads) == 4 and all(lead["_embedded"]["contacts"] for lead in leads)
        pipeline = CLIENT.get(f"http://127.0.0.1:{port}/api/v4/leads/pipelines", headers=headers).json()
        unsorted = [s["id"] for s in pipeline["_embedded"]["pipelines"][0]["_embedded"]["statuses"] if s["type"] == 1]
        assert [lead["name"] for lead in leads if lead["status_id"] in unsorted] == ["Заявка с сайта"]
        contact = CLIENT.get(f"http://127.0.0.1:{port}/api/v4/contacts/{leads[0]['_embedded']['contacts'][0]['id']}",
                             headers=headers).json()
        assert contact["custom_fields_values"][0]["values"][0]["value"] == "+7 (912) 345-67-89"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)
