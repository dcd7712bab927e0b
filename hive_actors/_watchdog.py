"""The stall watchdog: one timer for every running session with a ``stall_timeout``.

A hung agent sits at 0 % CPU with no output while it is reported as working. A session's
supervisor has each run of its agent watched from its start (``watch``) to its end
(``unwatch``); each tick of one timer on the Hive's timer thread looks at the size of
every watched run's log (a ``stat`` each: no thread, no timer, no polling loop per
session) and tells the supervisor when the log has stood still for the session's
``stall_timeout`` (``Stalled``), and when it grew again after that (``Active``). The
supervisor announces it and acts: only it changes its session.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pykka

from hive_actors._clock import Clock
from hive_actors._models import SessionInfo
from hive_actors._timers import Timers

TICK = 1.0
"""Seconds between two looks (clock time): a stall is seen at most this late."""


@dataclass(frozen=True, slots=True)
class Stalled:
    """Told to a session's supervisor: run ``run``'s log has not grown for ``silent`` s."""

    run: int
    silent: float


@dataclass(frozen=True, slots=True)
class Active:
    """Told to a session's supervisor: run ``run``'s log grew again after ``silent`` s."""

    run: int
    silent: float


@dataclass(slots=True)
class _Watch:
    run: int
    log_file: str
    timeout: float
    size: int
    changed: float
    """When the log was last seen to grow (clock's monotonic time)."""
    stalled: bool = False


class Watchdog:
    """Told by the supervisors which runs to watch (from their start to their end); looks
    at them all on each tick of one timer."""

    def __init__(
        self,
        supervisor: Callable[[str], pykka.ActorRef[Any] | None],
        timers: Timers,
        clock: Clock,
    ) -> None:
        self._supervisor = supervisor
        self._timers = timers
        self._clock = clock
        self._lock = threading.Lock()
        self._watches: dict[str, _Watch] = {}
        self._checked = threading.Condition()
        self.checks = 0
        """Looks completed so far (``wait_checks``: tests on a fake clock)."""

    def start(self) -> None:
        self._timers.call_later(TICK, self._tick)

    def watch(self, info: SessionInfo, run: int) -> None:
        """Watch run ``run`` of ``info``'s session from now, if it has a stall_timeout."""
        if info.stall_timeout is None:
            return
        watch = _Watch(
            run, info.log_file, info.stall_timeout, _size(info.log_file), self._clock.monotonic()
        )
        with self._lock:
            self._watches[info.session_id] = watch

    def truncate(self, session_id: str, log_file: Path) -> None:
        """Empty the session's log (its rotation): no look sees that as news, and it grows
        from nothing."""
        with self._lock:
            os.truncate(log_file, 0)
            watch = self._watches.get(session_id)
            if watch is not None:
                watch.size = 0

    def unwatch(self, session_id: str) -> None:
        with self._lock:
            self._watches.pop(session_id, None)

    def wait_checks(self, count: int, timeout: float) -> bool:
        """Block until ``count`` looks have completed."""
        with self._checked:
            return self._checked.wait_for(lambda: self.checks >= count, timeout)

    def _tick(self) -> None:
        try:
            self.check()
        finally:
            self._timers.call_later(TICK, self._tick)
            with self._checked:
                self.checks += 1
                self._checked.notify_all()

    def check(self) -> None:
        """One look at every watched run's log."""
        now = self._clock.monotonic()
        told: list[tuple[str, Stalled | Active]] = []
        with self._lock:
            for session_id, watch in self._watches.items():
                size = _size(watch.log_file)
                if size != watch.size:  # grown (or rotated): it speaks
                    if watch.stalled:
                        told.append((session_id, Active(watch.run, now - watch.changed)))
                    watch.size, watch.changed, watch.stalled = size, now, False
                elif not watch.stalled and now - watch.changed >= watch.timeout:
                    watch.stalled = True
                    told.append((session_id, Stalled(watch.run, now - watch.changed)))
        for session_id, message in told:
            supervisor = self._supervisor(session_id)
            if supervisor is not None:
                with contextlib.suppress(pykka.ActorDeadError):
                    supervisor.tell(message)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:  # gone (rotated away this instant, or its dir removed): not grown
        return -1
