"""Admission control for the SMS endpoint: under sustained overload, refuse early and cheaply.

How long a request waited for a web thread (smsgate.webqueue) tells whether its process keeps up. A
burst leaves a queue that drains by itself; a *standing* queue means more arrives than the process can
serve, and then every request accepted only waits longer while amoCRM's clients give up. So, as CoDel
does for packet queues (Nichols & Jacobson, 2012) and servers do for request queues ("Fail at Scale",
Maurer, 2015): when every request this process picked up for a whole `interval` had waited longer than
`target`, the queue is standing, and a request that waited longer than `target` is refused (503) at once;
otherwise only one that waited longer than the `ceiling` (SMSGATE_WEB_MAX_QUEUE_WAIT) is. A refusal
costs a small part of an acceptance, so the process keeps serving near its capacity, the accepted
wait at most about `target`, and the refused are answered within tens of milliseconds instead of
after the ceiling. One policy per process, shared by its threads; pure (no Django), so it is tested
with a clock of its own.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class QueueWaitPolicy:
    target: float  # seconds; 0 turns the standing-queue rule off (only the ceiling remains)
    interval: float  # seconds of waits all above `target` that make the queue standing
    ceiling: float  # seconds; 0 turns refusing off altogether
    clock: Callable[[], float] = time.monotonic
    _first_above: float | None = field(default=None, init=False)
    _last_above: float = field(default=0.0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def admit(self, waited: float) -> bool:
        """True if a request that waited `waited` seconds for its thread should be served."""
        if self.ceiling <= 0:
            return True
        if self.target <= 0 or waited <= self.target:
            if self._first_above is not None:
                with self._lock:
                    self._first_above = None
            return waited <= self.ceiling
        now = self.clock()
        with self._lock:
            # A run of waits above the target, none more than an interval apart (a quiet spell with a
            # slow request now and then is no standing queue), lasting an interval: the queue stands.
            if self._first_above is None or now - self._last_above > self.interval:
                self._first_above = now
            self._last_above = now
            standing = now - self._first_above >= self.interval
        return not standing and waited <= self.ceiling

    @property
    def standing(self) -> bool:
        """Whether the queue stood at the last request (for logs)."""
        first = self._first_above
        return first is not None and self._last_above - first >= self.interval
