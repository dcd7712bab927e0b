"""Every error hive_actors raises on purpose.

    HiveError
    ├── InvalidInput (also a ValueError)
    │   ├── InvalidSessionId
    │   ├── InvalidTask
    │   ├── InvalidPriority
    │   ├── InvalidMetadata
    │   ├── InvalidCommand
    │   ├── InvalidConfig
    │   ├── InvalidContext
    │   ├── InvalidRepository
    │   └── InvalidLimits
    ├── SessionNotFound (also a LookupError)
    ├── InvalidTransition
    ├── RestartIntensityExceeded
    ├── HiveClosed
    ├── RootInUse
    ├── CorruptState
    ├── HostUnavailable
    ├── PortsExhausted
    └── WorkspaceError (also an OSError)
        └── ReadOnlyState

Constructors take the facts and build the message, so every message says what was wrong
and what would have been accepted.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

__all__ = [
    "CorruptState",
    "HiveClosed",
    "HiveError",
    "HostUnavailable",
    "InvalidCommand",
    "InvalidConfig",
    "InvalidContext",
    "InvalidInput",
    "InvalidLimits",
    "InvalidMetadata",
    "InvalidPriority",
    "InvalidRepository",
    "InvalidSessionId",
    "InvalidTask",
    "InvalidTransition",
    "PortsExhausted",
    "ReadOnlyState",
    "RestartIntensityExceeded",
    "RootInUse",
    "SessionNotFound",
    "WorkspaceError",
]

EXAMPLE_SESSION_ID = "550e8400-e29b-41d4-a716-446655440000"


class HiveError(Exception):
    """Base of every error hive_actors raises on purpose; catch this to catch them all."""


class InvalidInput(HiveError, ValueError):
    """A caller passed something we refuse; nothing was created or changed."""


class InvalidSessionId(InvalidInput):
    """A session id that is not a UUID; unlike SessionNotFound, it could never exist."""

    def __init__(self, value: object) -> None:
        self.value = value
        super().__init__(
            f"{value!r} is not a session id; a session id is a UUID like {EXAMPLE_SESSION_ID}"
        )


class InvalidTask(InvalidInput):
    """The task text is empty, too large, or holds a NUL byte."""


class InvalidPriority(InvalidInput):
    """A priority outside the accepted words."""

    def __init__(self, value: object, accepted: Iterable[str]) -> None:
        self.value = value
        super().__init__(f"priority {value!r} is not one of {', '.join(accepted)}")


class InvalidMetadata(InvalidInput):
    """Metadata that is not a JSON object, or larger than the limit."""


class InvalidCommand(InvalidInput):
    """An agent command, argument list or environment that cannot be run as given."""


class InvalidConfig(InvalidInput):
    """A configuration value (argument or HIVE_* variable) that fails validation."""


class InvalidContext(InvalidInput):
    """A ContextManager call with a bad role, path, size or budget."""


class InvalidRepository(InvalidInput):
    """A session asked for from a git repository (``repo``/``ref``) that cannot be one:
    no repository there, an unknown ref, a branch that cannot be made. Nothing was made:
    no session, no worktree, no branch."""


class InvalidLimits(InvalidInput):
    """Resource limits (``limits``, ``memory_max``...) that are malformed, or that this
    Hive cannot enforce (no usable cgroup controller for them; the message names what is
    missing). Nothing was created."""


class SessionNotFound(HiveError, LookupError):
    """A well-formed session id that no session has (never had, or was cleaned up)."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(f"no session {session_id}")


class InvalidTransition(HiveError):
    """A lifecycle change the state table does not allow, e.g. starting a completed session."""

    def __init__(self, session_id: str, current: str, target: str, allowed: Iterable[str]) -> None:
        self.session_id = session_id
        self.current = current = str(current)
        self.target = target = str(target)
        allowed_text = ", ".join(sorted(map(str, allowed))) or "nothing (terminal state)"
        super().__init__(
            f"session {session_id} cannot go from {current!r} to {target!r}; "
            f"from {current!r} it may go to: {allowed_text}"
        )

    @classmethod
    def start_refused(
        cls, session_id: str, current: str, target: str, allowed: Iterable[str]
    ) -> InvalidTransition:
        """A start request refused; said as the caller thinks of it when the session is
        already on its way (``session <id> is already running``), not as a transition."""
        error = cls(session_id, current, target, allowed)
        if str(current) in ("queued", "starting", "running"):
            error.args = (f"session {session_id} is already {current}",)
        return error


