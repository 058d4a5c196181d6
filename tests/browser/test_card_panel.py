"""The widget in amoCRM's lead and contact card, in real Chromium: the SMS panel in the right column and
amoCRM's own SMS input in the card's feed (add_source('sms')).

The stand-in card page (tests/browser/amocrm_card.html, the page `make fake-amocrm` serves in development)
is served as https://acme.amocrm.ru/<leads|contacts>/detail/<id>: Playwright answers those requests from
the built widget.zip, RequireJS and jQuery from npm, and the card's data and feed read from a real fake
amoCRM over HTTP (accounts/widget_dev.py turns its replies into what the page shows). The widget's calls
are real cross-origin calls to gunicorn with tokens the test signs; smsgate reads the card from the same
fake amoCRM through its API client, a real Celery worker sends through the fake SMS.ru, whose delivery
reports come back to the web process. Screenshots go to test-artifacts/browser/.
"""

import json
import mimetypes
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.utils import timezone

from accounts.models import Account, AmoToken
from accounts.widget_dev import page_card, page_cards, page_notes
from crm.models import SmsTemplate
from deliveries.models import Delivery, DeliveryKind
from routes.models import ProviderRoute
from tests.conftest import REDIRECT_URI, SECRET
from tests.e2e.stack import wait_for
from tests.fakes.amocrm import FakeAmoCRM
from tests.fakes.amocrm.demo import DEMO_ACCOUNT_ID, install_into, seed_demo
from tests.fakes.smsru import FakeSmsRu

from .test_settings_page import AMO_ORIGIN, VENDOR, built_widget

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

HERE = Path(__file__).parent
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts" / "browser"
PANEL = ".card-widgets .smsgate-card"


# --- the stand-in's backend: amoCRM's side of the page ---------------------------------------------------
class AmoCrmSide:
    """What amoCRM serves around the widget: the page, the widget's files, and the card's data and feed,
    read from (and the feed's note written to) the fake amoCRM over its HTTP API."""

    def __init__(self, fake: FakeAmoCRM, widget_files: dict[str, bytes]):
        self.fake = fake
        token = fake.issue_token_pair(DEMO_ACCOUNT_ID)["access_token"]
        self.http = httpx.Client(base_url=fake.url, headers={"Authorization": f"Bearer {token}"}, timeout=5)
        self.files = {path: file.read_bytes() for path, file in VENDOR.items()}
        self.files.update(widget_files)
        self.page = (HERE / "amocrm_card.html").read_bytes()
        self.extra_phones: dict[int, list[dict]] = {}  # on the page only: typed on the card, not saved

    def close(self):
        self.http.close()

    def _get(self, path, **params):
        reply = self.http.get(path, params=params)
        reply.raise_for_status()
        return reply.json() if reply.status_code == 200 else {}

    def card(self, entity_type: str, entity_id: int) -> dict:
        entity = self._get(f"/api/v4/{entity_type}/{entity_id}", **({"with": "contacts"} if entity_type == "leads"
                                                                      else {}))
        ids = [c["id"] for c in (entity.get("_embedded") or {}).get("contacts") or []]
        contacts = []
        if entity_type == "leads" and ids:
            contacts = self._get("/api/v4/contacts", **{"filter[id][]": ids})["_embedded"]["contacts"]
        data = page_card(entity_type, entity, contacts)
        for contact in data["contacts"]:
            contact["phones"] += self.extra_phones.get(contact["id"], [])
        return data

    def answer(self, route):
        request = route.request
        path = request.url.removeprefix(AMO_ORIGIN).split("?")[0]
        body, content_type, status = None, None, 200
        if path in self.files:
            body = self.files[path]
            content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        elif path.split("/")[1:3] in (["leads", "detail"], ["contacts", "detail"]):
            body, content_type = self.page, "text/html"
        elif path == "/data/cards.json":
            body = json.dumps(page_cards(self._get("/api/v4/leads")["_embedded"]["leads"],
                                         self._get("/api/v4/contacts")["_embedded"]["contacts"],
                                         self._get("/api/v4/users")["_embedded"]["users"]))
        elif path.startswith("/data/") and path.endswith("/notes.json"):
            _, _, entity_type, entity_id, _ = path.split("/")
            if request.method == "POST":
                note = json.loads(request.post_data)
                reply = self.http.post(f"/api/v4/{entity_type}/notes", json=[{
                    "entity_id": int(entity_id), "note_type": note["note_type"], "params": note["params"]}])
                status, body = reply.status_code, reply.text
            else:
                notes = self._get(f"/api/v4/{entity_type}/{entity_id}/notes")
                body = json.dumps(page_notes(((notes or {}).get("_embedded") or {}).get("notes") or []))
        elif path.startswith("/data/") and path.endswith(".json"):
            _, _, entity_type, name = path.split("/")
            body = json.dumps(self.card(entity_type, int(name.removesuffix(".json"))))
        if body is None:
            route.fulfill(status=404, body="not found")
            return
        content_type = content_type or "application/json"
        if content_type.startswith(("text/", "application/javascript", "application/json")):
            content_type += "; charset=utf-8"
        route.fulfill(status=status, body=body, headers={"Content-Type": content_type})


