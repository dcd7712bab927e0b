"""ClusterHive: Hive's API over the hosts of a Ray cluster.

A front end holds no session: each lives on one host (a SessionHost actor), which answers
for it; this object routes each call to that host, places new sessions, and follows the
coordinator's journal so that its subscribers, ``events()`` and placement see every host.
Closing it detaches it; the cluster, its hosts and their agents go on.
"""

from __future__ import annotations

import itertools
import logging
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import ray
import structlog

from hive_actors import _validate
from hive_actors._cgroups import weakest_mode
from hive_actors._config import HiveConfig
from hive_actors._events import EventBus, Journal, Subscription, Topics
from hive_actors._git import Changes
from hive_actors._hive import HiveStats, SessionContext
from hive_actors._metrics import Metrics
from hive_actors._models import Event, HostInfo, SessionInfo, parse_event
from hive_actors._pooling import Pooling
from hive_actors._states import NOT_FOUND, SETTLED, TERMINAL, Status
from hive_actors.cluster._coordinator import (
    HOST_LOST,
    LINGER,
    NAME,
    CoordinatorActor,
    host_actor_name,
)
from hive_actors.cluster._wire import Reply, error_from_wire, info_from_wire
from hive_actors.errors import (
    HiveClosed,
    HiveError,
    HostUnavailable,
    InvalidConfig,
    InvalidInput,
    SessionNotFound,
)

log = structlog.get_logger(__name__)

T = TypeVar("T")

_REPLY_TIMEOUT = 60.0
"""The longest one call to a host may take (its answer comes in milliseconds)."""
_RESTART_PATIENCE = 30.0
"""How long a call keeps trying a host that is alive but restarting (Ray takes ~1.5 s)."""
_WAIT_SLICE = 2.0
"""A ``wait`` asks its host in slices this long, to notice a host gone meanwhile."""
_PULL_WAIT = 1.0
_HOSTS_EVERY = 0.5
_CATCH_UP_LIMIT = 5.0
_STOP_CHECK = 0.05
_PAGE = 1000
_RETRIED = frozenset(
    {
        "status",
        "get_session_info",
        "list_sessions",
        "log_tail",
        "read_log",
        "changes",
        "terminate_session",
        "cleanup",
        "stats",
        "history",
        "active_files",
        "file_index",
        "build_context",
    }
)
"""Calls safe to send again when a host restarted before it answered."""
_FORBIDDEN_SETTINGS = frozenset({"root", "shutdown"})


