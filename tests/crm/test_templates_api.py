"""/api/v1/templates/: CRUD by admins, reads by every user of the account, another account's
templates out of reach, markers checked on save, the markers list, the preview, and hostile input."""

import pytest

from accounts.models import Account
from crm import services
from crm.models import SmsTemplate

pytestmark = pytest.mark.django_db

URL = "/api/v1/templates/"
TEXT = "Здравствуйте, {{contact.first_name}}! Заказ «{{lead.name}}» на {{lead.price}} руб."


def url(template, suffix=""):
    return f"{URL}{template.pk}/{suffix}"


@pytest.fixture
def template(account):
    return SmsTemplate.objects.create(account=account, name="Напоминание", text=TEXT)


def errors_of(response):
    body = response.json()
    assert response.status_code == 400, body
    assert set(body) == {"detail", "code", "errors"} and body["code"] == "invalid"
    return body["errors"]


# --- CRUD -----------------------------------------------------------------------------------------------
def test_an_admin_creates_lists_reads_changes_and_deletes_a_template(api, account):
    assert api.get(URL).json() == []
    created = api.post(URL, {"name": "  Reminder ", "text": "Hi {{ contact.first_name }}, see you {{current_date}}"})
    assert created.status_code == 201, created.json()
    body = created.json()
    assert (body["name"], body["text"], body["is_active"]) == (
        "Reminder", "Hi {{ contact.first_name }}, see you {{current_date}}", True)
    assert body["markers"] == ["contact.first_name", "current_date"]
    assert set(body) == {"id", "name", "text", "is_active", "markers", "created_at", "updated_at"}
    stored = SmsTemplate.objects.get(pk=body["id"])
    assert stored.account == account

    assert [t["id"] for t in api.get(URL).json()] == [stored.pk]
    assert api.get(url(stored)).json()["name"] == "Reminder"

    changed = api.patch(url(stored), {"text": "Bye {{contact.name}}", "is_active": False})
    assert changed.status_code == 200 and changed.json()["markers"] == ["contact.name"]
    stored.refresh_from_db()
    assert (stored.text, stored.is_active, stored.name) == ("Bye {{contact.name}}", False, "Reminder")
    replaced = api.put(url(stored), {"name": "Second", "text": "Plain text"})
    assert replaced.status_code == 200 and replaced.json()["is_active"] is True  # PUT sets every field

    assert api.delete(url(stored)).status_code == 204
    assert api.get(URL).json() == []
    assert api.get(url(stored)).status_code == 404
    assert api.delete(url(stored)).status_code == 404
    stored.refresh_from_db()
    assert stored.deleted_at is not None  # kept for what names it, out of every list


def test_the_list_is_ordered_by_name(api, account):
    for name in ("Б", "А", "В"):
        assert api.post(URL, {"name": name, "text": "x"}).status_code == 201
    assert [t["name"] for t in api.get(URL).json()] == ["А", "Б", "В"]


def test_a_live_name_is_unique_per_account_whatever_its_case(api, other_api, template):
    assert errors_of(api.post(URL, {"name": "напоминание", "text": "x"}, HTTP_ACCEPT_LANGUAGE="en"))["name"] == [
        "A template with this name already exists."]
    other = api.post(URL, {"name": "Другой", "text": "x"}).json()
    assert errors_of(api.patch(f"{URL}{other['id']}/", {"name": "НАПОМИНАНИЕ"}))["name"]
    assert other_api.post(URL, {"name": "Напоминание", "text": "x"}).status_code == 201  # another account
    assert api.delete(url(template)).status_code == 204
    assert api.post(URL, {"name": "Напоминание", "text": "x"}).status_code == 201  # free again once deleted


def test_renaming_a_template_to_its_own_name_in_another_case_is_fine(api, template):
    response = api.patch(url(template), {"name": "НАПОМИНАНИЕ"})
    assert response.status_code == 200 and response.json()["name"] == "НАПОМИНАНИЕ"


