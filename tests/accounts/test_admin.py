"""Accounts, routes and integrations in the admin: secrets are write-only everywhere, route
credential inputs come from the provider registry, route tools call the services."""

from datetime import timedelta

import pytest
from django.contrib import admin
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone

from routes.forms import credential_form_field_name, route_form_class
from accounts.models import Account, AmoApiStatus, AmoToken, Integration
from routes.models import ProviderRoute
from deliveries.models import Delivery, DeliveryHourCount, DeliveryKind
from routes.providers import PROVIDERS
from routes.providers.base import CredentialField, Provider
from tests.conftest import SECRET
from tests.staff import queries_touching_deliveries, staff_client

pytestmark = pytest.mark.django_db

ROUTE_SECRET = "route-secret-4f9a2c7e81"


@pytest.fixture
def superuser_and_user():
    return staff_client(username="root", superuser=True)


@pytest.fixture
def superuser(superuser_and_user):
    return superuser_and_user[0]


@pytest.fixture
def route(account):
    return ProviderRoute.objects.create(account=account, provider="smsru", priority=1,
                                        credentials={"api_id": ROUTE_SECRET})


def account_url(account):
    return reverse("admin:accounts_account_change", args=[account.pk])


def inline_post(account, routes, **extra_route_fields):
    """The account change form as the browser posts it, with the routes inline."""
    data = {"integration": account.integration_id, "amo_id": account.amo_id, "subdomain": account.subdomain,
            "domain": account.domain, "is_active": "on", "disabled_reason": "",
            "routes-TOTAL_FORMS": str(len(routes)), "routes-INITIAL_FORMS": str(sum(1 for r in routes if r.get("id"))),
            "routes-MIN_NUM_FORMS": "0", "routes-MAX_NUM_FORMS": "1000",
            "limit_ceilings-TOTAL_FORMS": "0", "limit_ceilings-INITIAL_FORMS": "0",
            "limit_ceilings-MIN_NUM_FORMS": "0", "limit_ceilings-MAX_NUM_FORMS": "1",
            "own_limits-TOTAL_FORMS": "0", "own_limits-INITIAL_FORMS": "0", "own_limits-MIN_NUM_FORMS": "0",
            "own_limits-MAX_NUM_FORMS": "1"}
    for i, route in enumerate(routes):
        for key, value in route.items():
            data[f"routes-{i}-{key}"] = value
        data[f"routes-{i}-account"] = account.pk
    data.update(extra_route_fields)
    return data


def every_admin_page(objects, user) -> list[str]:
    """The list, add, change and history pages of every registered model."""
    request = RequestFactory().get("/admin/")
    request.user = user
    urls = [reverse("admin:index")]
    for model, model_admin in admin.site._registry.items():
        opts = model._meta
        urls.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
        if model_admin.has_add_permission(request):
            urls.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_add"))
        for obj in objects.get(model, []):
            urls.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]))
            urls.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_history", args=[obj.pk]))
    return urls


# --- write-only secrets ------------------------------------------------------------------------------------
def test_no_admin_page_renders_a_stored_secret(superuser_and_user, account, route, integration, settings):
    superuser, user = superuser_and_user
    settings.SMSGATE_DEFAULT_ROUTE = "console"
    from deliveries.services.intake import delivery_create

    delivery = delivery_create(account=account, phone="+79123456789", text="Код: 1").delivery
    objects = {ProviderRoute: [route], Integration: [integration], type(account): [account], Delivery: [delivery]}
    urls = every_admin_page(objects, user) + [
        reverse("admin:deliveries_delivery_dashboard"),
        reverse("admin:routes_providerroute_test_sms", args=[route.pk]),
        reverse("admin:accounts_account_changelist") + "?q=acme",
    ]
    for url in urls:
        response = superuser.get(url)
        assert response.status_code == 200, url
        body = response.content.decode()
        assert ROUTE_SECRET not in body, url
        assert SECRET not in body, url
    # Staff who may only look get the same pages read-only: the secret is not there either.
    viewer, _ = staff_client("accounts.view_account", "routes.view_providerroute", "accounts.view_integration",
                             username="viewer")
    for url in [u for u in urls if "/accounts/" in u and not u.endswith(("/add/", "/test-sms/"))]:
        response = viewer.get(url)
        assert response.status_code == 200, url
        assert ROUTE_SECRET not in response.content.decode() and SECRET not in response.content.decode(), url


