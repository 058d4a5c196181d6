"""Sending to a selected list (amoCRM's leads and contacts lists, `llist`/`clist`): the dialog's preview, the
send in the background with its progress, and cancelling it.

    send = list_send_create(account=account, amo_user_id=5, entity_type="leads", ids=[...], template_id=3)
    list_send_step(send_id=send.pk)      # the task crm.list_send_run: one batch of 250, then again

- at most MAX_RECIPIENTS (500) per send; the widget splits a larger selection into several sends;
- each batch: up to 250 ids read through `AmoClient` (leads with contacts, then their contacts; or the contacts
  themselves: 250 ids per request), one phone per recipient by the pipeline's rule (`crm.pipeline.phone_pick`:
  main contact first, mobile first), the text (a template of the account, or the sender's own) filled in by
  `crm.markers` from the lead and that contact, all sent with one `crm_sends_create(kind=list,
  write_notes=True)` (an `sms_out` note per SMS through the note outbox), each with the key
  "list:<send>:<entity id>", so a batch repeated after a crash sends nothing twice;
- between batches the send looks at `cancel_requested`; amoCRM unavailable: the batch is read again later (up
  to MAX_READS times), then the send stops (`failed`) with what it has done recorded.

May call: crm's models, selectors, markers, sending, services (the preview's parts) and pipeline (the phone rule);
accounts' amoCRM client; deliveries' queueing; smsgate.errors.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.amocrm import (
    AmoAccountRefused,
    AmoApiError,
    AmoClient,
    AmoNotConnected,
    AmoRejected,
    AmoTemporary,
    AmoUnauthorized,
)
from accounts.models import Account
from deliveries.models import DeliveryKind
from deliveries.services.queueing import task_publish
from smsgate.celery import QUEUE_CRM, queue_name
from smsgate.errors import ClientError

from . import markers
from .models import ENTITY_TYPES, ListSend, ListSendState
from .pipeline import linked_contacts, phone_pick, phone_region
from .selectors import template_of
from .sending import CrmSend, crm_route_refusal, crm_sends_create
from .services import template_preview

logger = logging.getLogger(__name__)

RUN_TASK = "crm.list_send_run"
MAX_RECIPIENTS = 500
BATCH = 250  # amoCRM's ids per request
MAX_READS = 8
STALE_CLAIM = timedelta(minutes=5)
SAMPLES = 3  # recipients the dialog's preview shows
MAX_TEXT = 2000
S = ListSendState
OPEN = (S.PENDING, S.RUNNING)
_USER_MARKERS = ("lead.responsible.", "contact.responsible.")
_ACCOUNT_MARKERS = ("account.name", "current_date", "lead.cf.", "contact.cf.")


class ListSendInvalid(ClientError):
    http_status = 400
    code = "invalid"


class ListSendNotFound(ClientError):
    http_status = 404
    code = "not_found"


class AmoCrmUnreadable(ClientError):
    http_status = 503
    code = "amocrm_unavailable"


# --- reading the recipients --------------------------------------------------------------------------------------
@dataclass
class Recipient:
    entity_id: int
    name: str = ""
    found: bool = False
    phone: str | None = None
    text: str | None = None  # filled in; None without a phone (or not found)


def _text_for(account: Account, template_id: int | None, text: str | None) -> tuple[str, int | None]:
    """The text to fill in and its template: a live, active template of the account, or the sender's own text."""
    if template_id is not None:
        template = template_of(account=account, template_id=template_id)
        if template is None or not template.is_active:
            raise ListSendInvalid(_("Choose one of the account's active templates."),
                                  errors={"template_id": [str(_("Not one of the account's active templates."))]})
        return template.text, template.pk
    if not isinstance(text, str) or not text.strip():
        raise ListSendInvalid(_("Give either template_id or text."))
    return text, None


def _ids(ids) -> list[int]:
    if not isinstance(ids, list) or not ids:
        raise ListSendInvalid(_("Select at least one lead or contact."), errors={"ids": [str(_("Must not be empty."))]})
    if len(ids) > MAX_RECIPIENTS:
        raise ListSendInvalid(_("At most %(n)s recipients per send: send the rest in another.") % {"n": MAX_RECIPIENTS},
                              errors={"ids": [str(_("Too many ids."))]})
    if any(not isinstance(i, int) or isinstance(i, bool) or not 0 < i <= 2**53 for i in ids):
        raise ListSendInvalid(_("The request has invalid fields."), errors={"ids": [str(_("Must be amoCRM ids."))]})
    return list(dict.fromkeys(ids))


