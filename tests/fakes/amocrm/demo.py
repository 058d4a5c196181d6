"""The demo account of the standalone fake (`--seed-demo`): enough for a developer's `make run` to show a
card with contacts and phones, a pipeline with an unsorted lead, and users."""

DEMO_ACCOUNT_ID = 12345
DEMO_SUBDOMAIN = "acme"


def seed_demo(fake) -> dict:
    """Fill the fake with the demo account; returns its ids by name."""
    account = fake.add_account(DEMO_ACCOUNT_ID, subdomain=DEMO_SUBDOMAIN, name="ООО «Акме»")
    with fake._state:
        account.users[account.admin_id].name = "Анна Смирнова"
        manager = account.add_user("Иван Петров", email="ivan@acme.example")
        account.add_user("Мария Кузнецова", email="maria@acme.example")
        address = account.add_field("leads", "Адрес доставки", "text")
        source = account.add_field("leads", "Источник", "select", enums=("Сайт", "Звонок", "Рекомендация"))
        olga = account.add_contact(first_name="Ольга", last_name="Иванова", phones=[("+7 (912) 345-67-89", "MOB")],
                                   emails=[("olga@example.com", "PRIV")])
        sergey = account.add_contact(first_name="Сергей", last_name="Васильев", phones=["8 912 000-11-22"],
                                     responsible_user_id=manager)
        katya = account.add_contact(first_name="Екатерина", last_name="Морозова",
                                    phones=[("+79161234567", "MOB"), ("+7 495 123-45-67", "WORK")])
        dmitry = account.add_contact(first_name="Дмитрий", last_name="Соколов")  # no phone
        pipeline = account.main_pipeline
        leads = {
            "kitchen": account.add_lead(name="Кухня на заказ", price=150000, contacts=[olga],
                                        custom_fields={address.id: "Екатеринбург, ул. Ленина, 1", source.id: "Сайт"}),
            "delivery": account.add_lead(name="Доставка мебели", price=32000, contacts=[sergey, katya],
                                         status_id=pipeline.status("Переговоры").id, responsible_user_id=manager,
                                         custom_fields={source.id: "Звонок"}),
            "website": account.add_lead(name="Заявка с сайта", contacts=[dmitry], unsorted=True),
            "office": account.add_lead(name="Ремонт офиса", price=480000, contacts=[katya], status_id=142),
        }
    return {"account_id": DEMO_ACCOUNT_ID, "contacts": {"olga": olga, "sergey": sergey, "katya": katya,
                                                         "dmitry": dmitry}, "leads": leads}
