"""Real replies of the fake amoCRM (API v4 shapes) for the crm tests."""

import httpx
import pytest

from tests.fakes.amocrm import FakeAmoCRM
from tests.fakes.amocrm.demo import seed_demo

# 2020-01-01 00:00 in Moscow (UTC+3), and 2020-01-01 00:00 UTC: amoCRM's docs use both kinds of value.
MOSCOW_MIDNIGHT = 1577826000
UTC_MIDNIGHT = 1577836800


@pytest.fixture(scope="module")
def amo():
    """Real replies of the fake amoCRM for the demo account, plus a lead and a contact with every kind of
    custom field a marker may name."""
    with FakeAmoCRM() as fake:
        demo = seed_demo(fake)
        account = fake.account(demo["account_id"])
        account.limit_rps = 0
        fields = {}
        for entity, name, kind, enums in [
            ("leads", "Дата доставки", "date", ()), ("leads", "Встреча", "date_time", ()),
            ("leads", "Оплачено", "checkbox", ()), ("leads", "Пожелания", "multiselect", ("Сборка", "Подъём")),
            ("leads", "Скидка, %", "numeric", ()), ("leads", "Пусто", "text", ()),
            ("contacts", "День рождения", "birthday", ()), ("contacts", "Город", "text", ()),
            ("contacts", "Согласие", "checkbox", ()), ("contacts", "Юрлицо", "legal_entity", ()),
        ]:
            fields[name] = fake.add_custom_field(demo["account_id"], entity, name, kind, enums=enums)
        contact = fake.add_contact(demo["account_id"], first_name="Ольга", last_name="Иванова",
                                   phones=[("+7 912 345-67-89", "MOB"), ("+7 495 000-00-00", "WORK")],
                                   custom_fields={fields["День рождения"]: UTC_MIDNIGHT, fields["Город"]: "Тверь",
                                                  fields["Согласие"]: False,
                                                  fields["Юрлицо"]: {"value": {"name": "ООО Ромашка", "vat_id": "1"}}})
        lead = fake.add_lead(demo["account_id"], name="Кухня на заказ", price=150000, contacts=[contact],
                             custom_fields={fields["Дата доставки"]: MOSCOW_MIDNIGHT,
                                            fields["Встреча"]: MOSCOW_MIDNIGHT + 10 * 3600 + 30 * 60,
                                            fields["Оплачено"]: True, fields["Пожелания"]: ["Сборка", "Подъём"],
                                            fields["Скидка, %"]: "7.5"})
        token = fake.issue_token_pair(demo["account_id"])["access_token"]
        with httpx.Client(base_url=fake.url, headers={"Authorization": f"Bearer {token}"}, timeout=5) as client:
            def get(path, **params):
                response = client.get(path, params=params)
                assert response.status_code == 200, (path, response.text)
                return response.json()

            yield {
                "fields": fields, "demo": demo,
                "lead": get(f"/api/v4/leads/{lead}", **{"with": "contacts"}),
                "contact": get(f"/api/v4/contacts/{contact}"),
                "delivery_lead": get(f"/api/v4/leads/{demo['leads']['delivery']}", **{"with": "contacts"}),
                "sergey": get(f"/api/v4/contacts/{demo['contacts']['sergey']}"),
                "users": get("/api/v4/users"),
                "account": get("/api/v4/account", **{"with": "datetime_settings"}),
                "account_plain": get("/api/v4/account"),
            }
