"""ProcessRunner: the actor that starts and stops a session's agent process.

It holds no process state of its own: live agents are in the shared Reaper's table, so a
restarted runner re-attaches to the agent its predecessor started instead of killing it.
Exits are seen by the Reaper and told straight to the session's supervisor.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pykka
import structlog
from pykka import ThreadingFuture

from hive_actors._cgroups import Cgroups, RunCgroup, run_name
from hive_actors._faults import crash_point
from hive_actors._models import Limits, Usage
from hive_actors._process import AgentProcess, LogUnavailable
from hive_actors._reaper import ExitCallback, Reaper
from hive_actors._runtime import ActorPool
from hive_actors._supervision import Child
from hive_actors._timers import Timers
from hive_actors.errors import InvalidLimits

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Spawn:
    run: int
    argv: tuple[str, ...]
    env: dict[str, str]
    setup: bool = False
    """The session's setup step, not its agent: its own status file, a header in the log."""
    limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True, slots=True)
class Adopt:
    """Watch the agent an earlier hive started (after a restart of the daemon)."""

    run: int
    pid: int
    start_time: int | None
    setup: bool = False


@dataclass(frozen=True, slots=True)
class Stop:
    grace: float
    reply: ThreadingFuture[str] | None = None
    """Settled with "stopping" once the stop signal has been sent."""


@dataclass(frozen=True, slots=True)
class Spawned:
    run: int
    pid: int
    start_time: int | None


@dataclass(frozen=True, slots=True)
class SpawnFailed:
    run: int
    detail: str


@dataclass(frozen=True, slots=True)
class Exited:
    run: int
    exit_code: int | None
    """Shell convention (128+N: killed by signal N); None when nobody knows it."""
    detail: str | None = None
    """Why nobody knows it, when a hive watched the run (its shim was killed)."""
    usage: Usage | None = None
    """What the run used (None without cgroups)."""
    memory_kills: int = 0
    """Its processes the kernel killed for the memory limit."""
    forks_refused: int = 0
    """Its forks the process limit refused."""


def exited(process: AgentProcess, code: int | None) -> Exited:
    """How ``process`` ended, for its supervisor."""
    return Exited(
        process.run,
        code,
        process.lost_detail,
        process.usage,
        process.memory_kills,
        process.forks_refused,
    )


def status_file(working_dir: Path, run: int, setup: bool = False) -> Path:
    """Where the shim of run ``run`` writes the agent's exit status (or the setup
    step's: it runs once per session, before the first run)."""
    return working_dir / ".hive" / ("setup.exit" if setup else f"run-{run}.exit")


def _spawn_failed(message: Spawn, exc: OSError) -> SpawnFailed:
    if isinstance(exc, LogUnavailable):
        return SpawnFailed(message.run, str(exc.strerror))
    what = f"the setup step {message.argv[0]!r}" if message.setup else repr(message.argv[0])
    return SpawnFailed(message.run, f"cannot start {what}: {exc.strerror or exc}")


class ProcessRunner(Child):
    child_name = "runner"

    def __init__(
        self,
        pool: ActorPool,
        parent: pykka.ActorRef[Any],
        session_id: str,
        working_dir: Path,
        log_file: Path,
        reaper: Reaper,
        timers: Timers,
        cgroups: Cgroups,
    ) -> None:
        super().__init__(pool, parent)
        self._cgroups = cgroups
        self._session_id = session_id
        self._working_dir = working_dir
        self._log_file = log_file
        self._reaper = reaper
        self._timers = timers

    def on_start(self) -> None:
        process = self._reaper.find(self._session_id)
        if process is not None:
            log.info("runner re-attached", session_id=self._session_id, pid=process.pid)

    def handle(self, message: Any) -> Any:
        if isinstance(message, Spawn):
            self._spawn(message)
        elif isinstance(message, Adopt):
            self._adopt(message)
        elif isinstance(message, Stop):
            process = self._reaper.find(self._session_id)
            if process is not None:
                process.stop(message.grace, self._timers)
            if message.reply is not None:
                message.reply.set("stopping")
        else:
            super().handle(message)

    def _spawn(self, message: Spawn) -> None:
        cgroup: RunCgroup | None = None
        try:  # the session was made by a Hive that had what this one may not
            self._cgroups.check(message.limits)
        except InvalidLimits as exc:
            self.tell_parent(SpawnFailed(message.run, f"cannot enforce its limits: {exc}"))
            return
        if self._cgroups.enabled:
            name = run_name(self._session_id, message.run, message.setup)
            try:
                cgroup = self._cgroups.create(name, message.limits)
            except OSError as exc:
                detail = f"cannot make the run's cgroup {name}: {exc.strerror or exc}"
                self.tell_parent(SpawnFailed(message.run, detail))
                return
        try:
            process = AgentProcess.spawn(
                self._session_id,
                message.run,
                message.argv,
                self._working_dir,
                message.env,
                self._log_file,
                status_file(self._working_dir, message.run, message.setup),
                header=f"== setup: {shlex.join(message.argv)}\n" if message.setup else None,
                cgroup=cgroup,
            )
        except OSError as exc:
            if cgroup is not None:
                cgroup.remove()
            self.tell_parent(_spawn_failed(message, exc))
            return
        crash_point("start:spawned")
        # Told before the reaper watches, so the supervisor always hears Spawned first.
        self.tell_parent(Spawned(message.run, process.pid, process.start_time))
        self._reaper.watch(process, self._exit_reporter())

    def _exit_reporter(self) -> ExitCallback:
        """The reaper's callback: straight to the supervisor (this runner may be gone)."""
        parent = self._parent

        def report(process: AgentProcess, code: int | None) -> None:
            parent.tell(exited(process, code))

        return report

    def _adopt(self, message: Adopt) -> None:
        status = status_file(self._working_dir, message.run, message.setup)
        cgroup = None
        if self._cgroups.enabled:
            cgroup = self._cgroups.existing(run_name(self._session_id, message.run, message.setup))
            if not cgroup.membership.is_dir():  # started without one (cgroups were off)
                cgroup = None
        process = AgentProcess.adopt(
            self._session_id, message.run, message.pid, message.start_time, status, cgroup
        )
        if process is None:  # it ended (or its pid now belongs to another process)
            # Reaped as if it had been watched: a shim killed from outside meanwhile
            # leaves an agent that nobody would watch otherwise.
            process = AgentProcess(
                self._session_id,
                message.run,
                message.pid,
                message.start_time,
                status,
                cgroup=cgroup,
            )
            code = process.reap()
            self._reaper.settle(process)
            self.tell_parent(exited(process, code))
            return
        log.info("re-adopted agent", session_id=self._session_id, pid=process.pid)
        self._reaper.watch(process, self._exit_reporter())
