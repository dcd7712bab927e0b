"""Hive: the in-process client API, and the owner of one supervision tree."""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pykka
import structlog
from pykka import ThreadingFuture

from hive_actors import _git, _logs, _validate, _workspace
from hive_actors._clock import Clock, SystemClock
from hive_actors._config import HiveConfig
from hive_actors._context import CONTEXT_CALLS, Context
from hive_actors._core import HiveCore
from hive_actors._events import EventBus, Journal, Subscription, Topics
from hive_actors._faults import crash_point
from hive_actors._git import Changes
from hive_actors._maintenance import Maintenance
from hive_actors._manager import SessionManager
from hive_actors._models import HostInfo, SessionInfo, SessionStatusEvent
from hive_actors._pooling import Pooling
from hive_actors._recovery import recover
from hive_actors._runtime import NotHandled
from hive_actors._states import NOT_FOUND, SETTLED, TERMINAL, TRANSITIONS, Status
from hive_actors._supervision import Call
from hive_actors._supervisor import ContextRequest, StartRequest, TerminateRequest
from hive_actors.errors import (
    HiveClosed,
    HiveError,
    HostUnavailable,
    InvalidInput,
    InvalidTransition,
    SessionNotFound,
    WorkspaceError,
)

log = structlog.get_logger(__name__)

T = TypeVar("T")

_REPLY_TIMEOUT = 60.0
"""The longest an API call waits for an actor's answer; actors answer in milliseconds."""
_STOP_MARGIN = 10.0
"""How long past the grace period close() waits for agents to be reaped."""

_open_hives: weakref.WeakSet[Hive] = weakref.WeakSet()
"""Hives of this process not closed yet (a forked child has none: their threads, which
alone could close them, were not forked with it)."""
os.register_at_fork(after_in_child=_open_hives.clear)


@atexit.register
def _close_at_exit() -> None:
    """A Hive still open when the interpreter exits is closed as its ``with`` block would
    have closed it: its running sessions are stopped (or left, with ``shutdown="leave"``)
    and recorded, rather than left to the next Hive to find as after a crash."""
    for hive in list(_open_hives):
        try:
            hive.close()
        except Exception:
            log.exception("could not close a Hive at exit", root=str(hive.root))


@dataclass(frozen=True, slots=True)
class HiveStats:
    """Counters of one Hive at one moment (``Hive.stats()``)."""

    sessions: int
    by_status: dict[str, int]
    live_agents: int
    runs: int
    restarts: int
    subscribers: int
    actors: int
    actor_threads: int
    last_seq: int
    executes: int
    """Tasks run through ``execute``/``execute_batch``."""
    reuse_rate: float
    """Share of those that ran on an idle pooled session instead of a new one."""
    cgroup_mode: str = "none"
    """How runs are contained and limited: ``v2``, ``hybrid`` (v2 membership, v1
    limits), ``v1`` or ``none`` (see docs/limits.md)."""


