"""Development only (wired in smsgate/urls.py when DEBUG is on): a page that stands in for amoCRM's lead and
contact card with the real widget in it, so a newcomer can send SMS from the card panel and from the feed
against the fake amoCRM (`make fake-amocrm`, README "Try it locally").

The page is the one the browser test serves (`tests/browser/amocrm_card.html`); here it is served under
/dev/amocrm/ with what it asks for next to it: RequireJS and jQuery (tests/browser/node_modules, `npm ci
--prefix tests/browser`), the widget as `build_widget` builds it for this server, the card and its feed
read from amoCRM through `AmoClient` (the fake, at AMO_BASE_URL), and one-time tokens signed for the demo
account like `manage.py amo_token`. The page and the API are on one origin, so no CORS is involved.

The functions turning amoCRM's API v4 replies into what the page shows (`page_card`, `page_cards`,
`page_notes`) are shared with the browser test, which reads the same replies from its own fake.
"""

import io
import json
import mimetypes
import time
import zipfile
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.urls import path, re_path
from django.views.decorators.csrf import csrf_exempt

from .amocrm.api import AmoApiError, AmoClient, AmoNotConnected
from .integrations import integration_sync_from_settings
from .models import Account
from .tokens import issue_token
from .widget_archive import widget_build

ROOT = Path(settings.BASE_DIR)
PAGE = ROOT / "tests" / "browser" / "amocrm_card.html"
NODE_MODULES = ROOT / "tests" / "browser" / "node_modules"
VENDOR = {"require.js": NODE_MODULES / "requirejs" / "require.js",
          "jquery.min.js": NODE_MODULES / "jquery" / "dist" / "jquery.min.js"}
WIDGET_SOURCE = ROOT / "widget_src"
DEMO_ACCOUNT_ID = 12345  # the fake amoCRM's --seed-demo account (tests/fakes/amocrm/demo.py)
DEMO_SUBDOMAIN = "acme"
DEMO_USER_ID = 777
LIST_LIMIT = 50


# --- amoCRM's replies as the page shows them (shared with tests/browser/test_card_panel.py) -------------
def _phones(contact: dict) -> list[dict]:
    phones = []
    for field in contact.get("custom_fields_values") or []:
        if field.get("field_code") == "PHONE":
            phones += [{"value": str(v.get("value") or ""), "enum": v.get("enum_code") or v.get("enum") or "OTHER"}
                       for v in field.get("values") or [] if v.get("value")]
    return phones


def _contact(contact: dict, *, is_main: bool) -> dict:
    return {"id": contact["id"], "name": contact.get("name") or "", "first_name": contact.get("first_name") or "",
            "last_name": contact.get("last_name") or "", "is_main": is_main, "phones": _phones(contact)}


def page_card(entity_type: str, entity: dict, contacts: list[dict]) -> dict:
    """The card the page draws: `entity` as GET /api/v4/leads/{id}?with=contacts (or /contacts/{id})
    returns it, `contacts` its contacts as GET /api/v4/contacts returns them."""
    if entity_type == "contacts":
        people = [_contact(entity, is_main=True)]
    else:
        linked = (entity.get("_embedded") or {}).get("contacts") or []
        main = {link["id"] for link in linked if link.get("is_main")}
        by_id = {contact["id"]: contact for contact in contacts}
        people = [_contact(by_id[link["id"]], is_main=link["id"] in main) for link in linked if link["id"] in by_id]
    return {"entity_type": entity_type, "entity_id": entity["id"], "name": entity.get("name") or "",
            "price": entity.get("price") or 0, "contacts": people}


def page_cards(leads: list[dict], contacts: list[dict], users: list[dict]) -> dict:
    """The account's leads and contacts (the stand-in's top bar) and its users as amoCRM's page holds them
    (APP.constant('managers'): {id: {id, title}})."""
    return {"leads": [{"id": x["id"], "name": x.get("name") or ""} for x in leads],
            "contacts": [{"id": x["id"], "name": x.get("name") or ""} for x in contacts],
            "managers": {str(u["id"]): {"id": str(u["id"]), "title": u.get("name") or ""} for u in users}}


def page_notes(notes: list[dict]) -> list[dict]:
    """The feed, newest last (as amoCRM's feed reads)."""
    rows = [{"id": n["id"], "note_type": n.get("note_type"), "params": n.get("params") or {},
             "created_at": n.get("created_at") or 0} for n in notes]
    return sorted(rows, key=lambda n: (n["created_at"], n["id"]))


# --- the views --------------------------------------------------------------------------------------------
def _dev_only():
    if not settings.DEBUG:
        raise Http404  # never wired without DEBUG; and never answering if it were


def _problem(text: str, status: int = 503) -> HttpResponse:
    return HttpResponse(text, status=status, content_type="text/plain; charset=utf-8")


def _demo_account() -> Account | None:
    integration = integration_sync_from_settings()
    if integration is None:
        return None
    return Account.objects.filter(integration=integration, amo_id=DEMO_ACCOUNT_ID).first()


def _client() -> AmoClient:
    account = _demo_account()
    if account is None:
        raise AmoNotConnected("the demo account is not installed", account_id=None)
    return AmoClient(account)


NOT_CONNECTED = ("smsgate has no amoCRM connection for the demo account {account}. Start the fake amoCRM in another "
                 "terminal with `make fake-amocrm` (it installs the widget into this smsgate), with AMO_BASE_URL="
                 "http://127.0.0.1:9100 in .env. See README \"Try it locally\".")


