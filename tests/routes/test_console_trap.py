"""No trap in the provider list: `console` (it only logs SMS) is offered only where the deployment
allows it (DEBUG or SMSGATE_ALLOW_CONSOLE_PROVIDER); elsewhere a new console route is refused with a
clear 400 (API) or a form error (admin), and an existing one is flagged in the admin and the API."""

import pytest
from django.urls import reverse

from routes.models import ProviderRoute
from tests.accounts.test_admin import account_url, inline_post
from tests.security.test_hostile_input import assert_json_error
from tests.staff import staff_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def production(settings):
    settings.SMSGATE_ALLOW_CONSOLE_PROVIDER = False


def test_the_catalogue_offers_console_only_where_allowed(api, settings):
    settings.SMSGATE_ALLOW_CONSOLE_PROVIDER = False
    assert "console" not in [p["slug"] for p in api.get("/api/v1/providers/").json()]
    settings.SMSGATE_ALLOW_CONSOLE_PROVIDER = True
    assert "console" in [p["slug"] for p in api.get("/api/v1/providers/").json()]


def test_a_new_console_route_is_a_clear_400(api, account, production):
    body = assert_json_error(api.post("/api/v1/routes/", {"provider": "console"}, HTTP_ACCEPT_LANGUAGE="en"),
                             400, "invalid")
    assert body["errors"]["provider"] == [
        "The console provider does not send SMS (it only writes them to the service's log), so this service does "
        "not offer it. Choose a real SMS provider."]
    ru = assert_json_error(api.post("/api/v1/routes/", {"provider": "console"}, HTTP_ACCEPT_LANGUAGE="ru"), 400)
    assert "не отправляет SMS" in ru["errors"]["provider"][0]
    assert not ProviderRoute.objects.exists()


def test_a_console_route_is_allowed_in_development(api, account, settings):
    settings.SMSGATE_ALLOW_CONSOLE_PROVIDER = True
    response = api.post("/api/v1/routes/", {"provider": "console"})
    assert response.status_code == 201 and response.json()["sends_nothing"] is False


def test_an_existing_console_route_is_flagged_and_still_editable(api, account, production):
    route = ProviderRoute.objects.create(account=account, provider="console", credentials={})
    [listed] = api.get("/api/v1/routes/").json()
    assert listed["sends_nothing"] is True
    # Editing it (e.g. to switch it off) is not refused: only new console routes are.
    response = api.patch(f"/api/v1/routes/{route.pk}/", {"is_active": False})
    assert response.status_code == 200 and response.json()["sends_nothing"] is True


def test_the_admin_flags_a_console_route_and_refuses_a_new_one(account, production):
    superuser, _user = staff_client(username="root", superuser=True)
    route = ProviderRoute.objects.create(account=account, provider="console", credentials={})
    listing = superuser.get(reverse("admin:routes_providerroute_changelist")).content.decode()
    assert "sms-console-trap" in listing and "ничего не отправляет" in listing  # staff's language: Russian
    page = superuser.get(reverse("admin:routes_providerroute_change", args=[route.pk])).content.decode()
    assert "sms-console-trap" in page

    new = {"provider": "console", "priority": "20", "sender": "", "is_active": "on"}
    existing = {"id": route.pk, "provider": "console", "priority": "10", "sender": "", "is_active": "on"}
    response = superuser.post(account_url(account), inline_post(account, [existing, new]))
    assert response.status_code == 200 and "SMSGATE_ALLOW_CONSOLE_PROVIDER" in response.content.decode()
    assert ProviderRoute.objects.count() == 1


def test_the_admin_allows_console_in_development(account, settings):
    settings.SMSGATE_ALLOW_CONSOLE_PROVIDER = True
    superuser, _user = staff_client(username="root", superuser=True)
    route = ProviderRoute.objects.create(account=account, provider="console", credentials={})
    assert "sms-console-trap" not in superuser.get(reverse("admin:routes_providerroute_changelist")).content.decode()
    new = {"provider": "console", "priority": "20", "sender": "", "is_active": "on"}
    existing = {"id": route.pk, "provider": "console", "priority": "10", "sender": "", "is_active": "on"}
    assert superuser.post(account_url(account), inline_post(account, [existing, new])).status_code == 302
    assert ProviderRoute.objects.count() == 2
