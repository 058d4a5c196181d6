"""API v4 routes of the fake amoCRM, on an already authenticated account (the server does auth, limits and
account states first). Request and reply shapes follow the official docs (crm_platform/leads-api,
contacts-api, users-api, account-info, leads_pipelines, custom-fields, events-and-notes, tasks-api,
widgets-api "widget-continue", error-codes); where they are silent a comment says what was chosen.

Conventions of API v4 kept here: success `application/hal+json`, errors `application/problem+json`;
an empty list or an unknown id is `204 No Content` (error-codes: 2002 "nothing found" -> 204; leads-api
and contacts-api: "204 — ... with that id does not exist"); validation errors are 400 with
`validation-errors: [{request_id, errors: [{code, path, detail}]}]` and nothing of the batch is written.
"""

import re
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from ..base import FakeRequest, FakeResponse
from .model import ENTITY_TYPES, NOTE_TYPES, AmoAccount, Note, SalesbotContinue, Task

MAX_LIMIT = 250
DEFAULT_LIMIT = 50
HAL = {"Content-Type": "application/hal+json"}
PROBLEM = {"Content-Type": "application/problem+json"}
NO_CONTENT = FakeResponse(204, b"")


@dataclass
class Ctx:
    account: AmoAccount
    user_id: int  # the user the access token belongs to
    request: FakeRequest
    query: dict  # PHP-style nested query: filter[id][]=1 -> {"filter": {"id": ["1"]}}
    raw_query: str
    base: str  # this fake's own URL: every `_links` href points back here


# --- replies -------------------------------------------------------------------------------------------
def hal(body, status: int = 200) -> FakeResponse:
    return FakeResponse(status, body, headers=dict(HAL))


def problem(status: int, title: str, detail: str) -> FakeResponse:
    return FakeResponse(status, {"title": title, "type": f"https://httpstatus.es/{status}", "status": status,
                                 "detail": detail}, headers=dict(PROBLEM))


def validation_failed(errors: list[tuple[str, list[tuple[str, str, str]]]]) -> FakeResponse:
    """error-codes.md, "Пример ошибки валидации данных"."""
    body = {"validation-errors": [{"request_id": request_id,
                                   "errors": [{"code": c, "path": p, "detail": d} for c, p, d in item_errors]}
                                  for request_id, item_errors in errors],
            "title": "Bad Request", "type": "https://httpstatus.es/400", "status": 400,
            "detail": "Request validation failed"}
    return FakeResponse(400, body, headers=dict(PROBLEM))


MISSING = ("FieldMissing", "This field is missing.")  # as amoCRM answers a note without params.text
NOT_NULL = ("NotNullable", "This value should not be null.")  # amocrm-api-php#383
NOT_STRING = ("InvalidType", "This value should be of type string.")
NOT_INT = ("InvalidType", "This value should be of type int.")
NOT_CHOICE = ("NotSupportedChoice", "The value you selected is not a valid choice.")  # amocrm-api-php#469
# A guess: no doc or issue thread shows the answer to a note or task on an entity that does not exist or
# cannot take it (a lead in "Неразобранное", which amoCRM keeps apart: andrey-tech/amocrm-api-php#16).
NOT_FOUND = ("NotFound", "Entity not found")


# --- query parsing -----------------------------------------------------------------------------------------
def php_query(raw: str) -> dict:
    """PHP's reading of a query string: `a[b][]=1&a[b][]=2&a[c][from]=3` -> {"a": {"b": ["1", "2"], "c":
    {"from": "3"}}}; `a[b][0]=1` gives {"0": "1"} (see `as_list`)."""
    out: dict = {}
    for key, value in parse_qsl(raw, keep_blank_values=True):
        name, _, rest = key.partition("[")
        parts = [name] + (re.findall(r"\[([^\]]*)\]", "[" + rest) if rest else [])
        node = out
        for n, part in enumerate(parts):
            last = n == len(parts) - 1
            nxt = None if last else parts[n + 1]
            if part == "" and isinstance(node, list):
                if last:
                    node.append(value)
                    break
                node.append({} if nxt else [])
                node = node[-1]
                continue
            if not isinstance(node, dict):
                break  # a conflicting shape (a[]=1&a[b]=2): PHP keeps going, we drop the pair
            if last:
                node[part] = value
            else:
                if not isinstance(node.get(part), (dict, list)):
                    node[part] = [] if nxt == "" else {}
                node = node[part]
    return out


