"""Checks on everything a caller hands us, run before anything is created or changed."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Literal, get_args

from pydantic_core import ErrorDetails

from hive_actors._models import Limits
from hive_actors._states import Status
from hive_actors.errors import (
    InvalidCommand,
    InvalidConfig,
    InvalidInput,
    InvalidLimits,
    InvalidMetadata,
    InvalidPriority,
    InvalidRepository,
    InvalidSessionId,
    InvalidTask,
)

Priority = Literal["high", "medium", "low"]
PRIORITIES: tuple[str, ...] = get_args(Priority)

MAX_TASK_BYTES = 64 * 1024
"""Below Linux's 128 KiB limit for one argv element or environment string."""
MAX_METADATA_BYTES = 64 * 1024
MAX_ARG_BYTES = 64 * 1024
MAX_JSON_DEPTH = 32
"""How deep a caller's free JSON (metadata, file index info) may nest objects and lists."""
MAX_ROLE_CHARS = 128

_SESSION_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_ENV = frozenset(
    {
        "HIVE_SESSION_ID",
        "HIVE_SESSION_DIR",
        "HIVE_OUTPUT_DIR",
        "HIVE_TASK",
        "HIVE_DB",
        "HIVE_PORT",
        "HIVE_PORTS",
    }
)


def session_id(value: object) -> str:
    """Return the canonical (lower-case) form of a session id, or raise InvalidSessionId.

    Only the 36-character hyphenated UUID form is accepted, so no id can ever name a path.
    """
    if not isinstance(value, str):
        raise InvalidSessionId(value)
    lowered = value.lower()
    if not _SESSION_ID.match(lowered):
        raise InvalidSessionId(value)
    return lowered


def new_session_id() -> str:
    return str(uuid.uuid4())


def _utf8_size(text: str, what: str, error: type[Exception]) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise error(f"{what} is not valid UTF-8 text ({exc.reason})") from None


def _argv_string(value: object, what: str, limit: int, error: type[Exception]) -> str:
    if not isinstance(value, str):
        raise error(f"{what} must be a string, not {type(value).__name__}")
    if "\x00" in value:
        raise error(f"{what} holds a NUL byte, which no program argument can carry")
    size = _utf8_size(value, what, error)
    if size > limit:
        raise error(f"{what} is {size} bytes; at most {limit} bytes are accepted")
    return value


def task(value: object) -> str:
    text = _argv_string(value, "task", MAX_TASK_BYTES, InvalidTask)
    if not text.strip():
        raise InvalidTask("task is empty; describe the work for the agent in a non-empty string")
    return text


def priority(value: object) -> Priority:
    if value not in PRIORITIES:
        raise InvalidPriority(value, PRIORITIES)
    return value  # type: ignore[return-value]


def metadata(value: object) -> dict[str, Any]:
    """Accept None (no metadata) or a JSON object of at most 64 KiB, encoded."""
    if value is None:
        return {}
    return json_object(value, "metadata", MAX_METADATA_BYTES, InvalidMetadata)


def json_object(value: object, what: str, limit: int, error: type[Exception]) -> dict[str, Any]:
    """A caller's free JSON object, checked and copied: at most ``limit`` bytes encoded and
    ``MAX_JSON_DEPTH`` levels deep.

    The depth is checked first, without recursion: a deeper value would exhaust the
    encoder's recursion (or pydantic's serialisation limit) when it is written or answered.
    """
    if not isinstance(value, Mapping):
        raise error(f"{what} must be a JSON object (a dict), not {type(value).__name__}")
    shape = _shape(value, MAX_JSON_DEPTH, limit // 2)
    if shape == "deep":
        raise error(
            f"{what} nests objects and lists more than {MAX_JSON_DEPTH} levels deep; "
            f"at most {MAX_JSON_DEPTH} levels are accepted"
        )
    if shape == "large":
        raise error(f"{what} holds too many objects and lists for {limit} bytes as JSON")
    try:
        encoded = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise error(f"{what} is not JSON-serialisable: {exc}") from None
    size = _utf8_size(encoded, what, error)
    if size > limit:
        raise error(f"{what} is {size} bytes as JSON; at most {limit} bytes are accepted")
    decoded: dict[str, Any] = json.loads(encoded)
    return decoded


def _shape(value: object, depth: int, containers: int) -> Literal["ok", "deep", "large"]:
    """Whether ``value`` nests dicts and lists more than ``depth`` levels deep, or holds
    more than ``containers`` of them (each takes 2 bytes of JSON at least), looked at one
    level at a time: a Python value may share one list many times over."""
    level: list[Mapping[Any, object] | list[object] | tuple[object, ...]] = []
    if isinstance(value, (Mapping, list, tuple)):
        level.append(value)
    seen = len(level)
    for _depth in range(depth):
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, Mapping) else node)
            if isinstance(child, (Mapping, list, tuple))
        ]
        seen += len(level)
        if seen > containers:
            return "large"
        if not level:
            return "ok"
    return "deep"


