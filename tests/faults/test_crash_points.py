"""kill -9 of the daemon at chosen points inside create, start and terminate.

HIVE_CRASH_AT (see hive_actors._faults) makes the daemon SIGKILL itself at that point; a
second daemon on the same root must then find every session in a state that is true.
"""

from __future__ import annotations

import httpx
import pytest

from hive_actors.testing import session_processes

from ..conftest import Daemon, eventually


def _crashing(daemon: Daemon, point: str) -> None:
    daemon.env["HIVE_CRASH_AT"] = point
    daemon.start()


def _sleeper(http: httpx.Client) -> str:
    """A new session whose agent would run until stopped."""
    reply = http.post("/sessions", json={"task": "t", "args": ["--sleep", "inf"]})
    return str(reply.json()["session_id"])


def _restart(daemon: Daemon) -> None:
    assert daemon.process is not None
    assert daemon.process.wait(30) == -9  # it died where we asked, by SIGKILL
    del daemon.env["HIVE_CRASH_AT"]
    daemon.start()


def test_mid_create_no_session_appears_and_nothing_is_half_registered(daemon: Daemon) -> None:
    _crashing(daemon, "create:workspace")
    with daemon.http() as http, pytest.raises(httpx.TransportError):
        http.post("/sessions", json={"task": "never acknowledged"})
    _restart(daemon)
    with daemon.http() as http:
        assert http.get("/sessions").json()["sessions"] == []
        assert http.get("/health").json()["last_seq"] == 0  # no event of it either
    # The half-made directory is reported at start, not silently adopted or removed.
    assert "no registry row" in (daemon.root / "daemon.log").read_text()


def test_mid_start_before_the_spawn_nothing_runs_and_the_session_is_lost(daemon: Daemon) -> None:
    _crashing(daemon, "start:committed")
    with daemon.http() as http:
        session_id = _sleeper(http)
        with pytest.raises(httpx.TransportError):
            http.post(f"/sessions/{session_id}/start", json={})
    _restart(daemon)
    with daemon.http() as http:
        info = http.get(f"/sessions/{session_id}").json()
    assert (info["status"], info["reason"]) == ("failed", "lost")
    assert session_processes(session_id) == []


def test_mid_start_after_the_spawn_the_unrecorded_agent_is_stopped(daemon: Daemon) -> None:
    _crashing(daemon, "start:spawned")
    with daemon.http() as http:
        session_id = _sleeper(http)
        with pytest.raises(httpx.TransportError):
            http.post(f"/sessions/{session_id}/start", json={})
    eventually(lambda: len(session_processes(session_id)) == 2)  # shim + agent, unrecorded
    _restart(daemon)
    with daemon.http() as http:
        info = http.get(f"/sessions/{session_id}").json()
    assert (info["status"], info["reason"]) == ("failed", "lost")
    assert "never confirmed" in info["detail"]
    eventually(lambda: session_processes(session_id) == [])  # nothing runs twice, or at all


def test_mid_terminate_the_next_daemon_finishes_the_stop(daemon: Daemon) -> None:
    _crashing(daemon, "terminate:committed")
    with daemon.http() as http:
        session_id = _sleeper(http)
        assert http.post(f"/sessions/{session_id}/start", json={}).json()["status"] == "running"
        with pytest.raises(httpx.TransportError):
            http.post(f"/sessions/{session_id}/terminate", json={"grace": 0})
    assert session_processes(session_id)  # the stop was recorded, never sent
    _restart(daemon)
    with daemon.http() as http:
        reply = http.get(f"/sessions/{session_id}/wait", params={"timeout": 30}).json()
        info = http.get(f"/sessions/{session_id}").json()
    assert reply["status"] == "terminated"
    assert (info["reason"], info["exit_code"]) == ("requested", 143)
    eventually(lambda: session_processes(session_id) == [])