@pytest.fixture
def amo(integration):
    """The fake amoCRM with the demo account (users, contacts with phones, leads), no rate limit for the
    page's own reads (smsgate's client keeps to 7 rps by itself)."""
    with FakeAmoCRM(client_id=str(integration.client_uuid), client_secret=SECRET, redirect_uri=REDIRECT_URI) as fake:
        demo = seed_demo(fake)
        fake.account(DEMO_ACCOUNT_ID).limit_rps = 0
        fake.demo = demo
        yield fake


@pytest.fixture
def card_stack(stack, amo, account, tmp_path):
    """gunicorn (not yet a worker) pointed at the fake amoCRM and the fake SMS.ru, the account installed
    (its token pair stored) with an SMS.ru route of its own; the built widget."""
    pair = amo.issue_token_pair(account.amo_id, subdomain=account.subdomain)
    AmoToken.objects.update_or_create(account=account, defaults={
        "access_token": pair["access_token"], "refresh_token": pair["refresh_token"],
        "expires_at": timezone.now() + timedelta(seconds=pair["expires_in"]), "needs_reinstall": False})
    with FakeSmsRu(status_delays=(0.3, 0.3)) as smsru:
        stack.env["SMSGATE_PROVIDER_BASE_URLS"] = f"smsru={smsru.url}"
        stack.env["AMO_BASE_URL"] = amo.url
        stack.start_web()
        stack.env["SMSGATE_PUBLIC_URL"] = stack.web_url  # the worker builds callback URLs from it
        route = ProviderRoute.objects.create(account=account, provider="smsru", priority=10, sender="ACME",
                                             credentials={"api_id": smsru.api_id})
        smsru.callback_urls.append(f"{stack.web_url}/webhooks/smsru/{route.callback_token}/")
        side = AmoCrmSide(amo, built_widget(stack.web_url, tmp_path))
        try:
            yield {"stack": stack, "amo": amo, "smsru": smsru, "route": route, "side": side}
        finally:
            side.close()


def open_card(chromium, card_stack, make_token, entity_type, entity_id, *, lang="ru", width=1280, height=900,
              problems=None, user_id=777):
    page = chromium.new_page(viewport={"width": width, "height": height},
                             locale="ru-RU" if lang == "ru" else "en-US")
    if problems is not None:
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        # 4xx answers the panel shows are logged by Chromium as failed resources: not problems.
        page.on("console", lambda msg: msg.type not in ("debug", "error")
                and problems.append(f"console.{msg.type}: {msg.text}"))
    page.expose_function("smsgateSignToken", lambda: make_token(user_id=user_id))
    page.route(f"{AMO_ORIGIN}/**", card_stack["side"].answer)
    page.goto(f"{AMO_ORIGIN}/{entity_type}/detail/{entity_id}?lang={lang}&user={user_id}")
    page.wait_for_selector(f"{PANEL}[data-phones-from='amocrm']", timeout=20000)  # the card as smsgate read it
    assert page.evaluate("window.smsgateCallbacks") == [True, True, True]
    return page