def test_route_credentials_are_write_only_and_empty_keeps_them(superuser, account, route):
    body = superuser.get(account_url(account)).content.decode()
    field = f'name="routes-0-{credential_form_field_name("smsru", "api_id")}"'
    assert field in body and 'type="password"' in body
    assert "Leave empty to keep" in body or "оставьте пустым" in body.lower()

    route_data = {"id": route.pk, "provider": "smsru", "priority": "1", "sender": "ACME", "is_active": "on",
                  credential_form_field_name("smsru", "api_id"): ""}
    response = superuser.post(account_url(account), inline_post(account, [route_data]))
    assert response.status_code == 302, response.content.decode()[:2000]
    route.refresh_from_db()
    assert route.credentials == {"api_id": ROUTE_SECRET} and route.sender == "ACME"


def test_new_credentials_replace_the_stored_ones_and_clear_the_broken_mark(superuser, account, route):
    ProviderRoute.objects.filter(pk=route.pk).update(is_broken=True, broken_reason="auth: 200 wrong api_id",
                                                     broken_at=timezone.now())
    body = superuser.get(account_url(account)).content.decode()
    assert "sms-health-broken" in body and "auth: 200 wrong api_id" in body
    route_data = {"id": route.pk, "provider": "smsru", "priority": "1", "sender": "", "is_active": "on",
                  credential_form_field_name("smsru", "api_id"): "brand-new-api-id"}
    response = superuser.post(account_url(account), inline_post(account, [route_data]))
    assert response.status_code == 302
    route.refresh_from_db()
    assert route.credentials == {"api_id": "brand-new-api-id"} and not route.is_broken


def test_a_new_route_needs_its_provider_s_required_credentials(superuser, account):
    route_data = {"provider": "smsru", "priority": "3", "sender": "", "is_active": "on",
                  credential_form_field_name("smsru", "api_id"): ""}
    response = superuser.post(account_url(account), inline_post(account, [route_data]))
    assert response.status_code == 200 and not ProviderRoute.objects.exists()
    route_data[credential_form_field_name("smsru", "api_id")] = "typed-secret-value"
    response = superuser.post(account_url(account), inline_post(account, [route_data]))
    assert response.status_code == 302
    created = ProviderRoute.objects.get()
    assert created.credentials == {"api_id": "typed-secret-value"} and created.priority == 3


def test_a_rejected_form_does_not_echo_the_typed_secret(superuser, account):
    route_data = {"provider": "smsru", "priority": "not a number", "sender": "", "is_active": "on",
                  credential_form_field_name("smsru", "api_id"): "typed-secret-value"}
    response = superuser.post(account_url(account), inline_post(account, [route_data]))
    assert response.status_code == 200 and "typed-secret-value" not in response.content.decode()


def test_route_form_fields_come_from_the_registry():
    class Fancy(Provider):
        slug = "fancy"
        name = "Fancy SMS"
        credential_fields = (
            CredentialField("login", {"ru": "Логин", "en": "Login"}),
            CredentialField("password", {"ru": "Пароль", "en": "Password"}, secret=True),
            CredentialField("region", {"ru": "Регион", "en": "Region"}, required=False),
        )

        def send(self, request):
            raise NotImplementedError

    form_class = route_form_class({**PROVIDERS, "fancy": Fancy})
    for slug, provider in PROVIDERS.items():
        for spec in provider.credential_fields:
            assert credential_form_field_name(slug, spec.name) in form_class.base_fields
    login = form_class.base_fields["cred__fancy__login"]
    password = form_class.base_fields["cred__fancy__password"]
    assert login.widget.input_type == "text" and password.widget.input_type == "password"
    assert "Fancy SMS" in str(login.label)
    form = form_class(data={"provider": "fancy", "priority": 1, "is_active": True, "cred__fancy__login": "me"})
    assert not form.is_valid() and "cred__fancy__password" in form.errors
    assert "cred__fancy__region" not in form.errors
    form = form_class(data={"provider": "fancy", "priority": 1, "is_active": True, "cred__fancy__login": "me",
                            "cred__fancy__password": "pw"})
    assert form.is_valid(), form.errors
    assert form.credentials_entered() == {"login": "me", "password": "pw", "region": ""}


