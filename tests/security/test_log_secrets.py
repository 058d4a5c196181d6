"""No secret in logs, callback tokens included (issue 13, item 8). For SMSC and SMS Aero the route
token in /webhooks/<provider>/<token>/ is the only authentication of a delivery report, and Django's
request logger wrote it ("Bad Request: /webhooks/twilio/<token>/"). These tests read real log
output: Django's loggers through our formatter, and (e2e) gunicorn's access and error logs and a
Celery worker's log."""

import io
import logging
import time

import pytest

from routes.models import ProviderRoute
from smsgate.logs import ContextFormatter, mask_secrets

TOKEN = "Zq3xTOKENtokenTOKEN9k_-Ab12"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJhY2NvdW50X2lkIjoxfQ.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"


# --- the one masking function -----------------------------------------------------------------------------
@pytest.mark.parametrize("line, secret", [
    (f"Bad Request: /webhooks/twilio/{TOKEN}/", TOKEN),
    (f"Not Found: /webhooks/smsc/{TOKEN}", TOKEN),
    (f'"POST /webhooks/smsaero/{TOKEN}/?x=1 HTTP/1.1" 200', TOKEN),
    (f"GET /webhooks/twilio%2F{TOKEN}/ HTTP/1.1", TOKEN),  # an encoded slash still resolves in Django
    (f"https://gate.example.com/webhooks/smsru/{TOKEN}/ refused", TOKEN),
    ("GET /amocrm/oauth?code=def50200abcSECRET&referer=acme.amocrm.ru&state=st4teSECRET", "SECRET"),
    ("GET /amocrm/uninstall?account_id=1&client_uuid=x&signature=0a1b2cSECRET", "SECRET"),
    ("code=def50200abcSECRET&referer=acme.amocrm.ru", "SECRET"),  # gunicorn's query-string atom
    ("GET /x?token=tokSECRET&access_token=accSECRET;refresh_token=refSECRET", "SECRET"),
    ("GET /Sms/State?Login=acme&Password=pwSECRET&api_id=apiSECRET&psw=pswSECRET", "SECRET"),
    (f"X-Auth-Token: {JWT}", JWT.split(".")[2]),
])
def test_mask_secrets_removes_the_secret(line, secret):
    masked = mask_secrets(line)
    assert secret not in masked
    assert "***" in masked


def test_mask_secrets_keeps_what_is_no_secret():
    line = ("delivery sent delivery_id=8c0d6f40 code=bad_referer provider=smsru "
            "path=/amocrm/sms status=pending /webhooks/twilio")
    assert mask_secrets(line) == line


