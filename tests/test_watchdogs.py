"""The stall watchdog on a fake clock: a silent agent is noticed after its stall_timeout,
then left (``none``), terminated or restarted; output resumed is noticed too. And the
resume command of runs after the first. (The contract suite runs both on each engine in
real time.)"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from hive_actors import Hive
from hive_actors.testing import FakeClock, wait_maintenance, wait_watchdog

from .conftest import Daemon, Hives, Recorder, eventually


def looked(hive: Hive, clock: FakeClock, seconds: float) -> None:
    """Advance the clock, and wait for the watchdog's look that it triggers."""
    looks = hive._core.watchdog.checks
    clock.advance(seconds)
    wait_watchdog(hive, looks + 1)


def silent_run(hive: Hive, clock: FakeClock, ready: Any, tmp_path: Path, **options: Any) -> str:
    """A running session whose agent has said its first lines, then holds its tongue
    (until ``release``), seen once by the watchdog since."""
    signal_ = ready()
    session_id = hive.create_session("t", **options)
    hive.start_session(
        session_id, ["--ready", str(signal_.path), "--hold", str(_fifo(tmp_path)), "--sleep", "inf"]
    )
    signal_.wait()
    looked(hive, clock, 1)
    return session_id


def first(recorder: Recorder, kind: str) -> Any:
    """The first event of type ``kind`` the recorder gets (waiting for it)."""
    recorder.wait_for(lambda events: any(e.type == kind for e in events))
    return next(e for e in recorder.events if e.type == kind)


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "hold"
    if not path.exists():
        os.mkfifo(path)
    return path


def release(tmp_path: Path) -> None:
    with open(tmp_path / "hold", "w", encoding="utf-8") as fifo:
        fifo.write("speak\n")


def test_a_silent_agent_is_stalled_then_active_again(
    hives: Hives, clock: FakeClock, ready: Any, tmp_path: Path
) -> None:
    hive = hives.open(clock=clock, stall_timeout=30)
    recorder = Recorder()
    hive.subscribe_to_all_sessions(recorder)
    session_id = silent_run(hive, clock, ready, tmp_path)
    looked(hive, clock, 25)
    assert not [e for e in hive.events(session_id) if e.type == "session.stalled"]
    looked(hive, clock, 10)
    stalled = first(recorder, "session.stalled")
    assert 34 <= stalled.silent_seconds <= 36
    assert stalled.action == "none"
    assert hive.status(session_id) == "running"  # none: only the event

    release(tmp_path)  # it speaks again
    log = Path(hive.log_file(session_id))
    eventually(lambda: "told 'speak'" in log.read_text())
    looked(hive, clock, 1)
    active = first(recorder, "session.active")
    assert active.silent_seconds >= stalled.silent_seconds
    types = [e.type for e in hive.events(session_id)]
    assert types.index("session.stalled") < types.index("session.active")
    hive.terminate_session(session_id, grace=0)


def test_a_stalled_agent_is_terminated(
    hives: Hives, clock: FakeClock, ready: Any, tmp_path: Path
) -> None:
    hive = hives.open(clock=clock)
    session_id = silent_run(
        hive, clock, ready, tmp_path, stall_timeout=60, stall_action="terminate"
    )
    looked(hive, clock, 61)
    assert hive.wait(session_id, timeout=30) == "terminated"
    info = hive.get_session_info(session_id)
    assert info.reason == "stalled"
    assert info.detail is not None
    assert "did not grow for" in info.detail
    types = [e.type for e in hive.events(session_id)]
    assert types.index("session.stalled") < types.index("session.terminated")


def test_a_stalled_agent_is_restarted_whatever_its_policy_until_restart_limit(
    hives: Hives, clock: FakeClock, ready: Any, tmp_path: Path
) -> None:
    hive = hives.open(clock=clock, grace_period=5)
    signal_ = ready()
    session_id = hive.create_session(
        "t",
        stall_timeout=60,
        stall_action="restart",
        restart="never",
        restart_limit=1,
        restart_backoff=0,
    )
    hive.start_session(session_id, ["--ready", str(signal_.path), "--sleep", "inf"])
    signal_.wait()
    looked(hive, clock, 1)
    looked(hive, clock, 61)  # stalled: SIGTERM; it ends; the next run waits out the grace
    hive._core.table.wait_for(session_id, lambda i: i.status == "starting", 30)
    clock.advance(5)  # the stopped run's grace is over (its leftovers hunted), then run 2
    second = signal_.wait()["pid"]
    info = hive.get_session_info(session_id)
    assert (info.status, info.runs, info.restarts) == ("running", 2, 1)
    looked(hive, clock, 1)
    looked(hive, clock, 30)  # past every timer of the first run's stop: run 2 lives on
    assert hive.status(session_id) == "running"
    assert Path(f"/proc/{second}").exists()
    looked(hive, clock, 31)  # stalled again: restart_limit (1) is spent
    assert hive.wait(session_id, timeout=30) == "failed"
    info = hive.get_session_info(session_id)
    assert info.reason == "stalled"
    assert "restart_limit (1) reached" in (info.detail or "")
    assert [e.type for e in hive.events(session_id)].count("session.stalled") == 2
    assert "stopping" in [str(e.to) for e in hive.events(session_id) if e.type == "session.status"]


