"""Single sends gathered into small batches: login codes claimed, sent and recorded together.

Each `deliveries.send` message (a login code, a card's SMS, a retry) holds one task thread of its
worker. Instead of each thread running the send path alone, a thread hands its delivery to the batch
being filled in its process; the first to arrive leads. When sends arrive densely (another came within
the last SMSGATE_SEND_GATHER_MS), the leader waits at most that long for others, or until
SMSGATE_SEND_GATHER_SIZE have joined; when they arrive one by one, it goes at once, so a quiet lane
pays no wait. The leader then sends the batch through the one orchestrator (`dispatch.deliveries_send`:
one claim, the attempts opened together, the successes recorded together), its provider calls on the
process's sending threads when there are several, and hands each follower its own outcome.

Each task still acknowledges its own message only after its own delivery concluded, so a worker
killed mid-batch loses nothing: RabbitMQ redelivers every message not acknowledged, and the claim
check (recovery) settles what the dead batch had claimed. May call: dispatch.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field

from django.conf import settings

from . import dispatch, outcomes

logger = logging.getLogger(__name__)

@dataclass(eq=False)
class _Batch:
    ids: list[str] = field(default_factory=list)
    full: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    outcomes: dict[str, outcomes.SendOutcome] = field(default_factory=dict)
    error: Exception | None = None


class Gathering:
    """The batch being filled in this process. `send_one` blocks until its delivery concluded."""

    def __init__(self, *, wait: float, size: int, clock=time.monotonic):
        self.wait, self.size, self.clock = wait, max(1, size), clock
        self._lock = threading.Lock()
        self._open: _Batch | None = None
        self._last_arrival = float("-inf")

    def send_one(self, delivery_id) -> outcomes.SendOutcome | None:
        """Send one delivery with whatever others arrive meanwhile; its outcome (None: nothing to do)."""
        try:
            delivery_id = str(uuid.UUID(str(delivery_id)))
        except ValueError:  # a malformed message goes alone, never spoiling a batch's claim
            return dict(_send([str(delivery_id)])).get(str(delivery_id))
        now = self.clock()
        with self._lock:
            dense = now - self._last_arrival < self.wait
            self._last_arrival = now
            batch, leader = self._open, self._open is None
            if not leader and delivery_id in batch.ids:  # its message twice at once (a redelivery): one sends it
                return None
            if leader:
                batch = _Batch()
                if dense and self.size > 1:  # others are likely on their way: let them join
                    self._open = batch
            batch.ids.append(delivery_id)
            if len(batch.ids) >= self.size and self._open is batch:
                self._open = None
                batch.full.set()
        if leader:
            self._lead(batch)
        else:
            batch.done.wait()
        if batch.error is not None and len(batch.ids) > 1:
            # The batch's send raised (the orchestrator itself logs and survives a bad row or a lost
            # connection, so this is rare): each of its deliveries is tried again alone, so one cause
            # cannot fail the others; what the batch had claimed is the claim check's.
            return dict(_send([delivery_id])).get(delivery_id)
        if batch.error is not None:
            raise batch.error
        return batch.outcomes.get(delivery_id)

    def _lead(self, batch: _Batch):
        if self._open is batch:
            batch.full.wait(self.wait)
            with self._lock:
                if self._open is batch:
                    self._open = None
        try:
            batch.outcomes = dict(_send(batch.ids))
        except Exception as exc:
            logger.exception("sending a gathered batch failed; each of its deliveries is tried alone",
                             extra={"deliveries": len(batch.ids)})
            batch.error = exc
        finally:
            batch.done.set()


def _send(ids: list[str]):
    if len(ids) == 1:  # alone: in the task's thread, as always
        return dispatch.deliveries_send(delivery_ids=ids)
    return dispatch.deliveries_send_batch(delivery_ids=ids)


_gathering_lock = threading.Lock()
_gathering: Gathering | None = None


def delivery_send_gathered(*, delivery_id) -> outcomes.SendOutcome | None:
    """Send one delivery, gathered with the others this process's task threads hold (see above)."""
    global _gathering
    if _gathering is None:
        with _gathering_lock:
            if _gathering is None:
                _gathering = Gathering(wait=settings.SMSGATE_SEND_GATHER_MS / 1000, size=settings.SMSGATE_SEND_GATHER_SIZE)
    return _gathering.send_one(delivery_id)
