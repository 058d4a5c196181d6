"""The amoCRM API v4 client: the one seam through which smsgate reads and writes an account's amoCRM.

    client = AmoClient(account)          # AmoNotConnected if the account has no usable token pair
    lead = client.lead(123)              # a plain dict of amoCRM's JSON, None when amoCRM answers 204
    ids = client.add_notes("leads", [{"entity_id": 123, "request_id": "n-1", "note_type": "sms_out",
                                      "params": {"text": "...", "phone": "+7..."}}])   # {"n-1": note id}

What every call gets (amocrm-platform.md §4, §5, §5a):
- the account's stored OAuth pair, refreshed through `tokens.amo_token_refresh` (its lease makes one
  process spend a refresh token) when the access token is about to expire, or once after a 401; a pair
  another process refreshed meanwhile is re-read, not refreshed again;
- at most AMO_API_RPS requests per second per account across every process (ratelimit.py); a slot
  further away than `max_wait` raises AmoRateLimited at once instead of blocking a worker;
- 429 and 5xx retried with backoff and jitter (honouring Retry-After), a bounded number of times.
  A request that is not idempotent (POST) is retried only when amoCRM cannot have acted on it (429,
  503, no connection); after a 500/502/504 or a connection lost mid-request it raises AmoAmbiguous and
  the caller decides (for notes: look before writing again);
- 402 (unpaid) and a 403 that is not problem JSON (nginx's page of a blocked account) are recorded on
  the account (`Account.amo_api_status`, shown in the admin), raised and never retried; the next
  successful call clears them;
- no token, no query values and no bodies in logs: method, path, status, account id, latency.

httpx, like the OAuth calls: explicit connect/read/write/pool timeouts and distinct errors for "nothing
was sent" (ConnectError, ConnectTimeout, PoolTimeout) and "it may have arrived" (read/write failures).
urllib3 saves providers ~0.5 ms of CPU per call (routes/providers/http.py), which does not matter at
7 requests per second per account.

An AmoClient is cheap (one query for the token pair); make one per task or request, not per process, and
do not share one between threads.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import threading
import time
from datetime import timedelta
from urllib.parse import quote

import httpx
from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from ..models import Account, AmoApiStatus, AmoToken
from . import oauth
from .tokens import amo_token_refresh
from .ratelimit import SlotTooFar, limiter

logger = logging.getLogger(__name__)

API_TIMEOUT = httpx.Timeout(connect=3.0, read=15.0, write=5.0, pool=5.0)
USER_AGENT = oauth.USER_AGENT
MAX_BATCH = 250  # ids per filtered read and items per POST: amoCRM's page and batch limit
MAX_PAGES = 40  # a list read stops there (10,000 items): callers filter, they do not dump an account
ENTITY_TYPES = ("leads", "contacts", "companies", "customers")
ACCESS_TOKEN_MARGIN = timedelta(minutes=2)  # an access token expiring sooner is refreshed before use
REFRESH_WAIT = 15.0  # seconds to wait for another process's refresh (its call has oauth.REFRESH_TIMEOUT)
MAX_ATTEMPTS = 4  # per call, for 429, 5xx and connection failures (a 401 refresh is not counted)
BACKOFF = 0.5  # seconds before the first retry, doubled after each, with jitter
BACKOFF_CAP = 8.0
DEFAULT_MAX_WAIT = 10.0  # seconds a call may wait for a rate-limit slot or before a retry
# 503 is nginx refusing before the application (amoCRM's overload answer): a POST did not land.
NOT_PROCESSED_5XX = frozenset({503})


# --- errors ---------------------------------------------------------------------------------------
class AmoApiError(Exception):
    """A call to amoCRM's API failed. `message` is for people (translated); str() is for logs."""

    message = _("amoCRM refused the request.")

    def __init__(self, detail: str, *, account_id: int | None = None, status: int | None = None,
                 method: str = "", path: str = "", retry_after: float | None = None, body=None):
        self.detail, self.account_id, self.status = detail, account_id, status
        self.method, self.path, self.retry_after, self.body = method, path, retry_after, body
        where = f" ({method} {path})" if method else ""
        super().__init__(f"{detail}{where}")

    @property
    def validation_errors(self) -> list:
        """amoCRM's `validation-errors` of a 400: [{request_id, errors: [{code, path, detail}]}]."""
        errors = self.body.get("validation-errors") if isinstance(self.body, dict) else None
        return errors if isinstance(errors, list) else []


class AmoNotConnected(AmoApiError):
    """No token pair, or amoCRM refused its refresh (needs_reinstall): nothing to call with."""

    message = _("The account is not connected to amoCRM: install the widget again.")


