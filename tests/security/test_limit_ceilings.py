"""An account cannot lift the deployment's protection (issue 13, item 4).

Reproduced before the fix: an account administrator's `PUT /api/v1/limits/` with
`{"allowed_countries": ["*"]}` and every limit 0 (= no limit) was accepted, and SMS then went out
unthrottled. The operator's ceilings (the deployment defaults, and per-account values staff set in the
admin) are kept apart from the account's own choices; through the API an account may only tighten.
"""

import re

import pytest
from django.urls import reverse

from accounts.models import AccountCeilings, AccountOwnLimits
from routes.models import ProviderRoute
from accounts.limits import forget_limits, limits_for
from deliveries.models import Delivery, DeliveryStatus
from tests.staff import staff_client

pytestmark = [pytest.mark.django_db, pytest.mark.guard]

URL = "/api/v1/limits/"
EVERYTHING_OFF = {"allowed_countries": ["*"], "phone_cooldown_seconds": 0, "phone_per_hour": 0, "phone_per_day": 0,
                  "account_per_hour": 0, "account_per_day": 0, "prefix_distinct_max": 0}
CAPS = ["phone_per_hour", "phone_per_day", "account_per_hour", "account_per_day", "prefix_distinct_max"]


def put(api, body, **headers):
    return api.put(URL, body, **{"HTTP_ACCEPT_LANGUAGE": "en", **headers})


def errors_of(response) -> dict:
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid"
    return body["errors"]


def test_the_reported_put_is_refused_field_by_field(api, settings):
    errors = errors_of(put(api, EVERYTHING_OFF))
    assert set(errors) == {"allowed_countries", "phone_cooldown_seconds", *CAPS}
    assert errors["phone_per_hour"] == [
        f"0 (no limit) is not allowed: the limit set for this account is {settings.SMSGATE_LIMIT_PHONE_HOUR}."]
    assert errors["phone_cooldown_seconds"] == [
        f"At least {settings.SMSGATE_LIMIT_PHONE_COOLDOWN} seconds: the limit set for this account."]
    assert errors["allowed_countries"] == ["Only these countries are allowed for this account: RU."]
    assert not AccountOwnLimits.objects.exists()


def test_after_the_refused_put_the_pumping_run_is_stopped(other_api, other_account, client, make_token):
    """The report's sequence on a kommo.com account (any country by default): the PUT fails, and SMS in
    a row to one number stop at the cooldown."""
    ProviderRoute.objects.create(account=other_account, provider="console")
    assert put(other_api, EVERYTHING_OFF).status_code == 400
    token = lambda: make_token(account_id=55555, iss="https://beta.kommo.com", subdomain="beta")  # noqa: E731
    statuses = [client.post("/amocrm/sms", {"phone": "+4915123456789", "text": "x", "token": token()}).status_code
                for _ in range(8)]
    assert statuses == [200] + [429] * 7
    assert Delivery.objects.exclude(status=DeliveryStatus.REJECTED).count() == 1


@pytest.mark.parametrize("name", CAPS)
def test_a_cap_may_only_be_lowered(api, settings, name):
    ceiling = limits_for(api_account(api)).__dict__[name]
    assert ceiling > 1
    errors = errors_of(put(api, {name: ceiling + 1}))
    assert errors == {name: [f"At most {ceiling}: the limit set for this account."]}
    assert put(api, {name: ceiling}).status_code == 200
    body = put(api, {name: ceiling - 1}).json()
    assert body["own"][name] == body["effective"][name] == ceiling - 1
    assert body["ceilings"][name] == ceiling


def api_account(api):
    from accounts.models import Account

    return Account.objects.get(amo_id=12345)


def test_no_limit_is_allowed_only_under_no_limit(api, account, settings):
    settings.SMSGATE_LIMIT_ACCOUNT_DAY = 0  # the deployment sets no daily cap per account
    forget_limits(account.pk)
    body = put(api, {"account_per_day": 0}).json()
    assert body["effective"]["account_per_day"] == 0
    body = put(api, {"account_per_day": 50}).json()  # any number is tighter than no limit
    assert body["effective"]["account_per_day"] == 50 and body["ceilings"]["account_per_day"] == 0


@pytest.mark.parametrize("name", ["phone_cooldown_seconds", "prefix_window_seconds"])
def test_a_duration_may_only_be_lengthened(api, account, name):
    ceiling = getattr(limits_for(account), name)
    errors = errors_of(put(api, {name: ceiling - 1}))
    assert errors == {name: [f"At least {ceiling} seconds: the limit set for this account."]}
    body = put(api, {name: ceiling + 60}).json()
    assert body["effective"][name] == ceiling + 60
    assert errors_of(put(api, {name: 86_401}))[name]  # the existing maximum still holds


