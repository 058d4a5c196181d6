"""Log lines that carry their context: the ids a call passes in `extra` (delivery_id, account_id,
provider, error_class, ...) are appended as key=value, so an operator can follow one SMS through
the web, worker and webhook logs. Those extras are chosen to be safe to log (ids, masked phones,
error classes), never tokens, secrets or message texts.

What others write into a line is not chosen: Django's request logger writes the path ("Bad Request:
/webhooks/smsc/<route token>/", and for SMSC and SMS Aero that token is the only authentication of a
delivery report), gunicorn's access log the request line with its query string (the OAuth `code`,
the uninstall `signature`), an exception its URL. `mask_secrets` is the one function that masks them;
ContextFormatter applies it to every whole line it formats (tracebacks included), and
`MaskSecretsFilter` to loggers with formatters of their own (gunicorn's, smsgate/gunicorn.conf.py).
"""

import logging
import re

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
# Django's request logging attaches the request: its repr holds the query string (an OAuth code).
_NEVER = {"request"}
_MAX_VALUE = 200

MASK = "***"
# /webhooks/<provider>/<route token>/: everything after the provider, also behind an encoded slash.
_CALLBACK_TOKEN = re.compile(r"(/webhooks/[A-Za-z0-9_]{1,30}(?:/|%2[Ff]))[^\s?#\"'<>]+")
# Query (and form) parameters that are secrets: the OAuth code and state, the uninstall signature,
# tokens of any kind, provider credentials (SMSC's psw, Devino's Password, SMS.ru's api_id).
_SECRET_PARAMETER = re.compile(
    r"(?i)((?:^|[?&;])(?:code|state|signature|sig|hash|[\w.-]*token|password|passwd|psw|secret|client_secret"
    r"|api_id|api_key|apikey|key|auth)=)[^&;\s\"'<>#]*"
)
# A JWT (amoCRM's one-time token, an access token) wherever it appears.
_JWT = re.compile(r"\beyJ[\w-]{2,}\.[\w-]{2,}\.[\w-]*")


def mask_secrets(text: str) -> str:
    """The text with callback tokens, secret URL parameters and JWTs replaced by ***."""
    if "/webhooks/" in text:
        text = _CALLBACK_TOKEN.sub(rf"\1{MASK}", text)
    # A parameter follows "?", "&" or ";", or starts the text (gunicorn's query-string atom): the
    # regex, which cannot skip ahead to a literal, runs only then (most lines are key=value extras).
    if "=" in text and ("?" in text or "&" in text or ";" in text or _SECRET_PARAMETER.match(text)):
        text = _SECRET_PARAMETER.sub(rf"\1{MASK}", text)
    if "eyJ" in text:
        text = _JWT.sub(MASK, text)
    return text


def _value(value) -> str:
    text = str(value)[:_MAX_VALUE]
    return repr(text) if not text or any(c.isspace() or c in "='\"" for c in text) else text


class ContextFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        context = [f"{key}={_value(value)}" for key, value in sorted(vars(record).items())
                   if key not in _STANDARD and key not in _NEVER and not key.startswith("_")]
        return f"{line} {' '.join(context)}" if context else line

    def format(self, record: logging.LogRecord) -> str:
        # The whole line: the message, its extras, an exception's text and its traceback.
        return mask_secrets(super().format(record))


class MaskSecretsFilter(logging.Filter):
    """Masks a record before any formatter sees it: its message and its exception's text."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = mask_secrets(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_secrets(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_secrets(record.stack_info)
        return True