def as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, dict):
        return list(value.values())
    return value if isinstance(value, list) else [value]


def ints(value) -> list[int]:
    return [int(v) for v in as_list(value) if isinstance(v, str) and v.strip().lstrip("-").isdigit()]


def withs(ctx: Ctx) -> set[str]:
    return {w.strip() for w in str(ctx.query.get("with") or "").split(",") if w.strip()}


def ordered(ctx: Ctx, items: list, fields=("id", "updated_at", "created_at")) -> list:
    """`order[<field>]=asc|desc`. The docs do not say the default order; we answer by id, ascending."""
    order = ctx.query.get("order")
    if isinstance(order, dict):
        for name, direction in order.items():
            if name in fields:
                return sorted(items, key=lambda e: getattr(e, name), reverse=str(direction).lower() == "desc")
    return sorted(items, key=lambda e: e.id)


def page(ctx: Ctx, items: list, key: str, render) -> FakeResponse:
    """A list page: `limit` (at most 250; more is cut to 250 since the docs only state the maximum),
    `page` from 1, `_page` and `_links`. As amoCRM does, `_links.next` is given whenever the page is full,
    even when nothing follows, and that next page is then 204 (amocrm/amocrm-api-php#193)."""
    try:
        limit = min(max(int(ctx.query.get("limit") or DEFAULT_LIMIT), 1), MAX_LIMIT)
        number = max(int(ctx.query.get("page") or 1), 1)
    except (TypeError, ValueError):
        limit, number = DEFAULT_LIMIT, 1
    chunk = items[(number - 1) * limit: number * limit]
    if not chunk:
        return NO_CONTENT
    pairs = [(k, v) for k, v in parse_qsl(ctx.raw_query, keep_blank_values=True) if k not in ("page", "limit")]

    def href(n):
        return f"{ctx.base}{ctx.request.path}?{urlencode(pairs + [('page', n), ('limit', limit)])}"

    links = {"self": {"href": href(number)}}
    if len(chunk) == limit:
        links["next"] = {"href": href(number + 1)}
    if number > 1:
        links["first"] = {"href": href(1)}
        links["prev"] = {"href": href(number - 1)}
    return hal({"_page": number, "_links": links, "_embedded": {key: [render(e) for e in chunk]}})


def json_array(ctx: Ctx):
    """The JSON array a POST must carry, or the 400 to answer."""
    try:
        body = ctx.request.json()
    except ValueError:
        return None, problem(400, "Bad Request", "Request body is not valid JSON")
    if not isinstance(body, list) or not body:
        # A guess: the docs only show arrays for batch methods; an object or an empty array is refused.
        return None, problem(400, "Bad Request", "Request body must be a non-empty JSON array")
    return body, None


# --- account, users, pipelines, fields -----------------------------------------------------------------------
def account_detail(ctx: Ctx):
    return hal(ctx.account.account_to_api(ctx.base, ctx.user_id, withs(ctx)))


def _admin_only(ctx: Ctx):
    user = ctx.account.users.get(ctx.user_id)
    if user is None or not user.is_admin:
        # users-api: "only with the rights of an account admin" -> 403.
        return problem(403, "Forbidden", "Access denied")
    return None


def users_list(ctx: Ctx):
    refusal = _admin_only(ctx)
    return refusal or page(ctx, ordered(ctx, list(ctx.account.users.values()), ("id",)), "users",
                           lambda u: u.to_api(ctx.base))


def user_detail(ctx: Ctx, user_id: str):
    refusal = _admin_only(ctx)
    user = ctx.account.users.get(int(user_id))
    return refusal or (hal(user.to_api(ctx.base)) if user else NO_CONTENT)


