"""Stopping an agent's run: every process of it is reached, and no stop holds up a reap;
a run that ends on its own leaves nothing behind either."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hive_actors import _process
from hive_actors._process import AgentProcess, Sweeper, signal_each
from hive_actors._reaper import Reaper
from hive_actors._timers import Timers
from hive_actors.testing import FakeClock, ReadySignal

from .conftest import eventually, process_alive, spawn_agent

SLEEP = shutil.which("sleep") or "/bin/sleep"

ESCAPING_AGENT = """
import json, os, signal, subprocess, sys, time
ready, sleep, when = sys.argv[1:4]

def report(**fields):
    with open(ready, "w") as fifo:
        fifo.write(json.dumps(fields) + "\\n")

def start_escapee():
    return subprocess.Popen([sleep, "3600"], start_new_session=True).pid

def escape(*_):
    if when == "at-sigterm":
        with open(sys.argv[4], "rb") as go:  # until the test lets it go on
            go.read(1)
    report(pid=os.getpid(), grandchild=start_escapee())
    if when == "at-sigterm":
        sys.exit(0)

if when.startswith("at-start"):
    if when == "at-start-stubborn":  # an ignored signal stays ignored across exec
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    grandchild = start_escapee()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the agent itself ends on SIGTERM
    report(pid=os.getpid(), grandchild=grandchild)
elif when == "at-sigterm":
    signal.signal(signal.SIGTERM, escape)
    report(pid=os.getpid())
else:  # "at-sigusr1"; it ignores SIGTERM
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, escape)
    report(pid=os.getpid())
while True:
    time.sleep(3600)
"""
"""An agent that starts a grandchild in a session of its own (out of the agent's group)
``when`` told: ``at-start`` (``at-start-stubborn``: a grandchild that ignores SIGTERM);
``at-sigterm``, once a byte arrives on the FIFO ``argv[4]``, then it exits; ``at-sigusr1``
(it ignores SIGTERM). It reports its pid when set up, and the grandchild's once started."""


@contextlib.contextmanager
def _escaping_agent(
    tmp_path: Path, when: str, *extra: str, session: str = "escaping"
) -> Iterator[tuple[AgentProcess, ReadySignal, list[int]]]:
    """The agent's run (as ``session``), the signal it reports on, and its escaped
    grandchildren's pids (started already for ``at-start``, else to be added); every
    process gone afterwards."""
    ready = ReadySignal(tmp_path)
    argv = [sys.executable, "-c", ESCAPING_AGENT, str(ready.path), SLEEP, when, *extra]
    process = spawn_agent(tmp_path, session, argv)
    escapees: list[int] = []
    try:
        reported = ready.wait()
        if "grandchild" in reported:
            escapees.append(_out_of_session(reported["grandchild"]))
        yield process, ready, escapees
    finally:
        signal_each(escapees, signal.SIGKILL)
        process.signal_group(signal.SIGKILL)
        process.reap()
        ready.close()


def _out_of_session(escapee: int) -> int:
    assert os.getsid(escapee) == escapee  # out of the agent's group and session
    return escapee


def _reap_when_over(process: AgentProcess) -> int | None:
    """Reap the run once its shim has exited, as the reaper does (reap kills what is left)."""
    os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)  # the zombie stays: no reuse
    return process.reap()


def test_an_escapee_is_asked_to_stop_even_when_the_agent_ended_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, timers: Timers
) -> None:
    """The agent ends at once on SIGTERM and is reaped before the escapees are looked
    for (a pass over /proc, on the timer thread): they must get SIGTERM all the same."""
    reaped = threading.Event()
    real_scan = _process._scan_proc

    def scan_after_the_reap(since: float) -> list[tuple[int, int, str | None]]:
        assert reaped.wait(30), "the agent was never reaped"
        return real_scan(since)

    monkeypatch.setattr(_process, "_scan_proc", scan_after_the_reap)
    with _escaping_agent(tmp_path, "at-start") as (process, _ready, (escapee,)):
        try:
            process.stop(3600, timers)  # the fake clock never reaches the SIGKILL
            assert _reap_when_over(process) == 128 + signal.SIGTERM
        finally:
            reaped.set()
        eventually(lambda: not process_alive(escapee))


