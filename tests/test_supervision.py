"""Faults inside one session's subtree are handled there and nowhere else."""

from __future__ import annotations

import os
import signal

import pykka
import pytest

from hive_actors import Hive
from hive_actors.testing import FakeClock, inject_crash, session_processes

from .conftest import Recorder, eventually, process_alive


@pytest.fixture
def two_running(hive: Hive, ready) -> tuple[str, str, int]:
    """A victim and a bystander session, both with a live agent; returns the victim's pid."""
    victim_ready, bystander_ready = ready(), ready()
    victim = hive.create_session(
        "victim", args=["--sleep", "inf", "--ready", str(victim_ready.path)]
    )
    bystander = hive.create_session(
        "bystander", args=["--sleep", "inf", "--ready", str(bystander_ready.path)]
    )
    hive.start_session(victim)
    hive.start_session(bystander)
    pid = victim_ready.wait()["pid"]
    bystander_ready.wait()
    return victim, bystander, pid


def test_context_manager_crash_is_restarted_with_its_history(
    hive: Hive, two_running: tuple[str, str, int], recorder: Recorder
) -> None:
    victim, bystander, pid = two_running
    hive.subscribe_to_all_sessions(recorder, since=0)
    context = hive.context(victim)
    context.add_message("user", "remember me")
    context.add_file("src/main.rs")

    inject_crash(hive, victim, "context")

    assert context.history()[0]["content"] == "remember me"  # reloaded from memory.db
    assert context.active_files() == ["src/main.rs"]
    info = hive.get_session_info(victim)
    assert (info.status, info.restarts) == ("running", 1)
    assert process_alive(pid)
    recorder.wait_for(lambda events: any(e.type == "session.restart" for e in events))
    restarts = [e for e in recorder.events if e.type == "session.restart"]
    assert [(e.session_id, e.child) for e in restarts] == [(victim, "context")]
    assert hive.get_session_info(bystander).restarts == 0


def test_process_runner_crash_reattaches_to_the_running_agent(
    hive: Hive, two_running: tuple[str, str, int]
) -> None:
    victim, bystander, pid = two_running
    inject_crash(hive, victim, "runner")
    assert process_alive(pid)
    assert hive.get_session_info(victim).restarts == 1
    assert hive.status(victim) == "running"
    # The new runner can still stop the agent its predecessor started.
    hive.terminate_session(victim, grace=0)
    assert hive.wait(victim, timeout=10) == "terminated"
    assert not session_processes(victim)
    assert hive.status(bystander) == "running"
    assert hive.get_session_info(bystander).restarts == 0


def test_base_exception_in_an_actor_stops_only_that_actor(
    hive: Hive, two_running: tuple[str, str, int]
) -> None:
    victim, bystander, pid = two_running
    actors_before = len(pykka.ActorRegistry.get_all())
    inject_crash(hive, victim, "runner", SystemExit(1))
    inject_crash(hive, victim, "context", KeyboardInterrupt())
    # pykka would have called ActorRegistry.stop_all(): every session would be gone.
    assert len(pykka.ActorRegistry.get_all()) == actors_before
    assert hive.status(victim) == hive.status(bystander) == "running"
    assert hive.get_session_info(victim).restarts == 2
    assert process_alive(pid)
    hive.send_message(bystander, "user", "still here")


def test_restart_intensity_exceeded_fails_only_that_session(
    hive: Hive, two_running: tuple[str, str, int], clock: FakeClock
) -> None:
    victim, bystander, pid = two_running
    for _ in range(3):
        inject_crash(hive, victim, "context")
    assert hive.status(victim) == "running"
    inject_crash(hive, victim, "context")  # the 4th within 5 s
    clock.advance(5)  # its agent is stopped with the grace period; let it pass
    assert hive.wait(victim, timeout=10) == "failed"
    info = hive.get_session_info(victim)
    assert info.reason == "restart_intensity"
    assert "4 restarts in 5.0 s (limit 3)" in (info.detail or "")
    assert "context" in (info.detail or "")
    assert not process_alive(pid)  # reaped by us, so the pid is gone
    assert session_processes(victim) == []
    assert hive.status(bystander) == "running"
    hive.send_message(bystander, "user", "unaffected")