def metadata_json(text: str) -> dict[str, Any]:
    """Parse metadata given as JSON text (the CLI's and the seeds' form)."""
    if text.strip() in ("", "null"):
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidMetadata(
            f"metadata is not valid JSON ({exc}); give a JSON object, "
            'e.g. \'{"team": "search"}\', or null for none'
        ) from None
    except RecursionError:
        raise InvalidMetadata(
            f"metadata nests objects and lists too deeply to parse; "
            f"at most {MAX_JSON_DEPTH} levels are accepted"
        ) from None
    return metadata(value)


def command(value: object, name: str = "command") -> tuple[str, ...]:
    """An agent command template: a non-empty list of non-empty strings, never a shell line."""
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise InvalidCommand(
            f"{name} must be a non-empty list of strings such as "
            f'["claude-flow", "hive-mind", "spawn", "{{task}}"], not {value!r}'
        )
    items = tuple(value)
    if not items:
        raise InvalidCommand(f"{name} is empty; give at least the program to run")
    for index, item in enumerate(items):
        _argv_string(item, f"{name}[{index}]", MAX_ARG_BYTES, InvalidCommand)
    if not items[0]:
        raise InvalidCommand(f"{name}[0] is empty; it must name the program to run")
    return items


def setup(value: object) -> tuple[str, ...]:
    """A setup step: a list of strings (argv, never a shell line); empty for none."""
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise InvalidCommand(
            f'setup must be a list of strings such as ["npm", "ci"] (or [] for none), not {value!r}'
        )
    items = tuple(
        _argv_string(item, f"setup[{index}]", MAX_ARG_BYTES, InvalidCommand)
        for index, item in enumerate(value)
    )
    if items and not items[0]:
        raise InvalidCommand("setup[0] is empty; it must name the program to run")
    return items


def resume_command(value: object) -> tuple[str, ...]:
    """A resume command template: like ``command``, or empty for none."""
    if isinstance(value, list | tuple) and not value:
        return ()
    return command(value, "resume_command")


STALL_ACTIONS: tuple[str, ...] = ("none", "terminate", "restart")


def stall_action(value: object, default: str) -> str:
    if value is None:
        return default
    if value not in STALL_ACTIONS:
        raise InvalidCommand(f"stall_action {value!r} is not one of {', '.join(STALL_ACTIONS)}")
    return str(value)


_BRANCH_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|/\.|\.lock/")


def branch_prefix(value: object) -> str:
    """The start of a session branch's name: what git accepts in a branch name."""
    if (
        not isinstance(value, str)
        or _BRANCH_FORBIDDEN.search(value)
        or value.startswith(("-", "/", "."))
    ):
        raise InvalidConfig(
            f"branch_prefix {value!r} cannot start a git branch name: no spaces, control "
            "characters, ~ ^ : ? * [ \\, '..', '@{', '//', and not starting with - / or ."
        )
    return value


def port_range(value: object) -> tuple[int, int]:
    """``"LOW-HIGH"``, TCP ports from 1 to 65535, LOW <= HIGH."""
    match = (
        re.fullmatch(r"\s*(\d{1,5})\s*-\s*(\d{1,5})\s*", value) if isinstance(value, str) else None
    )
    low, high = (int(match[1]), int(match[2])) if match else (0, 0)
    if not 1 <= low <= high <= 65535:
        raise InvalidConfig(
            f'port_range must be "LOW-HIGH" with 1 <= LOW <= HIGH <= 65535, such as '
            f'"20000-29999", not {value!r}'
        )
    return low, high


def ports(value: object, default: int) -> int:
    if value is None:
        return default
    return int(bounded(value, "ports", 0, 1000, True))


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
MIN_MEMORY = 1024**2
"""Below a MiB not even the shim could run."""
MAX_MEMORY = 1024**5
"""A PiB (1024T): far past any machine, and below where the kernel's counters wrap."""
MAX_PIDS = 4_194_304
"""The kernel's own ceiling on pids (``pid_max``)."""
LIMIT_NAMES = tuple(Limits.model_fields)


def memory(value: object, name: str = "memory") -> int | None:
    """Bytes, given as a whole number or as a number with a binary suffix (``512M``,
    ``2G``; 1K = 1024)."""
    if value is None:
        return None
    size: float | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        size = float(match[1]) * _UNITS[match[2].upper()]
    if size is None or not MIN_MEMORY <= size <= MAX_MEMORY:
        raise InvalidLimits(
            f"{name} must be bytes or a number with a binary suffix K, M, G or T "
            f"(such as 536870912, 512M or 2G; 1K = 1024), from 1M to 1024T, not {value!r}"
        )
    return int(size)


