"""Housekeeping: ended sessions removed after the retention period, big logs rotated."""

from __future__ import annotations

from pathlib import Path

import pytest

from hive_actors import HiveConfig, InvalidConfig, JournalTrimmedEvent, _maintenance
from hive_actors.testing import FakeClock, wait_maintenance

from .conftest import Hives, Recorder, chatty_after_a_pass


def test_retention_removes_ended_sessions_on_schedule(
    hives: Hives, clock: FakeClock, recorder: Recorder
) -> None:
    hive = hives.open(clock=clock, retention_hours=1, maintenance_interval=600)
    hive.subscribe_to_all_sessions(recorder)
    done = hive.create_session("old news")
    hive.start_session(done)
    hive.wait(done, timeout=30)
    kept = hive.create_session("never started")
    clock.advance(600)
    wait_maintenance(hive, 1)
    assert hive.status(done) == "completed"  # ended 10 minutes ago: kept
    clock.advance(3000)  # now an hour after it ended
    wait_maintenance(hive, 2)
    assert hive.status(done) == "not_found"
    assert hive.status(kept) == "created"  # only ended sessions are removed
    recorder.wait_for(lambda events: any(e.type == "session.removed" for e in events))


def test_logs_beyond_the_cap_are_rotated_keeping_n(hives: Hives, clock: FakeClock) -> None:
    hive = hives.open(clock=clock, log_max_bytes=1024, log_keep=2, maintenance_interval=5)
    session_id, log = chatty_after_a_pass(hive, clock)
    assert log.stat().st_size == 0
    rotated = Path(f"{log}.1").read_text()
    assert rotated.startswith("line 0:")
    assert "line 99:" in rotated
    for passes in (2, 3):  # grow it again, twice: .1 -> .2, and .2 is the last kept
        log.write_text(rotated)
        clock.advance(5)
        wait_maintenance(hive, passes)
    assert Path(f"{log}.2").exists()
    assert not Path(f"{log}.3").exists()
    hive.terminate_session(session_id, grace=0)
    hive.wait(session_id, timeout=10)
    hive.cleanup(0)
    assert not list(log.parent.glob(log.name + "*"))  # rotated files go with the session


def test_a_task_that_keeps_failing_stops_no_other_housekeeping(
    hives: Hives, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object) -> None:
        raise RuntimeError("a registry whose trimming always fails")

    monkeypatch.setattr(_maintenance, "trim_journal", broken)  # fault injection
    hive = hives.open(clock=clock, log_max_bytes=1024, maintenance_interval=5)
    session_id, log = chatty_after_a_pass(hive, clock)
    assert log.stat().st_size == 0  # rotated all the same
    hive.terminate_session(session_id, grace=0)


def test_removed_sessions_leave_only_their_removal_in_the_journal(
    hives: Hives, clock: FakeClock
) -> None:
    hive = hives.open(clock=clock, maintenance_interval=60)  # no retention set at all
    gone = hive.create_session("removed")
    kept = hive.create_session("kept")
    hive.send_message(gone, "user", "forget me")
    hive.terminate_session(gone)
    seen = hive.last_seq  # a consumer of its topic has seen all of it up to here
    hive.send_message(kept, "user", "meanwhile")  # events of others before its removal
    hive.remove_session(gone)
    before = [e.seq for e in hive.events(kept)]
    clock.advance(60)
    wait_maintenance(hive, 1)

    assert [e.type for e in hive.events() if e.session_id == gone] == ["session.removed"]
    assert [e.seq for e in hive.events(kept)] == before  # untouched, and no journal.trimmed
    trimmed, removal = hive.events(gone)
    assert isinstance(trimmed, JournalTrimmedEvent)
    assert (trimmed.session_id, trimmed.first_seq) == (gone, removal.seq)
    assert trimmed.seq == removal.seq - 1
    assert removal.type == "session.removed"
    # A consumer that had seen all of it before its removal missed nothing: no notice.
    assert [e.type for e in hive.events(gone, since=seen)] == ["session.removed"]


def test_events_older_than_the_journal_retention_are_trimmed(
    hives: Hives, clock: FakeClock
) -> None:
    hive = hives.open(clock=clock, journal_retention_hours=2, maintenance_interval=3600)
    old = hive.create_session("old")
    clock.advance(3600)
    wait_maintenance(hive, 1)  # an hour old: kept
    assert [e.type for e in hive.events(old)] == ["session.created", "session.status"]
    recent = hive.create_session("recent")
    first_recent = hive.last_seq - 1
    clock.advance(2 * 3600)
    wait_maintenance(hive, 2)  # three hours old: trimmed, though its session lives on

    assert hive.status(old) == "created"
    first = next(iter(hive.events(since=0)))
    assert (first.type, first.seq) == ("journal.trimmed", first_recent - 1)
    assert [e.type for e in hive.events(recent)] == ["session.created", "session.status"]
    assert [e.type for e in hive.events(old)] == ["journal.trimmed"]


def test_the_journal_is_kept_as_long_as_sessions_unless_told_otherwise() -> None:
    assert HiveConfig(retention_hours=24).journal_hours == 24
    assert HiveConfig(retention_hours=24, journal_retention_hours=1).journal_hours == 1
    assert HiveConfig().journal_hours is None
    assert HiveConfig.load({"HIVE_JOURNAL_RETENTION_HOURS": "0.5"}).journal_hours == 0.5
    with pytest.raises(InvalidConfig, match="HIVE_JOURNAL_RETENTION_HOURS"):
        HiveConfig.load({"HIVE_JOURNAL_RETENTION_HOURS": "-1"})
