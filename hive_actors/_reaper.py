"""One thread that notices every agent's exit, for all sessions at once.

Each live agent costs one pidfd in one epoll set: no thread per process, no polling, and the
exit is seen the moment it happens. The reaper is also the table of live agents by session,
which is how a restarted ProcessRunner finds the agent it must re-attach to.
"""

from __future__ import annotations

import os
import select
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from hive_actors._cgroups import EMPTY_POLL
from hive_actors._process import AgentProcess, Sweeper

log = structlog.get_logger(__name__)

ExitCallback = Callable[[AgentProcess, int | None], None]

_LEFT_RUNNING: list[subprocess.Popen[bytes]] = []
"""Handles of agents a closing hive left running on purpose (``shutdown="leave"``).

Dropping them would make Python warn about, and later reap, children we meant to leave;
the next hive re-adopts them by pid and start time.
"""


DRAIN_LIMIT = 5.0
"""Seconds a run's cgroup may take to empty after its SIGKILL before its end is reported
anyway (a member stuck in the kernel); its cgroup is then removed by a later start."""


@dataclass(slots=True)
class _Draining:
    """A run over whose cgroup still holds processes, SIGKILLed, not yet gone."""

    process: AgentProcess
    on_exit: ExitCallback
    exit_code: int | None
    deadline: float
    fd: int | None
    """Its open ``cgroup.events`` (v2), in the epoll set; None for a v1 cgroup."""

    def populated(self) -> bool:
        if self.fd is None:
            return self.process.cgroup_populated()
        # Read through the polled fd itself: that acknowledges the change, else the
        # kernel would report it again at every poll.
        try:
            return b"populated 1" in os.pread(self.fd, 4096, 0)
        except OSError:  # its cgroup is gone: nothing is left in it
            return False


