"""Placeholders in SMS templates, written as amoCRM's own markers, so one text reads the same
whether amoCRM fills it in (Salesbot, chat templates) or smsgate does.

Source: amoCRM's developer docs, "Salesbot", handler `show`, the marker table
(https://www.amocrm.ru/developers/content/digital_pipeline/salesbot, mirrored in
`biradrags/amo-docs` amocrm_docs_md/digital_pipeline/salesbot.md); chat templates use the same
markers (.../crm_platform/chat-templates-api: "Контент шаблона может содержать в себе маркеры",
with the `{{lead.name}}` example); the same page's `set_custom_fields` action names
`{{lead.name}}` "название сделки"; the Client cabinet help page
(https://amocrm.ru/support/leads/kabinet-klienta) uses `{{contact.first_name}}` in SMS texts.

Supported, and why:

- `{{lead.id}}`, `{{lead.name}}`, `{{lead.price}}` (the budget, plain digits as the API holds it:
  `150000`), `{{lead.cf.<field id>}}`: documented lead markers.
- `{{contact.id}}`, `{{contact.name}}` (and its documented short form `{{name}}`),
  `{{contact.first_name}}`, `{{contact.last_name}}`, `{{contact.cf.<field id>}}`. `first_name` is in
  the Client cabinet's SMS markers; `last_name` is not in a page we could read: it follows the
  same pattern and the API field of that name. As in Salesbot, the contact is the lead's main one.
- The responsible user: amoCRM spells it `{{lead.responsible.name}}` (not `responsible_user`,
  which is the SMSC.ru widget's own syntax), with `.email` and `.id`; the same for `contact.`.
- `{{current_date}}`: documented ("текущая дата").
- `{{account.name}}`: **smsgate's own**. amoCRM documents no account marker; Salesbot would leave
  this one as it is. The picker says so.

Refused with a message saying why: the other documented markers, which belong to a chat or a bot
run (`{{origin}}`, `{{message_text}}`, `{{regexp...}}`, `{{rand}}`, subscribers, NPS, `{{code}}`),
and `customer.`/`company.` markers (no customer or company is read for an SMS yet). Anything else
is an unknown placeholder; names are case-sensitive, as amoCRM's are.

Syntax: `{{key}}`; spaces or tabs inside the braces are tolerated (`{{ lead.name }}`: amoCRM's
docs do not say; being strict would only refuse a text a person means). A `{{` with no `}}` is an
error, a lone `}}` or single braces are plain text.

Values: a marker with no value (no lead given, an empty field) renders empty and is reported as
missing. Custom fields render by their `field_type`: several values (phones, multiselect) joined
with ", "; `checkbox` yes/no in the active language; `date`/`birthday` as DD.MM.YYYY and
`date_time` as DD.MM.YYYY HH:MM in the account's time zone (`GET /api/v4/account?with=
datetime_settings`), UTC when unknown. A date-only value at exactly 00:00 UTC is read as that UTC
date (amoCRM's own examples store dates so), so no time zone shifts it to the day before.
Objects (legal entity, file) render their name. Values lose control characters (a line break
stays) and are cut to MAX_VALUE_LENGTH.

Rendering is one pass over the template: a filled-in value is never read again, so a contact
named `{{lead.price}}` is sent as those characters (no template injection).
"""

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache

from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

MAX_VALUE_LENGTH = 1000  # an SMS text is at most SMSGATE_MAX_TEXT_LENGTH (1,000) characters anyway
MAX_ERRORS = 20
DATE_FORMAT = "%d.%m.%Y"
DATE_TIME_FORMAT = "%d.%m.%Y %H:%M"


@dataclass(frozen=True)
class MarkerSpec:
    key: str  # "lead.name"; for a family written with a field id ("lead.cf"), the part before the id
    group: str  # lead | contact | account | other
    label: object  # lazily translated
    needs_field_id: bool = False
    amocrm: bool = True  # False: smsgate's own, amoCRM itself does not fill it in
    alias_of: str = ""


