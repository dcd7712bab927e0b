"""The timer thread: deadlines on the injected clock, and what closing does to them."""

from __future__ import annotations

import threading
from collections.abc import Callable

from hive_actors._timers import Timers
from hive_actors.testing import FakeClock


def test_due_timers_run_in_deadline_order_on_the_clock(clock: FakeClock, timers: Timers) -> None:
    ran: list[str] = []
    done = threading.Event()
    timers.call_later(2, lambda: ran.append("two"))
    timers.call_later(1, lambda: ran.append("one"))
    timers.call_later(3, lambda: (ran.append("three"), done.set()))
    timers.call_later(9, lambda: ran.append("nine"))
    clock.advance(3)
    assert done.wait(10)
    assert ran == ["one", "two", "three"]
    timers.close()
    assert ran == ["one", "two", "three"]  # the pending one is dropped at close


def test_closing_runs_the_at_close_of_pending_timers_only(clock: FakeClock, timers: Timers) -> None:
    """A pending timer's ``at_close`` runs once, in deadline order, in the closing thread;
    not that of a timer that fired or was cancelled, and never a pending timer's callback."""
    ran: list[tuple[str, bool]] = []
    fired = threading.Event()

    def record(name: str) -> Callable[[], None]:
        return lambda: ran.append((name, threading.current_thread() is threading.main_thread()))

    timers.call_later(1, lambda: (record("fired")(), fired.set()), record("fired at close"))
    timers.call_later(5, record("callback"), record("at close 5"))
    timers.call_later(2, record("callback"), record("at close 2"))
    timers.call_later(3, record("callback"), record("cancelled at close")).cancel()
    clock.advance(1)
    assert fired.wait(10)
    timers.close()
    assert ran == [("fired", False), ("at close 2", True), ("at close 5", True)]
    timers.close()  # idempotent: nothing runs twice
    assert len(ran) == 3