class AmoUnauthorized(AmoApiError):
    """401 with a freshly refreshed access token: amoCRM no longer accepts this integration's tokens."""

    message = _("amoCRM does not accept the account's access token: install the widget again.")


class AmoAccountRefused(AmoApiError):
    """amoCRM refuses every call of the account (recorded on it); retrying does not help."""


class AmoPaymentRequired(AmoAccountRefused):
    message = _("The amoCRM account is not paid: amoCRM refuses API calls.")


class AmoBlocked(AmoAccountRefused):
    message = _("amoCRM has blocked API access for this account.")


class AmoRejected(AmoApiError):
    """A 4xx about the request itself (400 validation, 403 without rights, 404): do not repeat it as is."""


class AmoTemporary(AmoApiError):
    """No answer worth having after the retries (5xx, no connection, an unreadable answer, a token refresh
    that failed): try again later, after `retry_after` seconds when it is set."""

    message = _("amoCRM is not answering right now. Try again shortly.")


class AmoRateLimited(AmoTemporary):
    """The account's request budget is spent for longer than the caller waits (our limiter or amoCRM's 429)."""

    message = _("Too many requests to amoCRM right now. Try again in a few seconds.")


class AmoAmbiguous(AmoTemporary):
    """A request that is not idempotent may have been carried out (no answer, or 500/502/504): look
    before repeating it (for notes: `AmoClient.notes`), or a retry may duplicate it."""

    message = _("amoCRM did not confirm the request; it may have been carried out.")


# --- transport ------------------------------------------------------------------------------------
_http: tuple[int, httpx.Client] | None = None
_http_lock = threading.Lock()


def _http_client() -> httpx.Client:
    """One pooled client per process (thread-safe; re-created after a fork: sockets are not shared)."""
    global _http
    pid = os.getpid()
    if _http is None or _http[0] != pid:
        with _http_lock:
            if _http is None or _http[0] != pid:
                _http = (pid, httpx.Client(timeout=API_TIMEOUT, headers={"User-Agent": USER_AGENT},
                                           follow_redirects=False,
                                           limits=httpx.Limits(max_connections=64, max_keepalive_connections=16)))
    return _http[1]


def _query(params) -> str:
    """amoCRM's PHP-style query: keys keep their brackets (`filter[id][]`, shorter than %5B%5D: 250 ids
    must fit nginx's 8 KB request line), values are escaped; a list value repeats its key."""
    pairs = params.items() if isinstance(params, dict) else params
    parts = []
    for key, value in pairs:
        for item in value if isinstance(value, (list, tuple)) else [value]:
            parts.append(f"{quote(str(key), safe='[]')}={quote(str(item), safe=',')}")
    return "&".join(parts)


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("Retry-After", "").strip()
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - timezone.now()).total_seconds()) if when.tzinfo else None


def _json(response: httpx.Response):
    try:
        return response.json() if response.content else None
    except ValueError:
        return None


def _backoff(attempt: int) -> float:
    """Exponential, with half of it random so that processes retrying together spread out."""
    step = min(BACKOFF * 2 ** (attempt - 1), BACKOFF_CAP)
    return step / 2 + random.uniform(0, step / 2)


def _ids(values) -> list[int]:
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"an amoCRM id must be a positive int, not {value!r}")
        if value not in out:
            out.append(value)
    return out


def _entity_type(entity_type: str) -> str:
    if entity_type not in ENTITY_TYPES:
        raise ValueError(f"entity_type must be one of {', '.join(ENTITY_TYPES)}, not {entity_type!r}")
    return entity_type


def _embedded(body, key: str) -> list[dict]:
    items = (body or {}).get("_embedded", {}).get(key) if isinstance(body, dict) else None
    return items if isinstance(items, list) else []


