"""The demo account of the standalone fake (`--seed-demo`): enough for a developer's `make run` to show a
card with contacts and phones, a pipeline with an unsorted lead, and users; and `install_into`, which
installs the widget for it into a running smsgate (`make fake-amocrm`)."""

import time
import uuid
from urllib.parse import urlsplit

import httpx
import jwt

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


def install_into(fake, smsgate_url: str, *, client_id: str, client_secret: str, redirect_uri: str,
                 wait: float = 180.0, log=print) -> bool:
    """What amoCRM and an account owner do for the demo account, against a running smsgate
    (`make fake-amocrm` for `make run`): install the widget (the install webhook: a GET to smsgate's
    redirect URI with a fresh code, which smsgate exchanges here), then, like the owner on the
    widget's settings page, give the account a route of its own if it has none (the `console`
    provider, which logs SMS instead of sending them). Retries until smsgate answers, up to `wait` s."""
    base = smsgate_url.rstrip("/")
    deadline = time.monotonic() + wait
    with httpx.Client(timeout=10) as client:
        while True:
            code = fake.issue_code(account_id=DEMO_ACCOUNT_ID, subdomain=DEMO_SUBDOMAIN)
            try:
                reply = client.get(f"{base}/amocrm/oauth", params={
                    "code": code, "referer": f"{DEMO_SUBDOMAIN}.amocrm.ru", "from_widget": 1, "client_id": client_id})
            except httpx.HTTPError:
                reply = None
            if reply is not None and reply.status_code == 200:
                break
            if reply is not None and reply.status_code < 500:
                log(f"smsgate at {base} refused the install: {reply.status_code} {reply.text[:300]}")
                return False
            if time.monotonic() > deadline:
                log(f"smsgate did not answer at {base} (start it with `make run`)")
                return False
            time.sleep(2)
        parts = urlsplit(redirect_uri)
        now = int(time.time())

        def token():
            claims = {"iss": f"https://{DEMO_SUBDOMAIN}.amocrm.ru", "aud": f"{parts.scheme}://{parts.hostname}",
                      "jti": str(uuid.uuid4()), "iat": now, "nbf": now, "exp": now + 600,
                      "account_id": DEMO_ACCOUNT_ID, "subdomain": DEMO_SUBDOMAIN, "client_uuid": client_id,
                      "user_id": fake.account(DEMO_ACCOUNT_ID).admin_id, "is_admin": True}
            return {"X-Auth-Token": jwt.encode(claims, client_secret, algorithm="HS256")}

        routes = client.get(f"{base}/api/v1/routes/", headers=token())
        if routes.status_code == 200 and not routes.json():
            created = client.post(f"{base}/api/v1/routes/", headers=token(),
                                  json={"provider": "console", "sender": "ACME", "credentials": {}})
            if created.status_code != 201:
                log(f"smsgate did not add the console route: {created.status_code} {created.text[:300]}")
                return False
        elif routes.status_code != 200:
            log(f"smsgate's account API answered {routes.status_code}: {routes.text[:300]}")
            return False
    log(f"installed into smsgate at {base}: account {DEMO_ACCOUNT_ID} ({DEMO_SUBDOMAIN}) with a console route")
    return True