def test_an_escapee_ignoring_sigterm_is_killed_when_the_grace_period_ends(
    tmp_path: Path, clock: FakeClock, timers: Timers
) -> None:
    """The agent ends at SIGTERM and its run is over; what escaped its group and ignores
    SIGTERM is still killed when the grace period ends, not left running."""
    with _escaping_agent(tmp_path, "at-start-stubborn") as (process, _ready, (escapee,)):
        process.stop(5, timers)
        assert _reap_when_over(process) == 128 + signal.SIGTERM
        # Both timers are due now; the SIGTERM pass (due first) runs first.
        clock.advance(5)
        eventually(lambda: not process_alive(escapee))


def test_an_escapee_is_killed_when_the_timers_close_before_the_grace_period_ends(
    tmp_path: Path, timers: Timers
) -> None:
    """The hive closes during the grace period of a run that is over: the SIGKILL will
    never come, so the escapee that ignored SIGTERM is killed at the close."""
    with _escaping_agent(tmp_path, "at-start-stubborn") as (process, _ready, (escapee,)):
        process.stop(5, timers)
        assert _reap_when_over(process) == 128 + signal.SIGTERM
        timers.close()  # the fake clock never reached the end of the grace period
        eventually(lambda: not process_alive(escapee))


def test_an_escapee_born_after_the_stop_signal_pass_is_killed_when_the_grace_period_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: FakeClock, timers: Timers
) -> None:
    """The agent starts an escapee only once the stop signal's pass over /proc is done,
    then exits: that pass found nothing, and the run is over before the grace period
    ends. The escapee must not outlive the grace period."""
    passes = threading.Semaphore(0)
    real_scan = _process._scan_proc

    def counted_scan(since: float) -> list[tuple[int, int, str | None]]:
        snapshot = real_scan(since)
        passes.release()
        return snapshot

    monkeypatch.setattr(_process, "_scan_proc", counted_scan)
    go = tmp_path / "go"
    os.mkfifo(go)
    go_fd = os.open(go, os.O_RDWR)  # never blocks; the agent's read waits for the byte
    try:
        with _escaping_agent(tmp_path, "at-sigterm", str(go)) as (process, ready, escapees):
            process.stop(5, timers)
            assert passes.acquire(timeout=10), "the stop signal's pass never ran"
            os.write(go_fd, b"x")
            escapees.append(_out_of_session(ready.wait()["grandchild"]))
            assert _reap_when_over(process) == 0
            assert process_alive(escapees[0])  # nothing looked for it yet
            clock.advance(5)
            eventually(lambda: not process_alive(escapees[0]))
    finally:
        os.close(go_fd)


def test_an_escapee_born_just_before_the_sigkill_is_killed_once_the_run_is_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: FakeClock, timers: Timers
) -> None:
    """The agent ignores SIGTERM and starts an escapee between the /proc snapshot the
    SIGKILL at the end of the grace period uses and that SIGKILL: the snapshot misses it,
    so it is looked for again once the run is over."""
    calls = 0
    real_scan = _process._scan_proc

    with _escaping_agent(tmp_path, "at-sigusr1") as (process, ready, escapees):

        def scan_then_escape(since: float) -> list[tuple[int, int, str | None]]:
            nonlocal calls
            calls += 1
            snapshot = real_scan(since)
            if calls == 2:  # the SIGKILL's: the escapee is born after it, before the kill
                (agent,) = process._children()
                os.kill(agent, signal.SIGUSR1)
                escapees.append(ready.wait()["grandchild"])
            return snapshot

        monkeypatch.setattr(_process, "_scan_proc", scan_then_escape)
        process.stop(5, timers)
        eventually(lambda: calls == 1)  # the stop signal's pass: nothing has escaped yet
        clock.advance(5)
        assert _reap_when_over(process) == 128 + signal.SIGKILL
        assert escapees, "the agent never started its escapee"
        eventually(lambda: not process_alive(escapees[0]))


