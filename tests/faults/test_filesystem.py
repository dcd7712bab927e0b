"""Faults of the filesystem: an unusable log directory, a damaged session.json."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

import pytest

from hive_actors import CorruptState, InvalidTask, WorkspaceError

from ..conftest import HIVECTL, Daemon, Hives, eventually, process_alive


def test_an_unusable_log_dir_refuses_create_and_keeps_nothing(hives: Hives, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the log directory should be")
    with pytest.raises(WorkspaceError, match=f"cannot create {blocker}/logs: Not a directory"):
        hives.open(log_root=blocker / "logs")

    hive = hives.open()
    hive.config.logs_dir.rmdir()
    hive.config.logs_dir.write_text("the log directory became a file")
    with pytest.raises(WorkspaceError, match=r"cannot create .*/logs: File exists"):
        hive.create_session("t")
    assert list(hive.config.sessions_dir.iterdir()) == []  # nothing half-made was kept
    assert hive.list_sessions() == []
    assert hive.stats().sessions == 0  # and the hive itself carries on


def test_a_log_that_cannot_be_opened_fails_the_start_not_the_hive(hives: Hives) -> None:
    hive = hives.open()
    broken = hive.create_session("its log will be gone")
    healthy = hive.create_session("unaffected", args=["--sleep", "0"])
    logs = hive.config.logs_dir
    logs.rename(logs.with_name("logs-away"))
    logs.write_text("now a file: opening <uuid>.log inside it fails")
    try:
        assert hive.start_session(broken) == "failed"
        info = hive.get_session_info(broken)
        assert info.reason == "spawn_error"
        assert (info.detail or "").startswith(f"cannot open the log {info.log_file}: ")
    finally:
        logs.unlink()
        logs.with_name("logs-away").rename(logs)
    hive.start_session(healthy)
    assert hive.wait(healthy, timeout=30) == "completed"


def test_a_damaged_session_json_is_reported_and_rewritten_from_the_registry(
    hives: Hives, caplog: pytest.LogCaptureFixture
) -> None:
    first = hives.open()
    session_id = first.create_session("mirrored", "high")
    mirror = Path(first.get_session_info(session_id).working_dir, "session.json")
    first.close()
    mirror.write_text('{"session_id": "truncated')
    with caplog.at_level(logging.WARNING):
        second = hives.open()
    assert "session.json damaged; rewritten from the registry" in caplog.text
    restored = json.loads(mirror.read_text())
    assert (restored["session_id"], restored["priority"]) == (session_id, "high")
    assert second.status(session_id) == "created"


def test_non_utf8_input_is_refused_at_every_entry_point(daemon: Daemon, hives: Hives) -> None:
    daemon.start()
    cli = subprocess.run(
        [HIVECTL.encode(), b"--root", bytes(daemon.root), b"create", b"bad \xff bytes"],
        capture_output=True,
        env=daemon.env,
        check=False,
    )
    assert cli.returncode == 4
    assert b"not valid UTF-8" in cli.stderr
    with daemon.http() as http:
        raw = http.post(
            "/sessions",
            content=b'{"task": "bad \xff bytes"}',
            headers={"content-type": "application/json"},
        )
        # 422 like every refused input (it was 400 here, 422 for other bad bodies)
        assert raw.status_code == 422
        assert raw.json() == {
            "error": "invalid_input",
            "message": "body is not UTF-8 text (invalid start byte at byte 14); send UTF-8 JSON",
        }
        assert http.get("/sessions").json()["sessions"] == []
    hive = hives.open()
    with pytest.raises(InvalidTask, match="not valid UTF-8"):
        hive.create_session("bad \udcff bytes")


def test_a_truncated_registry_is_reported_not_replaced(hives: Hives, tmp_path: Path) -> None:
    root = tmp_path / "truncated"
    first = hives.open(root=root, command=["true"])
    for index in range(200):
        first.create_session(f"t{index}", metadata={"pad": "x" * 500})
    first.close()
    registry = root / "registry.db"
    os.truncate(registry, registry.stat().st_size // 2)
    damaged = registry.read_bytes()
    with pytest.raises(CorruptState, match="not a readable hive registry"):
        hives.open(root=root)
    assert registry.read_bytes() == damaged  # never silently replaced by an empty one


def test_sessions_and_logs_dirs_removed_under_a_running_hive_are_made_again(
    hives: Hives,
) -> None:
    hive = hives.open()
    hive.config.sessions_dir.rmdir()
    hive.config.logs_dir.rmdir()
    session_id = hive.create_session("after the cleanup", args=["--sleep", "0"])
    info = hive.get_session_info(session_id)
    assert Path(info.working_dir).parent == hive.config.sessions_dir
    assert Path(info.log_file).is_file()
    hive.start_session(session_id)
    assert hive.wait(session_id, timeout=30) == "completed"


def test_a_transition_the_disk_refuses_answers_at_once_and_leaves_no_agent(hives: Hives) -> None:
    hive = hives.open()
    session_id = hive.create_session("its session.json will be unwritable", args=["--sleep", "60"])
    assert hive.start_session(session_id) == "running"
    pid = hive.get_session_info(session_id).pid
    assert pid is not None
    working_dir = Path(hive.get_session_info(session_id).working_dir)
    (working_dir / ".session.json.tmp").mkdir()  # where each transition is written first
    # The caller hears the disk's refusal, not a reply timeout a minute later.
    with pytest.raises(WorkspaceError, match=r"session\.json: Is a directory"):
        hive.terminate_session(session_id, grace=0)
    assert hive.wait(session_id, timeout=30) == "failed"  # not left "running" for good
    info = hive.get_session_info(session_id)
    assert info.reason == "supervisor_crash"
    assert "not recorded" in (info.detail or "")
    eventually(lambda: not process_alive(pid))  # the failing session left no agent behind
