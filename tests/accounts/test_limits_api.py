"""The account's abuse limits over the account API (/api/v1/limits/) and their effect on sending. What an
account may not loosen is tested in tests/security/test_limit_ceilings.py."""

import pytest

from accounts.models import AccountCeilings, AccountOwnLimits
from routes.models import ProviderRoute

pytestmark = [pytest.mark.django_db, pytest.mark.guard]
URL = "/api/v1/limits/"


def test_defaults_are_shown_as_ceilings_and_effective(api, settings):
    body = api.get(URL).json()
    assert body["own"]["phone_per_hour"] is None and body["own"]["allowed_countries"] is None
    assert body["ceilings"] == body["effective"]
    assert body["effective"]["phone_cooldown_seconds"] == settings.SMSGATE_LIMIT_PHONE_COOLDOWN
    assert body["effective"]["allowed_countries"] == ["RU"]  # an amocrm.ru account
    assert body["effective"]["allowed_calling_codes"] == []


def test_admin_sets_and_resets_own_limits(api, account, settings):
    AccountCeilings.objects.create(account=account, allowed_countries="RU,KZ,BY")
    response = api.put(URL, {"phone_per_hour": 2, "allowed_countries": ["ru", "KZ"]})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["own"]["phone_per_hour"] == 2 and body["effective"]["phone_per_hour"] == 2
    assert body["ceilings"]["phone_per_hour"] == settings.SMSGATE_LIMIT_PHONE_HOUR
    assert body["effective"]["allowed_countries"] == ["KZ", "RU"]
    assert body["ceilings"]["allowed_countries"] == ["BY", "KZ", "RU"]
    body = api.put(URL, {"phone_per_hour": None}).json()
    assert body["own"]["phone_per_hour"] is None
    assert body["effective"]["phone_per_hour"] == settings.SMSGATE_LIMIT_PHONE_HOUR
    assert body["own"]["allowed_countries"] == ["KZ", "RU"]  # untouched


def test_new_limits_apply_to_the_next_sms(api, account, client, make_token):
    ProviderRoute.objects.create(account=account, provider="console")
    AccountCeilings.objects.create(account=account, phone_cooldown_seconds=0)
    assert api.put(URL, {"phone_per_hour": 1}).status_code == 200
    def post():
        return client.post("/amocrm/sms", {"phone": "+79123456789", "text": "x", "token": make_token()})

    assert post().status_code == 200
    second = post()
    assert second.status_code == 429 and second.json()["code"] == "phone_hourly_cap"


@pytest.mark.parametrize("body", [{"phone_per_hour": -1}, {"phone_per_day": "many"}, {"allowed_countries": ["XX"]},
                                  {"allowed_countries": "RU"}, {"prefix_window_seconds": 0},
                                  {"account_per_day": 10**12}])
def test_invalid_values_get_400(api, body):
    response = api.put(URL, body)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert not AccountOwnLimits.objects.exists()


def test_only_admins_change_limits(viewer_api):
    assert viewer_api.get(URL).status_code == 200
    assert viewer_api.put(URL, {"phone_per_hour": 100}).status_code == 403
    assert not AccountOwnLimits.objects.exists()


def test_one_account_never_sees_or_changes_anothers_limits(api, other_api, account, other_account):
    api.put(URL, {"phone_per_day": 3})
    assert other_api.get(URL).json()["own"]["phone_per_day"] is None
    other_api.put(URL, {"phone_per_day": 7})
    assert AccountOwnLimits.objects.get(account=account).phone_per_day == 3
    assert AccountOwnLimits.objects.get(account=other_account).phone_per_day == 7


def test_test_sms_refused_by_a_limit_answers_429_with_retry_after(api, account):
    route = ProviderRoute.objects.create(account=account, provider="console")
    first = api.post(f"/api/v1/routes/{route.pk}/test-sms/", {"phone": "+79123456789"})
    assert first.status_code == 202
    second = api.post(f"/api/v1/routes/{route.pk}/test-sms/", {"phone": "+79123456789"})
    assert second.status_code == 429 and int(second["Retry-After"]) >= 1
    assert second.json()["code"] == "phone_cooldown" and second.json()["id"]
