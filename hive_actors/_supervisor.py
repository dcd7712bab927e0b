"""SessionSupervisor: one per session; owns its ContextManager and ProcessRunner.

It is the only actor that changes its session's status, so the session's transitions (and
their events) happen in the order it decides them. It restarts a failed child (one_for_one)
within the session's restart intensity; past it, the session fails with reason
``restart_intensity`` and no other session notices.

Message flow (every arrow is a ``tell``; nothing here ever waits on a reply):

    Hive ──StartRequest/TerminateRequest/ContextRequest──▶ SessionSupervisor
    SessionSupervisor ──Spawn/Stop──▶ ProcessRunner ──Spawned/SpawnFailed──▶ SessionSupervisor
    Reaper thread ──Exited──▶ SessionSupervisor
    SessionSupervisor ──Call (forwarded)──▶ ContextManager ──▶ caller's reply future
    any child ──ChildFailed──▶ SessionSupervisor ──SessionEnded/ChildFailed──▶ SessionManager
"""

from __future__ import annotations

import contextlib
import queue
import signal
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import pykka
import structlog
from pykka import ThreadingFuture

from hive_actors._cgroups import describe_hits
from hive_actors._context import Context, ContextManager
from hive_actors._core import HiveCore
from hive_actors._faults import crash_point
from hive_actors._models import (
    Limits,
    SessionActiveEvent,
    SessionInfo,
    SessionRestartEvent,
    SessionStalledEvent,
)
from hive_actors._process import build_argv, describe_exit, killed_by_signal
from hive_actors._runner import (
    Adopt,
    Exited,
    ProcessRunner,
    Spawn,
    Spawned,
    SpawnFailed,
    Stop,
)
from hive_actors._runtime import ActorPool
from hive_actors._slots import Granted, Release
from hive_actors._states import TERMINAL, TRANSITIONS, Status, stop_outcome
from hive_actors._supervision import Call, Child, ChildFailed, InjectCrash, RestartIntensity
from hive_actors._timers import TimerHandle
from hive_actors._validate import MAX_BACKOFF
from hive_actors._watchdog import Active, Stalled
from hive_actors.errors import HiveError, InvalidTransition, RestartIntensityExceeded

log = structlog.get_logger(__name__)

STARTABLE = frozenset({Status.CREATED, Status.IDLE})
WAITING = frozenset({Status.CREATED, Status.IDLE, Status.QUEUED})
"""States in which a granted slot is used to spawn."""


@dataclass(frozen=True, slots=True)
class StartRequest:
    args: tuple[str, ...]
    reply: ThreadingFuture[str]
    task: str | None = None
    """This run's task, if not the session's own (a pooled persistent session)."""


@dataclass(frozen=True, slots=True)
class _PendingStart:
    """A start waiting for a slot."""

    args: tuple[str, ...]
    task: str | None


@dataclass(frozen=True, slots=True)
class _IdleExpired:
    token: int


@dataclass(frozen=True, slots=True)
class _LifetimeExpired:
    pass


@dataclass(frozen=True, slots=True)
class _SetupTimedOut:
    run: int


@dataclass(frozen=True, slots=True)
class TerminateRequest:
    grace: float | None
    reason: str
    reply: ThreadingFuture[str]
    outcome: Status = Status.TERMINATED
    """How the session ends: ``failed`` when a cluster gave it up (reason ``host_lost``)."""


@dataclass(frozen=True, slots=True)
class ContextRequest:
    call: Call

    @property
    def reply(self) -> ThreadingFuture[Any]:
        return self.call.reply


@dataclass(frozen=True, slots=True)
class CrashChild:
    """Fault injection (hive_actors.testing.inject_crash): a child dies of ``error``.

    ``reply`` is settled once the supervisor has dealt with that death.
    """

    child: str
    error: BaseException
    reply: ThreadingFuture[None]


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """Told to the manager when a session reached a terminal state and its subtree stopped."""

    session_id: str


@dataclass(frozen=True, slots=True)
class _RespawnDue:
    """From the timer thread: the backoff before restarting run ``run`` is over."""

    run: int


