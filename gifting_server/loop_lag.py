"""How late this worker's event loop runs what is due: the wait no queue counts.

A gift read from a socket waited for the loop first (its bytes lay in the socket's
buffer while the loop served everyone else), and its answer waits for the loop again
once Redis replied. When the worker's CPU is the limit, that wait grows while the
gifts in flight to Redis stay few and young: admission, watching only those, would
see no queue (`ledger/admission.py` refuses gifts while this lag stands).

A timer is due every `INTERVAL_S`; how late it ran is the loop's lateness. Like the
queue's delay, the lag counts when it *stands*: the timer ran late twice in a row,
or ran late and is overdue again now (the loop is in another long pass). One long
pause (a garbage collection, one slow callback) is not a standing lag: the loop is
on time again at the next timer. The timer stops after `IDLE_S` with nobody asking,
and starts again at the next ask.
"""

from __future__ import annotations

import asyncio
import time

from gifting_server import metrics

INTERVAL_S = 0.005
IDLE_S = 10.0  # longer than any gift takes: sparse gifts still find it running


class LoopLag:
    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.due = 0.0  # time.monotonic() when the timer is due
        self.late = 0.0  # how late it ran last time
        self.late_before = 0.0  # and the time before
        self.asked = 0.0

    def lag(self) -> float:
        """The loop's standing lag now, in seconds: the least of its last two
        latenesses (the last one and the current overdue, in a long pass); 0 outside a
        running loop."""
        now = self.asked = time.monotonic()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return 0.0
        if self.timer is None or self.loop is not loop:
            self._arm(loop, now)
            return 0.0
        return min(self.late, max(self.late_before, now - self.due))

    def _arm(self, loop: asyncio.AbstractEventLoop, now: float) -> None:
        self.loop = loop
        self.late = self.late_before = 0.0
        self.due = now + INTERVAL_S
        self.timer = loop.call_later(INTERVAL_S, self._tick)

    def _tick(self) -> None:
        # time.monotonic(), not loop.time(): uvloop's clock stands still within a pass
        now = time.monotonic()
        self.late_before, self.late = self.late, max(now - self.due, 0.0)
        metrics.LOOP_LAG.set(self.late)
        if now - self.asked > IDLE_S:
            self.timer = None
            return
        assert self.loop is not None
        self.due = now + INTERVAL_S
        self.timer = self.loop.call_later(INTERVAL_S, self._tick)