# --- markers on save ----------------------------------------------------------------------------------
@pytest.mark.parametrize("text, named", [
    ("Hi {{lead.titel}}", "{{lead.titel}}"),
    ("Sum {{lead.cf.abc}}", "{{lead.cf.abc}}"),
    ("Hi {{contact.first_name", "{{contact.first_name"),
    ("From {{origin}}", "{{origin}}"),
])
def test_an_invalid_placeholder_is_a_400_naming_it(api, template, text, named):
    [message] = errors_of(api.post(URL, {"name": "New", "text": text}))["text"]
    assert named in message
    [message] = errors_of(api.patch(url(template), {"text": text}))["text"]
    assert named in message
    template.refresh_from_db()
    assert template.text == TEXT and not SmsTemplate.objects.filter(name="New").exists()


def test_every_invalid_placeholder_is_listed_in_the_request_language(api):
    errors = errors_of(api.post(URL, {"name": "x", "text": "{{a}} {{lead.cf.x}} {{b"}, HTTP_ACCEPT_LANGUAGE="ru"))
    assert errors["text"] == ["Неизвестный маркер {{a}}.",
                              "{{lead.cf.x}}: ID поля — это число, например {{lead.cf.123456}}.",
                              "Маркер не закрыт: {{b (маркеры пишутся так: {{lead.name}})."]


# --- who may do what -------------------------------------------------------------------------------------
def test_a_user_who_is_not_admin_reads_and_previews_but_never_writes(viewer_api, template):
    assert [t["id"] for t in viewer_api.get(URL).json()] == [template.pk]
    assert viewer_api.get(url(template)).status_code == 200
    assert viewer_api.get(URL + "markers/").status_code == 200
    assert viewer_api.post(URL + "preview/", {"template_id": template.pk}).status_code == 200
    for response in (viewer_api.post(URL, {"name": "x", "text": "y"}), viewer_api.patch(url(template), {"text": "z"}),
                     viewer_api.put(url(template), {"name": "x", "text": "y"}), viewer_api.delete(url(template))):
        assert response.status_code == 403
        assert response.json()["code"] == "admin_required"
    template.refresh_from_db()
    assert (template.text, template.deleted_at) == (TEXT, None)


def test_another_accounts_template_is_a_404_everywhere(other_api, template):
    assert other_api.get(URL).json() == []
    for response in (other_api.get(url(template)), other_api.patch(url(template), {"text": "x"}),
                     other_api.put(url(template), {"name": "x", "text": "y"}), other_api.delete(url(template)),
                     other_api.post(URL + "preview/", {"template_id": template.pk})):
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"
    template.refresh_from_db()
    assert (template.text, template.deleted_at) == (TEXT, None)


def test_ids_that_are_not_ids_are_a_json_404(api, template):
    for bad in ("abc", "0", "-1", "1.5", "99999999999999999999999", "%00"):
        response = api.get(f"{URL}{bad}/")
        assert response.status_code == 404, bad
        assert response.json()["code"] == "not_found"


def test_a_disabled_account_gets_403(api, account, template):
    Account.objects.filter(pk=account.pk).update(is_active=False)
    for response in (api.get(URL), api.get(URL + "markers/"), api.post(URL + "preview/", {"text": "x"}),
                     api.post(URL, {"name": "x", "text": "y"})):
        assert response.status_code == 403 and response.json()["code"] == "account_disabled"


def test_no_token_is_401(client, template):
    assert client.get(URL).status_code == 401
    assert client.post(URL + "preview/", {"text": "x"}, content_type="application/json").status_code == 401


# --- the markers list -------------------------------------------------------------------------------------
def test_the_markers_list_is_translated_and_complete(api):
    english = api.get(URL + "markers/", HTTP_ACCEPT_LANGUAGE="en").json()
    russian = api.get(URL + "markers/", HTTP_ACCEPT_LANGUAGE="ru").json()
    by_key = {m["key"]: m for m in english}
    assert {"lead.name", "lead.price", "lead.cf", "contact.name", "contact.first_name", "contact.last_name",
            "contact.cf", "lead.responsible.name", "contact.responsible.name", "account.name",
            "current_date"} <= set(by_key)
    assert "name" not in by_key  # the short form of contact.name is accepted, not offered
    assert by_key["lead.name"] == {"key": "lead.name", "marker": "{{lead.name}}", "label": "Lead name",
                                   "group": "lead", "group_label": "Lead", "needs_field_id": False, "amocrm": True}
    assert by_key["contact.cf"]["needs_field_id"] and by_key["contact.cf"]["marker"] == "{{contact.cf.ID}}"
    assert by_key["account.name"]["amocrm"] is False
    assert {m["key"]: m["label"] for m in russian}["lead.name"] == "Название сделки"
    assert [m["key"] for m in russian] == [m["key"] for m in english]


