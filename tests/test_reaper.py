"""The Reaper under churn: exits and new watches racing for the same fd numbers."""

from __future__ import annotations

import shutil
import signal
import threading
from pathlib import Path

from hive_actors._process import AgentProcess
from hive_actors._reaper import Reaper

from .conftest import spawn_agent


def test_exits_are_matched_to_their_own_process_while_fds_are_reused(tmp_path: Path) -> None:
    true, sleep = shutil.which("true") or "/bin/true", shutil.which("sleep") or "/bin/sleep"
    reaper = Reaper()
    exited: dict[str, int] = {}
    lock = threading.Lock()
    all_short_done = threading.Event()
    short_count = 300

    def on_exit(process: AgentProcess, code: int) -> None:
        with lock:
            exited[process.session_id] = code
            if sum(name.startswith("short") for name in exited) == short_count:
                all_short_done.set()

    sleepers: list[AgentProcess] = []

    def churn(worker: int) -> None:
        for index in range(short_count // 3):
            reaper.watch(spawn_agent(tmp_path, f"short-{worker}-{index}", [true]), on_exit)
            if index % 10 == 0:  # long-lived agents grab fd numbers freed by short ones
                sleeper = spawn_agent(tmp_path, f"long-{worker}-{index}", [sleep, "60"])
                sleepers.append(sleeper)
                reaper.watch(sleeper, on_exit)

    workers = [threading.Thread(target=churn, args=(w,)) for w in range(3)]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert all_short_done.wait(60), f"only {len(exited)} exits seen"
        with lock:
            assert not [name for name in exited if name.startswith("long")]
        assert all(code == 0 for code in exited.values())
        assert reaper.live_count() == len(sleepers)
        for sleeper in sleepers:
            assert reaper.find(sleeper.session_id) is sleeper
    finally:
        for sleeper in sleepers:
            sleeper.signal_group(signal.SIGKILL)
        reaper.close()
