"""The token verifier, through the endpoint amoCRM calls: every bad token gets 401 and leaves no row."""

import base64
import json
import time
import uuid

import jwt
import pytest

from accounts.models import Account
from accounts.tokens import TokenErrorReason as R
from accounts.tokens import verify_token
from deliveries.models import Delivery
from tests.conftest import AUDIENCE, DROP, SECRET, claims_for

URL = "/amocrm/sms"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict, payload: dict, signature: bytes = b"") -> str:
    return ".".join([b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()), b64(signature)])


def now():
    return int(time.time())


def tampered(integration):
    token = jwt.encode(claims_for(integration), SECRET, algorithm="HS256")
    header, _, signature = token.split(".")
    payload = b64(json.dumps(claims_for(integration, account_id=99999)).encode())
    return f"{header}.{payload}.{signature}"


# (id, builder(integration, make_token) -> token, expected reason)
BAD_TOKENS = [
    ("alg-none", lambda i, m: forge({"alg": "none", "typ": "JWT"}, claims_for(i)), R.ALGORITHM),
    ("alg-none-lowercase-sig", lambda i, m: forge({"alg": "None"}, claims_for(i), b"x"), R.ALGORITHM),
    ("hs512", lambda i, m: m(algorithm="HS512"), R.ALGORITHM),
    ("hs384", lambda i, m: m(algorithm="HS384"), R.ALGORITHM),
    ("rs256-header-hmac-signature", lambda i, m: forge({"alg": "RS256", "typ": "JWT"}, claims_for(i), b"sig" * 10),
     R.ALGORITHM),
    ("wrong-secret", lambda i, m: m(secret="another-secret-" + "x" * 50), R.SIGNATURE),
    ("tampered-payload", lambda i, m: tampered(i), R.SIGNATURE),
    ("expired", lambda i, m: m(iat=now() - 3600, nbf=now() - 3600, exp=now() - 1800), R.EXPIRED),
    ("expired-beyond-leeway", lambda i, m: m(iat=now() - 1831, nbf=now() - 1831, exp=now() - 31), R.EXPIRED),
    ("nbf-ahead", lambda i, m: m(nbf=now() + 300), R.NOT_YET_VALID),
    ("iat-ahead", lambda i, m: m(iat=now() + 300, nbf=now(), exp=now() + 2000), R.ISSUED_IN_FUTURE),
    ("lifetime-over-an-hour", lambda i, m: m(exp=now() + 3601), R.LIFETIME),
    ("exp-before-iat", lambda i, m: m(iat=now(), nbf=now(), exp=now() - 5), R.INVALID_CLAIM),
    ("wrong-aud", lambda i, m: m(aud="https://evil.example.com"), R.AUDIENCE),
    ("aud-with-path", lambda i, m: m(aud=AUDIENCE + "/amocrm/oauth"), R.AUDIENCE),
    ("aud-with-port", lambda i, m: m(aud=AUDIENCE + ":8443"), R.AUDIENCE),
    ("aud-http-scheme", lambda i, m: m(aud="http://smsgate.example.com"), R.AUDIENCE),
    ("aud-as-list", lambda i, m: m(aud=[AUDIENCE]), R.AUDIENCE),
    ("aud-missing", lambda i, m: m(aud=DROP), R.MISSING_CLAIM),
    ("unknown-client-uuid", lambda i, m: m(client_uuid=str(uuid.uuid4())), R.UNKNOWN_INTEGRATION),
    ("client-uuid-not-a-uuid", lambda i, m: m(client_uuid="not-a-uuid"), R.INVALID_CLAIM),
    ("foreign-iss-host", lambda i, m: m(iss="https://acme.evil.ru"), R.ISSUER),
    ("iss-lookalike-host", lambda i, m: m(iss="https://acme.amocrm.ru.evil.com", subdomain=DROP), R.ISSUER),
    ("iss-http", lambda i, m: m(iss="http://acme.amocrm.ru"), R.ISSUER),
    ("iss-with-path", lambda i, m: m(iss="https://acme.amocrm.ru/evil"), R.ISSUER),
    ("iss-with-port", lambda i, m: m(iss="https://acme.amocrm.ru:444"), R.ISSUER),
    ("iss-subdomain-mismatch", lambda i, m: m(subdomain="other"), R.ISSUER),
    ("missing-jti", lambda i, m: m(jti=DROP), R.MISSING_CLAIM),
    ("empty-jti", lambda i, m: m(jti=""), R.INVALID_CLAIM),
    ("missing-account-id", lambda i, m: m(account_id=DROP), R.MISSING_CLAIM),
    ("missing-exp", lambda i, m: m(exp=DROP), R.MISSING_CLAIM),
    ("missing-iat", lambda i, m: m(iat=DROP), R.MISSING_CLAIM),
    ("missing-iss", lambda i, m: m(iss=DROP), R.MISSING_CLAIM),
    ("account-id-string", lambda i, m: m(account_id="12345"), R.INVALID_CLAIM),
    ("account-id-float", lambda i, m: m(account_id=12345.0), R.INVALID_CLAIM),
    ("account-id-bool", lambda i, m: m(account_id=True), R.INVALID_CLAIM),
    ("account-id-negative", lambda i, m: m(account_id=-5), R.INVALID_CLAIM),
    ("user-id-string", lambda i, m: m(user_id="abc"), R.INVALID_CLAIM),
    ("garbage", lambda i, m: "this is not a token", R.MALFORMED),
    ("two-segments", lambda i, m: ".".join(m().split(".")[:2]), R.MALFORMED),
    ("empty", lambda i, m: "", R.MALFORMED),
    ("ten-kilobytes", lambda i, m: m(padding="x" * 10_000), R.MALFORMED),
    ("non-ascii", lambda i, m: m() + "ж", R.MALFORMED),
    ("payload-not-an-object", lambda i, m: forge({"alg": "HS256"}, [1, 2, 3]), R.MALFORMED),
]


