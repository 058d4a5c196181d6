"""Install lifecycle over real HTTP to a fake amoCRM: the OAuth redirect URI, token refresh, the
uninstall hook, and what a disabled account then gets from the SMS endpoint."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from accounts import services
from accounts.models import Account, AmoToken
from accounts.amocrm import amo_token_refresh
from accounts.services import uninstall_signature
from accounts.tasks import amo_tokens_refresh
from tests.conftest import REDIRECT_URI, SECRET
from tests.fakes.amocrm import FakeAmoCRM

OAUTH = "/amocrm/oauth"
UNINSTALL = "/amocrm/uninstall"


@pytest.fixture
def amocrm(settings, integration):
    with FakeAmoCRM(client_id=str(integration.client_uuid), client_secret=SECRET, redirect_uri=REDIRECT_URI) as fake:
        settings.AMO_BASE_URL = fake.url
        yield fake


def install(client, amocrm, integration, *, account_id=12345, referer="acme.amocrm.ru", **params):
    code = amocrm.issue_code(account_id=account_id)
    query = {"code": code, "referer": referer, "from_widget": "1", "client_id": str(integration.client_uuid),
             "platform": "1", **params}
    return client.get(OAUTH, {k: v for k, v in query.items() if v is not None})


def raw_column(table, column, pk):
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE id = %s", [pk])
        return cursor.fetchone()[0]


# --- the redirect URI -------------------------------------------------------------------------------
@pytest.mark.django_db
def test_install_exchanges_the_code_and_stores_tokens_encrypted(client, amocrm, integration):
    response = install(client, amocrm, integration)
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "installed"
    account = Account.objects.get(integration=integration, amo_id=12345)
    assert (account.subdomain, account.domain, account.is_active) == ("acme", "amocrm.ru", True)
    token = account.amo_token
    [live_refresh] = amocrm.live_refresh_tokens(12345)
    assert token.refresh_token == live_refresh
    assert token.access_token in amocrm.access_tokens
    assert token.api_domain == "api-b.amocrm.ru"
    assert abs((token.expires_at - timezone.now()) - timedelta(days=1)) < timedelta(minutes=1)
    # At rest both tokens are ciphertext.
    for column, plain in (("access_token", token.access_token), ("refresh_token", token.refresh_token)):
        stored = raw_column("accounts_amotoken", column, token.pk)
        assert plain not in stored and plain[:20] not in stored
    [exchange] = amocrm.requests_to("/oauth2/access_token")
    body = exchange.json()
    assert body["grant_type"] == "authorization_code" and body["redirect_uri"] == REDIRECT_URI
    assert body["client_id"] == str(integration.client_uuid) and body["client_secret"] == SECRET


@pytest.mark.django_db
def test_install_without_client_id_uses_the_only_integration(client, amocrm, integration):
    assert install(client, amocrm, integration, client_id=None).status_code == 200
    assert Account.objects.filter(amo_id=12345).exists()


@pytest.mark.django_db
def test_opaque_access_token_reads_the_account_id_from_the_api(client, amocrm, integration):
    amocrm.opaque_access_tokens = True
    assert install(client, amocrm, integration, account_id=777).status_code == 200
    assert Account.objects.filter(amo_id=777, subdomain="acme").exists()
    assert len(amocrm.requests_to("/api/v4/account")) == 1


@pytest.mark.django_db
@pytest.mark.parametrize("referer", [
    None, "", "evil.example.com", "acme.amocrm.ru.evil.com", "amocrm.ru", "acme.amocrm.ru@evil.com",
    "-acme.amocrm.ru", "acme.kommo.co", "x" * 300,
])
def test_a_referer_that_is_not_an_amocrm_host_is_refused_before_any_call(client, amocrm, integration, referer):
    response = install(client, amocrm, integration, referer=referer)
    assert response.status_code == 400
    assert response.json()["code"] == "bad_referer"
    assert amocrm.requests == [] and not Account.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("referer", ["acme.amocrm.ru", "acme.amocrm.com", "acme.kommo.com",
                                     "https://acme.kommo.com", "ACME.AMOCRM.RU"])
def test_amocrm_and_kommo_referers_are_accepted(client, amocrm, integration, referer):
    assert install(client, amocrm, integration, referer=referer).status_code == 200
    assert Account.objects.get(amo_id=12345).host == referer.removeprefix("https://").lower()


@pytest.mark.django_db
def test_bad_inputs_get_a_clear_4xx(client, amocrm, integration):
    no_code = client.get(OAUTH, {"referer": "acme.amocrm.ru"})
    assert no_code.status_code == 400 and no_code.json()["code"] == "bad_code"
    unknown = install(client, amocrm, integration, client_id="not-a-uuid")
    assert unknown.status_code == 400 and unknown.json()["code"] == "unknown_integration"
    other = install(client, amocrm, integration, client_id="3f0c8f0e-0000-4000-8000-000000000000")
    assert other.status_code == 400 and other.json()["code"] == "unknown_integration"
    denied = client.get(OAUTH, {"error": "access_denied", "state": "x"})
    assert denied.status_code == 400 and denied.json()["code"] == "access_denied"
    assert client.post(OAUTH).status_code == 405
    assert not Account.objects.exists()


@pytest.mark.django_db
def test_a_used_or_expired_code_is_refused(client, amocrm, integration):
    code = amocrm.issue_code(account_id=12345)
    params = {"code": code, "referer": "acme.amocrm.ru", "client_id": str(integration.client_uuid)}
    assert client.get(OAUTH, params).status_code == 200
    again = client.get(OAUTH, params)
    assert again.status_code == 400 and again.json()["code"] == "code_refused"
    old = amocrm.issue_code(account_id=999, age=21 * 60)
    expired = client.get(OAUTH, {**params, "code": old})
    assert expired.status_code == 400 and expired.json()["code"] == "code_refused"


@pytest.mark.django_db
@pytest.mark.parametrize("failure", [500, 502, "drop"])
def test_amocrm_down_answers_502_quickly_not_500(client, amocrm, integration, failure):
    amocrm.fail_with = failure
    started = time.monotonic()
    response = install(client, amocrm, integration)
    assert response.status_code == 502 and response.json()["code"] == "amocrm_unavailable"
    assert time.monotonic() - started < 3.0  # amoCRM gives the redirect URI 3 seconds
    assert not Account.objects.exists()


@pytest.mark.django_db
def test_the_answer_is_translated(client, amocrm, integration):
    response = client.get(OAUTH, {"referer": "evil.com", "code": "x"}, HTTP_ACCEPT_LANGUAGE="en")
    assert "not an amoCRM or Kommo account address" in response.json()["detail"]
    response = client.get(OAUTH, {"referer": "evil.com", "code": "x"}, HTTP_ACCEPT_LANGUAGE="ru")
    assert "amoCRM" in response.json()["detail"] and "address" not in response.json()["detail"]


# --- refresh ---------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_refresh_stores_the_new_pair_and_the_old_refresh_token_dies(client, amocrm, integration):
    install(client, amocrm, integration)
    account = Account.objects.get(amo_id=12345)
    old = AmoToken.objects.get(account=account)
    assert amo_token_refresh(account_id=account.pk) is True
    new = AmoToken.objects.get(account=account)
    assert new.refresh_token != old.refresh_token and new.access_token != old.access_token
    assert amocrm.live_refresh_tokens(12345) == [new.refresh_token]
    assert new.refreshed_at is not None and new.refresh_lease == "" and new.last_error == ""
    # Spending the old refresh token again is refused by amoCRM: a pair is single-use.
    AmoToken.objects.filter(pk=new.pk).update(refresh_token=old.refresh_token)
    assert amo_token_refresh(account_id=account.pk) is False
    failed = AmoToken.objects.get(pk=new.pk)
    assert failed.needs_reinstall and "revoked" in failed.last_error
    assert amo_token_refresh(account_id=account.pk) is False  # nothing more is tried
    assert amocrm.refresh_calls == 2


@pytest.mark.django_db
def test_refresh_keeps_the_pair_when_amocrm_is_down(client, amocrm, integration):
    install(client, amocrm, integration)
    account = Account.objects.get(amo_id=12345)
    before = AmoToken.objects.get(account=account)
    amocrm.fail_with = 503
    assert amo_token_refresh(account_id=account.pk) is False
    after = AmoToken.objects.get(account=account)
    assert after.refresh_token == before.refresh_token and not after.needs_reinstall
    assert after.refresh_lease == "" and "HTTP 503" in after.last_error
    amocrm.fail_with = None
    assert amo_token_refresh(account_id=account.pk) is True


@pytest.mark.django_db
def test_a_held_lease_keeps_a_second_worker_from_spending_the_token(client, amocrm, integration):
    install(client, amocrm, integration)
    account = Account.objects.get(amo_id=12345)
    AmoToken.objects.filter(account=account).update(refresh_lease="other", refresh_lease_until=timezone.now()
                                                    + timedelta(seconds=30))
    assert amo_token_refresh(account_id=account.pk) is False
    assert amocrm.refresh_calls == 0
    # An expired lease (its worker died) is taken over.
    AmoToken.objects.filter(account=account).update(refresh_lease_until=timezone.now() - timedelta(seconds=1))
    assert amo_token_refresh(account_id=account.pk) is True


@pytest.mark.django_db(transaction=True)
def test_concurrent_refreshes_spend_the_refresh_token_once(client, amocrm, integration):
    install(client, amocrm, integration)
    account = Account.objects.get(amo_id=12345)
    amocrm.latency = 0.3  # both workers are inside the window at once
    results = []

    def worker():
        try:
            results.append(amo_token_refresh(account_id=account.pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False, False, False, True]
    assert amocrm.refresh_calls == 1
    assert amocrm.live_refresh_tokens(12345) == [AmoToken.objects.get(account=account).refresh_token]


@pytest.mark.django_db
def test_the_beat_task_refreshes_only_pairs_that_expire_soon(client, amocrm, integration, settings):
    settings.AMO_TOKEN_REFRESH_MARGIN = 6 * 3600
    for amo_id, referer in ((1, "one.amocrm.ru"), (2, "two.amocrm.ru")):
        install(client, amocrm, integration, account_id=amo_id, referer=referer)
    soon = AmoToken.objects.get(account__amo_id=1)
    AmoToken.objects.filter(pk=soon.pk).update(expires_at=timezone.now() + timedelta(hours=2))
    assert amo_tokens_refresh() == 1
    assert AmoToken.objects.get(pk=soon.pk).refreshed_at is not None
    assert AmoToken.objects.get(account__amo_id=2).refreshed_at is None
    [call] = amocrm.requests_to("/oauth2/access_token")[-1:]
    assert call.json()["grant_type"] == "refresh_token"


# --- uninstall -----------------------------------------------------------------------------------------
def signed(integration, account_id="12345", *, client_param="client_uuid"):
    client_uuid = str(integration.client_uuid)
    return {"account_id": account_id, client_param: client_uuid,
            "signature": uninstall_signature(client_secret=SECRET, client_uuid=client_uuid, account_id=account_id)}


@pytest.mark.django_db
def test_uninstall_disables_the_account_and_its_sms_get_403(client, amocrm, integration, make_token, smsru_route):
    install(client, amocrm, integration)
    smsru_route()
    response = client.get(UNINSTALL, signed(integration))
    assert response.status_code == 200 and response.json()["status"] == "disabled"
    account = Account.objects.get(amo_id=12345)
    assert not account.is_active and account.disabled_reason == services.UNINSTALLED_REASON
    assert not AmoToken.objects.filter(account=account).exists()
    sms = client.post("/amocrm/sms", {"phone": "+79123456789", "text": "Код 1234", "token": make_token()})
    assert sms.status_code == 403 and sms.json()["code"] == "account_disabled"
    # Repeating the hook is harmless.
    assert client.get(UNINSTALL, signed(integration)).status_code == 200


@pytest.mark.django_db
def test_uninstall_accepts_client_id_as_the_parameter_name(client, account, integration):
    response = client.get(UNINSTALL, signed(integration, client_param="client_id"))
    assert response.status_code == 200
    assert not Account.objects.get(pk=account.pk).is_active


@pytest.mark.django_db
def test_uninstall_with_a_bad_signature_changes_nothing(client, account, integration):
    params = signed(integration)
    for bad in (params["signature"][:-1] + ("0" if params["signature"][-1] != "0" else "1"), "", "zz", "я" * 64,
                uninstall_signature(client_secret="other", client_uuid=str(integration.client_uuid),
                                    account_id="12345")):
        response = client.get(UNINSTALL, {**params, "signature": bad})
        assert response.status_code in (400, 403), bad
    # Signed for another account id: refused too.
    response = client.get(UNINSTALL, {**signed(integration, "999"), "account_id": "12345"})
    assert response.status_code == 403 and response.json()["code"] == "bad_signature"
    assert Account.objects.get(pk=account.pk).is_active


@pytest.mark.django_db
@pytest.mark.parametrize("drop", ["account_id", "client_uuid", "signature"])
def test_uninstall_without_a_parameter_is_400(client, account, integration, drop):
    params = signed(integration)
    del params[drop]
    assert client.get(UNINSTALL, params).status_code == 400


@pytest.mark.django_db
def test_uninstall_of_an_unknown_account_or_integration(client, integration):
    assert client.get(UNINSTALL, signed(integration, "424242")).json()["status"] == "unknown_account"
    bogus = {**signed(integration), "client_uuid": "3f0c8f0e-0000-4000-8000-000000000000"}
    assert client.get(UNINSTALL, bogus).status_code == 400
    assert client.get(UNINSTALL, {**signed(integration), "account_id": "12a"}).status_code == 400


@pytest.mark.django_db
def test_reinstall_enables_an_uninstalled_account_but_not_one_staff_disabled(client, amocrm, integration):
    install(client, amocrm, integration)
    client.get(UNINSTALL, signed(integration))
    assert install(client, amocrm, integration).status_code == 200
    account = Account.objects.get(amo_id=12345)
    assert account.is_active and account.amo_token.refresh_token in amocrm.live_refresh_tokens(12345)
    Account.objects.filter(pk=account.pk).update(is_active=False, disabled_reason="abuse")
    assert install(client, amocrm, integration).status_code == 200
    assert not Account.objects.get(pk=account.pk).is_active
