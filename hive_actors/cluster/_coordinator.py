"""The coordinator: which hosts there are, the cluster-wide journal, and the verdict on
hosts lost for good.

One detached, named Ray actor on the head node. It watches Ray's node table and makes sure
one SessionHost runs on every alive node that offers CPUs; it pulls every host's journal
in order and appends it to its own, where each event gets the cluster's seq (the host's
cursor is committed in the same transaction, so a restarted coordinator neither repeats nor
skips an event); front ends long-poll that journal. A host whose node stays gone past
``host_lost_timeout`` has its live sessions recorded ``failed`` (``host_lost``), a final
verdict it is told to apply the moment it is back.

Node membership, placement, restarts and lifetimes are Ray's; only the journal is ours.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ray
import structlog
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from hive_actors._config import HiveConfig
from hive_actors._maintenance import trim_journal
from hive_actors._models import (
    EventBase,
    HostDownEvent,
    HostUpEvent,
    SessionInfo,
    SessionStatusEvent,
    parse_event,
)
from hive_actors._permissions import private_dir
from hive_actors._registry import Registry
from hive_actors._states import TERMINAL, Status
from hive_actors.cluster._host import CALL_THREADS, POLL_GROUP, POLL_THREADS, HostActor
from hive_actors.cluster._wire import Reply, error_to_wire, info_from_wire
from hive_actors.errors import HiveError, InvalidConfig

log = structlog.get_logger(__name__)

NAME = "coordinator"
HOST_LABEL = "hive-host"
"""The Ray node label that names a host; without it, the node's hostname does."""
JOURNAL_DIR = ".cluster"
"""Under the head node's host_root: the cluster's journal (no host is named so)."""
HOST_LOST = "host_lost"

_PULL_BATCH = 500
LINGER = 0.005
"""After a batch, how long a puller lets the next one gather: under load, fewer and
larger pulls (each one a Ray call, a commit and a wake-up); idle, no delay at all."""
_PULL_WAIT = 1.0
_CALL_TIMEOUT = 30.0
_SURVEY_INTERVAL = 0.5
_READY_WAIT = 30.0
_RUNNING = frozenset({Status.STARTING, Status.RUNNING, Status.STOPPING})
_STATUS_EVENTS = frozenset({"session.status", "session.terminated", "session.restart"})
# Agents must outlive their host's worker: only terminate_session stops one.
HOST_ENV = {"RAY_kill_child_processes_on_worker_exit": "0"}


def host_actor_name(host: str) -> str:
    return f"host:{host}"


@dataclass
class _Host:
    name: str
    node_id: str
    handle: Any
    alive: bool = True
    since: datetime = field(default_factory=lambda: datetime.now(UTC))
    down_at: float = 0.0
    given_up: bool = False
    max_running: int = 0
    pump: threading.Thread | None = None
    greeted: threading.Event = field(default_factory=threading.Event)
    """Set once its Hive answered (so its limits are known)."""