@pytest.mark.django_db
@pytest.mark.parametrize("name,build,reason", BAD_TOKENS, ids=[case[0] for case in BAD_TOKENS])
def test_bad_token_gets_401_and_no_row(client, integration, make_token, name, build, reason):
    token = build(integration, make_token)
    response = client.post(URL, {"phone": "+79123456789", "text": "Код: 1234", "token": token})
    assert response.status_code == 401, response.content
    body = response.json()
    assert body["detail"]
    if reason is not None:
        assert body["code"] == reason
    assert not Delivery.objects.exists()
    assert not Account.objects.exists()


def test_bad_token_table_is_large_enough():
    assert len(BAD_TOKENS) >= 25


@pytest.mark.django_db
def test_missing_token_field_gets_401(client, integration):
    response = client.post(URL, {"phone": "+79123456789", "text": "Код: 1234"})
    assert response.status_code == 401
    assert response.json()["code"] == R.MALFORMED


@pytest.mark.django_db
def test_inactive_integration_is_unknown(client, integration, make_token):
    integration.is_active = False
    integration.save()
    response = client.post(URL, {"phone": "+79123456789", "text": "x", "token": make_token()})
    assert response.status_code == 401
    assert response.json()["code"] == R.UNKNOWN_INTEGRATION


@pytest.mark.django_db
def test_valid_token_claims(integration, make_token):
    claims = verify_token(make_token(user_id=42, is_admin=True))
    assert claims.integration_id == integration.pk
    assert claims.account_id == 12345
    assert (claims.subdomain, claims.domain) == ("acme", "amocrm.ru")
    assert claims.user_id == 42 and claims.is_admin is True
    assert claims.client_uuid == integration.client_uuid


@pytest.mark.django_db
@pytest.mark.parametrize("iss,domain", [("https://shop.amocrm.com", "amocrm.com"), ("https://shop.kommo.com", "kommo.com"),
                                        ("https://SHOP.amocrm.ru/", "amocrm.ru")])
def test_every_amocrm_domain_is_accepted(make_token, iss, domain):
    claims = verify_token(make_token(iss=iss, subdomain=DROP))
    assert claims.subdomain == "shop" and claims.domain == domain


@pytest.mark.django_db
def test_optional_claims_may_be_absent(integration, make_token):
    claims = verify_token(make_token(user_id=DROP, is_admin=DROP, subdomain=DROP, nbf=DROP))
    assert claims.user_id is None and claims.is_admin is False


@pytest.mark.django_db
def test_without_client_uuid_the_audience_names_the_integration(integration, make_token):
    claims = verify_token(make_token(client_uuid=DROP))
    assert claims.integration_id == integration.pk


@pytest.mark.django_db
def test_small_clock_skew_is_tolerated(make_token, settings):
    settings.SMSGATE_TOKEN_LEEWAY = 30
    verify_token(make_token(iat=now() + 10, nbf=now() + 10, exp=now() + 1810))
    verify_token(make_token(iat=now() - 1815, nbf=now() - 1815, exp=now() - 15))


@pytest.mark.django_db
def test_integration_from_environment_is_created_on_first_token(client, settings):
    settings.AMO_CLIENT_ID = str(uuid.uuid4())
    settings.AMO_CLIENT_SECRET = SECRET
    settings.AMO_REDIRECT_URI = "https://gate.example.org/amocrm/oauth"
    token = jwt.encode({"iss": "https://acme.amocrm.ru", "aud": "https://gate.example.org", "jti": "j1",
                        "iat": now(), "exp": now() + 1800, "account_id": 1, "client_uuid": settings.AMO_CLIENT_ID},
                       SECRET, algorithm="HS256")
    assert verify_token(token).account_id == 1


