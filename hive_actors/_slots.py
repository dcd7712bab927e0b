"""The concurrency cap: at most ``max_running`` agents at once, the rest queued.

Thread-safe: a supervisor takes a slot (or a queue place) itself when its session starts;
the SessionManager, told when a run ends, releases the slot and tells ``Granted`` to the
sessions next in the queue. The Hive reads queue positions to show them in ``get``.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass

RANK = {"high": 0, "medium": 1, "low": 2}


class Slots:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._holders: set[str] = set()
        self._waiting: list[tuple[int, int, str]] = []  # (rank, arrival, session), kept sorted
        self._arrival = itertools.count()

    def acquire(self, session_id: str, priority: str) -> bool:
        """Take a slot (True) or join the queue (False)."""
        with self._lock:
            if session_id in self._holders:
                return True
            if len(self._holders) < self.limit and not self._waiting:
                self._holders.add(session_id)
                return True
            if all(entry[2] != session_id for entry in self._waiting):
                self._waiting.append((RANK[priority], next(self._arrival), session_id))
                self._waiting.sort()
            return False

    def hold(self, session_id: str) -> None:
        """Count a slot as taken without asking (an agent re-adopted after a restart)."""
        with self._lock:
            self._holders.add(session_id)

    def withdraw(self, session_id: str) -> None:
        """Leave the queue now (a queued start withdrawn), so that positions read at once
        are right; the manager's ``release`` that follows finds nothing left to do."""
        with self._lock:
            self._waiting = [entry for entry in self._waiting if entry[2] != session_id]

    def release(self, session_id: str) -> list[str]:
        """Give back a slot or a queue place; return the sessions that now get a slot."""
        with self._lock:
            self._holders.discard(session_id)
            self._waiting = [entry for entry in self._waiting if entry[2] != session_id]
            granted = []
            while self._waiting and len(self._holders) < self.limit:
                _, _, next_id = self._waiting.pop(0)
                self._holders.add(next_id)
                granted.append(next_id)
            return granted

    def position(self, session_id: str) -> int | None:
        """1 for the next to start; None if not queued."""
        with self._lock:
            for index, entry in enumerate(self._waiting):
                if entry[2] == session_id:
                    return index + 1
            return None


@dataclass(frozen=True, slots=True)
class Release:
    """Supervisor -> manager: the run ended (or a queued start was withdrawn)."""

    session_id: str


@dataclass(frozen=True, slots=True)
class Granted:
    """Manager -> supervisor: a slot is yours; spawn."""
