"""Log lines carry the ids passed in `extra`, never Django's request (its query string)."""

import io
import logging

from smsgate.logs import ContextFormatter


def log_line(**kwargs) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(ContextFormatter("%(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("tests.logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("delivery sent", **kwargs)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_extra_ids_follow_the_message_as_key_value():
    line = log_line(extra={"delivery_id": "8c0d6f40", "provider": "smsru", "latency_ms": 42,
                           "error_text": "no answer", "request": "<WSGIRequest: GET '/amocrm/oauth?code=x'>"})
    assert line == "WARNING tests.logs delivery sent delivery_id=8c0d6f40 error_text='no answer' latency_ms=42 " \
                   "provider=smsru\n"


def test_a_line_without_extras_is_unchanged_and_a_traceback_comes_after_the_ids():
    assert log_line() == "WARNING tests.logs delivery sent\n"
    try:
        raise ValueError("boom")
    except ValueError:
        line = log_line(extra={"delivery_id": "8c0d6f40"}, exc_info=True)
    first, *rest = line.splitlines()
    assert first == "WARNING tests.logs delivery sent delivery_id=8c0d6f40"
    assert rest[0].startswith("Traceback") and rest[-1] == "ValueError: boom"
