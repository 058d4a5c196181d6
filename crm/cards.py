"""The amoCRM card (a lead or a contact) as smsgate reads it, and sending from it.

- `card_read`: the entity and its contacts with their phones, read through AmoClient (a lead with its
  contacts: two requests; a contact: one), kept SMSGATE_CRM_CARD_CACHE_SECONDS in the shared cache so
  the panel's reads and its send cost amoCRM's 7 requests/s once. An entity amoCRM does not return for
  this account's token is not found: another account's ids never read anything.
- `card_send`: a send from the card's panel or from amoCRM's own SMS input in the card's feed. The
  phone must be one of the card's contacts' phones as amoCRM's API returns them, never what the browser
  says (a phone not found in the cached card is looked for once more in a fresh read); the text is a
  template or a free text, filled in with the card's data (the recipient's contact, else the main
  one); then crm.sending with the caller's amoCRM user and key.
- `card_preview`: the same filling in, for the panel's live preview.

Refusals are ClientErrors with the account API's codes: 404 `not_found`, 400 `phone_not_on_card`,
409 `amocrm_not_connected` (no usable token pair,
or amoCRM refuses the account: the owner must act), 503 `amocrm_unavailable` (amoCRM did not answer),
and crm.sending's. May call: accounts' AmoClient, deliveries' intake (phone
reading), crm.sending, crm.markers, crm.services, crm.selectors.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import redis
from django.conf import settings
from django.core.cache import cache
from django.utils.translation import gettext_lazy as _

from accounts.amocrm import AmoAccountRefused, AmoApiError, AmoClient, AmoNotConnected, AmoRejected, AmoUnauthorized
from accounts.models import Account
from deliveries.models import DeliveryKind
from smsgate.errors import ClientError
from smsgate.phones import phone_normalise_for_search

from . import markers
from .models import ENTITY_TYPES, CrmOrigin
from .selectors import template_of
from .sending import CrmSend, CrmSendResult, crm_sends_create
from .services import Preview, template_preview

logger = logging.getLogger(__name__)

CACHE_PREFIX = "crm:card:"
DIRECTORY_CACHE_SECONDS = 300  # the account's users and settings change rarely
MAX_CONTACTS = 250  # amoCRM's page: a lead with more contacts is read up to here
_DOMAIN_REGION = {"amocrm.ru": "RU"}
CLIENT_KEY_PREFIX = "card:"


class CardNotFound(ClientError):
    http_status = 404
    code = "not_found"


class AmoCrmUnavailable(ClientError):
    """amoCRM did not answer (5xx, no connection, its rate limit): try again shortly."""

    http_status = 503
    code = "amocrm_unavailable"


class AmoCrmNotConnected(ClientError):
    """The account's amoCRM cannot be read until its owner acts (reinstall the widget, pay or unblock the
    amoCRM account): a state of the account, not a failure of this service, so not a 5xx."""

    http_status = 409
    code = "amocrm_not_connected"


class PhoneNotOnCard(ClientError):
    http_status = 400
    code = "phone_not_on_card"


class CrmSendRefused(ClientError):
    """crm.sending refused the send: its code and message, with the account API's status."""


@dataclass(frozen=True)
class CardPhone:
    phone: str  # E.164 where it reads as a number, else as amoCRM holds it
    type: str  # PHONE's enum code: WORK, WORKDD, MOB, FAX, HOME, OTHER ("" when amoCRM gives none)


@dataclass(frozen=True)
class CardContact:
    id: int
    name: str
    is_main: bool
    phones: list[CardPhone]
    raw: dict = field(repr=False, compare=False)  # as API v4 returns it, for markers


@dataclass(frozen=True)
class Card:
    entity_type: str
    entity_id: int
    name: str
    contacts: list[CardContact]
    lead: dict | None = field(default=None, repr=False, compare=False)  # API v4 lead with contacts

    def contact_with(self, e164: str) -> CardContact | None:
        return next((c for c in self.contacts if any(p.phone == e164 for p in c.phones)), None)

    @property
    def main_contact(self) -> CardContact | None:
        return next((c for c in self.contacts if c.is_main), self.contacts[0] if self.contacts else None)


# --- reading ------------------------------------------------------------------------------------------
def _unavailable(exc: AmoApiError) -> AmoCrmUnavailable | AmoCrmNotConnected:
    logger.warning("amoCRM card read failed", extra={"account_id": exc.account_id, "error": str(exc)[:200]})
    if isinstance(exc, (AmoNotConnected, AmoUnauthorized, AmoAccountRefused)):
        return AmoCrmNotConnected(exc.message)
    return AmoCrmUnavailable(exc.message)


