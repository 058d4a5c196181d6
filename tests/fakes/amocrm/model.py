"""The fake amoCRM's data: one `AmoAccount` per amoCRM account, its entities, and how each reads back in
API v4 (shapes from the official docs, www.amocrm.ru/developers/content/crm_platform/*, mirrored in
`biradrags/amo-docs`). Nothing here is thread-safe on its own: the server holds its lock around every use.
"""

import itertools
import time
from collections import deque
from dataclasses import dataclass, field

ENTITY_TYPES = ("leads", "contacts", "companies", "customers")
UNSORTED = 1  # a status of `type` 1 is the pipeline's own "Неразобранное" (leads_pipelines: every pipeline has one)
WON, LOST = 142, 143  # "Успешно реализовано" / "Закрыто и не реализовано": the same ids in every pipeline
# events-and-notes.md, "Типы примечаний": the ten types API v4 writes.
NOTE_TYPES = ("common", "call_in", "call_out", "service_message", "extended_service_message", "message_cashier",
              "geolocation", "sms_in", "sms_out", "attachment")
# custom-fields.md, "multitext": the enum codes of the predefined PHONE and EMAIL fields.
PHONE_ENUMS = ("WORK", "WORKDD", "MOB", "FAX", "HOME", "OTHER")
EMAIL_ENUMS = ("WORK", "PRIV", "OTHER")
DEFAULT_STATUSES = ("Неразобранное", "Первичный контакт", "Переговоры", "Принимают решение")


class Ids:
    """amoCRM's ids are unique across accounts; one counter per kind keeps them apart and easy to read."""

    START = {"user": 5_000_001, "pipeline": 7_000_001, "status": 40_000_001, "field": 600_001, "enum": 800_001,
             "lead": 20_000_001, "contact": 30_000_001, "company": 35_000_001, "customer": 38_000_001,
             "note": 90_000_001, "task": 60_000_001, "bot": 300, "continue": 1_000_001}

    def __init__(self):
        self._counters = {kind: itertools.count(start) for kind, start in self.START.items()}

    def next(self, kind: str) -> int:
        return next(self._counters[kind])


def _self(base: str, path: str) -> dict:
    return {"self": {"href": f"{base}{path}"}}


@dataclass
class User:
    id: int
    name: str
    email: str
    is_admin: bool = False
    is_active: bool = True
    lang: str = "ru"

    def to_api(self, base: str) -> dict:
        full = {"view": "A", "edit": "A", "add": "A", "delete": "A", "export": "A"}
        return {"id": self.id, "name": self.name, "email": self.email, "lang": self.lang,
                "rights": {"leads": full, "contacts": full, "companies": full, "tasks": {"edit": "A", "delete": "A"},
                           "mail_access": False, "catalog_access": False, "status_rights": None,
                           "is_admin": self.is_admin, "is_free": False, "is_active": self.is_active,
                           "group_id": None, "role_id": None},
                "_links": _self(base, f"/api/v4/users/{self.id}")}


@dataclass
class Status:
    id: int
    name: str
    pipeline_id: int
    sort: int
    type: int = 0  # 1: unsorted
    color: str = "#99ccff"


@dataclass
class Pipeline:
    id: int
    name: str
    sort: int
    is_main: bool
    statuses: list[Status] = field(default_factory=list)

    @property
    def unsorted_status_id(self) -> int:
        return next(s.id for s in self.statuses if s.type == UNSORTED)

    def status(self, name: str) -> Status:
        return next(s for s in self.statuses if s.name == name)


@dataclass
class Field:
    id: int
    entity_type: str
    name: str
    type: str  # text, numeric, select, multiselect, multitext, date, ...
    code: str | None = None
    enums: list[tuple[int, str]] = field(default_factory=list)  # (enum id, value); multitext: value is the code

    def to_api(self, account_id: int, base: str) -> dict:
        return {"id": self.id, "name": self.name, "type": self.type, "account_id": account_id, "code": self.code,
                "sort": 500, "is_api_only": False, "group_id": None, "required_statuses": [],
                "is_deletable": self.code is None, "is_predefined": self.code is not None,
                "entity_type": self.entity_type, "remind": None,
                "enums": [{"id": i, "value": v, "sort": n} for n, (i, v) in enumerate(self.enums)] or None,
                "_links": _self(base, f"/api/v4/{self.entity_type}/custom_fields/{self.id}")}

    def value(self, raw) -> dict:
        """One stored value in API v4's read shape from what a test passes: a dict as is, (value, enum code)
        for multitext, an option's text for select fields, else the plain value."""
        if isinstance(raw, dict):
            return raw
        if self.type == "multitext":
            value, code = raw if isinstance(raw, tuple) else (raw, self.enums[0][1])
            enum_id = next(i for i, c in self.enums if c == code)
            # The SDK reads `enum_code` (MultitextCustomFieldValueModel::fromArray); the doc's example of
            # GET /contacts/{id} prints the older `enum`. We answer as the SDK reads.
            return {"value": value, "enum_id": enum_id, "enum_code": code}
        if self.type in ("select", "multiselect", "radiobutton"):
            enum_id = next(i for i, v in self.enums if v == raw)
            return {"value": raw, "enum_id": enum_id}
        return {"value": raw}


