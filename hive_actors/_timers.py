"""Deadlines for every session on one thread: grace periods now, backoff and timeouts later.

Time comes from the injected Clock, so a test moves a fake clock and the due callbacks run
at once, with no sleeping.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from hive_actors._clock import Clock

log = structlog.get_logger(__name__)


@dataclass(order=True)
class TimerHandle:
    deadline: float
    order: int
    callback: Callable[[], object] = field(compare=False)
    at_close: Callable[[], object] | None = field(default=None, compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class Timers:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[TimerHandle] = []
        self._order = itertools.count()
        self._condition = threading.Condition()
        self._closed = False
        clock.on_advance(self._wake)
        self._thread = threading.Thread(target=self._run, name="hive-timers", daemon=True)
        self._thread.start()

    def call_later(
        self,
        delay: float,
        callback: Callable[[], object],
        at_close: Callable[[], object] | None = None,
    ) -> TimerHandle:
        """Run ``callback`` on the timer thread ``delay`` seconds from now (clock time).

        A timer still pending when the timers close is dropped, but for its ``at_close``,
        which then runs in the closing thread: what must not be left undone.
        """
        handle = TimerHandle(self._clock.monotonic() + delay, next(self._order), callback, at_close)
        with self._condition:
            heapq.heappush(self._heap, handle)
            self._condition.notify()
        return handle

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify()
        self._thread.join(5)
        with self._condition:
            pending, self._heap = self._heap, []
        for handle in sorted(pending):
            if handle.at_close is not None and not handle.cancelled:
                try:
                    handle.at_close()
                except Exception:
                    log.exception("timer close callback failed")

    def _wake(self) -> None:
        with self._condition:
            self._condition.notify()

    def _run(self) -> None:
        while True:
            with self._condition:
                due = self._next_due()
                while due is None:
                    if self._closed:
                        return
                    timeout = (
                        self._clock.wait_timeout(self._heap[0].deadline) if self._heap else None
                    )
                    self._condition.wait(timeout)
                    due = self._next_due()
            try:
                due.callback()
            except Exception:
                log.exception("timer callback failed")

    def _next_due(self) -> TimerHandle | None:
        while self._heap and self._heap[0].cancelled:
            heapq.heappop(self._heap)
        if self._heap and self._heap[0].deadline <= self._clock.monotonic():
            return heapq.heappop(self._heap)
        return None