class RestartIntensityExceeded(HiveError):
    """A session's children failed more often than its restart intensity allows.

    Raised nowhere; it is the recorded reason of the session that failed, kept as an
    exception so its message is built in one place.
    """

    def __init__(
        self, session_id: str, restarts: int, window: float, limit: int, child: str
    ) -> None:
        self.session_id = session_id
        self.child = child
        super().__init__(
            f"session {session_id}: {restarts} restarts in {window:.1f} s (limit {limit}); "
            f"last to fail: {child}"
        )


class HiveClosed(HiveError):
    """The Hive was closed; open a new one to go on."""

    def __init__(self) -> None:
        super().__init__("this Hive is closed; create a new Hive to manage sessions")


class RootInUse(HiveError):
    """Another Hive (in this process or another, a daemon's included) manages the root.

    Two would both supervise its sessions and adopt the same agents, so the second is
    refused; nothing was changed on the root.
    """

    def __init__(self, root: object, pid: int | None) -> None:
        self.root = root
        self.pid = pid
        if pid == os.getpid():
            who = "another Hive of this process"
        else:
            who = f"a Hive in process {pid}" if pid else "a Hive in another process"
        super().__init__(
            f"{who} already manages {root}; close it, drive it (a daemon: hivectl or "
            "its HTTP API), or open another root"
        )


class CorruptState(HiveError):
    """Durable state (registry or session.json) that cannot be read back as written.

    Unlike ReadOnlyState, the file itself is damaged; it is reported, never replaced.
    """


class HostUnavailable(HiveError):
    """A cluster host asked for by name (``create_session(host=...)``) that is down or that
    the cluster does not know; nothing was created."""

    def __init__(self, host: str, known: Iterable[tuple[str, bool]]) -> None:
        self.host = host
        alive = sorted(name for name, up in known if up)
        down = sorted(name for name, up in known if not up)
        if host in down:
            state = "is down"
        elif not alive and not down:
            state = "is not a host: this is a plain Hive, not a cluster (ClusterHive)"
        else:
            state = "is not a host of this cluster"
        offer = ", ".join(alive) or "none"
        super().__init__(f"host {host!r} {state}; the hosts alive now: {offer}")


class PortsExhausted(HiveError):
    """A session asked for ports (``ports=N``) and the Hive's ``port_range`` has no N free
    ones together: live sessions hold them, or something else listens on them. Nothing
    was created; one comes free when a session holding ports ends."""

    def __init__(self, wanted: int, low: int, high: int, held: int, listening: int) -> None:
        self.wanted = wanted
        super().__init__(
            f"no {wanted} consecutive free port{'s' if wanted != 1 else ''} in port_range "
            f"{low}-{high}: live sessions hold {held}, other programs listen on {listening}; "
            "wait for sessions to end, ask for fewer, or widen port_range"
        )


class WorkspaceError(HiveError, OSError):
    """The filesystem refused a directory, database or log file (disk full, a read-only
    or missing directory); nothing of what was being created was kept."""

    def __init__(self, path: object, cause: OSError, *, action: str = "create") -> None:
        self.path = path
        super().__init__(f"cannot {action} {path}: {cause.strerror or cause}")


class ReadOnlyState(WorkspaceError):
    """Durable state hive_actors must write (the registry, the root's files) that this
    process may not write: a read-only file system, the file's permissions, or another
    owner. Unlike CorruptState, the file may well be sound; it was left as it was.
    """

    def __init__(
        self, path: object, *, read_only_fs: bool, owner: int, mode: int, uid: int
    ) -> None:
        self.path = path
        if read_only_fs:
            why = "it is on a read-only file system"
            fix = "remount it read-write, or use a root on a writable file system"
        elif owner != uid:
            why = f"it belongs to uid {owner} and this process runs as uid {uid}"
            fix = f"run hive_actors as uid {owner}, or give it to uid {uid} (chown)"
        elif not mode & 0o200:
            why = f"its permissions ({mode:04o}) do not let its owner write it"
            fix = "make it writable by its owner (chmod u+w)"
        else:
            why = f"its owner and permissions ({mode:04o}) allow it, yet writing is refused"
            fix = "look for an immutable attribute (lsattr), an ACL or a security module"
        message = f"cannot write {path}: {why}; {fix}. It was left as it was"
        super(WorkspaceError, self).__init__(message)  # past the "cannot create" of its parent
