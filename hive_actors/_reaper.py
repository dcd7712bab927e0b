"""One thread that notices every agent's exit, for all sessions at once.

Each live agent costs one pidfd in one epoll set: no thread per process, no polling, and the
exit is seen the moment it happens. The reaper is also the table of live agents by session,
which is how a restarted ProcessRunner finds the agent it must re-attach to.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
from collections.abc import Callable

import structlog

from hive_actors._process import AgentProcess, Sweeper

log = structlog.get_logger(__name__)

ExitCallback = Callable[[AgentProcess, int | None], None]

_LEFT_RUNNING: list[subprocess.Popen[bytes]] = []
"""Handles of agents a closing hive left running on purpose (``shutdown="leave"``).

Dropping them would make Python warn about, and later reap, children we meant to leave;
the next hive re-adopts them by pid and start time.
"""


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
            on_exit(process, self._reap(process))
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
                process.signal_group(signal.SIGKILL)
                self._reap(process)  # the timers close after us: a sweep due runs then
            os.close(fd)
        self._epoll.close()
        os.close(self._wake_read)
        os.close(self._wake_write)

    def _run(self) -> None:
        while not self._closed:
            for fd, _mask in self._epoll.poll():
                if fd == self._wake_read:
                    continue
                try:
                    self._exited(fd)
                except Exception:  # one bad entry must never stop the reaper for all
                    log.exception("reaper failed on one agent", fd=fd)

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
        try:
            on_exit(process, exit_code)
        except Exception:
            log.exception("exit callback failed", session_id=process.session_id)

    def _give_up(self, process: AgentProcess, on_exit: ExitCallback, error: OSError) -> None:
        log.error("cannot watch agent; killing it", session_id=process.session_id, error=str(error))
        process.signal_group(signal.SIGKILL)
        on_exit(process, self._reap(process))

    def _reap(self, process: AgentProcess) -> int | None:
        exit_code = process.reap()
        if self._sweeper is not None and not process.stop_asked:
            self._sweeper.run_ended(process)
        return exit_code
