"""Sending: the one orchestrator, for a single delivery and for a batch alike.

Owns: `deliveries_send`: claim the deliveries (pending -> sending), plan each one's next provider
call (its route, its attempt row, opened before the call), make the calls, and hand what they gave
to `outcomes` (sent together; a failure may plan the next route, which is called in turn). A single
send is a batch of one. Where the calls run is the caller's choice: `InlineCalls` (in the calling
thread, one at a time: a login code's task on Celery's thread pool) or `SendingThreads` (a pool of
threads per process that only talk to providers: bulk batches). All database work stays on the
orchestrating thread; a sending thread needs no connection. A claim never waits for a thread: a
batch claims only as many deliveries as there are free calls.

May call: status, outcomes, routes' services and selectors, metrics, accounts' selectors.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from accounts.selectors import account_by_pk
from routes.providers import provider_class
from routes.providers.base import ProviderError, ProviderTemporaryError, SendRequest, SendResult
from routes.selectors import routes_active
from routes.services import RouteChoice, build_provider, default_route, route_callback_url
from smsgate.db import in_chunks, run_batch

from .. import metrics
from ..models import CRM_KINDS, Attempt, AttemptOutcome, Delivery, DeliveryKind, DeliveryStatus
from . import outcomes
from .status import Event, deliveries_move

logger = logging.getLogger(__name__)


@dataclass
class PlannedSend:
    """The next provider call for a claimed delivery: its route, and the attempt row opened for it."""

    delivery: Delivery
    choice: RouteChoice
    has_next_route: bool
    started: datetime = field(default_factory=timezone.now)
    attempt: Attempt | None = None


@dataclass
class ProviderCall:
    """What one provider call gave: its result, or the exception it raised; after an answer that
    never came, whether the provider could tell if it has the message (`asked`) and what it found."""

    plan: PlannedSend
    latency_ms: int
    result: SendResult | None = None
    error: Exception | None = None
    asked: bool = False
    found: SendResult | None = None


# --- the orchestrator ----------------------------------------------------------------------------------
def delivery_send(*, delivery_id) -> outcomes.SendOutcome | None:
    """Claim and send one delivery in this thread. None when there was nothing to do (another worker
    has it, or it is already past `pending`)."""
    for _delivery_id, outcome in deliveries_send(delivery_ids=[delivery_id]):
        return outcome
    logger.debug("delivery not claimable", extra={"delivery_id": str(delivery_id)})
    return None


def deliveries_send(*, delivery_ids, calls: Calls | None = None) -> list[tuple[str, outcomes.SendOutcome]]:
    """Claim and send every delivery of `delivery_ids` still waiting (the others were taken or
    finished meanwhile); each one sent or concluded comes back with its outcome, for retries."""
    calls = calls or InlineCalls()
    waiting = [str(delivery_id) for delivery_id in delivery_ids]
    ready: list[PlannedSend] = []  # claimed deliveries whose next route is to be called
    results: list[tuple[str, outcomes.SendOutcome]] = []
    running = 0
    while waiting or ready or running:
        finished, free = calls.next(wanted=len(ready) + len(waiting), running=running)
        running -= len(finished)
        concluded, next_plans = _conclude(finished)
        results += concluded
        ready += next_plans
        starting, ready = ready[:free], ready[free:]
        if len(starting) < free and waiting:
            room = free - len(starting)
            chunk, waiting = waiting[:room], waiting[room:]
            planned, ended = _claim_and_plan(chunk)
            results += ended
            starting += planned
        calls.give_back(free - len(starting))
        if starting:
            _attempts_open(starting)
            for plan in starting:
                calls.start(plan)
            running += len(starting)
    return results


def _conclude(finished: list[ProviderCall]) -> tuple[list, list[PlannedSend]]:
    """Record what finished calls gave: successes together, failures one by one (a failure may
    plan the delivery's next route). A batch that cannot be recorded (one bad row, a lost
    connection) is recorded call by call, so one bad row stays the only one left to the sweeper."""
    concluded, next_plans = [], []
    sent = [call for call in finished if call.error is None]
    if sent:
        try:
            recorded = outcomes.record_sent(sent)
        except Exception:
            logger.exception("recording sent SMS together failed; recording them one by one",
                             extra={"deliveries": len(sent)})
            close_old_connections()  # a connection the error broke is not reused
            recorded = [_guarded(lambda call=call: outcomes.record_sent([call])[0]) for call in sent]
        concluded += [(str(call.plan.delivery.pk), outcome) for call, outcome in zip(sent, recorded)
                      if outcome is not None]
    for call in finished:
        if call.error is None:
            continue
        result = _guarded(lambda call=call: outcomes.conclude_failure(call))
        if result is outcomes.NEXT_ROUTE:  # the same claim goes on with the delivery's next route
            delivery = call.plan.delivery
            delivery.refresh_from_db(fields=["error_code", "error_text"])
            plan = delivery_send_plan(delivery, first_try=False)
            if isinstance(plan, PlannedSend):
                next_plans.append(plan)
            else:
                concluded.append((str(call.plan.delivery.pk), plan))
        elif result is not None:
            concluded.append((str(call.plan.delivery.pk), result))
    return concluded, next_plans


def _guarded(step):
    """No exception lost, none stopping the batch: a claim left behind is the sweeper's."""
    try:
        return step()
    except Exception:
        logger.exception("concluding a provider call failed; the sweeper resolves its claim")
        return None


