"""Admin change lists answer only what their page offers (issue 13, item 2; item 5 for the search).

A query-string lookup that is not one of the admin's own filters (`?text__startswith=Code%204`,
`?password__startswith=pbkdf2`) was an oracle that reads a hidden value one character at a time;
now every admin of the site refuses it with Django's DisallowedModelAdminLookup (400), for every
user. The filters, the search and Django's own parameters (popups, pages, facets, preserved
filters, actions) keep working. Non-ASCII digits and huge numbers in a search or an id are no
match, never a 500."""

import re
import uuid
from urllib.parse import urlencode

import pytest
from django.contrib import admin
from django.contrib.admin import DateFieldListFilter
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import Account
from routes.models import ProviderRoute
from deliveries.models import Delivery
from deliveries.services.intake import delivery_create
from smsgate.admin_lookups import SortableOnlyChangeList, StrictChangeListMixin
from tests.staff import staff_client

pytestmark = pytest.mark.django_db

VIEW_ALL = ("deliveries.view_delivery", "accounts.view_account", "routes.view_providerroute",
            "accounts.view_integration", "auth.view_user", "auth.view_group", "crm.view_crmmessage",
            "crm.view_crmnote", "crm.view_pipelineevent", "crm.view_pipelinekey", "crm.view_salesbotrequest",
            "crm.view_listsend")
DELIVERIES = reverse("admin:deliveries_delivery_changelist")
ACCOUNTS = reverse("admin:accounts_account_changelist")
ROUTES = reverse("admin:routes_providerroute_changelist")
INTEGRATIONS = reverse("admin:accounts_integration_changelist")
USERS = reverse("admin:auth_user_changelist")
GROUPS = reverse("admin:auth_group_changelist")
DASHBOARD = reverse("admin:deliveries_delivery_dashboard")


def changelist_url(model) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # staff users are made per test


@pytest.fixture
def world(account, settings):
    """One of everything the admins list: a delivery, a route, a group with a user in it."""
    settings.SMSGATE_DEFAULT_ROUTE = "console"
    delivery = delivery_create(account=account, phone="+79123456789", text="Code 4711").delivery
    route = ProviderRoute.objects.create(account=account, provider="smsru", priority=1, credentials={"api_id": "x"})
    group = Group.objects.create(name="support")
    member = User.objects.create_user("member", password="pw-member", is_staff=True)
    member.groups.add(group)
    return {"delivery": delivery, "route": route, "group": group, "account": account}


@pytest.fixture(params=["superuser", "limited staff"])
def staff(request, world):
    if request.param == "superuser":
        return staff_client(username="root", superuser=True)[0]
    return staff_client(*VIEW_ALL, username="viewer")[0]


@pytest.fixture
def superuser(world):
    return staff_client(username="root", superuser=True)[0]


def listed_ids(response, model) -> set[str]:
    path = changelist_url(model)
    return set(re.findall(re.escape(path) + r'([^/"]+)/change/', response.content.decode()))


# --- every admin carries the restriction ------------------------------------------------------------------
def test_every_registered_admin_has_the_restriction(rf):
    """A new admin that forgets the mixin (or overrides it away) fails here."""
    request = rf.get("/admin/")
    missing = [type(model_admin).__name__ for model_admin in admin.site._registry.values()
               if not isinstance(model_admin, StrictChangeListMixin)
               or type(model_admin).lookup_allowed is not StrictChangeListMixin.lookup_allowed
               or not issubclass(model_admin.get_changelist(request), SortableOnlyChangeList)]
    assert missing == []
    assert {User, Group} <= set(admin.site._registry)


def test_every_registered_admin_refuses_a_lookup_on_every_field(superuser):
    """Walks the registry: `<field>__startswith` on each of its model's concrete fields is a 400."""
    accepted = []
    for model, model_admin in admin.site._registry.items():
        for model_field in model._meta.concrete_fields:
            lookup = f"{model_field.name}__startswith"
            response = superuser.get(changelist_url(model), {lookup: "a"})
            if response.status_code != 400:
                accepted.append((model.__name__, lookup, response.status_code))
        assert superuser.get(changelist_url(model)).status_code == 200
    assert accepted == []


