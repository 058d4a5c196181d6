"""Bodies are bounded whatever their encoding (issue 13, item 6).

Django trusts CONTENT_LENGTH and ignores a chunked body (a request without CONTENT_LENGTH reads as
empty), leaves file parts out of DATA_UPLOAD_MAX_MEMORY_SIZE, and DRF reads the stream unbounded. So
the limit sits in front of Django, in the WSGI application (smsgate/bodylimit.py): a declared length
over SMSGATE_MAX_BODY_BYTES is a 413 before a byte of the body is read, a chunked body is read up to
the limit and handed to Django as an ordinary one, or refused. Over real HTTP (gunicorn, e2e) and in
process through smsgate.wsgi.application; Django's test client (which does not go through
wsgi.py) for what Django itself refuses behind it."""

import io
import json
import time
from wsgiref.util import setup_testing_defaults

import pytest
from django.core import signals
from django.db import close_old_connections
from django.utils import translation
from django.utils.translation import gettext

from routes.models import ProviderRoute
from deliveries.models import Delivery, StatusEvent, UnmatchedReport

LIMIT = 256 * 1024
SMS = "/amocrm/sms"


def assert_too_large(status: str, headers: dict, body: bytes, language="ru"):
    assert status.startswith("413"), (status, body[:200])
    assert headers["content-type"].startswith("application/json")
    assert headers["connection"] == "close"
    payload = json.loads(body)
    assert payload["code"] == "body_too_large"
    with translation.override(language):  # Russian by default (LANGUAGE_CODE), English when asked
        assert payload["detail"] == gettext("The request body is too large.")


# --- in process, through smsgate.wsgi.application ---------------------------------------------------------------
class NeverRead(io.RawIOBase):
    """A request body that fails the test if anyone reads it."""

    def readable(self):
        return True

    def read(self, size=-1):
        raise AssertionError("the body was read")

    readinto = read


class Counted(io.BytesIO):
    def __init__(self, data):
        super().__init__(data)
        self.taken = 0

    def read(self, size=-1):
        data = super().read(size)
        self.taken += len(data)
        return data


@pytest.fixture
def wsgi(settings):
    """Call the deployed WSGI application (smsgate/wsgi.py), as gunicorn does, in this process."""
    from smsgate.wsgi import application

    settings.ALLOWED_HOSTS = ["testserver"]
    # As Django's test client does: in-process requests must not close the test's database connection.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)

    def call(method, path, *, body=b"", stream=None, headers=None, chunked=False, content_length=None):
        environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "SERVER_NAME": "testserver", "HTTP_HOST": "testserver",
                   "wsgi.input": stream if stream is not None else io.BytesIO(body)}
        setup_testing_defaults(environ)
        if chunked:
            environ["HTTP_TRANSFER_ENCODING"] = "chunked"
        else:
            environ["CONTENT_LENGTH"] = str(len(body) if content_length is None else content_length)
        environ.update(headers or {})
        answer = {}

        def start_response(status, response_headers, exc_info=None):
            answer["status"], answer["headers"] = status, {k.lower(): v for k, v in response_headers}

        result = application(environ, start_response)
        try:
            content = b"".join(result)
        finally:
            getattr(result, "close", lambda: None)()
        return answer["status"], answer["headers"], content

    yield call
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.mark.django_db
@pytest.mark.parametrize("path", [SMS, "/api/v1/routes/", "/webhooks/smsc/abcdefgh12345678/", "/amocrm/uninstall"])
def test_a_declared_length_over_the_limit_is_a_413_before_the_body_is_read(wsgi, path):
    status, headers, body = wsgi("POST", path, stream=NeverRead(), content_length=LIMIT + 1,
                                 headers={"CONTENT_TYPE": "application/json"})
    assert_too_large(status, headers, body)


@pytest.mark.django_db
def test_the_413_speaks_the_requests_language(wsgi):
    status, headers, body = wsgi("POST", SMS, stream=NeverRead(), content_length=30 << 20,
                                 headers={"HTTP_ACCEPT_LANGUAGE": "en"})
    assert_too_large(status, headers, body, language="en")


