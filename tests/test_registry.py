"""Group commit: concurrent writes share transactions, yet each succeeds or fails alone,
and events are published in seq order with no gap."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from pathlib import Path

import pytest

from hive_actors._models import ContextMessageEvent, EventBase, SessionInfo
from hive_actors._registry import Registry
from hive_actors._states import Status

from .conftest import in_threads

AT = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _info(session_id: str) -> SessionInfo:
    return SessionInfo(
        session_id=session_id,
        task="t",
        priority="medium",
        status=Status.CREATED,
        created=AT,
        updated=AT,
        working_dir="/w",
        output_dir="/o",
        database="/d",
        log_file="/l",
    )


def _message(session_id: str) -> ContextMessageEvent:
    return ContextMessageEvent(session_id=session_id, at=AT, role="user", content="x")


def test_concurrent_writes_fail_alone_and_publish_in_seq_order(tmp_path: Path) -> None:
    published: list[EventBase] = []
    lock = threading.Lock()

    def publish(event: EventBase) -> None:
        with lock:  # called by whichever writer leads a commit
            published.append(event)

    registry = Registry(tmp_path / "registry.db", publish)
    registry.insert(_info("taken"), [_message("taken")])
    refused: list[str] = []

    def writer(index: int) -> None:
        for round_ in range(40):
            session_id = f"s{index}-{round_}"
            registry.insert(_info(session_id), [_message(session_id)])
            registry.append([_message(session_id), _message(session_id)])
            with pytest.raises(sqlite3.IntegrityError):  # a duplicate id: this write only
                registry.insert(_info("taken"), [_message("taken")])
            refused.append(session_id)

    try:
        in_threads(writer, range(16))
        seqs = [event.seq for event in published]
        assert seqs == list(range(1, 1 + 1 + 16 * 40 * 3))  # in order, no gap, no refused
        assert len(refused) == 16 * 40
        assert len(registry.sessions()) == 1 + 16 * 40
        assert registry.last_seq == seqs[-1]
        journal = [event.seq for event in registry.events(since=0)]
        assert journal == seqs
    finally:
        registry.close()


def test_a_committed_hook_runs_before_the_events_are_published(tmp_path: Path) -> None:
    order: list[str] = []
    registry = Registry(tmp_path / "registry.db", lambda event: order.append("published"))
    try:
        registry.insert(_info("a"), [_message("a")], lambda: order.append("committed"))
    finally:
        registry.close()
    assert order == ["committed", "published"]