def pids(value: object, name: str = "pids") -> int | None:
    """A number of processes (threads count too): a whole number >= 1."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PIDS:
        raise InvalidLimits(f"{name} must be a whole number from 1 to {MAX_PIDS}, not {value!r}")
    return value


def cpus(value: object, name: str = "cpus") -> float | None:
    """A number of cores > 0 (at least 0.01: a quota of 1 ms per 100 ms period)."""
    if value is None:
        return None
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0.01 <= value <= 4096
    ):
        raise InvalidLimits(
            f"{name} must be a number of cores from 0.01 to 4096 (such as 0.5 or 2), not {value!r}"
        )
    return float(value)


def limits(value: object) -> Limits:
    """``{"memory": "2G", "pids": 512, "cpus": 1.5}``, any of them, as ``Limits``."""
    if value is None:
        return Limits()
    if isinstance(value, Limits):
        return value
    if not isinstance(value, Mapping):
        raise InvalidLimits(
            f'limits must be an object such as {{"memory": "2G", "pids": 512, "cpus": 1.5}}, '
            f"not {value!r}"
        )
    unknown = sorted(str(key) for key in value if key not in LIMIT_NAMES)
    if unknown:
        raise InvalidLimits(
            f"unknown limit {', '.join(map(repr, unknown))}; known: {', '.join(LIMIT_NAMES)}"
        )
    return Limits(
        memory=memory(value.get("memory")),
        pids=pids(value.get("pids")),
        cpus=cpus(value.get("cpus")),
    )


def repo(value: object) -> str | None:
    """A repository's path, made absolute (against this process's working dir)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or "\x00" in value:
        raise InvalidRepository(f"repo must be a path to a git repository, not {value!r}")
    return os.path.abspath(os.path.expanduser(value))


def ref(value: object, repository: str | None) -> str | None:
    if value is None:
        return None
    if repository is None:
        raise InvalidRepository("ref names a commit of a repository: give repo too")
    if not isinstance(value, str) or not value.strip() or "\x00" in value or value[0] == "-":
        raise InvalidRepository(
            f"ref must name a branch, tag or commit (such as main, v1.2 or a sha), not {value!r}"
        )
    return value


def args(value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise InvalidCommand(f"args must be a list of strings, not {value!r}")
    return tuple(
        _argv_string(item, f"args[{index}]", MAX_ARG_BYTES, InvalidCommand)
        for index, item in enumerate(value)
    )


def env(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        # Its type only: the value may hold the very credentials env is for.
        raise InvalidCommand(
            f"env must be a mapping of names to strings, not a {type(value).__name__}"
        )
    result: dict[str, str] = {}
    for name, text in value.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise InvalidCommand(
                f"env name {name!r} is not a valid identifier (letters, digits, _; "
                "not starting with a digit)"
            )
        if name in RESERVED_ENV:
            raise InvalidCommand(f"env name {name} is set by hive_actors for every session")
        result[name] = _argv_string(text, f"env[{name}]", MAX_ARG_BYTES, InvalidCommand)
    return result


RestartPolicy = Literal["never", "on-failure", "always"]
RESTART_POLICIES: tuple[str, ...] = get_args(RestartPolicy)
MAX_BACKOFF = 300.0
"""The longest wait before an agent restart, however many came before."""


def restart_policy(value: object) -> RestartPolicy:
    if value not in RESTART_POLICIES:
        raise InvalidCommand(
            f"restart policy {value!r} is not one of {', '.join(RESTART_POLICIES)}"
        )
    return value  # type: ignore[return-value]


def bounded(value: object, name: str, low: float, high: float, integer: bool = False) -> float:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        kind = "a whole number" if integer else "a number"
        raise InvalidCommand(f"{name} must be {kind} from {low:g} to {high:g}, not {value!r}")
    return value


def role(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ROLE_CHARS:
        raise InvalidCommand(
            f"role must be a non-empty string of at most {MAX_ROLE_CHARS} characters, not {value!r}"
        )
    return value


def pydantic_problem(error: ErrorDetails) -> str:
    """A pydantic error's message as our own: the reason a validator gave, without the
    "Value error, " that pydantic puts before it."""
    reason = error.get("ctx", {}).get("error")
    if isinstance(reason, ValueError):
        return str(reason)
    return error["msg"]


def max_age_hours(value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (value >= 0 and math.isfinite(value))
    ):
        raise InvalidInput(f"max_age_hours must be a number >= 0, not {value!r}")
    return value


def status_filter(value: object) -> str | None:
    """A status to list sessions by (``list_sessions(status=...)``), or None for all."""
    if value is None:
        return None
    if value not in Status.__members__.values():
        raise InvalidInput(f"status {value!r} is not one of {', '.join(s.value for s in Status)}")
    return str(value)


def wait_timeout(value: float | None) -> float | None:
    if value is not None and not (value >= 0 and math.isfinite(value)):
        raise InvalidInput(f"timeout must be a non-negative number of seconds, not {value}")
    return value


def grace(value: object) -> float:
    """A grace period given to a stop or a close (seconds before SIGKILL)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (0 <= value <= 3600 and math.isfinite(value))
    ):
        raise InvalidConfig(f"grace must be a number of seconds from 0 to 3600, not {value!r}")
    return float(value)