def test_a_rotated_log_is_no_news_to_the_watchdog(
    hives: Hives, clock: FakeClock, ready: Any, tmp_path: Path
) -> None:
    hive = hives.open(clock=clock, stall_timeout=30, log_max_bytes=1024, maintenance_interval=20)
    recorder = Recorder()
    hive.subscribe_to_all_sessions(recorder)
    signal_ = ready()
    session_id = hive.create_session("t")
    chatty = ["--ready", str(signal_.path), "--writes", "1", "--sleep", "inf"]
    hive.start_session(session_id, chatty)
    signal_.wait()
    log = Path(hive.log_file(session_id))
    with log.open("ab") as padding:  # past log_max_bytes: the next pass rotates it
        padding.write(b"x" * 2048 + b"\n")
    looked(hive, clock, 1)
    clock.advance(19)
    wait_maintenance(hive, 1)  # the first pass: it rotates the log
    assert log.stat().st_size == 0
    looked(hive, clock, 1)
    looked(hive, clock, 11)  # 31 s of silence since the padding: stalled, never active
    first(recorder, "session.stalled")
    assert "session.active" not in [e.type for e in recorder.events]
    hive.terminate_session(session_id, grace=0)


def test_an_agent_that_speaks_is_never_stalled(hives: Hives, clock: FakeClock) -> None:
    talks = [
        sys.executable,
        "-c",
        "import time\nwhile True:\n print('x', flush=True)\n time.sleep(0.05)",
    ]
    hive = hives.open(clock=clock, stall_timeout=5, stall_action="terminate")
    session_id = hive.create_session("t", command=talks)
    hive.start_session(session_id)
    log = Path(hive.log_file(session_id))
    for _ in range(5):
        size = log.stat().st_size
        eventually(lambda size=size: log.stat().st_size > size)  # it spoke since
        looked(hive, clock, 4)
    assert hive.status(session_id) == "running"
    hive.terminate_session(session_id, grace=0)


def test_a_resumed_run_uses_the_resume_command(hives: Hives, tmp_path: Path) -> None:
    record = tmp_path / "argv"
    writes = f"import sys; open({str(record)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')"
    hive = hives.open(
        command=[sys.executable, "-c", writes, "first", "{task}"],
        resume_command=[sys.executable, "-c", writes, "resume", "{session_id}", "{run}", "{task}"],
    )
    session_id = hive.create_session("the task", persistent=True)
    for _ in range(2):
        hive.start_session(session_id)
        assert hive.wait(session_id, timeout=30) == "idle"
    hive.start_session(session_id, task="another task")
    assert hive.wait(session_id, timeout=30) == "idle"
    assert record.read_text().splitlines() == [
        "first the task",
        f"resume {session_id} 2 the task",
        f"resume {session_id} 3 another task",
    ]
    plain = hive.create_session("t", resume_command=[])  # none: the command again
    assert hive.get_session_info(plain).resume_command == ()


def test_stall_and_resume_options_through_hivectl_and_http(daemon: Daemon) -> None:
    daemon.start()
    created = daemon.cli(
        "create",
        "t",
        "--stall-timeout",
        "0.5",
        "--stall-action",
        "terminate",
        "--resume-command",
        '["my-agent", "--continue"]',
    )
    assert created.returncode == 0, created.stderr
    session_id = created.stdout.strip()
    info = json.loads(daemon.cli("get", session_id).stdout)
    assert (info["stall_timeout"], info["stall_action"]) == (0.5, "terminate")
    assert info["resume_command"] == ["my-agent", "--continue"]
    assert daemon.cli("start", session_id, "--sleep", "inf").returncode == 0
    assert daemon.cli("wait", session_id, "--timeout", "60").returncode == 1
    assert json.loads(daemon.cli("get", session_id).stdout)["reason"] == "stalled"
    events = daemon.cli("events", session_id, "--no-follow").stdout.splitlines()
    assert any(json.loads(line)["type"] == "session.stalled" for line in events)

    refused = daemon.cli("create", "t", "--stall-action", "sulk")
    assert (refused.returncode, refused.stdout) == (4, "")
    assert "Traceback" not in refused.stderr
    bad = daemon.cli("create", "t", "--resume-command", "claude --continue")
    assert bad.returncode == 4
    assert "--resume-command must be a JSON list" in bad.stderr
    with daemon.http() as http:
        reply = http.post("/sessions", json={"task": "t", "stall_timeout": -1})
        assert reply.status_code == 422


def test_a_session_may_opt_out_of_the_hives_stall_timeout(hives: Hives) -> None:
    hive = hives.open(stall_timeout=30, stall_action="terminate")
    assert hive.get_session_info(hive.create_session("t")).stall_timeout == 30
    assert hive.get_session_info(hive.create_session("t", stall_timeout=0)).stall_timeout is None
