"""Pumping ranges are closed on every send path (issue 13, item 3).

Reproduced before the fix: on a kommo.com account (countries `*`), +8823421234, +870301234567 and
+881612345678 were accepted and sent: libphonenumber puts the non-geographic calling codes in region
"001" and calls several of them mobile. Every number of region 001, and premium-rate, shared-cost, UAN
and personal numbers, are refused by policy (422, recorded as a rejected delivery, never queued)
whatever the countries allow; only the operator can allow one non-geographic calling code for one
account, in the admin.
"""

import phonenumbers
import pytest
from django.urls import reverse
from django.utils import translation

from accounts.models import Account, AccountCeilings, AccountOwnLimits
from routes.models import ProviderRoute
from deliveries.models import Delivery, DeliveryKind, DeliveryStatus
from smsgate.phones import NON_GEOGRAPHIC_CALLING_CODES
from deliveries.services.intake import DeliveryRefused, delivery_create
from deliveries.services.staff import DeliveryActionRefused, delivery_retry
from tests.staff import staff_client

pytestmark = [pytest.mark.django_db, pytest.mark.guard]

URL = "/amocrm/sms"
REPORTED = ["+8823421234", "+870301234567", "+881612345678"]
_TYPES = ("fixed_line", "mobile", "toll_free", "premium_rate", "shared_cost", "personal_number", "voip", "pager",
          "uan", "voicemail")


def _non_geographic_examples() -> list[str]:
    """A valid number of every type libphonenumber describes, for every non-geographic calling code."""
    numbers = set()
    for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        metadata = phonenumbers.PhoneMetadata.metadata_for_nongeo_region(code)
        for name in _TYPES:
            description = getattr(metadata, name)
            if description is not None and description.example_number:
                numbers.add(f"+{code}{description.example_number}")
    return sorted(numbers)


NON_GEOGRAPHIC = _non_geographic_examples()


@pytest.fixture
def kommo(other_account):
    """A kommo.com account (beta, 55555; `other_api` is its administrator): any country by default, as
    in the report."""
    ProviderRoute.objects.create(account=other_account, provider="console")
    return other_account


@pytest.fixture
def post(client, make_token, kommo):
    def post(phone, *, account_id=55555, subdomain="beta"):
        token = make_token(account_id=account_id, iss=f"https://{subdomain}.kommo.com", subdomain=subdomain)
        return client.post(URL, {"phone": phone, "text": "Код 1234", "token": token})

    return post


def assert_refused(response, code):
    assert response.status_code == 422, response.content
    body = response.json()
    assert body["code"] == code
    refused = Delivery.objects.get(pk=body["id"])
    assert refused.status == DeliveryStatus.REJECTED and refused.error_class == "policy"
    assert refused.error_code == code
    assert refused.enqueued_at is None and not refused.attempts.exists()  # never queued, never sent


def test_the_examples_cover_every_non_geographic_calling_code():
    assert NON_GEOGRAPHIC_CALLING_CODES == set(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS)
    assert {800, 808, 870, 878, 881, 882, 883, 888, 979} <= NON_GEOGRAPHIC_CALLING_CODES
    covered = {phonenumbers.parse(number).country_code for number in NON_GEOGRAPHIC}
    assert covered == NON_GEOGRAPHIC_CALLING_CODES


@pytest.mark.parametrize("phone", REPORTED)
def test_the_reported_numbers_are_refused_on_the_sms_endpoint(post, phone):
    assert_refused(post(phone), "non_geographic_number")
    assert not Delivery.objects.exclude(status=DeliveryStatus.REJECTED).exists()


@pytest.mark.parametrize("phone", NON_GEOGRAPHIC)
def test_every_number_of_region_001_is_refused_whatever_the_countries_say(post, kommo, phone):
    AccountCeilings.objects.create(account=kommo, allowed_countries="*")
    AccountOwnLimits.objects.create(account=kommo, allowed_countries="*")
    assert_refused(post(phone), "non_geographic_number")