class Reaper:
    def __init__(self, sweeper: Sweeper | None = None) -> None:
        self._sweeper = sweeper
        """Told of every run that ended on its own, to kill what it left outside its group."""
        self._epoll = select.epoll()
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._epoll.register(self._wake_read, select.EPOLLIN)
        self._lock = threading.Lock()
        self._by_fd: dict[int, tuple[AgentProcess, ExitCallback]] = {}
        self._by_session: dict[str, AgentProcess] = {}
        self._draining: list[_Draining] = []
        """Touched by the reaper thread alone (and by ``close`` once it has stopped)."""
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="hive-reaper", daemon=True)
        self._thread.start()

    def watch(self, process: AgentProcess, on_exit: ExitCallback) -> None:
        """Call ``on_exit(process, exit_code)`` once it has exited (from the reaper thread,
        or at once from this one if it is already gone, or cannot be watched).

        An agent that cannot be watched (no fd left for its pidfd, no room in the epoll
        set) is killed and reaped at once: unwatched, its end would go unnoticed.
        """
        try:
            fd = os.pidfd_open(process.pid)
        except ProcessLookupError:  # an adopted agent that ended since it was checked
            self._report_now(process, on_exit, self._reap(process))
            return
        except OSError as exc:
            self._give_up(process, on_exit, exc)
            return
        # Registered under the lock the reaper thread takes to look an fd up: an exit
        # seen at once still finds its entry, and a failed registration leaves none.
        with self._lock:
            try:
                self._epoll.register(fd, select.EPOLLIN)
            except OSError as exc:
                failed = exc  # given up on below, outside the lock
            else:
                self._by_fd[fd] = (process, on_exit)
                self._by_session[process.session_id] = process
                return
        os.close(fd)
        self._give_up(process, on_exit, failed)

    def find(self, session_id: str) -> AgentProcess | None:
        """The live (not yet reaped) agent of a session, if any."""
        with self._lock:
            return self._by_session.get(session_id)

    def live_count(self) -> int:
        with self._lock:
            return len(self._by_session)

    def close(self, leave_running: bool = False) -> None:
        """Stop watching. An agent still alive now is killed and reaped, never orphaned,
        unless ``leave_running``: then its shim records its end for the next hive."""
        self._closed = True
        os.write(self._wake_write, b"x")
        self._thread.join(5)
        with self._lock:
            left = list(self._by_fd.items())
            self._by_fd.clear()
            self._by_session.clear()
        for fd, (process, _on_exit) in left:
            if leave_running:
                if process.popen is not None:
                    _LEFT_RUNNING.append(process.popen)
            else:
                log.error("agent alive at close; killing it", session_id=process.session_id)
                process.kill_now()
                self._reap(process)  # the timers close after us: a sweep due runs then
                _settle(process, time.monotonic() + DRAIN_LIMIT)
            os.close(fd)
        for draining in self._draining:
            self._finish(draining, time.monotonic() + DRAIN_LIMIT, report=False)
        self._draining.clear()
        self._epoll.close()
        os.close(self._wake_read)
        os.close(self._wake_write)

    def _run(self) -> None:
        while not self._closed:
            draining = {entry.fd for entry in self._draining if entry.fd is not None}
            for fd, _mask in self._epoll.poll(self._poll_timeout()):
                if fd == self._wake_read or fd in draining:
                    continue
                try:
                    self._exited(fd)
                except Exception:  # one bad entry must never stop the reaper for all
                    log.exception("reaper failed on one agent", fd=fd)
            if self._draining:
                self._check_drains()

    def _poll_timeout(self) -> float:
        if not self._draining:
            return -1
        soonest = min(entry.deadline for entry in self._draining) - time.monotonic()
        if any(entry.fd is None for entry in self._draining):
            soonest = min(soonest, EMPTY_POLL)
        return max(0.0, soonest)

    def _check_drains(self) -> None:
        now = time.monotonic()
        left = []
        for entry in self._draining:
            if entry.deadline <= now or not entry.populated():
                try:
                    self._finish(entry, entry.deadline)
                except Exception:
                    log.exception("reaper failed on one agent", session_id=entry.process.session_id)
            else:
                left.append(entry)
        self._draining = left

    def _exited(self, fd: int) -> None:
        # Forget the fd before closing it: once closed, watch() may get the same number
        # for another agent, and this entry must not be confused with that one.
        with self._lock:
            process, on_exit = self._by_fd.pop(fd)
        self._epoll.unregister(fd)
        os.close(fd)
        exit_code = self._reap(process)
        with self._lock:
            if self._by_session.get(process.session_id) is process:
                del self._by_session[process.session_id]
        if _left_something(process):
            self._drain(process, on_exit, exit_code)
        else:  # known empty: a deadline already over, no look
            self._settle_and_report(process, on_exit, exit_code, 0.0)

    def _drain(self, process: AgentProcess, on_exit: ExitCallback, exit_code: int | None) -> None:
        """Report the run over once its cgroup is empty: what it left (killed just
        before) is then really gone, not just signalled."""
        assert process.cgroup is not None
        entry = _Draining(process, on_exit, exit_code, time.monotonic() + DRAIN_LIMIT, None)
        events = process.cgroup.events_file
        if events is not None:
            try:
                entry.fd = os.open(events, os.O_RDONLY | os.O_CLOEXEC)
                self._epoll.register(entry.fd, select.EPOLLPRI)
            except OSError:
                if entry.fd is not None:
                    os.close(entry.fd)
                entry.fd = None  # looked at every EMPTY_POLL s instead
        self._draining.append(entry)  # checked once more before the next poll

    def _finish(self, entry: _Draining, deadline: float, report: bool = True) -> None:
        if entry.fd is not None:
            self._epoll.unregister(entry.fd)
            os.close(entry.fd)
            entry.fd = None
        on_exit = entry.on_exit if report else None
        self._settle_and_report(entry.process, on_exit, entry.exit_code, deadline)

    def _settle_and_report(
        self,
        process: AgentProcess,
        on_exit: ExitCallback | None,
        exit_code: int | None,
        deadline: float,
    ) -> None:
        if not _settle(process, deadline):
            log.warning(
                "a run's cgroup is still busy; left for the next start to remove",
                session_id=process.session_id,
            )
        if on_exit is not None:
            try:
                on_exit(process, exit_code)
            except Exception:
                log.exception("exit callback failed", session_id=process.session_id)

    def _report_now(self, process: AgentProcess, on_exit: ExitCallback, code: int | None) -> None:
        """Report a run over from the caller's thread (a rare path: it may wait for the
        run's cgroup to empty, for up to DRAIN_LIMIT s)."""
        self.settle(process)
        on_exit(process, code)

    def settle(self, process: AgentProcess) -> None:
        """Keep the counters of a run found over, and remove its cgroup (waiting for it to
        empty for up to DRAIN_LIMIT s)."""
        _settle(process, time.monotonic() + DRAIN_LIMIT)

    def _give_up(self, process: AgentProcess, on_exit: ExitCallback, error: OSError) -> None:
        log.error("cannot watch agent; killing it", session_id=process.session_id, error=str(error))
        process.kill_now()
        self._report_now(process, on_exit, self._reap(process))

    def _reap(self, process: AgentProcess) -> int | None:
        exit_code = process.reap()
        if self._sweeper is not None and process.cgroup is None and not process.stop_asked:
            self._sweeper.run_ended(process)
        return exit_code


def _left_something(process: AgentProcess) -> bool:
    """Kill what a run that is over left in its cgroup; True if there was anything."""
    try:
        if not process.cgroup_populated():
            return False
        assert process.cgroup is not None
        process.cgroup.kill()
    except OSError as exc:  # the report must go out whatever the cgroup says
        log.error("cannot empty a run's cgroup", session_id=process.session_id, error=str(exc))
        return False
    return True


def _settle(process: AgentProcess, deadline: float) -> bool:
    """Kill what is left in the run's cgroup and wait (until ``deadline``, monotonic) for
    it to empty; then keep its counters and remove it. False if it could not be removed.

    A run known to be empty passes a ``deadline`` already over: no look, no wait."""
    try:
        if time.monotonic() < deadline and _left_something(process):
            assert process.cgroup is not None
            process.cgroup.wait_empty(deadline)
        return process.settle_cgroup()
    except OSError as exc:
        log.error("cannot settle a run's cgroup", session_id=process.session_id, error=str(exc))
        return False
