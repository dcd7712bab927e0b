"""A session's life: workspace, agent process, statuses, termination, cleanup, recovery."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading
from pathlib import Path

import pytest

from hive_actors import DEFAULT_COMMAND, Event, Hive, InvalidTransition, SessionNotFound
from hive_actors.testing import FakeClock, session_processes

from .conftest import Hives, Recorder, eventually, in_threads, process_alive


def test_fifty_concurrent_creates_get_unique_ids_and_workspaces(hive: Hive) -> None:
    ids = in_threads(lambda index: hive.create_session(f"task {index}"), range(50))
    assert len(ids) == 50
    assert len(set(ids)) == 50
    dirs = {hive.get_session_info(i).working_dir for i in ids}
    assert len(dirs) == 50
    for session_id in ids:
        info = hive.get_session_info(session_id)
        assert info.status == "created"
        assert Path(info.working_dir, "session.json").is_file()
        assert Path(info.database).is_file()
        assert Path(info.output_dir).is_dir()
        assert Path(info.log_file).is_file()


def test_ten_agents_at_once_each_write_only_their_own_database(hives: Hives) -> None:
    hive = hives.open(max_running=10)
    ids = [hive.create_session(f"isolated task {i}", args=["--writes", "200"]) for i in range(10)]
    assert [hive.start_session(i) for i in ids] == ["running"] * 10
    assert [hive.wait(i, timeout=60) for i in ids] == ["completed"] * 10
    databases = set()
    for index, session_id in enumerate(ids):
        info = hive.get_session_info(session_id)
        assert info.exit_code == 0
        assert Path(info.database) == Path(info.working_dir) / ".swarm" / "memory.db"
        databases.add(info.database)
        db = sqlite3.connect(info.database)
        rows = db.execute("SELECT DISTINCT value, count(*) FROM memory").fetchall()
        db.close()
        assert rows == [(f"isolated task {index}", 200)]
        log = Path(info.log_file).read_text()
        assert "locked" not in log
        assert "memory.db error" not in log
    assert len(databases) == 10


def test_clean_exit_goes_created_starting_running_completed(hive: Hive, recorder: Recorder) -> None:
    session_id = hive.create_session("Build a Rust CLI tool", "high", {"project": "cli"})
    hive.subscribe_to_session(session_id, recorder)
    assert hive.status(session_id) == "created"
    assert hive.start_session(session_id) == "running"
    assert hive.wait(session_id, timeout=30) == "completed"
    recorder.wait_for(
        lambda events: any(e.to == "completed" for e in events if e.type == "session.status")
    )
    assert recorder.statuses(session_id) == ["starting", "running", "completed"]

    info = hive.get_session_info(session_id)
    assert (info.task, info.priority, info.metadata) == (
        "Build a Rust CLI tool",
        "high",
        {"project": "cli"},
    )
    assert (info.exit_code, info.reason, info.runs, info.pid) == (0, "exited", 1, None)
    assert info.updated >= info.created
    log = Path(hive.log_file(session_id)).read_text()
    assert "starting task 'Build a Rust CLI tool'" in log  # stdout
    assert "this line goes to stderr" in log  # stderr, same file
    on_disk = json.loads(Path(info.working_dir, "session.json").read_text())
    assert on_disk["status"] == "completed"
    assert on_disk["session_id"] == session_id


def test_exit_code_three_fails_with_that_code(hive: Hive) -> None:
    session_id = hive.create_session("doomed", args=["--exit", "3"])
    hive.start_session(session_id)
    assert hive.wait(session_id, timeout=30) == "failed"
    info = hive.get_session_info(session_id)
    assert (info.exit_code, info.reason, info.detail) == (3, "exit_code", "exited with code 3")


def test_agent_sees_its_workspace_and_task_verbatim_never_through_a_shell(hive: Hive) -> None:
    task = "say $(whoami) `id`; rm -rf / && echo 'quoted' \"twice\" * {task} \n\u00e9"
    session_id = hive.create_session(task, args=["--sleep", "0"], env={"EXTRA_VAR": "x y"})
    hive.start_session(session_id)
    assert hive.wait(session_id, timeout=30) == "completed"
    info = hive.get_session_info(session_id)
    output = Path(info.output_dir)
    assert (output / "result.txt").read_text() == task
    seen = json.loads((output / "env.json").read_text())
    assert json.loads(seen["argv"]) == [task, "--sleep", "0"]
    assert seen["cwd"] == info.working_dir
    assert seen["HIVE_SESSION_ID"] == session_id
    assert seen["HIVE_SESSION_DIR"] == info.working_dir
    assert seen["HIVE_OUTPUT_DIR"] == info.output_dir
    assert seen["HIVE_DB"] == info.database
    assert seen["HIVE_TASK"] == task


def test_a_missing_program_fails_the_session_with_spawn_error(hive: Hive) -> None:
    session_id = hive.create_session("x", command=["/nonexistent/agent-cli", "{task}"])
    assert hive.start_session(session_id) == "failed"
    info = hive.get_session_info(session_id)
    assert info.reason == "spawn_error"
    assert "/nonexistent/agent-cli" in (info.detail or "")
    assert info.runs == 1


def test_default_command_is_the_seeds_claude_flow_spawn(hives: Hives) -> None:
    assert DEFAULT_COMMAND == ("claude-flow", "hive-mind", "spawn", "{task}")
    hive = Hive(root=hives.root / "default")
    hives.opened.append(hive)
    assert hive.config.command == DEFAULT_COMMAND
    session_id = hive.create_session("t")
    assert hive.get_session_info(session_id).command == DEFAULT_COMMAND


def test_hive_command_environment_variable_sets_the_template(
    hives: Hives, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "HIVE_COMMAND",
        json.dumps(
            [sys.executable, "-m", "hive_actors.testing.fake_agent", "--exit", "4", "{task}"]
        ),
    )
    monkeypatch.setenv("HIVE_ROOT", str(hives.root / "from-env"))
    hive = Hive()
    hives.opened.append(hive)
    assert hive.root == hives.root / "from-env"
    session_id = hive.create_session("t")
    hive.start_session(session_id)
    assert hive.wait(session_id, timeout=30) == "failed"
    assert hive.get_session_info(session_id).exit_code == 4


def test_template_without_task_placeholder_passes_the_task_only_in_env(hive: Hive) -> None:
    command = [
        sys.executable,
        "-c",
        "import os,sys; sys.exit(0 if len(sys.argv)==1 and os.environ['HIVE_TASK']=='t 1' else 9)",
    ]
    session_id = hive.create_session("t 1", command=command)
    hive.start_session(session_id)
    assert hive.wait(session_id, timeout=30) == "completed"


def test_output_root_links_each_session_output(hives: Hives, tmp_path: Path) -> None:
    hive = hives.open(output_root=tmp_path / "ext", log_root=tmp_path / "logs")
    session_id = hive.create_session("t")
    info = hive.get_session_info(session_id)
    assert info.output_dir == str(tmp_path / "ext" / session_id)
    assert Path(info.working_dir, "output").resolve() == Path(info.output_dir)
    assert info.log_file == str(tmp_path / "logs" / f"{session_id}.log")
    hive.start_session(session_id)
    hive.wait(session_id, timeout=30)
    assert (tmp_path / "ext" / session_id / "result.txt").read_text() == "t"


def test_persistent_session_idles_between_runs(hive: Hive) -> None:
    session_id = hive.create_session("serve", persistent=True)
    hive.start_session(session_id)
    assert hive.wait(session_id, timeout=30) == "idle"
    hive.start_session(session_id, args=["--exit", "0"])
    assert hive.wait(session_id, timeout=30) == "idle"
    info = hive.get_session_info(session_id)
    assert (info.runs, info.args) == (2, ("--exit", "0"))
    assert hive.terminate_session(session_id) == "terminated"
    assert hive.get_session_info(session_id).reason == "requested"


def test_start_is_refused_unless_created_or_idle(hive: Hive) -> None:
    session_id = hive.create_session("once")
    hive.start_session(session_id)
    hive.wait(session_id, timeout=30)
    with pytest.raises(InvalidTransition, match="'completed' to 'starting'"):
        hive.start_session(session_id)


def test_terminate_kills_the_whole_group_even_when_sigterm_is_ignored(
    containment: str, hive: Hive, clock: FakeClock, ready, recorder: Recorder
) -> None:
    signal_ = ready()
    session_id = hive.create_session(
        "stubborn",
        args=["--sleep", "inf", "--grandchild", "--ignore-term", "--ready", str(signal_.path)],
    )
    hive.subscribe_to_session(session_id, recorder)
    hive.start_session(session_id)
    pids = signal_.wait()
    shim = hive.get_session_info(session_id).pid  # the group leader that records the exit
    everyone = sorted([shim, pids["pid"], pids["grandchild"]])
    assert sorted(session_processes(session_id)) == everyone

    assert hive.terminate_session(session_id, grace=3) == "stopping"
    # SIGTERM is ignored by both; the grace period has not passed on the fake clock.
    assert sorted(session_processes(session_id)) == everyone
    assert hive.status(session_id) == "stopping"

    clock.advance(3)  # the grace period ends: SIGKILL to the process group
    assert hive.wait(session_id, timeout=10) == "terminated"
    info = hive.get_session_info(session_id)
    assert (info.exit_code, info.reason, info.detail) == (137, "requested", "killed by SIGKILL")
    assert session_processes(session_id) == []
    recorder.wait_for(lambda events: any(e.type == "session.terminated" for e in events))
    assert recorder.statuses(session_id) == ["starting", "running", "stopping", "terminated"]


def test_terminate_of_a_cooperative_agent_needs_no_kill(hive: Hive) -> None:
    session_id = hive.create_session("polite", args=["--sleep", "inf"])
    hive.start_session(session_id)
    assert hive.terminate_session(session_id) == "stopping"
    assert hive.wait(session_id, timeout=10) == "terminated"
    assert hive.get_session_info(session_id).detail == "killed by SIGTERM"
    assert hive.get_session_info(session_id).exit_code == 143


def test_terminate_before_start_and_after_end(hive: Hive) -> None:
    fresh = hive.create_session("never run")
    assert hive.terminate_session(fresh) == "terminated"
    with pytest.raises(InvalidTransition):
        hive.start_session(fresh)
    done = hive.create_session("done")
    hive.start_session(done)
    hive.wait(done, timeout=30)
    assert hive.terminate_session(done) == "completed"  # ended sessions stay as they are


def test_wait_times_out_without_polling(hive: Hive) -> None:
    session_id = hive.create_session("slow", args=["--sleep", "inf"])
    hive.start_session(session_id)
    with pytest.raises(TimeoutError, match="still running"):
        hive.wait(session_id, timeout=0.05)
    hive.terminate_session(session_id, grace=0)
    assert hive.wait(session_id, timeout=10) == "terminated"


def test_cleanup_removes_ended_sessions_by_age_to_the_hour(
    hive: Hive, clock: FakeClock, recorder: Recorder
) -> None:
    hive.subscribe_to_all_sessions(recorder)
    ended = [hive.create_session(f"old {i}") for i in range(2)]
    for session_id in ended:
        hive.start_session(session_id)
        hive.wait(session_id, timeout=30)
    waiting = hive.create_session("created, never ended")
    infos = [hive.get_session_info(i) for i in ended]

    clock.advance(23 * 3600 + 3599)
    assert hive.cleanup(24) == []
    clock.advance(1)
    assert sorted(hive.cleanup(24)) == sorted(ended)
    for info in infos:
        assert hive.status(info.session_id) == "not_found"
        assert not Path(info.working_dir).exists()
        assert not Path(info.log_file).exists()
        with pytest.raises(SessionNotFound):
            hive.get_session_info(info.session_id)
    assert hive.status(waiting) == "created"
    recorder.wait_for(lambda events: sum(e.type == "session.removed" for e in events) == 2)


def test_a_new_hive_on_the_same_root_resumes_where_the_last_stopped(hives: Hives) -> None:
    first = hives.open()
    waiting = first.create_session("start me later")
    done = first.create_session("done")
    first.start_session(done)
    first.wait(done, timeout=30)
    last_seq = first.last_seq
    first.close()

    second = hives.open()
    assert second.status(waiting) == "created"
    assert second.status(done) == "completed"
    assert second.last_seq == last_seq
    second.start_session(waiting)
    assert second.wait(waiting, timeout=30) == "completed"
    assert min(e.seq for e in second.events(since=last_seq)) == last_seq + 1


def test_terminate_racing_start_from_many_threads_leaves_nothing_running(
    containment: str, hive: Hive
) -> None:
    ids = [hive.create_session(f"race {i}", args=["--sleep", "inf"]) for i in range(24)]

    def start_then_stop(chunk: list[str]) -> None:
        for session_id in chunk:
            hive.start_session(session_id)
            hive.terminate_session(session_id, grace=0)

    in_threads(start_then_stop, [ids[i::6] for i in range(6)])
    assert [hive.wait(i, timeout=30) for i in ids] == ["terminated"] * 24
    assert all(session_processes(i) == [] for i in ids)
    stats = hive.stats()
    assert stats.by_status == {"terminated": 24}
    assert (stats.sessions, stats.runs, stats.live_agents, stats.restarts) == (24, 24, 0, 0)
    # Ended subtrees stop asynchronously; soon only the SessionManager is left.
    eventually(lambda: hive.stats().actors == 1)
    assert stats.actor_threads == 8
    assert stats.last_seq == hive.last_seq


def test_terminate_reaches_a_grandchild_that_left_the_process_group(
    containment: str, hive: Hive, clock: FakeClock, ready
) -> None:
    signal_ = ready()
    session_id = hive.create_session(
        "escapes",
        args=[
            "--sleep",
            "inf",
            "--setsid-grandchild",
            "--ignore-term",
            "--ready",
            str(signal_.path),
        ],
    )
    hive.start_session(session_id)
    escapee = signal_.wait()["grandchild"]
    shim = hive.get_session_info(session_id).pid
    assert os.getpgid(escapee) not in (shim, os.getpgid(0))  # out of the agent's group

    assert hive.terminate_session(session_id, grace=2) == "stopping"
    assert process_alive(escapee)  # it ignores SIGTERM
    clock.advance(2)
    assert hive.wait(session_id, timeout=10) == "terminated"
    # SIGKILL was sent before the run was reported over; delivery takes a moment more.
    eventually(lambda: session_processes(session_id) == [])


def test_terminate_asks_an_escaped_grandchild_to_stop_before_the_grace_period_ends(
    containment: str, hive: Hive, ready
) -> None:
    """The escapee gets SIGTERM too (from the timer thread, just after the group's), so a
    well-behaved one ends without waiting for the SIGKILL: the fake clock never moves."""
    signal_ = ready()
    session_id = hive.create_session(
        "escapes politely",
        args=["--sleep", "inf", "--setsid-grandchild", "--ready", str(signal_.path)],
    )
    hive.start_session(session_id)
    escapee = signal_.wait()["grandchild"]
    assert hive.terminate_session(session_id, grace=3600) == "stopping"
    assert hive.wait(session_id, timeout=10) == "terminated"
    eventually(lambda: not process_alive(escapee))
    assert session_processes(session_id) == []


def test_a_grandchild_that_left_the_group_goes_soon_after_its_run_ends_on_its_own(
    containment: str, hive: Hive, clock: FakeClock, ready
) -> None:
    """No stop hunts it: its run's cgroup is emptied before the run is reported over;
    without cgroups, the sweep after the run's end does, once its interval passed."""
    signal_ = ready()
    session_id = hive.create_session(
        "leaves one behind", args=["--setsid-grandchild", "--ready", str(signal_.path)]
    )
    hive.start_session(session_id)
    escapee = signal_.wait()["grandchild"]
    assert hive.wait(session_id, timeout=30) == "completed"
    if containment == "cgroups":
        assert not process_alive(escapee)
        return
    assert session_processes(session_id) == [escapee]  # the sweep waits for the clock
    clock.advance(60)
    eventually(lambda: session_processes(session_id) == [])


def test_closing_the_hive_within_a_grace_period_still_kills_a_stubborn_escapee(
    containment: str, hive: Hive, ready
) -> None:
    """The agent ends at SIGTERM, its escapee ignores it, and the hive closes before the
    grace period's SIGKILL (the fake clock never moves): the escapee dies with the hive.
    With cgroups it dies sooner: with its run, whose cgroup is emptied as it ends."""
    signal_ = ready()
    session_id = hive.create_session(
        "escapes stubbornly",
        args=[
            *("--sleep", "inf", "--setsid-grandchild", "--stubborn-grandchild"),
            *("--ready", str(signal_.path)),
        ],
    )
    hive.start_session(session_id)
    escapee = signal_.wait()["grandchild"]
    assert hive.terminate_session(session_id, grace=3600) == "stopping"
    assert hive.wait(session_id, timeout=10) == "terminated"
    if containment == "cgroups":
        assert not process_alive(escapee)
        return
    assert process_alive(escapee)  # it ignores SIGTERM, and the SIGKILL is an hour away
    hive.close()
    eventually(lambda: not process_alive(escapee))


def test_a_subscriber_can_start_a_session_the_moment_it_is_announced(hives: Hives) -> None:
    """session.created goes out just before the supervisor exists; a start then waits."""
    hive = hives.open()
    started: list[str] = []
    done = threading.Event()

    def on_event(event: Event) -> None:
        if event.type == "session.created":
            started.append(hive.start_session(event.session_id))
            done.set()

    hive.subscribe_to_all_sessions(on_event)
    for _ in range(20):
        done.clear()
        session_id = hive.create_session("started by a subscriber")
        assert done.wait(10)
        assert hive.wait(session_id, timeout=30) == "completed"
    assert set(started) <= {"starting", "running", "completed"}
    assert len(started) == 20