MARKERS: tuple[MarkerSpec, ...] = (
    MarkerSpec("lead.name", "lead", _("Lead name")),
    MarkerSpec("lead.price", "lead", _("Lead budget")),
    MarkerSpec("lead.id", "lead", _("Lead ID")),
    MarkerSpec("lead.responsible.name", "lead", _("Lead's responsible user")),
    MarkerSpec("lead.responsible.email", "lead", _("Email of the lead's responsible user")),
    MarkerSpec("lead.responsible.id", "lead", _("ID of the lead's responsible user")),
    MarkerSpec("lead.cf", "lead", _("Lead field (by field ID)"), needs_field_id=True),
    MarkerSpec("contact.name", "contact", _("Contact name")),
    MarkerSpec("contact.first_name", "contact", _("Contact first name")),
    MarkerSpec("contact.last_name", "contact", _("Contact last name")),
    MarkerSpec("contact.id", "contact", _("Contact ID")),
    MarkerSpec("contact.responsible.name", "contact", _("Contact's responsible user")),
    MarkerSpec("contact.responsible.email", "contact", _("Email of the contact's responsible user")),
    MarkerSpec("contact.responsible.id", "contact", _("ID of the contact's responsible user")),
    MarkerSpec("contact.cf", "contact", _("Contact field (by field ID)"), needs_field_id=True),
    MarkerSpec("name", "contact", _("Contact name (short form)"), alias_of="contact.name"),
    MarkerSpec("account.name", "account", _("Account name (smsgate only, not filled in by Salesbot)"), amocrm=False),
    MarkerSpec("current_date", "other", _("Today's date")),
)
GROUPS = {"lead": _("Lead"), "contact": _("Contact"), "account": _("Account"), "other": _("Other")}
_FIXED = {spec.key: spec for spec in MARKERS if not spec.needs_field_id}
_FIELD_FAMILIES = {spec.key for spec in MARKERS if spec.needs_field_id}

# Documented amoCRM markers that only mean something inside a chat or a bot run, or for entities an
# SMS does not read: refused with their own message rather than as unknown.
_AMO_ONLY = frozenset({
    "origin", "lead.source_id", "lead.status_id", "message_text", "message_text.email", "message_text.phone",
    "rand", "short_rand", "short_rand_num", "cf.talk.nps", "founded_id", "last_validation_result", "code",
    "lead.groups_subscribers", "lead.users_subscribers",
})
_AMO_ONLY_PREFIXES = ("customer.", "company.", "contact_double.", "regexp.")

_SPACES = " \t"
_FIELD_ID = re.compile(r"[1-9][0-9]{0,17}")
_FIELD_MARKER = re.compile(r"(lead|contact)\.cf\.(.*)", re.S)
# C0 controls and DEL, but not the line break, dropped from filled-in values.
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


# --- parsing -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class MarkerError:
    code: str  # unknown | unsupported | malformed | unclosed
    placeholder: str  # as written (cut when long)
    message: str  # in the active language


@dataclass(frozen=True)
class _Placeholder:
    raw: str  # as written, braces included
    key: str | None  # the normalised marker ("lead.cf.123"), None when invalid
    error: MarkerError | None = None


def _shown(raw: str) -> str:
    return raw if len(raw) <= 40 else raw[:39] + "…"


def _placeholder(raw: str, inner: str) -> _Placeholder:
    key = inner.strip(_SPACES)
    shown = _shown(raw)
    if key in _FIXED:
        return _Placeholder(raw, _FIXED[key].alias_of or key)
    field_marker = _FIELD_MARKER.fullmatch(key)
    if field_marker:
        family, field_id = field_marker.groups()
        if _FIELD_ID.fullmatch(field_id):
            return _Placeholder(raw, f"{family}.cf.{field_id}")
        return _Placeholder(raw, None, MarkerError("malformed", shown, gettext(
            "%(placeholder)s: a field ID is a number, as in {{%(family)s.cf.123456}}.")
            % {"placeholder": shown, "family": family}))
    if not key or any(ch in key for ch in "{}\n\r"):
        return _Placeholder(raw, None, MarkerError("malformed", shown, gettext(
            "Malformed placeholder %(placeholder)s.") % {"placeholder": shown}))
    if key in _AMO_ONLY or key.startswith(_AMO_ONLY_PREFIXES):
        return _Placeholder(raw, None, MarkerError("unsupported", shown, gettext(
            "%(placeholder)s is an amoCRM marker for chats and bots; an SMS template cannot fill it in.")
            % {"placeholder": shown}))
    return _Placeholder(raw, None, MarkerError("unknown", shown, gettext(
        "Unknown placeholder %(placeholder)s.") % {"placeholder": shown}))


def _unclosed(raw: str) -> _Placeholder:
    shown = _shown(raw)
    return _Placeholder(raw, None, MarkerError("unclosed", shown, gettext(
        "A placeholder is not closed: %(placeholder)s (markers are written as {{lead.name}}).")
        % {"placeholder": shown}))


