"""Topics and subscriptions: how journaled events reach subscribers.

Routing is a blinker signal whose sender is the session id: a per-session subscription
connects for that sender, a global one for ``ANY``. Receivers are strong references (a
closure connected weakly would vanish) and only put the event on their subscription's own
queue, so ``publish`` can neither raise nor block. Each subscription has one delivery thread
that calls the user's callback: a callback that raises is logged and skipped, one that
blocks holds up only its own queue. blinker's connect, disconnect and send are not safe
across threads, so one lock guards all three.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Protocol, TypeVar

import blinker
import structlog

from hive_actors import _validate
from hive_actors._models import Event, EventBase
from hive_actors.errors import InvalidInput

log = structlog.get_logger(__name__)

Callback = Callable[[Event], object]

_STOP = object()
_ids = itertools.count(1)

T = TypeVar("T")


class Journal(Protocol):
    """Where subscribers replay from: a Hive's registry, or a cluster's journal."""

    def attach(self, connect: Callable[[], T]) -> tuple[T, int]:
        """Run ``connect`` between two publications; return it and the last seq before."""
        ...

    def events(
        self, since: int = 0, session_id: str | None = None, until: int | None = None
    ) -> Iterator[Event]:
        """Journaled events with ``since < seq <= until``, oldest first."""
        ...


class EventBus:
    """The global topic and one topic per session."""

    def __init__(self) -> None:
        self._signal = blinker.Signal("hive.events")
        self._lock = threading.Lock()
        self._count = 0
        self._observers: list[Callable[[EventBase], None]] = []

    @property
    def subscriber_count(self) -> int:
        return self._count

    def publish(self, event: EventBase) -> None:
        with self._lock:
            for observer in self._observers:
                observer(event)
            self._signal.send(event.session_id, event=event)

    def observe(self, observer: Callable[[EventBase], None]) -> None:
        """Call ``observer`` with every event, synchronously, before any subscriber gets it.

        For the hive's own bookkeeping (metrics): it must be quick and must not raise.
        """
        with self._lock:
            self._observers.append(observer)

    def connect(self, receiver: Callable[..., None], session_id: str | None) -> None:
        sender = blinker.ANY if session_id is None else session_id
        with self._lock:
            self._signal.connect(receiver, sender=sender, weak=False)
            self._count += 1

    def disconnect(self, receiver: Callable[..., None]) -> None:
        with self._lock:
            if receiver in self._signal.receivers.values():
                self._signal.disconnect(receiver)
                self._count -= 1


class _Feed:
    """A queue fed by the bus, with the seq up to which the journal must be replayed first."""

    def __init__(
        self,
        bus: EventBus,
        registry: Journal,
        session_id: str | None,
        since: int | None,
        put: Callable[[Any], None],
    ) -> None:
        self.session_id = session_id
        self._bus = bus
        self._registry = registry
        self._put = put
        self._since = since
        self._replayed_to = 0
        _, self._replayed_to = registry.attach(lambda: bus.connect(self._receive, session_id))

    def _receive(self, _sender: object, *, event: Event) -> None:
        # Runs under the registry's lock: it must neither block nor raise.
        try:
            self._put(event)
        except Exception:  # e.g. the asyncio loop of an abandoned stream is closed
            log.warning("event feed gone; event dropped for it", exc_info=True)

    def backlog(self) -> Iterator[Event]:
        """The journaled events a late subscriber asked for (none if ``since`` is None)."""
        if self._since is None:
            return iter(())
        return self._registry.events(self._since, self.session_id, until=self._replayed_to)

    def disconnect(self) -> None:
        self._bus.disconnect(self._receive)


class Subscription:
    """A callback receiving events on its own thread; returned by the subscribe calls.

    Pass it to ``Hive.unsubscribe`` (or call ``close``) to stop delivery.
    """

    def __init__(
        self,
        bus: EventBus,
        registry: Journal,
        callback: Callback,
        session_id: str | None,
        since: int | None,
    ) -> None:
        self.id = next(_ids)
        self.callback = callback
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._feed = _Feed(bus, registry, session_id, since, self._queue.put)
        self._closed = threading.Event()
        self._thread = threading.Thread(
            target=self._deliver, name=f"hive-subscriber-{self.id}", daemon=True
        )
        self._thread.start()

    @property
    def session_id(self) -> str | None:
        """The session this subscription follows, or None for every session."""
        return self._feed.session_id

    @property
    def active(self) -> bool:
        return not self._closed.is_set()

    def close(self, timeout: float = 5.0) -> None:
        """Stop delivery; wait up to ``timeout`` s for a callback that is running to return."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._feed.disconnect()
        self._queue.put(_STOP)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("subscriber still busy after close", subscription=self.id)

    def _deliver(self) -> None:
        for event in self._feed.backlog():
            if self._closed.is_set():
                return
            self._call(event)
        while True:
            item = self._queue.get()
            if item is _STOP or self._closed.is_set():
                return
            self._call(item)

    def _call(self, event: Event) -> None:
        try:
            self.callback(event)
        except Exception:
            log.exception(
                "subscriber raised; event skipped for it",
                subscription=self.id,
                seq=event.seq,
                type=event.type,
            )


