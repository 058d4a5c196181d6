"""amoCRM's install lifecycle: the OAuth redirect URI and the uninstall hook. Thin views."""

import logging
from functools import wraps

from django.http import JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt

from .services import InstallRefused, account_install, account_uninstall

logger = logging.getLogger(__name__)


def _answer(http_status: int, /, **body) -> JsonResponse:
    body = {k: str(v) for k, v in body.items()}
    return JsonResponse(body, status=http_status, json_dumps_params={"ensure_ascii": False})


def require_GET(view):
    """Django's require_GET, answering the machine endpoints' JSON error instead of an empty 405."""

    @wraps(view)
    def get_only(request, *args, **kwargs):
        if request.method != "GET":
            response = _answer(405, code="method_not_allowed", detail=_("Use GET."))
            response["Allow"] = "GET"
            return response
        return view(request, *args, **kwargs)

    return get_only


@csrf_exempt
@require_GET
def amocrm_oauth(request):
    """Redirect URI: amoCRM calls it with `code` and `referer` when the widget is installed (a
    server-to-server GET with a 3 s budget and no retry), or redirects a browser here after the
    OAuth button. `state` is not checked: we never start the flow with one of our own."""
    params = request.GET
    if params.get("error"):
        return _answer(400, code="access_denied", detail=_("Access to amoCRM was not granted."))
    try:
        account = account_install(code=params.get("code"), referer=params.get("referer"),
                                  client_id=params.get("client_id"))
    except InstallRefused as exc:
        logger.info("install refused", extra={"code": exc.code})
        return _answer(exc.http_status, code=exc.code, detail=exc.message)
    return _answer(200, status="installed", account=account.host,
                   detail=_("smsgate is installed. Open the widget settings in amoCRM to choose an SMS provider."))


@csrf_exempt
@require_GET
def amocrm_uninstall(request):
    """Uninstall hook: `account_id`, `client_uuid` (or `client_id`) and an HMAC-SHA256 `signature`."""
    params = request.GET
    try:
        account = account_uninstall(client_uuid=params.get("client_uuid") or params.get("client_id"),
                                    account_id=params.get("account_id"), signature=params.get("signature"))
    except InstallRefused as exc:
        logger.info("uninstall refused", extra={"code": exc.code})
        return _answer(exc.http_status, code=exc.code, detail=exc.message)
    return _answer(200, status="disabled" if account else "unknown_account")
