"""The account API's shared pieces: its error shape {"detail", "code"[, "errors"]} in the request's
language (REST_FRAMEWORK's EXCEPTION_HANDLER, and the error responses its schema names), its JSON
parser and fields reading by smsgate.inputs' rules."""

import re

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, parsers, serializers
from rest_framework.exceptions import ParseError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .errors import ClientError
from .inputs import json_loads

_INTEGER = re.compile(r"\s*[+-]?[0-9]+(?:\.0*)?\s*")  # what DRF's IntegerField reads, ASCII only


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, reading through `json_loads` (REST_FRAMEWORK's only parser)."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            raw = stream.read() if stream is not None else b""
            return json_loads(raw.decode(encoding))
        except (ValueError, LookupError) as exc:  # LookupError: a charset Python does not know
            raise ParseError(_("The body is not a JSON document this API can read: %(reason)s")
                             % {"reason": str(exc)[:200]}) from None


# --- DRF fields --------------------------------------------------------------------------------------
class IntegerField(serializers.IntegerField):
    """DRF's IntegerField, reading only ASCII digits from a string (DRF's `int()` takes others)."""

    def to_internal_value(self, data):
        if isinstance(data, str) and not (data.isascii() and _INTEGER.fullmatch(data)):
            self.fail("invalid")
        return super().to_internal_value(data)


class DecimalField(serializers.DecimalField):
    """DRF's DecimalField, reading only ASCII (Python's Decimal() takes any script's digits)."""

    def to_internal_value(self, data):
        if isinstance(data, str) and not data.isascii():
            self.fail("invalid")
        return super().to_internal_value(data)


class DateField(serializers.DateField):
    """DRF's DateField, reading only ASCII (Django's date parser matches `\\d`, any digit)."""

    def to_internal_value(self, value):
        if isinstance(value, str) and not value.isascii():
            self.fail("invalid", format="YYYY-MM-DD")
        return super().to_internal_value(value)


# --- errors: {"detail", "code"[, "errors"]} like the SMS endpoint, in the request's language --------
class ApiError(exceptions.APIException):
    def __init__(self, detail, code: str, status_code: int):
        self.status_code = status_code
        super().__init__(detail=detail, code=code)


def api_exception_handler(exc, context):
    """REST_FRAMEWORK's EXCEPTION_HANDLER: every error of the account API in one shape."""
    if isinstance(exc, ClientError):  # a service refused the request (e.g. a recorded SMS refusal)
        return Response(exc.body(), status=exc.http_status, headers=exc.headers() or None)
    if isinstance(exc, RequestDataTooBig):  # Django's own answer would be an HTML page
        return Response({"detail": str(_("The request body is too large.")), "code": "body_too_large"}, status=413)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = {"detail": str(_("The request has invalid fields.")), "code": "invalid",
                         "errors": _field_messages(exc.detail)}
    elif isinstance(exc, Http404):
        response.data = {"detail": str(_("Not found.")), "code": "not_found"}
    elif isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        response.data = {"detail": _text(exc.detail), "code": codes if isinstance(codes, str) else "error"}
    return response


def _text(value) -> str:
    """An error message as it can be sent: messages may quote the input ("x" is not a valid choice),
    and a lone surrogate in it cannot be encoded (an error answer must never become a 500)."""
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


def _messages(value, prefix=""):
    """Nested DRF errors (a dict field's keys, a list's items) as flat "key: message" strings."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _messages(item, f"{prefix}{_text(key)}: " if str(key) else prefix)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _messages(item, prefix)
    else:
        yield f"{prefix}{_text(value)}"


def _field_messages(detail) -> dict[str, list[str]]:
    """{"field": ["message", ...]}, always that shape (the schema promises it)."""
    if isinstance(detail, dict):
        return {_text(field): list(_messages(value)) for field, value in detail.items()}
    return {"non_field_errors": list(_messages(detail))}


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.CharField()
    errors = serializers.DictField(required=False, child=serializers.ListField(child=serializers.CharField()))


ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="invalid fields"),
    401: OpenApiResponse(ErrorSerializer, description="missing, forged or expired X-Auth-Token"),
    403: OpenApiResponse(ErrorSerializer, description="account disabled, or a write without is_admin"),
    404: OpenApiResponse(ErrorSerializer, description="not one of this account's objects"),
}
