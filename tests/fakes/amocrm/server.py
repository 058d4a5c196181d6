"""The fake amoCRM server: OAuth, the order in which every API v4 request is judged, and the helpers
tests call. See the package docstring for the rules."""

import secrets
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass

import jwt

from ..base import FakeProviderServer, FakeRequest, FakeResponse
from . import outgoing, views
from .model import AmoAccount, ApiCall, Ids

CODE_LIFETIME = 20 * 60
ACCESS_LIFETIME = 86400
WINDOW = 1.0  # seconds: the rate limit's sliding window


@dataclass
class Grant:
    account_id: int
    subdomain: str
    issued_at: float
    user_id: int | None = None
    used: bool = False


@dataclass
class AccessToken:
    account_id: int
    user_id: int
    expires_at: float  # time.time()
    revoked: bool = False


def _nginx_page(status: int, reason: str) -> FakeResponse:
    return FakeResponse(status, f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
                                f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
                                "</body>\r\n</html>\r\n", headers={"Content-Type": "text/html"})


class FakeAmoCRM(FakeProviderServer):
    slug = "amocrm"

    def __init__(self, *args, client_id: str = "", client_secret: str = "", redirect_uri: str = "",
                 opaque_access_tokens: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        # Empty client_id: any client is accepted at /oauth2/access_token (the standalone fake, unconfigured).
        self.client_id, self.client_secret, self.redirect_uri = client_id, client_secret, redirect_uri
        self.opaque_access_tokens = opaque_access_tokens
        self.expires_in = ACCESS_LIFETIME
        self.fail_with: int | str | None = None  # every answer, OAuth included: an HTTP status or "drop"
        self.codes: dict[str, Grant] = {}
        self.refresh_tokens: dict[str, Grant] = {}  # every refresh token ever issued -> its grant
        self.refresh_calls = 0
        self.accounts: dict[int, AmoAccount] = {}
        self.ids = Ids()
        self._tokens: dict[str, AccessToken] = {}  # every access token ever issued
        self._injected: deque[tuple[int | None, int | str]] = deque()  # fail_next: (account id or None, status)
        self._signing_key = secrets.token_hex(16)  # access tokens are signed by "amoCRM", not by the client
        self._state = threading.RLock()

    # --- accounts and seeding ------------------------------------------------------------------------
    def add_account(self, account_id: int, *, subdomain: str = "acme", name: str | None = None) -> AmoAccount:
        """The account with this id (created with an admin user, a main pipeline and the PHONE and EMAIL
        fields when new). Its switches: `limit_rps` (7; 0 = off), `blocked`, `unpaid`."""
        with self._state:
            if account_id not in self.accounts:
                self.accounts[account_id] = AmoAccount(self.ids, account_id, subdomain, name)
            return self.accounts[account_id]

    def account(self, account_id: int) -> AmoAccount:
        with self._state:
            return self.accounts[account_id]

    def add_user(self, account_id: int, name: str, *, email: str | None = None, is_admin: bool = False) -> int:
        with self._state:
            return self.account(account_id).add_user(name, email=email, is_admin=is_admin)

    def add_pipeline(self, account_id: int, name: str, statuses=None):
        with self._state:
            account = self.account(account_id)
            return account.add_pipeline(name, statuses) if statuses else account.add_pipeline(name)

    def add_custom_field(self, account_id: int, entity_type: str, name: str, field_type: str = "text", *,
                         code: str | None = None, enums=()) -> int:
        with self._state:
            return self.account(account_id).add_field(entity_type, name, field_type, code=code, enums=enums).id

    def add_contact(self, account_id: int, **fields) -> int:
        with self._state:
            return self.account(account_id).add_contact(**fields)

    def add_lead(self, account_id: int, **fields) -> int:
        with self._state:
            return self.account(account_id).add_lead(**fields)

    def add_leads(self, account_id: int, count: int, *, phone_start: int = 79120000000, **fields) -> list[int]:
        """`count` leads, each with its own main contact and mobile phone (+79120000000, +79120000001, ...)."""
        with self._state:
            account = self.account(account_id)
            return [account.add_lead(contacts=[account.add_contact(
                name=f"Клиент {n + 1}", phones=[(f"+{phone_start + n}", "MOB")])], **fields) for n in range(count)]

    def add_company(self, account_id: int, name: str = "ООО Ромашка") -> int:
        with self._state:
            company_id = self.ids.next("company")
            self.account(account_id).companies[company_id] = {"id": company_id, "name": name}
            return company_id

    def add_customer(self, account_id: int, name: str = "Покупатель") -> int:
        with self._state:
            customer_id = self.ids.next("customer")
            self.account(account_id).customers[customer_id] = {"id": customer_id, "name": name}
            return customer_id

    def move_lead(self, account_id: int, lead_id: int, status_id: int, pipeline_id: int | None = None):
        with self._state:
            self.account(account_id).move_lead(lead_id, status_id, pipeline_id)

    # --- tokens ----------------------------------------------------------------------------------------------
    def issue_code(self, *, account_id: int, subdomain: str = "acme", age: float = 0.0) -> str:
        code = "def50200" + secrets.token_hex(60)
        with self._state:
            self.add_account(account_id, subdomain=subdomain)
            self.codes[code] = Grant(account_id, subdomain, time.time() - age)
        return code

    def issue_token_pair(self, account_id: int, *, subdomain: str = "acme", user_id: int | None = None) -> dict:
        """A token pair without a code exchange (for tests that start installed): the token endpoint's reply."""
        with self._state:
            self.add_account(account_id, subdomain=subdomain)
            return self._new_pair(Grant(account_id, subdomain, time.time(), user_id))

    def expire_access_tokens(self, account_id: int):
        """The account's current access tokens answer 401 from now on (a client must refresh)."""
        with self._state:
            for token in self._tokens.values():
                if token.account_id == account_id:
                    token.expires_at = min(token.expires_at, time.time())

    def revoke_tokens(self, account_id: int):
        """As when an admin disables the integration: every access and refresh token of the account dies."""
        with self._state:
            for token in self._tokens.values():
                if token.account_id == account_id:
                    token.revoked = True
            for grant in self.refresh_tokens.values():
                if grant.account_id == account_id:
                    grant.used = True

    @property
    def access_tokens(self) -> dict[str, int]:
        """Live access token -> account id."""
        now = time.time()
        with self._state:
            return {t: a.account_id for t, a in self._tokens.items() if not a.revoked and a.expires_at > now}

    def live_refresh_tokens(self, account_id: int) -> list[str]:
        with self._state:
            return [t for t, g in self.refresh_tokens.items() if g.account_id == account_id and not g.used]

    # --- what a test reads ---------------------------------------------------------------------------------
    def request_log(self, account_id: int) -> list[ApiCall]:
        """Every /api/v4 request of the account in arrival order: method, path, query, status, at, wall."""
        with self._state:
            return [ApiCall(c.method, c.path, c.query, c.status, c.at, c.wall) for c in self.account(account_id).calls]

    def peak_rps(self, account_id: int) -> int:
        """The most requests that ARRIVED (accepted or refused) within any 1.0 s sliding window."""
        with self._state:
            times = [c.at for c in self.account(account_id).calls]
        best, start = 0, 0
        for end, at in enumerate(times):
            while at - times[start] >= WINDOW:
                start += 1
            best = max(best, end - start + 1)
        return best

    def refused_429(self, account_id: int) -> int:
        """Requests the rate limit refused (not those of `fail_next(..., 429)`)."""
        with self._state:
            return self.account(account_id).refused

    def notes(self, account_id: int, entity_type: str, entity_id: int | None = None,
              note_type: str | None = None) -> list[dict]:
        """The notes as API v4 reads them back (sms params with legacy upper-case keys read back as nulls)."""
        with self._state:
            account = self.account(account_id)
            return [n.to_api(account_id, self.url) for n in account.notes.values()
                    if n.entity_type == entity_type and entity_id in (None, n.entity_id)
                    and note_type in (None, n.note_type)]

    def tasks(self, account_id: int) -> list:
        with self._state:
            return list(self.account(account_id).tasks)

    def salesbot_continues(self, account_id: int) -> list:
        with self._state:
            return list(self.account(account_id).salesbot_continues)

    def pending_continues(self, account_id: int) -> list[int]:
        """Continue ids a bot is still waiting on."""
        with self._state:
            return list(self.account(account_id).salesbot_pending)

    # --- faults ------------------------------------------------------------------------------------------------
    def fail_next(self, n: int, status: int | str = 503, *, account_id: int | None = None):
        """The next `n` API v4 requests (of that account, or of any) get `status` (5xx, 429, or "drop") after
        passing the rate limit, unprocessed: for testing a client's retries."""
        with self._state:
            self._injected.extend([(account_id, status)] * n)

    def _take_injected(self, account_id: int | None):
        with self._state:
            for n, (wanted, status) in enumerate(self._injected):
                if wanted is None or wanted == account_id:
                    del self._injected[n]
                    return status
        return None

    # --- amoCRM's own calls to a widget ---------------------------------------------------------------------
    def dp_webhook_payload(self, account_id: int, lead_id: int, status_id: int | None = None,
                           pipeline_id: int | None = None, *, event_type: int = 15, settings: dict | None = None,
                           encoding: str = "form", element_type: int = 2, direction: str | None = "went_to_trigger",
                           event_time: int | None = None) -> tuple[bytes, str]:
        """(body, content type) of the digital-pipeline webhook for a lead entering a stage; the status and
        pipeline default to the lead's own. `settings`: the action's dp settings (the widget's key, text)."""
        with self._state:
            account = self.account(account_id)
            lead = account.leads.get(lead_id)
            if lead is None and status_id is None:
                raise ValueError(f"lead {lead_id} is not in the fake: pass its status_id")
            body = outgoing.dp_webhook_body(
                account_id=account_id, subdomain=account.subdomain, lead_id=lead_id,
                status_id=status_id if status_id is not None else lead.status_id,
                pipeline_id=pipeline_id if pipeline_id is not None else (lead.pipeline_id if lead else None),
                event_type=event_type, settings=settings or {}, element_type=element_type, direction=direction,
                event_time=event_time)
        return outgoing.encode(body, encoding)

    def salesbot_request(self, account_id: int, *, entity_id: int, entity_type=2, bot_id: int | None = None,
                         data: dict | None = None, aud: str | None = None, client_uuid: str | None = None,
                         bot_type: str = "salesbot", secret: str | None = None, algorithm: str = "HS512",
                         issued_at: int | None = None, lifetime: int = outgoing.BOT_TOKEN_LIFETIME,
                         extra_claims: dict | None = None) -> dict:
        """The JSON body Salesbot's `widget_request` step posts: {token, data, return_url}. `return_url` is
        this fake's continue endpoint with a fresh continue id (it works once). The token is signed with
        the client secret (or `secret`) by `algorithm`; forged or expired ones come from those arguments."""
        with self._state:
            account = self.account(account_id)
            bot_id = bot_id or self.ids.next("bot")
            continue_id = self.ids.next("continue")
            account.salesbot_pending[continue_id] = (bot_type, bot_id)
            subdomain = account.subdomain
        token = outgoing.bot_token(secret=self.client_secret if secret is None else secret, account_id=account_id,
                                   subdomain=subdomain, entity_type=entity_type, entity_id=entity_id,
                                   bot_type=bot_type, aud=aud, client_uuid=client_uuid, issued_at=issued_at,
                                   lifetime=lifetime, algorithm=algorithm, extra=extra_claims)
        return {"token": token, "data": data or {},
                "return_url": f"{self.url}/api/v4/{bot_type}/{bot_id}/continue/{continue_id}"}

    # --- arrival: the rate limit -------------------------------------------------------------------------------
    def _bearer(self, request: FakeRequest) -> str:
        return request.headers.get("authorization", "").removeprefix("Bearer ").strip()

    def admit(self, request: FakeRequest) -> FakeResponse | None:
        self._arrival.call = None
        if not request.path.startswith("/api/v4/"):
            return None
        with self._state:
            token = self._tokens.get(self._bearer(request))
            account = self.accounts.get(token.account_id) if token else None
            if account is None:
                return None  # no account to count it for: answered 401 below
            now = time.monotonic()  # taken under the lock, so arrivals are recorded in order
            call = ApiCall(request.method, request.path, request.raw_query, None, now, time.time())
            account.calls.append(call)
            self._arrival.call = call
            window = account.accepted
            while window and window[0] <= now - WINDOW:
                window.popleft()
            if account.limit_rps and len(window) >= account.limit_rps:
                account.refused += 1
                # The official SDK raises its "too many requests" error only for a 429 whose body is not
                # JSON (AmoCRMApiRequest::parseResponse; amocrm-api-php#517): an nginx page, not problem JSON.
                return _nginx_page(429, "Too Many Requests")
            window.append(now)
        return None

    def answered(self, request: FakeRequest, response: FakeResponse) -> None:
        call = getattr(self._arrival, "call", None)
        if call is not None:
            call.status = None if response.drop_connection else response.status

    def server_error(self, request: FakeRequest) -> FakeResponse:
        return _nginx_page(503, "Service Temporarily Unavailable")

    # --- protocol ------------------------------------------------------------------------------------------------
    def handle(self, request: FakeRequest) -> FakeResponse:
        if self.fail_with == "drop":
            return FakeResponse(drop_connection=True)
        if isinstance(self.fail_with, int):
            return FakeResponse(self.fail_with, "<html>502 Bad Gateway</html>")
        if request.path == "/oauth2/access_token" and request.method == "POST":
            return self._token(request)
        if request.path.startswith("/api/v4/"):
            return self._api(request)
        return views.problem(404, "Not Found", "Unknown path")

    def _api(self, request: FakeRequest) -> FakeResponse:
        """After the rate limit: injected faults, a blocked account (403), the token (401), an unpaid
        account (402), then the method itself."""
        with self._state:
            token = self._tokens.get(self._bearer(request))
            account = self.accounts.get(token.account_id) if token else None
            injected = self._take_injected(account.id if account else None)
            if injected == "drop":
                return FakeResponse(drop_connection=True)
            if injected == 429:
                return _nginx_page(429, "Too Many Requests")
            if injected is not None:
                return _nginx_page(injected, "Service Temporarily Unavailable")
            if account is not None and account.blocked:
                # A blocked account's API answers nginx's 403 page to everything (amocrm-api-php#434, #318).
                return _nginx_page(403, "Forbidden")
            if account is None or token.revoked or time.time() >= token.expires_at:
                # Kommo answers {"title":"Unauthorized",...,"detail":"Invalid user name or password"}.
                return views.problem(401, "Unauthorized", "Неверный логин или пароль")
            if account.unpaid:
                # error-codes: 402 "the subscription has ended" with HTTP 402; the body is not documented.
                return views.problem(402, "Payment Required", "Account is not paid")
            ctx = views.Ctx(account, token.user_id, request, views.php_query(request.raw_query), request.raw_query,
                            self.url)
            return views.dispatch(ctx)

    @staticmethod
    def _oauth_problem(detail: str, hint: str, status: int = 400) -> FakeResponse:
        return FakeResponse(status, {"hint": hint, "title": "Некорректный запрос",
                                     "type": "https://developers.amocrm.ru/v3/errors/OAuthProblemJson",
                                     "status": status, "detail": detail},
                            headers={"Content-Type": "application/problem+json"})

    def _token(self, request: FakeRequest) -> FakeResponse:
        if not request.headers.get("content-type", "").startswith("application/json"):
            return self._oauth_problem("Request body must be JSON", "Content-Type")
        try:
            body = request.json()
        except ValueError:
            return self._oauth_problem("Invalid JSON", "body")
        if not isinstance(body, dict):
            return self._oauth_problem("Invalid JSON", "body")
        if self.client_id and (body.get("client_id") != self.client_id
                               or body.get("client_secret") != self.client_secret):
            return self._oauth_problem("Client authentication failed", "Client not found", 401)
        if self.client_id and body.get("redirect_uri") != self.redirect_uri:
            return self._oauth_problem("The redirect URI does not match", "redirect_uri")
        grant_type = body.get("grant_type")
        with self._state:
            if grant_type == "authorization_code":
                grant = self.codes.get(body.get("code") or "")
                if grant is None or grant.used or time.time() - grant.issued_at > CODE_LIFETIME:
                    return self._oauth_problem("The authorization code is invalid.", "Authorization code has expired")
            elif grant_type == "refresh_token":
                self.refresh_calls += 1
                grant = self.refresh_tokens.get(body.get("refresh_token") or "")
                if grant is None or grant.used:
                    return self._oauth_problem("The refresh token is invalid.", "Token has been revoked")
            else:
                return self._oauth_problem("Unsupported grant type", "grant_type")
            grant.used = True  # codes and refresh tokens work once
            return FakeResponse(200, self._new_pair(grant))

    def _new_pair(self, grant: Grant) -> dict:
        account = self.add_account(grant.account_id, subdomain=grant.subdomain)
        user_id = grant.user_id or account.admin_id
        now = int(time.time())
        if self.opaque_access_tokens:
            access = secrets.token_urlsafe(48)
        else:
            access = jwt.encode({"aud": self.client_id, "jti": str(uuid.uuid4()), "iat": now, "nbf": now,
                                 "exp": now + self.expires_in, "sub": str(user_id), "grant_type": "",
                                 "account_id": grant.account_id, "base_domain": "amocrm.ru", "version": 2,
                                 "scopes": ["crm", "notifications"], "api_domain": "api-b.amocrm.ru"},
                                self._signing_key, algorithm="HS256")
        refresh = "def50200" + secrets.token_hex(100)
        self.refresh_tokens[refresh] = Grant(grant.account_id, account.subdomain, time.time(), user_id)
        self._tokens[access] = AccessToken(grant.account_id, user_id, now + self.expires_in)
        return {"token_type": "Bearer", "expires_in": self.expires_in, "server_time": now,
                "access_token": access, "refresh_token": refresh}
