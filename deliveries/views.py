"""The amoCRM system-SMS endpoint. Thin: parse, verify, call the service, answer."""

import logging

from django.http import JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt

from accounts.services import account_register
from accounts.tokens import TokenError, verify_token
from smsgate.errors import json_error as error_response
from smsgate.inputs import json_loads

from .services.intake import DeliveryRefused, delivery_create

logger = logging.getLogger(__name__)


class BadBody(Exception):
    pass


def _read_body(request) -> dict:
    """Form fields (what amoCRM sends) or a JSON object (accepted too). A body Django cannot parse
    (a broken multipart body, too many fields) is answered by smsgate.errors as `bad_body` too."""
    content_type = request.content_type or ""
    if content_type == "application/json":
        try:
            data = json_loads(request.body or b"null")
        except ValueError:  # not UTF-8, not JSON, or nested too deep
            raise BadBody from None
        if not isinstance(data, dict):
            raise BadBody
        return data
    if request.FILES:  # a multipart body with a file part: not what amoCRM sends
        raise BadBody
    return {key: request.POST.get(key) for key in ("text", "phone", "token")}


@csrf_exempt
def amocrm_sms(request):
    if request.method in ("GET", "HEAD"):
        # amoCRM checks that the endpoint is reachable when the widget is uploaded.
        return JsonResponse({"service": "smsgate", "endpoint": "amoCRM system SMS", "method": "POST"})
    if request.method != "POST":
        response = error_response(405, "method_not_allowed", _("Use POST."))
        response["Allow"] = "GET, HEAD, POST"
        return response
    try:
        data = _read_body(request)
    except BadBody:
        return error_response(400, "bad_body", _("The body must be form fields or a JSON object."))

    try:
        claims = verify_token(data.get("token"))
    except TokenError as exc:
        logger.info("token refused", extra={"reason": str(exc.reason), "detail": exc.detail})
        return error_response(401, str(exc.reason), exc.message)

    account = account_register(claims=claims)
    if not account.is_active:
        return error_response(403, "account_disabled", _("This amoCRM account is disabled in smsgate."))
    try:
        result = delivery_create(account=account, phone=data.get("phone"), text=data.get("text"), jti=claims.jti)
    except DeliveryRefused as exc:
        return exc.response()
    return JsonResponse({"id": str(result.delivery.pk), "status": result.delivery.status})
