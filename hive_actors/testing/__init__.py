"""Tools for testing code that uses hive_actors, and hive_actors itself.

* ``FakeClock``: pass as ``Hive(clock=...)``; time moves only when you ``advance`` it.
* ``fake_agent_command()``: a command template running the bundled fake agent.
* ``ReadySignal``: wait, without polling, until a fake agent has set itself up.
* ``inject_crash``: make one actor of a session die (fault injection).
* ``session_processes``: the live processes that carry a session's id in their environment.
* ``wait_maintenance``: wait for the housekeeping pass a clock advance triggered.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pykka import ThreadingFuture

from hive_actors import _cgroups, _process
from hive_actors._hive import Hive
from hive_actors._supervision import InjectCrash
from hive_actors._supervisor import CrashChild

__all__ = [
    "FakeClock",
    "ReadySignal",
    "clear_cgroups",
    "fake_agent_command",
    "inject_crash",
    "session_processes",
    "wait_maintenance",
    "wait_watchdog",
]


def clear_cgroups(root: str | Path) -> None:
    """Kill what is left in the run cgroups of the Hive of ``root`` and remove them, and
    the Hive's own: after a Hive that died without closing (a cluster host whose node was
    shut down), or one that left its agents running on purpose."""
    clear_hive_cgroups(_cgroups.detect(Path(root)))


def clear_hive_cgroups(cgroups: _cgroups.Cgroups, timeout: float = 10.0) -> None:
    """``clear_cgroups`` for a Hive's cgroups as it found them."""
    deadline = time.monotonic() + timeout
    for name in cgroups.runs():
        run = cgroups.existing(name)
        run.kill()
        run.wait_empty(deadline)
        run.remove()
    cgroups.close()


class FakeClock:
    """A clock for tests: monotonic and wall time move together, only on ``advance``."""

    def __init__(self, start: datetime | None = None) -> None:
        self._lock = threading.Lock()
        self._monotonic = 1_000.0
        self._wall = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._listeners: list[Callable[[], None]] = []

    def monotonic(self) -> float:
        with self._lock:
            return self._monotonic

    def now(self) -> datetime:
        with self._lock:
            return self._wall

    def wait_timeout(self, deadline: float) -> float | None:
        return 0.0 if deadline <= self.monotonic() else None

    def on_advance(self, listener: Callable[[], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def advance(self, seconds: float) -> None:
        """Move time forward; timers that fall due run at once (on the timer thread)."""
        with self._lock:
            self._monotonic += seconds
            self._wall += timedelta(seconds=seconds)
            listeners = list(self._listeners)
        for listener in listeners:
            listener()


FAKE_AGENT = str(Path(__file__).with_name("fake_agent.py"))
"""The fake agent's script, run by path: ``-m`` would import this package (and with it
the whole of hive_actors) first, ~0.6 s at every start instead of ~0.05 s."""


def fake_agent_command(*options: str) -> list[str]:
    """The fake agent as a command template: ``{task}`` first, then fixed ``options``."""
    return [sys.executable, FAKE_AGENT, "{task}", *options]


class ReadySignal:
    """A FIFO a fake agent writes to (``--ready PATH``) once it is set up."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / f"ready-{os.getpid()}-{id(self)}.fifo"
        os.mkfifo(self.path)
        # Read-write, so the FIFO never reports end-of-file while no agent has opened it.
        self._fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK)

    def wait(self, timeout: float = 30.0) -> dict[str, Any]:
        """The agent's ``{"pid": ..., "grandchild": ...}``; TimeoutError after ``timeout`` s."""
        buffer = b""
        deadline = time.monotonic() + timeout
        while not buffer.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._fd], [], [], remaining)[0]:
                raise TimeoutError(f"no agent reported ready on {self.path} in {timeout} s")
            buffer += os.read(self._fd, 4096)
        answer: dict[str, Any] = json.loads(buffer.decode())
        return answer

    def close(self) -> None:
        os.close(self._fd)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def inject_crash(
    hive: Hive,
    session_id: str | None,
    actor: Literal["manager", "session", "context", "runner"],
    error: BaseException | None = None,
    timeout: float = 10.0,
) -> None:
    """Make one actor of a live session die of ``error`` (default a RuntimeError).

    ``"manager"`` is the root SessionManager (``session_id`` is ignored; it logs the error
    and carries on). ``"session"`` is the SessionSupervisor (returns at once: wait for the
    session's ``failed``); for ``"context"`` and ``"runner"``, its children, it returns once
    the supervisor has restarted the child or, past the restart intensity, failed the
    session.
    """
    error = error or RuntimeError(f"injected crash in {actor}")
    if actor == "manager":
        hive._manager.tell(InjectCrash(error))  # the testing hook reaches in on purpose
        return
    assert session_id is not None
    supervisor = hive._core.table.supervisor(session_id)
    if supervisor is None:
        msg = f"session {session_id} has no live supervisor"
        raise LookupError(msg)
    if actor == "session":
        supervisor.tell(InjectCrash(error))
        return
    handled: ThreadingFuture[None] = ThreadingFuture()
    supervisor.tell(CrashChild(actor, error, handled))
    handled.get(timeout=timeout)


def session_processes(session_id: str) -> list[int]:
    """Pids of live (not zombie) processes of the session: those whose environment says
    HIVE_SESSION_ID=session_id, and every member of the process group of a run of it that
    this process spawned."""
    return _process.session_processes({session_id}).get(session_id, [])


def wait_watchdog(hive: Hive, looks: int, timeout: float = 10.0) -> None:
    """Block until the Hive's stall watchdog has looked at its runs ``looks`` times in all.

    It looks every second of the hive's clock: advance a FakeClock, then wait here for
    the look that triggered (a look sees the clock as it is when it runs)."""
    if not hive._core.watchdog.wait_checks(looks, timeout):
        raise TimeoutError(f"the stall watchdog did not look {looks} times in {timeout} s")


def wait_maintenance(hive: Hive, passes: int, timeout: float = 10.0) -> None:
    """Block until the Hive's housekeeping has completed ``passes`` passes in all.

    Passes run every ``maintenance_interval`` seconds of the hive's clock: advance a
    FakeClock by that much, then wait here for the pass it triggered.
    """
    if not hive._maintenance.wait_passes(passes, timeout):
        msg = f"housekeeping did not complete {passes} passes in {timeout} s"
        raise TimeoutError(msg)
