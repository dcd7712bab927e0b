"""The in-memory directory of sessions: current info and supervisor, answered without an actor.

Reads (``status``, ``get``, ``list``) come here instead of queueing behind a supervisor's
mailbox. It is updated after each registry commit and before the commit's events are
published, so a subscriber reacting to an event reads a state at least that new.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka

from hive_actors._models import SessionInfo


@dataclass(slots=True)
class _Entry:
    info: SessionInfo
    supervisor: pykka.ActorRef[Any] | None = None
    changed: threading.Condition | None = None
    """Made by the first caller that waits on this entry (``await_supervisor``)."""

    def notify(self) -> None:
        if self.changed is not None:
            self.changed.notify_all()


class SessionTable:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    def put(self, info: SessionInfo) -> None:
        with self._lock:
            entry = self._entries.get(info.session_id)
            if entry is None:
                self._entries[info.session_id] = _Entry(info)
                return
            entry.info = info
            entry.notify()

    def remove(self, session_id: str) -> None:
        with self._lock:
            entry = self._entries.pop(session_id, None)
            if entry is not None:
                entry.notify()

    def set_supervisor(self, session_id: str, ref: pykka.ActorRef[Any] | None) -> None:
        with self._lock:
            entry = self._entries.get(session_id)
            if entry is not None:
                entry.supervisor = ref
                entry.notify()

    def get(self, session_id: str) -> SessionInfo | None:
        with self._lock:
            entry = self._entries.get(session_id)
            return None if entry is None else entry.info

    def supervisor(self, session_id: str) -> pykka.ActorRef[Any] | None:
        with self._lock:
            entry = self._entries.get(session_id)
            return None if entry is None else entry.supervisor

    def await_supervisor(
        self, session_id: str, live: Callable[[SessionInfo], bool], timeout: float
    ) -> pykka.ActorRef[Any] | None:
        """The session's supervisor; while the session is ``live`` but has none yet (it
        was announced a moment before the manager started its supervisor), wait for it.

        None if the session is gone, not live, or still has none after ``timeout``.
        """
        with self._lock:
            entry = self._entries.get(session_id)
            if entry is None:
                return None
            if entry.supervisor is None and live(entry.info):
                if entry.changed is None:
                    entry.changed = threading.Condition(self._lock)
                entry.changed.wait_for(
                    lambda: (
                        self._entries.get(session_id) is not entry
                        or entry.supervisor is not None
                        or not live(entry.info)
                    ),
                    timeout,
                )
            return entry.supervisor

    def all(self) -> list[SessionInfo]:
        with self._lock:
            return [entry.info for entry in self._entries.values()]

    def wait_for(
        self,
        session_id: str,
        predicate: Callable[[SessionInfo], bool],
        timeout: float | None,
    ) -> SessionInfo | None:
        """Block until the session's info satisfies ``predicate``; woken by updates, no polling.

        Returns the info, or None if the session is gone; raises TimeoutError at ``timeout``.
        """
        with self._lock:
            entry = self._entries.get(session_id)
            if entry is None:
                return None
            if entry.changed is None:
                entry.changed = threading.Condition(self._lock)
            done = entry.changed.wait_for(
                lambda: self._entries.get(session_id) is not entry or predicate(entry.info),
                timeout,
            )
            if self._entries.get(session_id) is not entry:
                return None
            if not done:
                raise TimeoutError
            return entry.info