def _read(client: AmoClient, account: Account, entity_type: str, ids: list[int], text: str) -> list[Recipient]:
    """Each id's recipient, in order: its phone (the pipeline's rule) and its text filled in."""
    used = markers.markers_in(text)
    users = client.users() if any(m.startswith(_USER_MARKERS) for m in used) else None
    facts = (client.account_info(with_=("datetime_settings",)) if any(m.startswith(_ACCOUNT_MARKERS) for m in used)
             else None)
    region = phone_region(account)
    recipients = {i: Recipient(i) for i in ids}
    if entity_type == "contacts":
        contacts = {c["id"]: c for c in client.contacts(ids) if isinstance(c, dict) and isinstance(c.get("id"), int)}
        for entity_id, contact in contacts.items():
            if entity_id in recipients:
                _fill(recipients[entity_id], None, [contact], text, users, facts, region, contact.get("name"))
        return [recipients[i] for i in ids]
    leads = {lead["id"]: lead for lead in client.leads(ids, with_contacts=True)
             if isinstance(lead, dict) and isinstance(lead.get("id"), int)}
    linked = {lead_id: linked_contacts(lead) for lead_id, lead in leads.items()}
    contacts = {c["id"]: c for c in client.contacts([ids_[0] for ids_ in linked.values() if ids_])
                if isinstance(c, dict) and isinstance(c.get("id"), int)}
    lacking = [lead_id for lead_id, ids_ in linked.items()
               if len(ids_) > 1 and phone_pick([contacts.get(ids_[0]) or {}], region=region) is None]
    more = [cid for lead_id in lacking for cid in linked[lead_id][1:] if cid not in contacts]
    if more:
        contacts.update({c["id"]: c for c in client.contacts(more) if isinstance(c, dict)
                         and isinstance(c.get("id"), int)})
    for lead_id, lead in leads.items():
        if lead_id in recipients:
            _fill(recipients[lead_id], lead, [contacts[c] for c in linked[lead_id] if c in contacts], text, users, facts,
                  region, lead.get("name"))
    return [recipients[i] for i in ids]


def _fill(recipient: Recipient, lead, contacts, text, users, facts, region, name) -> None:
    recipient.found = True
    recipient.name = name if isinstance(name, str) else ""
    picked = phone_pick(contacts, region=region)
    if picked is None:
        return
    recipient.phone, contact = picked
    recipient.text = markers.render(text, markers.context_for(lead=lead, contact=contact, users=users,
                                                              account=facts)).text.strip()


# --- the dialog's preview ---------------------------------------------------------------------------------------
def list_send_preview(*, account: Account, entity_type: str, ids, template_id: int | None = None,
                      text: str | None = None) -> dict:
    """What a send to these recipients would do: how many amoCRM has, how many have a phone, the first few SMS
    and the parts in all. Reads amoCRM (up to 500 recipients: a few requests)."""
    if entity_type not in ENTITY_TYPES:
        raise ListSendInvalid(_("Must be leads or contacts."))
    ids = _ids(ids)
    source, _template = _text_for(account, template_id, text)
    try:
        client = AmoClient(account)
        recipients = [r for start in range(0, len(ids), BATCH)
                      for r in _read(client, account, entity_type, ids[start:start + BATCH], source)]
    except (AmoNotConnected, AmoUnauthorized, AmoAccountRefused) as exc:  # the owner must act: as the card's 409
        raise ClientError(exc.message, code="amocrm_not_connected", http_status=409) from None
    except AmoApiError as exc:
        logger.warning("list preview: amoCRM unreadable", extra={"account_id": account.pk, "error": str(exc)[:200]})
        raise AmoCrmUnreadable(exc.message) from None
    with_phone = [r for r in recipients if r.text]
    samples = []
    parts = 0
    for recipient in with_phone:
        info = template_preview(text=recipient.text, context={})
        parts += info.parts
        if len(samples) < SAMPLES:
            samples.append({"entity_id": recipient.entity_id, "name": recipient.name, "phone": recipient.phone,
                            "text": info.text, "parts": info.parts, "encoding": info.encoding})
    return {"total": len(ids), "found": sum(r.found for r in recipients), "with_phone": len(with_phone),
            "without_phone": sum(r.found and not r.text for r in recipients),
            "not_found": sum(not r.found for r in recipients), "parts": parts, "samples": samples}


# --- the send ------------------------------------------------------------------------------------------------------
def list_send_create(*, account: Account, amo_user_id: int | None, entity_type: str, ids,
                     template_id: int | None = None, text: str | None = None) -> ListSend:
    if entity_type not in ENTITY_TYPES:
        raise ListSendInvalid(_("Must be leads or contacts."))
    ids = _ids(ids)
    source, template = _text_for(account, template_id, text)
    if len(source) > MAX_TEXT:
        raise ListSendInvalid(_("The text is too long."), errors={"text": [str(_("Too long."))]})
    if refusal := crm_route_refusal(account=account):
        raise ClientError(refusal[1], code=refusal[0], http_status=422)
    send = ListSend.objects.create(account=account, amo_user_id=amo_user_id, entity_type=entity_type, entity_ids=ids,
                                   template_id=template, text=source, created_at=timezone.now())
    list_send_schedule(send_id=send.pk)
    logger.info("list send created", extra={"account_id": account.pk, "list_send": send.pk, "recipients": len(ids)})
    return send