# --- preview ------------------------------------------------------------------------------------------------
def test_preview_of_a_template_against_card_data_in_api_v4_shapes(api, template, amo):
    context = {"lead": amo["lead"], "contact": amo["contact"], "users": amo["users"]["_embedded"]["users"],
               "account": amo["account"]}
    response = api.post(URL + "preview/", {"template_id": template.pk, "context": context})
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["text"] == "Здравствуйте, Ольга! Заказ «Кухня на заказ» на 150000 руб."
    assert (body["encoding"], body["parts"], body["missing"], body["errors"], body["ucs2_from"]) == (
        "ucs2", 1, [], [], [])
    assert (body["length"], body["units"], body["too_long"], body["max_length"]) == (58, 58, False, 1000)


def test_preview_of_free_text_says_what_is_missing_and_what_turned_it_into_ucs2(api, amo):
    response = api.post(URL + "preview/", {"text": "Hi {{contact.first_name}}, {{lead.name}} {{lead.titel}}",
                                           "context": {"contact": amo["contact"]}}, HTTP_ACCEPT_LANGUAGE="en")
    body = response.json()
    assert body["text"] == "Hi Ольга,  {{lead.titel}}"
    assert (body["encoding"], body["ucs2_from"], body["missing"]) == ("ucs2", ["contact.first_name"], ["lead.name"])
    assert body["errors"] == [{"code": "unknown", "placeholder": "{{lead.titel}}",
                               "message": "Unknown placeholder {{lead.titel}}."}]
    assert api.post(URL + "preview/", {"text": ""}).json()["parts"] == 0


@pytest.mark.parametrize("body, field", [
    ({}, "non_field_errors"),
    ({"template_id": 1, "text": "x"}, "non_field_errors"),
    ({"template_id": "1"}, "template_id"),
    ({"template_id": True}, "template_id"),
    ({"text": 5}, "text"),
    ({"text": "x" * 1001}, "text"),
    ({"text": "x", "context": []}, "context"),
    ({"text": "x", "context": {"lead": {"name": "no id"}}}, "context"),
    ({"text": "x", "context": {"lead": {"id": "12"}}}, "context"),
    ({"text": "x", "context": {"lead": {"id": 1, "price": "100"}}}, "context"),
    ({"text": "x", "context": {"lead": {"id": 1, "custom_fields_values": {"a": 1}}}}, "context"),
    ({"text": "x", "context": {"lead": {"id": 1, "custom_fields_values": [{"field_id": 1, "values": [
        {"value": [1, 2]}]}]}}}, "context"),
    ({"text": "x", "context": {"lead": {"id": 1, "custom_fields_values": [{"field_id": 1, "values": [
        {"value": {"nested": {"deep": 1}}}]}]}}}, "context"),
    ({"text": "x", "context": {"lead": {"id": 1, "_embedded": {"contacts": [{"id": 2, "is_main": "yes"}]}}}},
     "context"),
    ({"text": "x", "context": {"contact": {"id": 1, "first_name": ["Ольга"]}}}, "context"),
    ({"text": "x", "context": {"users": [{"id": 1}] * 1001}}, "context"),
    ({"text": "x", "context": {"account": {"name": "x", "_embedded": {"datetime_settings": {"timezone": 3}}}}},
     "context"),
])
def test_preview_input_is_validated_strictly(api, body, field):
    assert field in errors_of(api.post(URL + "preview/", body))


def test_preview_ignores_what_markers_do_not_read(api, amo):
    lead = {**amo["lead"], "_links": {"self": {"href": "x"}}, "score": None, "whatever": [1, {"a": 2}]}
    assert api.post(URL + "preview/", {"text": "{{lead.name}}", "context": {"lead": lead}}).json()["text"] == (
        "Кухня на заказ")


