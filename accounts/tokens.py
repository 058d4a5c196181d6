"""The one place where an amoCRM one-time token (a JWT) is verified.

Both the system-SMS endpoint and the account API call `verify_token`. The checks: HS256 only;
the integration is found by `client_uuid` (or, when that claim is absent, by `aud`) and the
signature is checked with its secret; `aud` equals scheme://host of that integration's redirect
URI; `exp`/`nbf`/`iat` within a small bounded leeway; `iat` not in the future; a lifetime of at
most an hour; `iss` a https://<subdomain>.amocrm.ru|amocrm.com|kommo.com address agreeing with
`subdomain`; `jti`, `account_id`, `iss`, `exp`, `iat` present and well typed.

Salesbot's bot tokens (the `widget_request` step) are a different kind and have their own entry point,
`verify_bot_token`, called only by that endpoint: HS512 (as the official SDK's `parseBotDisposableToken`
checks them; HS512 is accepted nowhere else, and HS256 is not accepted there); no `client_uuid` and no
`jti`, so the integration is found by `aud` and the signature (each integration with that audience is
tried); the same time, lifetime and issuer checks; `account_id`, `entity_type`, `entity_id` required.

What the two kinds share is checked once, by `_checked_payload` (the token's shape, its algorithm, the
signature with one of the integration's keys, `aud`, `exp`/`nbf`/`iat` within the leeway, the required
claims, the time claims' types and the lifetime) and `_issuer_of` (`iss` and `subdomain`); each entry point
adds its own claims, in the same order as before, so a token with several faults is refused for the same one.
"""

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from urllib.parse import urlsplit

import jwt
from django.conf import settings
from django.utils.translation import gettext_lazy as _

from smsgate.inputs import BIGINT_MAX

from . import selectors

ALGORITHM = "HS256"
BOT_ALGORITHM = "HS512"  # Salesbot's bot tokens: accepted by verify_bot_token only
BOT_REQUIRED_CLAIMS = ["exp", "iat", "account_id", "iss", "aud", "entity_type", "entity_id"]
# amoCRM's element types a bot may run on (2 lead, 1 contact, 12 customer, 3 company).
BOT_ENTITY_TYPES = {1: "contacts", 2: "leads", 3: "companies", 12: "customers"}
MAX_TOKEN_LENGTH = 4096  # a real token is ~500 bytes; anything far larger is not from amoCRM
MAX_LIFETIME_SECONDS = 3600
MAX_JTI_LENGTH = 128
REQUIRED_CLAIMS = ["exp", "iat", "jti", "account_id", "iss"]
_ISSUER_HOST = re.compile(
    r"^(?P<subdomain>[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)\.(?P<domain>amocrm\.ru|amocrm\.com|kommo\.com)$"
)


class TokenErrorReason(StrEnum):
    MALFORMED = "malformed_token"
    ALGORITHM = "unsupported_algorithm"
    UNKNOWN_INTEGRATION = "unknown_integration"
    SIGNATURE = "bad_signature"
    EXPIRED = "token_expired"
    NOT_YET_VALID = "token_not_yet_valid"
    ISSUED_IN_FUTURE = "issued_in_future"
    LIFETIME = "lifetime_too_long"
    AUDIENCE = "bad_audience"
    MISSING_CLAIM = "missing_claim"
    INVALID_CLAIM = "invalid_claim"
    ISSUER = "bad_issuer"
    BOT_ALGORITHM = "unsupported_bot_algorithm"


_MESSAGES = {
    TokenErrorReason.MALFORMED: _("The token is not a well-formed JWT."),
    TokenErrorReason.ALGORITHM: _("The token is not signed with HS256."),
    TokenErrorReason.UNKNOWN_INTEGRATION: _("The token comes from an integration this service does not know."),
    TokenErrorReason.SIGNATURE: _("The token signature is not valid."),
    TokenErrorReason.EXPIRED: _("The token has expired."),
    TokenErrorReason.NOT_YET_VALID: _("The token is not valid yet."),
    TokenErrorReason.ISSUED_IN_FUTURE: _("The token was issued in the future."),
    TokenErrorReason.LIFETIME: _("The token lives longer than one hour."),
    TokenErrorReason.AUDIENCE: _("The token was issued for a different service."),
    TokenErrorReason.MISSING_CLAIM: _("The token lacks a required claim."),
    TokenErrorReason.INVALID_CLAIM: _("The token has a claim of the wrong type or value."),
    TokenErrorReason.ISSUER: _("The token was not issued by an amoCRM or Kommo account."),
    TokenErrorReason.BOT_ALGORITHM: _("The bot token is not signed with HS512."),
}