class Hive(Pooling, Topics):
    """One supervision tree of agent sessions, with the client API to drive it.

    Use it as a context manager (or call ``close``): closing terminates every running
    session with its grace period, stops every actor and thread, and closes the registry.

        with Hive(root="/tmp/hive", command=["my-agent", "{task}"]) as hive:
            session_id = hive.create_session("Build a Rust CLI tool", "high")
            hive.start_session(session_id)
            print(hive.wait(session_id))

    Settings not given as arguments come from ``HIVE_*`` environment variables (see
    ``HiveConfig``); ``clock`` is for tests (``hive_actors.testing.FakeClock``).
    """

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        clock: Clock | None = None,
        **config: Any,
    ) -> None:
        self.config = HiveConfig.load(root=root, **config)
        self._clock = clock or SystemClock()
        self._core = HiveCore(self.config, self._clock)
        self._closed = False
        self._close_lock = threading.Lock()
        self._cleanup_lock = threading.Lock()
        self._create_lock = threading.Condition()
        self._creating: set[str] = set()
        self._ended_context_lock = threading.Lock()
        self._init_pooling()
        self._subscriptions: dict[int, Subscription] = {}
        try:
            self._manager = SessionManager.start(self._core)
        except BaseException:
            self._core.close()  # and with it the root, for the next Hive
            raise
        self._maintenance = Maintenance(self._core, self.cleanup)
        try:
            recover(self._core, self._start_child)
        except BaseException:
            self._shutdown_tree()
            raise
        self._maintenance.start()
        self._core.watchdog.start()
        _open_hives.add(self)

    # -- lifecycle of the Hive itself -------------------------------------------------------

    def __enter__(self) -> Hive:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def root(self) -> Path:
        return self.config.root

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def created(self) -> str:
        """When this root's registry was created (ISO 8601): the seeds' index ``created``."""
        return self._core.registry.created

    def close(self, grace: float | None = None) -> None:
        """Terminate every session still running (reason ``shutdown``) and stop the tree.

        Idempotent. Sessions that are created, idle or queued stay as they are, for the
        next Hive on this root to pick up. With ``shutdown="leave"`` running agents are
        left running too: the next Hive re-adopts them (or records how they ended).
        """
        with self._close_lock:
            if self._closed:
                return
            leave = self.config.shutdown == "leave"
            running = [
                info.session_id
                for info in self._core.table.all()
                if info.status in (Status.STARTING, Status.RUNNING, Status.STOPPING)
                and not leave
                # A session whose supervisor failed and whose failure could not be recorded
                # has nobody to stop it (its agent was killed); the next Hive reconciles it.
                and self._core.table.supervisor(info.session_id) is not None
            ]
            grace = self.config.grace_period if grace is None else _validate.grace(grace)
            for session_id in running:
                try:
                    self._terminate(session_id, grace, "shutdown")
                except Exception:
                    log.exception("could not stop session at shutdown", session_id=session_id)
            deadline = time.monotonic() + grace + _STOP_MARGIN
            for session_id in running:
                try:
                    self._core.table.wait_for(
                        session_id,
                        lambda info: info.status in TERMINAL,
                        max(0.0, deadline - time.monotonic()),
                    )
                except TimeoutError:
                    log.error("session did not stop at shutdown", session_id=session_id)
            self._maintenance.close()
            self._closed = True
            _open_hives.discard(self)
            for subscription in list(self._subscriptions.values()):
                subscription.close()
            self._subscriptions.clear()
            self._shutdown_tree(leave_running=leave)

    def _shutdown_tree(self, leave_running: bool = False) -> None:
        with contextlib.suppress(pykka.ActorDeadError):
            self._manager.stop(block=True, timeout=_REPLY_TIMEOUT)
        if not self._core.pool.wait_idle(_REPLY_TIMEOUT):
            log.error("actors still alive at shutdown", count=self._core.pool.live_actors)
        self._core.close(leave_running)

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
        """Create a session: its UUID, working dir, ``.swarm/memory.db``, output dir and log.

        ``command`` overrides the configured agent command template for this session;
        ``args`` are appended at every start that gives none; ``env`` adds variables.
        ``restart`` (``never``, ``on-failure``, ``always``) restarts the agent when it
        exits, up to ``restart_limit`` times in a row, waiting ``restart_backoff`` s
        before the first restart and twice as long before each next one.
        ``idle_timeout`` completes a persistent session idle that long; ``max_lifetime``
        terminates a session not ended that long after creation (defaults: the config's).
        ``host`` names a cluster host (``ClusterHive``): a plain Hive has none, and refuses
        any with HostUnavailable.
        ``repo`` makes the working dir a new git worktree of that local repository on the
        new branch ``<branch_prefix><short id>``, at ``ref`` (a branch, tag or commit;
        default the repository's HEAD): see ``changes``. ``setup`` (argv) runs in the
        working dir before the agent's first run (default the config's ``setup``); ``ports``
        gives the session that many TCP ports of its own (``HIVE_PORT``, ``HIVE_PORTS``;
        default ``ports_per_session``). ``env`` values are kept owner-only and never
        shown: ``SessionInfo.env`` holds their names. ``stall_timeout`` (seconds) marks a
        running agent whose log has not grown that long as stalled (``session.stalled``),
        then ``stall_action``: ``none``, ``terminate`` (reason ``stalled``) or ``restart``
        (a new run, counted against ``restart_limit``). ``resume_command`` is the argv
        template of every run after the first (``{task}``, ``{session_id}``, ``{run}``).
        ``limits`` (``{"memory": "2G", "pids": 512, "cpus": 1.5}``, any of them) caps what
        each run may use, through its cgroup; a limit not given is the config's
        (``memory_max``, ``pids_max``, ``cpus_max``).
        Returns the new session id. Raises InvalidInput (nothing is created) for bad input:
        InvalidRepository for a repository or ref that cannot be used; InvalidLimits for
        limits that are malformed or that this machine's cgroups cannot enforce;
        PortsExhausted when ``port_range`` has no ``ports`` free ports together.
        """
        if host is not None:
            raise HostUnavailable(str(host), [])
        spec = self._spec(
            task,
            priority,
            metadata,
            command=command,
            args=args,
            env=env,
            role=role,
            persistent=persistent,
            restart=restart,
            restart_limit=restart_limit,
            restart_backoff=restart_backoff,
            idle_timeout=idle_timeout,
            max_lifetime=max_lifetime,
            repo=repo,
            ref=ref,
            setup=setup,
            ports=ports,
            stall_timeout=stall_timeout,
            stall_action=stall_action,
            resume_command=resume_command,
            limits=limits,
        )
        session_id = _validate.new_session_id()
        self._make_session(session_id, spec)
        return session_id

    def _create_session(
        self, session_id: str, task: str, priority: str, metadata: Any, **options: Any
    ) -> str:
        """``create_session`` with the id chosen by the caller: a cluster's front end picks
        it, so that a create retried after its host restarted makes no second session."""
        session_id = _validate.session_id(session_id)
        spec = self._spec(task, priority, metadata, **options)
        with self._create_lock:
            # An earlier try of this very create, still under way: its outcome is ours.
            self._create_lock.wait_for(lambda: session_id not in self._creating)
            if self._core.table.get(session_id) is not None:
                return session_id  # made by an earlier try
            self._creating.add(session_id)
        try:
            self._make_session(session_id, spec)
        finally:
            with self._create_lock:
                self._creating.discard(session_id)
                self._create_lock.notify_all()
        return session_id

    def _spec(
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
        repo: str | None = None,
        ref: str | None = None,
        setup: Iterable[str] | None = None,
        ports: int | None = None,
        stall_timeout: float | None = None,
        stall_action: str | None = None,
        resume_command: Iterable[str] | None = None,
        limits: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A new session's settings, each checked: InvalidInput for the first bad one."""
        self._check_open()
        spec: dict[str, Any] = {
            "task": _validate.task(task),
            "priority": _validate.priority(priority),
            "metadata": _validate.metadata(metadata),
            "command": self.config.command if command is None else _validate.command(command),
            "args": _validate.args(args),
            "env": _validate.env(env),
            "role": _validate.role(role),
            "restart_policy": _validate.restart_policy(restart),
            "restart_limit": _validate.bounded(restart_limit, "restart_limit", 0, 1000, True),
            "restart_backoff": _validate.bounded(restart_backoff, "restart_backoff", 0, 3600),
            "idle_timeout": _optional_seconds(
                idle_timeout, self.config.idle_timeout, "idle_timeout"
            ),
            "max_lifetime": _optional_seconds(
                max_lifetime, self.config.max_lifetime, "max_lifetime"
            ),
        }
        if not isinstance(persistent, bool):
            raise InvalidInput(f"persistent must be True or False, not {persistent!r}")
        spec["persistent"] = persistent
        spec["repo"] = repo = _validate.repo(repo)
        spec["ref"] = _validate.ref(ref, repo)
        spec["setup"] = self.config.setup if setup is None else _validate.setup(setup)
        spec["ports"] = _validate.ports(ports, self.config.ports_per_session)
        # 0: not watched, whatever the Hive's default (None takes the default).
        spec["stall_timeout"] = (
            None
            if stall_timeout == 0 and not isinstance(stall_timeout, bool)
            else _optional_seconds(stall_timeout, self.config.stall_timeout, "stall_timeout")
        )
        spec["stall_action"] = _validate.stall_action(stall_action, self.config.stall_action)
        spec["resume_command"] = (
            self.config.resume_command
            if resume_command is None
            else _validate.resume_command(resume_command)
        )
        spec["limits"] = _validate.limits(limits).over(self.config.limits)
        self._core.cgroups.check(spec["limits"])
        return spec

    def _make_session(self, session_id: str, spec: dict[str, Any]) -> None:
        spec = dict(spec)
        env: dict[str, str] = spec.pop("env")
        repo, ref = spec.pop("repo"), spec.pop("ref")
        origin = None if repo is None else _git.resolve(repo, ref)
        branch = f"{self.config.branch_prefix}{session_id[:8]}" if origin else None
        paths = _workspace.SessionPaths.of(self.config, session_id)
        if paths.working_dir.exists():  # an earlier try of this very create, cut short
            untouched = origin is not None and _git.untouched(origin, branch or "")
            _workspace.remove(paths, repo, branch, delete_branch=untouched)
        ports = self._core.ports.take(spec.pop("ports"))
        try:
            now = self._clock.now()
            info = SessionInfo(
                session_id=session_id,
                status=Status.CREATED,
                created=now,
                updated=now,
                working_dir=str(paths.working_dir),
                output_dir=str(paths.output_dir),
                database=str(paths.database),
                log_file=str(paths.log_file),
                env=tuple(env),
                repo=origin and origin.repo,
                base=origin and origin.base,
                branch=branch,
                setup_done=not spec["setup"],
                ports=ports,
                **spec,
            )
            _workspace.create(paths, origin, branch or "")
            crash_point("create:workspace")
            try:
                self._core.secrets.put(session_id, env)  # before the session is announced
                self._core.register(info)
            except BaseException:
                self._core.secrets.drop(session_id)
                _workspace.remove(paths, info.repo, branch, delete_branch=True)
                raise
        finally:
            self._core.ports.settle(ports)  # the table holds them now, or nobody does
        try:
            self._start_child(info, adopt=False)
        except BaseException:
            with contextlib.suppress(HiveError):  # closing meanwhile: recovery sees to it
                self._core.forget(info, delete_branch=True)
            raise

    def start_session(
        self, session_id: str, args: Iterable[str] | None = None, *, task: str | None = None
    ) -> str:
        """Start the session's agent; return its status once the spawn was tried.

        That is ``running``, ``failed`` (reason ``spawn_error``) if the program could not
        be started, or ``queued`` when ``max_running`` agents already run: it starts when a
        slot frees, highest priority first, oldest first within a priority. ``args``
        replace the session's default extra arguments for this run; ``task`` gives this
        run a task of its own (a persistent session reused for new work). Raises
        InvalidTransition unless the session is ``created`` or ``idle``.
        """
        info = self._info(session_id)
        run_args = info.args if args is None else _validate.args(args)
        run_task = None if task is None else _validate.task(task)
        reply: ThreadingFuture[str] = ThreadingFuture()
        supervisor = self._supervisor(info, Status.STARTING)
        request = StartRequest(run_args, reply, run_task)
        try:
            return str(self._tell_and_wait(supervisor, request, reply))
        except pykka.ActorDeadError:
            raise self._gone(info.session_id, Status.STARTING) from None

    def terminate_session(self, session_id: str, grace: float | None = None) -> str:
        """Stop a session: SIGTERM to its agent's processes, SIGKILL after ``grace`` s.

        Returns once the stop signal has been sent, with the status: ``stopping`` while
        the agent is given its grace, ``terminated`` if nothing was running. A session
        already ended is left as it is and its status returned. ``wait`` blocks until it
        is over.
        """
        session_id = _validate.session_id(session_id)
        return self._terminate(
            session_id, None if grace is None else _validate.grace(grace), "requested"
        )

    def _terminate(self, session_id: str, grace: float | None, reason: str) -> str:
        info = self._info(session_id)
        if info.status in TERMINAL:
            return str(info.status)
        reply: ThreadingFuture[str] = ThreadingFuture()
        supervisor = self._supervisor(info, Status.TERMINATED)
        try:
            return str(
                self._tell_and_wait(supervisor, TerminateRequest(grace, reason, reply), reply)
            )
        except pykka.ActorDeadError:  # it ended meanwhile
            return self.status(session_id)

    def _give_up(self, session_id: str, reason: str, detail: str) -> None:
        """Record a session ``failed`` for ``reason`` and stop its agent: the verdict a
        cluster reached while this Hive's host was out of reach, which is final. A session
        that ended otherwise meanwhile is recorded as the cluster has it."""
        info = self._info(session_id)
        if info.status is Status.FAILED and info.reason == reason:
            return
        if info.status not in TERMINAL:
            reply: ThreadingFuture[str] = ThreadingFuture()
            request = TerminateRequest(None, reason, reply, Status.FAILED)
            try:
                self._tell_and_wait(self._supervisor(info, Status.FAILED), request, reply)
                return
            except (pykka.ActorDeadError, InvalidTransition):  # it ended meanwhile
                info = self._info(session_id)
        event = SessionStatusEvent(
            session_id=session_id,
            at=self._clock.now(),
            from_=info.status,
            to=Status.FAILED,
            reason=reason,
            detail=detail,
            recovered=True,
        )
        self._core.note(info, [event], status=Status.FAILED, reason=reason, detail=detail)

    def status(self, session_id: str) -> str:
        """The session's status word, or ``"not_found"`` for an id no session has."""
        session_id = _validate.session_id(session_id)
        info = self._core.table.get(session_id)
        return NOT_FOUND if info is None else str(info.status)

    def get_session_info(self, session_id: str) -> SessionInfo:
        """Everything known about a session. Raises SessionNotFound."""
        return self._with_usage(self._info(session_id))

    def list_sessions(self, status: str | None = None) -> list[SessionInfo]:
        """All sessions (or those with ``status``), oldest first."""
        status = _validate.status_filter(status)
        infos = [self._with_position(info) for info in self._core.table.all()]
        if status is not None:
            infos = [info for info in infos if info.status == status]
        infos = [self._with_usage(info) for info in infos]
        return sorted(infos, key=lambda info: (info.created, info.session_id))

    def output_dir(self, session_id: str) -> str:
        return self._info(session_id).output_dir

    def log_file(self, session_id: str) -> str:
        return self._info(session_id).log_file

    def log_tail(self, session_id: str, lines: int = 50) -> tuple[int, str]:
        """The session's log: its size in bytes and its last ``lines`` lines."""
        lines = int(_validate.bounded(lines, "lines", 0, 10_000, True))
        return _logs.tail(Path(self._info(session_id).log_file), lines)

    def read_log(self, session_id: str, offset: int = 0, limit: int = _logs.CHUNK) -> bytes:
        """At most ``limit`` bytes of the session's log from byte ``offset`` (b"" at its end)."""
        offset = int(_validate.bounded(offset, "offset", 0, 2**62, True))
        limit = int(_validate.bounded(limit, "limit", 1, 16 * 1024 * 1024, True))
        return _logs.read_from(Path(self._info(session_id).log_file), offset, limit)

    def changes(self, session_id: str) -> Changes:
        """What a session made from a repository did: its branch, base, commits, the files
        that differ from base (committed or not) and the diff (cut at ``max_diff_bytes``).

        Works while it runs and after it ended. InvalidInput for a session that has no
        repository; WorkspaceError when its worktree or repository is gone.
        """
        return _changes(self._info(session_id), self.config.max_diff_bytes)

    def hosts(self) -> list[HostInfo]:
        """A cluster's hosts (``ClusterHive``); a plain Hive is no cluster: none."""
        self._check_open()
        return []

    def wait(self, session_id: str, timeout: float | None = None) -> str:
        """Block until the session is settled (completed, failed, terminated or idle).

        Woken by the session's transitions, not by polling. Returns the status; raises
        TimeoutError after ``timeout`` seconds and SessionNotFound for an unknown id.
        """
        session_id = _validate.session_id(session_id)
        timeout = _validate.wait_timeout(timeout)
        try:
            info = self._core.table.wait_for(
                session_id, lambda current: current.status in SETTLED, timeout
            )
        except TimeoutError:
            status = self.status(session_id)
            raise TimeoutError(f"session {session_id} still {status} after {timeout} s") from None
        if info is None:
            raise SessionNotFound(session_id)
        return str(info.status)

    def cleanup(self, max_age_hours: float = 24) -> list[str]:
        """Remove ended sessions last changed at least ``max_age_hours`` ago.

        Their working dirs, output dirs and logs are deleted and ``session.removed`` is
        announced; the next housekeeping pass trims their other events from the journal.
        Returns the removed ids.
        """
        self._check_open()
        max_age_hours = _validate.max_age_hours(max_age_hours)
        cutoff = self._clock.now() - timedelta(hours=max_age_hours)
        removed = []
        with self._cleanup_lock:
            for info in self._core.table.all():
                if info.status in TERMINAL and info.updated <= cutoff:
                    self._core.forget(info)
                    removed.append(info.session_id)
        return removed

    def remove_session(self, session_id: str, *, delete_branch: bool = False) -> None:
        """Remove one ended session now: its dirs and log go, ``session.removed`` is
        announced, the next housekeeping pass trims its other events from the journal.
        A session from a repository has its worktree removed and its branch kept, unless
        ``delete_branch``. InvalidTransition while it is live (terminate it first),
        SessionNotFound for an unknown id."""
        if not isinstance(delete_branch, bool):
            raise InvalidInput(f"delete_branch must be True or False, not {delete_branch!r}")
        with self._cleanup_lock:
            info = self._info(session_id)  # checks the hive is open and the id is valid
            if info.status not in TERMINAL:
                raise InvalidTransition(
                    info.session_id, info.status, "removed", TRANSITIONS[info.status]
                )
            self._core.forget(info, delete_branch)

    def metrics(self) -> bytes:
        """Every metric in the Prometheus text format (what the daemon serves at /metrics).

        Taken between two commits: the gauges (read from the session table) and the
        counters (fed by published events) describe the same moment.
        """
        text, _seq = self._core.registry.attach(self._core.metrics.exposition)
        return text

    def stats(self) -> HiveStats:
        infos = self._core.table.all()
        executes, reuse_rate = self.pool_counts
        return HiveStats(
            sessions=len(infos),
            by_status=dict(Counter(str(info.status) for info in infos)),
            live_agents=self._core.reaper.live_count(),
            runs=sum(info.runs for info in infos),
            restarts=sum(info.restarts for info in infos),
            subscribers=self._core.bus.subscriber_count,
            actors=self._core.pool.live_actors,
            actor_threads=self._core.pool.thread_count,
            last_seq=self._core.registry.last_seq,
            executes=executes,
            reuse_rate=reuse_rate,
            cgroup_mode=self._core.cgroups.mode,
        )

    # -- context ----------------------------------------------------------------------------

    def send_message(self, session_id: str, role: str, content: str) -> int:
        """Add a message to the session's conversation history; return its event's seq."""
        result: int = self._context_call(session_id, "add_message", role, content)
        return result

    def context(self, session_id: str) -> SessionContext:
        """The session's ContextManager calls, bound to its id."""
        return SessionContext(self, self._info(session_id).session_id)

    def _context_call(self, session_id: str, method: str, *args: Any) -> Any:
        info = self._info(session_id)
        assert method in CONTEXT_CALLS
        for _attempt in range(2):
            supervisor = self._core.table.supervisor(info.session_id)
            if supervisor is None or info.status in TERMINAL:
                return self._ended_context_call(info, method, *args)
            call = Call(method, args)
            try:
                return self._tell_and_wait(supervisor, ContextRequest(call), call.reply)
            except NotHandled:  # its ContextManager was being restarted: send it again
                info = self._info(session_id)
            except pykka.ActorDeadError:  # the session ended meanwhile
                info = self._info(session_id)
                if info.status not in TERMINAL:
                    raise HiveError(f"session {session_id}: its supervisor stopped") from None
        raise HiveError(f"session {session_id}: its context manager keeps failing")

    def _ended_context_call(self, info: SessionInfo, method: str, *args: Any) -> Any:
        # No actor owns an ended session's context: load it, and serialise the writers here.
        core = self._core
        with self._ended_context_lock:
            context = Context(
                info.session_id,
                info.task,
                Path(info.database),
                self.config,
                core.registry,
                self._clock,
            ).load()
            return getattr(context, method)(*args)

    # -- events -----------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The seq of the newest journaled event (0 if none)."""
        return self._core.registry.last_seq

    # -- plumbing ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise HiveClosed

    def _topics(self) -> tuple[EventBus, Journal]:
        return self._core.bus, self._core.registry

    def _info(self, session_id: str) -> SessionInfo:
        self._check_open()
        session_id = _validate.session_id(session_id)
        info = self._core.table.get(session_id)
        if info is None:
            raise SessionNotFound(session_id)
        return self._with_position(info)

    def _with_position(self, info: SessionInfo) -> SessionInfo:
        if info.status is not Status.QUEUED:
            return info
        return info.model_copy(
            update={"queue_position": self._core.slots.position(info.session_id)}
        )

    def _with_usage(self, info: SessionInfo) -> SessionInfo:
        """A running session's usage read afresh from its run's cgroup."""
        if info.terminal or not self._core.cgroups.enabled:
            return info
        process = self._core.reaper.find(info.session_id)
        if process is None or process.cgroup is None:
            return info
        return info.model_copy(update={"usage": process.cgroup.usage()})

    def _supervisor(self, info: SessionInfo, target: Status) -> pykka.ActorRef[Any]:
        # A session is announced (session.created) just before its supervisor starts: a
        # subscriber reacting at once may get here first, and waits the moment out.
        supervisor = self._core.table.await_supervisor(
            info.session_id, lambda now: now.status not in TERMINAL, _REPLY_TIMEOUT
        )
        if supervisor is None:  # the session ended; its subtree is gone
            raise self._gone(info.session_id, target)
        return supervisor

    def _gone(self, session_id: str, target: Status) -> HiveError:
        info = self._core.table.get(session_id)
        if info is None:
            return SessionNotFound(session_id)
        return InvalidTransition(session_id, info.status, target, TRANSITIONS[info.status])

    def _start_child(self, info: SessionInfo, adopt: bool) -> None:
        self._ask(self._manager, Call("start_child", (info,), {"adopt": adopt}))

    def _ask(self, actor: pykka.ActorRef[Any], call: Call) -> Any:
        return self._tell_and_wait(actor, call, call.reply)

    def _tell_and_wait(self, actor: pykka.ActorRef[Any], message: Any, reply: Any) -> Any:
        """Send ``message`` and wait for its reply future; ActorDeadError if the actor died."""
        actor.tell(message)
        try:
            return reply.get(timeout=_REPLY_TIMEOUT)
        except pykka.Timeout:
            raise HiveError(f"{actor} did not answer within {_REPLY_TIMEOUT} s") from None


class _ContextCalls(Protocol):
    """What a SessionContext calls through: a Hive, or a ClusterHive."""

    def _context_call(self, session_id: str, method: str, *args: Any) -> Any: ...


class SessionContext:
    """A session's ContextManager, seen from outside: ``hive.context(session_id)``."""

    def __init__(self, hive: _ContextCalls, session_id: str) -> None:
        self._hive = hive
        self.session_id = session_id

    def _call(self, method: str, *args: Any) -> Any:
        return self._hive._context_call(self.session_id, method, *args)

    def add_message(self, role: str, content: str) -> int:
        """Append to the conversation (the oldest go beyond ``max_history``); return its seq."""
        result: int = self._call("add_message", role, content)
        return result

    def history(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The last ``limit`` messages (all if None), oldest first."""
        result: list[dict[str, Any]] = self._call("history", limit)
        return result

    def clear_history(self) -> int:
        """Forget the conversation; return how many messages were dropped."""
        result: int = self._call("clear_history")
        return result

    def add_file(self, path: str) -> list[str]:
        """Mark a file (relative to the working dir) active; return the active files."""
        result: list[str] = self._call("add_file", path)
        return result

    def remove_file(self, path: str) -> bool:
        result: bool = self._call("remove_file", path)
        return result

    def active_files(self) -> list[str]:
        result: list[str] = self._call("active_files")
        return result

    def update_file_index(self, path: str, info: dict[str, Any]) -> None:
        self._call("update_file_index", path, info)

    def file_index(self) -> dict[str, dict[str, Any]]:
        result: dict[str, dict[str, Any]] = self._call("file_index")
        return result

    def build_context(self, budget: int | None = None) -> dict[str, Any]:
        """History, active files and index in one dict whose JSON fits ``budget`` chars."""
        result: dict[str, Any] = self._call("build_context", budget)
        return result


def _changes(info: SessionInfo, max_bytes: int) -> Changes:
    if info.repo is None or info.base is None or info.branch is None:
        raise InvalidInput(
            f"session {info.session_id} was not made from a repository (repo=): "
            "it has no branch and no changes to show"
        )
    try:
        return _git.changes(
            info.session_id, Path(info.working_dir), info.base, info.branch, max_bytes
        )
    except _git.GitFailed as exc:
        cause = OSError(exc.stderr)
    except OSError as exc:
        cause = exc
    raise WorkspaceError(info.working_dir, cause, action="read the changes in") from None


def _optional_seconds(value: object, default: float | None, name: str) -> float | None:
    if value is None:
        return default
    return float(_validate.bounded(value, name, 0.001, 10 * 365 * 86400))