def test_non_secret_credentials_are_shown_for_editing():
    class WithLogin(Provider):
        slug = "withlogin"
        name = "With login"
        credential_fields = (CredentialField("login", {"en": "Login"}),
                             CredentialField("password", {"en": "Password"}, secret=True))

        def send(self, request):
            raise NotImplementedError

    route = ProviderRoute(provider="withlogin", credentials={"login": "shown-login", "password": "hidden-pw"})
    route.pk = 1
    html = str(route_form_class({"withlogin": WithLogin})(instance=route))
    assert "shown-login" in html and "hidden-pw" not in html


def test_integration_secret_is_write_only(superuser, integration):
    url = reverse("admin:accounts_integration_change", args=[integration.pk])
    body = superuser.get(url).content.decode()
    assert 'name="new_client_secret"' in body and SECRET not in body
    data = {"name": "renamed", "client_uuid": str(integration.client_uuid), "redirect_uri": integration.redirect_uri,
            "is_active": "on", "new_client_secret": ""}
    assert superuser.post(url, data).status_code == 302
    integration.refresh_from_db()
    assert integration.name == "renamed" and integration.client_secret == SECRET
    data["new_client_secret"] = "another-secret-" + "x" * 40
    assert superuser.post(url, data).status_code == 302
    integration.refresh_from_db()
    assert integration.client_secret == "another-secret-" + "x" * 40


def test_a_new_integration_needs_a_secret(superuser):
    url = reverse("admin:accounts_integration_add")
    data = {"name": "w", "client_uuid": "6f1b7a52-2c3e-4d8a-9a0e-3c5d0f6a7b99",
            "redirect_uri": "https://smsgate.example.com/amocrm/oauth", "is_active": "on", "new_client_secret": ""}
    assert superuser.post(url, data).status_code == 200 and not Integration.objects.exists()
    data["new_client_secret"] = "s" * 40
    assert superuser.post(url, data).status_code == 302
    assert Integration.objects.get().client_secret == "s" * 40


# --- accounts list --------------------------------------------------------------------------------------
def test_the_accounts_list_shows_the_24h_volume_without_touching_deliveries(superuser, account, route):
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    DeliveryHourCount.objects.create(account=account, hour=hour, count=1234)
    DeliveryHourCount.objects.create(account=account, hour=hour - timedelta(hours=30), count=5)
    with CaptureQueriesContext(connection) as captured:
        body = superuser.get(reverse("admin:accounts_account_changelist")).content.decode()
    assert "1234" in body.replace("\xa0", "").replace(" ", "").replace(",", "")
    assert queries_touching_deliveries(captured) == []
    assert "sms-health-ok" in body


def test_the_accounts_amocrm_api_state_in_the_list_its_filter_and_the_page(superuser, account, other_account):
    """Whether smsgate can call amoCRM for the account: no token pair, ok, or amoCRM's refusal with its time."""
    Account.objects.create(integration=account.integration, amo_id=777, subdomain="gamma")
    for one in (account, other_account):
        AmoToken.objects.create(account=one, access_token="a", refresh_token="r",
                                expires_at=timezone.now() + timedelta(days=1))
    Account.objects.filter(pk=other_account.pk).update(
        amo_api_status=AmoApiStatus.BLOCKED, amo_api_status_at=timezone.now(),
        amo_api_status_reason="HTTP 403 on GET /api/v4/leads")
    changelist = reverse("admin:accounts_account_changelist")

    def page(url):
        return superuser.get(url, HTTP_ACCEPT_LANGUAGE="en").content.decode()

    body = page(changelist)
    rows = {name: body.split(f">{name}<", 1)[1].split("</tr>", 1)[0] for name in ("acme", "beta", "gamma")}
    assert 'sms-health-ok">ok<' in rows["acme"]
    assert 'sms-health-broken">blocked (403)<' in rows["beta"] and "since " in rows["beta"]
    assert "not connected" in rows["gamma"]
    filtered = page(changelist + "?amo_api_status__exact=blocked")
    assert ">beta<" in filtered and ">acme<" not in filtered and ">gamma<" not in filtered
    one = page(account_url(other_account))
    assert "blocked (403)" in one and "HTTP 403 on GET /api/v4/leads" in one
    AmoToken.objects.filter(account=account).update(needs_reinstall=True)
    assert 'sms-health-broken">needs reinstall<' in page(account_url(account))