def test_countries_within_the_operators_list(api, account, client, make_token):
    ProviderRoute.objects.create(account=account, provider="console")
    assert "allowed_countries" in errors_of(put(api, {"allowed_countries": ["KZ"]}))
    AccountCeilings.objects.create(account=account, allowed_countries="RU,KZ", phone_cooldown_seconds=0)
    forget_limits(account.pk)
    body = put(api, {"allowed_countries": ["kz"]}).json()
    assert body["ceilings"]["allowed_countries"] == ["KZ", "RU"] and body["effective"]["allowed_countries"] == ["KZ"]
    assert "allowed_countries" in errors_of(put(api, {"allowed_countries": ["*"]}))
    post = lambda phone: client.post("/amocrm/sms", {"phone": phone, "text": "x", "token": make_token()})  # noqa: E731
    assert post("+77710009998").status_code == 200  # Kazakhstan: chosen
    assert post("+79123456789").json()["code"] == "country_not_allowed"  # Russia: allowed, not chosen


def test_any_list_is_within_the_operators_star(other_api):
    body = put(other_api, {"allowed_countries": ["DE", "KZ"]}).json()  # kommo.com: any country
    assert body["ceilings"]["allowed_countries"] == ["*"] and body["effective"]["allowed_countries"] == ["DE", "KZ"]
    assert put(other_api, {"allowed_countries": ["*"]}).status_code == 200


def test_the_ceiling_error_speaks_russian(api, settings):
    response = put(api, {"phone_per_hour": 10_000}, HTTP_ACCEPT_LANGUAGE="ru")
    assert errors_of(response)["phone_per_hour"] == [
        f"Не больше {settings.SMSGATE_LIMIT_PHONE_HOUR}: это предел, установленный для аккаунта."]


def test_the_guard_applies_the_tighter_of_both_even_after_the_ceiling_moved(api, account):
    """A choice stored under a looser ceiling never loosens a ceiling lowered later."""
    assert put(api, {"phone_per_hour": 4, "allowed_countries": ["RU"]}).status_code == 200
    AccountCeilings.objects.create(account=account, phone_per_hour=2, phone_cooldown_seconds=60)
    forget_limits(account.pk)
    effective = limits_for(account)
    assert (effective.phone_per_hour, effective.phone_cooldown_seconds) == (2, 60)
    body = api.get(URL).json()
    assert body["own"]["phone_per_hour"] == 4 and body["effective"]["phone_per_hour"] == 2
    # A stored own value looser than the ceiling (written before this rule) is ignored, not applied.
    AccountOwnLimits.objects.filter(account=account).update(phone_per_hour=0, phone_cooldown_seconds=0,
                                                            allowed_countries="*")
    forget_limits(account.pk)
    effective = limits_for(account)
    assert (effective.phone_per_hour, effective.phone_cooldown_seconds) == (2, 60)
    assert effective.allowed_countries == frozenset({"RU"})


def test_ceilings_cannot_be_written_through_the_api(api, account):
    response = put(api, {"ceilings": {"phone_per_hour": 1000}, "effective": {"phone_per_hour": 1000}})
    assert response.status_code == 200
    assert not AccountCeilings.objects.exists()
    assert response.json()["ceilings"] == api.get(URL).json()["effective"]