@pytest.mark.parametrize("stop", ["stop", "kill_tree"])
def test_a_slow_pass_over_proc_never_holds_up_a_reap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, timers: Timers, stop: str
) -> None:
    """Finding a stopped run's escapees reads all of /proc (tens of ms with thousands of
    processes); the reaper, which reaps every session's exits, must not wait for it."""
    scanning, finish_scan = threading.Event(), threading.Event()

    def slow_scan(_since: float) -> list[tuple[int, int, str | None]]:
        scanning.set()
        finish_scan.wait(30)
        return []

    monkeypatch.setattr(_process, "_scan_proc", slow_scan)
    process = spawn_agent(tmp_path, "slow-scan", [SLEEP, "60"])
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


def test_a_pass_over_proc_counts_every_member_of_a_run_s_group_as_the_run_s(
    tmp_path: Path,
) -> None:
    """A pass need not read the environment of a process in the group of a run this
    process spawned: it is the run's, even if it cleared its environment (and with it the
    session's marker). Once the run is reaped, its group id is nobody's in particular."""
    env = shutil.which("env") or "/usr/bin/env"
    process = spawn_agent(tmp_path, "no-marker", [env, "-i", SLEEP, "60"])
    try:
        eventually(lambda: len(process._children()) == 1)
        (agent,) = process._children()
        eventually(lambda: b"HIVE_SESSION_ID" not in _process.read_small(f"/proc/{agent}/environ"))
        found = _process.session_processes({"no-marker"})
        assert sorted(found["no-marker"]) == sorted([process.pid, agent])
    finally:
        process.signal_group(signal.SIGKILL)
        process.reap()
    assert process.pid not in _process._our_groups
    assert "no-marker" not in _process._live_runs


@contextlib.contextmanager
def _sweeping_reaper(timers: Timers) -> Iterator[Reaper]:
    reaper = Reaper(Sweeper(timers))
    try:
        yield reaper
    finally:
        reaper.close()


def _end_on_its_own(reaper: Reaper, process: AgentProcess) -> None:
    """Kill the run's agent from outside (not its shim, not its group: no stop) and wait
    until the reaper has reaped the run."""
    exited = threading.Event()
    reaper.watch(process, lambda _process, _code: exited.set())
    (agent,) = process._children()
    os.kill(agent, signal.SIGKILL)
    assert exited.wait(30), "the run was never reaped"


def _sweep_now(clock: FakeClock, timers: Timers) -> None:
    """Move the clock past any sweep's spacing and wait until the due sweep has run (the
    one timer thread runs a timer due later after it)."""
    swept = threading.Event()
    timers.call_later(SWEEP_WAIT, swept.set)
    clock.advance(SWEEP_WAIT)
    assert swept.wait(30), "the timers never ran"


SWEEP_WAIT = 600.0
"""More than any spacing between sweeps (at least 1 s; 20 times a pass's duration)."""


def test_an_escapee_of_a_run_that_ended_on_its_own_is_killed_by_the_next_sweep(
    tmp_path: Path, clock: FakeClock, timers: Timers
) -> None:
    """No stop hunts the escapees of a run that ended by itself: the reap kills its
    group, and the sweep after the reap kills what left the group."""
    with (
        _sweeping_reaper(timers) as reaper,
        _escaping_agent(tmp_path, "at-start") as (process, _ready, (escapee,)),
    ):
        _end_on_its_own(reaper, process)
        assert process_alive(escapee)  # the sweep is not due before the clock moves
        _sweep_now(clock, timers)
        eventually(lambda: not process_alive(escapee))