# --- claiming and planning --------------------------------------------------------------------------
def deliveries_claim(*, delivery_ids) -> list[Delivery]:
    """pending -> sending, atomically: only one worker ever gets a delivery. One statement claims
    every claimable one of `delivery_ids` (due for its next attempt) and reads them back."""
    now = timezone.now()
    return deliveries_move(ids=delivery_ids, to=DeliveryStatus.SENDING, only_from=(DeliveryStatus.PENDING,),
                           values={"claimed_at": now}, increment=("attempt_count",),
                           due_by=now + timedelta(seconds=1), read=True, now=now).deliveries


def _claim_and_plan(chunk: list[str]) -> tuple[list[PlannedSend], list]:
    plans, ended = [], []
    try:
        for delivery in deliveries_claim(delivery_ids=chunk):
            delivery.account = account_by_pk(delivery.account_id)  # per process, read-only, like its routes
            metrics.queue_latency(delivery.kind, delivery.claimed_at - (delivery.next_attempt_at or delivery.created_at))
            plan = delivery_send_plan(delivery, first_try=delivery.attempt_count == 1)
            if isinstance(plan, PlannedSend):
                plans.append(plan)
            else:
                ended.append((str(delivery.pk), plan))
    except Exception:  # a database error: nothing was sent; the sweeper resolves these claims
        logger.exception("claiming deliveries failed; the sweeper resolves their claims",
                         extra={"deliveries": len(chunk)})
    return plans, ended


def delivery_send_plan(delivery: Delivery, *, first_try: bool) -> PlannedSend | outcomes.SendOutcome:
    """The next provider call for a claimed delivery, or its outcome when there is none to make
    (past its validity, account disabled, no usable route left): decided without a provider call,
    so kept as a status event."""
    if timezone.now() >= delivery.valid_until:
        return outcomes.finish(delivery, DeliveryStatus.EXPIRED, error_class="validity",
                               text="not sent before its validity deadline", event=Event("system"))
    if not delivery.account.is_active:
        return outcomes.finish(delivery, DeliveryStatus.FAILED, error_class="account_disabled",
                               text="the account is disabled", event=Event("system"))
    candidates = route_candidates(delivery, no_attempts_yet=first_try)
    if not candidates:
        return outcomes.finish(delivery, DeliveryStatus.FAILED, error_class="no_route", code=delivery.error_code,
                               text=delivery.error_text or "no usable route", event=Event("system"))
    return PlannedSend(delivery, candidates[0], has_next_route=len(candidates) > 1)


