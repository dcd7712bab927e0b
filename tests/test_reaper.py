"""The Reaper: exits and new watches racing for the same fd numbers; exits reaped at once."""

from __future__ import annotations

import os
import shutil
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from hive_actors import _process
from hive_actors._process import AgentProcess
from hive_actors._reaper import Reaper
from hive_actors._timers import Timers
from hive_actors.testing import FakeClock

SLEEP = shutil.which("sleep") or "/bin/sleep"


def _spawn(tmp_path: Path, name: str, argv: list[str]) -> AgentProcess:
    env = dict(os.environ)
    return AgentProcess.spawn(name, 1, argv, tmp_path, env, tmp_path / "log", tmp_path / name)


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
            reaper.watch(_spawn(tmp_path, f"short-{worker}-{index}", [true]), on_exit)
            if index % 10 == 0:  # long-lived agents grab fd numbers freed by short ones
                sleeper = _spawn(tmp_path, f"long-{worker}-{index}", [sleep, "60"])
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


@pytest.mark.parametrize("stop", ["stop", "kill_tree"])
def test_a_slow_pass_over_proc_never_holds_up_a_reap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop: str
) -> None:
    """Finding a stopped run's escapees reads all of /proc (tens of ms with thousands of
    processes); the reaper, which reaps every session's exits, must not wait for it."""
    scanning, finish_scan = threading.Event(), threading.Event()

    def slow_scan() -> list[tuple[int, int, str | None]]:
        scanning.set()
        finish_scan.wait(30)
        return []

    monkeypatch.setattr(_process, "_scan_proc", slow_scan)
    timers = Timers(FakeClock())
    process = _spawn(tmp_path, "slow-scan", [SLEEP, "60"])
    stops: dict[str, Callable[[], None]] = {
        "stop": lambda: process.stop(60, timers),  # SIGTERM; escapees on the timer thread
        "kill_tree": process.kill_tree,  # the grace period is over
    }
    stopper = threading.Thread(target=stops[stop])
    reaper = threading.Thread(target=process.reap)
    try:
        stopper.start()
        assert scanning.wait(10), "the pass over /proc never began"
        reaper.start()  # the agent is stopped (or reap kills it): reaping must go on
        reaper.join(10)
        assert not reaper.is_alive(), "the reap waited for the pass over /proc"
        assert process.exit_code in (128 + signal.SIGTERM, 128 + signal.SIGKILL)
    finally:
        finish_scan.set()
        stopper.join(10)
        process.signal_group(signal.SIGKILL)
        process.reap()
        reaper.join(10)
        timers.close()
