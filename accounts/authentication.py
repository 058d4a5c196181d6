"""DRF authentication by amoCRM's one-time token in `X-Auth-Token` (what `$authorizedAjax` sends).

The token goes through `accounts.tokens.verify_token`, the one verifier. A repeated `jti` is not
refused here: amoCRM does not document one token per request for widget calls (platform notes
§1.5); replay matters only for the SMS endpoint, where `jti` is the idempotency key.
"""

import logging
from dataclasses import dataclass

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication

from .models import Account
from .services import account_register
from .tokens import TokenClaims, TokenError, verify_token

logger = logging.getLogger(__name__)

HEADER = "X-Auth-Token"


@dataclass(frozen=True)
class AmoPrincipal:
    """Who calls the API: an amoCRM user of one account (request.user)."""

    account: Account
    claims: TokenClaims

    is_authenticated = True
    is_anonymous = False

    @property
    def is_admin(self) -> bool:
        return self.claims.is_admin

    @property
    def pk(self):  # DRF throttles and loggers may ask for an id
        return self.claims.user_id


class TokenAuthenticationFailed(exceptions.AuthenticationFailed):
    def __init__(self, error: TokenError):
        super().__init__(detail=error.message, code=str(error.reason))


class AmoTokenAuthentication(BaseAuthentication):
    def authenticate(self, request):
        token = request.META.get("HTTP_X_AUTH_TOKEN")
        if token is None:
            return None  # DRF answers 401 (not authenticated) with WWW-Authenticate
        try:
            claims = verify_token(token)
        except TokenError as exc:
            logger.info("API token refused", extra={"reason": str(exc.reason), "detail": exc.detail})
            raise TokenAuthenticationFailed(exc) from None
        account = account_register(claims=claims)
        return AmoPrincipal(account=account, claims=claims), claims

    def authenticate_header(self, request):
        return f'{HEADER} realm="smsgate"'


class AmoTokenScheme(OpenApiAuthenticationExtension):
    target_class = AmoTokenAuthentication
    name = "amoToken"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": HEADER,
                "description": "amoCRM's one-time token (JWT), as `this.$authorizedAjax()` sends it."}