def test_restarts_spread_beyond_the_window_are_allowed(
    hive: Hive, two_running: tuple[str, str, int], clock: FakeClock
) -> None:
    victim, _, _ = two_running
    for _ in range(3):
        for _ in range(3):
            inject_crash(hive, victim, "runner")
        clock.advance(5.0)
    info = hive.get_session_info(victim)
    assert (info.status, info.restarts) == ("running", 9)


def test_supervisor_crash_fails_its_session_and_stops_its_agent(
    hive: Hive, two_running: tuple[str, str, int]
) -> None:
    victim, bystander, _ = two_running
    inject_crash(hive, victim, "session")
    assert hive.wait(victim, timeout=10) == "failed"
    assert hive.get_session_info(victim).reason == "supervisor_crash"
    # Its children were stopped too: only the bystander's three actors and the root remain.
    eventually(lambda: len(pykka.ActorRegistry.get_all()) == 1 + 3)
    assert hive.status(bystander) == "running"


def test_an_agent_killed_from_outside_fails_its_session(
    hive: Hive, two_running: tuple[str, str, int]
) -> None:
    victim, bystander, pid = two_running
    os.kill(pid, 9)
    assert hive.wait(victim, timeout=10) == "failed"
    info = hive.get_session_info(victim)
    assert (info.reason, info.exit_code, info.detail) == ("signal", 137, "killed by SIGKILL")
    assert hive.status(bystander) == "running"


def test_an_agent_whose_shim_is_killed_from_outside_is_killed_and_its_session_lost(
    hive: Hive, ready
) -> None:
    """A container tool or the OOM killer kills the shim, which would record the agent's
    exit, and leaves the agent: the hive kills what of the run still runs and says so.
    The exit code is unknown, not the one of the session's earlier run."""
    session_id = hive.create_session("orphaned", persistent=True)
    hive.start_session(session_id)
    assert hive.wait(session_id, timeout=10) == "idle"
    assert hive.get_session_info(session_id).exit_code == 0
    signal_ = ready()
    hive.start_session(session_id, ["--sleep", "inf", "--grandchild", "--ready", str(signal_.path)])
    agent = signal_.wait()
    os.kill(hive.get_session_info(session_id).pid, signal.SIGKILL)
    assert hive.wait(session_id, timeout=10) == "failed"
    info = hive.get_session_info(session_id)
    assert (info.reason, info.exit_code) == ("lost", None)
    pids = ", ".join(str(pid) for pid in sorted([agent["pid"], agent["grandchild"]]))
    assert info.detail == (
        "its shim was killed by SIGKILL, so the agent's exit status is unknown; "
        f"killed the 2 processes of the run still running (pids {pids})"
    )
    eventually(lambda: not process_alive(agent["pid"]) and not process_alive(agent["grandchild"]))
    assert session_processes(session_id) == []


def test_the_root_manager_survives_an_exception_and_serves_on(
    hive: Hive, two_running: tuple[str, str, int]
) -> None:
    victim, bystander, pid = two_running
    inject_crash(hive, None, "manager", SystemExit(2))
    inject_crash(hive, None, "manager", RuntimeError("manager bug"))
    fresh = hive.create_session("after the manager's failures")  # a Call to the manager
    assert hive.start_session(fresh) == "running"  # slots: the manager again
    assert hive.status(victim) == hive.status(bystander) == "running"
    assert process_alive(pid)


def test_a_runner_found_dead_at_a_spawn_is_restarted_and_spawns_once(hive: Hive, tmp_path) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "runs"
    session_id = hive.create_session(
        "t", command=["sh", "-c", f'echo run >> "{marker}"'], persistent=True
    )
    supervisor = hive._core.table.supervisor(session_id)
    assert supervisor is not None
    actor = supervisor._actor_weakref()  # type: ignore[attr-defined]
    eventually(lambda: "runner" in actor._children)  # its on_start has made its children
    # The runner gone without a word (its ChildFailed not seen yet) when a start comes.
    actor._children["runner"].stop(block=True)
    hive.start_session(session_id)
    assert hive.wait(session_id, timeout=30) == "idle"
    assert marker.read_text() == "run\n"  # one agent, not two
    info = hive.get_session_info(session_id)
    assert (info.runs, info.restarts) == (1, 1)
