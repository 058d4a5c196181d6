"""amoCRM OAuth: exchange an install's code, refresh a token pair, read an account's id.

Kept apart from `routes/providers/http.py` because its errors mean something else here: there
is no SMS that could go out twice, only a code or a refresh token that may have been spent. The API
v4 calls made with the stored pair go through `api.AmoClient`; both use `base_url` (AMO_BASE_URL).
"""

import base64
import json
import re
from dataclasses import dataclass, field
from datetime import timedelta

import httpx
from django.conf import settings

from smsgate.inputs import db_id

# amoCRM gives the redirect URI 3 seconds; the exchange must fit in what is left of them.
EXCHANGE_TIMEOUT = httpx.Timeout(connect=1.0, read=2.0, write=1.0, pool=1.0)
REFRESH_TIMEOUT = httpx.Timeout(connect=3.0, read=10.0, write=3.0, pool=3.0)
USER_AGENT = "smsgate/1.0"
_ACCOUNT_HOST = re.compile(
    r"^(?P<subdomain>[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)\.(?P<domain>amocrm\.ru|amocrm\.com|kommo\.com)$"
)
_API_DOMAIN = re.compile(r"^[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:amocrm\.ru|amocrm\.com|kommo\.com)$")


class AmoOAuthError(Exception):
    """amoCRM refused the grant (a bad, expired or spent code or refresh token): do not retry."""

    def __init__(self, message: str, *, status: int | None = None):
        self.status = status
        super().__init__(message)


class AmoUnavailable(Exception):
    """No usable answer (connection, timeout, 5xx, garbage): the grant may or may not be spent."""


@dataclass(frozen=True)
class TokenPair:
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_in: int
    account_id: int | None  # from the access token's claims, when it carries them
    api_domain: str

    @property
    def lifetime(self) -> timedelta:
        return timedelta(seconds=self.expires_in)


def account_host_parse(referer) -> tuple[str, str] | None:
    """(subdomain, domain) of an amoCRM/Kommo account host such as `acme.amocrm.ru`, else None.

    amoCRM sends the bare host; a scheme, a port or a path is tolerated only around a valid host.
    """
    if not isinstance(referer, str) or not 0 < len(referer) <= 200 or not referer.isascii():
        return None  # ASCII first: lower() maps some other letters to ASCII ones (KELVIN SIGN -> "k")
    host = referer.strip().lower()
    host = re.sub(r"^https?://", "", host).split("/", 1)[0]
    match = _ACCOUNT_HOST.match(host)
    if not match:
        return None
    return match["subdomain"], match["domain"]


def base_url(account_host: str) -> str:
    """Where every amoCRM call of an account goes: the account's own host (as amoCRM asks), or the
    stand-in of AMO_BASE_URL (tests, staging, `make run` against the fake amoCRM)."""
    return settings.AMO_BASE_URL or f"https://{account_host}"


def oauth_url(account_host: str) -> str:
    return f"{base_url(account_host)}/oauth2/access_token"


def _claims_unverified(access_token: str) -> dict:
    """The access token's payload. It came straight from the account's host over TLS; amoCRM signs
    it with a key we do not have, so we only read it."""
    try:
        payload = access_token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (IndexError, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def _pair_from_reply(response: httpx.Response) -> TokenPair:
    if response.status_code >= 500:
        raise AmoUnavailable(f"HTTP {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code in (400, 401, 403):
        hint = (body.get("hint") or body.get("detail") or body.get("title")) if isinstance(body, dict) else ""
        raise AmoOAuthError(str(hint or f"HTTP {response.status_code}")[:150], status=response.status_code)
    if response.status_code != 200 or not isinstance(body, dict):
        raise AmoUnavailable(f"unexpected reply: HTTP {response.status_code}")
    access, refresh, expires_in = body.get("access_token"), body.get("refresh_token"), body.get("expires_in")
    if not (isinstance(access, str) and access and isinstance(refresh, str) and refresh):
        raise AmoUnavailable("reply without tokens")
    if not isinstance(expires_in, int) or isinstance(expires_in, bool) or not 60 <= expires_in <= 5 * 366 * 86400:
        raise AmoUnavailable("reply without a usable expires_in")
    claims = _claims_unverified(access)
    account_id = claims.get("account_id")
    api_domain = claims.get("api_domain")
    return TokenPair(
        access_token=access,
        refresh_token=refresh,
        expires_in=expires_in,
        account_id=db_id(account_id) if isinstance(account_id, int) else None,  # None if not a bigint id
        api_domain=api_domain if isinstance(api_domain, str) and _API_DOMAIN.match(api_domain) else "",
    )


def _post(url: str, payload: dict, timeout: httpx.Timeout) -> httpx.Response:
    try:
        with httpx.Client(timeout=timeout, headers={"User-Agent": USER_AGENT}, follow_redirects=False) as client:
            return client.post(url, json=payload)
    except httpx.HTTPError as exc:
        raise AmoUnavailable(type(exc).__name__) from None


def code_exchange(*, account_host: str, client_id: str, client_secret: str, redirect_uri: str, code: str) -> TokenPair:
    response = _post(oauth_url(account_host), {
        "client_id": client_id, "client_secret": client_secret, "grant_type": "authorization_code",
        "code": code, "redirect_uri": redirect_uri,
    }, EXCHANGE_TIMEOUT)
    return _pair_from_reply(response)


def token_refresh(*, account_host: str, client_id: str, client_secret: str, redirect_uri: str,
                  refresh_token: str) -> TokenPair:
    response = _post(oauth_url(account_host), {
        "client_id": client_id, "client_secret": client_secret, "grant_type": "refresh_token",
        "refresh_token": refresh_token, "redirect_uri": redirect_uri,
    }, REFRESH_TIMEOUT)
    return _pair_from_reply(response)


def account_id_fetch(*, account_host: str, access_token: str) -> int:
    """`GET /api/v4/account` → id, for access tokens that do not carry `account_id`."""
    base = base_url(account_host)
    try:
        with httpx.Client(timeout=EXCHANGE_TIMEOUT, headers={"User-Agent": USER_AGENT}) as client:
            response = client.get(f"{base}/api/v4/account", headers={"Authorization": f"Bearer {access_token}"})
    except httpx.HTTPError as exc:
        raise AmoUnavailable(type(exc).__name__) from None
    try:
        account_id = response.json().get("id") if response.status_code == 200 else None
    except (ValueError, AttributeError):
        account_id = None
    if not isinstance(account_id, int) or db_id(account_id) is None:
        raise AmoUnavailable(f"no account id: HTTP {response.status_code}")
    return account_id
