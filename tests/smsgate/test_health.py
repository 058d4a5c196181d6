import pytest

from deliveries.models import DeliveryStatus
from deliveries.services.intake import delivery_create

pytestmark = pytest.mark.django_db


def test_healthz_touches_nothing(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_reports_database_and_broker(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "database": "ok", "broker": "ok"}


def test_readyz_is_503_when_the_broker_is_unreachable(client):
    from smsgate.celery import app

    previous = app.conf.broker_url
    app.conf.broker_url = "redis://127.0.0.1:1/0"
    try:
        response = client.get("/readyz")
    finally:
        app.conf.broker_url = previous
    assert response.status_code == 503
    assert response.json()["broker"] == "unreachable" and response.json()["database"] == "ok"


def test_metrics_need_a_token_or_an_allowed_address(client, settings):
    settings.SMSGATE_METRICS_ALLOWED_IPS = ["10.0.0.0/8"]
    settings.SMSGATE_METRICS_TOKEN = "scrape-token"
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200


def test_metrics_behind_the_proxy_judge_the_address_it_forwards_for(client, settings):
    settings.SMSGATE_METRICS_ALLOWED_IPS = ["10.0.0.0/8"]
    settings.SMSGATE_TRUSTED_PROXIES = ["127.0.0.1", "::1"]
    # The Procfile's HAProxy on this host: its own address is not the client's.
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="10.1.2.3").status_code == 200
    # Only the entry the trusted proxy added counts, not what the client wrote before it.
    assert client.get("/metrics", REMOTE_ADDR="::1",
                      HTTP_X_FORWARDED_FOR="10.1.2.3, 203.0.113.9").status_code == 403
    # A client that is no trusted proxy cannot name another address.
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR="10.1.2.3").status_code == 403
    for forged in ("not-an-address", "١٠.1.2.3", "10.1.2.3.4", "", " , "):
        assert client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=forged).status_code == 403


def test_metrics_count_requests_and_deliveries(client, account, settings):
    from routes.models import ProviderRoute
    from deliveries.services.dispatch import delivery_send

    ProviderRoute.objects.create(account=account, provider="console")
    client.get("/healthz")
    delivery = delivery_create(account=account, phone="+79123456789", text="x").delivery
    delivery_send(delivery_id=delivery.pk)
    body = client.get("/metrics").content.decode()
    assert 'smsgate_http_requests_total{status="200",view="healthz"}' in body
    assert 'smsgate_delivery_status_total{provider="console",status="sent"}' in body
    assert 'smsgate_provider_latency_seconds_count{outcome="ok",provider="console"}' in body
    assert 'smsgate_queue_latency_seconds_count{kind="system"}' in body
    assert delivery.__class__.objects.get().status == DeliveryStatus.SENT


def test_undecryptable_secrets_answer_503_not_500(client, integration, make_token, settings):
    from cryptography.fernet import Fernet

    from accounts.selectors import clear_integration_cache

    settings.SMSGATE_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]  # not the key the secret was stored with
    clear_integration_cache()
    response = client.post("/amocrm/sms", {"phone": "+79123456789", "text": "x", "token": make_token()})
    assert response.status_code == 503 and response.json()["code"] == "unavailable"