# --- the attacks of the issue, for a superuser and for limited staff -----------------------------------
def forbidden_urls(world) -> list[tuple[str, dict]]:
    delivery = world["delivery"]
    return [
        (DELIVERIES, {"id": str(delivery.pk), "text__startswith": "Code 4"}),
        (DELIVERIES, {"text__startswith": "Code 4"}),
        (DELIVERIES, {"text__contains": "4711"}),
        (DELIVERIES, {"text__regex": "^Code 4"}),
        (DELIVERIES, {"jti__isnull": "1"}),
        (DELIVERIES, {"phone__startswith": "+7912"}),
        (DELIVERIES, {"phone": "+79123456789"}),
        (DELIVERIES, {"id": str(delivery.pk)}),
        (DELIVERIES, {"account__subdomain__startswith": "a"}),
        (DELIVERIES, {"status__exact": "pending", "encoding": "gsm7"}),  # a real filter does not carry another
        (DELIVERIES, {"nonsense": "1"}),
        (USERS, {"password__startswith": "pbkdf2"}),
        (USERS, {"username__regex": "^r"}),
        (USERS, {"email__contains": "@"}),
        (USERS, {"is_superuser": "1"}),
        (USERS, {"groups__name__startswith": "s"}),
        (GROUPS, {"name__startswith": "s"}),
        (GROUPS, {"permissions__codename__contains": "view"}),
        (ACCOUNTS, {"amo_id__gt": "1"}),
        (ACCOUNTS, {"routes__callback_token__startswith": "a"}),
        (ROUTES, {"callback_token__startswith": "a"}),  # the only authentication of SMSC and SMS Aero reports
        (ROUTES, {"credentials__contains": "x"}),
        (INTEGRATIONS, {"client_secret__startswith": "g"}),
        (INTEGRATIONS, {"client_uuid__startswith": "0"}),
    ]


def test_lookups_outside_the_admin_s_filters_are_refused(staff, world):
    answers = {f"{url}?{urlencode(params)}": staff.get(url, params).status_code
               for url, params in forbidden_urls(world)}
    assert answers == {url: 400 for url in answers}


@pytest.mark.parametrize("url, params", [
    (DELIVERIES, {"provider": "\x00"}),
    (DELIVERIES, {"status__exact": "\x00"}),
    (DELIVERIES, {"kind__exact": "sys\x00"}),
    (ACCOUNTS, {"domain__exact": "\x00"}),
    (ROUTES, {"provider": "\x00"}),
])
def test_a_nul_in_a_filter_value_is_a_400_not_a_database_error(superuser, url, params):
    assert superuser.get(url, params).status_code == 400


# --- what the admins offer keeps working ---------------------------------------------------------------------
def test_every_filter_choice_of_every_admin_still_works(staff, world):
    """Each choice link the filter sidebar renders, on every admin, answers its page."""
    checked = 0
    for model in admin.site._registry:
        response = staff.get(changelist_url(model))
        assert response.status_code == 200, model
        changelist = response.context["cl"]
        for spec in changelist.filter_specs:
            for choice in spec.choices(changelist):
                page = staff.get(changelist_url(model) + choice["query_string"])
                assert page.status_code == 200, (model.__name__, choice["query_string"])
                checked += 1
    assert checked >= 25  # status, kind, provider, created; active, domain; users' four; routes' three


def test_filters_still_narrow_the_lists(staff, world):
    delivery, route, group = world["delivery"], world["route"], world["group"]
    assert listed_ids(staff.get(DELIVERIES, {"status__exact": "pending", "provider": "", "created": "today"}),
                      Delivery) == {str(delivery.pk)}
    assert listed_ids(staff.get(DELIVERIES, {"status__exact": "delivered"}), Delivery) == set()
    assert listed_ids(staff.get(ROUTES, {"provider": "smsru", "is_broken__exact": "0"}),
                      ProviderRoute) == {str(route.pk)}
    members = listed_ids(staff.get(USERS, {"groups__id__exact": str(group.pk)}), User)
    assert members == {str(User.objects.get(username="member").pk)}


def test_search_still_works_on_every_admin(staff, world):
    account, delivery, route, group = world["account"], world["delivery"], world["route"], world["group"]
    assert listed_ids(staff.get(DELIVERIES, {"q": "8 (912) 345-67-89"}), Delivery) == {str(delivery.pk)}
    assert listed_ids(staff.get(DELIVERIES, {"q": str(delivery.pk)}), Delivery) == {str(delivery.pk)}
    assert listed_ids(staff.get(DELIVERIES, {"q": "acme"}), Delivery) == {str(delivery.pk)}
    for term in ("acme", "12345"):
        assert listed_ids(staff.get(ACCOUNTS, {"q": term}), Account) == {str(account.pk)}
        assert listed_ids(staff.get(ROUTES, {"q": term}), ProviderRoute) == {str(route.pk)}
    assert listed_ids(staff.get(USERS, {"q": "member"}), User) == {str(User.objects.get(username="member").pk)}
    assert listed_ids(staff.get(GROUPS, {"q": "supp"}), Group) == {str(group.pk)}