class EventStream:
    """A blocking iterator over journaled events, then (with ``follow``) live ones.

    Close it (or leave its ``with`` block) to stop following; one dropped without that
    releases its subscription when it is garbage-collected.
    """

    def __init__(
        self,
        bus: EventBus,
        registry: Journal,
        session_id: str | None,
        since: int,
        follow: bool,
        timeout: float | None,
    ) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        feed = _Feed(bus, registry, session_id, since, self._queue.put)
        if not follow:
            feed.disconnect()
        # Neither the bus nor the iterator refers back to this object, so dropping the
        # last reference to it runs this at once.
        self._release = weakref.finalize(self, feed.disconnect)
        self._iterator = _stream(feed, self._queue, follow, timeout)

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        return next(self._iterator)

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._release()
        self._queue.put(_STOP)


def _stream(
    feed: _Feed, live: queue.SimpleQueue[Any], follow: bool, timeout: float | None
) -> Iterator[Event]:
    try:
        yield from feed.backlog()
        while follow:
            try:
                item = live.get(timeout=timeout)
            except queue.Empty:
                return
            if item is _STOP:
                return
            yield item
    finally:  # ended by its timeout, say: nothing may pile up for a reader gone
        feed.disconnect()


async def async_events(
    bus: EventBus,
    registry: Journal,
    session_id: str | None,
    since: int,
    follow: bool,
) -> AsyncIterator[Event]:
    """The async twin of EventStream: the journal is read off the event loop's thread."""
    loop = asyncio.get_running_loop()
    live: asyncio.Queue[Event] = asyncio.Queue()

    def put(event: Event) -> None:
        loop.call_soon_threadsafe(live.put_nowait, event)

    feed = _Feed(bus, registry, session_id, since, put)
    try:
        if not follow:
            feed.disconnect()
        backlog = await asyncio.to_thread(lambda: list(feed.backlog()))
        for event in backlog:
            yield event
        while follow:
            yield await live.get()
    finally:
        feed.disconnect()


class Topics:
    """The event half of the client API, shared by ``Hive`` and ``ClusterHive``: each
    gives its bus and the journal behind it (``_topics``)."""

    _subscriptions: dict[int, Subscription]

    def _topics(self) -> tuple[EventBus, Journal]:
        raise NotImplementedError

    def _check_open(self) -> None:
        raise NotImplementedError

    def subscribe_to_session(
        self, session_id: str, callback: Callable[[Event], object], since: int | None = None
    ) -> Subscription:
        """Call ``callback(event)`` for each event of one session, on a thread of its own.

        With ``since``, journaled events after that seq are delivered first, then live ones,
        with no gap and no duplicate.
        """
        session_id = _validate.session_id(session_id)
        return self._subscribe(callback, session_id, since)

    def subscribe_to_all_sessions(
        self, callback: Callable[[Event], object], since: int | None = None
    ) -> Subscription:
        """Call ``callback(event)`` for every event of every session (the global topic)."""
        return self._subscribe(callback, None, since)

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop a subscription; waits briefly for a callback that is running to return."""
        self._subscriptions.pop(subscription.id, None)
        subscription.close()

    def events(
        self,
        session_id: str | None = None,
        since: int | None = None,
        *,
        follow: bool = False,
        timeout: float | None = None,
    ) -> EventStream:
        """Journaled events after ``since`` (default: all), oldest first, as an iterator.

        With ``follow`` it goes on with live events until closed, or until ``timeout``
        seconds pass without one. If the journal no longer has some of the events asked
        for, a JournalTrimmedEvent comes first, and the events go on from its
        ``first_seq``.
        """
        self._check_open()
        return EventStream(
            *self._topics(),
            None if session_id is None else _validate.session_id(session_id),
            _since(since),
            follow,
            timeout,
        )

    def aevents(
        self, session_id: str | None = None, since: int | None = None, *, follow: bool = False
    ) -> AsyncIterator[Event]:
        """The async twin of ``events``: ``async for event in hive.aevents(...)``."""
        self._check_open()
        return async_events(
            *self._topics(),
            None if session_id is None else _validate.session_id(session_id),
            _since(since),
            follow,
        )

    def _subscribe(
        self, callback: Callable[[Event], object], session_id: str | None, since: int | None
    ) -> Subscription:
        self._check_open()
        if not callable(callback):
            raise InvalidInput(f"callback must be callable, not {callback!r}")
        subscription = Subscription(
            *self._topics(),
            callback,
            session_id,
            None if since is None else _since(since),
        )
        self._subscriptions[subscription.id] = subscription
        return subscription


def _since(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"since must be an event seq (an integer >= 0), not {value!r}")
    return value
