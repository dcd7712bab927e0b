"""SessionManager: the root of the tree, one SessionSupervisor per live session (one_for_one).

It starts a supervisor for each new or recovered session and forgets it when the session
ends. A supervisor that dies fails its own session, reason ``supervisor_crash``; no other
session is touched. The manager never waits on a supervisor: it only tells.
"""

from __future__ import annotations

import contextlib
import queue
from typing import Any

import pykka
import structlog

from hive_actors._core import HiveCore
from hive_actors._models import SessionInfo
from hive_actors._runtime import PooledActor
from hive_actors._slots import Granted, Release
from hive_actors._states import TERMINAL, Status
from hive_actors._supervision import Call, ChildFailed, InjectCrash, answer
from hive_actors._supervisor import SessionEnded, SessionSupervisor
from hive_actors.errors import HiveError

log = structlog.get_logger(__name__)


class SessionManager(PooledActor):
    calls = frozenset({"start_child", "which_children"})

    def __init__(self, core: HiveCore) -> None:
        super().__init__(core.pool)
        self._core = core
        self._children: dict[str, pykka.ActorRef[Any]] = {}
        self._by_urn: dict[str, str] = {}

    def on_receive(self, message: Any) -> Any:
        # The root has no supervisor: a failure handling one message is logged, and the
        # manager goes on serving every other session (it must never die of one).
        try:
            return self._dispatch(message)
        except BaseException:  # SystemExit included: see _runtime
            log.exception("session manager: a message failed; carrying on", msg=repr(message))
            if isinstance(message, Call):
                with contextlib.suppress(queue.Full):
                    message.reply.set_exception()
            return None

    def _dispatch(self, message: Any) -> Any:
        match message:
            case InjectCrash(error):
                raise error
            case Call():
                answer(message, self, self.calls)
            case SessionEnded(session_id):
                self._forget(session_id)
                self._release(session_id)
            case Release(session_id):
                self._release(session_id)
            case ChildFailed(_, urn, detail) if urn in self._by_urn:
                self._on_supervisor_failed(self._by_urn[urn], detail)
            case _:
                return super().on_receive(message)
        return None

    def on_stop(self) -> None:
        for ref in self._children.values():
            with contextlib.suppress(pykka.ActorDeadError):
                ref.stop(block=False)

    def start_child(self, info: SessionInfo, *, adopt: bool = False) -> None:
        """Start the supervisor of a registered session; ``adopt`` re-attaches to the
        agent an earlier hive left running.

        Registering is the caller's: every session passes through this one actor, so it
        does only what must be serial (its children, the slots).
        """
        granted = False
        if adopt:
            self._core.slots.hold(info.session_id)
        elif info.status is Status.QUEUED:  # back in the queue before anyone can look
            granted = self._core.slots.acquire(info.session_id, info.priority)
        ref = SessionSupervisor.start(self._core.pool, self.actor_ref, self._core, info, adopt)
        self._children[info.session_id] = ref
        self._by_urn[ref.actor_urn] = info.session_id
        self._core.table.set_supervisor(info.session_id, ref)
        if granted:
            ref.tell(Granted())

    def which_children(self) -> list[str]:
        """The ids of the sessions that have a live supervisor."""
        return list(self._children)

    def _forget(self, session_id: str) -> pykka.ActorRef[Any] | None:
        ref = self._children.pop(session_id, None)
        if ref is not None:
            self._by_urn.pop(ref.actor_urn, None)
            self._core.table.set_supervisor(session_id, None)
        return ref

    def _release(self, session_id: str) -> None:
        pending = self._core.slots.release(session_id)
        while pending:
            next_id = pending.pop(0)
            ref = self._children.get(next_id)
            try:
                if ref is None:
                    raise pykka.ActorDeadError(next_id)
                ref.tell(Granted())
            except pykka.ActorDeadError:  # it ended while queued: pass the slot on
                pending.extend(self._core.slots.release(next_id))

    def _on_supervisor_failed(self, session_id: str, detail: str) -> None:
        self._forget(session_id)
        self._release(session_id)
        info = self._core.table.get(session_id)
        if info is None or info.status in TERMINAL:
            return
        log.error("session supervisor crashed", session_id=session_id, detail=detail)
        try:
            self._core.commit(
                info, Status.FAILED, reason="supervisor_crash", detail=detail, pid=None
            )
        except HiveError as exc:
            # The disk refuses this session's writes (the crash may be that): its callers
            # and waiters still learn it failed; the registry keeps its last state, which
            # the next Hive reconciles (its agent was killed with the supervisor).
            log.error("session failure not recorded", session_id=session_id, error=str(exc))
            self._core.table.put(
                info.model_copy(
                    update={
                        "status": Status.FAILED,
                        "reason": "supervisor_crash",
                        "detail": f"{detail} (not recorded: {exc})",
                        "pid": None,
                    }
                )
            )
