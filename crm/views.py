"""amoCRM's calls to the widget's server: the digital pipeline's webhook (manifest `dp.webhook_url`) and
Salesbot's `widget_request` (the `salesbot_designer` handler's URL). Thin: read the body, call the inbox,
answer.

Every answer is JSON; bad input is a 4xx `{"detail", "code"}` in the request's language, never a 5xx.
"""

import logging

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt

from smsgate.errors import body_too_large, json_error
from smsgate.inputs import json_loads

from . import salesbot
from .pipeline_inbox import CallInvalid, pipeline_call_accept, read_form, read_json

logger = logging.getLogger(__name__)

MAX_BODY = 64 * 1024  # a webhook is under 2 KB; the action's text is at most a few
MAX_DEPTH = 8  # the webhook nests five levels


class BadBody(Exception):
    pass


def _read(request) -> dict:
    if (request.content_type or "") == "application/json":
        try:
            data = json_loads(request.body or b"null", max_depth=MAX_DEPTH)
        except ValueError:  # not UTF-8, not JSON, or nested too deep
            raise BadBody from None
        if not isinstance(data, dict):
            raise BadBody
        return read_json(data)
    if request.FILES:  # a file part: not what amoCRM sends
        raise BadBody
    return read_form(request.POST)


@csrf_exempt
def pipeline_webhook(request):
    if request.method in ("GET", "HEAD"):
        return JsonResponse({"service": "smsgate", "endpoint": "amoCRM digital pipeline", "method": "POST"})
    if request.method != "POST":
        response = json_error(405, "method_not_allowed", _("Use POST."))
        response["Allow"] = "GET, HEAD, POST"
        return response
    length = request.META.get("CONTENT_LENGTH") or "0"
    if length.isascii() and length.isdigit() and int(length) > MAX_BODY:
        return body_too_large()
    try:
        found = _read(request)
    except RequestDataTooBig:
        return body_too_large()
    except (BadBody, SuspiciousOperation, MultiPartParserError, UnicodeDecodeError):
        return json_error(400, "bad_body", _("The body must be form fields or a JSON object."))
    try:
        outcome = pipeline_call_accept(found=found)
    except CallInvalid as exc:
        logger.info("pipeline webhook unreadable", extra={"field": exc.field})
        return json_error(400, "invalid", _("The webhook's field %(field)s is missing or not valid.")
                          % {"field": exc.field})
    if outcome.status != 200:
        return json_error(outcome.status, outcome.code, outcome.detail)
    body = {"status": outcome.code}
    if outcome.detail:
        body["detail"] = outcome.detail
    return JsonResponse(body, json_dumps_params={"ensure_ascii": False})


SALESBOT_MAX_BODY = 32 * 1024  # {token, data, return_url}: a token of ~600 bytes and the step's text
SALESBOT_MAX_DEPTH = 6


@csrf_exempt
def salesbot_webhook(request):
    """Salesbot's widget_request: a 200 within 2 s once the call is recorded; the bot is continued later."""
    if request.method in ("GET", "HEAD"):
        return JsonResponse({"service": "smsgate", "endpoint": "amoCRM Salesbot widget_request", "method": "POST"})
    if request.method != "POST":
        response = json_error(405, "method_not_allowed", _("Use POST."))
        response["Allow"] = "GET, HEAD, POST"
        return response
    length = request.META.get("CONTENT_LENGTH") or "0"
    if length.isascii() and length.isdigit() and int(length) > SALESBOT_MAX_BODY:
        return body_too_large()
    try:
        raw = request.body
    except RequestDataTooBig:
        return body_too_large()
    if len(raw) > SALESBOT_MAX_BODY:
        return body_too_large()
    try:
        body = json_loads(raw or b"null", max_depth=SALESBOT_MAX_DEPTH)
    except ValueError:  # not UTF-8, not JSON, or nested too deep
        body = None
    if not isinstance(body, dict):
        return json_error(400, "bad_body", _("The body must be a JSON object: token, data, return_url."))
    try:
        outcome = salesbot.salesbot_call_accept(body=body)
    except salesbot.CallInvalid as exc:
        logger.info("salesbot call unreadable", extra={"field": exc.field})
        return json_error(400, "invalid", _("The call's field %(field)s is missing or not valid.")
                          % {"field": exc.field})
    if outcome.status != 200:
        return json_error(outcome.status, outcome.code, outcome.detail)
    return JsonResponse({"status": outcome.code})
