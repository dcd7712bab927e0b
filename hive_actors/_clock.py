"""Where hive_actors reads time from, so tests can move it instead of sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """A monotonic clock for deadlines and windows, and a wall clock for timestamps."""

    def monotonic(self) -> float: ...

    def now(self) -> datetime: ...

    def wait_timeout(self, deadline: float) -> float | None:
        """How long a timer thread should block before ``deadline`` may be due.

        None means "until woken": a fake clock wakes its listeners when it moves.
        """
        ...

    def on_advance(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` whenever time jumps (never, for a real clock)."""
        ...


class SystemClock:
    """The real clocks: ``time.monotonic`` and UTC wall time."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def wait_timeout(self, deadline: float) -> float | None:
        return max(0.0, deadline - time.monotonic())

    def on_advance(self, listener: Callable[[], None]) -> None:
        pass


def isoformat(moment: datetime) -> str:
    """The timestamp format of session metadata: ISO 8601 with offset, like the seeds'."""
    return moment.isoformat(timespec="microseconds")