def test_the_admin_edits_ceilings_and_shows_the_accounts_own_choices_read_only(api, account):
    put(api, {"phone_per_day": 3})
    staff, _user = staff_client(username="root", superuser=True)
    page = reverse("admin:accounts_account_change", args=[account.pk])
    html = staff.get(page).content.decode()
    assert 'name="limit_ceilings-0-phone_per_day"' not in html  # no ceiling row yet: an empty extra form is hidden
    assert 'name="limit_ceilings-__prefix__-phone_per_day"' in html  # "add another"
    assert 'name="own_limits-0-phone_per_day"' not in html  # read-only
    assert "Собственные лимиты аккаунта (задаются через API аккаунта" in html  # read-only, with the account's value
    assert re.search(r'field-phone_per_day">.*?<div class="readonly">3</div>', html, re.S)
    form = {"integration": account.integration_id, "amo_id": account.amo_id, "subdomain": account.subdomain,
            "domain": account.domain, "is_active": "on", "disabled_reason": "",
            "routes-TOTAL_FORMS": "0", "routes-INITIAL_FORMS": "0", "routes-MIN_NUM_FORMS": "0",
            "routes-MAX_NUM_FORMS": "1000",
            "limit_ceilings-TOTAL_FORMS": "1", "limit_ceilings-INITIAL_FORMS": "0",
            "limit_ceilings-MIN_NUM_FORMS": "0", "limit_ceilings-MAX_NUM_FORMS": "1",
            "limit_ceilings-0-account": account.pk, "limit_ceilings-0-phone_per_day": "2",
            "limit_ceilings-0-allowed_countries": "", "limit_ceilings-0-allowed_calling_codes": "",
            # a forged post for the read-only inline changes nothing
            "own_limits-TOTAL_FORMS": "1", "own_limits-INITIAL_FORMS": "1", "own_limits-MIN_NUM_FORMS": "0",
            "own_limits-MAX_NUM_FORMS": "1", "own_limits-0-id": AccountOwnLimits.objects.get().pk,
            "own_limits-0-account": account.pk, "own_limits-0-phone_per_day": "500"}
    response = staff.post(page, form)
    assert response.status_code == 302, response.content.decode()[-3000:]
    assert AccountCeilings.objects.get(account=account).phone_per_day == 2
    assert AccountOwnLimits.objects.get(account=account).phone_per_day == 3
    assert limits_for(account).phone_per_day == 2  # the tighter: the ceiling now
    html = staff.get(page).content.decode()
    assert 'name="limit_ceilings-0-phone_per_day"' in html and 'name="own_limits-0-phone_per_day"' not in html


def test_staff_without_change_permission_cannot_edit_ceilings(account):
    staff, _user = staff_client("accounts.view_account", "accounts.view_accountceilings", username="viewer")
    html = staff.get(reverse("admin:accounts_account_change", args=[account.pk])).content.decode()
    assert "limit_ceilings-__prefix__-phone_per_day" not in html


# --- the migration: existing rows become the account's own choices, clamped to the defaults ------------
@pytest.mark.django_db(transaction=True)
def test_the_migration_keeps_and_clamps_existing_rows(settings):
    from django.contrib.auth.models import Permission
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before, after = [("accounts", "0001_initial")], [("accounts", "0002_account_limit_ceilings")]
    settings.SMSGATE_LIMIT_PHONE_HOUR, settings.SMSGATE_LIMIT_ACCOUNT_DAY = 5, 0  # 0: no limit by default
    settings.SMSGATE_LIMIT_PHONE_COOLDOWN, settings.SMSGATE_DEFAULT_COUNTRIES = 30, {"amocrm.ru": "RU,KZ",
                                                                                     "kommo.com": "*"}
    granted = Permission.objects.get(codename="change_accountownlimits").pk
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        assert Permission.objects.get(pk=granted).codename == "change_accountlimits"
        old = executor.loader.project_state(before).apps
        integration = old.get_model("accounts", "Integration").objects.create(
            name="w", client_uuid="6f1c2d3e-0000-4000-8000-000000000001", client_secret="s",
            redirect_uri="https://smsgate.example.com/amocrm/oauth")
        accounts = old.get_model("accounts", "Account").objects
        ru = accounts.create(integration=integration, amo_id=1, subdomain="ru", domain="amocrm.ru")
        kommo = accounts.create(integration=integration, amo_id=2, subdomain="ko", domain="kommo.com")
        limits = old.get_model("accounts", "AccountLimits").objects
        limits.create(account=ru, phone_per_hour=0, phone_per_day=3, account_per_day=0, phone_cooldown_seconds=5,
                      prefix_window_seconds=3600, allowed_countries="*")
        limits.create(account=kommo, phone_per_hour=50, phone_cooldown_seconds=0, allowed_countries="DE,KZ")
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(after)
        new = executor.loader.project_state(after).apps
        own = {row.account.subdomain: row for row in new.get_model("accounts", "AccountOwnLimits").objects.all()}
        assert (own["ru"].phone_per_hour, own["ru"].phone_per_day) == (None, 3)  # 0 -> the default; 3 kept
        assert own["ru"].account_per_day == 0  # the default is no limit: kept
        assert (own["ru"].phone_cooldown_seconds, own["ru"].prefix_window_seconds) == (30, 3600)  # at least
        assert own["ru"].allowed_countries == ""  # "*" is outside RU,KZ: the operator's list
        assert (own["ko"].phone_per_hour, own["ko"].phone_cooldown_seconds) == (5, None)  # over: the ceiling
        assert own["ko"].allowed_countries == "DE,KZ"  # kommo.com: any country by default
        assert not new.get_model("accounts", "AccountCeilings").objects.exists()
        # The renamed model's permissions keep their id (and so their grants) under the new codename.
        assert Permission.objects.get(pk=granted).codename == "change_accountownlimits"
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
