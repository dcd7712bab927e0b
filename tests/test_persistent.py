"""Persistent sessions: pooled reuse by role, idle timeout, maximum lifetime."""

from __future__ import annotations

import json
from pathlib import Path

from hive_actors import Hive
from hive_actors.testing import FakeClock

from .conftest import Hives, Recorder, in_threads


def test_execute_reuses_an_idle_session_of_the_role(hive: Hive) -> None:
    first = hive.execute("write the parser", role="coder")
    assert (first.status, first.exit_code, first.reused) == ("idle", 0, False)
    second = hive.execute("write the tests", role="coder")
    assert (second.session_id, second.reused) == (first.session_id, True)
    other = hive.execute("review", role="reviewer")
    assert other.session_id != first.session_id
    info = hive.get_session_info(first.session_id)
    assert (info.runs, info.task, info.current_task) == (2, "write the parser", "write the tests")
    seen = json.loads(Path(info.output_dir, "env.json").read_text())
    assert seen["HIVE_TASK"] == "write the tests"  # the run's own task, in env and argv
    assert json.loads(seen["argv"])[0] == "write the tests"
    stats = hive.stats()
    assert (stats.executes, round(stats.reuse_rate, 3)) == (3, round(1 / 3, 3))


def test_execute_batch_runs_every_task_in_one_session(hive: Hive) -> None:
    results = hive.execute_batch(["one", "two", "three"], role="batcher")
    assert [r.task for r in results] == ["one", "two", "three"]
    assert len({r.session_id for r in results}) == 1
    assert [r.reused for r in results] == [False, True, True]
    assert hive.get_session_info(results[0].session_id).runs == 3


def test_concurrent_executes_never_share_a_session(hive: Hive) -> None:
    hive.execute("warm up", role="pool")
    results = in_threads(lambda index: hive.execute(f"task {index}", role="pool"), range(4))
    assert len({r.session_id for r in results}) == 4  # no session ran two tasks at once
    assert all(r.status == "idle" for r in results)
    assert sum(r.reused for r in results) >= 1  # the warm session was taken by one of them


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
