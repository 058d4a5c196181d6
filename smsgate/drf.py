"""The account API's parser and fields, reading by smsgate.inputs' rules (REST_FRAMEWORK's parser)."""

import re

from django.conf import settings
from django.utils.translation import gettext_lazy as _
from rest_framework import parsers, serializers
from rest_framework.exceptions import ParseError

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


class DateField(serializers.DateField):
    """DRF's DateField, reading only ASCII (Django's date parser matches `\\d`, any digit)."""

    def to_internal_value(self, value):
        if isinstance(value, str) and not value.isascii():
            self.fail("invalid", format="YYYY-MM-DD")
        return super().to_internal_value(value)