def route_candidates(delivery: Delivery, *, no_attempts_yet: bool = False) -> list[RouteChoice]:
    """Routes still worth trying for this delivery, best first. `no_attempts_yet` (the first try of
    a first claim) skips looking for routes that gave up on it: there are none."""
    account = delivery.account
    if delivery.kind == DeliveryKind.TEST and delivery.route_id:  # a test of one route uses only it
        candidates = [RouteChoice.of(r) for r in routes_active(account=account) if r.pk == delivery.route_id]
    else:
        routes = routes_active(account=account)
        if routes:
            candidates = [RouteChoice.of(r) for r in routes if not r.is_broken]
        elif delivery.kind in CRM_KINDS and not account.crm_default_route_allowed:
            candidates = []  # the default route is the operator's, for login codes (crm.sending's rule)
        else:
            default = default_route()
            candidates = [default] if default else []
    if no_attempts_yet or not candidates:
        return candidates
    given_up = set(Attempt.objects.filter(delivery=delivery, outcome=AttemptOutcome.NEXT_ROUTE)
                   .values_list("route_id", flat=True))
    return [c for c in candidates if c.route_id not in given_up]


@lru_cache(maxsize=64)
def _attempts_sql(count: int) -> str:
    table = connection.ops.quote_name(Attempt._meta.db_table)
    rows = ", ".join([f"(%s, %s, %s, %s, '{AttemptOutcome.IN_FLIGHT.value}', '', '', '', '')"] * count)
    return (f"INSERT INTO {table} (delivery_id, route_id, provider, started_at, outcome, error_class, provider_code, "
            f"error_text, provider_message_id) VALUES {rows} RETURNING id, delivery_id")


def _attempts_open(plans: list[PlannedSend]):
    """Each plan's attempt row, written before its provider call, so a worker that dies mid-call
    leaves evidence for the sweeper: a few INSERTs for a whole batch, one round trip."""
    prepare_id, started = Delivery._meta.pk.get_db_prep_value, Attempt._meta.get_field("started_at")
    statements = []
    for chunk in in_chunks(plans, per_item=4):
        params = []
        for plan in chunk:
            params += [prepare_id(plan.delivery.pk, connection), plan.choice.route_id, plan.choice.provider,
                       started.get_db_prep_save(plan.started, connection)]
        statements.append((_attempts_sql(len(chunk)), params))
    rows = [row for result in run_batch(statements) for row in result]
    to_pk = Delivery._meta.pk.to_python
    attempt_ids = {to_pk(delivery_id): attempt_id for attempt_id, delivery_id in rows}
    for plan in plans:
        plan.attempt = Attempt(pk=attempt_ids[plan.delivery.pk], delivery=plan.delivery, route=plan.choice.route,
                               provider=plan.choice.provider, started_at=plan.started)


# --- the provider call -------------------------------------------------------------------------------------
def provider_call(plan: PlannedSend) -> ProviderCall:
    """Make the planned provider call; after an answer that never came, ask the provider whether it
    has the message where it can tell. No database work: it runs outside any transaction, no row
    locked, on a thread that holds no connection."""
    delivery, choice = plan.delivery, plan.choice
    request = SendRequest(
        phone=delivery.phone,
        text=delivery.text,
        reference=str(delivery.pk),
        sender=choice.sender,
        validity_seconds=max(int((delivery.valid_until - plan.started).total_seconds()), 60),
        callback_url=route_callback_url(choice.route) if choice.route else None,
    )
    provider = build_provider(choice)
    clock = time.monotonic()
    try:
        result = provider.send(request)
    except ProviderError as exc:
        latency = int((time.monotonic() - clock) * 1000)
        metrics.provider_call(choice.provider, str(exc.error_class), latency)
        call = ProviderCall(plan, latency, error=exc)
        if isinstance(exc, ProviderTemporaryError) and exc.ambiguous:
            call.asked, call.found = provider_has_message(provider, delivery, since=plan.started)
        return call
    except Exception as exc:  # an adapter bug: the request may or may not have gone out
        logger.exception("provider adapter crashed", extra={"delivery_id": str(delivery.pk),
                                                             "provider": choice.provider})
        return ProviderCall(plan, int((time.monotonic() - clock) * 1000), error=exc)
    latency = int((time.monotonic() - clock) * 1000)
    metrics.provider_call(choice.provider, "ok", latency)
    return ProviderCall(plan, latency, result=result)


def provider_has_message(provider, delivery: Delivery, *, since) -> tuple[bool, SendResult | None]:
    """Ask the provider whether it took this delivery's message in an attempt started at `since`:
    (whether it could tell, the message if it has it). A network call: never inside a transaction."""
    if not provider.supports_reconcile:
        return False, None
    try:
        return True, provider.reconcile(reference=str(delivery.pk), phone=delivery.phone, text=delivery.text,
                                        since=since)
    except (ProviderError, NotImplementedError) as exc:
        logger.warning("the provider could not tell whether it has the message",
                       extra={"delivery_id": str(delivery.pk), "provider": provider.slug,
                              "error_class": str(getattr(exc, "error_class", "unsupported"))})
        return False, None


