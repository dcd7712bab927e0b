"""Housekeeping: ended sessions removed after the retention period, big logs rotated."""

from __future__ import annotations

from pathlib import Path

from hive_actors.testing import FakeClock, wait_maintenance

from .conftest import Hives, Recorder, eventually

CHATTY = [
    "sh",
    "-c",
    'i=0; while [ $i -lt 100 ]; do echo "line $i: some output of the agent"; i=$((i+1)); done;'
    " exec sleep 3600",
]


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
    session_id = hive.create_session("chatty", command=CHATTY)
    hive.start_session(session_id)
    log = Path(hive.log_file(session_id))
    eventually(lambda: "line 99:" in log.read_text())  # the agent has said its piece
    clock.advance(5)
    wait_maintenance(hive, 1)
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