# --- Django's logging through our formatter -------------------------------------------------------------------
@pytest.fixture
def captured():
    """Every line Django and our code log, formatted by the formatter settings.LOGGING uses."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(ContextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    loggers = [logging.getLogger(), logging.getLogger("django")]
    for logger in loggers:
        logger.addHandler(handler)
    yield stream
    for logger in loggers:
        logger.removeHandler(handler)


@pytest.mark.django_db
@pytest.mark.parametrize("slug", ["twilio", "smsru", "smsc", "smsaero"])
def test_a_refused_report_logs_no_route_token(client, account, captured, slug):
    from tests.fakes.registry import FAKES

    route = ProviderRoute.objects.create(account=account, provider=slug, credentials=FAKES[slug]().credentials)
    path = f"/webhooks/{slug}/{route.callback_token}/"
    response = client.post(path, "id=1\x00&status=1&data[]=x&hash=bad",
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400
    log = captured.getvalue()
    assert f"Bad Request: /webhooks/{slug}/***" in log
    assert route.callback_token not in log


@pytest.mark.django_db
def test_an_unknown_token_logs_no_token(client, captured):
    response = client.post(f"/webhooks/smsc/{TOKEN}/", {"id": "1", "status": "1"})
    assert response.status_code == 404
    log = captured.getvalue()
    assert "Not Found: /webhooks/smsc/***" in log and TOKEN not in log


@pytest.mark.django_db
def test_the_oauth_and_uninstall_views_log_no_code_or_signature(client, integration, settings, captured):
    settings.AMO_OAUTH_BASE_URL = "http://127.0.0.1:9"  # amoCRM unreachable: a 502 and a warning
    response = client.get("/amocrm/oauth", {"code": "def50200codeSECRET", "referer": "acme.amocrm.ru",
                                            "state": "stateSECRET", "client_id": str(integration.client_uuid)})
    assert response.status_code == 502
    response = client.get("/amocrm/uninstall", {"account_id": "1", "client_uuid": str(integration.client_uuid),
                                                "signature": "0a1bsignatureSECRET"})
    assert response.status_code == 403
    log = captured.getvalue()
    assert "install code exchange failed" in log and "Forbidden: /amocrm/uninstall" in log
    assert "SECRET" not in log


def test_exception_text_and_tracebacks_are_masked_too(captured):
    logger = logging.getLogger("tests.security")
    try:
        raise ValueError(f"cannot fetch https://gate.example.com/webhooks/smsc/{TOKEN}/?token=tokSECRET")
    except ValueError:
        logger.exception("failed for /amocrm/oauth?code=codeSECRET", extra={"url": f"/webhooks/smsc/{TOKEN}/"})
    log = captured.getvalue()
    assert "Traceback" in log and "ValueError" in log
    assert TOKEN not in log and "SECRET" not in log


@pytest.mark.parametrize("name", ["django.request", "django.server", "django.security.DisallowedHost", "celery.task",
                                  "celery.app.trace", "deliveries.webhooks", "accounts.views"])
def test_every_logger_writes_through_the_masking_formatter(name):
    """Django's request logger, runserver's, Celery's (whose worker gives `celery.task` a handler of its
    own unless one is configured) and ours end in handlers that format with ContextFormatter."""
    logger, handlers = logging.getLogger(name), []
    while logger is not None:
        handlers += [h for h in logger.handlers
                     if not isinstance(h, logging.NullHandler) and not type(h).__module__.startswith("_pytest")]
        logger = logger.parent if logger.propagate else None
    assert handlers and all(isinstance(h.formatter, ContextFormatter) for h in handlers), handlers


# --- real processes -------------------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_gunicorn_access_and_error_logs_hold_no_token(gunicorn):
    route = ProviderRoute.objects.create(account=gunicorn.account, provider="smsc", credentials={"login": "a",
                                                                                               "password": "b"})
    server = gunicorn.start(WEB_ACCESS_LOG=str(gunicorn.tmp / "access.log"))
    requests = [
        f"POST /webhooks/smsc/{route.callback_token}/ HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: 16\r\n\r\nid=1%00&status=1",  # a 400 from the view
        f"POST /webhooks/twilio/{TOKEN}/ HTTP/1.1\r\nContent-Length: 0\r\n\r\n",  # a 404
        f"GET /webhooks/smsc%2F{TOKEN}/ HTTP/1.1\r\n\r\n",
        "GET /amocrm/oauth?code=def50200codeSECRET&referer=acme.evil.com&state=stateSECRET HTTP/1.1\r\n\r\n",
        "GET /amocrm/uninstall?account_id=1&client_uuid=x&signature=sigSECRET HTTP/1.1\r\n\r\n",
        f"GET /api/v1/account/?token=tokSECRET HTTP/1.1\r\nReferer: https://x/webhooks/smsc/{TOKEN}/\r\n"
        f"X-Auth-Token: {JWT}\r\n\r\n",
    ]
    for raw in requests:
        status = server.raw_request(raw.replace("HTTP/1.1\r\n", "HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n",
                                                1).encode())
        assert status.startswith(b"HTTP/1.1 4"), (raw, status)
    server.stop()
    access = (gunicorn.tmp / "access.log").read_text()
    errors = server.log()
    assert access.count("\n") >= len(requests), access
    assert f"/webhooks/smsc/***" in access and "code=***" in access and "signature=***" in access
    for text in (access, errors):
        assert route.callback_token not in text and TOKEN not in text and "SECRET" not in text, text
        assert JWT.split(".")[2] not in text
    assert "Bad Request: /webhooks/smsc/***" in errors  # Django's request logger, in the same output


@pytest.mark.e2e
def test_a_celery_worker_logs_no_token(gunicorn):
    """An unregistered task makes the worker log the whole message body (ERROR, Celery's own logger)."""
    worker = gunicorn.start_worker()
    gunicorn.send_task("tests.no_such_task", [f"https://gate.example.com/webhooks/smsc/{TOKEN}/?code=codeSECRET"])
    deadline = time.monotonic() + 30
    while "no_such_task" not in worker.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    worker.stop()
    log = worker.log()
    assert "no_such_task" in log, log
    assert "/webhooks/smsc/***" in log
    assert TOKEN not in log and "SECRET" not in log, log
