"""Fake amoCRM OAuth server: `POST /oauth2/access_token` (code exchange and refresh) and
`GET /api/v4/account`, as documented (amocrm-platform.md §4.3).

- A code is issued by the test (`issue_code`), lives 20 minutes and works once.
- Access tokens are JWTs carrying `account_id` and `api_domain` (like tokens issued since 2024),
  or opaque strings with `opaque_access_tokens=True` (then only /api/v4/account tells the id).
- A refresh token works once: refreshing returns a new pair and kills the old refresh token.
- Errors answer 400 with amoCRM's problem JSON (`hint`, `title`, `type`, `status`, `detail`).
- `fail_with` makes the next answers an HTTP status (e.g. 500) or a dropped connection ("drop").
"""

import secrets
import threading
import time
import uuid
from dataclasses import dataclass

import jwt

from .base import FakeProviderServer, FakeRequest, FakeResponse, run_standalone

CODE_LIFETIME = 20 * 60
ACCESS_LIFETIME = 86400


@dataclass
class Grant:
    account_id: int
    subdomain: str
    issued_at: float
    used: bool = False


class FakeAmoCRM(FakeProviderServer):
    slug = "amocrm"

    def __init__(self, *args, client_id: str = "", client_secret: str = "", redirect_uri: str = "",
                 opaque_access_tokens: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.client_id, self.client_secret, self.redirect_uri = client_id, client_secret, redirect_uri
        self.opaque_access_tokens = opaque_access_tokens
        self.expires_in = ACCESS_LIFETIME
        self.fail_with: int | str | None = None
        self.codes: dict[str, Grant] = {}
        self.refresh_tokens: dict[str, Grant] = {}  # every refresh token ever issued -> its grant
        self.access_tokens: dict[str, int] = {}  # live access token -> account id
        self.refresh_calls = 0
        self._grant_lock = threading.Lock()

    # --- what tests call --------------------------------------------------------------------------
    def issue_code(self, *, account_id: int, subdomain: str = "acme", age: float = 0.0) -> str:
        code = "def50200" + secrets.token_hex(60)
        with self._grant_lock:
            self.codes[code] = Grant(account_id, subdomain, time.time() - age)
        return code

    def live_refresh_tokens(self, account_id: int) -> list[str]:
        with self._grant_lock:
            return [t for t, g in self.refresh_tokens.items() if g.account_id == account_id and not g.used]

    # --- protocol ------------------------------------------------------------------------------------
    def handle(self, request: FakeRequest) -> FakeResponse:
        if self.fail_with == "drop":
            return FakeResponse(drop_connection=True)
        if isinstance(self.fail_with, int):
            return FakeResponse(self.fail_with, "<html>502 Bad Gateway</html>")
        if request.path == "/oauth2/access_token" and request.method == "POST":
            return self._token(request)
        if request.path == "/api/v4/account" and request.method == "GET":
            return self._account(request)
        return FakeResponse(404, {"title": "Not Found", "status": 404})

    @staticmethod
    def _problem(detail: str, hint: str, status: int = 400) -> FakeResponse:
        return FakeResponse(status, {"hint": hint, "title": "Некорректный запрос",
                                     "type": "https://developers.amocrm.ru/v3/errors/OAuthProblemJson",
                                     "status": status, "detail": detail},
                            headers={"Content-Type": "application/problem+json"})

    def _token(self, request: FakeRequest) -> FakeResponse:
        if not request.headers.get("content-type", "").startswith("application/json"):
            return self._problem("Request body must be JSON", "Content-Type")
        try:
            body = request.json()
        except ValueError:
            return self._problem("Invalid JSON", "body")
        if not isinstance(body, dict):
            return self._problem("Invalid JSON", "body")
        if body.get("client_id") != self.client_id or body.get("client_secret") != self.client_secret:
            return self._problem("Client authentication failed", "Client not found", 401)
        if body.get("redirect_uri") != self.redirect_uri:
            return self._problem("The redirect URI does not match", "redirect_uri")
        grant_type = body.get("grant_type")
        with self._grant_lock:
            if grant_type == "authorization_code":
                grant = self.codes.get(body.get("code") or "")
                if grant is None or grant.used or time.time() - grant.issued_at > CODE_LIFETIME:
                    return self._problem("The authorization code is invalid.", "Authorization code has expired")
            elif grant_type == "refresh_token":
                self.refresh_calls += 1
                grant = self.refresh_tokens.get(body.get("refresh_token") or "")
                if grant is None or grant.used:
                    return self._problem("The refresh token is invalid.", "Token has been revoked")
            else:
                return self._problem("Unsupported grant type", "grant_type")
            grant.used = True  # codes and refresh tokens work once
            return FakeResponse(200, self._new_pair(grant))

    def _new_pair(self, grant: Grant) -> dict:
        now = int(time.time())
        if self.opaque_access_tokens:
            access = secrets.token_urlsafe(48)
        else:
            access = jwt.encode({"aud": self.client_id, "jti": str(uuid.uuid4()), "iat": now, "nbf": now,
                                 "exp": now + self.expires_in, "sub": "1000", "grant_type": "",
                                 "account_id": grant.account_id, "base_domain": "amocrm.ru", "version": 2,
                                 "scopes": ["crm", "notifications"], "api_domain": "api-b.amocrm.ru"},
                                secrets.token_hex(16), algorithm="HS256")
        refresh = "def50200" + secrets.token_hex(100)
        self.refresh_tokens[refresh] = Grant(grant.account_id, grant.subdomain, time.time())
        self.access_tokens[access] = grant.account_id
        return {"token_type": "Bearer", "expires_in": self.expires_in, "server_time": now,
                "access_token": access, "refresh_token": refresh}

    def _account(self, request: FakeRequest) -> FakeResponse:
        auth = request.headers.get("authorization", "")
        account_id = self.access_tokens.get(auth.removeprefix("Bearer "))
        if account_id is None:
            return FakeResponse(401, {"title": "Unauthorized", "status": 401})
        return FakeResponse(200, {"id": account_id, "name": "Acme", "subdomain": "acme", "country": "RU"})


if __name__ == "__main__":
    run_standalone(FakeAmoCRM)
