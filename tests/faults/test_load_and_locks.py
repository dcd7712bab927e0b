"""Faults of load and contention: many sessions at once, a registry locked by another process."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from hive_actors.testing import session_processes

from ..conftest import Hives, in_threads


def test_200_sessions_created_started_and_terminated_from_8_threads(hives: Hives) -> None:
    sleep = shutil.which("sleep") or "/bin/sleep"
    hive = hives.open(command=[sleep, "60"], max_running=50)

    def work(worker: int) -> list[str]:
        created = []
        for index in range(25):
            session_id = hive.create_session(f"load {worker}-{index}")
            created.append(session_id)
            hive.start_session(session_id)
            if index % 2:
                hive.terminate_session(session_id, grace=0)
        return created

    ids = [session_id for chunk in in_threads(work, range(8)) for session_id in chunk]
    assert len(set(ids)) == 200
    for session_id in ids:  # the rest, running or queued, are terminated now
        hive.terminate_session(session_id, grace=0)
    assert {hive.wait(s, timeout=60) for s in ids} == {"terminated"}
    assert sum(1 for _ in hive.events()) >= 200 * 3
    assert hive.stats().live_agents == 0
    assert all(session_processes(s) == [] for s in ids)


def test_a_registry_locked_by_another_process_makes_writes_wait_not_fail(
    hives: Hives, tmp_path: Path
) -> None:
    hive = hives.open()
    before = hive.create_session("before the lock")
    read_end, write_end = os.pipe()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import os, sqlite3, time
                db = sqlite3.connect({str(hive.config.registry_path)!r}, isolation_level=None)
                db.execute("BEGIN IMMEDIATE")  # the write lock, held by another process
                os.write({write_end}, b"locked")
                time.sleep(2)
                db.execute("COMMIT")
                """
            ),
        ],
        pass_fds=(write_end,),
    )
    os.close(write_end)
    try:
        assert select.select([read_end], [], [], 30)[0]
        assert os.read(read_end, 16) == b"locked"
        started = time.monotonic()
        during = hive.create_session("during the lock")  # waits for the lock, then commits
        waited = time.monotonic() - started
    finally:
        os.close(read_end)
        holder.wait(30)
    assert waited > 1.0  # it really was blocked by the other process
    assert {hive.status(before), hive.status(during)} == {"created"}
    hive.start_session(during)
    assert hive.wait(during, timeout=30) == "completed"
    assert [e.type for e in hive.events(during)][:2] == ["session.created", "session.status"]