class ClusterHive(Pooling, Topics):
    """Hive's API over a Ray cluster: the same calls, results and errors, plus ``hosts()``
    and ``create_session(host=...)``.

        with ClusterHive("auto", host_root="/var/lib/hive") as hive:
            session_id = hive.create_session("Build a Rust CLI tool", host="gpu-1")
            hive.start_session(session_id)
            print(hive.wait(session_id), hive.get_session_info(session_id).host)

    ``address`` is what ``ray.init`` takes (None: a cluster this process already joined, or
    Ray's own lookup). ``settings`` are HiveConfig's fields, applied on every host; the
    first front end of a cluster sets them, later ones may repeat them or give none.
    ``host_lost_timeout`` is how long a host may stay unreachable before its live sessions
    are recorded failed (``host_lost``); the newest front end's value holds.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        host_root: str | Path,
        namespace: str = "hive",
        host_lost_timeout: float = 300.0,
        **settings: Any,
    ) -> None:
        root = _host_root(host_root)
        if not isinstance(namespace, str) or not namespace.strip():
            raise InvalidConfig(f"namespace must be a non-empty string, not {namespace!r}")
        timeout = _validate.bounded(host_lost_timeout, "host_lost_timeout", 0, 10 * 365 * 86400)
        plain = _settings(settings)
        self._namespace = namespace
        self._closed = False
        self._close_lock = threading.Lock()
        self._init_pooling()
        _join_ray(address)
        try:
            self._coordinator = CoordinatorActor.options(
                name=NAME,
                namespace=namespace,
                lifetime="detached",
                get_if_exists=True,
                max_restarts=-1,
                max_task_retries=0,
                max_concurrency=32,
                num_cpus=0,
                resources={"node:__internal_head__": 0.001},
            ).remote(str(root), namespace, plain, timeout)
            snapshot = _unwrap(
                ray.get(self._coordinator.attach.remote(plain, timeout), timeout=_REPLY_TIMEOUT)
            )
        except BaseException:
            _leave_ray()
            raise
        self._root = root
        self._created: str = snapshot["created"]
        self._subscriptions: dict[int, Subscription] = {}
        self._bus = EventBus()
        self._journal = _ClusterJournal(self)
        self._feed_lock = threading.Lock()
        self._known_changed = threading.Condition()
        self._seq: int = snapshot["last_seq"]
        self._known: dict[str, SessionInfo] = {
            data["session_id"]: info_from_wire(data) for data in snapshot["sessions"]
        }
        self._hosts: list[HostInfo] = [HostInfo.model_validate(h) for h in snapshot["hosts"]]
        self._hosts_at = time.monotonic()
        self._handles: dict[str, Any] = {}
        self._answered: dict[str, int] = {}
        """Per host, its journal's seq in the newest answer it gave this front end."""
        self._pulled: dict[str, int] = {}
        """Per host, the seq of its journal up to which this front end has its events."""
        self._turn = itertools.count()
        self._placement = threading.Lock()
        self._placed: dict[str, set[str]] = {}
        """Per host, the sessions not ended there that this front end knows of."""
        for info in self._known.values():
            self._note_placement(info)
        self._metrics = Metrics(
            lambda: list(self._known.values()),
            lambda: self._bus.subscriber_count,
            lambda: sum(info.status in _LIVE for info in list(self._known.values())),
        )
        self._bus.observe(self._metrics.observe)
        self._stop = threading.Event()
        self._pump = threading.Thread(target=self._follow, name="hive-cluster-feed", daemon=True)
        self._pump.start()

    # -- the front end itself ---------------------------------------------------------------

    def __enter__(self) -> ClusterHive:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def root(self) -> Path:
        """The host_root: each host keeps its sessions under ``<root>/<host name>``."""
        return self._root

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def created(self) -> str:
        """When this cluster's journal was created (ISO 8601)."""
        return self._created

    @property
    def last_seq(self) -> int:
        """The seq of the newest journaled event, once every change this front end was
        told of is in the journal (0 if none)."""
        self._catch_up()
        return self._seq

    def close(self, grace: float | None = None) -> None:
        """Detach this front end. Every session goes on running on its host: a cluster
        outlives its clients (``terminate_session`` is what stops a session). Idempotent;
        ``grace`` is accepted for Hive's signature and has nothing to stop."""
        if grace is not None:
            _validate.grace(grace)
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._stop.set()
            for subscription in list(self._subscriptions.values()):
                subscription.close()
            self._subscriptions.clear()
            self._pump.join(_PULL_WAIT + 5)
            _leave_ray()

    # -- hosts ------------------------------------------------------------------------------

    def hosts(self) -> list[HostInfo]:
        """Every host the cluster has had, alive or not, by name."""
        self._check_open()
        hosts = [HostInfo.model_validate(h) for h in self._coordinator_call("hosts")]
        self._hosts, self._hosts_at = hosts, time.monotonic()
        return hosts

    # -- sessions ---------------------------------------------------------------------------

    def create_session(
        self,
        task: str,
        priority: str = "medium",
        metadata: Mapping[str, Any] | None = None,
        *,
        command: Iterable[str] | None = None,
        args: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
        role: str | None = None,
        persistent: bool = False,
        restart: str = "never",
        restart_limit: int = 3,
        restart_backoff: float = 1.0,
        idle_timeout: float | None = None,
        max_lifetime: float | None = None,
        host: str | None = None,
        repo: str | None = None,
        ref: str | None = None,
        setup: Iterable[str] | None = None,
        ports: int | None = None,
        stall_timeout: float | None = None,
        stall_action: str | None = None,
        resume_command: Iterable[str] | None = None,
        limits: Mapping[str, Any] | None = None,
    ) -> str:
        """Hive.create_session, on ``host`` (by name) or on the least-loaded alive host.

        ``repo`` is a path on that host (made absolute here, against this process's
        working dir). Raises HostUnavailable (nothing created) if ``host`` is down or
        unknown.
        """
        self._check_open()
        # What cannot cross to a host as plain data (a generator, a nesting too deep to
        # pickle) is refused here; the host checks everything again.
        task = _validate.task(task)
        metadata = _validate.metadata(metadata)
        options = {
            "command": None if command is None else list(_validate.command(command)),
            "args": list(_validate.args(args)),
            "env": _validate.env(env),
            "role": role,
            "persistent": persistent,
            "restart": restart,
            "restart_limit": restart_limit,
            "restart_backoff": restart_backoff,
            "idle_timeout": idle_timeout,
            "max_lifetime": max_lifetime,
            "repo": _validate.repo(repo),
            "ref": ref,
            "setup": None if setup is None else list(_validate.setup(setup)),
            "ports": ports,
            "stall_timeout": stall_timeout,
            "stall_action": stall_action,
            "resume_command": None
            if resume_command is None
            else list(_validate.resume_command(resume_command)),
            "limits": _validate.limits(limits).model_dump(exclude_none=True),
        }
        session_id = _validate.new_session_id()
        name = self._place(host, session_id)
        try:
            call = self._handle(name).create
            data = self._send(
                name, lambda: call.remote(session_id, task, priority, metadata, options)
            )
        except BaseException:
            with self._placement:
                self._placed[name].discard(session_id)
            raise
        self._learn(info_from_wire(data))
        return session_id

    def start_session(
        self, session_id: str, args: Iterable[str] | None = None, *, task: str | None = None
    ) -> str:
        """Hive.start_session, on the session's host."""
        session_id = _validate.session_id(session_id)
        run_args = None if args is None else list(_validate.args(args))
        host = self._host_of(session_id)
        try:
            return str(self._call(host, "start_session", session_id, run_args, task=task))
        except _MayHaveRun:
            # The host restarted before it answered: the start happened or it did not.
            status = self.status(session_id)
            if status not in (Status.CREATED, Status.IDLE):
                return status
            return str(self._call(host, "start_session", session_id, run_args, task=task))

    def terminate_session(self, session_id: str, grace: float | None = None) -> str:
        """Hive.terminate_session, on the session's host."""
        session_id = _validate.session_id(session_id)
        grace = None if grace is None else _validate.grace(grace)
        host = self._host_of(session_id)
        known = self._known.get(session_id)
        if known is not None and _given_up(known):
            return str(known.status)  # ended, for good: left as it is, as any ended session
        return str(self._call(host, "terminate_session", session_id, grace))

    def status(self, session_id: str) -> str:
        """The session's status word, or ``"not_found"``; a session whose host is out of
        reach keeps its last known status (``failed`` once the host is given up)."""
        session_id = _validate.session_id(session_id)
        self._check_open()
        try:
            return str(self._read(session_id, "status", session_id))
        except SessionNotFound:
            return NOT_FOUND

    def get_session_info(self, session_id: str) -> SessionInfo:
        """Everything known about a session (``host`` included). Raises SessionNotFound."""
        session_id = _validate.session_id(session_id)
        self._check_open()
        data = self._read(session_id, "get_session_info", session_id)
        return data if isinstance(data, SessionInfo) else info_from_wire(data)

    def list_sessions(self, status: str | None = None) -> list[SessionInfo]:
        """All sessions of every host (or those with ``status``), oldest first."""
        status = _validate.status_filter(status)
        self._check_open()
        answers = self._each_host("list_sessions", status)
        infos = [info_from_wire(data) for result in answers.values() for data in result]
        # Hosts out of reach: what the journal last said (a copy: the feed thread adds).
        for info in list(self._known.values()):
            if info.host not in answers and (status is None or info.status == status):
                infos.append(info)
        return sorted(infos, key=lambda info: (info.created, info.session_id))

    def output_dir(self, session_id: str) -> str:
        return self.get_session_info(session_id).output_dir

    def log_file(self, session_id: str) -> str:
        """Its path on the session's host (a file on that machine)."""
        return self.get_session_info(session_id).log_file

    def log_tail(self, session_id: str, lines: int = 50) -> tuple[int, str]:
        """Hive.log_tail, read by the session's host."""
        session_id = _validate.session_id(session_id)
        size, text = self._call(self._host_of(session_id), "log_tail", session_id, lines)
        return int(size), str(text)

    def read_log(self, session_id: str, offset: int = 0, limit: int = 65536) -> bytes:
        """Hive.read_log, read by the session's host."""
        session_id = _validate.session_id(session_id)
        return bytes(self._call(self._host_of(session_id), "read_log", session_id, offset, limit))

    def wait(self, session_id: str, timeout: float | None = None) -> str:
        """Block until the session is settled; as Hive.wait. Woken by its host's own wait
        (or, with the host out of reach, by the journal's verdict)."""
        session_id = _validate.session_id(session_id)
        timeout = _validate.wait_timeout(timeout)
        self._check_open()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = _WAIT_SLICE
            if deadline is not None:
                left = max(0.0, min(left, deadline - time.monotonic()))
            host = self._host_of(session_id)
            try:
                ask = partial(self._handle(host).wait.remote, session_id, left)
                return str(self._send(host, ask, patience=max(left, 0.1)))
            except TimeoutError:
                pass
            except HostUnavailable:
                known = self._known.get(session_id)
                if known is not None and known.status in SETTLED:
                    return str(known.status)
                with self._known_changed:
                    self._known_changed.wait(min(left, 0.5))
            if deadline is not None and time.monotonic() >= deadline:
                status = self.status(session_id)
                raise TimeoutError(f"session {session_id} still {status} after {timeout} s")

    def cleanup(self, max_age_hours: float = 24) -> list[str]:
        """Hive.cleanup on every alive host; the removed ids of all of them."""
        max_age_hours = _validate.max_age_hours(max_age_hours)
        self._check_open()
        answers = self._each_host("cleanup", max_age_hours)
        return [session_id for removed in answers.values() for session_id in removed]

    def remove_session(self, session_id: str, *, delete_branch: bool = False) -> None:
        """Hive.remove_session, on the session's host."""
        session_id = _validate.session_id(session_id)
        self._call(
            self._host_of(session_id), "remove_session", session_id, delete_branch=delete_branch
        )

    def changes(self, session_id: str) -> Changes:
        """Hive.changes, read by the session's host (where its worktree is)."""
        session_id = _validate.session_id(session_id)
        return Changes.from_json_dict(self._call(self._host_of(session_id), "changes", session_id))

    def stats(self) -> HiveStats:
        """Hive.stats summed over the alive hosts; subscribers and last_seq are this front
        end's own."""
        self._check_open()
        each = list(self._each_host("stats").values())
        by_status: Counter[str] = Counter()
        for stats in each:
            by_status.update(stats["by_status"])

        def total(key: str) -> int:
            return sum(int(stats[key]) for stats in each)

        executes, reuse_rate = self.pool_counts
        return HiveStats(
            sessions=total("sessions"),
            by_status=dict(by_status),
            live_agents=total("live_agents"),
            runs=total("runs"),
            restarts=total("restarts"),
            subscribers=self._bus.subscriber_count,
            actors=total("actors"),
            actor_threads=total("actor_threads"),
            last_seq=self._seq,
            executes=executes,
            reuse_rate=reuse_rate,
            cgroup_mode=weakest_mode(str(stats.get("cgroup_mode", "none")) for stats in each),
        )

    def metrics(self) -> bytes:
        """The Prometheus text: gauges from the sessions of every host as the journal has
        them; counters from the events this front end has seen since it attached."""
        text, _seq = self._journal.attach(self._metrics.exposition)
        return text

    # -- context ----------------------------------------------------------------------------

    def send_message(self, session_id: str, role: str, content: str) -> int:
        """Add a message to the session's conversation history; return its event's seq
        on its host (the cluster journal gives the event its own seq)."""
        result: int = self._context_call(session_id, "add_message", role, content)
        return result

    def context(self, session_id: str) -> SessionContext:
        """The session's ContextManager calls, bound to its id."""
        return SessionContext(self, self.get_session_info(session_id).session_id)

    def _context_call(self, session_id: str, method: str, *args: Any) -> Any:
        session_id = _validate.session_id(session_id)
        self._check_open()
        return self._call(self._host_of(session_id), "context", session_id, method, *args)

    # -- events -----------------------------------------------------------------------------

    def _topics(self) -> tuple[EventBus, Journal]:
        self._catch_up()
        return self._bus, self._journal

    def _catch_up(self) -> None:
        """Wait until the journal has every event of the changes this front end's calls
        made (or saw): what a call did shows in the events read after it, as on one Hive.
        Bounded: a host out of reach does not hold a reader up."""
        with self._known_changed:
            self._known_changed.wait_for(
                lambda: (
                    all(self._pulled.get(host, 0) >= seq for host, seq in self._answered.items())
                    or self._stop.is_set()
                ),
                _CATCH_UP_LIMIT,
            )

    def _follow(self) -> None:
        """Pull the coordinator's journal; update what is known, then publish, in order."""
        backoff = 0.05
        while not self._stop.is_set():
            pulled = self._coordinator.pull.remote(self._seq, _PULL_WAIT)
            while not self._stop.is_set() and not ray.wait([pulled], timeout=_STOP_CHECK)[0]:
                pass  # closing does not wait for a long-poll to run out
            if self._stop.is_set():
                return
            try:
                self._apply(ray.get(pulled))
            except Exception as exc:  # the coordinator away, or worse: the feed must go on
                if isinstance(exc, ray.exceptions.RayError):
                    log.debug("coordinator out of reach", error=type(exc).__name__)
                else:
                    log.exception("following the cluster's journal failed; trying again")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = 0.05
            if time.monotonic() - self._hosts_at >= _HOSTS_EVERY:
                try:
                    self.hosts()
                except HiveError:
                    log.debug("could not refresh the hosts")

    def _apply(self, batch: dict[str, Any]) -> None:
        """One pulled batch: what is known first, then the events, in order; a failure
        leaves ``_seq`` at the last event published, so the next pull goes on from it."""
        with self._feed_lock:
            for session_id, data in batch["infos"].items():
                if data is None:
                    self._forget(session_id)
                else:
                    self._learn(info_from_wire(data))
            for data in batch["events"]:
                event = parse_event(data)
                if event.type != "journal.trimmed":
                    self._bus.publish(event)
                self._seq = event.seq
            self._pulled.update(batch["cursors"])
        with self._known_changed:
            self._known_changed.notify_all()
        if batch["events"]:
            self._stop.wait(LINGER)

    # -- placement and routing --------------------------------------------------------------

    def _place(self, wanted: str | None, session_id: str) -> str:
        """The host for a new session: ``wanted``, or the least loaded. The session counts
        there from this moment, so that creates made at once spread over the hosts."""
        if wanted is not None and not isinstance(wanted, str):
            raise InvalidInput(f"host must be a host's name (a string), not {wanted!r}")
        hosts = self._hosts
        if not any(host.alive and wanted in (None, host.name) for host in hosts):
            hosts = self.hosts()  # one may have come up since the last look
        alive = [host for host in hosts if host.alive and wanted in (None, host.name)]
        if not alive:
            raise HostUnavailable(wanted or "(any)", [(host.name, host.alive) for host in hosts])

        def load(host: HostInfo) -> float:
            return len(self._placed.get(host.name, ())) / max(host.max_running, 1)

        with self._placement:
            least = min(load(host) for host in alive)
            tied = [host.name for host in alive if load(host) == least]
            name = tied[next(self._turn) % len(tied)]
            self._placed.setdefault(name, set()).add(session_id)
        return name

    def _note_placement(self, info: SessionInfo) -> None:
        if info.host is None:
            return
        with self._placement:
            placed = self._placed.setdefault(info.host, set())
            if info.status in TERMINAL:
                placed.discard(info.session_id)
            else:
                placed.add(info.session_id)

    def _learn(self, info: SessionInfo) -> None:
        self._known[info.session_id] = info
        self._note_placement(info)

    def _forget(self, session_id: str) -> None:
        info = self._known.pop(session_id, None)
        if info is not None and info.host is not None:
            with self._placement:
                self._placed.get(info.host, set()).discard(session_id)

    def _host_of(self, session_id: str) -> str:
        """The host of a session: known from the journal or a create, else asked around."""
        self._check_open()
        info = self._known.get(session_id)
        if info is not None and info.host is not None:
            return info.host
        for name, status in self._each_host("status", session_id).items():
            if status != NOT_FOUND:
                return name
        raise SessionNotFound(session_id)

    def _read(self, session_id: str, method: str, *args: Any) -> Any:
        """A read from the session's host; from the journal while the host is away, or
        once the cluster gave the session up (a verdict its host may still be applying)."""
        host = self._host_of(session_id)
        known = self._known.get(session_id)
        if known is None or not _given_up(known):
            try:
                return self._call(host, method, *args)
            except HostUnavailable:
                known = self._known.get(session_id)
                if known is None:
                    raise SessionNotFound(session_id) from None
        return str(known.status) if method == "status" else known

    # -- talking to hosts -------------------------------------------------------------------

    def _handle(self, host: str) -> Any:
        handle = self._handles.get(host)
        if handle is None:
            try:
                handle = ray.get_actor(host_actor_name(host), namespace=self._namespace)
            except ValueError:
                raise HostUnavailable(host, [(h.name, h.alive) for h in self._hosts]) from None
            self._handles[host] = handle
        return handle

    def _call(self, host: str, method: str, *args: Any, **kwargs: Any) -> Any:
        name = args[1] if method == "context" else method
        call = self._handle(host).call
        return self._send(host, lambda: call.remote(method, args, kwargs), name in _RETRIED)

    def _send(
        self,
        host: str,
        submit: Callable[[], Any],
        idempotent: bool = True,
        patience: float = _RESTART_PATIENCE,
    ) -> Any:
        """Send one call to a host and return its answer (or raise its error).

        While Ray restarts the host in place, an idempotent call is sent again; any other
        raises _MayHaveRun, for its caller to find out. HostUnavailable once the host is
        down (or still restarting after ``patience`` seconds).
        """
        deadline = time.monotonic() + patience
        backoff = 0.02
        while True:
            try:
                reply = ray.get(submit(), timeout=_REPLY_TIMEOUT)
            except ray.exceptions.GetTimeoutError:
                raise HiveError(f"host {host} did not answer within {_REPLY_TIMEOUT} s") from None
            except ray.exceptions.RayActorError as exc:
                if not isinstance(exc, ray.exceptions.ActorUnavailableError):
                    self._handles.pop(host, None)  # gone for good: ask for it by name again
                if not idempotent:
                    raise _MayHaveRun from None
            else:
                self._answered[host] = max(self._answered.get(host, 0), reply[2])
                return _unwrap(reply)
            if not self._alive(host) or time.monotonic() >= deadline:
                raise HostUnavailable(host, [(h.name, h.alive) for h in self._hosts])
            time.sleep(backoff)  # Ray is restarting the host in place: give it the moment
            backoff = min(backoff * 2, 0.25)

    def _alive_now(self, host: str) -> bool:
        """As last heard (no call): for waits that must not ask the coordinator."""
        return any(h.name == host and h.alive for h in self._hosts)

    def _alive(self, host: str) -> bool:
        if time.monotonic() - self._hosts_at >= _HOSTS_EVERY:
            self.hosts()
        return any(h.name == host and h.alive for h in self._hosts)

    def _each_host(self, method: str, *args: Any) -> dict[str, Any]:
        """Ask every alive host at once; the answers of those that gave one."""
        calls = {}
        for host in self._hosts:
            if host.alive:
                try:
                    calls[host.name] = self._handle(host.name).call.remote(method, args, {})
                except HostUnavailable:
                    continue
        answers = {}
        for name, ref in calls.items():
            try:
                reply = ray.get(ref, timeout=_REPLY_TIMEOUT)
                self._answered[name] = max(self._answered.get(name, 0), reply[2])
                answers[name] = _unwrap(reply)
            except ray.exceptions.RayError:
                continue  # out of reach: the caller falls back on the journal for it
        return answers

    def _coordinator_call(self, method: str, *args: Any) -> Any:
        """A read from the coordinator, sent again while Ray restarts it."""
        deadline = time.monotonic() + _RESTART_PATIENCE
        while True:
            try:
                call = getattr(self._coordinator, method)
                return ray.get(call.remote(*args), timeout=_REPLY_TIMEOUT)
            except ray.exceptions.ActorUnavailableError:
                if time.monotonic() >= deadline:
                    raise HiveError("the cluster's coordinator is restarting still") from None
                time.sleep(0.05)
            except ray.exceptions.RayError as exc:
                raise HiveError(f"the cluster's coordinator did not answer: {exc}") from None

    def _check_open(self) -> None:
        if self._closed:
            raise HiveClosed