class Coordinator:
    def __init__(
        self, host_root: str, namespace: str, settings: dict[str, Any], host_lost_timeout: float
    ) -> None:
        self._root = Path(host_root)
        self._namespace = namespace
        directory = self._root / JOURNAL_DIR
        directory.mkdir(parents=True, exist_ok=True)
        private_dir(directory)
        self._changed = threading.Condition()
        self._lock = threading.RLock()
        self._journal = Registry(
            directory / "journal.db", self._published, datetime.now(UTC).isoformat()
        )
        # What the first front end set, kept across restarts of this actor.
        self._settings: dict[str, Any] = json.loads(
            self._journal.meta("settings", json.dumps(settings))
        )
        self._timeout = float(self._journal.meta("host_lost_timeout", str(host_lost_timeout)))
        self._sessions = {info.session_id: info for info in self._journal.sessions()}
        self._pending: dict[str, list[str]] = json.loads(self._journal.meta("verdicts", "{}"))
        self._hosts: dict[str, _Host] = self._known_hosts()
        self._surveying = threading.Lock()
        """One survey at a time: two reading Ray's node table apart could undo each other."""
        self._cursors: dict[str, int] = {}
        """Per host, the seq of its journal up to which this one has its events."""
        self._stop = threading.Event()
        self._save_meta()
        self._survey()
        threading.Thread(target=self._watch, name="hive-coordinator", daemon=True).start()

    # -- what front ends call ---------------------------------------------------------------

    def attach(self, settings: dict[str, Any], host_lost_timeout: float) -> Reply:
        """A front end attaches: check its settings, take its timeout, return a snapshot."""
        if settings and settings != self._settings:
            differ = sorted(
                key
                for key in settings.keys() | self._settings.keys()
                if settings.get(key) != self._settings.get(key)
            )
            problem = InvalidConfig(
                f"this cluster's hosts run with other settings ({', '.join(differ)} differ): "
                f"{self._settings}; attach with the same ones, or with none"
            )
            return ("error", error_to_wire(problem), 0)
        with self._lock:
            self._timeout = host_lost_timeout
            self._save_meta()
        self._survey()
        deadline = time.monotonic() + _READY_WAIT  # a fresh cluster's hosts are starting
        for host in list(self._hosts.values()):
            if host.alive and not host.greeted.wait(max(0.0, deadline - time.monotonic())):
                log.warning("host not answering yet", host=host.name)
        sessions, last_seq = self._journal.attach(
            lambda: [info.to_json_dict() for info in self._sessions.values()]
        )
        return (
            "ok",
            {
                "last_seq": last_seq,
                "sessions": sessions,
                "hosts": self.hosts(),
                "created": self._journal.created,
            },
            0,
        )

    def describe(self) -> dict[str, Any]:
        """Which process this is (a restart makes a new one) and its journal's last seq."""
        return {"pid": os.getpid(), "last_seq": self._journal.last_seq}

    def hosts(self) -> list[dict[str, Any]]:
        with self._lock:
            hosts = list(self._hosts.values())
            sessions = list(self._sessions.values())
        answer = []
        for host in sorted(hosts, key=lambda host: host.name):
            mine = [info for info in sessions if info.host == host.name]
            answer.append(
                {
                    "name": host.name,
                    "alive": host.alive,
                    "running": sum(info.status in _RUNNING for info in mine),
                    "queued": sum(info.status is Status.QUEUED for info in mine),
                    "max_running": host.max_running,
                    "sessions": sum(info.status not in TERMINAL for info in mine),
                    "since": host.since.isoformat(),
                }
            )
        return answer

    def session(self, session_id: str) -> dict[str, Any] | None:
        """The session as the journal last heard of it, or None."""
        info = self._sessions.get(session_id)
        return None if info is None else info.to_json_dict()

    @ray.method(concurrency_group=POLL_GROUP)
    def pull(self, since: int, timeout: float) -> dict[str, Any]:
        """Journaled events after ``since``, waiting up to ``timeout`` s for the first;
        with the sessions they touched as the journal has them now."""
        with self._changed:
            self._changed.wait_for(lambda: self._journal.last_seq > since, timeout)
        cursors, last_seq = self._journal.attach(lambda: dict(self._cursors))
        events = list(itertools.islice(self._journal.events(since, until=last_seq), _PULL_BATCH))
        if events and events[-1].seq < last_seq:
            cursors = {}  # a part of what they count: the next pull tells
        infos: dict[str, Any] = {}
        for event in events:
            session_id = event.session_id
            if session_id and session_id not in infos:
                info = self._sessions.get(session_id)
                infos[session_id] = None if info is None else info.to_json_dict()
        return {
            "events": [event.to_json_dict() for event in events],
            "infos": infos,
            "cursors": cursors,
        }

    @ray.method(concurrency_group=POLL_GROUP)
    def events(
        self, since: int, session_id: str | None, until: int, limit: int
    ) -> list[dict[str, Any]]:
        """A page of the journal (a replay's backlog), trimmed-markers included."""
        page = itertools.islice(self._journal.events(since, session_id, until), limit)
        return [event.to_json_dict() for event in page]

    def shutdown(self) -> None:
        """Stop watching and pulling (the hosts and their sessions are left as they are)."""
        self._stop.set()

    # -- membership -------------------------------------------------------------------------

    def _watch(self) -> None:
        config = HiveConfig.load(root=self._root, **self._settings)
        hours = config.journal_retention_hours
        hours = config.retention_hours if hours is None else hours
        next_trim = time.monotonic() + config.maintenance_interval
        while not self._stop.wait(_SURVEY_INTERVAL):
            try:
                self._survey()
                if time.monotonic() >= next_trim:
                    trim_journal(self._journal, datetime.now(UTC), hours, self._stop.is_set)
                    next_trim = time.monotonic() + config.maintenance_interval
            except Exception:
                log.exception("cluster survey failed; trying again")

    def _known_hosts(self) -> dict[str, _Host]:
        """The hosts an earlier run of this actor knew, as it left them: a host that was
        down stays down (its time away counted on), one that was up is checked at once."""
        hosts = {}
        now = datetime.now(UTC)
        for name, state in json.loads(self._journal.meta("hosts", "{}")).items():
            down_since = state["down_since"]
            host = hosts[name] = _Host(name, node_id="", handle=None, given_up=state["given_up"])
            if down_since is not None:
                since = datetime.fromisoformat(down_since)
                away = max(0.0, (now - since).total_seconds())
                host.alive, host.since, host.down_at = False, since, time.monotonic() - away
        return hosts

    def _hosts_meta(self) -> dict[str, str]:
        state = {
            host.name: {
                "down_since": None if host.alive else host.since.isoformat(),
                "given_up": host.given_up,
            }
            for host in self._hosts.values()
        }
        return {"hosts": json.dumps(state)}

    def _survey(self) -> None:
        """Match the hosts to Ray's alive nodes: start, mark down, give up."""
        with self._surveying:
            self._survey_once()

    def _survey_once(self) -> None:
        alive: dict[str, tuple[dict[str, Any], bool]] = {}
        for node in ray.nodes():
            if not node.get("Alive") or node.get("Resources", {}).get("CPU", 0) <= 0:
                continue  # a node without CPUs (a head started --num-cpus=0) runs no agents
            labels = node.get("Labels") or {}
            name = labels.get(HOST_LABEL) or node["NodeManagerHostname"]
            alive[name] = (node, HOST_LABEL in labels)
        with self._lock:
            for name, (node, labelled) in alive.items():
                host = self._hosts.get(name)
                if host is None or not host.alive or host.node_id != node["NodeID"]:
                    self._up(name, node["NodeID"], labelled)
            for host in self._hosts.values():
                if host.alive and host.name not in alive:
                    self._down(host)
                elif (
                    not host.alive
                    and not host.given_up
                    and time.monotonic() - host.down_at >= self._timeout
                ):
                    self._give_up(host)

    def _up(self, name: str, node_id: str, labelled: bool) -> None:
        options: dict[str, Any] = {
            "name": host_actor_name(name),
            "namespace": self._namespace,
            "lifetime": "detached",
            "get_if_exists": True,
            "max_restarts": -1,
            "max_task_retries": 0,
            "max_concurrency": CALL_THREADS,
            "num_cpus": 0,
            "runtime_env": {"env_vars": HOST_ENV},
        }
        if labelled:  # follows the name to whichever node carries it, a new one included
            options["label_selector"] = {HOST_LABEL: name}
        else:
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, soft=False)
        handle = HostActor.options(**options).remote(name, str(self._root / name), self._settings)
        host = self._hosts.get(name)
        if host is None:
            host = self._hosts[name] = _Host(name, node_id, handle)
        else:
            host.node_id, host.handle, host.alive = node_id, handle, True
            host.since, host.given_up = datetime.now(UTC), False
        self._journal.mirror([], [], [HostUpEvent(host=name, at=host.since)], self._hosts_meta())
        if host.pump is None:
            host.pump = threading.Thread(
                target=self._pump, args=(name,), name=f"hive-pump-{name}", daemon=True
            )
            host.pump.start()
        log.info("host up", host=name, node_id=node_id)

    def _down(self, host: _Host) -> None:
        host.alive, host.since, host.down_at = False, datetime.now(UTC), time.monotonic()
        detail = "its Ray node is gone"
        event = HostDownEvent(host=host.name, at=host.since, detail=detail)
        self._journal.mirror([], [], [event], self._hosts_meta())
        log.warning("host down", host=host.name)

    def _give_up(self, host: _Host) -> None:
        """The host stayed away past the timeout: its live sessions have failed, for good."""
        now = datetime.now(UTC)
        detail = f"host {host.name} was out of reach for {self._timeout:g} s"
        lost = [
            info
            for info in self._sessions.values()
            if info.host == host.name and info.status not in TERMINAL
        ]
        rows = [
            info.model_copy(
                update={
                    "status": Status.FAILED,
                    "updated": now,
                    "reason": HOST_LOST,
                    "detail": detail,
                    "pid": None,
                }
            )
            for info in lost
        ]
        events = [
            SessionStatusEvent(
                session_id=info.session_id,
                at=now,
                from_=info.status,
                to=Status.FAILED,
                reason=HOST_LOST,
                detail=detail,
                host=host.name,
            )
            for info in lost
        ]
        pending = self._pending.setdefault(host.name, [])
        pending.extend(info.session_id for info in lost)
        host.given_up = True
        meta = {"verdicts": json.dumps(self._pending)} | self._hosts_meta()
        self._journal.mirror(rows, [], events, meta, lambda: self._keep(rows, []))
        log.warning("host lost; its sessions failed", host=host.name, sessions=len(lost))

    # -- pulling a host's journal -----------------------------------------------------------

    def _pump(self, name: str) -> None:
        cursor = int(self._journal.meta(f"cursor:{name}", "0"))
        self._cursors[name] = cursor
        fresh, backoff = True, 0.05
        while not self._stop.is_set():
            host = self._hosts[name]
            try:
                if fresh:
                    cursor = self._greet(host, cursor)
                    fresh = False
                if self._pending.get(name):
                    self._deliver_verdicts(host)
                batch = ray.get(
                    host.handle.pull.remote(cursor, _PULL_BATCH, _PULL_WAIT), timeout=_CALL_TIMEOUT
                )
                if batch["cursor"] > cursor:
                    self._record(name, batch)
                    cursor = batch["cursor"]
                    self._stop.wait(LINGER)
            except Exception as exc:  # a host away, or worse: this thread must go on
                if isinstance(exc, ray.exceptions.RayError):
                    log.debug("host out of reach", host=name, error=type(exc).__name__)
                else:
                    log.exception("pulling a host's journal failed; trying again", host=name)
                fresh = True
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = 0.05

    def _greet(self, host: _Host, cursor: int) -> int:
        """A host (re)reached: learn its limits, give it the verdicts it missed; return the
        cursor to pull from (0 for a host whose registry is not the one pulled so far)."""
        described = ray.get(host.handle.describe.remote(), timeout=_CALL_TIMEOUT)
        host.max_running = described["max_running"]
        host.greeted.set()
        known = self._journal.meta(f"created:{host.name}", "")
        if known and known != described["created"]:
            cursor = 0  # a new registry there (its root was wiped): all of it is new
            self._cursors[host.name] = 0
        if known != described["created"]:
            meta = {
                f"created:{host.name}": described["created"],
                f"cursor:{host.name}": str(cursor),
            }
            self._journal.mirror([], [], [], meta)
        return cursor

    def _deliver_verdicts(self, host: _Host) -> None:
        """Tell a host which of its sessions the cluster gave up while it was away; it
        stops their agents and records them so. Kept (and sent again) until it has."""
        with self._lock:
            pending = list(self._pending.get(host.name, ()))
        detail = f"host {host.name} was out of reach for {self._timeout:g} s"
        answer = ray.get(
            host.handle.give_up.remote(pending, HOST_LOST, detail), timeout=_CALL_TIMEOUT
        )
        if answer[0] != "ok":
            raise HiveError(f"host {host.name} could not apply the verdict: {answer[1]}")
        with self._lock:
            left = [id_ for id_ in self._pending.get(host.name, ()) if id_ not in pending]
            if left:
                self._pending[host.name] = left
            else:
                self._pending.pop(host.name, None)
            self._save_meta()

    def _record(self, name: str, batch: dict[str, Any]) -> None:
        with self._lock:
            final = {
                session_id
                for session_id in batch["infos"]
                if (info := self._sessions.get(session_id)) is not None
                and info.reason == HOST_LOST
                and info.status is Status.FAILED
            }
            events: list[EventBase] = [
                parse_event(data)  # type: ignore[misc]  # session events only
                for data in batch["events"]
                if not (data["session_id"] in final and data["type"] in _STATUS_EVENTS)
            ]
            rows, removed = [], []
            for session_id, data in batch["infos"].items():
                if data is None:
                    removed.append(session_id)
                elif session_id not in final:
                    rows.append(info_from_wire(data))
            self._journal.mirror(
                rows,
                removed,
                events,
                {f"cursor:{name}": str(batch["cursor"])},
                lambda: self._keep(rows, removed, name, batch["cursor"]),
            )

    def _keep(
        self, rows: list[SessionInfo], removed: list[str], host: str = "", cursor: int = 0
    ) -> None:
        """What a commit of the journal changed, seen by pulls from the moment it is."""
        if host:
            self._cursors[host] = cursor
        for info in rows:
            self._sessions[info.session_id] = info
        for session_id in removed:
            self._sessions.pop(session_id, None)

    def _published(self, _event: EventBase) -> None:
        with self._changed:
            self._changed.notify_all()

    def _save_meta(self) -> None:
        self._journal.mirror(
            [],
            [],
            [],
            {
                "settings": json.dumps(self._settings),
                "host_lost_timeout": repr(self._timeout),
                "verdicts": json.dumps(self._pending),
            },
        )


CoordinatorActor: Any = ray.remote(concurrency_groups={POLL_GROUP: POLL_THREADS})(Coordinator)
