"""The admin's search box: every interpretation of a term (a delivery id, a phone in any common
format, an account by id, amoCRM id or subdomain, a provider message id) is an exact match on an
indexed column, so a search stays fast at millions of rows and never scans texts."""

import re
import uuid

from django.db.models import Q

from accounts.models import Account
from routes.providers import PROVIDERS
from smsgate.phones import phone_normalise_for_search

from .models import Delivery

_AMO_HOST = re.compile(r"^([a-z0-9-]+)\.(amocrm\.ru|amocrm\.com|kommo\.com)$")
# ASCII digits only: "¹²³" passes str.isdigit() but not int(), "٣٤٥" would be read as 345.
_PHONE_LIKE = re.compile(r"^\+?[0-9\s().\-]+$")
_ID_LIKE = re.compile(r"^[0-9]{1,18}$")  # a bigint id; longer names nothing (and would overflow)


def _digits(term: str) -> str:
    return re.sub(r"[^0-9]", "", term)


def parse_id(term: str) -> int | None:
    """An account id typed in a search box or a URL: ASCII digits within bigint range, else None."""
    return int(term) if _ID_LIKE.match(term) else None


def search_phone(term: str) -> str | None:
    """E.164 of a phone number typed in any common format, or None if the term is not one."""
    if not _PHONE_LIKE.match(term) or not 10 <= len(_digits(term)) <= 15:
        return None
    return phone_normalise_for_search(term) or phone_normalise_for_search("+" + _digits(term))


def search_account_ids(term: str) -> list[int]:
    """Accounts the term names: our id or amoCRM's (digits), or a subdomain (or its full host)."""
    if term.isdigit():  # also "²" or "٣", which name nothing
        number = parse_id(term)
        if number is None or len(term) >= 10:
            return []
        return list(Account.objects.filter(Q(pk=number) | Q(amo_id=number)).values_list("pk", flat=True)[:50])
    host = _AMO_HOST.match(term.lower())
    subdomain = host.group(1) if host else term.lower()
    if not re.fullmatch(r"[a-z0-9-]{1,63}", subdomain):
        return []
    return list(Account.objects.filter(subdomain=subdomain).values_list("pk", flat=True)[:50])


def delivery_search_q(raw_term: str) -> Q:
    """The filter for a search box term: a delivery id, a phone, an account (id, amoCRM id or
    subdomain) or a provider message id. Each is an exact match that an index serves."""
    term = raw_term.strip()
    conditions = []
    try:
        if term.isascii():  # uuid.UUID reads other scripts' digits too
            conditions.append(Q(pk=uuid.UUID(term)))
    except ValueError:
        pass
    phone = search_phone(term)
    if phone:
        conditions.append(Q(phone=phone))
    account_ids = search_account_ids(term)
    if account_ids:
        conditions.append(Q(account_id__in=account_ids))
    if 0 < len(term) <= 100:
        # (provider, provider_message_id) is indexed; listing the providers lets it serve an id alone.
        matches = list(Delivery.objects.filter(provider__in=sorted(PROVIDERS), provider_message_id=term)
                       .values_list("pk", flat=True)[:100])
        if matches:
            conditions.append(Q(pk__in=matches))
    if not conditions:
        return Q(pk__in=[])
    combined = conditions[0]
    for condition in conditions[1:]:
        combined |= condition
    return combined
