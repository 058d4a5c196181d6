"""crm.markers and the template preview: amoCRM's marker syntax, values from API v4 JSON as the fake
amoCRM returns it over HTTP (the same shapes as amoCRM's docs), missing values, time zones, the part
counter, and that a filled-in value is never read as a marker."""

from datetime import UTC, datetime

import pytest
from django.test import override_settings
from django.utils import translation
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm import markers
from crm.markers import context_for, render, validate
from crm.services import template_preview
from deliveries.segments import segment_info

NOW = datetime(2026, 1, 1, 22, 30, tzinfo=UTC)  # already 2 January in Moscow


@pytest.fixture(autouse=True)
def _english():
    with translation.override("en"):
        yield


def fill(text, **context):
    return render(text, context_for(now=NOW, **context))


# --- syntax ---------------------------------------------------------------------------------------------
def test_every_supported_marker_is_valid_with_or_without_spaces():
    for spec in markers.MARKERS:
        key = f"{spec.key}.123456" if spec.needs_field_id else spec.key
        assert validate(f"Hi {{{{{key}}}}}!") == [], key
        assert validate(f"Hi {{{{ {key} }}}}!") == [], key
        assert validate(f"Hi {{{{\t{key}  }}}}!") == [], key


def test_amocrm_spellings_of_the_required_markers_are_supported():
    text = ("{{lead.name}} {{lead.price}} {{lead.cf.1}} {{contact.name}} {{contact.first_name}} "
            "{{contact.last_name}} {{contact.cf.2}} {{lead.responsible.name}} {{contact.responsible.name}} "
            "{{account.name}} {{name}} {{current_date}}")
    assert validate(text) == []
    assert markers.markers_in(text) == [
        "lead.name", "lead.price", "lead.cf.1", "contact.name", "contact.first_name", "contact.last_name",
        "contact.cf.2", "lead.responsible.name", "contact.responsible.name", "account.name", "current_date"]


@pytest.mark.parametrize("text, code, placeholder", [
    ("Hi {{lead.title}}", "unknown", "{{lead.title}}"),
    ("Hi {{lead.responsible_user}}", "unknown", "{{lead.responsible_user}}"),  # the SMSC widget's spelling
    ("Hi {{Lead.Name}}", "unknown", "{{Lead.Name}}"),  # case-sensitive, as amoCRM
    ("{{leads.cf.123}}", "unknown", "{{leads.cf.123}}"),
    ("{{lead.cf.abc}}", "malformed", "{{lead.cf.abc}}"),
    ("{{lead.cf.}}", "malformed", "{{lead.cf.}}"),
    ("{{contact.cf.0}}", "malformed", "{{contact.cf.0}}"),
    ("{{contact.cf.-5}}", "malformed", "{{contact.cf.-5}}"),
    ("{{}}", "malformed", "{{}}"),
    ("{{ }}", "malformed", "{{ }}"),
    ("{{{lead.name}}}", "malformed", "{{{lead.name}}"),
    ("Hi {{lead.name", "unclosed", "{{lead.name"),
    ("Hi {{ and {{lead.name}}", "unclosed", "{{ and "),
    ("{{origin}}", "unsupported", "{{origin}}"),
    ("{{customer.id}}", "unsupported", "{{customer.id}}"),
    ("{{company.cf.123}}", "unsupported", "{{company.cf.123}}"),
    ("{{message_text}}", "unsupported", "{{message_text}}"),
    ("{{code}}", "unsupported", "{{code}}"),
])
def test_invalid_placeholders_are_errors_that_name_them(text, code, placeholder):
    [error] = validate(text)
    assert (error.code, error.placeholder) == (code, placeholder)
    assert placeholder.strip() in error.message


def test_errors_come_once_each_in_order_and_are_capped():
    errors = validate("{{a}} {{b}} {{a}} {{lead.name}} {{c")
    assert [e.placeholder for e in errors] == ["{{a}}", "{{b}}", "{{c"]
    assert len(validate(" ".join(f"{{{{x{n}}}}}" for n in range(100)))) == markers.MAX_ERRORS


def test_a_long_placeholder_is_shown_cut():
    [error] = validate("{{" + "x" * 5000 + "}}")
    assert len(error.placeholder) <= 40 and error.placeholder.endswith("…")


def test_plain_braces_are_text():
    assert validate("Price: 100 }} {x} {y}} }{ {") == []
    assert fill("a }} {x} b").text == "a }} {x} b"


def test_messages_follow_the_active_language():
    english = validate("{{lead.title}}")[0].message
    with translation.override("ru"):
        russian = validate("{{lead.title}}")[0].message
    assert english == "Unknown placeholder {{lead.title}}."
    assert russian == "Неизвестный маркер {{lead.title}}."


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.sampled_from("{} .abcdeflnmtx1\n"), max_size=60))
def test_parsing_keeps_every_character_and_never_raises(text):
    parts = markers.parse(text)
    assert "".join(p if isinstance(p, str) else p.raw for p in parts) == text
    validate(text)
    assert render(text, {}).text.count("{") <= text.count("{")


