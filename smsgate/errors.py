"""What Django answers by itself (an unknown path, a body it cannot parse, too many fields) is JSON
on the machine endpoints, in their documented shape {"detail", "code"}; pages stay HTML."""

from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from django.utils.translation import gettext as _
from django.views import defaults

# amoCRM's calls, providers' delivery reports and the account API.
MACHINE_PREFIXES = ("/amocrm/", "/webhooks/", "/api/v1/")


def is_machine_path(path: str) -> bool:
    return path.startswith(MACHINE_PREFIXES)


def json_error(status: int, code: str, detail) -> JsonResponse:
    return JsonResponse({"detail": str(detail), "code": code}, status=status,
                        json_dumps_params={"ensure_ascii": False})


def body_too_large() -> JsonResponse:
    return json_error(413, "body_too_large", _("The request body is too large."))


def bad_request(request, exception, template_name=defaults.ERROR_400_TEMPLATE_NAME):
    """handler400: Django's SuspiciousOperation and MultiPartParserError (a broken multipart body,
    more fields than DATA_UPLOAD_MAX_NUMBER_FIELDS, a body over DATA_UPLOAD_MAX_MEMORY_SIZE)."""
    if not is_machine_path(request.path_info):
        return defaults.bad_request(request, exception, template_name)
    if isinstance(exception, RequestDataTooBig):
        return body_too_large()
    return json_error(400, "bad_body", _("The request body cannot be read."))


def not_found(request, exception, template_name=defaults.ERROR_404_TEMPLATE_NAME):
    if not is_machine_path(request.path_info):
        return defaults.page_not_found(request, exception, template_name)
    return json_error(404, "not_found", _("Not found."))


class ClientError(Exception):
    """A request from outside that the service refuses, with what the client is told: the HTTP status,
    a machine-readable `code`, a message for people, field errors, and `Retry-After` for a limit.
    Services raise it (or a subclass); the SMS endpoint and the account API answer it the same way."""

    http_status = 400
    code = "invalid"

    def __init__(self, message, *, errors: dict | None = None, code: str | None = None,
                 http_status: int | None = None, retry_after: int | None = None):
        self.message = message
        self.errors = errors or {}
        if code:
            self.code = code
        if http_status:
            self.http_status = http_status
        self.retry_after = retry_after  # seconds
        super().__init__(str(message))

    def body(self) -> dict:
        body = {"detail": str(self.message), "code": self.code}
        if self.errors:
            body["errors"] = {field: [str(message) for message in messages] for field, messages in self.errors.items()}
        return body

    def headers(self) -> dict:
        return {"Retry-After": str(self.retry_after)} if self.retry_after else {}

    def response(self) -> JsonResponse:
        response = JsonResponse(self.body(), status=self.http_status, json_dumps_params={"ensure_ascii": False})
        for name, value in self.headers().items():
            response[name] = value
        return response
