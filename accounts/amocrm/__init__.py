"""Every call from smsgate to amoCRM goes through this package: `oauth` (install code exchange, token
refresh), `tokens` (the stored pair, refreshed one process at a time), `api` (API v4 with the stored
pair: `AmoClient`) and `ratelimit` (7 requests/s per account across processes). AMO_BASE_URL points all of them at a stand-in (tests, staging, the fake amoCRM)."""

from .api import (
    AmoAccountRefused,
    AmoAmbiguous,
    AmoApiError,
    AmoBlocked,
    AmoClient,
    AmoNotConnected,
    AmoPaymentRequired,
    AmoRateLimited,
    AmoRejected,
    AmoTemporary,
    AmoUnauthorized,
)
from .tokens import amo_token_refresh, amo_tokens_refresh_due
from .oauth import (
    AmoOAuthError,
    AmoUnavailable,
    TokenPair,
    account_host_parse,
    account_id_fetch,
    base_url,
    code_exchange,
    oauth_url,
    token_refresh,
)

__all__ = [
    "AmoAccountRefused", "AmoAmbiguous", "AmoApiError", "AmoBlocked", "AmoClient", "AmoNotConnected",
    "AmoOAuthError", "AmoPaymentRequired", "AmoRateLimited", "AmoRejected", "AmoTemporary", "AmoUnauthorized",
    "AmoUnavailable", "TokenPair", "account_host_parse", "account_id_fetch", "base_url", "code_exchange",
    "oauth_url", "token_refresh", "amo_token_refresh", "amo_tokens_refresh_due",
]