@pytest.mark.django_db
def test_a_chunked_body_over_the_limit_is_read_no_further_than_the_limit(wsgi):
    stream = Counted(b"x" * (10 << 20))
    status, headers, body = wsgi("POST", SMS, stream=stream, chunked=True,
                                 headers={"CONTENT_TYPE": "application/x-www-form-urlencoded"})
    assert_too_large(status, headers, body)
    assert stream.taken == LIMIT + 1


@pytest.mark.django_db
def test_a_chunked_body_within_the_limit_reaches_django(wsgi, make_token, smsru_route):
    smsru_route()
    form = f"phone=%2B79123456789&text=Code+1234&token={make_token()}".encode()
    status, _headers, body = wsgi("POST", SMS, body=form, chunked=True,
                                  headers={"CONTENT_TYPE": "application/x-www-form-urlencoded"})
    assert status.startswith("200"), body
    assert Delivery.objects.get().phone == "+79123456789"


@pytest.mark.django_db
def test_the_limit_is_a_setting(wsgi, settings):
    settings.SMSGATE_MAX_BODY_BYTES = 1000
    status, headers, body = wsgi("POST", SMS, body=b"x" * 1001, headers={"CONTENT_TYPE": "text/plain"})
    assert_too_large(status, headers, body)
    status, _headers, _body = wsgi("POST", SMS, body=b"x" * 1000, headers={"CONTENT_TYPE": "text/plain"})
    assert status.startswith("401")  # read, and refused for its missing token


@pytest.mark.django_db
def test_a_content_length_that_is_not_digits_is_a_400(wsgi):
    for value in ("abc", "-1", "1e9", "١٠"):
        status, headers, body = wsgi("POST", SMS, stream=NeverRead(), headers={"CONTENT_LENGTH": value})
        assert status.startswith("400") and json.loads(body)["code"] == "bad_body", value


@pytest.mark.django_db
def test_the_admin_keeps_djangos_own_handling(wsgi):
    status, headers, body = wsgi("POST", "/admin/login/", body=b"x" * (LIMIT + 10),
                                 headers={"CONTENT_TYPE": "application/x-www-form-urlencoded"})
    assert not status.startswith("413") and not headers["content-type"].startswith("application/json")


# --- behind the limit: what Django refuses itself (Django's test client, no WSGI middleware) ----------------------
@pytest.mark.django_db
def test_a_multipart_file_part_is_a_400_and_no_delivery(client, make_token, smsru_route):
    smsru_route()
    response = client.post(SMS, {"phone": "+79123456789", "text": "Код 1234", "token": make_token(),
                                 "file": io.BytesIO(b"x" * 1000)})
    assert response.status_code == 400 and response.json()["code"] == "bad_body"
    assert not Delivery.objects.exists()


@pytest.mark.django_db
def test_a_multipart_file_part_in_a_delivery_report_is_a_400(client, account):
    route = ProviderRoute.objects.create(account=account, provider="smsc", credentials={"login": "a", "password": "b"})
    response = client.post(f"/webhooks/smsc/{route.callback_token}/",
                           {"id": "1", "status": "1", "file": io.BytesIO(b"x" * 1000)})
    assert response.status_code == 400 and response.json()["code"] == "bad_report"
    assert not StatusEvent.objects.exists() and not UnmatchedReport.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("content_type, body", [
    ("application/json", json.dumps({"phone": "+79123456789", "text": "x" * (10 << 20), "token": "t"})),
    ("application/x-www-form-urlencoded", "phone=%2B79123456789&token=t&text=" + "x" * (10 << 20)),
])
def test_a_10mb_body_that_reaches_django_is_the_json_413(client, integration, content_type, body):
    response = client.post(SMS, body, content_type=content_type)
    assert response.status_code == 413
    assert response.json()["code"] == "body_too_large"
    assert not Delivery.objects.exists()


# --- over real HTTP: gunicorn -----------------------------------------------------------------------------------
def parse_response(raw: bytes) -> tuple[str, dict, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0].split(" ", 1)[1], headers, body


def read_response(sock) -> bytes:
    from tests.security.conftest import read_until_closed

    return read_until_closed(sock)