def pipelines_list(ctx: Ctx):
    pipelines = list(ctx.account.pipelines.values())
    return hal({"_total_items": len(pipelines), "_links": {"self": {"href": f"{ctx.base}/api/v4/leads/pipelines"}},
                "_embedded": {"pipelines": [ctx.account.pipeline_to_api(p, ctx.base) for p in pipelines]}})


def pipeline_detail(ctx: Ctx, pipeline_id: str):
    pipeline = ctx.account.pipelines.get(int(pipeline_id))
    return hal(ctx.account.pipeline_to_api(pipeline, ctx.base)) if pipeline else NO_CONTENT


def fields_list(ctx: Ctx, entity_type: str):
    fields = [f for f in ctx.account.fields.values() if f.entity_type == entity_type]
    return page(ctx, fields, "custom_fields", lambda f: f.to_api(ctx.account.id, ctx.base))


# --- leads and contacts ------------------------------------------------------------------------------------------
def _filtered_by(filters: dict, name: str, items: list, attr: str) -> list:
    if name not in filters:
        return items
    wanted = set(ints(filters[name]))  # present but with no valid id: nothing matches
    return [e for e in items if getattr(e, attr) in wanted]


def leads_list(ctx: Ctx):
    filters = ctx.query.get("filter") if isinstance(ctx.query.get("filter"), dict) else {}
    leads = list(ctx.account.leads.values())
    for name, attr in (("id", "id"), ("pipeline_id", "pipeline_id"), ("responsible_user_id", "responsible_user_id")):
        leads = _filtered_by(filters, name, leads, attr)
    if "statuses" in filters:  # filter[statuses][0][pipeline_id]=..&filter[statuses][0][status_id]=..
        pairs = {(str(s.get("pipeline_id")), str(s.get("status_id")))
                 for s in as_list(filters["statuses"]) if isinstance(s, dict)}
        leads = [lead for lead in leads if (str(lead.pipeline_id), str(lead.status_id)) in pairs]
    text = str(ctx.query.get("query") or "").strip().lower()
    if text:
        leads = [lead for lead in leads if text in lead.name.lower() or text == str(lead.id)]
    # Other filters are not modelled and are ignored, as amoCRM ignores unknown ones.
    with_contacts = "contacts" in withs(ctx)
    return page(ctx, ordered(ctx, leads), "leads",
                lambda lead: ctx.account.lead_to_api(lead, ctx.base, with_contacts=with_contacts))


def lead_detail(ctx: Ctx, lead_id: str):
    lead = ctx.account.leads.get(int(lead_id))
    if lead is None:
        return NO_CONTENT  # also another account's lead: nothing of it is visible
    return hal(ctx.account.lead_to_api(lead, ctx.base, with_contacts="contacts" in withs(ctx)))


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text or "")


def _contact_matches(contact, text: str) -> bool:
    """`query` searches "the filled-in fields" (contacts-api). We match names and e-mails by substring
    and phones by digits (the last 10, so +7 and 8 prefixes both find a Russian number)."""
    if text.lower() in contact.name.lower():
        return True
    digits = _digits(text)
    for value in (v["value"] for values in contact.custom.values() for v in values):
        if text.lower() in str(value).lower():
            return True
        if len(digits) >= 5 and digits[-10:] in _digits(str(value)):
            return True
    return False


def contacts_list(ctx: Ctx):
    filters = ctx.query.get("filter") if isinstance(ctx.query.get("filter"), dict) else {}
    contacts = list(ctx.account.contacts.values())
    for name in ("id", "responsible_user_id"):
        contacts = _filtered_by(filters, name, contacts, name)
    text = str(ctx.query.get("query") or "").strip()
    if text:
        contacts = [c for c in contacts if _contact_matches(c, text)]
    with_leads = "leads" in withs(ctx)
    return page(ctx, ordered(ctx, contacts), "contacts",
                lambda c: ctx.account.contact_to_api(c, ctx.base, with_leads=with_leads))


def contact_detail(ctx: Ctx, contact_id: str):
    contact = ctx.account.contacts.get(int(contact_id))
    if contact is None:
        return NO_CONTENT
    return hal(ctx.account.contact_to_api(contact, ctx.base, with_leads="leads" in withs(ctx)))


