"""The amoCRM API client over real HTTP to the fake amoCRM (tests/fakes/amocrm): tokens and their refresh,
reads in batches, writes, retries, account refusals recorded on the account, and the 7 requests/s limit,
within a process, without Redis, and across several worker processes."""

import json
import logging
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta

import httpx
import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone

from accounts.amocrm import api, ratelimit
from accounts.amocrm.api import (
    AmoAmbiguous,
    AmoBlocked,
    AmoClient,
    AmoNotConnected,
    AmoPaymentRequired,
    AmoRateLimited,
    AmoRejected,
    AmoTemporary,
    AmoUnauthorized,
)
from accounts.models import Account, AmoApiStatus, AmoToken
from accounts.amocrm import amo_token_refresh
from tests.conftest import REDIRECT_URI, SECRET, service_missing
from tests.fakes.amocrm import FakeAmoCRM

AMO_ID = 12345
ROOT = django_settings.BASE_DIR


@pytest.fixture
def amo(settings, integration):
    with FakeAmoCRM(client_id=str(integration.client_uuid), client_secret=SECRET, redirect_uri=REDIRECT_URI) as fake:
        fake.add_account(AMO_ID, subdomain="acme")
        settings.AMO_BASE_URL = fake.url
        yield fake


def _redis_url(settings) -> str:
    import redis

    url = settings.SMSGATE_REDIS_URL or "redis://127.0.0.1:6379/15"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        client.ping()
    except redis.RedisError as exc:
        service_missing(f"the amoCRM rate limit tests need Redis at {url}: {exc}")
    stale = list(client.scan_iter(ratelimit.KEY_PREFIX + "*"))
    if stale:
        client.delete(*stale)
    return url


@pytest.fixture(autouse=True)
def shared_limiter(settings):
    """Every test counts in Redis, as production does (the fallback has its own test)."""
    settings.SMSGATE_REDIS_URL = _redis_url(settings)
    ratelimit._limiter = None
    yield
    ratelimit._limiter = None


def connect(amo, account, **pair_args) -> AmoToken:
    """The account installed: a token pair of the fake stored for it, as the install stores one."""
    pair = amo.issue_token_pair(account.amo_id, subdomain=account.subdomain, **pair_args)
    return AmoToken.objects.update_or_create(account=account, defaults={
        "access_token": pair["access_token"], "refresh_token": pair["refresh_token"],
        "expires_at": timezone.now() + timedelta(seconds=pair["expires_in"]), "needs_reinstall": False})[0]


@pytest.fixture
def client(amo, account):
    connect(amo, account)
    return AmoClient(account)


def statuses(amo, path=None):
    return [c.status for c in amo.request_log(AMO_ID) if path is None or c.path == path]


def bearer_of(request) -> str:
    return request.headers.get("authorization", "").removeprefix("Bearer ")


# --- reads ------------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_lead_with_its_contacts_and_the_contacts_phones(client, amo):
    contact = amo.add_contact(AMO_ID, name="Иван", phones=[("+79123456789", "MOB")])
    lead = amo.add_lead(AMO_ID, name="Заказ", price=1500, contacts=[contact])
    got = client.lead(lead)
    assert (got["id"], got["name"], got["price"]) == (lead, "Заказ", 1500)
    assert got["_embedded"]["contacts"][0]["id"] == contact and got["_embedded"]["contacts"][0]["is_main"]
    [phone_field] = client.contact(contact)["custom_fields_values"]
    assert phone_field["field_code"] == "PHONE" and phone_field["values"][0]["value"] == "+79123456789"
    assert client.lead(999_999) is None  # amoCRM's 204: nothing to read
    [first, _, _] = amo.request_log(AMO_ID)
    assert (first.method, first.path, first.query) == ("GET", f"/api/v4/leads/{lead}", "with=contacts")


