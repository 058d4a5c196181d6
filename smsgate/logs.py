"""Log lines that carry their context: the ids a call passes in `extra` (delivery_id, account_id,
provider, error_class, ...) are appended as key=value, so an operator can follow one SMS through
the web, worker and webhook logs. Those extras are chosen to be safe to log (ids, masked phones,
error classes), never tokens, secrets or message texts."""

import logging

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
# Django's request logging attaches the request: its repr holds the query string (an OAuth code).
_NEVER = {"request"}
_MAX_VALUE = 200


def _value(value) -> str:
    text = str(value)[:_MAX_VALUE]
    return repr(text) if not text or any(c.isspace() or c in "='\"" for c in text) else text


class ContextFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        context = [f"{key}={_value(value)}" for key, value in sorted(vars(record).items())
                   if key not in _STANDARD and key not in _NEVER and not key.startswith("_")]
        return f"{line} {' '.join(context)}" if context else line
