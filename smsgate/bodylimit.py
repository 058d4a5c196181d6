"""Request bodies are bounded before anyone reads them, whatever their encoding (issue 13).

Django cannot do it alone: it trusts CONTENT_LENGTH and ignores a chunked body entirely (a request
without CONTENT_LENGTH reads as empty), DATA_UPLOAD_MAX_MEMORY_SIZE leaves file parts out, and DRF
reads the stream with no limit. So this WSGI middleware wraps Django's application (smsgate/wsgi.py)
and, on every path but the admin's (which keeps Django's own handling):

- a Content-Length over SMSGATE_MAX_BODY_BYTES is answered 413 at once, without reading the body,
  and the connection is closed so the server does not read the rest either;
- a chunked body is read up to the limit and handed to Django as an ordinary body with its
  CONTENT_LENGTH, or answered 413 once it passes the limit.

The answer is the machine endpoints' JSON error, {"detail", "code": "body_too_large"}, in the
request's language.
"""

import io
import threading

from django.conf import settings
from django.http import HttpRequest
from django.utils import translation
from django.utils.translation import gettext_lazy as _

from . import errors

EXEMPT_PREFIXES = ("/admin/",)

_server_request = threading.local()


def remember_server_request(request) -> None:
    """gunicorn's pre_request hook (smsgate/gunicorn.conf.py): the request being served on this thread,
    so a refusal can make gunicorn close the connection (it drops an application's Connection header)."""
    _server_request.value = request


class BodyLimitMiddleware:
    def __init__(self, application):
        self.application = application

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "").startswith(EXEMPT_PREFIXES):
            return self.application(environ, start_response)
        limit = settings.SMSGATE_MAX_BODY_BYTES
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            try:
                body = _read_at_most(environ["wsgi.input"], limit + 1)
            except Exception:  # a malformed chunk (the server's parser raises) or a dropped connection
                return self._refuse(environ, start_response, 400, "bad_body", _("The request body cannot be read."))
            if len(body) > limit:
                return self._refuse(environ, start_response, 413, "body_too_large", _("The request body is too large."))
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            del environ["HTTP_TRANSFER_ENCODING"]
        else:
            length = environ.get("CONTENT_LENGTH") or "0"
            if not (length.isascii() and length.isdigit()):
                return self._refuse(environ, start_response, 400, "bad_body", _("The request body cannot be read."))
            if int(length) > limit:
                return self._refuse(environ, start_response, 413, "body_too_large", _("The request body is too large."))
        return self.application(environ, start_response)

    @staticmethod
    def _refuse(environ, start_response, status: int, code: str, message):
        request = HttpRequest()  # what get_language_from_request reads: Accept-Language
        request.META = {"HTTP_ACCEPT_LANGUAGE": environ.get("HTTP_ACCEPT_LANGUAGE", "")}
        with translation.override(translation.get_language_from_request(request)):
            response = errors.json_error(status, code, str(message))
        server_request = getattr(_server_request, "value", None)
        if server_request is not None and hasattr(server_request, "force_close"):
            server_request.force_close()  # gunicorn: "Connection: close", and the unread body is left unread
        headers = [*response.items(), ("Content-Length", str(len(response.content))), ("Connection", "close")]
        start_response(f"{response.status_code} {response.reason_phrase}", headers)
        return [response.content]


def _read_at_most(stream, size: int) -> bytes:
    chunks, taken = [], 0
    while taken < size:
        chunk = stream.read(size - taken)
        if not chunk:
            break
        chunks.append(chunk)
        taken += len(chunk)
    return b"".join(chunks)
