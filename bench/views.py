"""The baseline the acceptance benchmark compares `POST /amocrm/sms` with: the same form body, one
HS256 verification of the same token (pyjwt, the same checks of signature, audience and required
claims), one INSERT of the same delivery row into the same table, the same JSON answer. Everything
else the real endpoint does (the account, routes, phone parsing, the abuse guard, counters, the
broker) is what the ratio measures. Only in `bench.urls`, never in production."""

import uuid
from datetime import timedelta

import jwt
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from accounts.models import Account, Integration
from deliveries.models import Delivery

_accounts: dict[int, int] = {}  # amoCRM account id -> our account pk, read once
_keys: dict[uuid.UUID, tuple[str, str]] = {}  # client_uuid -> (secret, audience), read once


def _key(client_uuid: str) -> tuple[str, str]:
    key = uuid.UUID(client_uuid)
    if key not in _keys:
        integration = Integration.objects.get(client_uuid=key)
        _keys[key] = (integration.client_secret, integration.audience)
    return _keys[key]


@csrf_exempt
def baseline(request):
    token = request.POST["token"]
    secret, audience = _key(jwt.decode(token, options={"verify_signature": False})["client_uuid"])
    claims = jwt.decode(token, secret, algorithms=["HS256"], audience=audience,
                        options={"require": ["exp", "iat", "jti", "account_id", "iss"]})
    if claims["account_id"] not in _accounts:
        _accounts.update(Account.objects.values_list("amo_id", "pk"))
    delivery = Delivery.objects.create(
        account_id=_accounts[claims["account_id"]], phone=request.POST["phone"], text=request.POST["text"],
        encoding="ucs2", segments=1, jti=claims["jti"], valid_until=timezone.now() + timedelta(seconds=600),
    )
    return JsonResponse({"id": str(delivery.pk), "status": delivery.status})