# --- the client -----------------------------------------------------------------------------------
class AmoClient:
    def __init__(self, account: Account, *, max_wait: float = DEFAULT_MAX_WAIT, max_attempts: int = MAX_ATTEMPTS,
                 timeout: httpx.Timeout = API_TIMEOUT):
        self.account = account
        self.max_wait, self.max_attempts, self.timeout = max_wait, max_attempts, timeout
        self._token = self._stored_token()
        self._status_checked = False

    # -- tokens --
    def _stored_token(self) -> AmoToken:
        token = AmoToken.objects.filter(account_id=self.account.pk).first()
        if token is None:
            raise AmoNotConnected("no amoCRM token pair", account_id=self.account.pk)
        if token.needs_reinstall:
            self._record(AmoApiStatus.UNAUTHORIZED, "the token refresh was refused")
            raise AmoNotConnected("the token pair needs a reinstall", account_id=self.account.pk)
        return token

    def _expiring(self, token: AmoToken) -> bool:
        return token.expires_at - timezone.now() < ACCESS_TOKEN_MARGIN

    def _access_token(self) -> str:
        if self._expiring(self._token):
            self._refresh(self._token.access_token)
        return self._token.access_token

    def _refresh(self, stale: str) -> None:
        """A new access token in place of `stale`: the one another process stored meanwhile, or one we
        get through tokens.amo_token_refresh (whose lease lets one process spend the refresh token)."""
        fresh = self._stored_token()
        if fresh.access_token != stale and not self._expiring(fresh):
            self._token = fresh
            return
        refreshed = amo_token_refresh(account_id=self.account.pk)
        deadline = time.monotonic() + REFRESH_WAIT
        while True:
            fresh = self._stored_token()  # AmoNotConnected when amoCRM refused the refresh token
            if fresh.access_token != stale and fresh.expires_at > timezone.now():
                self._token = fresh  # the newest pair there is, even if amoCRM gave it a short life
                if refreshed:
                    logger.info("amoCRM access token refreshed by the API client",
                                extra={"account_id": self.account.pk})
                return
            lease_held = fresh.refresh_lease_until is not None and fresh.refresh_lease_until > timezone.now()
            if refreshed or not lease_held or time.monotonic() > deadline:
                # Our refresh found amoCRM unavailable (last_error says why), or another's did not finish.
                raise AmoTemporary("the access token could not be refreshed", account_id=self.account.pk)
            time.sleep(0.2)  # another process holds the lease: its new pair is about to be stored

    # -- the account's API status --
    def _record(self, status: str, reason: str) -> None:
        """Note a refusal of the whole account (or its end) on the account, once per change."""
        now = timezone.now()
        changed = (Account.objects.filter(pk=self.account.pk).exclude(amo_api_status=status)
                   .update(amo_api_status=status, amo_api_status_at=now, amo_api_status_reason=reason[:200]))
        self.account.amo_api_status = status
        if changed:
            self.account.amo_api_status_at, self.account.amo_api_status_reason = now, reason[:200]
            level = logging.INFO if status == AmoApiStatus.OK else logging.WARNING
            logger.log(level, "amoCRM API status changed", extra={"account_id": self.account.pk,
                                                                  "amo_api_status": status})

    def _succeeded(self) -> None:
        # Once per client (and after any refusal it saw): a refusal another process recorded ends here too.
        if not self._status_checked:
            self._status_checked = True
            self._record(AmoApiStatus.OK, "")

    # -- requests --
    def _url(self, path: str, params) -> str:
        url = f"{oauth.base_url(self.account.host)}{path}"
        query = _query(params) if params else ""
        return f"{url}?{query}" if query else url

    def _error(self, cls, detail: str, method: str, path: str, *, status=None, retry_after=None, body=None):
        return cls(detail, account_id=self.account.pk, status=status, method=method, path=path,
                   retry_after=retry_after, body=body)

    def request(self, method: str, path: str, *, params=None, json=None, idempotent: bool | None = None):
        """One API call with the account's token, limit, retries and status recording. The answer's JSON,
        or None for an empty answer (204, 202). `idempotent` defaults to True for GET only."""
        if not path.startswith("/api/v4/"):
            raise ValueError("an amoCRM API v4 path starts with /api/v4/")
        idempotent = method == "GET" if idempotent is None else idempotent
        url = self._url(path, params)
        attempt, refreshed_after_401 = 0, False
        while True:
            attempt += 1
            # Everything that takes time comes before the slot: a request must reach amoCRM right after it.
            token = self._access_token()
            http = _http_client()  # the first one of a process loads the CA bundle (~0.1 s)
            try:
                limiter().acquire(self.account.pk, rate=settings.AMO_API_RPS, max_wait=self.max_wait)
            except SlotTooFar as exc:
                raise self._error(AmoRateLimited, "the account's amoCRM request budget is spent", method, path,
                                  retry_after=exc.wait) from None
            started = time.monotonic()
            retry_after = None
            try:
                response = http.request(method, url, json=json, timeout=self.timeout,
                                                  headers={"Authorization": f"Bearer {token}"})
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                status, failure = None, f"cannot connect: {type(exc).__name__}"  # nothing was sent
                self._log(method, path, None, started, attempt, failure)
            except httpx.TransportError as exc:
                status, failure = None, f"no complete answer: {type(exc).__name__}"
                self._log(method, path, None, started, attempt, failure)
                if not idempotent:
                    raise self._error(AmoAmbiguous, failure, method, path) from None
            else:
                status = response.status_code
                self._log(method, path, status, started, attempt)
                body = _json(response)
                if status < 300:
                    if response.content and body is None:
                        cls = AmoTemporary if idempotent else AmoAmbiguous
                        raise self._error(cls, f"unreadable answer: HTTP {status}", method, path, status=status)
                    self._succeeded()
                    return body
                if status == 401:
                    if not refreshed_after_401:
                        refreshed_after_401 = True
                        attempt -= 1  # a retry with a new token, not a retry of a failure
                        self._refresh(token)
                        continue
                    self._record_refusal(AmoApiStatus.UNAUTHORIZED, status, method, path)
                    raise self._error(AmoUnauthorized, "HTTP 401 with a fresh access token", method, path,
                                      status=status, body=body)
                if status == 402:
                    self._record_refusal(AmoApiStatus.UNPAID, status, method, path)
                    raise self._error(AmoPaymentRequired, "HTTP 402: the account is not paid", method, path,
                                      status=status, body=body)
                if status == 403 and not isinstance(body, dict):
                    # nginx's page, not amoCRM's problem JSON: the account's API is blocked.
                    self._record_refusal(AmoApiStatus.BLOCKED, status, method, path)
                    raise self._error(AmoBlocked, "HTTP 403: the account's API access is blocked", method, path,
                                      status=status)
                retryable = status == 429 or status in NOT_PROCESSED_5XX or (status >= 500 and idempotent)
                if not retryable and status >= 500:
                    raise self._error(AmoAmbiguous, f"HTTP {status}", method, path, status=status)
                if not retryable:
                    detail = body.get("detail") or body.get("title") if isinstance(body, dict) else None
                    raise self._error(AmoRejected, f"HTTP {status}: {str(detail or '')[:150]}".rstrip(": "),
                                      method, path, status=status, body=body)
                failure = f"HTTP {status}"
                retry_after = _retry_after(response)
            # A failure worth another attempt.
            cls = AmoRateLimited if status == 429 else AmoTemporary
            pause = max(retry_after or 0.0, _backoff(attempt))
            if attempt >= self.max_attempts or pause > self.max_wait:
                raise self._error(cls, f"{failure} after {attempt} attempt(s)", method, path, status=status,
                                  retry_after=retry_after if retry_after is not None else pause)
            time.sleep(pause)

    def _record_refusal(self, status: str, http_status: int, method: str, path: str) -> None:
        self._status_checked = False  # the next success clears it
        self._record(status, f"HTTP {http_status} on {method} {path}")

    def _log(self, method: str, path: str, status: int | None, started: float, attempt: int, failure: str = ""):
        extra = {"account_id": self.account.pk, "method": method, "path": path, "status": status,
                 "latency_ms": round((time.monotonic() - started) * 1000), "attempt": attempt}
        if failure:
            extra["error"] = failure
        ok = status is not None and status < 400
        logger.log(logging.INFO if ok else logging.WARNING, "amoCRM API call", extra=extra)

    def get(self, path: str, params=None):
        return self.request("GET", path, params=params)

    def post(self, path: str, json, *, idempotent: bool = False):
        return self.request("POST", path, json=json, idempotent=idempotent)

    # -- reads --
    def _by_ids(self, path: str, key: str, ids, params: list) -> list[dict]:
        """Entities by id, up to 250 ids per request, one request each. `_links.next` is not followed: amoCRM
        links a next page whenever a page is full, and that page answers 204."""
        found = []
        ids = _ids(ids)
        for start in range(0, len(ids), MAX_BATCH):
            chunk = ids[start:start + MAX_BATCH]
            body = self.get(path, [("filter[id][]", chunk), ("limit", MAX_BATCH), *params])
            found.extend(_embedded(body, key))
        return found

    def _pages(self, path: str, key: str, params: list, *, limit: int = MAX_BATCH) -> list[dict]:
        """Every page of a list, stopping at a page that is not full (or a 204) instead of at `_links.next`."""
        items = []
        for number in range(1, MAX_PAGES + 1):
            page = _embedded(self.get(path, [*params, ("page", number), ("limit", limit)]), key)
            items.extend(page)
            if len(page) < limit:
                break
        return items

    def lead(self, lead_id: int, *, with_contacts: bool = True) -> dict | None:
        [lead_id] = _ids([lead_id])
        return self.get(f"/api/v4/leads/{lead_id}", [("with", "contacts")] if with_contacts else None)

    def leads(self, ids, *, with_contacts: bool = True) -> list[dict]:
        return self._by_ids("/api/v4/leads", "leads", ids, [("with", "contacts")] if with_contacts else [])

    def contact(self, contact_id: int, *, with_leads: bool = False) -> dict | None:
        [contact_id] = _ids([contact_id])
        return self.get(f"/api/v4/contacts/{contact_id}", [("with", "leads")] if with_leads else None)

    def contacts(self, ids, *, with_leads: bool = False) -> list[dict]:
        return self._by_ids("/api/v4/contacts", "contacts", ids, [("with", "leads")] if with_leads else [])

    def users(self) -> list[dict]:
        return self._pages("/api/v4/users", "users", [])

    def user(self, user_id: int) -> dict | None:
        [user_id] = _ids([user_id])
        return self.get(f"/api/v4/users/{user_id}")

    def account_info(self, *, with_: tuple[str, ...] = ()) -> dict | None:
        """GET /api/v4/account; `with_`: e.g. ("users_groups", "task_types", "datetime_settings")."""
        return self.get("/api/v4/account", [("with", ",".join(with_))] if with_ else None)

    def notes(self, entity_type: str, entity_id: int | None = None, *, note_type=None, note_ids=None,
              updated_from: int | None = None, order_desc: bool = False, limit: int = MAX_BATCH) -> list[dict]:
        """An entity's notes (or every entity's of that type), filtered by type(s), ids, `updated_at` from
        (a Unix time, inclusive); all pages up to MAX_PAGES. For a retry that may already have landed."""
        entity_type = _entity_type(entity_type)
        params = []
        if entity_id is not None:
            params.append(("filter[entity_id][]", _ids([entity_id])))
        if note_type:
            params.append(("filter[note_type][]", [note_type] if isinstance(note_type, str) else list(note_type)))
        if note_ids:
            params.append(("filter[id][]", _ids(note_ids)))
        if updated_from is not None:
            params.append(("filter[updated_at][from]", int(updated_from)))
        if order_desc:
            params.append(("order[id]", "desc"))
        return self._pages(f"/api/v4/{entity_type}/notes", "notes", params, limit=min(max(limit, 1), MAX_BATCH))

    # -- writes --
    def _add(self, path: str, key: str, items: list[dict]) -> dict[str, int]:
        if not items or len(items) > MAX_BATCH:
            raise ValueError(f"between 1 and {MAX_BATCH} items per request")
        request_ids = [item.get("request_id") for item in items]
        if not all(isinstance(r, str) and r for r in request_ids) or len(set(request_ids)) != len(items):
            raise ValueError("each item needs its own non-empty string request_id")
        body = self.post(path, items)
        created = {str(item.get("request_id")): item.get("id") for item in _embedded(body, key)
                   if isinstance(item, dict)}
        missing = [r for r in request_ids if not isinstance(created.get(r), int)]
        if missing:
            # Written (2xx) but we cannot tell which is which: as unknown as a lost answer.
            raise self._error(AmoAmbiguous, f"answer without ids for {len(missing)} item(s)", "POST", path)
        return {r: created[r] for r in request_ids}

    def add_notes(self, entity_type: str, notes: list[dict]) -> dict[str, int]:
        """POST /api/v4/{entity_type}/notes: up to 250 notes, each with `entity_id`, `note_type`, `params`
        and a `request_id` of the caller's; returns {request_id: note id}. Not retried once it may have
        landed (AmoAmbiguous): the caller looks with `notes()` before writing again."""
        entity_type = _entity_type(entity_type)
        for note in notes:
            _ids([note.get("entity_id")])
        return self._add(f"/api/v4/{entity_type}/notes", "notes", notes)

    def add_tasks(self, tasks: list[dict]) -> dict[str, int]:
        """POST /api/v4/tasks: up to 250 tasks, each with `text`, `complete_till` and a `request_id`."""
        return self._add("/api/v4/tasks", "tasks", tasks)

    def salesbot_continue(self, bot_id: int, continue_id: int, data=None, *, execute_handlers=None,
                          kind: str = "salesbot") -> None:
        """Resume a Salesbot (or marketingbot) waiting in a widget_request step. A second call for the same
        continue id is a 404 at amoCRM, so an AmoAmbiguous here is settled by calling once more."""
        if kind not in ("salesbot", "marketingbot"):
            raise ValueError("kind must be salesbot or marketingbot")
        bot_id, continue_id = _ids([bot_id])[0], _ids([continue_id])[0]
        payload = {"data": data if data is not None else {}}
        if execute_handlers:
            payload["execute_handlers"] = execute_handlers
        self.post(f"/api/v4/{kind}/{bot_id}/continue/{continue_id}", payload)