class _ClusterJournal:
    """The coordinator's journal as a front end's subscribers see it (``Journal``)."""

    def __init__(self, hive: ClusterHive) -> None:
        self._hive = hive

    def attach(self, connect: Callable[[], T]) -> tuple[T, int]:
        with self._hive._feed_lock:
            return connect(), self._hive._seq

    def events(
        self, since: int = 0, session_id: str | None = None, until: int | None = None
    ) -> Iterator[Event]:
        until = self._hive._seq if until is None else until
        cursor = since
        while cursor < until:
            page = self._hive._coordinator_call("events", cursor, session_id, until, _PAGE)
            for data in page:
                event = parse_event(data)
                cursor = event.seq if event.type != "journal.trimmed" else cursor
                yield event
            if len(page) < _PAGE:
                return


class _MayHaveRun(HiveError):
    """A host restarted after a call reached it: done or not, nobody can say."""

    def __init__(self) -> None:
        super().__init__("the host restarted during the call; it may or may not have been done")


_LIVE = frozenset({Status.STARTING, Status.RUNNING, Status.STOPPING})


_ray_users = 0
"""Front ends of this process that joined Ray themselves: the last to close leaves it."""
_ray_lock = threading.Lock()


def _join_ray(address: str | None) -> None:
    global _ray_users  # noqa: PLW0603 - one connection per process, as Ray has it
    with _ray_lock:
        if _ray_users == 0 and ray.is_initialized():
            return  # the caller's own connection: theirs to close
        if _ray_users == 0:
            try:
                ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                where = "any Ray cluster" if address is None else f"the Ray cluster at {address}"
                raise HiveError(f"cannot join {where}: {exc}") from None
        _ray_users += 1