def test_preview_of_an_unknown_or_deleted_template_is_404(api, template):
    assert api.post(URL + "preview/", {"template_id": template.pk + 1000}).status_code == 404
    api.delete(url(template))
    assert api.post(URL + "preview/", {"template_id": template.pk}).status_code == 404


# --- hostile input ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("body, field", [
    ({"name": "x", "text": "y" * 200_000}, "text"),
    ({"name": "x", "text": "y" * 1001}, "text"),
    ({"name": "x" * 101, "text": "y"}, "name"),
    ({"name": "   ", "text": "y"}, "name"),
    ({"name": "x", "text": " \n "}, "text"),
    ({"name": "x", "text": ""}, "text"),
    ({"name": "a\x00b", "text": "y"}, "name"),
    ({"name": "x", "text": "a\x00b"}, "text"),
    ({"name": "x", "text": "a\x1bb"}, "text"),
    ({"name": "x", "text": "a\x07b"}, "text"),
    ({"name": "a\nb", "text": "y"}, "name"),
    ({"name": "x", "text": "a\ud800b"}, "text"),
    ({"name": 123, "text": "y"}, "name"),
    ({"name": "x", "text": ["y"]}, "text"),
    ({"name": "x", "text": {"y": 1}}, "text"),
    ({"name": None, "text": "y"}, "name"),
    ({"name": "x", "text": 5.5}, "text"),
    ({"name": "x", "text": "y", "is_active": "true"}, "is_active"),
    ({"name": "x", "text": "y", "is_active": 1}, "is_active"),
    ({"text": "y"}, "name"),
    ({"name": "x"}, "text"),
])
def test_hostile_bodies_are_400_and_store_nothing(api, body, field):
    assert field in errors_of(api.post(URL, body))
    assert not SmsTemplate.objects.exists()


def test_a_body_over_the_upload_limit_is_a_json_413(api, template):
    huge = "y" * 1_000_000  # over DATA_UPLOAD_MAX_MEMORY_SIZE: Django refuses to read it
    for response in (api.post(URL, {"name": "x", "text": huge}), api.patch(url(template), {"text": huge}),
                     api.post(URL + "preview/", {"text": huge}), api.post("/api/v1/routes/", {"sender": huge})):
        assert response.status_code == 413
        assert response.json() == {"detail": "Тело запроса слишком велико.", "code": "body_too_large"}
    template.refresh_from_db()
    assert template.text == TEXT


def test_text_at_the_limit_is_accepted(api):
    assert api.post(URL, {"name": "x", "text": "y" * 1000}).status_code == 201


def test_bodies_that_are_not_objects_are_400(api, client, make_token, template):
    for raw in ("[1, 2]", '"text"', "null", "{bad json", "1e999999"):
        for method, path in (("post", URL), ("patch", url(template)), ("post", URL + "preview/")):
            response = getattr(client, method)(path, raw, content_type="application/json",
                                               HTTP_X_AUTH_TOKEN=make_token())
            assert response.status_code == 400, (raw, method, path, response.content)
            assert set(response.json()) >= {"detail", "code"}


def test_a_cap_on_templates_per_account(api, monkeypatch):
    monkeypatch.setattr(services, "MAX_TEMPLATES_PER_ACCOUNT", 2)
    assert api.post(URL, {"name": "a", "text": "x"}).status_code == 201
    assert api.post(URL, {"name": "b", "text": "x"}).status_code == 201
    response = api.post(URL, {"name": "c", "text": "x"})
    assert response.status_code == 400 and response.json()["code"] == "too_many_templates"
    assert SmsTemplate.objects.count() == 2


def test_a_name_taken_at_the_same_moment_is_a_400_not_a_500(api, account, monkeypatch):
    """The unique index decides when two saves race past the check: the loser gets the same 400."""
    real = services.templates_of

    def blind(*, account, active_only=False):  # the check sees nothing, as if the other save had not committed
        return real(account=account, active_only=active_only).none()

    SmsTemplate.objects.create(account=account, name="Taken", text="x")
    monkeypatch.setattr(services, "templates_of", blind)
    assert errors_of(api.post(URL, {"name": "taken", "text": "x"}, HTTP_ACCEPT_LANGUAGE="en"))["name"] == [
        "A template with this name already exists."]
    assert SmsTemplate.objects.count() == 1