def parse(text: str) -> list[str | _Placeholder]:
    """The text as plain strings and placeholders, in order; joining every part's text gives it back."""
    parts: list[str | _Placeholder] = []
    pos = 0
    while True:
        start = text.find("{{", pos)
        if start < 0:
            break
        end = text.find("}}", start + 2)
        nested = text.find("{{", start + 2)
        if end < 0 or 0 <= nested < end:
            # This "{{" has no "}}" before the next "{{" (or at all): it is not closed.
            stop = nested if nested >= 0 else len(text)
            parts.append(text[pos:start])
            parts.append(_unclosed(text[start:stop]))
            pos = stop
            continue
        parts.append(text[pos:start])
        parts.append(_placeholder(text[start:end + 2], text[start + 2:end]))
        pos = end + 2
    parts.append(text[pos:])
    return [part for part in parts if part != ""]


def validate(text: str) -> list[MarkerError]:
    """Every invalid placeholder of the text, once each, in order (at most MAX_ERRORS)."""
    errors, seen = [], set()
    for part in parse(text):
        if isinstance(part, _Placeholder) and part.error and part.raw not in seen:
            seen.add(part.raw)
            errors.append(part.error)
            if len(errors) == MAX_ERRORS:
                break
    return errors


def markers_in(text: str) -> list[str]:
    """The valid markers a text uses, normalised, once each, in order."""
    return list(dict.fromkeys(part.key for part in parse(text) if isinstance(part, _Placeholder) and part.key))


# --- rendering -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rendered:
    text: str
    missing: list[str]  # markers with no value, rendered empty
    values: dict[str, str] = field(default_factory=dict)  # the values filled in, by marker


def render(text: str, context: Mapping[str, str | None]) -> Rendered:
    """Fill in the markers of `text` from `context` (built by `context_for`). Invalid placeholders stay
    as written (saving refuses them; a free-text preview shows them with its errors)."""
    out, missing, values = [], [], {}
    for part in parse(text):
        if not isinstance(part, _Placeholder):
            out.append(part)
        elif part.key is None:
            out.append(part.raw)
        else:
            value = context.get(part.key) or ""
            if value:
                values[part.key] = value
            elif part.key not in missing:
                missing.append(part.key)
            out.append(value)
    return Rendered("".join(out), missing, values)


# --- the context, from amoCRM API v4 JSON --------------------------------------------------------
def context_for(*, lead: Mapping | None = None, contact: Mapping | None = None, users=None,
                account: Mapping | None = None, now: datetime | None = None) -> dict[str, str]:
    """Marker values from API v4 objects exactly as amoCRM returns them:

    - `lead`: `GET /api/v4/leads/{id}?with=contacts` (its `_embedded.contacts` gives `{{contact.id}}`
      of the main contact when no `contact` is given);
    - `contact`: `GET /api/v4/contacts/{id}` (the lead's main contact, as Salesbot uses);
    - `users`: `GET /api/v4/users` (the body, or its `_embedded.users` list), for the responsible users;
    - `account`: `GET /api/v4/account?with=datetime_settings` (its name and time zone).

    Keys are normalised markers ("lead.name", "contact.cf.123"); an absent value is simply not there.
    """
    tz = _account_zone(account)
    by_id = _users_by_id(users)
    values: dict[str, str | None] = {}
    if _is_mapping(lead):
        values.update({"lead.id": _id_text(lead.get("id")), "lead.name": _text(lead.get("name")),
                       "lead.price": _price(lead.get("price"))})
        values.update(_responsible("lead", lead.get("responsible_user_id"), by_id))
        values.update(_custom_fields("lead", lead.get("custom_fields_values"), tz))
        values["contact.id"] = _main_contact_id(lead)
    if _is_mapping(contact):
        first, last = _text(contact.get("first_name")), _text(contact.get("last_name"))
        values.update({"contact.id": _id_text(contact.get("id")),
                       "contact.name": _text(contact.get("name")) or " ".join(p for p in (first, last) if p) or None,
                       "contact.first_name": first, "contact.last_name": last})
        values.update(_responsible("contact", contact.get("responsible_user_id"), by_id))
        values.update(_custom_fields("contact", contact.get("custom_fields_values"), tz))
    if _is_mapping(account):
        values["account.name"] = _text(account.get("name"))
    values["current_date"] = (now or datetime.now(UTC)).astimezone(tz).strftime(DATE_FORMAT)
    return {key: value for key, value in values.items() if value}