@pytest.mark.e2e
@pytest.mark.parametrize("path, content_type", [(SMS, "multipart/form-data; boundary=x"),
                                                ("/api/v1/routes/", "application/json"),
                                                ("/webhooks/smsc/abcdefgh12345678/", "application/json")])
def test_http_a_30mb_content_length_is_answered_413_at_once_and_the_connection_closed(gunicorn, path, content_type):
    server = gunicorn.start()
    with server.connect() as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
                     f"Content-Length: {30 << 20}\r\n\r\n".encode() + b"x" * 1024)
        started = time.monotonic()
        raw = read_response(sock)  # the server closes: it does not wait for the other 30 MB
        elapsed = time.monotonic() - started
    status, headers, body = parse_response(raw)
    assert_too_large(status, headers, body)
    assert elapsed < 5, elapsed
    assert not Delivery.objects.exists()


def chunked(data: bytes, size: int = 16384) -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + size]), data[i:i + size]) for i in range(0, len(data), size))
    return out + b"0\r\n\r\n"


@pytest.mark.e2e
def test_http_a_chunked_body_over_the_limit_is_a_413_without_waiting_for_its_end(gunicorn):
    server = gunicorn.start()
    with server.connect() as sock:
        sock.sendall(b"POST /amocrm/sms HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n\r\n")
        sock.sendall(chunked(b"phone=1&text=" + b"x" * (LIMIT + 100))[:-5])  # the body never ends
        status, headers, body = parse_response(read_response(sock))
    assert_too_large(status, headers, body)
    assert not Delivery.objects.exists()


@pytest.mark.e2e
def test_http_chunked_bodies_within_the_limit_reach_the_sms_endpoint_and_the_api(gunicorn):
    from accounts.tokens import issue_token

    account = gunicorn.account
    ProviderRoute.objects.create(account=account, provider="console", priority=1)
    server = gunicorn.start()

    def token():
        return issue_token(integration=account.integration, account_id=account.amo_id, subdomain="acme",
                           is_admin=True)

    form = f"phone=%2B79123456789&text=Code+1234&token={token()}".encode()
    raw = server.raw_request(b"POST /amocrm/sms HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                             b"Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n"
                             + chunked(form, 7))
    status, _headers, body = parse_response(raw)
    assert status.startswith("200"), body
    assert Delivery.objects.get().phone == "+79123456789"

    route = json.dumps({"provider": "smsru", "sender": "ACME", "credentials": {"api_id": "k"}}).encode()
    raw = server.raw_request(b"POST /api/v1/routes/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                             b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                             b"X-Auth-Token: " + token().encode() + b"\r\n\r\n" + chunked(route, 5))
    status, _headers, body = parse_response(raw)
    assert status.startswith("201"), body
    assert ProviderRoute.objects.filter(sender="ACME").exists()


@pytest.mark.e2e
def test_http_a_10mb_multipart_file_part_is_refused_and_sends_nothing(gunicorn):
    from accounts.tokens import issue_token

    account = gunicorn.account
    ProviderRoute.objects.create(account=account, provider="console", priority=1)
    server = gunicorn.start()
    token = issue_token(integration=account.integration, account_id=account.amo_id, subdomain="acme")
    parts = [(b'name="phone"', b"+79123456789"), (b'name="text"', b"Code 1234"), (b'name="token"', token.encode())]
    body = b"".join(b"--x\r\nContent-Disposition: form-data; " + name + b"\r\n\r\n" + value + b"\r\n"
                    for name, value in parts)
    file_part = b'--x\r\nContent-Disposition: form-data; name="f"; filename="a"\r\n\r\n'
    small = body + file_part + b"y" * 1000 + b"\r\n--x--\r\n"
    big = body + file_part + b"y" * (10 << 20)
    for payload, expected in ((small, ("400", "bad_body")), (big, ("413", "body_too_large"))):
        with server.connect() as sock:
            sock.sendall(b"POST /amocrm/sms HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                         b"Content-Type: multipart/form-data; boundary=x\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(payload))
            try:
                sock.sendall(payload)
            except OSError:
                pass  # the server answered and closed before taking 10 MB
            status, _headers, answer = parse_response(read_response(sock))
        assert (status[:3], json.loads(answer)["code"]) == expected
    assert not Delivery.objects.exists()