# --- notes ----------------------------------------------------------------------------------------------------------
# Keys each type must carry in `params` (events-and-notes.md, "Типы примечаний, для которых обязателен массив
# params"); other types are stored with whatever params they bring.
NOTE_PARAMS = {"common": ("text",), "service_message": ("service", "text"),
               "extended_service_message": ("service", "text"), "sms_in": ("text", "phone"),
               "sms_out": ("text", "phone")}


def _note_errors(ctx: Ctx, entity_type: str, item, entity_id: int | None) -> list[tuple[str, str, str]]:
    if not isinstance(item, dict):
        return [("InvalidType", "", "This value should be of type array.")]
    errors = []
    if entity_id is None:  # the collection route: each note names its entity
        if "entity_id" not in item:
            errors.append(("FieldMissing", "entity_id", MISSING[1]))
        elif not isinstance(item["entity_id"], int) or isinstance(item["entity_id"], bool):
            errors.append(("InvalidType", "entity_id", NOT_INT[1]))
        else:
            entity_id = item["entity_id"]
    if entity_id is not None:
        lead = ctx.account.leads.get(entity_id) if entity_type == "leads" else None
        if not ctx.account.entity_exists(entity_type, entity_id) or (lead and ctx.account.is_unsorted(lead)):
            errors.append((NOT_FOUND[0], "entity_id", NOT_FOUND[1]))
    note_type = item.get("note_type")
    if note_type is None:
        errors.append(("FieldMissing", "note_type", MISSING[1]))
    elif note_type not in NOTE_TYPES:
        errors.append((NOT_CHOICE[0], "note_type", NOT_CHOICE[1]))
    params = item.get("params")
    if note_type in NOTE_PARAMS:
        if not isinstance(params, dict):
            errors.append(("FieldMissing" if params is None else "InvalidType", "params",
                           MISSING[1] if params is None else "This value should be of type array."))
        else:
            upper_only = note_type in ("sms_in", "sms_out") and "text" not in params and "TEXT" in params
            for key in NOTE_PARAMS[note_type]:
                if upper_only:
                    # Legacy upper-case TEXT/PHONE: stored, and read back as nulls (amocrm-api-php#203).
                    break
                if key not in params:
                    errors.append(("FieldMissing", f"params.{key}", MISSING[1]))
                elif params[key] is None:
                    errors.append((NOT_NULL[0], f"params.{key}", NOT_NULL[1]))
                elif not isinstance(params[key], str):
                    errors.append((NOT_STRING[0], f"params.{key}", NOT_STRING[1]))
    for key in ("created_at", "created_by", "responsible_user_id"):
        if key in item and (not isinstance(item[key], int) or isinstance(item[key], bool)):
            errors.append((NOT_INT[0], key, NOT_INT[1]))
    return errors


def notes_add(ctx: Ctx, entity_type: str, entity_id: str | None = None):
    items, refusal = json_array(ctx)
    if refusal:
        return refusal
    fixed_id = int(entity_id) if entity_id is not None else None
    request_ids = [str(item.get("request_id", n)) if isinstance(item, dict) else str(n)
                   for n, item in enumerate(items)]
    errors = [(rid, errs) for rid, item in zip(request_ids, items)
              if (errs := _note_errors(ctx, entity_type, item, fixed_id))]
    if errors:
        return validation_failed(errors)
    now = int(time.time())
    created = []
    for request_id, item in zip(request_ids, items):
        note = Note(ctx.account.ids.next("note"), entity_type, fixed_id or item["entity_id"], item["note_type"],
                    dict(item.get("params") or {}), item.get("created_by", ctx.user_id),
                    item.get("responsible_user_id", ctx.user_id), item.get("created_at", now), now)
        ctx.account.notes[note.id] = note
        href = f"{ctx.base}/api/v4/{entity_type}/{note.entity_id}/notes/{note.id}"
        created.append({"id": note.id, "entity_id": note.entity_id, "request_id": request_id,
                        "_links": {"self": {"href": href}}})
    return hal({"_links": {"self": {"href": f"{ctx.base}{ctx.request.path}"}}, "_embedded": {"notes": created}})