def test_runs_that_ended_on_their_own_share_one_pass_over_proc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: FakeClock, timers: Timers
) -> None:
    passes = []
    real_read_proc = _process._read_proc

    def counted() -> list[tuple[int, int, str | None]]:
        passes.append(1)
        return real_read_proc()

    monkeypatch.setattr(_process, "_read_proc", counted)
    with (
        _sweeping_reaper(timers) as reaper,
        _escaping_agent(tmp_path, "at-start", session="a") as (first, _, (escapee_a,)),
        _escaping_agent(tmp_path, "at-start", session="b") as (second, _, (escapee_b,)),
        _escaping_agent(tmp_path, "at-start", session="c") as (third, _, (escapee_c,)),
    ):
        for process in (first, second, third):
            _end_on_its_own(reaper, process)
        _sweep_now(clock, timers)
        assert len(passes) == 1
        eventually(lambda: not any(map(process_alive, (escapee_a, escapee_b, escapee_c))))


def test_a_sweep_spares_a_session_whose_next_run_has_started(
    tmp_path: Path, clock: FakeClock, timers: Timers
) -> None:
    """Run 1 ends on its own and run 2 of the same session starts before the sweep: the
    session's marker is run 2's too now, so the sweep kills nothing of it. What run 1
    left goes when run 2 ends."""
    with (
        _sweeping_reaper(timers) as reaper,
        _escaping_agent(tmp_path, "at-start") as (first, _ready, (escapee,)),
    ):
        _end_on_its_own(reaper, first)
        second = spawn_agent(tmp_path, first.session_id, [SLEEP, "60"], run=2)
        try:
            eventually(lambda: len(second._children()) == 1)
            (agent,) = second._children()
            _sweep_now(clock, timers)
            assert process_alive(second.pid)
            assert process_alive(agent)
            assert process_alive(escapee)

            _end_on_its_own(reaper, second)
            _sweep_now(clock, timers)
            eventually(lambda: not process_alive(escapee))
        finally:
            second.signal_group(signal.SIGKILL)
            second.reap()


def test_a_sweep_still_due_runs_when_the_timers_close(tmp_path: Path, timers: Timers) -> None:
    """The hive closes before the sweep of a run that ended is due: it runs at the close."""
    with (
        _sweeping_reaper(timers) as reaper,
        _escaping_agent(tmp_path, "at-start") as (process, _ready, (escapee,)),
    ):
        _end_on_its_own(reaper, process)
        timers.close()  # the fake clock never moved
        eventually(lambda: not process_alive(escapee))


def test_a_run_killed_when_the_reaper_closes_leaves_no_escapee(
    tmp_path: Path, timers: Timers
) -> None:
    """An agent still alive when its hive's reaper closes (no stop reached it) is killed
    there; what it had sent out of its group goes with the timers' close after it."""
    with _escaping_agent(tmp_path, "at-start") as (process, _ready, (escapee,)):
        with _sweeping_reaper(timers) as reaper:
            reaper.watch(process, lambda _process, _code: None)
        assert process.exit_code == 128 + signal.SIGKILL
        timers.close()
        eventually(lambda: not process_alive(escapee))


class _FullEpoll:
    """An epoll set with no room for another fd (max_user_watches reached)."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def register(self, _fd: int, _mask: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _no_pidfd(_pid: int) -> int:
    raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))


@pytest.mark.parametrize("failing", ["pidfd_open", "epoll"])
def test_a_run_that_cannot_be_watched_is_killed_and_leaves_no_escapee(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: FakeClock, timers: Timers, failing: str
) -> None:
    """Unwatched, a run's end would go unnoticed: it is killed and reported at once, and
    what it sent out of its group goes with the next sweep, as for any run's end."""
    with (
        _sweeping_reaper(timers) as reaper,
        _escaping_agent(tmp_path, "at-start") as (process, _ready, (escapee,)),
    ):
        if failing == "pidfd_open":
            monkeypatch.setattr(os, "pidfd_open", _no_pidfd)
        else:
            monkeypatch.setattr(reaper, "_epoll", _FullEpoll(reaper._epoll))
        reported: list[int | None] = []
        reaper.watch(process, lambda _process, code: reported.append(code))
        monkeypatch.undo()
        assert reported == [128 + signal.SIGKILL]
        assert reaper.find(process.session_id) is None
        assert not process_alive(process.pid)
        _sweep_now(clock, timers)
        eventually(lambda: not process_alive(escapee))
