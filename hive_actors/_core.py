"""The services every actor of one Hive shares, and the one way a session's state changes.

``commit`` is the write path of the whole lifecycle: check the transition against the
table in ``_states``, write session.json, commit the registry row and its events, update
the in-memory table, and only then publish. Any actor that changes a session calls it from
its own turn, so a session's events come out in the order its supervisor decided them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import structlog

from hive_actors import _workspace
from hive_actors._cgroups import Cgroups, detect
from hive_actors._clock import Clock
from hive_actors._config import HiveConfig
from hive_actors._events import EventBus
from hive_actors._lockfile import HiveLock
from hive_actors._metrics import Metrics
from hive_actors._models import (
    EventBase,
    SessionCreatedEvent,
    SessionInfo,
    SessionRemovedEvent,
    SessionStatusEvent,
    SessionTerminatedEvent,
)
from hive_actors._paths import LOG_NAME, TOKEN_NAME
from hive_actors._permissions import private_dir, refused, tighten
from hive_actors._ports import PortPool
from hive_actors._process import Sweeper
from hive_actors._reaper import Reaper
from hive_actors._registry import Registry
from hive_actors._runtime import ActorPool
from hive_actors._secrets import Secrets
from hive_actors._slots import Slots
from hive_actors._states import Status, check_transition
from hive_actors._table import SessionTable
from hive_actors._timers import Timers
from hive_actors._watchdog import Watchdog
from hive_actors.errors import InvalidConfig, InvalidLimits, RootInUse, WorkspaceError

log = structlog.get_logger(__name__)

ACTOR_THREADS = 8


class HiveCore:
    def __init__(self, config: HiveConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.lock = _hold_root(config.root)
        try:
            for directory in (config.sessions_dir, config.logs_dir):
                try:
                    private_dir(directory)
                except OSError as exc:
                    raise WorkspaceError(directory, exc) from exc
            # First: a default limit it cannot enforce refuses the Hive before it starts
            # a thread or opens the registry.
            self.cgroups = _open_cgroups(config)
            self.bus = EventBus()
            self.registry = Registry(
                config.registry_path, self.bus.publish, created=clock.now().isoformat()
            )
            _tighten(config)  # once the root proved usable: a refused one is left as it was
            self.table = SessionTable()
            self.pool = ActorPool(ACTOR_THREADS)
            self.timers = Timers(clock)
            # A run with a cgroup has every process of it found by membership; the sweep
            # of /proc is for runs without (no cgroups, or one an older version started).
            self.reaper = Reaper(Sweeper(self.timers))
            self.metrics = Metrics(
                self.table.all, lambda: self.bus.subscriber_count, self.reaper.live_count
            )
            self.bus.observe(self.metrics.observe)
            self.slots = Slots(config.max_running)
            self.watchdog = Watchdog(self.table.supervisor, self.timers, clock)
            self.secrets = Secrets(config.root / "secrets")
            self.ports = PortPool(*config.ports, held=self._held_ports)
        except BaseException:
            if hasattr(self, "cgroups"):
                self.cgroups.close()
            self.lock.release()  # a Hive that did not open leaves the root to the next
            raise
        _say_if_no_cgroups(config, self.cgroups)

    def _held_ports(self) -> list[int]:
        return [port for info in self.table.all() if not info.terminal for port in info.ports]

    def close(self, leave_running: bool = False) -> None:
        self.pool.shutdown()
        self.reaper.close(leave_running)
        self.timers.close()
        self.cgroups.close()
        self.registry.close()
        self.lock.release()  # the last: the next Hive may adopt what was left running

    def register(self, info: SessionInfo) -> None:
        """Record a newly created session and announce it."""
        _workspace.write_info(info.working_dir, info)
        events: list[EventBase] = [
            SessionCreatedEvent(
                session_id=info.session_id,
                at=info.created,
                task=info.task,
                priority=info.priority,
                metadata=info.metadata,
            ),
            SessionStatusEvent(session_id=info.session_id, at=info.created, to=info.status),
        ]
        self.registry.insert(info, events, lambda: self.table.put(info))

    def commit(
        self,
        info: SessionInfo,
        status: Status,
        *,
        reason: str | None = None,
        detail: str | None = None,
        extra: list[EventBase] | None = None,
        recovered: bool = False,
        **changes: Any,
    ) -> SessionInfo:
        """Move a session to ``status`` durably, then announce it; return the new info.

        Raises InvalidTransition (nothing written) if the state table forbids the move.
        """
        check_transition(info.session_id, info.status, status)
        now = self.clock.now()
        new = info.model_copy(
            update={"status": status, "updated": now, "reason": reason, "detail": detail} | changes
        )
        events: list[EventBase] = [
            SessionStatusEvent(
                session_id=info.session_id,
                at=now,
                from_=info.status,
                to=status,
                reason=reason,
                detail=detail,
                exit_code=new.exit_code,
                pid=new.pid,
                recovered=recovered,
                # Announced once, by the end that measured it (a recovered one did not).
                usage=new.usage if _run_ends(info.status, status) and not recovered else None,
            )
        ]
        if status is Status.TERMINATED:
            events.append(
                SessionTerminatedEvent(
                    session_id=info.session_id,
                    at=now,
                    reason=reason,
                    detail=detail,
                    exit_code=new.exit_code,
                    recovered=recovered,
                )
            )
        return self._write(new, events + (extra or []))

    def note(self, info: SessionInfo, events: list[EventBase], **changes: Any) -> SessionInfo:
        """Record a change that is not a transition (a restart count, say) with its events."""
        return self._write(info.model_copy(update={"updated": self.clock.now()} | changes), events)

    def forget(self, info: SessionInfo, delete_branch: bool = False) -> None:
        """Delete an ended session from disk and registry, then announce its removal.

        A session's worktree is removed from its repository; its branch is kept (the
        work is never lost by cleanup) unless ``delete_branch``."""
        _workspace.remove(
            _workspace.SessionPaths.of_info(info),
            info.repo,
            info.branch,
            delete_branch=delete_branch,
        )
        self.secrets.drop(info.session_id)
        event = SessionRemovedEvent(session_id=info.session_id, at=self.clock.now())
        self.registry.delete(info.session_id, [event], lambda: self.table.remove(info.session_id))

    def agent_env(self, info: SessionInfo) -> dict[str, str]:
        """The agent's environment: ours, the session's extra variables, then HIVE_*."""
        env = {
            **os.environ,
            **(self.secrets.get(info.session_id) if info.env else {}),
            "HIVE_SESSION_ID": info.session_id,
            "HIVE_SESSION_DIR": info.working_dir,
            "HIVE_OUTPUT_DIR": info.output_dir,
            "HIVE_TASK": info.current_task,
            "HIVE_DB": info.database,
        }
        if info.ports:
            env["HIVE_PORT"] = str(info.ports[0])
            env["HIVE_PORTS"] = ",".join(map(str, info.ports))
        return env

    def _write(self, new: SessionInfo, events: list[EventBase]) -> SessionInfo:
        _workspace.write_info(new.working_dir, new)
        self.registry.update(new, events, lambda: self.table.put(new))
        return new


_RUNNING = frozenset({Status.RUNNING, Status.STOPPING})


def _run_ends(before: Status, after: Status) -> bool:
    """A change of status that is the end of a run (and comes with its usage)."""
    return before in _RUNNING and after not in _RUNNING


_warned_no_cgroups = False


def _open_cgroups(config: HiveConfig) -> Cgroups:
    """The cgroups this Hive uses; InvalidConfig if a default limit cannot be enforced."""
    if config.cgroups == "off":
        cgroups = Cgroups.unavailable("cgroups is off")
    else:
        cgroups = detect(config.root)
    try:
        cgroups.check(config.limits)
    except InvalidLimits as exc:
        cgroups.close()
        raise InvalidConfig(f"default limits: {exc}") from None
    return cgroups


def _say_if_no_cgroups(config: HiveConfig, cgroups: Cgroups) -> None:
    """A Hive that opened without the cgroups it would use says so, once per process (a
    test suite opens many); one told not to use them is not warned about."""
    global _warned_no_cgroups  # noqa: PLW0603 - one warning per process
    if config.cgroups == "off" or cgroups.enabled or _warned_no_cgroups:
        return
    _warned_no_cgroups = True
    log.warning(
        "no usable cgroups: a session's processes are found by process group and "
        "session marker, and limits are refused",
        why=cgroups.missing.get("memory"),
    )


def _tighten(config: HiveConfig) -> None:
    """Take the group's and others' permissions off what an older hive_actors left open:
    the root's dirs and the files right in the root (a session's own files are behind
    those dirs). SQLite gives the -wal and -shm it makes registry.db's permissions."""
    registry = str(config.registry_path)
    for path in (
        config.root,
        config.sessions_dir,
        config.logs_dir,
        config.root / "secrets",
        *(Path(registry + end) for end in ("", "-wal", "-shm")),
        config.root / LOG_NAME,
        config.root / TOKEN_NAME,
    ):
        why = tighten(path)
        if why is not None:
            log.warning("not owner-only", path=str(path), why=why)


def _hold_root(root: Path) -> HiveLock:
    """Take the root's Hive lock, before anything of the root is read or written."""
    try:
        private_dir(root)
        lock = HiveLock(root)
        acquired = lock.acquire()
    except OSError as exc:  # a root it may not write: say why, never as corruption
        raise refused(Path(exc.filename or root), exc) from exc
    if not acquired:
        raise RootInUse(root, lock.holder())
    return lock