def list_send_schedule(*, send_id: int, countdown: float | None = None) -> bool:
    return task_publish(RUN_TASK, [send_id], queue=queue_name(QUEUE_CRM), countdown=countdown,
                        log_extra={"list_send": send_id})


def list_send_of(*, account: Account, send_id) -> ListSend:
    send = (ListSend.objects.filter(account=account, pk=send_id).first()
            if isinstance(send_id, int) and 0 < send_id <= 2**63 - 1 else None)
    if send is None:
        raise ListSendNotFound(_("No such list send in this account."))
    return send


def list_send_cancel(*, account: Account, send_id: int) -> ListSend:
    """Stop a send between batches (one not started yet stops at once); a finished one is left as it is."""
    send = list_send_of(account=account, send_id=send_id)
    now = timezone.now()
    ListSend.objects.filter(pk=send.pk, state=S.PENDING, claimed_at__isnull=True).update(
        state=S.CANCELLED, cancel_requested=True, finished_at=now)
    ListSend.objects.filter(pk=send.pk, state__in=OPEN).update(cancel_requested=True)
    send.refresh_from_db()
    return send


def list_send_step(*, send_id: int) -> float | None:
    """One batch of a send; the seconds until the next (None: finished, or another worker holds it)."""
    now = timezone.now()
    taken = ListSend.objects.filter(pk=send_id, state__in=OPEN).filter(
        Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - STALE_CLAIM)).update(state=S.RUNNING, claimed_at=now)
    if not taken:
        return None
    send = ListSend.objects.select_related("account").get(pk=send_id)
    if send.cancel_requested:
        return _close(send, S.CANCELLED, "")
    if not send.account.is_active:
        return _close(send, S.FAILED, "the account is disabled")
    ids = send.entity_ids[send.position:send.position + BATCH]
    if not ids:
        return _close(send, S.DONE, "")
    try:
        recipients = _read(AmoClient(send.account), send.account, send.entity_type, ids, send.text)
    except AmoTemporary as exc:
        send.reads += 1
        if send.reads >= MAX_READS:
            return _close(send, S.FAILED, str(exc.message))
        ListSend.objects.filter(pk=send.pk).update(reads=send.reads, claimed_at=None)
        return max(2.0, min(float(exc.retry_after or 0) or 2.0 * send.reads, 60.0))
    except (AmoNotConnected, AmoUnauthorized, AmoAccountRefused, AmoRejected) as exc:
        return _close(send, S.FAILED, str(exc.message))

    items = [CrmSend(entity_type=send.entity_type, entity_id=r.entity_id, phone=r.phone, text=r.text,
                     template_id=send.template_id, amo_user_id=send.amo_user_id,
                     dedupe_key=f"list:{send.pk}:{r.entity_id}") for r in recipients if r.text]
    results = crm_sends_create(account=send.account, kind=DeliveryKind.LIST, items=items, write_notes=True) \
        if items else []
    send.sent += sum(r.delivery_id is not None for r in results)
    for result in results:
        if result.delivery_id is None:
            send.refused += 1
            code = result.code or "refused"
            send.refused_by[code] = send.refused_by.get(code, 0) + 1
    send.no_phone += sum(r.found and not r.text for r in recipients)
    send.not_found += sum(not r.found for r in recipients)
    send.position += len(ids)
    done = send.position >= len(send.entity_ids)
    fields = {"sent": send.sent, "refused": send.refused, "refused_by": send.refused_by, "no_phone": send.no_phone,
              "not_found": send.not_found, "position": send.position, "claimed_at": None, "reads": 0}
    if done:
        fields.update(state=S.DONE, finished_at=timezone.now())
    ListSend.objects.filter(pk=send.pk).update(**fields)
    return None if done else 0.0


def _close(send: ListSend, state: str, detail: str) -> None:
    ListSend.objects.filter(pk=send.pk).update(state=state, detail=detail[:300], claimed_at=None,
                                               finished_at=timezone.now(), reads=send.reads)
    logger.info("list send %s", state, extra={"account_id": send.account_id, "list_send": send.pk,
                                              "position": send.position})


def list_sends_stale() -> list[int]:
    """Open sends no worker holds for a while (a lost task, a dead worker): the sweeper queues them."""
    cutoff = timezone.now() - STALE_CLAIM
    return list(ListSend.objects.filter(state__in=OPEN).filter(
        Q(claimed_at__lt=cutoff) | Q(claimed_at__isnull=True, created_at__lt=timezone.now() - timedelta(seconds=30)))
        .values_list("id", flat=True)[:1000])