@dataclass
class Lead:
    id: int
    name: str
    price: int
    status_id: int
    pipeline_id: int
    responsible_user_id: int
    created_by: int
    created_at: int
    updated_at: int
    contacts: list[tuple[int, bool]] = field(default_factory=list)  # (contact id, is_main)
    custom: dict[int, list[dict]] = field(default_factory=dict)  # field id -> values
    closed_at: int | None = None


@dataclass
class Contact:
    id: int
    name: str
    first_name: str
    last_name: str
    responsible_user_id: int
    created_by: int
    created_at: int
    updated_at: int
    custom: dict[int, list[dict]] = field(default_factory=dict)
    lead_ids: list[int] = field(default_factory=list)


@dataclass
class Note:
    id: int
    entity_type: str
    entity_id: int
    note_type: str
    params: dict  # as posted
    created_by: int
    responsible_user_id: int
    created_at: int
    updated_at: int

    def params_read_back(self) -> dict:
        if self.note_type in ("sms_in", "sms_out"):
            # Only the lower-case keys exist in API v4: a note written with the legacy TEXT/PHONE keys reads
            # back as nulls (amocrm/amocrm-api-php#203).
            return {"text": self.params.get("text"), "phone": self.params.get("phone")}
        return dict(self.params)

    def to_api(self, account_id: int, base: str) -> dict:
        return {"id": self.id, "entity_id": self.entity_id, "created_by": self.created_by,
                "updated_by": self.created_by, "created_at": self.created_at, "updated_at": self.updated_at,
                "responsible_user_id": self.responsible_user_id, "group_id": 0, "note_type": self.note_type,
                "params": self.params_read_back(), "account_id": account_id,
                "_links": _self(base, f"/api/v4/{self.entity_type}/{self.entity_id}/notes/{self.id}")}


@dataclass
class Task:
    id: int
    text: str
    complete_till: int
    entity_id: int | None
    entity_type: str | None
    responsible_user_id: int
    task_type_id: int
    created_at: int
    posted: dict  # the item as the client sent it


@dataclass
class SalesbotContinue:
    bot_kind: str  # salesbot | marketingbot
    bot_id: int
    continue_id: int
    data: object
    execute_handlers: list
    at: float  # time.time()


@dataclass
class ApiCall:
    method: str
    path: str
    query: str
    status: int | None  # None: the connection was dropped without an answer
    at: float  # time.monotonic() on arrival
    wall: float  # time.time() on arrival