@dataclass(slots=True)
class _Stopping:
    outcome: Status
    reason: str
    detail: str | None


class SessionSupervisor(Child):
    child_name = "session"

    def __init__(
        self,
        pool: ActorPool,
        parent: pykka.ActorRef[Any],
        core: HiveCore,
        info: SessionInfo,
        adopt: bool = False,
    ) -> None:
        super().__init__(pool, parent)
        self._core = core
        self._info = info
        self._adopt = adopt
        config = core.config
        self._intensity = RestartIntensity(config.max_restarts, config.restart_window, core.clock)
        self._children: dict[str, pykka.ActorRef[Any]] = {}
        self._pending: list[ThreadingFuture[str]] = []
        self._stopping: _Stopping | None = None
        self._gave_up = False
        self._crash_acks: dict[str, list[ThreadingFuture[None]]] = {}
        self._run = info.runs
        """The run in flight: its Spawned/Exited messages are the ones that count."""
        self._restart_timer: TimerHandle | None = None
        self._restarts_in_a_row = 0
        self._acquiring: _PendingStart | None = None
        """A start waiting for a slot, while it waits."""
        self._idle_token = 0
        self._timers: list[TimerHandle] = []
        self._stall_restart: str | None = None
        """Why the run being stopped is to be followed by a new one (it stalled)."""
        self._stall_grace_ends = 0.0
        """When that stop's grace period ends (clock's monotonic time)."""

    @property
    def _id(self) -> str:
        return self._info.session_id

    def on_start(self) -> None:
        self._start_child("context")
        self._start_child("runner")
        if self._adopt:
            self._resume_after_restart()
        elif self._info.status is Status.QUEUED:  # queued under an earlier hive
            # the manager re-queued it; Granted comes
            self._acquiring = _PendingStart(self._info.args, self._info.run_task)
        elif self._info.status is Status.IDLE:
            self._arm_idle_timeout()
        if self._info.max_lifetime is not None:
            age = (self._core.clock.now() - self._info.created).total_seconds()
            self._later(max(0.0, self._info.max_lifetime - age), _LifetimeExpired())

    def _resume_after_restart(self) -> None:
        """Watch the agent an earlier hive left running; finish a stop it had begun."""
        info = self._info
        assert info.pid is not None
        if info.status is Status.STOPPING:
            outcome = stop_outcome(info.reason)
            self._stopping = _Stopping(outcome, info.reason or "requested", info.detail)
        self._children["runner"].tell(Adopt(info.runs, info.pid, info.pid_start, info.setting_up))
        if self._stopping is not None:
            self._signal_stop(self._core.config.grace_period)
        elif info.setting_up:
            self._arm_setup_timeout(since=info.updated)
        elif info.status is Status.RUNNING:
            self._core.watchdog.watch(info, info.runs)  # a full stall_timeout from now

    def on_stop(self) -> None:
        self._core.watchdog.unwatch(self._id)
        self._cancel_timers()
        self._stop_children()

    def _cancel_timers(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # The manager fails the session; leave no child actor, timer or agent behind, and
        # no caller waiting for a start that will never be answered.
        for reply in self._pending:
            _answer_failed(reply, exception_value)
        self._pending.clear()
        self._core.watchdog.unwatch(self._id)
        self._cancel_timers()
        self._stop_children()
        process = self._core.reaper.find(self._id)
        if process is not None:
            process.signal_group(signal.SIGKILL)
        super().on_failure(exception_type, exception_value, traceback)

    def handle(self, message: Any) -> Any:
        try:
            self._dispatch(message)
        except Exception as exc:
            # This actor is failing (on_failure follows); its caller hears why at once
            # rather than at its reply timeout. E.g. a transition the disk refused.
            _answer_failed(getattr(message, "reply", None), exc)
            raise

    def _dispatch(self, message: Any) -> None:
        match message:
            case StartRequest():
                self._on_start_request(message)
            case Granted():
                self._on_granted()
            case _RespawnDue(run) if run == self._run:
                self._respawn()
            case _IdleExpired(token) if token == self._idle_token:
                self._on_idle_expired()
            case _LifetimeExpired():
                self._on_lifetime_expired()
            case _SetupTimedOut(run) if run == self._run:
                self._on_setup_timed_out()
            case Stalled(run, silent) if run == self._run:
                self._on_stalled(silent)
            case Active(run, silent) if run == self._run:
                self._on_active(silent)
            case Stalled() | Active():
                pass  # of an earlier run
            case TerminateRequest():
                self._on_terminate_request(message)
            case ContextRequest(call):
                context = self._child("context")
                if context.is_alive():
                    context.tell(call)
                else:
                    error = HiveError(f"session {self._id} is failing; its context is unavailable")
                    call.reply.set_exception((HiveError, error, None))
            case Spawned(run, pid, start_time) if run == self._run:
                self._on_spawned(pid, start_time)
            case SpawnFailed(run, detail) if run == self._run:
                self._on_spawn_failed(detail)
            case Exited(run) if run == self._run:
                self._on_exited(message)
            case Spawned() | SpawnFailed() | Exited():
                log.debug("stale message from an earlier run", session_id=self._id, msg=message)
            case CrashChild(name, error, reply):
                self._crash_acks.setdefault(name, []).append(reply)
                with contextlib.suppress(pykka.ActorDeadError):
                    self._children[name].tell(InjectCrash(error))
            case ChildFailed(name, urn, detail):
                ref = self._children.get(name)
                if ref is not None and ref.actor_urn == urn:
                    self._on_child_failed(name, detail)
            case _:
                super().handle(message)

    # -- requests ---------------------------------------------------------------------------

    def _on_start_request(self, request: StartRequest) -> None:
        info = self._info
        if info.status not in STARTABLE or self._acquiring is not None:
            target = Status.QUEUED if self._acquiring is not None else Status.STARTING
            allowed = TRANSITIONS[info.status] - {Status.STARTING}
            error = InvalidTransition.start_refused(self._id, info.status, target, allowed)
            request.reply.set_exception((InvalidTransition, error, None))
            return
        self._pending.append(request.reply)
        self._acquiring = _PendingStart(request.args, request.task)
        self._idle_token += 1  # an idle timeout armed earlier no longer applies
        # Taken here, not through the manager: a start is then no round trip through the
        # one actor every session shares. The manager hands on the slots that free up.
        if self._core.slots.acquire(self._id, info.priority):
            self._on_granted()
        else:
            self._queue()

    def _queue(self) -> None:
        """Every slot is taken: wait in the queue (the manager tells Granted)."""
        assert self._acquiring is not None
        self._info = self._core.commit(
            self._info,
            Status.QUEUED,
            reason="queued",
            args=self._acquiring.args,
            run_task=self._acquiring.task,
        )
        self._settle_pending()

    def _on_granted(self) -> None:
        start, self._acquiring = self._acquiring, None
        if start is None or self._info.status not in WAITING:
            self._parent.tell(Release(self._id))  # withdrawn meanwhile (terminated)
            return
        self._restarts_in_a_row = 0
        self._info = self._core.commit(
            self._info,
            Status.STARTING,
            reason="start",
            args=start.args,
            run_task=start.task,
            pid=None,
        )
        crash_point("start:committed")
        self._run = self._info.runs + 1
        self._respawn()

    def _respawn(self) -> None:
        """Spawn run ``self._run`` (the STARTING transition is already recorded), or the
        setup step before it."""
        self._restart_timer = None
        runner = self._children["runner"]
        if runner.is_alive():
            runner.tell(self._spawn_message())
        else:  # restarted now; its restart sends the spawn (_resume_spawn), once
            self._on_child_failed("runner", "found dead")

    def _spawn_message(self) -> Spawn:
        info = self._info
        env = self._core.agent_env(info)
        if info.setting_up:
            return Spawn(self._run, info.setup, env, setup=True, limits=info.limits)
        if self._run > 1 and info.resume_command:  # a run after the first: it resumes
            fields = {"{session_id}": info.session_id, "{run}": str(self._run)}
            argv = build_argv(info.resume_command, info.current_task, info.args, fields)
        else:
            argv = build_argv(info.command, info.current_task, info.args)
        return Spawn(self._run, tuple(argv), env, limits=info.limits)

    def _later(self, delay: float, message: Any) -> TimerHandle:
        """Tell ourselves ``message`` after ``delay`` seconds of the hive's clock."""
        ref = self.actor_ref

        def fire() -> None:
            with contextlib.suppress(pykka.ActorDeadError):
                ref.tell(message)

        handle = self._core.timers.call_later(delay, fire)
        self._timers = [h for h in self._timers if not h.cancelled] + [handle]
        return handle

    def _arm_idle_timeout(self) -> None:
        self._idle_token += 1
        if self._info.idle_timeout is not None:
            self._later(self._info.idle_timeout, _IdleExpired(self._idle_token))

    def _on_idle_expired(self) -> None:
        if self._info.status is Status.IDLE and self._acquiring is None:
            detail = f"idle for {self._info.idle_timeout:g} s"
            self._finish(Status.COMPLETED, "idle_timeout", detail)

    def _on_lifetime_expired(self) -> None:
        if self._info.status in TERMINAL:
            return
        detail = f"older than its max_lifetime of {self._info.max_lifetime:g} s"
        grace = self._core.config.grace_period
        if self._cancel_restart():
            self._finish(Status.TERMINATED, "max_lifetime", detail)
        elif self._info.status in (Status.STARTING, Status.RUNNING):
            self._begin_stop(Status.TERMINATED, "max_lifetime", detail, grace)
        elif self._info.status is not Status.STOPPING:
            self._withdraw_start()
            self._finish(Status.TERMINATED, "max_lifetime", detail)

    def _withdraw_start(self) -> None:
        """A queued start is withdrawn: its queue place goes before the end is announced
        (the slot queue moves on; the manager's Release then finds nothing to do)."""
        self._acquiring = None
        self._core.slots.withdraw(self._id)

    def _restart_agent(
        self, code: int | None, ended: str, forced: bool = False, at_least: float = 0.0
    ) -> bool:
        """Schedule a restart if the policy wants one (or it is ``forced``: a stall) and
        ``restart_limit`` allows it, after the backoff and at least ``at_least`` s; True if
        it was scheduled.

        ``ended`` says how the run ended, for the restart's detail."""
        info = self._info
        wanted = (
            forced
            or info.restart_policy == "always"
            or (info.restart_policy == "on-failure" and code != 0)
        )
        if not wanted or self._restarts_in_a_row >= info.restart_limit:
            return False
        delay = max(min(info.restart_backoff * 2**self._restarts_in_a_row, MAX_BACKOFF), at_least)
        self._restarts_in_a_row += 1
        detail = (
            f"{ended}; restart {self._restarts_in_a_row} of {info.restart_limit} in {delay:g} s"
        )
        # Armed before the commit announces the restart, so the backoff starts now.
        self._run = info.runs + 1
        self._restart_timer = self._later(delay, _RespawnDue(self._run))
        self._info = self._core.commit(
            info,
            Status.STARTING,
            reason="restart",
            detail=detail,
            exit_code=code,
            pid=None,
            restarts=info.restarts + 1,
        )
        return True

    def _on_terminate_request(self, request: TerminateRequest) -> None:
        grace = self._core.config.grace_period if request.grace is None else request.grace
        status = self._info.status
        if self._cancel_restart():  # between two runs: nothing to signal
            self._finish(request.outcome, request.reason, None)
            request.reply.set(str(self._info.status))
        elif status in (Status.STARTING, Status.RUNNING):
            self._begin_stop(request.outcome, request.reason, None, grace, request.reply)
        elif status is Status.STOPPING:
            if request.outcome is not Status.TERMINATED and self._stopping is not None:
                self._stopping = _Stopping(request.outcome, request.reason, None)
            self._signal_stop(grace, request.reply)
        else:
            if status not in TERMINAL:
                self._withdraw_start()
                self._finish(request.outcome, request.reason, None)
            request.reply.set(str(self._info.status))

    # -- the agent's run --------------------------------------------------------------------

    def _on_spawned(self, pid: int, start_time: int | None) -> None:
        if self._info.setting_up:  # the session stays starting while its setup runs
            self._info = self._core.note(self._info, [], pid=pid, pid_start=start_time)
            if self._stopping is None:
                self._arm_setup_timeout()
        elif self._info.status is Status.STARTING:
            self._info = self._core.commit(
                self._info,
                Status.RUNNING,
                reason="spawned",
                pid=pid,
                pid_start=start_time,
                runs=self._run,
                usage=None,  # this run's is read afresh; the last run's was announced
            )
            self._core.watchdog.watch(self._info, self._run)
        else:  # stopping already: the run still counts, and its pid is what is stopped
            self._info = self._core.note(
                self._info, [], runs=self._run, pid=pid, pid_start=start_time
            )
        self._settle_pending()

    def _on_spawn_failed(self, detail: str) -> None:
        if self._stopping is None and self._info.setting_up:
            self._finish(Status.FAILED, "setup_failed", detail)
        elif self._stopping is not None:
            runs = self._info.runs if self._info.setting_up else self._run
            self._finish(self._stopping.outcome, self._stopping.reason, detail, runs=runs)
        elif self._info.status is Status.STARTING:
            self._finish(Status.FAILED, "spawn_error", detail, runs=self._run)

    def _on_exited(self, exited: Exited) -> None:
        self._core.watchdog.unwatch(self._id)
        code, lost_detail = exited.exit_code, exited.detail
        if exited.usage is not None:  # written with the commit this exit leads to
            self._info = self._info.model_copy(update={"usage": exited.usage})
        if self._info.setting_up:
            self._on_setup_exited(code, lost_detail)
            return
        if self._info.status is Status.STARTING:  # cannot happen: Spawned is told first
            log.warning("exit before spawn was confirmed", session_id=self._id)
            self._info = self._core.commit(self._info, Status.RUNNING, reason="spawned")
        detail = _with_limits(lost_detail or describe_exit(code), exited, self._info.limits)
        stalled, self._stall_restart = self._stall_restart, None
        if self._stopping is not None:
            stop = self._stopping
            self._finish(stop.outcome, stop.reason, stop.detail or detail, exit_code=code)
        elif stalled is not None:
            # Not before the stopped run's grace period is over: its end kills what it left
            # by the session's marker, which the next run carries too.
            grace_left = max(0.0, self._stall_grace_ends - self._core.clock.monotonic())
            if not self._restart_agent(code, stalled, forced=True, at_least=grace_left):
                limit = f"{stalled}; restart_limit ({self._info.restart_limit}) reached"
                self._finish(Status.FAILED, "stalled", limit, exit_code=code)
        elif self._restart_agent(code, detail):
            pass
        elif code is None:  # not an earlier run's code, which the info still holds
            self._finish(Status.FAILED, "lost", detail, exit_code=None)
        elif code == 0 and self._info.persistent:
            self._arm_idle_timeout()  # before the commit announces idle: its clock starts now
            self._info = self._core.commit(
                self._info, Status.IDLE, reason="exited", detail=detail, exit_code=0, pid=None
            )
            self._parent.tell(Release(self._id))
            self._settle_pending()
        elif code == 0:
            self._finish(Status.COMPLETED, "exited", detail, exit_code=0)
        else:
            reason = "signal" if killed_by_signal(code) else "exit_code"
            if exited.memory_kills and self._info.limits.memory is not None:
                reason = "memory_limit"
            self._finish(Status.FAILED, reason, detail, exit_code=code)

    # -- the stall watchdog ---------------------------------------------------------------

    def _on_stalled(self, silent: float) -> None:
        info = self._info
        if info.status is not Status.RUNNING or self._stopping or self._stall_restart:
            return
        event = SessionStalledEvent(
            session_id=self._id,
            at=self._core.clock.now(),
            silent_seconds=round(silent, 3),
            action=info.stall_action,
        )
        self._info = self._core.note(info, [event])
        if info.stall_action == "none":
            return
        detail = f"its log did not grow for {silent:.0f} s (stall_timeout {info.stall_timeout:g} s)"
        grace = self._core.config.grace_period
        self._core.watchdog.unwatch(self._id)  # what it says while it stops is no news
        if info.stall_action == "terminate":
            self._begin_stop(Status.TERMINATED, "stalled", detail, grace)
        elif self._restarts_in_a_row >= info.restart_limit:
            detail += f"; restart_limit ({info.restart_limit}) reached"
            self._begin_stop(Status.FAILED, "stalled", detail, grace)
        else:
            self._stall_restart = detail  # the run is stopped; its exit starts the next
            self._stall_grace_ends = self._core.clock.monotonic() + grace
            self._signal_stop(grace)

    def _on_active(self, silent: float) -> None:
        running = self._info.status is Status.RUNNING
        if running and self._stopping is None and self._stall_restart is None:
            event = SessionActiveEvent(
                session_id=self._id, at=self._core.clock.now(), silent_seconds=round(silent, 3)
            )
            self._info = self._core.note(self._info, [event])

    # -- the setup step -----------------------------------------------------------------

    def _arm_setup_timeout(self, since: datetime | None = None) -> None:
        """Time the setup step out after ``setup_timeout`` s (from ``since``: re-adopted)."""
        timeout = self._core.config.setup_timeout
        if timeout is not None:
            spent = 0.0 if since is None else (self._core.clock.now() - since).total_seconds()
            self._later(max(0.0, timeout - spent), _SetupTimedOut(self._run))

    def _on_setup_timed_out(self) -> None:
        if self._info.setting_up and self._info.status is Status.STARTING:
            timeout = self._core.config.setup_timeout
            detail = f"the setup step ran past its setup_timeout of {timeout:g} s"
            self._begin_stop(Status.FAILED, "setup_timeout", detail, self._core.config.grace_period)

    def _on_setup_exited(self, code: int | None, lost_detail: str | None) -> None:
        """The setup step ended: on success the agent's first run starts, else the
        session fails and the agent never runs."""
        how = describe_exit(code)
        detail = lost_detail or f"the setup step {'was ' if how.startswith('killed') else ''}{how}"
        if self._stopping is not None:
            stop = self._stopping
            self._finish(stop.outcome, stop.reason, stop.detail or detail, exit_code=code)
        elif code == 0:
            # A setup timeout still armed finds the session past its setup: it is ignored.
            self._info = self._core.note(self._info, [], setup_done=True, pid=None, pid_start=None)
            self._run = self._info.runs + 1
            self._respawn()
        elif code is None:
            self._finish(Status.FAILED, "lost", detail, exit_code=None)
        else:
            self._finish(Status.FAILED, "setup_failed", detail, exit_code=code)

    def _begin_stop(
        self,
        outcome: Status,
        reason: str,
        detail: str | None,
        grace: float,
        reply: ThreadingFuture[str] | None = None,
    ) -> None:
        self._stopping = _Stopping(outcome, reason, detail)
        self._info = self._core.commit(self._info, Status.STOPPING, reason=reason, detail=detail)
        crash_point("terminate:committed")
        self._signal_stop(grace, reply)

    def _signal_stop(self, grace: float, reply: ThreadingFuture[str] | None = None) -> None:
        """Have the agent signalled; ``reply`` is settled once it has been."""
        runner = self._children.get("runner")
        if runner is not None and runner.is_alive():
            runner.tell(Stop(grace, reply))  # after any Spawn still queued there
            return
        process = self._core.reaper.find(self._id)
        if process is not None:
            process.stop(grace, self._core.timers)
        elif self._stopping is not None:
            # No runner and no process: a queued Spawn died with its runner; nothing runs.
            self._finish(self._stopping.outcome, self._stopping.reason, self._stopping.detail)
        if reply is not None:
            reply.set(str(self._info.status))

    def _finish(self, status: Status, reason: str, detail: str | None, **changes: Any) -> None:
        """Reach ``status``; if it is terminal, shut this session's subtree down."""
        self._info = self._core.commit(
            self._info, status, reason=reason, detail=detail, pid=None, **changes
        )
        self._settle_pending()
        if status in TERMINAL:
            self._stop_children()
            self._parent.tell(SessionEnded(self._id))
            self.stop()

    def _settle_pending(self) -> None:
        for reply in self._pending:
            reply.set(str(self._info.status))
        self._pending.clear()

    # -- children ---------------------------------------------------------------------------

    def _start_child(self, name: str) -> pykka.ActorRef[Any]:
        core, info = self._core, self._info
        if name == "context":
            context = Context(
                info.session_id,
                info.task,
                Path(info.database),
                core.config,
                core.registry,
                core.clock,
            )
            ref: pykka.ActorRef[Any] = ContextManager.start(core.pool, self.actor_ref, context)
        else:
            ref = ProcessRunner.start(
                core.pool,
                self.actor_ref,
                info.session_id,
                Path(info.working_dir),
                Path(info.log_file),
                core.reaper,
                core.timers,
                core.cgroups,
            )
        self._children[name] = ref
        return ref

    def _child(self, name: str) -> pykka.ActorRef[Any]:
        """A live child; one found dead (its ChildFailed still queued) is restarted now."""
        ref = self._children[name]
        if not ref.is_alive():
            self._on_child_failed(name, "found dead")
        return self._children[name]

    def _on_child_failed(self, name: str, detail: str) -> None:
        try:
            self._restart_child(name, detail)
        finally:
            for reply in self._crash_acks.pop(name, []):
                reply.set(None)

    def _restart_child(self, name: str, detail: str) -> None:
        failures = self._intensity.record()
        if self._gave_up:
            return
        if self._intensity.exceeded(failures):
            self._gave_up = True
            error = RestartIntensityExceeded(
                self._id, failures, self._intensity.window, self._intensity.limit, name
            )
            log.error("restart intensity exceeded", session_id=self._id, detail=str(error))
            self._fail_session("restart_intensity", str(error))
            return
        self._start_child(name)
        restarts = self._info.restarts + 1
        event = SessionRestartEvent(
            session_id=self._id,
            at=self._core.clock.now(),
            child=name,
            detail=detail,
            restarts=restarts,
        )
        self._info = self._core.note(self._info, [event], restarts=restarts)
        log.warning("child restarted", session_id=self._id, child=name, detail=detail)
        if name == "runner":
            self._resume_spawn()

    def _resume_spawn(self) -> None:
        """Re-send a Spawn that died queued in a failed runner (Spawned never came)."""
        info = self._info
        if (
            info.status is Status.STARTING
            and self._stopping is None
            and self._core.reaper.find(self._id) is None
        ):
            self._children["runner"].tell(self._spawn_message())

    def _cancel_restart(self) -> bool:
        if self._restart_timer is None:
            return False
        self._restart_timer.cancel()
        self._restart_timer = None
        return True

    def _fail_session(self, reason: str, detail: str) -> None:
        status = self._info.status
        if self._cancel_restart():
            self._finish(Status.FAILED, reason, detail)
        elif status in (Status.STARTING, Status.RUNNING):
            self._begin_stop(Status.FAILED, reason, detail, self._core.config.grace_period)
        elif status is Status.STOPPING:
            self._stopping = _Stopping(Status.FAILED, reason, detail)
            self._signal_stop(self._core.config.grace_period)
        elif status not in TERMINAL:
            self._finish(Status.FAILED, reason, detail)

    def _stop_children(self) -> None:
        for ref in self._children.values():
            with contextlib.suppress(pykka.ActorDeadError):
                ref.stop(block=False)


def _with_limits(detail: str, exited: Exited, limits: Limits) -> str:
    """``detail`` with the limits a failed run hit said first (a run that exited 0 hit
    none that mattered)."""
    if exited.exit_code == 0:
        return detail
    return describe_hits(detail, limits, exited.usage, exited.memory_kills, exited.forks_refused)


def _answer_failed(reply: ThreadingFuture[Any] | None, error: BaseException | None) -> None:
    if reply is None or error is None:
        return
    with contextlib.suppress(queue.Full):  # it was answered before the failure
        reply.set_exception((type(error), error, error.__traceback__))