@pytest.mark.django_db
def test_leads_and_contacts_are_read_250_ids_per_request_without_following_next(client, amo):
    leads = amo.add_leads(AMO_ID, 600)
    got = client.leads(leads + leads[:5])  # repeated ids are asked once
    assert sorted(lead["id"] for lead in got) == sorted(leads)
    assert all(lead["_embedded"]["contacts"] for lead in got)
    calls = amo.request_log(AMO_ID)
    # 250 + 250 + 100: three requests, though the full pages link a `next` page (which would answer 204).
    assert [(c.path, c.status) for c in calls] == [("/api/v4/leads", 200)] * 3
    assert [c.query.count("filter[id][]=") for c in calls] == [250, 250, 100]
    assert all("with=contacts" in c.query and "limit=250" in c.query and "page=" not in c.query for c in calls)

    contact_ids = [lead["_embedded"]["contacts"][0]["id"] for lead in got[:260]]
    contacts = client.contacts(contact_ids)
    assert sorted(c["id"] for c in contacts) == sorted(contact_ids)
    assert [c.query.count("filter[id][]=") for c in amo.request_log(AMO_ID)[3:]] == [250, 10]
    assert client.leads([]) == [] and len(amo.request_log(AMO_ID)) == 5


@pytest.mark.django_db
def test_users_user_and_the_account(client, amo):
    manager = amo.add_user(AMO_ID, "Мария", is_admin=False)
    users = client.users()
    assert {u["name"] for u in users} == {"Администратор", "Мария"}
    assert client.user(manager)["name"] == "Мария"
    info = client.account_info(with_=("datetime_settings",))
    assert info["id"] == AMO_ID and info["subdomain"] == "acme"
    assert info["_embedded"]["datetime_settings"]["timezone"] == "Europe/Moscow"


@pytest.mark.django_db
def test_a_list_is_read_page_by_page_until_a_page_is_not_full(client, amo):
    for n in range(4):
        amo.add_user(AMO_ID, f"Менеджер {n}")
    users = client._pages("/api/v4/users", "users", [], limit=2)
    assert len(users) == 5
    # 2 + 2 + 1: the short third page ends it.
    assert [c.query for c in amo.request_log(AMO_ID)] == ["page=1&limit=2", "page=2&limit=2", "page=3&limit=2"]


@pytest.mark.django_db
def test_a_bad_id_is_refused_before_any_call(client, amo):
    for bad in (0, -1, "12", None, True):
        with pytest.raises(ValueError):
            client.lead(bad)
    with pytest.raises(ValueError):
        client.notes("deals")
    assert amo.request_log(AMO_ID) == []


# --- writes -----------------------------------------------------------------------------------------------
def sms_note(lead, request_id, text="Ваш заказ готов", phone="+79123456789"):
    return {"entity_id": lead, "note_type": "sms_out", "request_id": request_id,
            "params": {"text": text, "phone": phone}}


@pytest.mark.django_db
def test_notes_are_added_in_one_request_and_matched_by_request_id(client, amo):
    [one, two] = amo.add_leads(AMO_ID, 2)
    created = client.add_notes("leads", [sms_note(one, "outbox-1"), sms_note(two, "outbox-2", text="Второе")])
    assert set(created) == {"outbox-1", "outbox-2"}
    assert [c.method for c in amo.request_log(AMO_ID)] == ["POST"]
    stored = {n["id"]: n for n in amo.notes(AMO_ID, "leads")}
    assert stored[created["outbox-2"]]["entity_id"] == two
    assert stored[created["outbox-2"]]["params"] == {"text": "Второе", "phone": "+79123456789"}
    # Reading back, as a retry whose first attempt may have landed looks first.
    [note] = client.notes("leads", two, note_type="sms_out")
    assert note["id"] == created["outbox-2"] and note["params"]["text"] == "Второе"
    assert client.notes("leads", two, note_type="common") == []
    assert len(client.notes("leads", note_type=["sms_out", "common"])) == 2


@pytest.mark.django_db
def test_a_note_amocrm_refuses_raises_with_its_validation_errors(client, amo):
    unsorted = amo.add_lead(AMO_ID, unsorted=True)  # no notes on leads in "Неразобранное" (§5a)
    with pytest.raises(AmoRejected) as refused:
        client.add_notes("leads", [sms_note(unsorted, "outbox-9")])
    assert refused.value.status == 400
    [item] = refused.value.validation_errors
    assert item["request_id"] == "outbox-9" and item["errors"][0]["path"] == "entity_id"
    assert statuses(amo) == [400]  # not retried
    with pytest.raises(ValueError):  # every note needs its own request_id
        client.add_notes("leads", [sms_note(unsorted, "a"), sms_note(unsorted, "a")])