# --- values from API v4 JSON ----------------------------------------------------------------------------
def test_lead_contact_users_and_account_fill_in(amo):
    fields = amo["fields"]
    rendered = fill("{{lead.id}}|{{lead.name}}|{{lead.price}}|{{contact.id}}|{{contact.name}}|{{name}}|"
                    "{{contact.first_name}}|{{contact.last_name}}|{{lead.responsible.name}}|"
                    "{{lead.responsible.email}}|{{account.name}}|{{current_date}}|"
                    f"{{{{contact.cf.{fields['Город']}}}}}",
                    lead=amo["lead"], contact=amo["contact"], users=amo["users"], account=amo["account"])
    admin = next(u for u in amo["users"]["_embedded"]["users"] if u["rights"]["is_admin"])
    assert rendered.text.split("|") == [
        str(amo["lead"]["id"]), "Кухня на заказ", "150000", str(amo["contact"]["id"]), "Ольга Иванова",
        "Ольга Иванова", "Ольга", "Иванова", admin["name"], admin["email"], "ООО «Акме»", "02.01.2026", "Тверь"]
    assert rendered.missing == []


def test_the_responsible_users_are_the_entities_own(amo):
    rendered = fill("{{lead.responsible.name}} / {{contact.responsible.name}} / {{contact.responsible.id}}",
                    lead=amo["delivery_lead"], contact=amo["sergey"], users=amo["users"])
    assert rendered.text == f"Иван Петров / Иван Петров / {amo['sergey']['responsible_user_id']}"
    # The users as a bare list (their `_embedded.users`) work the same.
    assert fill("{{lead.responsible.name}}", lead=amo["delivery_lead"],
                users=amo["users"]["_embedded"]["users"]).text == "Иван Петров"


def test_custom_fields_render_by_type_in_the_account_time_zone(amo):
    f = amo["fields"]
    phone_field = next(cf["field_id"] for cf in amo["contact"]["custom_fields_values"] if cf["field_code"] == "PHONE")
    text = " | ".join([f"{{{{lead.cf.{f['Дата доставки']}}}}}", f"{{{{lead.cf.{f['Встреча']}}}}}",
                       f"{{{{lead.cf.{f['Оплачено']}}}}}", f"{{{{lead.cf.{f['Пожелания']}}}}}",
                       f"{{{{lead.cf.{f['Скидка, %']}}}}}", f"{{{{contact.cf.{f['День рождения']}}}}}",
                       f"{{{{contact.cf.{f['Согласие']}}}}}", f"{{{{contact.cf.{f['Юрлицо']}}}}}",
                       f"{{{{contact.cf.{phone_field}}}}}"])
    in_moscow = fill(text, lead=amo["lead"], contact=amo["contact"], account=amo["account"])
    assert in_moscow.text.split(" | ") == [
        "01.01.2020", "01.01.2020 10:30", "yes", "Сборка, Подъём", "7.5", "01.01.2020", "no", "ООО Ромашка",
        "+7 912 345-67-89, +7 495 000-00-00"]
    # Without datetime_settings the account's zone is unknown: UTC (the Moscow midnight is the day before there).
    in_utc = fill(text, lead=amo["lead"], contact=amo["contact"], account=amo["account_plain"])
    assert in_utc.text.split(" | ")[:2] == ["31.12.2019", "01.01.2020 07:30"]
    assert in_utc.text.split(" | ")[5] == "01.01.2020"  # a date at 00:00 UTC is that date everywhere


def test_an_unknown_time_zone_is_utc(amo):
    account = {**amo["account"], "_embedded": {"datetime_settings": {"timezone": "../../etc/passwd"}}}
    assert fill("{{current_date}}", account=account).text == "01.01.2026"
    account["_embedded"]["datetime_settings"]["timezone"] = "Asia/Vladivostok"
    assert fill("{{current_date}}", account=account).text == "02.01.2026"


def test_checkbox_words_follow_the_language(amo):
    field = amo["fields"]["Оплачено"]
    with translation.override("ru"):
        context = context_for(lead=amo["lead"])
    assert context[f"lead.cf.{field}"] == "да"


def test_missing_values_render_empty_and_are_reported(amo):
    empty = amo["fields"]["Пусто"]
    rendered = fill(f"Hi {{{{contact.first_name}}}}, {{{{lead.name}}}}{{{{lead.cf.{empty}}}}}{{{{lead.cf.999}}}}"
                    " {{account.name}} {{lead.name}}", contact=amo["contact"])
    assert rendered.text == "Hi Ольга,   "
    assert rendered.missing == ["lead.name", f"lead.cf.{empty}", "lead.cf.999", "account.name"]


