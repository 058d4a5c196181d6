"""A phone is digits (issue 13, item 7). libphonenumber reads keypad letters as digits ("+7 912 ABC
4567" was sent to +79122224567) and other scripts' digits as ASCII ones; a phone from amoCRM is
ASCII digits with the usual separators. Everything else is a 400 `invalid` (an empty result for
the deliveries filter), on every path that parses a phone."""

import pytest

from deliveries.models import Delivery
from smsgate.phones import PhoneError, phone_normalise_for_search, phone_parse

pytestmark = pytest.mark.django_db

REFUSED = [
    "+7 912 ABC 4567",  # keypad letters: the reproduced case
    "+7 912 АБВ 4567",  # Cyrillic letters
    "+7 912 345 67 8O",  # a letter O for a zero
    "+7 912 345 6789 ext. 1",
    "tel:+79123456789",
    "+79123456789\x00",  # libphonenumber drops what follows the number
    "+79123456789#",
    "+79123456789*",
    "+７９１２３４５６７８９",  # fullwidth digits
    "+٧٩١٢٣٤٥٦٧٨٩",  # Arabic-Indic digits
    "+۷۹۱۲۳۴۵۶۷۸۹",  # Extended Arabic-Indic (Persian) digits
    "+⁷⁹¹²³⁴⁵⁶⁷⁸⁹",  # superscripts
    "+7 912\u00a0345 67 89",  # NO-BREAK SPACE inside
    "+7 912 345–67–89",  # EN DASH
    "7+9123456789",  # "+" not first
    "++79123456789",
]
ACCEPTED = {
    "+79123456789": "+79123456789",
    "79123456789": "+79123456789",
    "89123456789": "+79123456789",
    "+7 (912) 345-67-89": "+79123456789",
    "8 (912) 345-67-89": "+79123456789",
    "+7.912.345.67.89": "+79123456789",
    "+7/912/345-67-89": "+79123456789",
    " +7 912 345 67 89 ": "+79123456789",
}


@pytest.mark.parametrize("raw", REFUSED)
def test_phone_parse_refuses_what_is_not_ascii_digits_and_separators(raw):
    with pytest.raises(PhoneError) as err:
        phone_parse(raw, default_region="RU")
    assert err.value.code == "invalid"
    assert phone_normalise_for_search(raw) is None


@pytest.mark.parametrize("raw, e164", ACCEPTED.items())
def test_the_usual_ways_of_writing_a_phone_still_parse(raw, e164, post, smsru_route):
    smsru_route()
    response = post(phone=raw)
    assert response.status_code == 200, response.json()
    assert Delivery.objects.get().phone == e164


@pytest.fixture
def post(client, make_token):
    def post(phone):
        return client.post("/amocrm/sms", {"phone": phone, "text": "Код для входа: 834622", "token": make_token()})

    return post


@pytest.mark.parametrize("raw", REFUSED)
def test_the_sms_endpoint_answers_400_and_records_nothing(post, smsru_route, raw):
    smsru_route()
    response = post(raw)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid" and list(body["errors"]) == ["phone"]
    assert not Delivery.objects.exists()


@pytest.mark.parametrize("raw", ["+7 912 ABC 4567", "+７９１２３４５６７８９", "+79123456789\x00x"])
def test_the_api_test_sms_answers_400_and_records_nothing(api, smsru_route, raw):
    route = smsru_route()
    response = api.post(f"/api/v1/routes/{route.pk}/test-sms/", {"phone": raw})
    assert response.status_code == 400 and response.json()["code"] == "invalid"
    assert not Delivery.objects.exists()


@pytest.mark.parametrize("raw", ["+7 912 ABC 4567", "+７９１２３４５６７８９", "+٧٩١٢٣٤٥٦٧٨٩", "+7 912 АБВ 4567"])
def test_the_deliveries_phone_filter_answers_400(api, account, smsru_route, raw):
    from deliveries.services.intake import delivery_create

    smsru_route()
    delivery_create(account=account, phone="+79122224567", text="Код 1234")  # what the letters would map to
    response = api.get("/api/v1/deliveries/", {"phone": raw})
    assert response.status_code == 400 and list(response.json()["errors"]) == ["phone"]
    assert len(api.get("/api/v1/deliveries/", {"phone": "+7 912 222-45-67"}).json()["results"]) == 1