@pytest.mark.django_db
def test_tasks_and_salesbot_continue(client, amo):
    lead = amo.add_lead(AMO_ID)
    due = int(time.time()) + 3600
    created = client.add_tasks([{"text": "Перезвонить", "complete_till": due, "entity_type": "leads",
                                 "entity_id": lead, "request_id": "t-1"}])
    [task] = amo.tasks(AMO_ID)
    assert created == {"t-1": task.id} and task.text == "Перезвонить"
    hook = amo.salesbot_request(AMO_ID, entity_id=lead)
    _, bot_id, _, continue_id = hook["return_url"].rsplit("/", 3)
    assert client.salesbot_continue(int(bot_id), int(continue_id), {"status": "sent"}) is None
    [resumed] = amo.salesbot_continues(AMO_ID)
    assert resumed.data == {"status": "sent"} and amo.pending_continues(AMO_ID) == []


# --- tokens -----------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_an_access_token_about_to_expire_is_refreshed_before_the_call(amo, account):
    old = connect(amo, account)
    AmoToken.objects.filter(pk=old.pk).update(expires_at=timezone.now() + timedelta(seconds=30))
    assert AmoClient(account).account_info()["id"] == AMO_ID
    new = AmoToken.objects.get(pk=old.pk)
    assert new.access_token != old.access_token and new.refreshed_at is not None
    assert amo.refresh_calls == 1 and statuses(amo) == [200]  # no 401 first
    assert bearer_of(amo.requests_to("/api/v4/account")[0]) == new.access_token


@pytest.mark.django_db
def test_a_401_refreshes_once_and_retries_once(client, amo, account):
    amo.expire_access_tokens(AMO_ID)
    assert client.lead(amo.add_lead(AMO_ID))["id"]
    assert statuses(amo) == [401, 200] and amo.refresh_calls == 1
    assert AmoToken.objects.get(account=account).access_token in amo.access_tokens


@pytest.mark.django_db
def test_a_401_with_a_fresh_token_is_recorded_not_refreshed_again(client, amo, account):
    amo.fail_next(2, 401)  # the refreshed token is refused too
    with pytest.raises(AmoUnauthorized) as raised:
        client.account_info()
    assert statuses(amo) == [401, 401] and amo.refresh_calls == 1 and str(raised.value.message)
    account.refresh_from_db()
    assert account.amo_api_status == AmoApiStatus.UNAUTHORIZED
    assert AmoClient(account).account_info()["id"] == AMO_ID
    account.refresh_from_db()
    assert account.amo_api_status == AmoApiStatus.OK


@pytest.mark.django_db
def test_a_pair_another_process_refreshed_is_reread_not_refreshed_again(amo, account):
    token = connect(amo, account)
    AmoToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() + timedelta(seconds=30))
    client = AmoClient(account)  # holds the expiring pair
    assert amo_token_refresh(account_id=account.pk) is True  # another worker refreshed it meanwhile
    assert amo.refresh_calls == 1
    client.account_info()
    assert amo.refresh_calls == 1
    assert bearer_of(amo.requests_to("/api/v4/account")[0]) == AmoToken.objects.get(pk=token.pk).access_token


@pytest.mark.django_db(transaction=True)
def test_a_401_while_another_process_holds_the_refresh_lease_waits_for_its_pair(amo, account):
    token = connect(amo, account)
    client = AmoClient(account)
    amo.expire_access_tokens(AMO_ID)
    AmoToken.objects.filter(pk=token.pk).update(refresh_lease="other", refresh_lease_until=timezone.now()
                                                + timedelta(seconds=60))

    def other_worker_finishes():
        time.sleep(0.5)
        pair = amo.issue_token_pair(AMO_ID)
        AmoToken.objects.filter(pk=token.pk).update(access_token=pair["access_token"],
                                                    refresh_token=pair["refresh_token"], refresh_lease="",
                                                    refresh_lease_until=None)

    worker = threading.Thread(target=other_worker_finishes)
    worker.start()
    assert client.account_info()["id"] == AMO_ID
    worker.join()
    assert statuses(amo) == [401, 200] and amo.refresh_calls == 0


@pytest.mark.django_db
def test_a_refused_refresh_means_not_connected(client, amo, account):
    amo.revoke_tokens(AMO_ID)  # an admin disabled the integration in amoCRM
    with pytest.raises(AmoNotConnected) as raised:
        client.account_info()
    assert str(raised.value.message)
    assert AmoToken.objects.get(account=account).needs_reinstall
    account.refresh_from_db()
    assert account.amo_api_status == AmoApiStatus.UNAUTHORIZED and account.amo_api_status_at is not None
    calls = len(amo.request_log(AMO_ID))
    with pytest.raises(AmoNotConnected):
        AmoClient(account)
    assert len(amo.request_log(AMO_ID)) == calls == 1