def test_django_s_own_changelist_parameters_keep_working(superuser, world):
    account = world["account"]
    for url, params in [
        (ACCOUNTS, {"_popup": "1", "_to_field": "id"}),  # the route form's raw-id popup for its account
        (DELIVERIES, {"e": "1"}),
        (DELIVERIES, {"p": "1"}),
        (DELIVERIES, {"all": ""}),
        (DELIVERIES, {"o": "-1"}),
        (ROUTES, {"_facets": "True", "is_active__exact": "1"}),
        (USERS, {"_facets": "True", "is_staff__exact": "1", "o": "1.-2", "q": "root"}),
    ]:
        assert superuser.get(url, params).status_code == 200, (url, params)
    # A wrong value of a real filter is Django's "wrong lookup" redirect, not a refusal.
    assert superuser.get(USERS, {"is_staff__exact": "maybe"})["Location"].endswith("?e=1")
    popup = superuser.get(ACCOUNTS, {"_popup": "1", "_to_field": "id"}).content.decode()
    assert f'data-popup-opener="{account.pk}"' in popup


def test_isnull_only_where_a_column_can_be_empty(staff, world, rf):
    """`?status__isnull=True` can match nothing (NOT NULL) but made PostgreSQL 15 scan every delivery;
    the filters never offer it. A to-many relation's "none" choice stays."""
    request = rf.get(DELIVERIES)
    request.user = User.objects.get(username="member")
    assert admin.site._registry[Delivery].allowed_filter_parameters(request) == {
        "status__exact", "kind__exact", "provider", "created"}
    for url, lookup in [(DELIVERIES, "status__isnull"), (DELIVERIES, "kind__isnull"), (ACCOUNTS, "domain__isnull"),
                        (ROUTES, "is_broken__isnull"), (USERS, "is_staff__isnull")]:
        assert staff.get(url, {lookup: "True"}).status_code == 400, lookup
    lonely = User.objects.create_user("lonely", is_staff=True)
    assert str(lonely.pk) in listed_ids(staff.get(USERS, {"groups__isnull": "True"}), User)


def test_a_raw_id_popup_may_pass_its_foreign_key_s_limit_choices_to(superuser, world, monkeypatch):
    """None of our foreign keys limits its choices today; one that does keeps its popup working,
    and only with exactly its own (lookup, value) pairs."""
    monkeypatch.setattr(Account._meta, "related_fkey_lookups", [{"is_active": True}])
    popup = {"_popup": "1", "_to_field": "id"}
    assert superuser.get(ACCOUNTS, {**popup, "is_active": "1"}).status_code == 200
    assert superuser.get(ACCOUNTS, {**popup, "is_active": "0"}).status_code == 400


def test_filters_are_preserved_after_saving(superuser, world):
    group = world["group"]
    change = reverse("admin:auth_group_change", args=[group.pk])
    preserved = urlencode({"_changelist_filters": "q=supp"})
    response = superuser.post(f"{change}?{preserved}", {"name": "support-2", "permissions": []})
    assert response.status_code == 302 and response["Location"] == f"{GROUPS}?q=supp"
    assert superuser.get(response["Location"]).status_code == 200


def test_an_action_s_confirmation_page_works_under_a_search(superuser, world):
    group = world["group"]
    data = {"action": "delete_selected", "_selected_action": [group.pk]}
    confirm = superuser.post(f"{GROUPS}?q=supp", data)
    assert confirm.status_code == 200 and "support" in confirm.content.decode()
    done = superuser.post(f"{GROUPS}?q=supp", {**data, "post": "yes"})
    assert done.status_code == 302 and not Group.objects.filter(pk=group.pk).exists()


def test_date_filters_and_the_date_hierarchy_are_expected_parameters(world):
    """Generality of the mixin: a DateFieldListFilter's __gte/__lt and a date hierarchy's parts."""
    class DatedUserAdmin(StrictChangeListMixin, UserAdmin):
        list_filter = ("is_staff", ("last_login", DateFieldListFilter), "date_joined", "groups")
        date_hierarchy = "date_joined"

    model_admin = DatedUserAdmin(User, admin.AdminSite(name="dated"))
    request = RequestFactory().get("/")
    request.user = User.objects.get(username="member")
    assert model_admin.allowed_filter_parameters(request) == {
        "is_staff__exact", "last_login__gte", "last_login__lt", "last_login__isnull",
        "date_joined__gte", "date_joined__lt", "groups__id__exact", "groups__isnull",
        "date_joined__year", "date_joined__month", "date_joined__day"}
    assert model_admin.lookup_allowed("date_joined__gte", "2026-01-01", request)
    assert not model_admin.lookup_allowed("date_joined__gt", "2026-01-01", request)
    assert not model_admin.lookup_allowed("password__startswith", "pbkdf2", request)


