"""What crosses the boundary between a front end, the coordinator and the hosts: plain data.

Sessions and events travel in their JSON form; errors as their class name, message and
attributes, rebuilt on the other side as the same class (an error's constructor takes
facts, not its message, so pickling it would not round-trip).
"""

from __future__ import annotations

import builtins
from typing import Any

from hive_actors import errors
from hive_actors._models import SessionInfo

Reply = tuple[str, Any, int]
"""``("ok", value, seq)`` or ``("error", wired error, seq)``: a host's answer to one call,
with its journal's last seq when it answered (what the cluster journal must have pulled
for a front end to show the call's effect in its events)."""

_PLAIN = (str, int, float, bool, type(None))


def error_to_wire(exc: BaseException) -> dict[str, Any]:
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "attrs": {key: value for key, value in vars(exc).items() if isinstance(value, _PLAIN)},
    }


def error_from_wire(data: dict[str, Any]) -> Exception:
    cls = getattr(errors, data["type"], None) or getattr(builtins, data["type"], None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        cls = errors.HiveError
    exc: Exception = cls.__new__(cls)
    Exception.__init__(exc, data["message"])
    exc.__dict__.update(data["attrs"])
    return exc


def info_to_wire(info: SessionInfo, host: str) -> dict[str, Any]:
    return info.model_copy(update={"host": host}).to_json_dict()


def info_from_wire(data: dict[str, Any]) -> SessionInfo:
    return SessionInfo.model_validate(data)