@pytest.mark.django_db
def test_an_account_without_tokens_is_not_connected(amo, account):
    with pytest.raises(AmoNotConnected):
        AmoClient(account)
    connect(amo, account)
    AmoToken.objects.filter(account=account).update(needs_reinstall=True)
    with pytest.raises(AmoNotConnected):
        AmoClient(account)
    assert amo.request_log(AMO_ID) == [] and amo.refresh_calls == 0


# --- retries ----------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_429_and_5xx_are_retried_with_backoff(client, amo):
    lead = amo.add_lead(AMO_ID)
    amo.fail_next(1, 429)
    amo.fail_next(2, 503)
    started = time.monotonic()
    assert client.lead(lead)["id"] == lead
    assert statuses(amo) == [429, 503, 503, 200]
    # Backoff 0.5, 1, 2 s, each with up to half of it random: 1.75 s at least.
    assert time.monotonic() - started >= 1.75


@pytest.mark.django_db
def test_retries_are_bounded(amo, account):
    connect(amo, account)
    amo.fail_next(3, 500)
    with pytest.raises(AmoTemporary) as raised:
        AmoClient(account, max_attempts=3).account_info()
    assert statuses(amo) == [500, 500, 500] and raised.value.status == 500
    amo.fail_next(2, 429)
    with pytest.raises(AmoRateLimited) as limited:
        AmoClient(account, max_attempts=2).account_info()
    assert limited.value.retry_after and limited.value.retry_after > 0


@pytest.mark.django_db
def test_a_get_without_an_answer_is_retried(client, amo):
    amo.fail_next(1, "drop")
    assert client.account_info()["id"] == AMO_ID
    assert statuses(amo) == [None, 200]


@pytest.mark.django_db
@pytest.mark.parametrize("failure", ["drop", 500, 502, 504])
def test_a_post_that_may_have_landed_is_not_retried(client, amo, failure):
    lead = amo.add_lead(AMO_ID)
    amo.fail_next(1, failure)
    with pytest.raises(AmoAmbiguous) as raised:
        client.add_notes("leads", [sms_note(lead, "outbox-1")])
    assert len(amo.request_log(AMO_ID)) == 1  # one attempt: the outbox looks before writing again
    assert raised.value.method == "POST" and raised.value.path == "/api/v4/leads/notes"
    assert client.notes("leads", lead) == []  # (the fake's injected failures are never processed)


@pytest.mark.django_db
@pytest.mark.parametrize("failure", [429, 503])
def test_a_post_amocrm_did_not_process_is_retried_and_written_once(client, amo, failure):
    lead = amo.add_lead(AMO_ID)
    amo.fail_next(1, failure)
    created = client.add_notes("leads", [sms_note(lead, "outbox-1")])
    assert statuses(amo) == [failure, 200]
    assert [n["id"] for n in amo.notes(AMO_ID, "leads", lead)] == [created["outbox-1"]]


def test_retry_after_in_seconds_or_as_a_date():
    assert api._retry_after(httpx.Response(429, headers={"Retry-After": "3"})) == 3.0
    when = (timezone.now() + timedelta(seconds=20)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert 15 <= api._retry_after(httpx.Response(503, headers={"Retry-After": when})) <= 20
    assert api._retry_after(httpx.Response(503, headers={"Retry-After": "soon"})) is None
    assert api._retry_after(httpx.Response(503)) is None


# --- refusals of the whole account ------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize("state, error, status", [("unpaid", AmoPaymentRequired, AmoApiStatus.UNPAID),
                                                  ("blocked", AmoBlocked, AmoApiStatus.BLOCKED)])
