"""Crash points for the fault suite (a documented testing hook, inert otherwise).

With ``HIVE_CRASH_AT=<point>`` in its environment, a process running a Hive kills itself
with SIGKILL when it reaches that point, as a power cut or an OOM kill would:

* ``create:workspace``: a session's directories exist, the registry has no row yet;
* ``start:committed``: ``starting`` is recorded, no agent was spawned;
* ``start:spawned``: the agent runs, but its spawn was never recorded;
* ``terminate:committed``: ``stopping`` is recorded, no signal was sent.
"""

from __future__ import annotations

import os
import signal

POINTS = frozenset({"create:workspace", "start:committed", "start:spawned", "terminate:committed"})


def crash_point(name: str) -> None:
    if os.environ.get("HIVE_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
