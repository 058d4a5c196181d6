"""The HTTP seam's clients: one per thread (no pool shared by many sending threads), reused within
a thread, and kept apart by read timeout. Real HTTP to a local fake."""

import threading

from routes.providers.http import default_client
from tests.fakes.smsru import FakeSmsRu


def test_a_thread_reuses_its_client_and_its_connection():
    with FakeSmsRu() as fake:
        client = default_client(5.0)
        assert default_client(5.0) is client
        assert default_client(7.0) is not client  # another read timeout, another client
        for _ in range(3):
            assert client.request("GET", f"{fake.url}/my/balance", params={"api_id": "x", "json": 1}).status_code == 200
        # Three requests, one keep-alive connection: the fake saw one client port.
        assert len({r.client_port for r in fake.requests_to("/my/balance")}) == 1


def test_each_thread_has_its_own_client():
    mine = default_client(5.0)
    theirs = []
    worker = threading.Thread(target=lambda: theirs.append(default_client(5.0)))
    worker.start()
    worker.join()
    assert theirs[0] is not mine and default_client(5.0) is mine


def test_a_read_timeout_is_ambiguous_and_a_refused_connection_is_not():
    """After a timeout the provider may have acted on the request; a refused connection sent nothing."""
    import socket

    import pytest

    from routes.providers.base import ErrorClass, ProviderTemporaryError

    with FakeSmsRu(latency=1.0) as fake:
        with pytest.raises(ProviderTemporaryError) as timed_out:
            default_client(0.2).request("POST", f"{fake.url}/sms/send", data={"api_id": "x", "to": "79123456789",
                                                                                 "msg": "Код", "json": 1})
    assert (timed_out.value.code, timed_out.value.error_class, timed_out.value.ambiguous) == (
        "timeout", ErrorClass.TIMEOUT, True)

    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(ProviderTemporaryError) as refused:
        default_client(0.2).request("GET", f"http://127.0.0.1:{port}/my/balance")
    assert (refused.value.code, refused.value.error_class, refused.value.ambiguous) == (
        "connect", ErrorClass.TRANSPORT, False)


def test_a_request_carries_its_form_query_and_answer_as_the_adapters_expect():
    with FakeSmsRu() as fake:
        response = default_client(5.0).request("POST", f"{fake.url}/sms/send", params={"json": 1},
                                               data={"api_id": "test-api-id", "to": "79123456789", "msg": "Код: 1"})
        assert response.status_code == 200 and response.headers.get("content-type", "").startswith("application/json")
        assert response.json()["status"] == "OK" and '"status"' in response.text
        [request] = fake.requests_to("/sms/send")
        assert request.value("msg") == "Код: 1" and request.value("json") == "1"


def test_a_provider_whose_certificate_does_not_verify_gets_nothing(tmp_path):
    """TLS is verified (a self-signed certificate is refused) and the request never leaves."""
    import datetime
    import http.server
    import ipaddress
    import ssl

    import pytest
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from routes.providers.base import ErrorClass, ProviderTemporaryError

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(hours=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    requests_seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            requests_seen.append(self.path)
            self.send_response(200)
            self.end_headers()

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(ProviderTemporaryError) as refused:
            default_client(2.0).request("POST", f"https://127.0.0.1:{server.server_port}/sms/send", data={"msg": "x"})
    finally:
        server.shutdown()
        server.server_close()
    assert (refused.value.code, refused.value.error_class, refused.value.ambiguous) == (
        "connect", ErrorClass.TRANSPORT, False)
    assert requests_seen == []