class TokenError(Exception):
    """Any reason a token is refused; `reason` is machine-readable, `message` is for people."""

    def __init__(self, reason: TokenErrorReason, detail: str = ""):
        self.reason = reason
        self.detail = detail  # internal detail for logs (never the token itself)
        super().__init__(f"{reason}: {detail}" if detail else str(reason))

    @property
    def message(self):
        return _MESSAGES[self.reason]


@dataclass(frozen=True, slots=True)
class TokenClaims:
    integration_id: int
    account_id: int
    subdomain: str
    domain: str
    jti: str
    issued_at: datetime
    expires_at: datetime
    client_uuid: uuid.UUID | None
    user_id: int | None
    is_admin: bool

    @property
    def account_host(self) -> str:
        return f"{self.subdomain}.{self.domain}"


def _leeway() -> int:
    return max(0, min(int(settings.SMSGATE_TOKEN_LEEWAY), 120))


def _is_int(value) -> bool:
    """An integer claim that fits the bigint column it may reach (account_id, user_id)."""
    return isinstance(value, int) and not isinstance(value, bool) and -BIGINT_MAX <= value <= BIGINT_MAX


def _is_number(value) -> bool:
    """A time claim: a finite number in the range of a bigint (NaN and infinities compare false)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and -BIGINT_MAX <= value <= BIGINT_MAX


def _checked_payload(token, *, algorithm: str, wrong_algorithm: TokenErrorReason, required: list[str],
                     keys_of) -> tuple[dict, int]:
    """The checks every kind of token shares, in this order: a non-empty ASCII string of bounded length that
    decodes as a JWT; signed with `algorithm` (else `wrong_algorithm`); the integration's keys, `keys_of(the
    unverified claims)` (it raises when there are none); the signature with one of them, `aud` equal to that
    integration's audience, `exp`/`nbf`/`iat` within the leeway and the `required` claims present (PyJWT);
    then `iat`/`exp`/`nbf` numbers, `exp` after `iat` and a lifetime of at most an hour.
    Returns the payload and the integration's id, or raises TokenError."""
    if not isinstance(token, str) or not token:
        raise TokenError(TokenErrorReason.MALFORMED, "empty")
    if len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        raise TokenError(TokenErrorReason.MALFORMED, "too long or not ASCII")
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError as exc:
        raise TokenError(TokenErrorReason.MALFORMED, type(exc).__name__) from None
    if header.get("alg") != algorithm:
        raise TokenError(wrong_algorithm, str(header.get("alg"))[:20])

    for key in keys_of(unverified):
        try:
            payload = jwt.decode(
                token,
                key.secret,
                algorithms=[algorithm],
                audience=key.audience,
                leeway=_leeway(),
                options={"require": required, "strict_aud": True, "verify_iat": True},
            )
        except jwt.InvalidSignatureError:
            continue
        except jwt.InvalidTokenError as exc:
            raise _translate(exc) from None
        break
    else:
        raise TokenError(TokenErrorReason.SIGNATURE)

    iat, exp = payload["iat"], payload["exp"]
    if not (_is_number(iat) and _is_number(exp)):
        raise TokenError(TokenErrorReason.INVALID_CLAIM, "iat/exp")
    if "nbf" in payload and not _is_number(payload["nbf"]):
        raise TokenError(TokenErrorReason.INVALID_CLAIM, "nbf")
    if exp <= iat:
        raise TokenError(TokenErrorReason.INVALID_CLAIM, "exp before iat")
    if exp - iat > MAX_LIFETIME_SECONDS:
        raise TokenError(TokenErrorReason.LIFETIME)
    return payload, key.integration_id


def _issuer_of(payload: dict) -> tuple[str, str]:
    """(subdomain, domain) of `iss`, an amoCRM or Kommo account's address that the `subdomain` claim, when
    there is one, agrees with."""
    subdomain, domain = _parse_issuer(payload["iss"])
    claimed_subdomain = payload.get("subdomain")
    if claimed_subdomain is not None and (
        not isinstance(claimed_subdomain, str) or claimed_subdomain.lower() != subdomain
    ):
        raise TokenError(TokenErrorReason.ISSUER, "iss and subdomain disagree")
    return subdomain, domain


def verify_token(token) -> TokenClaims:
    """Verify an amoCRM one-time token; return its claims or raise TokenError."""
    payload, integration_id = _checked_payload(token, algorithm=ALGORITHM, wrong_algorithm=TokenErrorReason.ALGORITHM,
                                               required=REQUIRED_CLAIMS, keys_of=_candidate_keys)
    return _claims_from_payload(payload, integration_id)


@dataclass(frozen=True, slots=True)
class BotTokenClaims:
    integration_id: int
    account_id: int
    subdomain: str
    domain: str
    entity_type: str  # "leads" | "contacts" | "companies" | "customers"
    entity_id: int
    bot_type: str  # "salesbot" | "marketingbot"
    issued_at: datetime
    expires_at: datetime


def verify_bot_token(token) -> BotTokenClaims:
    """Verify a Salesbot bot token (HS512, found by `aud` and the signature); its claims or TokenError.
    Only the Salesbot endpoint calls this: every other endpoint stays on `verify_token` (HS256 only)."""
    payload, integration_id = _checked_payload(token, algorithm=BOT_ALGORITHM,
                                               wrong_algorithm=TokenErrorReason.BOT_ALGORITHM,
                                               required=BOT_REQUIRED_CLAIMS, keys_of=_bot_keys)
    return _bot_claims_from_payload(payload, integration_id)


def _bot_keys(unverified: dict):
    """A bot token has no `client_uuid`: each integration with its audience is tried."""
    audience = unverified.get("aud")
    keys = selectors.integration_keys_by_audience(audience) if isinstance(audience, str) and audience else []
    if not keys:
        raise TokenError(TokenErrorReason.UNKNOWN_INTEGRATION, "no integration for the bot token's aud")
    return keys


def _small_int(value) -> int | None:
    """A JSON integer, or ASCII digits (the SDK casts with (int)); None for anything else."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        value = int(value)
    return value if _is_int(value) else None


def _bot_claims_from_payload(payload: dict, integration_id: int) -> BotTokenClaims:
    """The bot's own claims, once `_checked_payload` has passed the token."""
    iat, exp = payload["iat"], payload["exp"]
    account_id = _small_int(payload["account_id"])
    if account_id is None or account_id <= 0:
        raise TokenError(TokenErrorReason.INVALID_CLAIM, "account_id")
    entity_type = BOT_ENTITY_TYPES.get(_small_int(payload["entity_type"]))
    if entity_type is None:
        raise TokenError(TokenErrorReason.INVALID_CLAIM, "entity_type")
    entity_id = _small_int(payload["entity_id"])
    if entity_id is None or not 0 < entity_id <= 2**53:
        raise TokenError(TokenErrorReason.INVALID_CLAIM, "entity_id")
    bot_type = payload.get("bot_type") or "salesbot"
    if bot_type not in ("salesbot", "marketingbot"):
        raise TokenError(TokenErrorReason.INVALID_CLAIM, "bot_type")
    subdomain, domain = _issuer_of(payload)
    return BotTokenClaims(
        integration_id=integration_id,
        account_id=account_id,
        subdomain=subdomain,
        domain=domain,
        entity_type=entity_type,
        entity_id=entity_id,
        bot_type=bot_type,
        issued_at=datetime.fromtimestamp(iat, tz=UTC),
        expires_at=datetime.fromtimestamp(exp, tz=UTC),
    )


def _candidate_keys(unverified: dict):
    raw_uuid = unverified.get("client_uuid")
    if raw_uuid is not None:
        try:
            # ASCII only: uuid.UUID() reads hex digits with int(), which takes any script's digits.
            client_uuid = uuid.UUID(raw_uuid) if isinstance(raw_uuid, str) and raw_uuid.isascii() else None
        except ValueError:
            client_uuid = None
        if client_uuid is None:
            raise TokenError(TokenErrorReason.INVALID_CLAIM, "client_uuid")
        key = selectors.integration_key_by_uuid(client_uuid)
        if key is None:
            raise TokenError(TokenErrorReason.UNKNOWN_INTEGRATION)
        return [key]
    # `client_uuid` may be absent: the audience then names the integration (one deployment host).
    audience = unverified.get("aud")
    keys = selectors.integration_keys_by_audience(audience) if isinstance(audience, str) else []
    if not keys:
        raise TokenError(TokenErrorReason.UNKNOWN_INTEGRATION, "no client_uuid and no integration for aud")
    return keys


def _translate(exc: jwt.InvalidTokenError) -> TokenError:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return TokenError(TokenErrorReason.EXPIRED)
    if isinstance(exc, jwt.ImmatureSignatureError):
        if "(iat)" in str(exc):
            return TokenError(TokenErrorReason.ISSUED_IN_FUTURE)
        return TokenError(TokenErrorReason.NOT_YET_VALID)
    if isinstance(exc, jwt.InvalidAudienceError):
        return TokenError(TokenErrorReason.AUDIENCE)
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return TokenError(TokenErrorReason.MISSING_CLAIM, exc.claim)
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return TokenError(TokenErrorReason.ALGORITHM)
    if isinstance(exc, (jwt.InvalidIssuedAtError, jwt.InvalidIssuerError)):
        return TokenError(TokenErrorReason.INVALID_CLAIM, type(exc).__name__)
    return TokenError(TokenErrorReason.MALFORMED, type(exc).__name__)


def _claims_from_payload(payload: dict, integration_id: int) -> TokenClaims:
    """The SMS endpoint's own claims, once `_checked_payload` has passed the token."""
    iat, exp = payload["iat"], payload["exp"]
    account_id = payload["account_id"]
    if not _is_int(account_id) or account_id <= 0:
        raise TokenError(TokenErrorReason.INVALID_CLAIM, "account_id")
    jti = payload["jti"]
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_LENGTH or not jti.isprintable():
        raise TokenError(TokenErrorReason.INVALID_CLAIM, "jti")

    subdomain, domain = _issuer_of(payload)

    user_id = payload.get("user_id")
    if user_id is not None and (not _is_int(user_id) or user_id < 0):
        raise TokenError(TokenErrorReason.INVALID_CLAIM, "user_id")
    is_admin = payload.get("is_admin", False)
    if is_admin is None:
        is_admin = False
    if not isinstance(is_admin, bool) and is_admin not in (0, 1):
        raise TokenError(TokenErrorReason.INVALID_CLAIM, "is_admin")
    raw_uuid = payload.get("client_uuid")

    return TokenClaims(
        integration_id=integration_id,
        account_id=account_id,
        subdomain=subdomain,
        domain=domain,
        jti=jti,
        issued_at=datetime.fromtimestamp(iat, tz=UTC),
        expires_at=datetime.fromtimestamp(exp, tz=UTC),
        client_uuid=uuid.UUID(raw_uuid) if raw_uuid else None,
        user_id=user_id,
        is_admin=bool(is_admin),
    )


def _parse_issuer(iss) -> tuple[str, str]:
    if not isinstance(iss, str) or len(iss) > 200:
        raise TokenError(TokenErrorReason.ISSUER, "not a string")
    try:
        parts = urlsplit(iss)
        port = parts.port
    except ValueError:
        raise TokenError(TokenErrorReason.ISSUER, "not a URL") from None
    if (
        parts.scheme != "https"
        or port is not None
        or parts.username is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise TokenError(TokenErrorReason.ISSUER, "not https://<host>")
    match = _ISSUER_HOST.match(parts.hostname or "")
    if not match:
        raise TokenError(TokenErrorReason.ISSUER, "foreign host")
    return match["subdomain"], match["domain"]


def issue_token(
    *,
    integration,
    account_id: int,
    subdomain: str,
    domain: str = "amocrm.ru",
    ttl: int = 1800,
    user_id: int | None = None,
    is_admin: bool = False,
    jti: str | None = None,
) -> str:
    """Sign a token exactly as amoCRM does (for `manage.py amo_token`, demos and tests)."""
    now = int(datetime.now(tz=UTC).timestamp())
    payload = {
        "iss": f"https://{subdomain}.{domain}",
        "aud": integration.audience,
        "jti": jti or str(uuid.uuid4()),
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "account_id": account_id,
        "subdomain": subdomain,
        "client_uuid": str(integration.client_uuid),
        "is_admin": is_admin,
    }
    if user_id is not None:
        payload["user_id"] = user_id
    return jwt.encode(payload, integration.client_secret, algorithm=ALGORITHM)
