"""Every call from smsgate to amoCRM goes through this package: `oauth` (install code exchange, token
refresh). AMO_BASE_URL points it at a stand-in (tests, staging, the fake amoCRM)."""

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

__all__ = ["AmoOAuthError", "AmoUnavailable", "TokenPair", "account_host_parse", "account_id_fetch", "base_url",
           "code_exchange", "oauth_url", "token_refresh"]