def _is_mapping(value) -> bool:
    return isinstance(value, Mapping)


def _text(value) -> str | None:
    if not isinstance(value, str):
        return None
    value = _SURROGATE.sub("", _CONTROL.sub(lambda m: " " if m.group() == "\t" else "", value.replace("\r\n", "\n")))
    value = value.strip()
    return value[:MAX_VALUE_LENGTH] or None


def _id_text(value) -> str | None:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _number(value) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    return None


def _price(value) -> str | None:
    """The budget as amoCRM's API holds it: an integer, shown as plain digits (`150000`)."""
    return _number(value)


def _main_contact_id(lead: Mapping) -> str | None:
    embedded = lead.get("_embedded")
    contacts = embedded.get("contacts") if _is_mapping(embedded) else None
    if not isinstance(contacts, list):
        return None
    linked = [c for c in contacts if _is_mapping(c) and _id_text(c.get("id"))]
    main = next((c for c in linked if c.get("is_main") is True), linked[0] if linked else None)
    return _id_text(main.get("id")) if main else None


def _users_by_id(users) -> dict[int, Mapping]:
    if _is_mapping(users):
        embedded = users.get("_embedded")
        users = embedded.get("users") if _is_mapping(embedded) else None
    if not isinstance(users, Iterable) or isinstance(users, (str, bytes)):
        return {}
    return {user["id"]: user for user in users if _is_mapping(user) and isinstance(user.get("id"), int)}


def _responsible(prefix: str, user_id, by_id: Mapping[int, Mapping]) -> dict[str, str | None]:
    if not _id_text(user_id):
        return {}
    user = by_id.get(user_id, {})
    return {f"{prefix}.responsible.id": str(user_id), f"{prefix}.responsible.name": _text(user.get("name")),
            f"{prefix}.responsible.email": _text(user.get("email"))}


@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    import zoneinfo

    return frozenset(zoneinfo.available_timezones())


def _account_zone(account):
    """The account's time zone from `datetime_settings`, or UTC (a name not in the tz database too)."""
    from zoneinfo import ZoneInfo

    embedded = account.get("_embedded") if _is_mapping(account) else None
    settings = embedded.get("datetime_settings") if _is_mapping(embedded) else None
    name = settings.get("timezone") if _is_mapping(settings) else None
    if isinstance(name, str) and name in _zone_names():
        return ZoneInfo(name)
    return UTC


def _custom_fields(prefix: str, fields, tz) -> dict[str, str | None]:
    if not isinstance(fields, list):
        return {}
    values = {}
    for one in fields:
        if not _is_mapping(one) or not _id_text(one.get("field_id")):
            continue
        raw_values = one.get("values")
        field_type = one.get("field_type") if isinstance(one.get("field_type"), str) else ""
        texts = [_value_text(field_type, v, tz) for v in raw_values] if isinstance(raw_values, list) else []
        joined = ", ".join(t for t in texts if t)
        values[f"{prefix}.cf.{one['field_id']}"] = joined[:MAX_VALUE_LENGTH] or None
    return values


def _value_text(field_type: str, item, tz) -> str | None:
    if not _is_mapping(item):
        return None
    value = item.get("value")
    if field_type in ("date", "birthday"):
        return _date(value, tz, with_time=False)
    if field_type == "date_time":
        return _date(value, tz, with_time=True)
    if isinstance(value, bool):  # checkbox (and a flag anywhere else)
        return gettext("yes") if value else gettext("no")
    if isinstance(value, (int, float)):
        return _number(value)
    if isinstance(value, str):
        return _text(value)
    if _is_mapping(value):  # legal_entity {name, ...}, file {file_name, ...}, items {description, ...}
        for key in ("name", "file_name", "description", "value"):
            text = _text(value.get(key)) or _number(value.get(key))
            if text:
                return text
    return None


def _date(value, tz, *, with_time: bool) -> str | None:
    """A Unix time (amoCRM's read form; a digit string too) or an RFC 3339 string, in the account's zone."""
    moment = None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not with_time and int(value) % 86400 == 0:
                return datetime.fromtimestamp(value, UTC).strftime(DATE_FORMAT)
            moment = datetime.fromtimestamp(value, UTC)
        elif isinstance(value, str):
            moment = datetime.fromisoformat(value.strip())
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        return None
    if moment is None:
        return None
    return moment.astimezone(tz).strftime(DATE_TIME_FORMAT if with_time else DATE_FORMAT)
