"""A fake amoCRM: OAuth (amocrm-platform.md §4.3) and the parts of API v4 smsgate uses (§5), one account per
amoCRM account id, all state in memory, over real HTTP. `python -m tests.fakes.amocrm --port 9100
[--seed-demo]` runs it on its own.

OAuth, as before:
- A code is issued by the test (`issue_code`), lives 20 minutes and works once; a refresh token works once
  (refreshing returns a new pair and kills the old refresh token); `issue_token_pair` gives a pair without
  a code exchange. OAuth errors answer amoCRM's OAuth problem JSON (`hint`, `title`, `type`, `status`, `detail`).
- Access tokens are JWTs carrying `account_id`, `sub` (the user), `exp` and `api_domain` (like tokens issued
  since 2024), or opaque strings with `opaque_access_tokens=True`. The fake enforces `exp` (`expires_in`,
  86400 by default); `expire_access_tokens` ends the current ones at once, `revoke_tokens` kills them all.

How every request to `/api/v4/...` is judged, in this order:
1. Arrival. The request is recorded for its account (found from the Bearer token, even an expired or
   revoked one; an unknown token has no account and is not recorded) with its `time.monotonic()`
   arrival time, before anything else (before `latency`).
2. The rate limit, counted one way: if the account already had `limit_rps` (7) requests ACCEPTED whose
   arrival lies within the last 1.0 s, i.e. in (now - 1.0, now], the request is answered 429 at once and
   not processed; a refused request does not count against later ones. So a client that starts at most
   7 requests in any 1.0 s window (arrival times as the fake sees them) is never refused; two requests
   exactly 1.0 s apart are not in the same window. `limit_rps = 0` turns the limit off.
   `peak_rps` = the most requests ARRIVING (accepted or refused) in any 1.0 s window [t, t + 1.0);
   `refused_429` = requests this limit refused.
3. `fail_next(n, status)`: injected transient 5xx/429/"drop" answers (they passed the limit and count in it).
4. A `blocked` account: 403 to everything (an nginx HTML page, as amoCRM's blocked API answers).
5. The token: unknown, revoked or expired -> 401 (problem JSON).
6. An `unpaid` account: 402 Payment Required (problem JSON).
7. The method (tests/fakes/amocrm/views.py: leads, contacts, pipelines, custom fields, users, account,
   notes, tasks, Salesbot continue). `fail_with` (a status or "drop") still answers everything, OAuth
   included, as before.

Bodies of 429 and of a blocked account's 403 are not JSON: the official SDK only recognises a 429 whose
body is not JSON, and blocked accounts are reported getting nginx's page. A client should act on the
status alone.
"""

from .server import FakeAmoCRM

__all__ = ["FakeAmoCRM"]
