"""Group commit: concurrent writes share transactions, yet each succeeds or fails alone,
and events are published in seq order with no gap."""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hive_actors._models import (
    ContextMessageEvent,
    EventBase,
    JournalTrimmedEvent,
    SessionInfo,
    SessionRemovedEvent,
)
from hive_actors._registry import Registry
from hive_actors._states import Status

from .conftest import eventually, in_threads

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


class _Batch:
    """Writes queued behind a held commit, so that the next commit takes them all at once.

    The first write leads a commit and waits for the registry's lock, which the test
    holds; each later one queues behind it, in the order they are added.
    """

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._threads: list[threading.Thread] = []
        self.results: dict[str, Any] = {}

    def add(self, name: str, write: Callable[[], Any]) -> None:
        def run() -> None:
            try:
                self.results[name] = write()
            except Exception as exc:  # asserted by the test
                self.results[name] = exc

        queued = len(self._registry._pending)
        thread = threading.Thread(target=run)
        self._threads.append(thread)
        thread.start()
        if len(self._threads) > 1:  # the first one leads: it is waiting for the lock
            eventually(lambda: len(self._registry._pending) == queued + 1)

    def commit(self) -> None:
        for thread in self._threads:
            thread.join(10)
        assert not any(thread.is_alive() for thread in self._threads)


def _with(info: SessionInfo, status: Status) -> SessionInfo:
    return info.model_copy(update={"status": status})


def _messages(session_id: str, *contents: str) -> list[ContextMessageEvent]:
    return [
        ContextMessageEvent(session_id=session_id, at=AT, role="user", content=content)
        for content in contents
    ]


def test_a_batch_of_writes_commits_each_row_and_journals_each_event_under_its_seq(
    tmp_path: Path,
) -> None:
    published: list[EventBase] = []
    registry = Registry(tmp_path / "registry.db", published.append)
    try:
        for session_id in ("lead", "kept", "gone"):
            registry.insert(_info(session_id), [])
        batch = _Batch(registry)
        with registry._lock:
            batch.add("lead", lambda: registry.append(_messages("lead", "first")))
            batch.add(
                "new",
                lambda: registry.insert(_info("new"), _messages("new", "n1", "n2")),
            )
            batch.add(
                "kept",
                lambda: registry.update(
                    _with(_info("kept"), Status.RUNNING), _messages("kept", "k1")
                ),
            )
            batch.add("gone", lambda: registry.delete("gone", _messages("gone", "g1", "g2")))
            batch.add("note", lambda: registry.append(_messages("kept", "k2")))
            assert len(registry._pending) == 4  # one commit will take these four
        batch.commit()
    finally:
        rows = {info.session_id: info.status for info in registry.sessions()}
        journal = list(registry.events(since=0))
        registry.close()

    assert rows == {"lead": Status.CREATED, "kept": Status.RUNNING, "new": Status.CREATED}
    contents = [(e.seq, e.session_id, e.content) for e in journal]  # type: ignore[union-attr]
    assert contents == [
        (1, "lead", "first"),
        (2, "new", "n1"),
        (3, "new", "n2"),
        (4, "kept", "k1"),
        (5, "gone", "g1"),
        (6, "gone", "g2"),
        (7, "kept", "k2"),
    ]
    assert [(e.seq, e.content) for e in published] == [(s, c) for s, _, c in contents]
    assert [e.seq for e in batch.results["new"]] == [2, 3]
    assert [e.seq for e in batch.results["note"]] == [7]