def test_unpaid_and_blocked_are_recorded_not_retried_and_cleared_by_a_success(client, amo, account, state, error,
                                                                             status):
    setattr(amo.account(AMO_ID), state, True)
    with pytest.raises(error) as raised:
        client.account_info()
    assert raised.value.status == (402 if state == "unpaid" else 403) and str(raised.value.message)
    assert len(amo.request_log(AMO_ID)) == 1
    account.refresh_from_db()
    assert account.amo_api_status == status and account.amo_api_status_at is not None
    assert account.amo_api_status_reason == f"HTTP {raised.value.status} on GET /api/v4/account"
    since = account.amo_api_status_at
    with pytest.raises(error):
        AmoClient(account).lead(1)
    account.refresh_from_db()
    assert account.amo_api_status_at == since  # "since": the first refusal

    setattr(amo.account(AMO_ID), state, False)
    AmoClient(Account.objects.get(pk=account.pk)).account_info()  # a new client, as the next task would be
    account.refresh_from_db()
    assert (account.amo_api_status, account.amo_api_status_reason) == (AmoApiStatus.OK, "")


@pytest.mark.django_db
def test_a_403_for_missing_rights_is_not_a_blocked_account(amo, account):
    manager = amo.add_user(AMO_ID, "Мария", is_admin=False)
    connect(amo, account, user_id=manager)
    with pytest.raises(AmoRejected) as raised:
        AmoClient(account).users()  # only an admin may list users: amoCRM's problem JSON, not nginx's page
    assert raised.value.status == 403
    account.refresh_from_db()
    assert account.amo_api_status == AmoApiStatus.OK


# --- logs -------------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_logs_carry_method_path_status_and_latency_never_tokens_or_query_values(client, amo, account, caplog):
    lead = amo.add_lead(AMO_ID)
    amo.expire_access_tokens(AMO_ID)
    with caplog.at_level(logging.DEBUG, logger="accounts"):
        client.leads([lead])
        client.add_notes("leads", [sms_note(lead, "outbox-1", text="Секретный текст")])
    token = AmoToken.objects.get(account=account)
    calls = [r for r in caplog.records if r.getMessage() == "amoCRM API call"]
    assert [(r.method, r.path, r.status) for r in calls] == [
        ("GET", "/api/v4/leads", 401), ("GET", "/api/v4/leads", 200), ("POST", "/api/v4/leads/notes", 200)]
    assert all(r.account_id == account.pk and isinstance(r.latency_ms, int) for r in calls)
    everything = "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    for secret in (token.access_token, token.refresh_token, "Секретный текст", f"filter[id][]={lead}"):
        assert secret not in everything


# --- the rate limit ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["redis", "local"])
def test_the_limiter_reserves_seven_slots_per_window_then_waits(settings, backend):
    if backend == "local":
        settings.SMSGATE_REDIS_URL = ""
    limiter = ratelimit.Limiter(settings.SMSGATE_REDIS_URL)
    waits = [limiter.reserve(424242, rate=7, max_wait=5) for _ in range(15)]
    assert waits[:7] == pytest.approx([0] * 7, abs=0.02)
    # The 8th waits until the 1st leaves the window, the 15th until the 8th does.
    assert waits[7] == pytest.approx(ratelimit.WINDOW, abs=0.05)
    assert waits[14] == pytest.approx(2 * ratelimit.WINDOW, abs=0.05)
    with pytest.raises(ratelimit.SlotTooFar) as too_far:
        limiter.reserve(424242, rate=7, max_wait=1.5)
    assert too_far.value.wait == pytest.approx(2 * ratelimit.WINDOW, abs=0.05)  # and nothing was reserved
    assert limiter.reserve(424243, rate=7, max_wait=0) == 0  # another account counts apart


def test_without_redis_a_process_counts_alone_and_says_so(caplog):
    limiter = ratelimit.Limiter("redis://127.0.0.1:1/0")  # nothing listens there
    with caplog.at_level(logging.WARNING, logger="accounts.amocrm.ratelimit"):
        waits = [limiter.reserve(424244, rate=7, max_wait=5) for _ in range(8)]
    assert waits[:7] == pytest.approx([0] * 7, abs=0.02) and waits[7] == pytest.approx(ratelimit.WINDOW, abs=0.05)
    [warning] = [r for r in caplog.records if "Redis unavailable" in r.getMessage()]  # once, not per call
    assert warning.account_id == 424244


@pytest.mark.django_db
def test_a_slot_too_far_away_raises_rate_limited_without_a_call(client, amo):
    started = time.monotonic()
    for _ in range(14):
        ratelimit.limiter().reserve(client.account.pk, rate=7, max_wait=5)  # another process's burst
    with pytest.raises(AmoRateLimited) as raised:
        AmoClient(client.account, max_wait=0.5).account_info()
    # The free slot is two windows after the burst began, less what has passed since (a loaded machine).
    elapsed = time.monotonic() - started
    assert 2 * ratelimit.WINDOW - elapsed - 0.1 <= raised.value.retry_after <= 2 * ratelimit.WINDOW + 0.1
    assert amo.request_log(AMO_ID) == []