def _leave_ray() -> None:
    global _ray_users  # noqa: PLW0603
    with _ray_lock:
        if _ray_users == 0:
            return
        _ray_users -= 1
        if _ray_users == 0:
            ray.shutdown()


def _given_up(info: SessionInfo) -> bool:
    return info.status is Status.FAILED and info.reason == HOST_LOST


def _unwrap(reply: Reply) -> Any:
    kind, value, _seq = reply
    if kind == "error":
        raise error_from_wire(value)
    return value


def _host_root(value: object) -> Path:
    if not isinstance(value, str | Path) or not str(value):
        raise InvalidConfig(f"host_root must be a directory path, not {value!r}")
    path = Path(value)
    if not path.is_absolute():
        raise InvalidConfig(
            f"host_root must be an absolute path (each host resolves it on its own "
            f"machine), not {str(value)!r}"
        )
    return path


def _settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Check the hosts' settings here, as every host will; return them as plain JSON."""
    forbidden = sorted(_FORBIDDEN_SETTINGS & settings.keys())
    if forbidden:
        raise InvalidConfig(
            f"{', '.join(forbidden)} cannot be set on a cluster's hosts: each keeps its "
            "sessions under <host_root>/<host name>, and leaves its agents running when "
            "its process ends"
        )
    checked = HiveConfig.load(environ={}, root=Path(tempfile.gettempdir()), **settings)
    given = {key for key, value in settings.items() if value is not None}
    plain: dict[str, Any] = checked.model_dump(mode="json", include=given)
    return plain