def shot(page, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def assert_fits(page):
    """Nothing in the panel is wider than the panel, and the page does not scroll sideways."""
    widths = page.evaluate("""() => {
        const card = document.querySelector('.smsgate-card');
        const widest = Math.max(...[...card.querySelectorAll('*')].map(n => n.getBoundingClientRect().right));
        return [widest, card.getBoundingClientRect().right, card.scrollWidth, card.clientWidth,
                document.documentElement.scrollWidth, window.innerWidth]; }""")
    assert widths[0] <= widths[1] + 0.5 and widths[2] <= widths[3] and widths[4] <= widths[5], widths


def options(page, selector):
    return page.eval_on_selector_all(f"{selector} option", "nodes => nodes.map(n => [n.value, n.textContent])")


# --- the panel on a lead's card ------------------------------------------------------------------------------
def test_panel_on_a_lead_sends_a_template_once_and_follows_it_to_delivered(card_stack, chromium, make_token,
                                                                             account):
    amo, stack = card_stack["amo"], card_stack["stack"]
    lead = amo.demo["leads"]["delivery"]  # «Доставка мебели»: Сергей (8 912 000-11-22) and Екатерина (2 phones)
    template = SmsTemplate.objects.create(account=account, name="Заказ готов",
                                          text="Здравствуйте, {{contact.first_name}}! Заказ «{{lead.name}}» готов.")
    SmsTemplate.objects.create(account=account, name="Старый", text="old", is_active=False)
    problems = []
    page = open_card(chromium, card_stack, make_token, "leads", lead, problems=problems)

    # The card's phones as smsgate read them from amoCRM (E.164), the main contact first.
    phones = options(page, f"{PANEL} .smsgate-card-phone")
    assert [value for value, _ in phones] == ["+79120001122", "+79161234567", "+74951234567"]
    assert "мобильный" in phones[1][1] and "рабочий" in phones[2][1]
    assert options(page, f"{PANEL} .smsgate-card-template") == [["", "Свой текст"], [str(template.pk), "Заказ готов"]]
    page.wait_for_selector(f"{PANEL} .smsgate-card-no-sends:visible")
    assert page.inner_text(f"{PANEL} .smsgate-card-title") == "SMS клиенту"

    # A template: filled in for this lead by the server's preview, its encoding and parts.
    assert page.inner_text(f"{PANEL} .smsgate-card-recipient") == "Сергей Васильев · основной"
    page.select_option(f"{PANEL} .smsgate-card-phone", "+79161234567")
    assert page.inner_text(f"{PANEL} .smsgate-card-recipient") == "Екатерина Морозова"
    page.select_option(f"{PANEL} .smsgate-card-template", str(template.pk))
    expected = "Здравствуйте, Екатерина! Заказ «Доставка мебели» готов."  # the recipient's contact
    page.wait_for_selector(f"{PANEL} .smsgate-card-preview-text:text-is('{expected}')", timeout=10000)
    assert page.inner_text(f"{PANEL} .smsgate-card-counter") == f"{len(expected)} симв. · Unicode (кириллица) · 1 SMS"
    shot(page, "card-1-lead-template-ru.png")

    # A double click sends one SMS.
    page.dblclick(f"{PANEL} .smsgate-card-send")
    page.wait_for_selector(f"{PANEL} .smsgate-card-result .smsgate-card-notice_success")
    assert page.inner_text(f"{PANEL} .smsgate-card-result") == "SMS на +7 916 123-45-67 принято к отправке."
    [delivery] = Delivery.objects.filter(account=account)
    assert (delivery.kind, delivery.phone, delivery.text) == (DeliveryKind.CRM, "+79161234567", expected)
    item = f"{PANEL} .smsgate-card-sms[data-id='{delivery.pk}']"
    page.wait_for_selector(f"{item}[data-status='pending']")
    assert page.inner_text(f"{item} .smsgate-card-sms-text") == expected
    assert page.inner_text(f"{item} .smsgate-card-sms-phone") == "Екатерина Морозова · +7 916 123-45-67"
    assert page.inner_text(f"{item} .smsgate-card-sms-meta") == "1 SMS · отправили вы"
    assert page.locator(f"{PANEL}.smsgate-card_polling").count() == 1  # refreshing while in flight
    # The form is empty again, ready for the next SMS.
    assert page.input_value(f"{PANEL} .smsgate-card-text") == ""
    assert page.is_disabled(f"{PANEL} .smsgate-card-send")
    shot(page, "card-2-lead-pending-ru.png")

    # The worker sends it; the panel follows it without a click: sent, then delivered (the provider's
    # report), and then stops refreshing.
    stack.start_worker()
    page.wait_for_selector(f"{item}:is([data-status='sent'], [data-status='delivered'])", timeout=30000)
    page.wait_for_selector(f"{item}[data-status='delivered']", timeout=30000)
    assert page.inner_text(f"{item} .smsgate-card-badge") == "доставлено"
    page.wait_for_selector(f"{PANEL}:not(.smsgate-card_polling)", timeout=10000)
    [message] = card_stack["smsru"].sent_to("79161234567")
    assert message["msg"] == expected and message["from"] == "ACME"
    # smsgate writes the sms_out note (once) and the feed shows it.
    wait_for(lambda: len(amo.notes(DEMO_ACCOUNT_ID, "leads", lead)) == 1, 30, "no sms_out note")
    [note] = amo.notes(DEMO_ACCOUNT_ID, "leads", lead)
    assert note["note_type"] == "sms_out" and note["params"] == {"text": expected, "phone": "+79161234567"}
    page.wait_for_selector(".amo-note[data-note-type='sms_out']", timeout=10000)
    assert Delivery.objects.filter(account=account).count() == 1
    shot(page, "card-3-lead-delivered-ru.png")

    # A narrower right column (amoCRM's shrinks with the window): nothing sticks out of it.
    page.add_style_tag(content=".card-widgets { flex-basis: 230px !important; width: 230px !important; }")
    page.select_option(f"{PANEL} .smsgate-card-template", str(template.pk))
    page.wait_for_selector(f"{PANEL} .smsgate-card-preview-text:text-is('{expected}')", timeout=10000)
    assert_fits(page)
    shot(page, "card-3b-lead-narrow-column-ru.png")
    assert problems == []


# --- the panel on a contact's card, in English, on a narrow window -------------------------------------------
def test_panel_on_a_contact_card_in_english_on_a_narrow_window(card_stack, chromium, make_token, account):
    amo = card_stack["amo"]
    olga = amo.demo["contacts"]["olga"]
    problems = []
    anna = amo.account(DEMO_ACCOUNT_ID).admin_id  # «Анна Смирнова»
    page = open_card(chromium, card_stack, make_token, "contacts", olga, lang="en", width=390, height=1400,
                     problems=problems, user_id=anna)
    assert page.inner_text(f"{PANEL} .smsgate-card-title") == "SMS to the customer"
    assert [v for v, _ in options(page, f"{PANEL} .smsgate-card-phone")] == ["+79123456789"]
    assert options(page, f"{PANEL} .smsgate-card-template") == [["", "Own text"]]
    assert page.is_disabled(f"{PANEL} .smsgate-card-template")  # no active template yet

    # Free text with a marker: the preview fills it in for this contact; Latin stays GSM-7.
    page.fill(f"{PANEL} .smsgate-card-text", "Hello {{contact.first_name}}, your order is ready.")
    page.wait_for_selector(f"{PANEL} .smsgate-card-preview-text:text-is('Hello Ольга, your order is ready.')",
                           timeout=10000)
    assert page.inner_text(f"{PANEL} .smsgate-card-counter") == "33 characters · Unicode · 1 SMS"
    assert "{{contact.first_name}}" in page.inner_text(f"{PANEL} .smsgate-card-warnings")  # the value made it UCS-2
    long_text = ("Your order is ready. " * 8).strip()
    page.fill(f"{PANEL} .smsgate-card-text", long_text)
    page.wait_for_selector(f"{PANEL} .smsgate-card-counter:text-is('167 characters · Latin (GSM-7) · 2 SMS')",
                           timeout=10000)

    assert_fits(page)
    shot(page, "card-4-contact-narrow-en.png")

    page.click(f"{PANEL} .smsgate-card-send")
    page.wait_for_selector(f"{PANEL} .smsgate-card-result .smsgate-card-notice_success")
    assert page.inner_text(f"{PANEL} .smsgate-card-result") == "SMS to +7 912 345-67-89 accepted for sending."
    [delivery] = Delivery.objects.filter(account=account)
    assert (delivery.kind, delivery.phone, delivery.text) == (DeliveryKind.CRM, "+79123456789", long_text)
    item = f"{PANEL} .smsgate-card-sms[data-id='{delivery.pk}']"
    page.wait_for_selector(f"{item} .smsgate-card-badge:text-is('queued')", timeout=10000)
    assert page.inner_text(f"{item} .smsgate-card-sms-meta") == "2 SMS · sent by you"
    shot(page, "card-5-contact-sent-en.png")

    # Another user of the account sees the card's history, full texts, and who sent each SMS.
    ivan = next(u.id for u in amo.account(DEMO_ACCOUNT_ID).users.values() if u.name == "Иван Петров")
    other = open_card(chromium, card_stack, make_token, "contacts", olga, lang="en", problems=problems, user_id=ivan)
    other.wait_for_selector(f"{item} .smsgate-card-sms-meta:text-is('2 SMS · sent by Анна Смирнова')", timeout=10000)
    assert other.inner_text(f"{item} .smsgate-card-sms-text") == long_text
    assert problems == []


# --- refusals --------------------------------------------------------------------------------------------------
def test_refusals_are_shown_with_the_servers_reason(card_stack, chromium, make_token, account):
    amo = card_stack["amo"]
    lead = amo.demo["leads"]["kitchen"]  # «Кухня на заказ», Ольга +7 (912) 345-67-89
    page = open_card(chromium, card_stack, make_token, "leads", lead)

    # No route of the account's own: refused, the reason shown, nothing recorded, the form kept.
    ProviderRoute.objects.filter(account=account).delete()
    page.fill(f"{PANEL} .smsgate-card-text", "Кухня готова к доставке.")
    page.wait_for_selector(f"{PANEL} .smsgate-card-preview:visible")
    page.click(f"{PANEL} .smsgate-card-send")
    page.wait_for_selector(f"{PANEL} .smsgate-card-result .smsgate-card-notice_error")
    refusal = page.inner_text(f"{PANEL} .smsgate-card-result")
    assert refusal.startswith("Для этого аккаунта не настроен SMS-провайдер."), refusal  # the API's detail
    assert Delivery.objects.filter(account=account).count() == 0
    assert page.input_value(f"{PANEL} .smsgate-card-text") == "Кухня готова к доставке."
    assert page.is_enabled(f"{PANEL} .smsgate-card-send")
    shot(page, "card-6-no-route-ru.png")


def test_the_feeds_sms_input_goes_through_smsgate(card_stack, chromium, make_token, account):
    amo, stack = card_stack["amo"], card_stack["stack"]
    lead = amo.demo["leads"]["kitchen"]
    olga = amo.demo["contacts"]["olga"]
    # A phone typed on the card but not saved: amoCRM's page offers it, amoCRM's API does not have it.
    card_stack["side"].extra_phones[olga] = [{"value": "+7 999 000-00-01", "enum": "MOB"}]
    stack.start_worker()
    problems = []
    page = open_card(chromium, card_stack, make_token, "leads", lead, problems=problems)
    assert options(page, ".feed-sms-phone") == [["+7 (912) 345-67-89", "Ольга Иванова: +7 (912) 345-67-89"],
                                                 ["+7 999 000-00-01", "Ольга Иванова: +7 999 000-00-01"]]

    # Accepted: the source's promise resolves, amoCRM writes the note itself (smsgate does not).
    page.select_option(".feed-sms-phone", "+7 (912) 345-67-89")
    page.fill(".feed-sms-text", "Мастер приедет завтра в 10:00.")
    page.click(".feed-sms-send")
    page.wait_for_function("window.smsgateFeedResult && window.smsgateFeedResult.resolved === true", timeout=15000)
    [delivery] = Delivery.objects.filter(account=account)
    assert (delivery.kind, delivery.phone, delivery.text) == (DeliveryKind.CRM, "+79123456789",
                                                            "Мастер приедет завтра в 10:00.")
    page.wait_for_selector(f"{PANEL} .smsgate-card-sms[data-id='{delivery.pk}'] .smsgate-card-sms-origin")
    wait_for(lambda: Delivery.objects.get(pk=delivery.pk).status in ("sent", "delivered"), 30, "not sent")
    page.wait_for_selector(".amo-note[data-note-type='sms_out']", timeout=10000)
    time.sleep(3)  # an outbox would have written its note by now
    notes = amo.notes(DEMO_ACCOUNT_ID, "leads", lead)
    assert [(n["note_type"], n["params"]["text"]) for n in notes] == [
        ("sms_out", "Мастер приедет завтра в 10:00.")]
    shot(page, "card-7-feed-accepted-ru.png")

    # Refused: a phone that is not on the card in amoCRM; the promise rejects with the reason.
    page.select_option(".feed-sms-phone", "+7 999 000-00-01")
    page.fill(".feed-sms-text", "Проверка")
    page.click(".feed-sms-send")
    page.wait_for_function("window.smsgateFeedResult && window.smsgateFeedResult.resolved === false", timeout=15000)
    reason = page.evaluate("window.smsgateFeedResult.message")
    assert reason and page.inner_text(".amo-feed__result") == reason
    assert reason in page.inner_text(f"{PANEL} .smsgate-card-message")
    assert Delivery.objects.filter(account=account).count() == 1
    assert len(amo.notes(DEMO_ACCOUNT_ID, "leads", lead)) == 1
    shot(page, "card-8-feed-refused-ru.png")
    assert problems == []


# --- "Try it locally": the same page served by smsgate in development -----------------------------------------
def test_try_it_locally_the_stand_in_card_against_the_fake_amocrm(stack, chromium):
    """What README "Try it locally" promises: `make fake-amocrm` installs the widget for the demo account
    into a DEBUG smsgate (the install webhook, then a console route as an owner would add), and
    /dev/amocrm/ shows a lead's card with the panel, which sends."""
    client_id, secret = str(uuid.uuid4()), "dev-secret-" + "x" * 40
    redirect_uri = "http://127.0.0.1:8000/amocrm/oauth"
    with FakeAmoCRM(client_id=client_id, client_secret=secret, redirect_uri=redirect_uri) as fake:
        seed_demo(fake)
        stack.env.update(DEBUG="1", AMO_BASE_URL=fake.url, AMO_CLIENT_ID=client_id, AMO_CLIENT_SECRET=secret,
                         AMO_REDIRECT_URI=redirect_uri, SMSGATE_ENCRYPTION_KEYS="")
        web = stack.start_web()
        said = []
        assert install_into(fake, stack.web_url, client_id=client_id, client_secret=secret,
                            redirect_uri=redirect_uri, wait=30, log=said.append), (said, web.log()[-3000:])
        account = Account.objects.get(amo_id=DEMO_ACCOUNT_ID)
        assert AmoToken.objects.filter(account=account).exists()
        assert list(ProviderRoute.objects.filter(account=account).values_list("provider", flat=True)) == ["console"]
        # A second run finds it installed and its route there.
        assert install_into(fake, stack.web_url, client_id=client_id, client_secret=secret,
                            redirect_uri=redirect_uri, wait=30, log=said.append), said
        assert ProviderRoute.objects.filter(account=account).count() == 1
        stack.start_worker()

        page = chromium.new_page(viewport={"width": 1280, "height": 900})
        problems = []
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.goto(f"{stack.web_url}/dev/amocrm/")
        assert "/dev/amocrm/leads/detail/" in page.url
        try:
            page.wait_for_selector(f"{PANEL}[data-phones-from='amocrm']", timeout=20000)
        finally:
            shot(page, "card-9-try-it-locally-open.png")
        page.fill(f"{PANEL} .smsgate-card-text", "Проверка из карточки")
        page.click(f"{PANEL} .smsgate-card-send")
        page.wait_for_selector(f"{PANEL} .smsgate-card-result .smsgate-card-notice_success", timeout=10000)
        [delivery] = Delivery.objects.filter(account=account)
        assert delivery.kind == DeliveryKind.CRM
        page.wait_for_selector(f"{PANEL} .smsgate-card-sms[data-id='{delivery.pk}'][data-status='sent']",
                               timeout=30000)
        shot(page, "card-9-try-it-locally.png")
        assert problems == []


def test_the_stand_in_is_not_served_without_debug(card_stack):
    web = card_stack["stack"].web_url
    for path in ("/dev/amocrm/", "/dev/amocrm/token", "/dev/amocrm/leads/detail/1", "/dev/amocrm/data/cards.json"):
        assert httpx.get(web + path).status_code == 404, path