def test_two_changes_to_one_session_in_a_batch_apply_in_their_order(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry.db", lambda event: None)
    try:
        registry.insert(_info("s"), [])
        batch = _Batch(registry)
        with registry._lock:
            batch.add("lead", lambda: registry.append(_messages("s", "lead")))
            batch.add("run", lambda: registry.update(_with(_info("s"), Status.RUNNING), []))
            batch.add("end", lambda: registry.update(_with(_info("s"), Status.COMPLETED), []))
        batch.commit()
        (info,) = registry.sessions()
    finally:
        registry.close()
    assert info.status is Status.COMPLETED
    assert batch.results["run"] == batch.results["end"] == []


def test_a_failing_write_in_a_batch_fails_alone(tmp_path: Path) -> None:
    published: list[EventBase] = []
    registry = Registry(tmp_path / "registry.db", published.append)
    try:
        registry.insert(_info("taken"), [])
        batch = _Batch(registry)
        with registry._lock:
            batch.add("lead", lambda: registry.append(_messages("taken", "lead")))
            batch.add("ok", lambda: registry.insert(_info("ok"), _messages("ok", "o1")))
            batch.add("dup", lambda: registry.insert(_info("taken"), _messages("taken", "d")))
            batch.add("after", lambda: registry.append(_messages("ok", "o2")))
        batch.commit()
        journal = [(e.seq, e.content) for e in registry.events(since=0)]  # type: ignore[union-attr]
        ids = sorted(info.session_id for info in registry.sessions())
    finally:
        registry.close()
    assert isinstance(batch.results["dup"], sqlite3.IntegrityError)
    assert ids == ["ok", "taken"]
    assert journal == [(1, "lead"), (2, "o1"), (3, "o2")]  # no gap where "d" was refused
    assert [(e.seq, e.content) for e in published] == journal  # type: ignore[attr-defined]


# -- trimming the journal -----------------------------------------------------------------


def _removal(session_id: str) -> SessionRemovedEvent:
    return SessionRemovedEvent(session_id=session_id, at=AT)


def test_seqs_are_never_reused_once_the_whole_journal_is_trimmed(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    registry = Registry(path, lambda event: None)
    try:
        registry.insert(_info("s"), _messages("s", "a", "b", "c"))
        assert registry.trim_older_than(AT + dt.timedelta(seconds=1), 500) == 3
        assert list(registry.events(since=0)) == [
            JournalTrimmedEvent(seq=3, first_seq=4, session_id=None)
        ]
    finally:
        registry.close()
    reopened = Registry(path, lambda event: None)
    try:
        assert reopened.last_seq == 3  # not 0: the journal is empty, not new
        (message,) = reopened.append(_messages("s", "d"))
        assert message.seq == 4
    finally:
        reopened.close()


def test_trimming_goes_in_bounded_batches_and_only_takes_the_oldest(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry.db", lambda event: None)
    later = AT + dt.timedelta(hours=1)
    try:
        registry.insert(_info("gone"), _messages("gone", *map(str, range(250))))
        registry.insert(_info("kept"), _messages("kept", "k1"))
        registry.delete("gone", [_removal("gone")])  # seq 252
        registry.append(
            [ContextMessageEvent(session_id="kept", at=later, role="user", content="k2")]
        )
        batches = []
        while (deleted := registry.compact_removed(window=100, limit=100)) is not None:
            batches.append(deleted)
        assert max(batches) <= 101
        assert sum(batches) == 250
        kept = [(e.seq, e.type, e.session_id) for e in registry.events(since=0, session_id=None)]
        assert kept == [
            (250, "journal.trimmed", None),
            (251, "context.message", "kept"),
            (252, "session.removed", "gone"),
            (253, "context.message", "kept"),
        ]
        # By age: only the prefix older than the cutoff, at most `limit` at a time.
        assert registry.trim_older_than(later, limit=1) == 1
        assert registry.trim_older_than(later, limit=500) == 1
        assert registry.trim_older_than(later, limit=500) == 0
        assert [e.seq for e in registry.events(since=0)] == [252, 253]
    finally:
        registry.close()


def test_the_space_of_trimmed_events_is_given_back(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    registry = Registry(path, lambda event: None)
    try:
        registry.insert(_info("s"), _messages("s", *("x" * 2000 for _ in range(2000))))
        full = _pages(path)
        registry.trim_older_than(AT + dt.timedelta(seconds=1), 5000)
        while registry.reclaim(64):
            pass
        assert _pages(path) < full // 10
    finally:
        registry.close()


def test_a_registry_made_before_trimming_is_rebuilt_once_and_keeps_everything(
    tmp_path: Path,
) -> None:
    path = tmp_path / "registry.db"
    registry = Registry(path, lambda event: None)
    registry.insert(_info("s"), _messages("s", "a", "b"))
    registry.close()
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as old:
        old.execute("PRAGMA auto_vacuum=NONE")  # as every registry was made until now
        old.execute("VACUUM")
        assert old.execute("PRAGMA auto_vacuum").fetchone() == (0,)
    reopened = Registry(path, lambda event: None)
    try:
        assert [info.session_id for info in reopened.sessions()] == ["s"]
        assert [e.content for e in reopened.events(since=0)] == ["a", "b"]  # type: ignore[union-attr]
    finally:
        reopened.close()
    with contextlib.closing(sqlite3.connect(path)) as converted:
        assert converted.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # incremental


def _pages(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        (pages,) = db.execute("PRAGMA page_count").fetchone()
    return int(pages)
