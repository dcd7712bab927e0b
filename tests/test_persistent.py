"""Persistent sessions: pooled reuse by role, idle timeout, maximum lifetime."""

from __future__ import annotations

from hive_actors import Hive
from hive_actors.testing import FakeClock

from .conftest import Hives, Recorder


def test_idle_timeout_completes_an_idle_session(
    hives: Hives, clock: FakeClock, recorder: Recorder
) -> None:
    hive = hives.open(clock=clock, idle_timeout=60)
    session_id = hive.create_session("serve", persistent=True)
    hive.subscribe_to_session(session_id, recorder)
    hive.start_session(session_id)
    assert hive.wait(session_id, timeout=30) == "idle"
    clock.advance(59)
    assert hive.status(session_id) == "idle"
    clock.advance(1)
    recorder.wait_for(lambda events: any(getattr(e, "to", None) == "completed" for e in events))
    info = hive.get_session_info(session_id)
    assert (info.status, info.reason, info.detail) == ("completed", "idle_timeout", "idle for 60 s")


def test_max_lifetime_terminates_a_running_session(hive: Hive, clock: FakeClock) -> None:
    session_id = hive.create_session("forever", args=["--sleep", "inf"], max_lifetime=3600)
    hive.start_session(session_id)
    clock.advance(3599)
    assert hive.status(session_id) == "running"
    clock.advance(1)  # SIGTERM now (the fake agent obeys it)
    assert hive.wait(session_id, timeout=10) == "terminated"
    info = hive.get_session_info(session_id)
    assert (info.reason, info.exit_code) == ("max_lifetime", 143)


def test_max_lifetime_also_ends_sessions_that_never_ran(hive: Hive, clock: FakeClock) -> None:
    session_id = hive.create_session("forgotten", max_lifetime=10)
    clock.advance(10)
    assert hive.wait(session_id, timeout=10) == "terminated"
    assert hive.get_session_info(session_id).reason == "max_lifetime"