@pytest.mark.parametrize(("phone", "code"), [
    ("+449012345678", "premium_number"), ("+78091234567", "premium_number"),  # premium rate
    ("+34901123456", "premium_number"),  # shared cost
    ("+445512345678", "premium_number"),  # UAN
    ("+447012345678", "personal_number"), ("+78081234567", "personal_number"),  # personal: was a 400 not_mobile
])
def test_premium_shared_cost_uan_and_personal_numbers_are_refused_by_policy(post, phone, code):
    number_type = phonenumbers.number_type(phonenumbers.parse(phone))
    assert number_type != phonenumbers.PhoneNumberType.MOBILE
    assert_refused(post(phone), code)


@pytest.mark.parametrize("phone", ["+445612345678", "+447640123456", "+49177991234567", "+78005553535"])
def test_voip_pager_voicemail_and_toll_free_numbers_cannot_get_sms(post, phone):
    """Geographic VoIP, pager, voicemail and toll-free numbers cannot receive an SMS: an input error
    (400), nothing recorded, nothing sent."""
    response = post(phone)
    assert response.status_code == 400
    assert response.json()["errors"]["phone"]
    assert not Delivery.objects.exists()


@pytest.mark.parametrize("typed", ["8823421234", "+882 342 1234", "+882 (342) 12-34", " +8823421234 ",
                                   "+882-342-1234"])
def test_other_spellings_of_a_pumping_number_are_refused(post, typed):
    """Digits only (retried with "+" by the service), spaces, brackets: the same number, the same refusal."""
    assert_refused(post(typed), "non_geographic_number")


@pytest.mark.parametrize("typed", ["882 342 1234", "00 882 342 1234", "+882 342 1234 ext. 5", "+８８２３４２１２３４"])
def test_spellings_that_are_not_a_number_are_never_sent(post, typed):
    response = post(typed)
    assert response.status_code in (400, 422)
    assert not Delivery.objects.exclude(status=DeliveryStatus.REJECTED).exists()


@pytest.mark.parametrize("typed", ["8823421234", "8 10 882 342 1234"])
def test_a_russian_account_refuses_them_as_pumping_not_as_a_country(api, account, client, make_token, typed):
    ProviderRoute.objects.create(account=account, provider="console")
    AccountCeilings.objects.create(account=account, allowed_countries="*")
    response = client.post(URL, {"phone": typed, "text": "Код 1234", "token": make_token()})
    assert_refused(response, "non_geographic_number")


def test_the_operator_allows_one_calling_code_for_one_account_in_the_admin(post, kommo, integration):
    other = Account.objects.create(integration=integration, amo_id=66666, subdomain="gamma", domain="kommo.com")
    ProviderRoute.objects.create(account=other, provider="console")
    staff, _user = staff_client(username="root", superuser=True)
    page = reverse("admin:accounts_account_change", args=[kommo.pk])
    form = {"integration": kommo.integration_id, "amo_id": kommo.amo_id, "subdomain": kommo.subdomain,
            "domain": kommo.domain, "is_active": "on", "disabled_reason": "",
            "routes-TOTAL_FORMS": "0", "routes-INITIAL_FORMS": "0", "routes-MIN_NUM_FORMS": "0",
            "routes-MAX_NUM_FORMS": "1000",
            "limit_ceilings-TOTAL_FORMS": "1", "limit_ceilings-INITIAL_FORMS": "0",
            "limit_ceilings-MIN_NUM_FORMS": "0", "limit_ceilings-MAX_NUM_FORMS": "1",
            "limit_ceilings-0-account": kommo.pk, "limit_ceilings-0-allowed_calling_codes": "+882",
            "own_limits-TOTAL_FORMS": "0", "own_limits-INITIAL_FORMS": "0", "own_limits-MIN_NUM_FORMS": "0",
            "own_limits-MAX_NUM_FORMS": "1"}
    response = staff.post(page, form)
    assert response.status_code == 302, response.content.decode()[-3000:]
    assert AccountCeilings.objects.get(account=kommo).allowed_calling_codes == "882"

    assert post("+8823421234").status_code == 200
    assert_refused(post("+870301234567"), "non_geographic_number")  # only the code allowed
    assert_refused(post("+8823421234", account_id=66666, subdomain="gamma"), "non_geographic_number")  # one account


