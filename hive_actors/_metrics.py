"""Prometheus metrics: counted from the event stream as it is published, read at scrape time.

Counters and histograms are fed synchronously by the bus (an observer, not a subscription:
no thread, no queue, so a scrape after an event reached any subscriber already counts it).
Gauges (sessions by state, queue length, subscribers) are read from the session table
when scraped. Each Hive has its own registry: two hives in one process never mix.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hive_actors._models import (
    EventBase,
    SessionCreatedEvent,
    SessionInfo,
    SessionRestartEvent,
    SessionStatusEvent,
)
from hive_actors._states import TERMINAL, Status

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# From a fast spawn (milliseconds) to a long agent run (an hour and more).
_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


_MEMORY_BUCKETS = tuple(float(2**power) for power in range(20, 37, 2))
"""1 MiB to 64 GiB, by factors of four."""


class Metrics:
    def __init__(
        self,
        sessions: Callable[[], list[SessionInfo]],
        subscribers: Callable[[], int],
        live_agents: Callable[[], int],
    ) -> None:
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()
        self._entered: dict[str, tuple[Status, datetime]] = {}
        self._born: dict[str, datetime] = {}
        self._by_type: dict[type[EventBase], Any] = {}
        self.transitions = PromCounter(
            "hive_transitions",
            "Session status transitions, by the state left and the state entered.",
            ["from_state", "to_state"],
            registry=self.registry,
        )
        self.restarts = PromCounter(
            "hive_restarts",
            "Restarts: of a session's child actor (actor) or of its agent by policy (agent).",
            ["kind"],
            registry=self.registry,
        )
        self.spawn_errors = PromCounter(
            "hive_spawn_errors",
            "Agent processes that could not be started.",
            registry=self.registry,
        )
        self.events = PromCounter(
            "hive_events",
            "Events journaled and published, by type.",
            ["type"],
            registry=self.registry,
        )
        self.state_seconds = Histogram(
            "hive_state_duration_seconds",
            "Time a session spent in a state, observed when it left it.",
            ["state"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.lifetime_seconds = Histogram(
            "hive_session_lifetime_seconds",
            "Time from a session's creation to its end (completed, failed or terminated).",
            ["outcome"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.run_cpu_seconds = Histogram(
            "hive_run_cpu_seconds",
            "CPU time of one agent run, all its processes together (with cgroups).",
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.run_memory_peak = Histogram(
            "hive_run_memory_peak_bytes",
            "The most memory one agent run used at once (with cgroups).",
            buckets=_MEMORY_BUCKETS,
            registry=self.registry,
        )
        self.memory_limit_kills = PromCounter(
            "hive_memory_limit_runs",
            "Runs that failed because their memory limit was reached (reason memory_limit).",
            registry=self.registry,
        )
        self.registry.register(_Gauges(sessions, subscribers, live_agents))

    def observe(self, event: EventBase) -> None:
        """Count one published event; called by the bus for every event, in seq order."""
        kind = type(event)
        counter = self._by_type.get(kind)
        if counter is None:  # a label lookup costs microseconds: once per event type
            counter = self._by_type[kind] = self.events.labels(kind.model_fields["type"].default)
        counter.inc()
        if isinstance(event, SessionRestartEvent):
            self.restarts.labels("actor").inc()
        elif isinstance(event, SessionStatusEvent):
            self._transition(event)
        elif isinstance(event, SessionCreatedEvent):
            with self._lock:
                self._born[event.session_id] = event.at

    def _transition(self, event: SessionStatusEvent) -> None:
        if event.from_ is None:  # the first status of a new session: nothing was left
            with self._lock:
                self._entered[event.session_id] = (event.to, event.at)
            return
        self.transitions.labels(str(event.from_), str(event.to)).inc()
        if event.reason == "restart":
            self.restarts.labels("agent").inc()
        if event.reason == "spawn_error":
            self.spawn_errors.inc()
        elif event.reason == "memory_limit":
            self.memory_limit_kills.inc()
        if event.usage is not None:
            if event.usage.cpu_seconds is not None:
                self.run_cpu_seconds.observe(event.usage.cpu_seconds)
            if event.usage.memory_peak_bytes is not None:
                self.run_memory_peak.observe(event.usage.memory_peak_bytes)
        with self._lock:
            entered = self._entered.get(event.session_id)
            if event.to in TERMINAL:
                self._entered.pop(event.session_id, None)
                born = self._born.pop(event.session_id, None)
            else:
                self._entered[event.session_id] = (event.to, event.at)
                born = None
        if entered is not None and entered[0] == event.from_:
            self.state_seconds.labels(str(event.from_)).observe(_seconds(entered[1], event.at))
        if born is not None:
            self.lifetime_seconds.labels(str(event.to)).observe(_seconds(born, event.at))

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format."""
        return generate_latest(self.registry)


class _Gauges(Collector):
    """Read at scrape time from the session table: always the current truth."""

    def __init__(
        self,
        sessions: Callable[[], list[SessionInfo]],
        subscribers: Callable[[], int],
        live_agents: Callable[[], int],
    ) -> None:
        self._sessions = sessions
        self._subscribers = subscribers
        self._live_agents = live_agents

    def collect(self) -> Iterator[Metric]:
        by_state = Counter(str(info.status) for info in self._sessions())
        sessions = GaugeMetricFamily(
            "hive_sessions", "Sessions known to the hive, by state.", labels=["state"]
        )
        for state in Status:
            sessions.add_metric([str(state)], by_state.get(str(state), 0))
        yield sessions
        yield GaugeMetricFamily(
            "hive_queue_length",
            "Sessions waiting for a running slot (status queued).",
            value=by_state.get(str(Status.QUEUED), 0),
        )
        yield GaugeMetricFamily(
            "hive_event_subscribers",
            "Subscriptions to the event bus (in-process and streaming clients).",
            value=self._subscribers(),
        )
        yield GaugeMetricFamily(
            "hive_live_agents", "Agent processes alive and watched.", value=self._live_agents()
        )


def _seconds(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds())
