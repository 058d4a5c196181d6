import pytest

from smsgate.phones import PhoneError, phone_mask, phone_normalise_for_search, phone_parse


@pytest.mark.parametrize("raw,region,e164", [
    ("89161234567", "RU", "+79161234567"),
    ("+7 (916) 123-45-67", None, "+79161234567"),
    ("9161234567", "RU", "+79161234567"),
    ("+375291234567", None, "+375291234567"),
])
def test_parse(raw, region, e164):
    assert phone_parse(raw, default_region=region).e164 == e164


@pytest.mark.parametrize("raw,code", [
    ("8 (495) 123-45-67", "not_mobile"), ("12345", "invalid"), ("+7916123456", "invalid"), ("abc", "invalid"),
    ("", "invalid"), ("+7" + "1" * 50, "invalid"), (None, "invalid"), ("+78005553535", "not_mobile"),
])
def test_parse_refuses(raw, code):
    with pytest.raises(PhoneError) as err:
        phone_parse(raw, default_region="RU")
    assert err.value.code == code


def test_mask_hides_the_middle():
    assert phone_mask("+79123456789") == "+7 912 ***-**-89"
    assert "3456" not in phone_mask("+79123456789")


@pytest.mark.parametrize("raw", ["+7 912 345-67-89", "89123456789", "7 (912) 345 67 89", "+79123456789"])
def test_search_normalisation(raw):
    assert phone_normalise_for_search(raw) == "+79123456789"


def test_search_normalisation_of_non_numbers():
    assert phone_normalise_for_search("acme") is None
