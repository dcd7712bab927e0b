"""An agent's OS process: how it is spawned, signalled and reaped.

The agent runs in a new session, so it leads its own process group and one ``killpg``
reaches everything it started (a descendant that calls setsid itself escapes the group).
Signals and the final reap share a lock, so a signal never lands on a recycled pid: the
group is signalled only while its leader is alive or an unreaped zombie, which keeps the
pgid reserved.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hive_actors._timers import Timers


def exit_code_of(returncode: int) -> int:
    """A shell-style exit code: 128 + N for a process killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exited with code {returncode}"


def build_argv(template: Sequence[str], task: str, args: Sequence[str]) -> list[str]:
    """The command template with every ``{task}`` filled in, then the start arguments."""
    return [part.replace("{task}", task) for part in template] + list(args)


@dataclass(eq=False)
class AgentProcess:
    """One run of a session's agent."""

    session_id: str
    run: int
    popen: subprocess.Popen[bytes]
    returncode: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @classmethod
    def spawn(
        cls,
        session_id: str,
        run: int,
        argv: Sequence[str],
        cwd: Path,
        env: Mapping[str, str],
        log_file: Path,
    ) -> AgentProcess:
        """Start the agent; raises OSError if it cannot be started (missing program, ...)."""
        with open(log_file, "ab") as log:
            popen = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        return cls(session_id=session_id, run=run, popen=popen)

    def signal_group(self, signum: int) -> bool:
        """Send ``signum`` to the agent's whole process group; False if it has already exited."""
        with self._lock:
            if self.returncode is not None:
                return False
            try:
                os.killpg(self.pid, signum)
            except ProcessLookupError:
                return False
            return True

    def stop(self, grace: float, timers: Timers) -> None:
        """SIGTERM to the group now, SIGKILL when ``grace`` seconds have passed.

        The SIGKILL needs no actor: it fires from the timer thread even if the runner
        that asked for it has died meanwhile, and is a no-op once the agent was reaped.
        """
        if grace <= 0:
            self.signal_group(signal.SIGKILL)
        elif self.signal_group(signal.SIGTERM):
            timers.call_later(grace, lambda: self.signal_group(signal.SIGKILL))

    def reap(self) -> int:
        """Collect the exit status of an agent known to have exited.

        Whatever the agent left running in its group is killed first, while the zombie
        leader still holds the group id: an agent's leftovers never outlive its run.
        """
        with self._lock:
            if self.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.returncode = self.popen.wait()
            return self.returncode
