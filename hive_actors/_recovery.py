"""What a Hive does on start with the sessions an earlier Hive on the same root left."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from hive_actors._core import HiveCore
from hive_actors._models import SessionInfo
from hive_actors._states import TERMINAL, Status

log = structlog.get_logger(__name__)

RESUMABLE = frozenset({Status.CREATED, Status.QUEUED, Status.IDLE})


def recover(core: HiveCore, start_child: Callable[[SessionInfo], None]) -> None:
    """Load every session from the registry and give each non-terminal one its supervisor.

    A session left ``starting``, ``running`` or ``stopping`` had its agent run by a Hive
    that ended without recording the outcome; it is marked ``failed``, reason ``lost``,
    and the events say ``recovered``.
    """
    for info in core.registry.sessions():
        core.table.put(info)
    for info in core.table.all():
        if info.status in TERMINAL:
            continue
        if info.status in RESUMABLE:
            start_child(info)
            continue
        detail = (
            f"the hive running this session stopped while it was {info.status}"
            + (f" (agent pid {info.pid})" if info.pid else "")
            + "; its outcome was not recorded"
        )
        log.warning("session lost", session_id=info.session_id, detail=detail)
        core.commit(info, Status.FAILED, reason="lost", detail=detail, pid=None, recovered=True)
