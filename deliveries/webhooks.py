"""Delivery-report callbacks: POST /webhooks/<provider>/<route token>/.

The token is unguessable and per route; the provider's own signature is checked on top where it
signs its callbacks (Twilio's X-Twilio-Signature, SMS.ru's `hash`). Thin: find the route, let the
provider verify and parse, let the service apply. A bad signature is a 400, an unknown token a 404,
anything unreadable a 400; never a 500.
"""

import logging

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from routes.providers.base import ProviderError, WebhookRequest, WebhookSignatureError
from routes.selectors import route_by_callback_token
from routes.services import RouteChoice, build_provider
from smsgate.inputs import json_too_deep, storable_text

from .services.reports import delivery_reports_apply

logger = logging.getLogger(__name__)


def _reply(status: int, code: str) -> JsonResponse:
    return JsonResponse({"code": code}, status=status)


def _webhook_request(request) -> WebhookRequest:
    # The provider signed the URL we gave it (built from SMSGATE_PUBLIC_URL); behind a proxy the URL
    # this server sees may differ, so both are offered to the verifier.
    body = request.body  # first: parsing a multipart body (below) would consume the stream
    if request.method == "POST" and request.FILES:
        raise ValueError("a file part in a delivery report")
    if body.lstrip()[:1] in (b"{", b"[") and json_too_deep(body.decode("utf-8", "replace")):
        raise ValueError("JSON nested too deep")  # the bound of every JSON body we read (smsgate/inputs.py)
    path = request.get_full_path()
    return WebhookRequest(
        url=f"{settings.SMSGATE_PUBLIC_URL}{path}",
        alternate_urls=(request.build_absolute_uri(path),),
        method=request.method,
        headers={name.lower(): value for name, value in request.headers.items()},
        body=body,
        form={name: request.POST.getlist(name) for name in request.POST} if request.method == "POST" else {},
        query={name: request.GET.getlist(name) for name in request.GET},
    )


@csrf_exempt
def provider_webhook(request, provider: str, token: str):
    route = route_by_callback_token(provider=provider, token=token)
    if route is None:
        return _reply(404, "unknown_callback_url")
    log_extra = {"route_id": route.pk, "provider": provider}
    try:
        adapter = build_provider(RouteChoice.of(route))
    except Exception:  # undecryptable credentials and the like: the provider will call again
        logger.exception("cannot load the route for a callback", extra=log_extra)
        return _reply(503, "route_unavailable")
    if request.method not in adapter.webhook_methods:
        response = _reply(405, "method_not_allowed")
        response["Allow"] = ", ".join(adapter.webhook_methods)
        return response
    try:
        hook = _webhook_request(request)
        adapter.verify_webhook(hook)
        reports = adapter.parse_webhook(hook)
        if not all(storable_text([r.provider_message_id, r.provider_code, r.raw]) for r in reports):
            raise ValueError("a NUL or a lone surrogate in a report")  # the database would refuse it
    except WebhookSignatureError as exc:
        logger.warning("callback signature refused: %s", exc, extra=log_extra)
        return _reply(400, "bad_signature")
    except NotImplementedError:
        return _reply(404, "no_callbacks")
    except (ProviderError, ValueError, TypeError, KeyError, UnicodeError) as exc:
        logger.warning("unreadable callback: %s", type(exc).__name__, extra=log_extra)
        return _reply(400, "bad_report")
    except Exception:  # Django's own parsing (a broken multipart body, too many fields), or a parser bug
        logger.warning("unreadable callback", extra=log_extra, exc_info=True)
        return _reply(400, "bad_report")
    result = delivery_reports_apply(route=route, reports=reports)
    logger.info("delivery reports received", extra={**log_extra, "reports": len(reports), "applied": result.applied,
                                                    "held": result.held})
    reply = adapter.webhook_reply()
    return HttpResponse(reply.body, status=reply.status, content_type=reply.content_type)