class AmoAccount:
    """An amoCRM account: users, a main pipeline, the predefined PHONE and EMAIL contact fields, and what
    the API wrote into it. The switches (`limit_rps`, `blocked`, `unpaid`) may be set at any time."""

    def __init__(self, ids: Ids, account_id: int, subdomain: str, name: str | None = None):
        self.ids = ids
        self.id, self.subdomain = account_id, subdomain
        self.name = name or subdomain.capitalize()
        self.created_at = int(time.time())
        self.limit_rps = 7  # requests accepted per sliding second; 0 = no limit
        self.blocked = False  # every API call 403, as for an account blocked for excess requests
        self.unpaid = False  # every API call 402 Payment Required
        self.users: dict[int, User] = {}
        self.pipelines: dict[int, Pipeline] = {}
        self.fields: dict[int, Field] = {}
        self.leads: dict[int, Lead] = {}
        self.contacts: dict[int, Contact] = {}
        self.companies: dict[int, dict] = {}
        self.customers: dict[int, dict] = {}
        self.notes: dict[int, Note] = {}
        self.tasks: list[Task] = []
        self.salesbot_pending: dict[int, tuple[str, int]] = {}  # continue id -> (bot kind, bot id)
        self.salesbot_continues: list[SalesbotContinue] = []
        self.calls: list[ApiCall] = []  # every /api/v4 request, in arrival order
        self.accepted: deque[float] = deque()  # arrival times of accepted requests within the last second
        self.refused = 0
        self.admin_id = self.add_user("Администратор", email=f"admin@{subdomain}.example", is_admin=True)
        self.main_pipeline = self.add_pipeline("Воронка")
        self.phone_field = self.add_field("contacts", "Телефон", "multitext", code="PHONE", enums=PHONE_ENUMS)
        self.email_field = self.add_field("contacts", "Email", "multitext", code="EMAIL", enums=EMAIL_ENUMS)

    # --- seeding ---------------------------------------------------------------------------------------
    def add_user(self, name: str, *, email: str | None = None, is_admin: bool = False) -> int:
        user_id = self.ids.next("user")
        self.users[user_id] = User(user_id, name, email or f"user{user_id}@{self.subdomain}.example", is_admin)
        return user_id

    def add_pipeline(self, name: str, statuses=DEFAULT_STATUSES) -> Pipeline:
        """A pipeline whose first status is its unsorted one (type 1), then `statuses[1:]`, then 142 and 143."""
        pipeline = Pipeline(self.ids.next("pipeline"), name, len(self.pipelines) + 1, not self.pipelines)
        for n, status_name in enumerate(statuses):
            pipeline.statuses.append(Status(self.ids.next("status"), status_name, pipeline.id, (n + 1) * 10,
                                            UNSORTED if n == 0 else 0, "#c1c1c1" if n == 0 else "#99ccff"))
        pipeline.statuses.append(Status(WON, "Успешно реализовано", pipeline.id, 10000, 0, "#CCFF66"))
        pipeline.statuses.append(Status(LOST, "Закрыто и не реализовано", pipeline.id, 11000, 0, "#D5D8DB"))
        self.pipelines[pipeline.id] = pipeline
        return pipeline

    def add_field(self, entity_type: str, name: str, field_type: str = "text", *, code: str | None = None,
                  enums=()) -> Field:
        new = Field(self.ids.next("field"), entity_type, name, field_type, code,
                    [(self.ids.next("enum"), value) for value in enums])
        self.fields[new.id] = new
        return new

    def _custom(self, values: dict | None) -> dict[int, list[dict]]:
        custom = {}
        for field_id, raw in (values or {}).items():
            one_field = self.fields[field_id]
            custom[field_id] = [one_field.value(v) for v in (raw if isinstance(raw, list) else [raw])]
        return custom

    def add_contact(self, *, name: str | None = None, first_name: str = "", last_name: str = "", phones=(),
                    emails=(), responsible_user_id: int | None = None, custom_fields: dict | None = None) -> int:
        """`phones`/`emails`: free-text values, or (value, enum code) pairs (PHONE: WORK WORKDD MOB FAX HOME
        OTHER, default WORK; EMAIL: WORK PRIV OTHER)."""
        now = int(time.time())
        custom = self._custom(custom_fields)
        if phones:
            custom[self.phone_field.id] = [self.phone_field.value(p) for p in phones]
        if emails:
            custom[self.email_field.id] = [self.email_field.value(e) for e in emails]
        contact_id = self.ids.next("contact")
        full_name = name if name is not None else " ".join(p for p in (first_name, last_name) if p)
        self.contacts[contact_id] = Contact(contact_id, full_name, first_name, last_name,
                                            responsible_user_id or self.admin_id, self.admin_id, now, now, custom)
        return contact_id

    def add_lead(self, *, name: str | None = None, price: int = 0, status_id: int | None = None,
                 pipeline_id: int | None = None, unsorted: bool = False, responsible_user_id: int | None = None,
                 contacts=(), custom_fields: dict | None = None) -> int:
        """`contacts`: contact ids, the first one main (or (id, is_main) pairs). Default status: the
        pipeline's first after unsorted; `unsorted=True` puts the lead into "Неразобранное"."""
        pipeline = self.pipelines[pipeline_id] if pipeline_id else self.main_pipeline
        if unsorted:
            status_id = pipeline.unsorted_status_id
        elif status_id is None:
            status_id = pipeline.statuses[1].id
        now = int(time.time())
        lead_id = self.ids.next("lead")
        links = [c if isinstance(c, tuple) else (c, n == 0) for n, c in enumerate(contacts)]
        lead = Lead(lead_id, name or f"Сделка #{lead_id}", price, status_id, pipeline.id,
                    responsible_user_id or self.admin_id, self.admin_id, now, now, links,
                    self._custom(custom_fields), now if status_id in (WON, LOST) else None)
        self.leads[lead_id] = lead
        for contact_id, _ in links:
            self.contacts[contact_id].lead_ids.append(lead_id)
        return lead_id

    def move_lead(self, lead_id: int, status_id: int, pipeline_id: int | None = None):
        lead = self.leads[lead_id]
        lead.status_id, lead.pipeline_id = status_id, pipeline_id or lead.pipeline_id
        lead.updated_at = int(time.time())
        lead.closed_at = lead.updated_at if status_id in (WON, LOST) else None

    def entity_exists(self, entity_type: str, entity_id: int) -> bool:
        return entity_id in {"leads": self.leads, "contacts": self.contacts, "companies": self.companies,
                             "customers": self.customers}[entity_type]

    def is_unsorted(self, lead: Lead) -> bool:
        pipeline = self.pipelines.get(lead.pipeline_id)
        return pipeline is not None and lead.status_id == pipeline.unsorted_status_id

    # --- reading back ------------------------------------------------------------------------------------
    def _custom_out(self, custom: dict[int, list[dict]]) -> list | None:
        out = [{"field_id": f.id, "field_name": f.name, "field_code": f.code, "field_type": f.type,
                "values": custom[f.id]} for f in self.fields.values() if custom.get(f.id)]
        return out or None  # amoCRM answers null, not [], when nothing is filled in

    def lead_to_api(self, lead: Lead, base: str, *, with_contacts: bool = False) -> dict:
        embedded = {"tags": [], "companies": []}
        if with_contacts:
            embedded["contacts"] = [{"id": c, "is_main": main, "_links": _self(base, f"/api/v4/contacts/{c}")}
                                    for c, main in lead.contacts]
        return {"id": lead.id, "name": lead.name, "price": lead.price, "responsible_user_id": lead.responsible_user_id,
                "group_id": 0, "status_id": lead.status_id, "pipeline_id": lead.pipeline_id, "loss_reason_id": None,
                "created_by": lead.created_by, "updated_by": lead.created_by, "created_at": lead.created_at,
                "updated_at": lead.updated_at, "closed_at": lead.closed_at, "closest_task_at": None,
                "is_deleted": False, "custom_fields_values": self._custom_out(lead.custom), "score": None,
                "account_id": self.id, "labor_cost": None, "_links": _self(base, f"/api/v4/leads/{lead.id}"),
                "_embedded": embedded}

    def contact_to_api(self, contact: Contact, base: str, *, with_leads: bool = False) -> dict:
        embedded = {"tags": [], "companies": []}
        if with_leads:
            embedded["leads"] = [{"id": i, "_links": _self(base, f"/api/v4/leads/{i}")} for i in contact.lead_ids]
        return {"id": contact.id, "name": contact.name, "first_name": contact.first_name,
                "last_name": contact.last_name, "responsible_user_id": contact.responsible_user_id, "group_id": 0,
                "created_by": contact.created_by, "updated_by": contact.created_by,
                "created_at": contact.created_at, "updated_at": contact.updated_at, "closest_task_at": None,
                "is_deleted": False, "is_unsorted": False, "custom_fields_values": self._custom_out(contact.custom),
                "account_id": self.id, "_links": _self(base, f"/api/v4/contacts/{contact.id}"),
                "_embedded": embedded}

    def pipeline_to_api(self, pipeline: Pipeline, base: str) -> dict:
        return {"id": pipeline.id, "name": pipeline.name, "sort": pipeline.sort, "is_main": pipeline.is_main,
                "is_unsorted_on": True, "is_archive": False, "account_id": self.id,
                "_links": _self(base, f"/api/v4/leads/pipelines/{pipeline.id}"),
                "_embedded": {"statuses": [
                    {"id": s.id, "name": s.name, "sort": s.sort, "is_editable": s.type == 0 and s.id not in (WON, LOST),
                     "pipeline_id": pipeline.id, "color": s.color, "type": s.type, "account_id": self.id,
                     "_links": _self(base, f"/api/v4/leads/pipelines/{pipeline.id}/statuses/{s.id}")}
                    for s in pipeline.statuses]}}

    def account_to_api(self, base: str, user_id: int, withs: set[str]) -> dict:
        body = {"id": self.id, "name": self.name, "subdomain": self.subdomain, "created_at": self.created_at,
                "created_by": self.admin_id, "updated_at": self.created_at, "updated_by": self.admin_id,
                "current_user_id": user_id, "country": "RU", "currency": "RUB", "currency_symbol": "₽",
                "customers_mode": "disabled", "is_unsorted_on": True, "is_loss_reason_enabled": True,
                "is_helpbot_enabled": False, "is_technical_account": False, "contact_name_display_order": 1,
                "_links": _self(base, "/api/v4/account")}
        # Only the `with` values a client of ours may ask for are filled in; any other is ignored.
        embedded = {}
        if "users_groups" in withs:
            embedded["users_groups"] = [{"id": 0, "name": "Отдел продаж", "uuid": None}]
        if "task_types" in withs:
            embedded["task_types"] = [{"id": 1, "name": "Связаться", "color": None, "icon_id": None,
                                       "code": "FOLLOW_UP"},
                                      {"id": 2, "name": "Встреча", "color": None, "icon_id": None, "code": "MEETING"}]
        if "datetime_settings" in withs:
            embedded["datetime_settings"] = {"date_pattern": "d.m.Y H:i", "short_date_pattern": "d.m.Y",
                                             "short_time_pattern": "H:i", "date_format": "d.m.Y",
                                             "time_format": "H:i:s", "timezone": "Europe/Moscow",
                                             "timezone_offset": "+03:00"}
        if embedded:
            body["_embedded"] = embedded
        return body