def _not_found() -> CardNotFound:
    return CardNotFound(_("This lead or contact is not in the account's amoCRM."))


def _fetch(account: Account, entity_type: str, entity_id: int) -> dict | None:
    """{"lead": ..., "contacts": [(contact, is_main), ...]} as amoCRM returns them; None: not there."""
    try:
        client = AmoClient(account)
        if entity_type == "leads":
            lead = client.lead(entity_id, with_contacts=True)
            if not isinstance(lead, dict) or lead.get("id") != entity_id:
                return None
            links = (lead.get("_embedded") or {}).get("contacts") or []
            main = {link.get("id"): bool(link.get("is_main")) for link in links
                    if isinstance(link, dict) and isinstance(link.get("id"), int) and link.get("id") > 0}
            ids = list(main)[:MAX_CONTACTS]
            contacts = client.contacts(ids) if ids else []
            by_id = {c.get("id"): c for c in contacts if isinstance(c, dict)}
            return {"lead": lead, "contacts": [(by_id[i], main[i]) for i in ids if i in by_id]}
        contact = client.contact(entity_id)
        if not isinstance(contact, dict) or contact.get("id") != entity_id:
            return None
        return {"lead": None, "contacts": [(contact, True)]}
    except AmoRejected as exc:
        if exc.status in (403, 404):  # not visible to this account's token
            return None
        raise _unavailable(exc) from None
    except AmoApiError as exc:
        raise _unavailable(exc) from None


def _phones(contact: dict, region: str | None) -> list[CardPhone]:
    phones = []
    for custom in contact.get("custom_fields_values") or []:
        if not isinstance(custom, dict) or custom.get("field_code") != "PHONE":
            continue
        for value in custom.get("values") or []:
            if not isinstance(value, dict) or not isinstance(value.get("value"), str) or not value["value"].strip():
                continue
            raw = value["value"].strip()[:40]
            e164 = phone_normalise_for_search(raw, default_region=region)
            kind = value.get("enum_code") or value.get("enum") or ""
            phone = CardPhone(e164 or raw, str(kind)[:20])
            if phone not in phones:
                phones.append(phone)
    return phones


def _card(account: Account, entity_type: str, entity_id: int, data: dict) -> Card:
    region = _DOMAIN_REGION.get(account.domain)
    contacts = [CardContact(contact["id"], str(contact.get("name") or "")[:255], is_main, _phones(contact, region),
                            contact) for contact, is_main in data["contacts"]]
    if entity_type == "leads":
        name = str(data["lead"].get("name") or "")[:255]
    else:
        name = contacts[0].name if contacts else ""
    return Card(entity_type, entity_id, name, contacts, data["lead"])


def _cache_key(account: Account, entity_type: str, entity_id: int) -> str:
    return f"{CACHE_PREFIX}{account.pk}:{entity_type}:{entity_id}"


def _cache_get(key: str):
    try:
        return cache.get(key)
    except (redis.RedisError, OSError) as exc:  # the shared cache down: read amoCRM instead
        logger.warning("card cache unavailable (%s)", type(exc).__name__)
        return None


def _cache_set(key: str, value, timeout: int) -> None:
    try:
        cache.set(key, value, timeout)
    except (redis.RedisError, OSError) as exc:
        logger.warning("card cache unavailable (%s)", type(exc).__name__)


def card_read(*, account: Account, entity_type: str, entity_id: int, fresh: bool = False) -> Card:
    """The card as amoCRM's API returns it for this account (cached briefly; `fresh`: read again)."""
    if entity_type not in ENTITY_TYPES or not isinstance(entity_id, int) or isinstance(entity_id, bool) \
            or not 0 < entity_id <= 2**53:
        raise _not_found()
    key = _cache_key(account, entity_type, entity_id)
    data = None if fresh else _cache_get(key)
    if data is None:
        data = _fetch(account, entity_type, entity_id)
        if data is None:
            raise _not_found()
        _cache_set(key, data, settings.SMSGATE_CRM_CARD_CACHE_SECONDS)
    return _card(account, entity_type, entity_id, data)


def _directory(account: Account, client_call: str):
    """The account's users or its settings (for markers), cached a few minutes; None when unreadable."""
    key = f"{CACHE_PREFIX}{account.pk}:{client_call}"
    value = _cache_get(key)
    if value is None:
        try:
            client = AmoClient(account)
            value = client.users() if client_call == "users" else client.account_info(with_=("datetime_settings",))
        except AmoApiError as exc:  # the text is still filled in; the missing markers say what is not
            logger.info("amoCRM directory read failed", extra={"account_id": account.pk, "error": str(exc)[:200]})
            return None
        _cache_set(key, value, DIRECTORY_CACHE_SECONDS)
    return value