def _updated_at_ok(note: Note, spec) -> bool:
    """`filter[updated_at]=<ts>` (changed after it) or `filter[updated_at][from]=..&[to]=..` (inclusive)."""
    if isinstance(spec, dict):
        low, high = ints(spec.get("from")), ints(spec.get("to"))
        return (not low or note.updated_at >= low[0]) and (not high or note.updated_at <= high[0])
    bound = ints(spec)
    return not bound or note.updated_at > bound[0]


def notes_list(ctx: Ctx, entity_type: str, entity_id: str | None = None):
    filters = ctx.query.get("filter") if isinstance(ctx.query.get("filter"), dict) else {}
    notes = [n for n in ctx.account.notes.values() if n.entity_type == entity_type]
    if entity_id is not None:
        notes = [n for n in notes if n.entity_id == int(entity_id)]
    notes = _filtered_by(filters, "entity_id", notes, "entity_id")
    notes = _filtered_by(filters, "id", notes, "id")
    if "note_type" in filters:
        kinds = set(as_list(filters["note_type"]))
        notes = [n for n in notes if n.note_type in kinds]
    if "updated_at" in filters:
        notes = [n for n in notes if _updated_at_ok(n, filters["updated_at"])]
    return page(ctx, ordered(ctx, notes, ("id", "updated_at")), "notes", lambda n: n.to_api(ctx.account.id, ctx.base))


def note_detail(ctx: Ctx, entity_type: str, note_id: str, entity_id: str | None = None):
    note = ctx.account.notes.get(int(note_id))
    if note is None or note.entity_type != entity_type or (entity_id is not None and note.entity_id != int(entity_id)):
        return NO_CONTENT  # the docs list no 404 for notes; we answer as for leads and contacts
    return hal(note.to_api(ctx.account.id, ctx.base))


# --- tasks ------------------------------------------------------------------------------------------------------------
def tasks_add(ctx: Ctx):
    items, refusal = json_array(ctx)
    if refusal:
        return refusal
    request_ids = [str(item.get("request_id", n)) if isinstance(item, dict) else str(n)
                   for n, item in enumerate(items)]
    errors = []
    for request_id, item in zip(request_ids, items):
        if not isinstance(item, dict):
            errors.append((request_id, [("InvalidType", "", "This value should be of type array.")]))
            continue
        item_errors = []
        if not isinstance(item.get("text"), str) or not item["text"]:
            item_errors.append(("FieldMissing" if "text" not in item else "InvalidType", "text", MISSING[1]))
        if not isinstance(item.get("complete_till"), int):
            item_errors.append(("FieldMissing" if "complete_till" not in item else "InvalidType", "complete_till",
                                MISSING[1]))
        entity_type, entity_id = item.get("entity_type"), item.get("entity_id")
        if entity_type is not None and entity_type not in ENTITY_TYPES:
            item_errors.append((NOT_CHOICE[0], "entity_type", NOT_CHOICE[1]))
        elif entity_id is not None and (entity_type is None or not isinstance(entity_id, int)
                                        or not ctx.account.entity_exists(entity_type, entity_id)):
            item_errors.append((NOT_FOUND[0], "entity_id", NOT_FOUND[1]))  # error-codes 235-237, shape guessed
        if item_errors:
            errors.append((request_id, item_errors))
    if errors:
        return validation_failed(errors)
    now, created = int(time.time()), []
    for request_id, item in zip(request_ids, items):
        task = Task(ctx.account.ids.next("task"), item["text"], item["complete_till"], item.get("entity_id"),
                    item.get("entity_type"), item.get("responsible_user_id", ctx.user_id),
                    item.get("task_type_id", 1), now, item)
        ctx.account.tasks.append(task)
        created.append({"id": task.id, "request_id": request_id,
                        "_links": {"self": {"href": f"{ctx.base}/api/v4/tasks/{task.id}"}}})
    return hal({"_links": {"self": {"href": f"{ctx.base}/api/v4/tasks"}}, "_embedded": {"tasks": created}})


