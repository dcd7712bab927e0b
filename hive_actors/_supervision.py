"""What pykka leaves out: links from child to parent, restart intensity, fault injection.

A ``Child`` tells its parent when it dies of an exception (including in ``on_start``, and
including BaseException: see ``_runtime``), so the parent can restart it. Requests from
outside reach a child as ``Call`` messages carrying their own reply future, which lets a
parent forward them without ever waiting on a reply itself.
"""

from __future__ import annotations

import collections
import contextlib
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar

import pykka
from pykka import ThreadingFuture

from hive_actors._clock import Clock
from hive_actors._runtime import ActorPool, PooledActor


@dataclass(frozen=True, slots=True)
class Call:
    """A request for one public method of an actor; the answer goes to ``reply``."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    reply: ThreadingFuture[Any] = field(default_factory=ThreadingFuture)


@dataclass(frozen=True, slots=True)
class ChildFailed:
    """Told to a parent by a child that died of an exception."""

    name: str
    actor_urn: str
    detail: str


@dataclass(frozen=True, slots=True)
class InjectCrash:
    """Fault injection (hive_actors.testing): the receiving actor dies of ``error``."""

    error: BaseException


class Child(PooledActor):
    """An actor with a parent that hears of its death."""

    child_name: ClassVar[str] = "child"

    def __init__(self, pool: ActorPool, parent: pykka.ActorRef[Any]) -> None:
        super().__init__(pool)
        self._parent = parent

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, InjectCrash):
            raise message.error
        return self.handle(message)

    def handle(self, message: Any) -> Any:
        """Handle the actor's own messages; the default refuses them."""
        return super().on_receive(message)

    def tell_parent(self, message: Any) -> None:
        """Tell the parent, which may have stopped meanwhile (its subtree is ending)."""
        with contextlib.suppress(pykka.ActorDeadError):
            self._parent.tell(message)

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        detail = f"{getattr(exception_type, '__name__', 'error')}: {exception_value}"
        if self._parent.is_alive():
            self._parent.tell(ChildFailed(self.child_name, self.actor_urn, detail))


def answer(call: Call, target: object, allowed: frozenset[str]) -> None:
    """Run ``call`` on ``target`` and settle its reply; errors go to the caller only."""
    try:
        if call.method not in allowed:
            msg = f"{type(target).__name__} has no call {call.method!r}"
            raise AttributeError(msg)
        result = getattr(target, call.method)(*call.args, **call.kwargs)
    except Exception:  # noqa: BLE001 - every error belongs to the caller, as with pykka's ask
        call.reply.set_exception()
    else:
        call.reply.set(result)


class RestartIntensity:
    """OTP's restart intensity: at most ``limit`` restarts within ``window`` seconds."""

    def __init__(self, limit: int, window: float, clock: Clock) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._recent: collections.deque[float] = collections.deque()

    def record(self) -> int:
        """Count one more failure; return the failures within the window, this one included."""
        now = self._clock.monotonic()
        self._recent.append(now)
        while self._recent and self._recent[0] <= now - self.window:
            self._recent.popleft()
        return len(self._recent)

    def exceeded(self, failures: int) -> bool:
        return failures > self.limit