@pytest.mark.parametrize("typed", ["7", "44, 882", "1000", "８８２", "abc"])
def test_the_admin_accepts_only_non_geographic_calling_codes(kommo, typed):
    from accounts.forms import AccountCeilingsForm

    form = AccountCeilingsForm(data={"allowed_calling_codes": typed, "allowed_countries": ""},
                               instance=AccountCeilings(account=kommo))
    assert not form.is_valid()
    assert "allowed_calling_codes" in form.errors


def test_an_allowed_code_still_refuses_premium_numbers(post, kommo):
    AccountCeilings.objects.create(account=kommo, allowed_calling_codes="979")
    assert_refused(post("+979123456789"), "premium_number")


def test_the_account_api_cannot_allow_a_calling_code(other_api, kommo, post):
    response = other_api.put("/api/v1/limits/", {"allowed_calling_codes": [882], "allowed_countries": ["*"],
                                                 "ceilings": {"allowed_calling_codes": [882]}})
    assert response.status_code == 200, response.content  # unknown fields are ignored, not stored
    body = other_api.get("/api/v1/limits/").json()
    assert body["ceilings"]["allowed_calling_codes"] == body["effective"]["allowed_calling_codes"] == []
    assert not AccountCeilings.objects.exists()
    assert_refused(post("+8823421234"), "non_geographic_number")


def test_the_api_test_sms_is_refused(other_api, kommo):
    route = ProviderRoute.objects.get(account=kommo)
    response = other_api.post(f"/api/v1/routes/{route.pk}/test-sms/", {"phone": "+8823421234"})
    assert_refused(response, "non_geographic_number")
    assert Delivery.objects.get().kind == DeliveryKind.TEST


def test_the_admin_test_sms_is_refused(kommo):
    route = ProviderRoute.objects.get(account=kommo)
    staff, _user = staff_client(username="root", superuser=True)
    response = staff.post(reverse("admin:routes_providerroute_test_sms", args=[route.pk]), {"phone": "+8823421234"},
                          HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 200  # the form again, with the refusal
    assert "non-geographic numbers" in response.content.decode()
    refused = Delivery.objects.get()
    assert (refused.status, refused.error_code) == (DeliveryStatus.REJECTED, "non_geographic_number")


@pytest.mark.parametrize("phone", [*REPORTED, "+447012345678"])
def test_bulk_deliveries_are_refused(kommo, phone):
    with pytest.raises(DeliveryRefused) as refused:
        delivery_create(account=kommo, phone=phone, text="Скидка", kind=DeliveryKind.BULK, enqueue=False)
    assert refused.value.http_status == 422
    assert refused.value.code in ("non_geographic_number", "personal_number")
    assert Delivery.objects.get().status == DeliveryStatus.REJECTED


@pytest.mark.parametrize("typed", ["+8823421234", "+882 342 1234", "8823421234"])
def test_the_deliveries_filter_finds_refused_pumping_attempts(other_api, post, typed):
    refused = post("+8823421234").json()["id"]
    response = other_api.get("/api/v1/deliveries/", {"phone": typed})
    assert response.status_code == 200, response.content
    assert [d["id"] for d in response.json()["results"]] == [refused]


def test_staff_cannot_retry_an_old_delivery_to_a_closed_range(kommo):
    """A delivery accepted before the range was closed (or before a calling code was taken back) is
    not sent again by a retry: a retry skips the limits, not the policy."""
    from django.utils import timezone

    old = Delivery.objects.create(account=kommo, phone="+8823421234", text="Код 1", encoding="ucs2", segments=1,
                                  status=DeliveryStatus.FAILED, kind=DeliveryKind.TEST,
                                  valid_until=timezone.now() + timezone.timedelta(minutes=10))
    with pytest.raises(DeliveryActionRefused) as refused, translation.override("en"):
        delivery_retry(delivery=old)
    assert "non-geographic numbers" in str(refused.value)
    assert Delivery.objects.get(pk=old.pk).status == DeliveryStatus.FAILED
    AccountCeilings.objects.create(account=kommo, allowed_calling_codes="882")
    from accounts.limits import forget_limits

    forget_limits(kommo.pk)
    assert delivery_retry(delivery=old).status == DeliveryStatus.PENDING
