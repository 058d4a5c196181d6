"""Phone numbers: parse and validate with Google's libphonenumber, store E.164, mask for display.
Shared by every app that handles a recipient (deliveries, routes' console provider, crm)."""

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

# Numbers that can receive an SMS. Landlines, toll-free numbers, pagers, voicemail and VoIP numbers
# cannot: they are an input error (400), never sent, so they cannot be pumped either.
SMS_CAPABLE_TYPES = {PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE}
# Numbers that cost the caller (or us) money: the targets of SMS pumping. Refused by policy.
PREMIUM_TYPES = {PhoneNumberType.PREMIUM_RATE, PhoneNumberType.SHARED_COST, PhoneNumberType.UAN}
# Personal numbers (+44 70, +7 808, ...) forward to wherever their owner points them, at a rate the
# range holder sets: a pumping target too. Refused by policy.
PERSONAL_TYPES = {PhoneNumberType.PERSONAL_NUMBER}
# Region "001": the non-geographic calling codes (+800, +808, +870, +878, +881, +882, +883, +888,
# +979 in libphonenumber 9): satellite, international networks, premium and freephone services. No
# country's tariff applies, and libphonenumber calls several of them mobile: refused by policy
# whatever their type, unless the operator allows the calling code for an account.
NON_GEOGRAPHIC_REGION = phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY
NON_GEOGRAPHIC_CALLING_CODES = frozenset(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS)


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
    def non_geographic(self) -> bool:
        return self.region == NON_GEOGRAPHIC_REGION

    @property
    def masked(self) -> str:
        return _mask(self.country_code, self.national_number)


def phone_parse(raw, *, default_region: str | None = None) -> Phone:
    """Parse a number as a person would type it; raise PhoneError(code) if it cannot get an SMS.

    Codes: `invalid` (not a number / not a valid number), `not_mobile` (a landline and the like).
    Premium-rate, shared-cost, UAN and personal numbers and every number of a non-geographic
    calling code are returned: refusing them is a policy decision (deliveries.guard), recorded and
    visible to staff, not an input error.
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
    region = phonenumbers.region_code_for_number(number)
    if (number_type not in SMS_CAPABLE_TYPES and number_type not in PREMIUM_TYPES
            and number_type not in PERSONAL_TYPES and region != NON_GEOGRAPHIC_REGION):
        raise PhoneError("not_mobile")
    return Phone(
        e164=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        region=region,
        number_type=number_type,
        country_code=number.country_code,
        national_number=number.national_number,
    )


def phone_normalise_for_search(raw: str, *, default_region: str | None = "RU") -> str | None:
    """E.164 for a number typed into a search box, or None if it is not a phone number.

    Read as the send path reads it (deliveries.services): a valid number in the account's region,
    else digits only taken as international ("8823421234" is +882 342 1234, as it was sent); failing
    both, a merely possible number (a search may look for what was never valid).
    """
    if not isinstance(raw, str) or len(raw) > MAX_PHONE_INPUT or not _WRITTEN_PHONE.fullmatch(raw.strip()):
        return None  # letters, other scripts' digits: not a phone (see _WRITTEN_PHONE)
    candidates = [(raw, default_region)]
    if raw.strip().isascii() and raw.strip().isdigit():
        candidates.append(("+" + raw.strip(), None))
    possible = None
    for text, region in candidates:
        try:
            number = phonenumbers.parse(text, region)
        except NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        if possible is None and phonenumbers.is_possible_number(number):
            possible = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return possible


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
