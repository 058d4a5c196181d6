"""Phone numbers: parse and validate with Google's libphonenumber, store E.164, mask for display."""

import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

MAX_PHONE_INPUT = 40  # "+7 (912) 345-67-89" and friends fit easily
# What a phone is written with: ASCII digits, "+" first, and the usual separators (space, "-", ".",
# "/", parentheses). libphonenumber would read more: keypad letters as digits ("+7 912 ABC 4567" is
# +79122224567 to it), other scripts' digits as ASCII ones, and it drops what follows the number
# ("ext. 1", a NUL). A phone from amoCRM is ASCII, so anything else is not a phone.
_WRITTEN_PHONE = re.compile(r"\+?[0-9 ().\-/]+")

# Numbers that can receive an SMS. Landlines, pagers, VoIP etc. cannot.
SMS_CAPABLE_TYPES = {PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE}
# Numbers that cost the caller (or us) money: the targets of SMS pumping. Refused by policy.
PREMIUM_TYPES = {PhoneNumberType.PREMIUM_RATE, PhoneNumberType.SHARED_COST, PhoneNumberType.UAN}


class PhoneError(ValueError):
    def __init__(self, code: str):
        self.code = code
        super().__init__(code)


@dataclass(frozen=True)
class Phone:
    e164: str
    region: str | None
    number_type: int
    country_code: int
    national_number: int

    @property
    def masked(self) -> str:
        return _mask(self.country_code, self.national_number)


def phone_parse(raw, *, default_region: str | None = None) -> Phone:
    """Parse a number as a person would type it; raise PhoneError(code) if it cannot get an SMS.

    Codes: `invalid` (not a number / not a valid number), `not_mobile` (a landline and the like).
    Premium-rate, shared-cost and UAN numbers are returned: refusing them is a policy decision
    (deliveries.guard), recorded and visible to staff, not an input error.
    """
    if not isinstance(raw, str) or len(raw) > MAX_PHONE_INPUT or not _WRITTEN_PHONE.fullmatch(raw.strip()):
        raise PhoneError("invalid")
    try:
        number = phonenumbers.parse(raw, default_region)
    except NumberParseException:
        raise PhoneError("invalid") from None
    if not phonenumbers.is_valid_number(number):
        raise PhoneError("invalid")
    number_type = phonenumbers.number_type(number)
    if number_type not in SMS_CAPABLE_TYPES and number_type not in PREMIUM_TYPES:
        raise PhoneError("not_mobile")
    return Phone(
        e164=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        region=phonenumbers.region_code_for_number(number),
        number_type=number_type,
        country_code=number.country_code,
        national_number=number.national_number,
    )


def phone_normalise_for_search(raw: str, *, default_region: str | None = "RU") -> str | None:
    """E.164 for a number typed into a search box, or None if it is not a phone number."""
    if not isinstance(raw, str) or len(raw) > MAX_PHONE_INPUT or not _WRITTEN_PHONE.fullmatch(raw.strip()):
        return None
    try:
        number = phonenumbers.parse(raw, default_region)
    except NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def phone_mask(e164: str) -> str:
    """`+79123456789` -> `+7 912 ***-**-89`: enough to recognise, not enough to misuse."""
    try:
        number = phonenumbers.parse(e164, None)
    except NumberParseException:
        return "***"
    return _mask(number.country_code, number.national_number)


def _mask(country_code: int, national_number: int) -> str:
    national = str(national_number)
    head, tail = national[:3], national[-2:]
    hidden = max(len(national) - 5, 0)
    stars = "***-**" if hidden == 5 else "*" * hidden
    return f"+{country_code} {head} {stars}-{tail}"
