"""hive_actors: an OTP-style session supervisor for AI coding agents.

Every agent session gets its own UUID, working directory, SQLite file, output directory
and log; its process is run and watched by a supervision tree of pykka actors, and every
lifecycle change is journaled and announced on a global and a per-session topic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hive_actors.errors import (
    CorruptState,
    HiveClosed,
    HiveError,
    HostUnavailable,
    InvalidCommand,
    InvalidConfig,
    InvalidContext,
    InvalidInput,
    InvalidLimits,
    InvalidMetadata,
    InvalidPriority,
    InvalidRepository,
    InvalidSessionId,
    InvalidTask,
    InvalidTransition,
    PortsExhausted,
    ReadOnlyState,
    RestartIntensityExceeded,
    RootInUse,
    SessionNotFound,
    WorkspaceError,
)

if TYPE_CHECKING:
    from hive_actors._config import DEFAULT_COMMAND, HiveConfig
    from hive_actors._events import EventStream, Subscription
    from hive_actors._git import Changes, Commit, FileChange
    from hive_actors._hive import Hive, HiveStats, SessionContext
    from hive_actors._models import (
        ContextMessageEvent,
        Event,
        EventBase,
        HostDownEvent,
        HostEvent,
        HostInfo,
        HostUpEvent,
        JournalTrimmedEvent,
        Limits,
        SessionCreatedEvent,
        SessionInfo,
        SessionRemovedEvent,
        SessionRestartEvent,
        SessionStatusEvent,
        SessionTerminatedEvent,
        Usage,
        parse_event,
    )
    from hive_actors._pooling import ExecuteResult
    from hive_actors._states import NOT_FOUND, TERMINAL, TRANSITIONS, Status

__version__ = "0.1.0"

# The rest load on first use, so `hivectl` (which imports this package) starts fast.
_LAZY: dict[str, str] = {
    "Changes": "hive_actors._git",
    "Commit": "hive_actors._git",
    "FileChange": "hive_actors._git",
    "ContextMessageEvent": "hive_actors._models",
    "DEFAULT_COMMAND": "hive_actors._config",
    "Event": "hive_actors._models",
    "EventBase": "hive_actors._models",
    "EventStream": "hive_actors._events",
    "ExecuteResult": "hive_actors._pooling",
    "Hive": "hive_actors._hive",
    "HiveConfig": "hive_actors._config",
    "HiveStats": "hive_actors._hive",
    "HostDownEvent": "hive_actors._models",
    "HostEvent": "hive_actors._models",
    "HostInfo": "hive_actors._models",
    "HostUpEvent": "hive_actors._models",
    "JournalTrimmedEvent": "hive_actors._models",
    "Limits": "hive_actors._models",
    "NOT_FOUND": "hive_actors._states",
    "SessionContext": "hive_actors._hive",
    "SessionCreatedEvent": "hive_actors._models",
    "SessionInfo": "hive_actors._models",
    "SessionRemovedEvent": "hive_actors._models",
    "SessionRestartEvent": "hive_actors._models",
    "SessionStatusEvent": "hive_actors._models",
    "SessionTerminatedEvent": "hive_actors._models",
    "Status": "hive_actors._states",
    "Subscription": "hive_actors._events",
    "TERMINAL": "hive_actors._states",
    "TRANSITIONS": "hive_actors._states",
    "Usage": "hive_actors._models",
    "parse_event": "hive_actors._models",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hive_actors' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Changes",
    "Commit",
    "ContextMessageEvent",
    "CorruptState",
    "DEFAULT_COMMAND",
    "Event",
    "EventBase",
    "EventStream",
    "ExecuteResult",
    "FileChange",
    "Hive",
    "HiveClosed",
    "HiveConfig",
    "HiveError",
    "HiveStats",
    "HostDownEvent",
    "HostEvent",
    "HostInfo",
    "HostUnavailable",
    "HostUpEvent",
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
    "JournalTrimmedEvent",
    "Limits",
    "NOT_FOUND",
    "PortsExhausted",
    "ReadOnlyState",
    "RestartIntensityExceeded",
    "RootInUse",
    "SessionContext",
    "SessionCreatedEvent",
    "SessionInfo",
    "SessionNotFound",
    "SessionRemovedEvent",
    "SessionRestartEvent",
    "SessionStatusEvent",
    "SessionTerminatedEvent",
    "Status",
    "Subscription",
    "TERMINAL",
    "TRANSITIONS",
    "Usage",
    "WorkspaceError",
    "__version__",
    "parse_event",
]