def release_pooled_connection():
    """With a connection pool (DB_POOL_MAX_SIZE), give the connection back while this thread waits
    for provider calls: a hundred threads waiting on providers then share a few connections. The
    next query takes one from the pool again. Without a pool this does nothing (reconnecting would
    cost more)."""
    if connection.settings_dict.get("OPTIONS", {}).get("pool") and not connection.in_atomic_block:
        connection.close()


# --- where the calls run ---------------------------------------------------------------------------------
class Calls:
    """Where an orchestrator's provider calls run. `next` blocks until some of its calls finished
    or, if it `wanted` more, capacity is free; it returns the finished calls and how many new calls
    may start (reserved for it: what it does not use it gives back)."""

    def next(self, *, wanted: int, running: int) -> tuple[list[ProviderCall], int]:
        raise NotImplementedError

    def start(self, plan: PlannedSend):
        raise NotImplementedError

    def give_back(self, count: int):
        pass


class InlineCalls(Calls):
    """One call at a time, in the calling thread."""

    def __init__(self):
        self._plan: PlannedSend | None = None

    def next(self, *, wanted, running):
        finished = []
        if self._plan is not None:
            plan, self._plan = self._plan, None
            release_pooled_connection()
            finished.append(provider_call(plan))
        return finished, min(wanted, 1)

    def start(self, plan):
        self._plan = plan


class SendingThreads:
    """A process's sending threads, and how many are idle. Each orchestrator takes idle threads for
    the calls it starts; a finished call lands in its orchestrator's `done` list."""

    def __init__(self, size: int):
        self.size = size
        self.executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="smsgate-send")
        self.idle = size
        self.changed = threading.Condition()

    def calls(self) -> ThreadCalls:
        return ThreadCalls(self)


class ThreadCalls(Calls):
    """One orchestrator's share of the sending threads."""

    def __init__(self, threads: SendingThreads):
        self.threads = threads
        self.done: list[ProviderCall] = []

    def next(self, *, wanted, running):
        # Waiting keeps the task thread's connection (README: the bulk worker's pool has one per task
        # thread): giving it back to the pool at every wait cost a checkout and its health check each.
        threads = self.threads
        with threads.changed:
            threads.changed.wait_for(lambda: self.done or (wanted and threads.idle))
            finished, self.done[:] = self.done[:], []
            taken = min(wanted, threads.idle)
            threads.idle -= taken
            return finished, taken

    def give_back(self, count):
        if count:
            with self.threads.changed:
                self.threads.idle += count
                self.threads.changed.notify_all()

    def start(self, plan):
        threads = self.threads

        def finished(future: Future):
            call = future.result() if future.exception() is None else ProviderCall(plan, 0, error=future.exception())
            with threads.changed:
                threads.idle += 1
                self.done.append(call)
                threads.changed.notify_all()

        threads.executor.submit(provider_call, plan).add_done_callback(finished)


_lock = threading.Lock()
_threads: SendingThreads | None = None


def sending_threads() -> SendingThreads | None:
    """The process's sending threads (SMSGATE_SEND_THREADS; None with 0: calls run inline)."""
    global _threads
    if settings.SMSGATE_SEND_THREADS <= 0:
        return None
    with _lock:
        if _threads is None:
            _threads = SendingThreads(settings.SMSGATE_SEND_THREADS)
    return _threads


def stop_sending_threads():
    """Stop the sending threads (worker shutdown, tests); the next batch starts a fresh set."""
    global _threads
    with _lock:
        threads, _threads = _threads, None
    if threads is not None:
        threads.executor.shutdown(wait=True)


def deliveries_send_batch(*, delivery_ids) -> list[tuple[str, outcomes.SendOutcome]]:
    """A bulk batch: its calls on the process's sending threads (inline without them)."""
    threads = sending_threads()
    return deliveries_send(delivery_ids=delivery_ids, calls=threads.calls() if threads else None)