def test_the_main_contact_id_comes_from_the_lead_when_no_contact_is_given(amo):
    lead = amo["delivery_lead"]
    main = next(c["id"] for c in lead["_embedded"]["contacts"] if c["is_main"])
    rendered = fill("{{contact.id}} {{contact.name}}", lead=lead)
    assert rendered.text == f"{main} " and rendered.missing == ["contact.name"]


def test_price_is_plain_digits_and_zero_is_a_value():
    assert fill("{{lead.price}}", lead={"id": 1, "price": 1500000}).text == "1500000"
    assert fill("{{lead.price}}", lead={"id": 1, "price": 0}).text == "0"
    assert fill("{{lead.price}}", lead={"id": 1, "price": 99.0}).text == "99"
    assert fill("{{lead.price}}", lead={"id": 1, "price": None}).missing == ["lead.price"]
    assert fill("{{lead.price}}", lead={"id": 1, "price": True}).missing == ["lead.price"]


def test_nonsense_shapes_give_missing_values_not_errors():
    for lead in ({"id": "1", "name": 5, "custom_fields_values": "x"}, {"custom_fields_values": [1, {"field_id": "x"}]},
                 {"_embedded": {"contacts": [1, {"id": -1}]}}, {"custom_fields_values": [
                     {"field_id": 1, "field_type": "date", "values": [{"value": "not a date"}, {"value": 10**30}]}]}):
        rendered = fill("{{lead.name}}{{contact.id}}{{lead.cf.1}}", lead=lead, users="nope", account=[])
        assert rendered.text == "" and set(rendered.missing) == {"lead.name", "contact.id", "lead.cf.1"}


# --- safety ----------------------------------------------------------------------------------------------
def test_a_value_that_looks_like_a_marker_is_sent_as_written():
    contact = {"id": 7, "name": "{{lead.price}}", "first_name": "{{contact.first_name}}{{"}
    rendered = fill("{{contact.name}} {{contact.first_name}} {{lead.price}}", contact=contact,
                    lead={"id": 1, "price": 10})
    assert rendered.text == "{{lead.price}} {{contact.first_name}}{{ 10"


def test_values_lose_control_characters_and_are_bounded():
    contact = {"id": 7, "first_name": "Ol\x00ga\x1b\r\n2\tx", "last_name": "x" * 5000}
    rendered = fill("{{contact.first_name}}|{{contact.last_name}}", contact=contact)
    first, last = rendered.text.split("|")
    assert first == "Olga\n2 x" and len(last) == markers.MAX_VALUE_LENGTH


# --- preview ------------------------------------------------------------------------------------------------
def test_preview_counts_parts_like_the_sending_path(amo):
    context = context_for(lead=amo["lead"], contact=amo["contact"], now=NOW)
    text = "Dear {{contact.first_name}}, your order {{lead.id}} costs {{lead.price}} RUB. " * 3
    result = template_preview(text=text, context=context)
    info = segment_info(result.text)
    assert (result.encoding, result.units, result.parts, result.length) == (
        info.encoding, info.units, info.segments, len(result.text))
    assert result.encoding == "ucs2" and result.ucs2_from == ["contact.first_name"]
    assert result.missing == [] and result.errors == [] and not result.too_long


def test_preview_names_no_placeholder_when_the_template_is_ucs2_itself(amo):
    context = context_for(contact=amo["contact"], now=NOW)
    result = template_preview(text="Здравствуйте, {{contact.first_name}}!", context=context)
    assert result.encoding == "ucs2" and result.ucs2_from == []


def test_preview_of_a_gsm_text_with_gsm_values_stays_gsm7():
    context = context_for(contact={"id": 1, "first_name": "Olga"}, lead={"id": 2, "name": "Kitchen €"}, now=NOW)
    result = template_preview(text="Hi {{contact.first_name}}: {{lead.name}}", context=context)
    assert result.text == "Hi Olga: Kitchen €"
    assert (result.encoding, result.units, result.ucs2_from) == ("gsm7", 19, [])  # € takes two septets


def test_preview_reports_missing_values_errors_and_length():
    result = template_preview(text="Hi {{contact.first_name}} {{lead.titel}}", context=context_for(now=NOW))
    assert result.text == "Hi  {{lead.titel}}" and result.missing == ["contact.first_name"]
    assert [e.placeholder for e in result.errors] == ["{{lead.titel}}"]
    with override_settings(SMSGATE_MAX_TEXT_LENGTH=20):
        long = template_preview(text="x" * 15 + "{{lead.name}}", context={"lead.name": "y" * 10})
    assert long.too_long and long.length == 25 and long.parts == 1