# --- Salesbot's bot tokens: HS512 through their own entry point only ------------------------------------------
def bot_claims(**overrides) -> dict:
    """A bot token's claims as amoCRM signs them (tests/fakes/amocrm/outgoing.bot_token): no jti, no client_uuid."""
    issued = now()
    claims = {"iss": "https://acme.amocrm.ru", "aud": AUDIENCE, "iat": issued, "nbf": issued, "exp": issued + 1800,
              "account_id": 12345, "subdomain": "acme", "entity_type": 2, "entity_id": 777, "bot_type": "salesbot"}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not DROP}


def test_a_bot_token_is_verified_by_its_own_entry_point(integration):
    from accounts.tokens import verify_bot_token

    claims = verify_bot_token(jwt.encode(bot_claims(), SECRET, algorithm="HS512"))
    assert (claims.integration_id, claims.account_id, claims.subdomain, claims.entity_type, claims.entity_id,
            claims.bot_type) == (integration.pk, 12345, "acme", "leads", 777, "salesbot")


def test_the_integration_of_a_bot_token_is_found_among_those_with_its_audience(integration):
    """Two integrations on one host: the bot token names none, its signature tells which."""
    from accounts.models import Integration
    from accounts.tokens import verify_bot_token

    other = Integration.objects.create(name="second widget", client_uuid=uuid.uuid4(),
                                       client_secret="second-secret-" + "z" * 50,
                                       redirect_uri="https://smsgate.example.com/other/oauth")
    token = jwt.encode(bot_claims(), other.client_secret, algorithm="HS512")
    assert verify_bot_token(token).integration_id == other.pk
    assert verify_bot_token(jwt.encode(bot_claims(), SECRET, algorithm="HS512")).integration_id == integration.pk


@pytest.mark.parametrize("token_of, reason", [
    (lambda: jwt.encode(bot_claims(), SECRET, algorithm="HS256"), R.BOT_ALGORITHM),
    (lambda: jwt.encode(bot_claims(), SECRET, algorithm="HS384"), R.BOT_ALGORITHM),
    (lambda: forge({"alg": "none", "typ": "JWT"}, bot_claims()), R.BOT_ALGORITHM),
    (lambda: jwt.encode(bot_claims(), "wrong-" + "x" * 58, algorithm="HS512"), R.SIGNATURE),
    (lambda: jwt.encode(bot_claims(iat=now() - 4000, nbf=now() - 4000, exp=now() - 2200), SECRET,
                        algorithm="HS512"), R.EXPIRED),
    (lambda: jwt.encode(bot_claims(exp=now() + 7200), SECRET, algorithm="HS512"), R.LIFETIME),
    (lambda: jwt.encode(bot_claims(aud=DROP), SECRET, algorithm="HS512"), R.UNKNOWN_INTEGRATION),
    (lambda: jwt.encode(bot_claims(aud="https://elsewhere.example.com"), SECRET, algorithm="HS512"),
     R.UNKNOWN_INTEGRATION),
    (lambda: jwt.encode(bot_claims(entity_id=DROP), SECRET, algorithm="HS512"), R.MISSING_CLAIM),
    (lambda: jwt.encode(bot_claims(entity_type=3.5), SECRET, algorithm="HS512"), R.INVALID_CLAIM),
    (lambda: jwt.encode(bot_claims(account_id="１２３"), SECRET, algorithm="HS512"), R.INVALID_CLAIM),
    (lambda: jwt.encode(bot_claims(iss="https://acme.evil.com"), SECRET, algorithm="HS512"), R.ISSUER),
])
def test_bad_bot_tokens_are_refused(integration, token_of, reason):
    from accounts.tokens import TokenError, verify_bot_token

    with pytest.raises(TokenError) as refused:
        verify_bot_token(token_of())
    assert refused.value.reason == reason


def test_hs512_is_refused_everywhere_but_the_salesbot_endpoint(client, integration, make_token):
    """The one verifier's HS256 entry point refuses a bot token and any HS512 token: the system-SMS endpoint and
    the account API answer 401 and record nothing."""
    bot = jwt.encode(bot_claims(), SECRET, algorithm="HS512")
    hs512 = make_token(algorithm="HS512")
    for token in (bot, hs512):
        with pytest.raises(Exception) as refused:
            verify_token(token)
        assert refused.value.reason == R.ALGORITHM
        sms = client.post(URL, {"token": token, "phone": "+79161234567", "message": "code 1234"})
        assert sms.status_code == 401 and sms.json()["code"] == "unsupported_algorithm"
        api = client.get("/api/v1/templates/", HTTP_X_AUTH_TOKEN=token)
        assert api.status_code == 401, api.content
    assert not Delivery.objects.exists() and not Account.objects.exists()