def burst_in_threads(account, *, threads: int, calls: int) -> float:
    errors, started = [], time.monotonic()

    def work():
        try:
            client = AmoClient(account, max_wait=30)
            for _ in range(calls):
                client.account_info()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))
        finally:
            connection.close()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    return time.monotonic() - started


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("backend", ["redis", "local"])
def test_threads_of_one_process_keep_to_seven_per_second(amo, account, settings, backend):
    """Without SMSGATE_REDIS_URL (development) a process counts alone, still by amoCRM's rule."""
    if backend == "local":
        settings.SMSGATE_REDIS_URL = ""
    connect(amo, account)
    elapsed = burst_in_threads(account, threads=4, calls=5)
    print(f"\n{backend}: 20 calls from 4 threads in {elapsed:.2f} s, peak {amo.peak_rps(AMO_ID)}/s, "
          f"429s {amo.refused_429(AMO_ID)}")
    assert amo.refused_429(AMO_ID) == 0 and statuses(amo) == [200] * 20
    assert amo.peak_rps(AMO_ID) == 7  # as fast as allowed, never faster
    assert elapsed >= 2.0  # 20 calls: slots at 0, 1, 2 windows


@pytest.mark.django_db(transaction=True)
def test_the_limit_holds_across_worker_processes(amo, account, settings):
    """3 OS processes, each firing 20 calls at one account as fast as it can: amoCRM (the fake) must see
    no 429 and never more than 7 requests within a second; 60 calls at 7/s take at least 8 s."""
    from tests.e2e.stack import database_url

    connect(amo, account)
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_VERSION"}
    env.update(DJANGO_SETTINGS_MODULE="smsgate.settings", SMSGATE_ENV_FILE="", DEBUG="1", LOG_LEVEL="WARNING",
               DATABASE_URL=database_url(), SMSGATE_REDIS_URL=settings.SMSGATE_REDIS_URL, AMO_BASE_URL=amo.url,
               SECRET_KEY=settings.SECRET_KEY, SMSGATE_ENCRYPTION_KEYS=",".join(settings.SMSGATE_ENCRYPTION_KEYS))
    workers = [subprocess.Popen([sys.executable, "-m", "tests.accounts.amo_burst", str(account.pk), "20"], cwd=ROOT,
                                env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(3)]
    try:
        ready = [worker.stdout.readline().strip() for worker in workers]  # Django is up in each of them
        if ready != ["ready"] * 3:
            for worker in workers:
                worker.kill()
            pytest.fail("a worker did not start: " + " | ".join(w.communicate()[1][-2000:] for w in workers))
        started = time.monotonic()
        for worker in workers:
            worker.stdin.write("go\n")
            worker.stdin.flush()
        outputs = [worker.communicate(timeout=90) for worker in workers]
        elapsed = time.monotonic() - started
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    assert all(w.returncode == 0 for w in workers), [err[-2000:] for _, err in outputs]
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert [r["errors"] for r in reports] == [[], [], []]

    calls = amo.request_log(AMO_ID)
    span = calls[-1].at - calls[0].at
    each = ", ".join(f"{r['elapsed']:.2f} s" for r in reports)
    print(f"\n3 processes x 20 calls: {len(calls)} requests in {elapsed:.2f} s from the start "
          f"({span:.2f} s first to last arrival, {(len(calls) - 1) / span:.2f}/s), peak {amo.peak_rps(AMO_ID)} in "
          f"any 1.0 s, 429s {amo.refused_429(AMO_ID)}, each process {each}, "
          f"longest wait for one call {max(r['longest_call'] for r in reports):.2f} s")
    assert len(calls) == 60 and amo.refused_429(AMO_ID) == 0 and {c.status for c in calls} == {200}
    assert amo.peak_rps(AMO_ID) <= 7
    began = [r["began"] for r in reports]
    assert max(began) - min(began) < 0.5  # the three competed from the first window on
    # 60 calls, at most 7 per second: the 57th to 60th come after 8 windows.
    assert span >= 8.0 and elapsed >= 8.0