# --- route tools ------------------------------------------------------------------------------------------
def test_send_a_test_sms_through_one_route(superuser, account, route, django_capture_on_commit_callbacks):
    url = reverse("admin:routes_providerroute_test_sms", args=[route.pk])
    response = superuser.post(url, {"phone": "8 912 345-67-89"})
    delivery = Delivery.objects.get()
    assert response.status_code == 302 and response["Location"].endswith(f"/{delivery.pk}/change/")
    assert (delivery.kind, delivery.route_id, delivery.phone) == (DeliveryKind.TEST, route.pk, "+79123456789")


def test_a_test_sms_to_a_bad_number_is_a_form_error(superuser, route):
    url = reverse("admin:routes_providerroute_test_sms", args=[route.pk])
    response = superuser.post(url, {"phone": "+7 000"})
    assert response.status_code == 200 and "errorlist" in response.content.decode()
    assert not Delivery.objects.exists()


def test_a_test_sms_needs_the_change_permission(route):
    client, _ = staff_client("routes.view_providerroute")
    url = reverse("admin:routes_providerroute_test_sms", args=[route.pk])
    assert client.post(url, {"phone": "+79123456789"}).status_code == 403
    assert not Delivery.objects.exists()


def test_check_balance_calls_the_provider(superuser, account, route, fake_smsru):
    ProviderRoute.objects.filter(pk=route.pk).update(credentials={"api_id": "test-api-id"})
    response = superuser.get(reverse("admin:routes_providerroute_balance", args=[route.pk]), follow=True)
    text = " ".join(str(m) for m in response.context["messages"])
    assert "4122" in text.replace("\xa0", "").replace(" ", "").replace(",", "")
    console = ProviderRoute.objects.create(account=account, provider="console", priority=5)
    response = superuser.post(reverse("admin:routes_providerroute_changelist"),
                              {"action": "check_balance", "_selected_action": [console.pk]}, follow=True)
    assert len(list(response.context["messages"])) == 1


def test_a_wrong_credential_shows_as_a_balance_error(superuser, route, fake_smsru):
    response = superuser.get(reverse("admin:routes_providerroute_balance", args=[route.pk]), follow=True)
    text = " ".join(str(m) for m in response.context["messages"])
    assert "auth" in text and ROUTE_SECRET not in text


@pytest.mark.guard
def test_staff_set_an_accounts_abuse_limit_ceilings(superuser, account, client, make_token):
    from accounts.models import AccountCeilings
    from accounts.limits import limits_for

    ProviderRoute.objects.create(account=account, provider="console")
    data = inline_post(account, [], **{"limit_ceilings-TOTAL_FORMS": "1", "limit_ceilings-0-phone_per_hour": "1",
                                       "limit_ceilings-0-phone_cooldown_seconds": "0",
                                       "limit_ceilings-0-allowed_countries": "ru, by",
                                       "limit_ceilings-0-account": account.pk})
    response = superuser.post(account_url(account), data)
    assert response.status_code == 302, response.content.decode()[-2000:]
    limits = AccountCeilings.objects.get(account=account)
    assert (limits.phone_per_hour, limits.allowed_countries, limits.phone_per_day) == (1, "BY,RU", None)
    assert limits_for(account).allowed_countries == frozenset({"RU", "BY"})
    post = lambda: client.post("/amocrm/sms", {"phone": "+375291234567", "text": "x", "token": make_token()})  # noqa: E731
    assert [post().status_code, post().status_code] == [200, 429]


def test_unknown_country_codes_are_refused_in_the_admin(superuser, account):
    from accounts.models import AccountCeilings

    data = inline_post(account, [], **{"limit_ceilings-TOTAL_FORMS": "1",
                                       "limit_ceilings-0-allowed_countries": "RU,XX",
                                       "limit_ceilings-0-account": account.pk})
    response = superuser.post(account_url(account), data)
    assert response.status_code == 200 and "XX" in response.content.decode()
    assert not AccountCeilings.objects.exists()