def _amocrm(read):
    try:
        return read(_client())
    except AmoNotConnected:
        return _problem(NOT_CONNECTED.format(account=DEMO_ACCOUNT_ID))
    except AmoApiError as exc:
        return _problem(f"amoCRM did not answer as expected: {type(exc).__name__} ({exc})")


def index(request):
    """/dev/amocrm/: the first lead's card."""
    _dev_only()

    def first_lead(client):
        leads = client.get("/api/v4/leads", [("limit", 1)])
        items = ((leads or {}).get("_embedded") or {}).get("leads") or []
        if not items:
            return _problem("The fake amoCRM has no leads: start it with `make fake-amocrm` (it seeds demo data).")
        return redirect(f"{request.path.rstrip('/')}/leads/detail/{items[0]['id']}")

    return _amocrm(first_lead)


def card_page(request, entity_type, entity_id):
    _dev_only()
    return HttpResponse(PAGE.read_bytes(), content_type="text/html; charset=utf-8")


def vendor(request, name):
    _dev_only()
    path = VENDOR.get(name)
    if path is None:
        raise Http404
    if not path.is_file():
        return _problem("RequireJS and jQuery are missing: run `npm ci --prefix tests/browser` once.")
    return FileResponse(path.open("rb"), content_type="application/javascript; charset=utf-8")


@lru_cache(maxsize=4)
def _widget_files(base_url: str, stamp: tuple) -> dict[str, bytes]:
    result = widget_build(source=WIDGET_SOURCE, base_url=base_url, support_email="support@localhost")
    with zipfile.ZipFile(io.BytesIO(result.archive)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def widget_file(request, name):
    """The widget as build_widget builds it for this server (rebuilt when a file under widget_src changes)."""
    _dev_only()
    stamp = tuple(sorted((p.name, p.stat().st_mtime_ns) for p in WIDGET_SOURCE.rglob("*") if p.is_file()))
    files = _widget_files(request.build_absolute_uri("/").rstrip("/"), stamp)
    if name not in files:
        raise Http404
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if content_type.startswith(("text/", "application/javascript", "application/json")):
        content_type += "; charset=utf-8"
    return HttpResponse(files[name], content_type=content_type)


def cards(request):
    _dev_only()

    def read(client):
        leads = ((client.get("/api/v4/leads", [("limit", LIST_LIMIT)]) or {}).get("_embedded") or {}).get("leads")
        contacts = ((client.get("/api/v4/contacts", [("limit", LIST_LIMIT)]) or {}).get("_embedded") or {}).get(
            "contacts")
        return JsonResponse(page_cards(leads or [], contacts or [], client.users()))

    return _amocrm(read)


def card(request, entity_type, entity_id):
    _dev_only()
    entity_id = int(entity_id)

    def read(client):
        if entity_type == "leads":
            entity = client.lead(entity_id)
            ids = [link["id"] for link in ((entity or {}).get("_embedded") or {}).get("contacts") or []]
            contacts = client.contacts(ids) if ids else []
        else:
            entity, contacts = client.contact(entity_id), []
        if entity is None:
            return _problem(f"amoCRM has no {entity_type} #{entity_id}.", 404)
        return JsonResponse(page_card(entity_type, entity, contacts))

    return _amocrm(read)


@csrf_exempt
def notes(request, entity_type, entity_id):
    """The card's feed (GET), or the note amoCRM writes itself once the feed's SMS source resolved (POST)."""
    _dev_only()
    entity_id = int(entity_id)

    def read(client):
        if request.method == "POST":
            try:
                body = json.loads(request.body or b"{}")
                params = {key: str(body["params"][key]) for key in ("text", "phone")}
            except (ValueError, KeyError, TypeError):
                return _problem('Expected {"params": {"text", "phone"}}.', 400)
            client.add_notes(entity_type, [{"entity_id": entity_id, "note_type": "sms_out", "params": params,
                                            "request_id": f"feed-{time.time_ns()}"}])
            return JsonResponse({"status": "ok"}, status=201)
        return JsonResponse(page_notes(client.notes(entity_type, entity_id)), safe=False)

    return _amocrm(read)


def token(request):
    """A one-time token for the demo account, signed as amoCRM signs them (an admin user)."""
    _dev_only()
    integration = integration_sync_from_settings()
    if integration is None:
        return _problem("AMO_CLIENT_ID is not set: no integration to sign tokens for.")
    return HttpResponse(issue_token(integration=integration, account_id=DEMO_ACCOUNT_ID, subdomain=DEMO_SUBDOMAIN,
                                    user_id=DEMO_USER_ID, is_admin=True, ttl=600),
                        content_type="text/plain; charset=utf-8")


# /dev/amocrm/... (included by smsgate/urls.py only when DEBUG is on)
_ENTITY = r"(?P<entity_type>leads|contacts)"
_ID = r"(?P<entity_id>[1-9][0-9]{0,14})"
urlpatterns = [
    path("", index, name="dev-amocrm"),
    re_path(rf"^{_ENTITY}/detail/{_ID}/?$", card_page, name="dev-amocrm-card"),
    re_path(r"^vendor/(?P<name>[a-z.]+)$", vendor),
    re_path(r"^widget/(?P<name>(?:i18n/|images/)?[A-Za-z0-9_.-]+)$", widget_file),
    path("data/cards.json", cards),
    re_path(rf"^data/{_ENTITY}/{_ID}\.json$", card),
    re_path(rf"^data/{_ENTITY}/{_ID}/notes\.json$", notes),
    path("token", token),
]
