"""Engine: what the daemon serves, the calls ``Hive`` and ``ClusterHive`` share.

The HTTP API, ``hivectl`` and the dashboard are written once, against this; mypy checks
that both engines satisfy it where the daemon makes one (``_server._engine``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from hive_actors._git import Changes
from hive_actors._models import Event, HostInfo, SessionInfo

if TYPE_CHECKING:
    from hive_actors._hive import HiveStats, SessionContext


class Engine(Protocol):
    @property
    def root(self) -> Path: ...

    @property
    def created(self) -> str: ...

    @property
    def last_seq(self) -> int: ...

    def create_session(
        self,
        task: str,
        priority: str = ...,
        metadata: Mapping[str, Any] | None = ...,
        *,
        command: Iterable[str] | None = ...,
        args: Iterable[str] = ...,
        env: Mapping[str, str] | None = ...,
        role: str | None = ...,
        persistent: bool = ...,
        restart: str = ...,
        restart_limit: int = ...,
        restart_backoff: float = ...,
        idle_timeout: float | None = ...,
        max_lifetime: float | None = ...,
        host: str | None = ...,
        repo: str | None = ...,
        ref: str | None = ...,
        setup: Iterable[str] | None = ...,
        ports: int | None = ...,
        stall_timeout: float | None = ...,
        stall_action: str | None = ...,
        resume_command: Iterable[str] | None = ...,
        limits: Mapping[str, Any] | None = ...,
    ) -> str: ...

    def start_session(
        self, session_id: str, args: Iterable[str] | None = ..., *, task: str | None = ...
    ) -> str: ...

    def terminate_session(self, session_id: str, grace: float | None = ...) -> str: ...

    def status(self, session_id: str) -> str: ...

    def get_session_info(self, session_id: str) -> SessionInfo: ...

    def list_sessions(self, status: str | None = ...) -> list[SessionInfo]: ...

    def output_dir(self, session_id: str) -> str: ...

    def log_file(self, session_id: str) -> str: ...

    def log_tail(self, session_id: str, lines: int = ...) -> tuple[int, str]: ...

    def read_log(self, session_id: str, offset: int = ..., limit: int = ...) -> bytes: ...

    def wait(self, session_id: str, timeout: float | None = ...) -> str: ...

    def cleanup(self, max_age_hours: float = ...) -> list[str]: ...

    def remove_session(self, session_id: str, *, delete_branch: bool = ...) -> None: ...

    def changes(self, session_id: str) -> Changes: ...

    def send_message(self, session_id: str, role: str, content: str) -> int: ...

    def context(self, session_id: str) -> SessionContext: ...

    def aevents(
        self, session_id: str | None = ..., since: int | None = ..., *, follow: bool = ...
    ) -> AsyncIterator[Event]: ...

    def hosts(self) -> list[HostInfo]: ...

    def stats(self) -> HiveStats: ...

    def metrics(self) -> bytes: ...

    def close(self, grace: float | None = ...) -> None: ...
