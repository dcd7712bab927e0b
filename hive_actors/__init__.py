"""hive_actors: an OTP-style session supervisor for AI coding agents.

Every agent session gets its own UUID, working directory, SQLite file, output directory
and log; its process is run and watched by a supervision tree of pykka actors, and every
lifecycle change is journaled and announced on a global and a per-session topic.
"""

from hive_actors._config import DEFAULT_COMMAND, HiveConfig
from hive_actors._events import EventStream, Subscription
from hive_actors._hive import Hive, HiveStats, SessionContext
from hive_actors._models import (
    ContextMessageEvent,
    Event,
    EventBase,
    SessionCreatedEvent,
    SessionInfo,
    SessionRemovedEvent,
    SessionRestartEvent,
    SessionStatusEvent,
    SessionTerminatedEvent,
    parse_event,
)
from hive_actors._states import NOT_FOUND, TERMINAL, TRANSITIONS, Status
from hive_actors.errors import (
    CorruptState,
    HiveClosed,
    HiveError,
    InvalidCommand,
    InvalidConfig,
    InvalidContext,
    InvalidInput,
    InvalidMetadata,
    InvalidPriority,
    InvalidSessionId,
    InvalidTask,
    InvalidTransition,
    RestartIntensityExceeded,
    SessionNotFound,
)

__version__ = "0.1.0"

__all__ = [
    "ContextMessageEvent",
    "CorruptState",
    "DEFAULT_COMMAND",
    "Event",
    "EventBase",
    "EventStream",
    "Hive",
    "HiveClosed",
    "HiveConfig",
    "HiveError",
    "HiveStats",
    "InvalidCommand",
    "InvalidConfig",
    "InvalidContext",
    "InvalidInput",
    "InvalidMetadata",
    "InvalidPriority",
    "InvalidSessionId",
    "InvalidTask",
    "InvalidTransition",
    "NOT_FOUND",
    "RestartIntensityExceeded",
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
    "__version__",
    "parse_event",
]
