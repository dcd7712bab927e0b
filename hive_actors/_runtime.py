"""A pooled pykka runtime: many actors, few threads.

pykka's ``ThreadingActor`` gives every actor a thread (~24 KiB RSS and a pid each); a hive
of thousands of sessions, each with three actors, cannot afford that. pykka's ``Actor`` is
runtime-agnostic (the subclass supplies inbox, future and loop), so ``PooledActor`` keeps
pykka's refs, futures, proxies and registry and runs each actor's messages in turns on a
small shared ``ActorPool``: an actor is scheduled when its mailbox goes from empty to
non-empty, and one actor's messages are never handled by two workers at once.

Two of pykka's failure behaviours are changed on purpose:

* an exception in ``on_start`` calls ``on_failure`` (pykka stops the actor silently), so a
  supervisor always hears of a child that failed to start;
* a ``BaseException`` (SystemExit, KeyboardInterrupt) in a handler fails that one actor
  (pykka calls ``ActorRegistry.stop_all()``, which would stop every session in the process).

Handlers must never block on a future: with few workers, an actor waiting for another
actor's reply can starve the pool. Actors talk with ``tell``; replies travel as messages or
as futures that outside (non-pool) threads wait on.
"""

from __future__ import annotations

import collections
import contextlib
import queue
import sys
import threading
from types import TracebackType
from typing import Any

import pykka
import structlog
from pykka import ActorDeadError, ActorRegistry, ThreadingFuture
from pykka._envelope import Envelope

log = structlog.get_logger(__name__)

_TURN = 64
"""Messages one actor may handle before yielding its worker to others."""

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


class ActorPool:
    """A fixed set of worker threads that run ready actors' turns."""

    def __init__(self, workers: int = 8, name: str = "hive-actor") -> None:
        self._ready: collections.deque[PooledActor] = collections.deque()
        self._wakeup = threading.Condition(threading.Lock())
        self._closed = False
        self._live = 0
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{index}", daemon=True)
            for index in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def thread_count(self) -> int:
        return len(self._threads)

    @property
    def live_actors(self) -> int:
        return self._live

    def attach(self) -> None:
        with self._wakeup:
            self._live += 1

    def detach(self) -> None:
        with self._wakeup:
            self._live -= 1
            if self._live == 0:
                self._wakeup.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every actor of this pool has stopped; False on timeout."""
        with self._wakeup:
            return self._wakeup.wait_for(lambda: self._live == 0, timeout)

    def schedule(self, actor: PooledActor) -> None:
        with self._wakeup:
            self._ready.append(actor)
            self._wakeup.notify()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the workers once the turns already scheduled are done."""
        with self._wakeup:
            self._closed = True
            self._wakeup.notify_all()
        current = threading.current_thread()
        for thread in self._threads:
            if thread is not current:
                thread.join(timeout)

    def _work(self) -> None:
        while True:
            with self._wakeup:
                while not self._ready and not self._closed:
                    self._wakeup.wait()
                if not self._ready:
                    return
                actor = self._ready.popleft()
            actor._run_turn()


class _Mailbox:
    """An actor inbox that asks the pool for a turn when it stops being empty."""

    __slots__ = ("_actor", "_closed", "_items", "_lock", "_scheduled")

    def __init__(self) -> None:
        self._items: collections.deque[Envelope[Any]] = collections.deque()
        self._lock = threading.Lock()
        self._actor: PooledActor | None = None
        self._scheduled = True  # until start(): messages wait for on_start
        self._closed = False

    def bind(self, actor: PooledActor) -> None:
        self._actor = actor

    def start(self) -> None:
        assert self._actor is not None
        self._actor._pool.schedule(self._actor)

    def put(self, envelope: Envelope[Any], /) -> None:
        with self._lock:
            closed = self._closed
            if not closed:
                self._items.append(envelope)
                wake = not self._scheduled
                self._scheduled = True
        if closed:
            _reject(envelope, self._actor)
        elif wake:
            assert self._actor is not None
            self._actor._pool.schedule(self._actor)

    def get(self) -> Envelope[Any]:
        with self._lock:
            return self._items.popleft()

    def pop(self) -> Envelope[Any] | None:
        with self._lock:
            return self._items.popleft() if self._items else None

    def empty(self) -> bool:
        with self._lock:
            return not self._items

    def end_turn(self) -> bool:
        """Release the turn; True if messages arrived meanwhile and the actor must go again."""
        with self._lock:
            if self._items and not self._closed:
                return True
            self._scheduled = False
            return False

    def close(self) -> list[Envelope[Any]]:
        with self._lock:
            self._closed = True
            left = list(self._items)
            self._items.clear()
            return left


