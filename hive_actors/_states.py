"""The session lifecycle: every state and the one table of allowed transitions."""

from __future__ import annotations

from enum import StrEnum

from hive_actors.errors import InvalidTransition


class Status(StrEnum):
    """The status word a caller sees."""

    CREATED = "created"
    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    IDLE = "idle"
    STOPPING = "stopping"
    COMPLETED = "completed"
    FAILED = "failed"
    TERMINATED = "terminated"


NOT_FOUND = "not_found"

TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.TERMINATED})
"""States a session never leaves."""

SETTLED = TERMINAL | {Status.IDLE}
"""States in which nothing runs and nothing is pending: what ``Hive.wait`` waits for."""

FAILING_STOPS = frozenset({"restart_intensity", "setup_timeout", "host_lost"})
"""Reasons of a stop that ends the session ``failed``; any other stop ends it ``terminated``."""


def stop_outcome(reason: str | None) -> Status:
    """How a session that is ``stopping`` for ``reason`` ends (a restarted Hive finishing
    a stop an earlier one began needs no more than its recorded reason)."""
    return Status.FAILED if reason in FAILING_STOPS else Status.TERMINATED


_T = Status
TRANSITIONS: dict[Status, frozenset[Status]] = {
    _T.CREATED: frozenset({_T.QUEUED, _T.STARTING, _T.TERMINATED, _T.FAILED}),
    _T.QUEUED: frozenset({_T.STARTING, _T.TERMINATED, _T.FAILED}),
    _T.STARTING: frozenset({_T.RUNNING, _T.STOPPING, _T.FAILED, _T.TERMINATED}),
    # running -> starting is a restart of the agent under a restart policy.
    _T.RUNNING: frozenset({_T.COMPLETED, _T.IDLE, _T.FAILED, _T.STOPPING, _T.STARTING}),
    _T.IDLE: frozenset({_T.QUEUED, _T.STARTING, _T.COMPLETED, _T.TERMINATED, _T.FAILED}),
    _T.STOPPING: frozenset({_T.TERMINATED, _T.FAILED}),
    _T.COMPLETED: frozenset(),
    _T.FAILED: frozenset(),
    _T.TERMINATED: frozenset(),
}


def check_transition(session_id: str, current: Status, target: Status) -> None:
    """Raise InvalidTransition unless the table allows ``current -> target``."""
    allowed = TRANSITIONS[current]
    if target not in allowed:
        raise InvalidTransition(session_id, current, target, allowed)