def card_context(*, account: Account, card: Card, text: str, contact: CardContact | None = None) -> dict:
    """Marker values for `text` from the card: its lead, the given contact (else the main one), and the
    account's users and settings only when the text needs them."""
    used = markers.markers_in(text)
    needs_users = any(".responsible." in key for key in used)
    needs_account = any(key == "account.name" or ".cf." in key or key == "current_date" for key in used)
    contact = contact or card.main_contact
    return markers.context_for(lead=card.lead, contact=contact.raw if contact else None,
                               users=_directory(account, "users") if needs_users else None,
                               account=_directory(account, "account") if needs_account else None)


# --- the phone, the text -------------------------------------------------------------------------------------
def card_phone_check(*, account: Account, card: Card, phone) -> tuple[Card, CardContact]:
    """The card's contact whose phones include `phone` (read once more from amoCRM when the cached card
    does not have it), or PhoneNotOnCard."""
    e164 = phone_normalise_for_search(phone, default_region=_DOMAIN_REGION.get(account.domain)) \
        if isinstance(phone, str) else None
    if e164 is None:
        raise ClientError(_("The request has invalid fields."), errors={
            "phone": [_("Enter a valid phone number in international format, e.g. +79123456789.")]})
    contact = card.contact_with(e164)
    if contact is None:
        card = card_read(account=account, entity_type=card.entity_type, entity_id=card.entity_id, fresh=True)
        contact = card.contact_with(e164)
    if contact is None:
        raise PhoneNotOnCard(_("This phone number is not among the card's contacts in amoCRM."))
    return card, contact


def _text_of(*, account: Account, text, template_id) -> tuple[str, int | None]:
    if template_id is not None:
        template = template_of(account=account, template_id=template_id)
        if template is None or not template.is_active:
            raise ClientError(_("The request has invalid fields."),
                              errors={"template_id": [_("No such active template.")]})
        return template.text, template.pk
    return text, None


def card_preview(*, account: Account, entity_type: str, entity_id: int, text=None, template_id=None,
                 phone=None) -> Preview:
    """The text as a send from this card would fill it in (for `phone`'s contact, else the main one)."""
    source, _template_id = _text_of(account=account, text=text, template_id=template_id)
    card = card_read(account=account, entity_type=entity_type, entity_id=entity_id)
    contact = None
    if phone is not None:
        card, contact = card_phone_check(account=account, card=card, phone=phone)
    return template_preview(text=source, context=card_context(account=account, card=card, text=source,
                                                              contact=contact))


# --- sending -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CardSent:
    result: CrmSendResult
    card: Card


def card_send(*, account: Account, amo_user_id: int | None, entity_type: str, entity_id: int, phone,
              text=None, template_id=None, origin: str = CrmOrigin.PANEL, client_key: str | None = None) -> CardSent:
    """Send an SMS from a card to one of its contacts' phones; a repeated `client_key` sends once."""
    if origin not in (CrmOrigin.PANEL, CrmOrigin.FEED):
        raise ValueError(origin)
    source, template_pk = _text_of(account=account, text=text, template_id=template_id)
    card = card_read(account=account, entity_type=entity_type, entity_id=entity_id)
    card, contact = card_phone_check(account=account, card=card, phone=phone)
    context = card_context(account=account, card=card, text=source, contact=contact)
    rendered = markers.render(source, context).text.strip()
    e164 = next(p.phone for p in contact.phones
                if p.phone == phone_normalise_for_search(phone, default_region=_DOMAIN_REGION.get(account.domain)))
    [result] = crm_sends_create(
        account=account, kind=DeliveryKind.CRM, write_notes=origin == CrmOrigin.PANEL, origin=origin,
        items=[CrmSend(entity_type, entity_id, e164, rendered, template_id=template_pk, amo_user_id=amo_user_id,
                       dedupe_key=f"{CLIENT_KEY_PREFIX}{client_key}" if client_key else None)])
    if not result.accepted:  # an unreadable phone or text is the API's plain validation error
        raise CrmSendRefused(result.detail, code="invalid" if result.code == "phone" else result.code,
                             http_status=result.http_status, retry_after=result.retry_after, errors=result.errors)
    logger.info("SMS sent from an amoCRM card", extra={"account_id": account.pk, "delivery_id": str(result.delivery_id),
                                                       "entity_type": entity_type, "entity_id": entity_id,
                                                       "origin": origin, "duplicate": result.duplicate})
    return CardSent(result, card)