class NotHandled(ActorDeadError):
    """The actor stopped before it handled the message: sending it again is safe."""


def _reject(envelope: Envelope[Any], actor: object) -> None:
    _settle(envelope, NotHandled(f"{actor} stopped before handling the message"))


def _settle(envelope: Envelope[Any], error: ActorDeadError) -> None:
    """Fail whoever waits on a message that will get no answer.

    Besides pykka's ``ask`` futures, a told message may carry its own ``reply`` future
    (see ``_supervision.Call``): its caller must not wait forever either.
    """
    for reply in (envelope.reply_to, getattr(envelope.message, "reply", None)):
        if isinstance(reply, pykka.Future):
            with contextlib.suppress(queue.Full):  # already settled
                reply.set_exception((type(error), error, None))


class PooledActor(pykka.Actor):
    """A pykka actor whose turns run on an ActorPool instead of a thread of its own."""

    _pool: ActorPool

    def __init__(self, pool: ActorPool) -> None:
        super().__init__()
        self._pool = pool
        pool.attach()
        self._mailbox: _Mailbox = self.actor_inbox  # type: ignore[assignment]
        self._mailbox.bind(self)
        self._started = False
        self._detached = False

    @staticmethod
    def _create_actor_inbox() -> _Mailbox:
        return _Mailbox()

    @staticmethod
    def _create_future() -> ThreadingFuture[Any]:
        return ThreadingFuture()

    def _start_actor_loop(self) -> None:
        self._mailbox.start()

    def _run_turn(self) -> None:
        if not self._started:
            self._started = True
            try:
                self.on_start()
            except BaseException:  # noqa: BLE001 - any failure ends only this actor
                self._die(_exc_info())
                return
        for _ in range(_TURN):
            if self.actor_stopped.is_set():
                break
            envelope = self._mailbox.pop()
            if envelope is None:
                break
            self._handle(envelope)
        if self.actor_stopped.is_set():
            self._close_mailbox()
            return
        if self._mailbox.end_turn():
            self._pool.schedule(self)

    def _handle(self, envelope: Envelope[Any]) -> None:
        try:
            response = self._handle_receive(envelope.message)
        except Exception:  # noqa: BLE001 - any handler error is the caller's or the actor's
            if envelope.reply_to is not None:
                envelope.reply_to.set_exception()  # the caller's error, as in pykka
            else:
                self._die(_exc_info())
        except BaseException as exc:  # noqa: BLE001 - never let it reach stop_all()
            _settle(envelope, ActorDeadError(f"{self} died of {exc!r}"))
            self._die(_exc_info())
        else:
            if envelope.reply_to is not None:
                envelope.reply_to.set(response)

    def _die(self, exc_info: ExcInfo) -> None:
        log.error("actor failed", actor=str(self), exc_info=exc_info)
        ActorRegistry.unregister(self.actor_ref)
        self.actor_stopped.set()
        try:
            self.on_failure(*exc_info)
        except BaseException:
            log.exception("on_failure failed", actor=str(self))
        self._close_mailbox()

    def _close_mailbox(self) -> None:
        if self._detached:
            return
        self._detached = True
        for envelope in self._mailbox.close():
            _reject(envelope, self)
        self._pool.detach()


def _exc_info() -> ExcInfo:
    exc_type, exc_value, traceback = sys.exc_info()
    assert exc_type is not None
    assert exc_value is not None
    return exc_type, exc_value, traceback
