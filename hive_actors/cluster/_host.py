"""SessionHost: one machine's share of a cluster, a plain ``Hive`` inside a Ray actor.

Ray places one per node, restarts it in place when its process dies, and keeps it alive
past every driver (a detached, named actor). The Hive inside keeps its sessions under
``<host_root>/<host name>`` on the node's own disk, with ``shutdown="leave"``: no exit of
this actor stops an agent, so a restarted host re-adopts them as any reopened Hive does.

Every call answers with plain data (``_wire``): the front ends and the coordinator never
hold one of this host's objects.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import ray

from hive_actors._context import CONTEXT_CALLS
from hive_actors._git import Changes
from hive_actors._hive import Hive
from hive_actors._models import Event, JournalTrimmedEvent, SessionInfo
from hive_actors.cluster._wire import Reply, error_to_wire, info_to_wire
from hive_actors.errors import HiveError, SessionNotFound

POLL_GROUP = "poll"
"""Long calls (``wait``, ``pull``) run in their own threads: a long-poll that shared the
default group would hold up every short call behind it."""
POLL_THREADS = 256
CALL_THREADS = 32

_CALLS = frozenset(
    {
        "start_session",
        "terminate_session",
        "status",
        "get_session_info",
        "list_sessions",
        "log_tail",
        "read_log",
        "cleanup",
        "remove_session",
        "changes",
        "send_message",
        "context",
        "stats",
    }
)


class SessionHost:
    """The Ray actor of one host. Its methods are the cluster's internal protocol."""

    def __init__(self, name: str, root: str, settings: dict[str, Any]) -> None:
        self.name = name
        self._hive = Hive(root=Path(root), **settings, shutdown="leave")
        self._changed = threading.Condition()
        self._hive.subscribe_to_all_sessions(self._wake)
        self._started = time.time()

    def _wake(self, _event: Event) -> None:
        with self._changed:
            self._changed.notify_all()

    def describe(self) -> dict[str, Any]:
        context = ray.get_runtime_context()
        return {
            "name": self.name,
            "max_running": self._hive.config.max_running,
            "created": self._hive.created,
            "pid": os.getpid(),
            "node_id": context.get_node_id(),
            "started": self._started,
        }

    def create(
        self, session_id: str, task: str, priority: str, metadata: Any, options: dict[str, Any]
    ) -> Reply:
        def create() -> Any:
            self._hive._create_session(session_id, task, priority, metadata, **options)
            return info_to_wire(self._hive.get_session_info(session_id), self.name)

        return self._answer(create)

    def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Reply:
        """One of Hive's calls; sessions come back in their JSON form, stamped with this host."""
        if method not in _CALLS:
            raise ValueError(f"not a host call: {method}")
        if method == "context":
            session_id, name, *rest = args
            if name not in CONTEXT_CALLS:
                raise ValueError(f"not a context call: {name}")
            return self._answer(lambda: self._hive._context_call(session_id, name, *rest))
        if method == "stats":
            return self._answer(lambda: asdict(self._hive.stats()))
        function = getattr(self._hive, method)
        return self._answer(lambda: self._plain(function(*args, **kwargs)))

    def give_up(self, session_ids: list[str], reason: str, detail: str) -> Reply:
        """Apply the cluster's verdict on sessions it gave up while this host was away."""

        def give_up() -> None:
            for session_id in session_ids:
                try:
                    self._hive._give_up(session_id, reason, detail)
                except SessionNotFound:
                    continue

        return self._answer(give_up)

    @ray.method(concurrency_group=POLL_GROUP)
    def wait(self, session_id: str, timeout: float) -> Reply:
        return self._answer(lambda: self._hive.wait(session_id, timeout))

    @ray.method(concurrency_group=POLL_GROUP)
    def pull(self, since: int, limit: int, timeout: float) -> dict[str, Any]:
        """Journaled events after ``since`` (at most ``limit``), waiting up to ``timeout`` s
        for the first; with the sessions they touched as they are now."""
        with self._changed:
            self._changed.wait_for(lambda: self._hive.last_seq > since, timeout)
        events: list[dict[str, Any]] = []
        cursor = since
        for event in self._hive.events(since=since):
            cursor = event.seq
            if isinstance(event, JournalTrimmedEvent):
                continue  # this host trimmed them before they were pulled: nothing to send
            events.append(event.to_json_dict() | {"host": self.name})
            if len(events) >= limit:
                break
        infos: dict[str, Any] = {}
        for session_id in {event["session_id"] for event in events}:
            try:
                infos[session_id] = info_to_wire(self._hive.get_session_info(session_id), self.name)
            except SessionNotFound:
                infos[session_id] = None  # removed since
        return {"events": events, "infos": infos, "cursor": cursor}

    def _plain(self, value: Any) -> Any:
        if isinstance(value, SessionInfo):
            return info_to_wire(value, self.name)
        if isinstance(value, Changes):
            return value.to_json_dict()
        if isinstance(value, list):
            return [self._plain(item) for item in value]
        return value

    def _answer(self, call: Callable[[], Any]) -> Reply:
        try:
            value = call()
        except (HiveError, TimeoutError) as exc:
            return ("error", error_to_wire(exc), self._hive.last_seq)
        return ("ok", value, self._hive.last_seq)


HostActor: Any = ray.remote(concurrency_groups={POLL_GROUP: POLL_THREADS})(SessionHost)
"""SessionHost as Ray's actor class: ``HostActor.options(...).remote(...)``."""
