"""Role pooling (the seeds' ``execute``): tasks run on idle persistent sessions of a role,
on either engine. Only the engine's public calls are used, so a ClusterHive pools across
its hosts as a Hive does across its sessions."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hive_actors import _validate
from hive_actors._models import SessionInfo
from hive_actors.errors import InvalidInput, InvalidTransition


@dataclass(frozen=True, slots=True)
class ExecuteResult:
    """How one task run by ``Hive.execute`` ended."""

    session_id: str
    task: str
    status: str
    exit_code: int | None
    reused: bool
    """True if it ran on an idle persistent session of its role, False if on a new one."""


class Pooling:
    """``execute`` and ``execute_batch``, over an engine's create, start, wait and list."""

    _pool_lock: threading.Lock
    _claimed: set[str]
    _executes: int
    _reused: int

    def _init_pooling(self) -> None:
        self._pool_lock = threading.Lock()
        self._claimed = set()
        self._executes = 0
        self._reused = 0

    if TYPE_CHECKING:  # what the engine provides

        def create_session(
            self,
            task: str,
            priority: str = "medium",
            metadata: Mapping[str, Any] | None = None,
            *,
            role: str | None = None,
            persistent: bool = False,
        ) -> str: ...

        def start_session(
            self, session_id: str, args: Iterable[str] | None = None, *, task: str | None = None
        ) -> str: ...

        def wait(self, session_id: str, timeout: float | None = None) -> str: ...

        def get_session_info(self, session_id: str) -> SessionInfo: ...

        def list_sessions(self, status: str | None = None) -> list[SessionInfo]: ...

    @property
    def pool_counts(self) -> tuple[int, float]:
        """Tasks run through ``execute``, and the share that reused an idle session."""
        with self._pool_lock:
            return self._executes, self._reused / self._executes if self._executes else 0.0

    def execute(
        self,
        task: str,
        role: str,
        *,
        priority: str = "medium",
        metadata: Mapping[str, Any] | None = None,
        args: Iterable[str] | None = None,
        timeout: float | None = None,
    ) -> ExecuteResult:
        """Run ``task`` on an idle persistent session of ``role``, or on a new one.

        The seeds' pooling: a session that finished a task cleanly goes idle and takes
        the next task of its role, so its workspace and context carry over. Blocks until
        the run is over; raises TimeoutError after ``timeout`` seconds.
        """
        (result,) = self.execute_batch(
            [task], role, priority=priority, metadata=metadata, args=args, timeout=timeout
        )
        return result

    def execute_batch(
        self,
        tasks: Iterable[str],
        role: str,
        *,
        priority: str = "medium",
        metadata: Mapping[str, Any] | None = None,
        args: Iterable[str] | None = None,
        timeout: float | None = None,
    ) -> list[ExecuteResult]:
        """Run several tasks one after the other in one session of ``role``.

        Stops at the first task that does not end cleanly (the session has then ended):
        the results list only the tasks that ran.
        """
        tasks = [_validate.task(task) for task in tasks]
        role = _validate.role(role) or ""
        if not role:
            raise InvalidInput("execute needs a role: sessions are pooled by role")
        if not tasks:
            return []
        session_id, reused = self._start_first(role, tasks[0], priority, metadata, args)
        results: list[ExecuteResult] = []
        try:
            for index, task in enumerate(tasks):
                if index:
                    self.start_session(session_id, args, task=task)
                status = self.wait(session_id, timeout)
                info = self.get_session_info(session_id)
                results.append(ExecuteResult(session_id, task, status, info.exit_code, reused))
                with self._pool_lock:
                    self._executes += 1
                    self._reused += reused
                reused = True  # the next task reuses this session
                if status != "idle":
                    break
        finally:
            with self._pool_lock:
                self._claimed.discard(session_id)
        return results

    def _start_first(
        self,
        role: str,
        task: str,
        priority: str,
        metadata: Mapping[str, Any] | None,
        args: Iterable[str] | None,
    ) -> tuple[str, bool]:
        """Claim an idle persistent session of ``role`` that no execute of ours holds and
        start ``task`` on it; else make one. One that another client started meanwhile
        (another front end of a cluster, another daemon client) is passed over."""
        while True:
            # Listed outside the lock: on a cluster that asks every host.
            pooled = [
                info.session_id
                for info in self.list_sessions(status="idle")
                if info.role == role and info.persistent
            ]
            with self._pool_lock:
                free = [session_id for session_id in pooled if session_id not in self._claimed]
                session_id = free[0] if free else None
                if session_id is not None:
                    self._claimed.add(session_id)
            if session_id is None:
                break
            try:
                self.start_session(session_id, args, task=task)
            except InvalidTransition:  # taken by another client: the next one
                with self._pool_lock:
                    self._claimed.discard(session_id)
                continue
            return session_id, True
        session_id = self.create_session(task, priority, metadata, role=role, persistent=True)
        with self._pool_lock:
            self._claimed.add(session_id)
        try:
            self.start_session(session_id, args, task=task)
        except BaseException:
            with self._pool_lock:
                self._claimed.discard(session_id)
            raise
        return session_id, False