# --- Salesbot --------------------------------------------------------------------------------------------------------
def bot_continue(ctx: Ctx, kind: str, bot_id: str, continue_id: str):
    """widgets-api "widget-continue": 202 without a body; 404 when no widget step awaits that continue id
    (so a second call for the same id is 404); 400 for bad data; admins only."""
    refusal = _admin_only(ctx)
    if refusal:
        return refusal
    pending = ctx.account.salesbot_pending.get(int(continue_id))
    if pending != (kind, int(bot_id)):
        return problem(404, "Not Found", "Widget awaiting the result was not found")
    try:
        body = ctx.request.json() if ctx.request.body else {}
    except ValueError:
        return problem(400, "Bad Request", "Request body is not valid JSON")
    if not isinstance(body, dict):
        return problem(400, "Bad Request", "Request body must be a JSON object")
    handlers = body.get("execute_handlers") or []
    if not isinstance(handlers, list) or len(handlers) > 10:
        return problem(400, "Bad Request", "execute_handlers: at most 10 handlers")
    for handler in handlers:
        params = handler.get("params") if isinstance(handler, dict) else None
        if not isinstance(params, dict) or handler.get("handler") not in ("show", "goto"):
            return problem(400, "Bad Request", "execute_handlers: only show and goto are supported")
        if handler["handler"] == "show" and (len(str(params.get("value", ""))) > 80
                                             or len(params.get("buttons") or []) > 25):
            return problem(400, "Bad Request", "show: value at most 80 characters, at most 25 buttons")
    del ctx.account.salesbot_pending[int(continue_id)]
    ctx.account.salesbot_continues.append(SalesbotContinue(kind, int(bot_id), int(continue_id), body.get("data"),
                                                           handlers, time.time()))
    return FakeResponse(202, b"")


# --- routing ---------------------------------------------------------------------------------------------------------
ET = "(leads|contacts|companies|customers)"
ROUTES = [
    ("GET", r"/api/v4/account", account_detail),
    ("GET", r"/api/v4/users", users_list),
    ("GET", r"/api/v4/users/(\d+)", user_detail),
    ("GET", r"/api/v4/leads/pipelines", pipelines_list),
    ("GET", r"/api/v4/leads/pipelines/(\d+)", pipeline_detail),
    ("GET", rf"/api/v4/{ET}/custom_fields", fields_list),
    ("GET", r"/api/v4/leads", leads_list),
    ("GET", r"/api/v4/leads/(\d+)", lead_detail),
    ("GET", r"/api/v4/contacts", contacts_list),
    ("GET", r"/api/v4/contacts/(\d+)", contact_detail),
    ("POST", rf"/api/v4/{ET}/notes", notes_add),
    ("GET", rf"/api/v4/{ET}/notes", notes_list),
    ("GET", rf"/api/v4/{ET}/notes/(\d+)", note_detail),
    ("POST", rf"/api/v4/{ET}/(\d+)/notes", notes_add),
    ("GET", rf"/api/v4/{ET}/(\d+)/notes", notes_list),
    ("GET", rf"/api/v4/{ET}/(\d+)/notes/(\d+)", lambda ctx, et, eid, nid: note_detail(ctx, et, nid, eid)),
    ("POST", r"/api/v4/tasks", tasks_add),
    ("GET", r"/api/v4/tasks", lambda ctx: page(ctx, ordered(ctx, ctx.account.tasks), "tasks",
                                              lambda t: {"id": t.id, **t.posted})),
    ("POST", r"/api/v4/(salesbot|marketingbot)/(\d+)/continue/(\d+)", bot_continue),
]
COMPILED = [(method, re.compile(pattern + "/?"), view) for method, pattern, view in ROUTES]


def dispatch(ctx: Ctx) -> FakeResponse:
    allowed = False
    for method, pattern, view in COMPILED:
        match = pattern.fullmatch(ctx.request.path)
        if match:
            if method == ctx.request.method:
                return view(ctx, *match.groups())
            allowed = True
    if allowed:
        return problem(405, "Method Not Allowed", "This HTTP method is not supported here")
    return problem(404, "Not Found", "Unknown API method")
