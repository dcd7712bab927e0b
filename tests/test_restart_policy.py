"""Agent restart policies: on-failure, always; a limit and exponential backoff."""

from __future__ import annotations

import pytest

from hive_actors import Hive, InvalidCommand
from hive_actors.testing import FakeClock

from .conftest import Recorder


def _restarts(recorder: Recorder) -> list[str]:
    return [
        e.detail or ""
        for e in recorder.events
        if e.type == "session.status" and e.reason == "restart"
    ]


def test_a_crash_loop_backs_off_then_fails(
    hive: Hive, clock: FakeClock, recorder: Recorder
) -> None:
    session_id = hive.create_session(
        "crashes", args=["--exit", "1"], restart="on-failure", restart_limit=3, restart_backoff=1
    )
    hive.subscribe_to_session(session_id, recorder)
    hive.start_session(session_id)
    for attempt, delay in enumerate((1, 2, 4), start=1):
        recorder.wait_for(lambda events, n=attempt: len(_restarts(recorder)) == n)
        assert hive.status(session_id) == "starting"  # waiting out the backoff
        clock.advance(delay - 0.001)
        assert hive.status(session_id) == "starting"  # not a moment early
        clock.advance(0.001)
    assert hive.wait(session_id, timeout=30) == "failed"
    info = hive.get_session_info(session_id)
    assert (info.runs, info.restarts, info.exit_code) == (4, 3, 1)
    assert _restarts(recorder) == [
        "exited with code 1; restart 1 of 3 in 1 s",
        "exited with code 1; restart 2 of 3 in 2 s",
        "exited with code 1; restart 3 of 3 in 4 s",
    ]
    assert recorder.statuses(session_id).count("running") == 4


def test_on_failure_does_not_restart_a_clean_exit(hive: Hive) -> None:
    session_id = hive.create_session("fine", restart="on-failure")
    hive.start_session(session_id)
    assert hive.wait(session_id, timeout=30) == "completed"
    assert hive.get_session_info(session_id).runs == 1


def test_always_restarts_a_clean_exit_up_to_the_limit(
    hive: Hive, clock: FakeClock, recorder: Recorder
) -> None:
    session_id = hive.create_session(
        "again", restart="always", restart_limit=1, restart_backoff=0.5
    )
    hive.subscribe_to_session(session_id, recorder)
    hive.start_session(session_id)
    recorder.wait_for(lambda events: len(_restarts(recorder)) == 1)
    clock.advance(0.5)
    assert hive.wait(session_id, timeout=30) == "completed"
    assert hive.get_session_info(session_id).runs == 2


def test_terminate_during_the_backoff_stops_the_loop(
    hive: Hive, clock: FakeClock, recorder: Recorder
) -> None:
    session_id = hive.create_session("loop", args=["--exit", "2"], restart="on-failure")
    hive.subscribe_to_session(session_id, recorder)
    hive.start_session(session_id)
    recorder.wait_for(lambda events: len(_restarts(recorder)) == 1)
    assert hive.terminate_session(session_id) == "terminated"
    clock.advance(60)  # the cancelled restart never fires
    info = hive.get_session_info(session_id)
    assert (info.status, info.runs) == ("terminated", 1)  # run 2 was never spawned


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"restart": "sometimes"}, "restart policy 'sometimes' is not one of"),
        ({"restart_limit": -1}, "restart_limit must be a whole number"),
        ({"restart_backoff": "1s"}, "restart_backoff must be a number"),
    ],
)
def test_bad_restart_settings_are_refused(hive: Hive, kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidCommand, match=message):
        hive.create_session("t", **kwargs)
    assert hive.list_sessions() == []