# --- other URL tricks of the same class ----------------------------------------------------------------------
def test_sorting_only_by_the_sortable_columns(superuser, world):
    """`?o=` pointing at provider, kind or parts would sort the whole deliveries table."""
    model_admin = admin.site._registry[Delivery]
    columns = ["action_checkbox", *model_admin.list_display]
    for name in ("provider", "kind", "segments"):
        with CaptureQueriesContext(connection) as captured:
            assert superuser.get(DELIVERIES, {"o": f"{columns.index(name)}.-1"}).status_code == 200
        orderings = [q["sql"].rpartition("ORDER BY")[2] for q in captured
                     if "ORDER BY" in q["sql"] and Delivery._meta.db_table in q["sql"]]
        assert orderings and all(f'"{name}"' not in order and "created_at" in order for order in orderings), name


@pytest.mark.parametrize("field", ["phone", "text", "jti", "provider_message_id"])
def test_to_field_must_be_a_referenced_key(superuser, field):
    assert superuser.get(DELIVERIES, {"_to_field": field}).status_code == 400


def test_to_field_on_other_admins(superuser):
    for url, field in [(USERS, "password"), (USERS, "username"), (ROUTES, "callback_token"),
                       (ACCOUNTS, "subdomain"), (INTEGRATIONS, "client_secret")]:
        assert superuser.get(url, {"_to_field": field}).status_code == 400, (url, field)


ODD_IDS = ["abc", "²", "٣", "99999999999999999999", "-1", "1.5", str(uuid.UUID(int=1)), "%00"]


@pytest.mark.parametrize("action", ["retry", "cancel"])
@pytest.mark.parametrize("object_id", ODD_IDS)
def test_retry_and_cancel_of_an_id_that_is_no_delivery_is_a_404(world, action, object_id):
    actor, _ = staff_client("deliveries.view_delivery", "deliveries.change_delivery", username="actor")
    url = reverse(f"admin:deliveries_delivery_{action}", args=["00000000-0000-0000-0000-000000000000"])
    assert actor.post(url.replace("00000000-0000-0000-0000-000000000000", object_id)).status_code == 404


def test_change_history_and_delete_pages_of_odd_ids_never_fail(superuser, world):
    answers = {}
    for model in admin.site._registry:
        opts = model._meta
        for view in ("change", "history", "delete"):
            for object_id in ODD_IDS:
                url = reverse(f"admin:{opts.app_label}_{opts.model_name}_{view}", args=["0"]).replace(
                    "/0/", f"/{object_id}/")
                answers[url] = superuser.get(url).status_code
    assert {url: code for url, code in answers.items() if code not in (302, 403, 404)} == {}


def test_a_delivery_s_history_shows_neither_its_text_nor_its_phone(world):
    viewer, _ = staff_client("deliveries.view_delivery", username="viewer")
    response = viewer.get(reverse("admin:deliveries_delivery_history", args=[world["delivery"].pk]))
    body = response.content.decode()
    assert response.status_code == 200 and "4711" not in body and "3456789" not in body


@pytest.mark.parametrize("param", ["²", "٣", "９", "-1", "99999999999999999999", "1e3", "\x00", ""])
def test_the_dashboard_takes_only_an_account_id(superuser, integration, param):
    # An account whose id the non-ASCII digits would otherwise name (int("٣") == 3).
    Account.objects.create(pk=3, integration=integration, amo_id=3, subdomain="three")
    response = superuser.get(DASHBOARD, {"account": param})
    assert response.status_code == 200
    assert response.context["account"] is None


def test_the_dashboard_of_one_account(superuser, world):
    account = world["account"]
    response = superuser.get(DASHBOARD, {"account": str(account.pk)})
    assert response.status_code == 200 and response.context["account"] == account


# --- search with non-ASCII digits and huge numbers (item 5) ------------------------------------------------
NO_MATCH_TERMS = ["¹²³", "²", "٣٤٥", "٣", "９９", "9" * 30, "-1", "+٧٩١٢٣٤٥٦٧٨٩", "８９１２３４５６７８９",
                  "٠" * 32, "1" * 19, "9223372036854775808"]


@pytest.mark.parametrize("term", NO_MATCH_TERMS)
def test_a_search_with_odd_digits_answers_the_page_with_no_match(superuser, world, integration, term):
    # Accounts that the digits would name if they were read as numbers (amoCRM ids 345, 99, 3).
    for amo_id in (3, 99, 345):
        named = Account.objects.create(integration=integration, amo_id=amo_id, subdomain=f"n{amo_id}")
        delivery_create(account=named, phone="+79123456780", text="Code 1")
    for url, model in [(DELIVERIES, Delivery), (ACCOUNTS, Account), (ROUTES, ProviderRoute), (USERS, User),
                       (GROUPS, Group), (INTEGRATIONS, None)]:
        response = superuser.get(url, {"q": term})
        assert response.status_code == 200, (url, term)
        if model is not None:
            assert listed_ids(response, model) == set(), (url, term)
