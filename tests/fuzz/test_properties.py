"""Hypothesis: the token verifier, the phone normaliser and the part counter on arbitrary input."""

import base64
import hashlib
import hmac
import json
import string
import time

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from accounts.tokens import TokenError, verify_token
from smsgate.phones import PhoneError, phone_mask, phone_normalise_for_search, phone_parse
from deliveries.segments import GSM7_BASIC, GSM7_EXTENSION, segment_info
from tests.conftest import SECRET, claims_for

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

def sign_raw(payload) -> str:
    """HS256 over any JSON payload (PyJWT's encoder refuses some of the shapes we want to send)."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(payload).encode())
    signature = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)


@pytest.mark.django_db
@FUZZ
@given(token=st.text(max_size=600) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_verifier_refuses_arbitrary_strings_with_a_token_error(integration, token):
    with pytest.raises(TokenError):
        verify_token(token)


@pytest.mark.django_db
@FUZZ
@given(overrides=st.dictionaries(st.sampled_from(["iss", "aud", "jti", "iat", "nbf", "exp", "account_id", "subdomain",
                                                  "client_uuid", "user_id", "is_admin"]), json_values, max_size=4))
def test_verifier_never_crashes_on_signed_garbage_claims(integration, overrides):
    """Correctly signed tokens with arbitrary claim values: either valid claims or a TokenError."""
    token = sign_raw(claims_for(integration, **overrides))
    try:
        claims = verify_token(token)
    except TokenError as exc:
        assert exc.reason and str(exc.message)
        return
    # Accepted: then every check held.
    assert isinstance(claims.account_id, int) and claims.account_id > 0
    assert claims.domain in ("amocrm.ru", "amocrm.com", "kommo.com")
    assert (claims.expires_at - claims.issued_at).total_seconds() <= 3600
    assert claims.issued_at.timestamp() <= time.time() + 120


@FUZZ
@given(raw=st.text(max_size=60))
def test_phone_parse_returns_e164_or_a_phone_error(raw):
    try:
        phone = phone_parse(raw, default_region="RU")
    except PhoneError as exc:
        assert exc.code in ("invalid", "not_mobile")
        return
    assert phone.e164.startswith("+") and phone.e164[1:].isdigit() and len(phone.e164) <= 16
    assert phone_parse(phone.e164).e164 == phone.e164  # idempotent
    masked = phone_mask(phone.e164)
    assert phone.e164[4:-2] not in masked.replace(" ", "")


@FUZZ
@given(raw=st.text(alphabet=string.digits + " +-()", max_size=25))
def test_search_normalisation_is_stable(raw):
    normalised = phone_normalise_for_search(raw)
    if normalised is not None:
        assert phone_normalise_for_search(normalised) == normalised


gsm_text = st.text(alphabet=st.sampled_from(sorted((GSM7_BASIC | GSM7_EXTENSION) - {"\x1b"})), max_size=700)


@FUZZ
@given(text=st.text(max_size=700))
def test_part_count_is_consistent(text):
    info = segment_info(text)
    assert info.encoding in ("gsm7", "ucs2")
    single, multi = (160, 153) if info.encoding == "gsm7" else (70, 67)
    if info.units == 0:
        assert info.segments == 0
    elif info.units <= single:
        assert info.segments == 1
    else:
        # Never fewer parts than the units need, and at most one extra per part for a pair not split.
        assert -(-info.units // multi) <= info.segments <= -(-info.units // (multi - 1))


@FUZZ
@given(text=gsm_text)
def test_gsm_text_stays_gsm(text):
    info = segment_info(text)
    assert info.encoding == "gsm7"
    assert info.units == len(text) + sum(ch in GSM7_EXTENSION for ch in text)


@FUZZ
@given(text=gsm_text, extra=st.characters(blacklist_categories=["Cs"]))
def test_one_non_gsm_character_switches_everything_to_ucs2(text, extra):
    assume(extra not in GSM7_BASIC and extra not in GSM7_EXTENSION)
    assert segment_info(text + extra).encoding == "ucs2"
