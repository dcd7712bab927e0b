"""hive_actors benchmarks: each workload against its baseline, measured in the same run.

    python bench/run.py [WORKLOAD ...] [--rounds R] [--quick | --scale S]

Workloads: lifecycle, live, latency, fanout, recovery, journal, cluster, workspace, cgroups
(default: all).
Each prints one JSON line per figure: the median of R rounds, the baseline measured alongside,
and their ratio.
Machines here are shared and noisy: read the ratios, not single absolute times.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import logging
import os
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog

from hive_actors import Event, Hive, _git
from hive_actors._models import ContextMessageEvent
from hive_actors._registry import Registry
from hive_actors._workspace import create_wal
from hive_actors.errors import InvalidLimits

TRUE = shutil.which("true") or "/bin/true"
SLEEP = shutil.which("sleep") or "/bin/sleep"


def emit(benchmark: str, **figures: Any) -> None:
    # The real stdout: while Ray is joined, what it prints goes to stderr (bench_cluster).
    print(json.dumps({"benchmark": benchmark, **figures}), file=sys.__stdout__, flush=True)


_scratch: list[Path] = []


@contextmanager
def scratch() -> Iterator[None]:
    """One directory for every round's files, removed when the whole run ends.

    Rounds do not clean up after themselves: on ext4 (without a journal, as here) making a
    file scans past every inode freed in its block group in the last few seconds, so the
    thousands a round frees would slow whichever contender ran next.
    """
    _scratch.append(Path(tempfile.mkdtemp(prefix="hive-bench-")))
    try:
        yield
    finally:
        shutil.rmtree(_scratch.pop(), ignore_errors=True)


@contextmanager
def temp_root() -> Iterator[Path]:
    """A fresh directory for one round (inside the run's scratch directory)."""
    assert _scratch, "temp_root() is used inside scratch()"
    yield Path(tempfile.mkdtemp(dir=_scratch[-1]))


def run_threads(count: int, work: Callable[[int], None]) -> None:
    """Run ``work(i)`` on ``count`` threads; the first exception any raised is raised here."""
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            work(index)
        except BaseException as exc:  # noqa: BLE001 -- re-raised by the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


class GaveUp(Exception):
    """A contender could not finish the workload (the peer's commands timed out)."""


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def ms(values: list[float], share: float, digits: int = 2) -> float:
    """The ``share`` percentile of ``values`` (seconds), in milliseconds."""
    return round(percentile(values, share) * 1000, digits)


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# -- 1. lifecycle throughput ------------------------------------------------------------------


def prepare(work: Path) -> None:
    """The per-session preparation every contender does: its dir and a WAL SQLite file,
    made as hive_actors makes it (a copy of the empty WAL file SQLite made first)."""
    (work / ".swarm").mkdir(parents=True)
    create_wal(work / ".swarm" / "memory.db")


def floor_lifecycle(root: Path, sessions: int, concurrency: int) -> float:
    """The bare per-session work and nothing else; returns seconds."""

    def one(index: int) -> None:
        work = root / "floor" / str(index)
        prepare(work)
        with open(root / f"floor-{index}.log", "ab") as log:
            process = subprocess.Popen(
                [TRUE],
                cwd=work,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        code = process.wait()
        (work / "exit").write_text(str(code))

    per_thread = sessions // concurrency

    def work(thread: int) -> None:
        for index in range(thread * per_thread, (thread + 1) * per_thread):
            one(index)

    started = time.perf_counter()
    run_threads(concurrency, work)
    return time.perf_counter() - started


def circus_lifecycle(root: Path, sessions: int, concurrency: int) -> float:
    """One watcher per session, added and started from ``concurrency`` clients, each
    awaited through circus's event stream (its "reap" of the exited process). A round
    that runs past PEER_BUDGET seconds is given up (GaveUp), not waited out."""
    from circus_peer import Circus

    per_thread = sessions // concurrency
    with Circus(root / "circus") as circus:
        ended = threading.Semaphore(0)
        circus.on_event(lambda _name, event: ended.release() if event == "reap" else None)
        started = time.perf_counter()
        deadline = started + PEER_BUDGET
        lost = f"circus did not finish {sessions} sessions at concurrency {concurrency}"

        def work(thread: int) -> None:
            client = circus.client()
            try:
                for index in range(per_thread):
                    if time.perf_counter() > deadline:
                        raise GaveUp(f"{lost} within {PEER_BUDGET:g} s")
                    name = f"s{thread}-{index}"
                    prepare(root / "work" / name)
                    work_dir, log = root / "work" / name, root / f"{name}.log"
                    circus.add(client, name, [TRUE], work_dir, log, deadline)
            finally:
                client.stop()

        try:
            run_threads(concurrency, work)
        except GaveUp:
            raise
        except Exception as exc:  # circus.exc.CallError: its own client timed out
            raise GaveUp(f"{lost}: {exc}") from exc
        for done in range(per_thread * concurrency):
            if not ended.acquire(timeout=max(0.0, deadline - time.perf_counter())):
                raise GaveUp(f"{lost} within {PEER_BUDGET:g} s ({done} reaped)")
        return time.perf_counter() - started


def hive_lifecycle(root: Path, sessions: int, concurrency: int) -> float:
    """create -> completed observed by a subscriber, from ``concurrency`` threads."""
    per_thread = sessions // concurrency
    total = per_thread * concurrency
    with Hive(root=root / "hive", command=[TRUE], max_running=100_000) as hive:
        ended = threading.Semaphore(0)

        def observe(event: Event) -> None:
            if event.type == "session.status" and event.to in ("completed", "failed"):
                ended.release()

        hive.subscribe_to_all_sessions(observe)
        started = time.perf_counter()

        def work(_thread: int) -> None:
            for index in range(per_thread):
                hive.start_session(hive.create_session(f"task {index}"))

        run_threads(concurrency, work)
        for _ in range(total):
            ended.acquire()
        return time.perf_counter() - started


LEVELS = (1, 4, 16)
PEER_BUDGET = 120.0
"""Seconds the peer gets for one round before it is called given up."""


def bench_lifecycle(rounds: int, sessions: int, plot: Path | None, peer: bool) -> None:
    contenders: dict[str, Callable[[Path, int, int], float]] = {
        "floor": floor_lifecycle,
        "hive": hive_lifecycle,
    }
    if peer and circus_available():
        contenders["circus"] = circus_lifecycle
    per_second: dict[str, list[float | None]] = {name: [] for name in contenders}
    gave_up: dict[str, str] = {}
    for concurrency in LEVELS:
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(rounds):
            for name, run in contenders.items():
                if name in gave_up:
                    continue
                with temp_root() as root:
                    try:
                        times[name].append(run(root, sessions, concurrency))
                    except GaveUp as exc:
                        gave_up[name] = str(exc)
        median = {name: statistics.median(v) for name, v in times.items() if v}
        for name in contenders:
            per_second[name].append(sessions / median[name] if name in median else None)
        emit(
            "lifecycle_throughput",
            sessions=sessions,
            concurrency=concurrency,
            **{f"{name}_sessions_per_s": round(sessions / median[name], 1) for name in median},
            ratio_hive_over_floor_time=round(median["hive"] / median["floor"], 2),
            ratio_circus_over_hive_time=(
                round(median["circus"] / median["hive"], 2) if "circus" in median else None
            ),
            gave_up=gave_up or None,
            target_ratio=1.5 if concurrency == 16 else None,
        )
    if plot is not None:
        draw_lifecycle(plot, sessions, per_second)


def draw_lifecycle(path: Path, sessions: int, per_second: dict[str, list[float | None]]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        emit("plot", skipped="matplotlib is not installed: pip install -e '.[bench]'")
        return
    figure, axes = pyplot.subplots(figsize=(7, 4.2), dpi=120)
    styles = {
        "floor": ("floor (bare script)", "#888888", "--"),
        "hive": ("hive_actors", "#1f6feb", "-"),
        "circus": ("circus 0.19", "#d1242f", "-."),
    }
    for name, values in per_second.items():
        label, colour, line = styles[name]
        points = [(level, v) for level, v in zip(LEVELS, values, strict=True) if v is not None]
        if len(points) < len(LEVELS):
            label += f" (gave up at {LEVELS[len(points)]})"
        axes.plot(*zip(*points, strict=True), line, marker="o", color=colour, label=label)
    axes.set_xscale("log", base=2)
    axes.set_xticks(LEVELS, [str(level) for level in LEVELS])
    axes.set_xlabel("concurrent callers")
    axes.set_ylabel("sessions / s (create to completed)")
    axes.set_title(
        f"Lifecycle throughput, {sessions} one-shot sessions of /bin/true, {os.cpu_count()} cores"
    )
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    emit("plot", path=str(path))


def circus_available() -> bool:
    try:
        import circus_peer  # noqa: F401
    except ImportError:
        emit("circus", skipped="circus is not installed: pip install -e '.[bench]'")
        return False
    return True


# -- 2. live scale ----------------------------------------------------------------------------


SINGLE_STOPS = 50
"""Sessions stopped one at a time, every other session alive."""
EXITS = 200
"""Agents killed one at a time from outside the manager: their exit, to the subscriber."""


def _live_shares(names: list[str]) -> tuple[list[str], list[str], list[str]]:
    """The live sessions split into those stopped one at a time, those whose agent is
    killed from outside, and the rest (stopped at once): SINGLE_STOPS and EXITS, or fewer
    on a small run, so that at least half of them are left for the mass stop."""
    single = min(SINGLE_STOPS, len(names) // 8)
    exits = single + min(EXITS, len(names) // 4)
    return names[:single], names[single:exits], names[exits:]


def bench_live(sizes: list[int], peer_sizes: list[int]) -> None:
    for sessions in sizes:
        hive_live(sessions)
        if sessions in peer_sizes and circus_available():
            circus_live(sessions)


def hive_live(sessions: int) -> None:
    with (
        temp_root() as root,
        Hive(root=root, command=[SLEEP, "3600"], max_running=100_000, grace_period=5) as hive,
    ):
        latencies: list[float] = []
        delivered: list[float] = []
        published: dict[int, float] = {}
        # When each event was published: right after its commit, under the registry lock
        # (the bus's observers run before any subscriber is handed the event).
        hive._core.bus.observe(lambda event: published.__setitem__(event.seq, time.perf_counter()))
        running = threading.Semaphore(0)
        stopped = threading.Semaphore(0)
        ended: dict[str, float] = {}
        went_running: list[float] = []

        def observe(event: Event) -> None:
            assert event.type != "journal.trimmed"  # a live subscription: nothing replayed
            latencies.append((dt.datetime.now(dt.UTC) - event.at).total_seconds())
            delivered.append(time.perf_counter() - published[event.seq])
            if event.type == "session.status":
                if event.to == "running":
                    went_running.append(time.perf_counter())
                    running.release()
                elif event.to in ("terminated", "failed"):
                    ended[event.session_id] = time.perf_counter()
                    stopped.release()

        hive.subscribe_to_all_sessions(observe)
        rss_before, threads_before = rss_kib(), threading.active_count()
        ids: list[str] = []
        lock = threading.Lock()
        per_thread = sessions // 16

        def create(_thread: int) -> None:
            for _ in range(per_thread):
                session_id = hive.create_session("live")
                hive.start_session(session_id)
                with lock:
                    ids.append(session_id)

        created = started = time.perf_counter()
        run_threads(16, create)
        for _ in ids:
            running.acquire()
        to_running = time.perf_counter() - started
        rss_live, threads_live = rss_kib(), threading.active_count()
        latencies.clear()
        delivered.clear()
        cpu_before, idle_start = time.process_time(), time.perf_counter()
        time.sleep(3)  # idle CPU with every agent alive: the measurement is the wait
        idle_cpu = (time.process_time() - cpu_before) / (time.perf_counter() - idle_start)

        one_by_one, killed, rest = _live_shares(ids)
        signalled, observed = [], []
        for session_id in one_by_one:  # one at a time, all the others still alive
            started = time.perf_counter()
            hive.terminate_session(session_id, grace=5)
            signalled.append(time.perf_counter() - started)
            stopped.acquire()
            observed.append(ended[session_id] - started)
        exits = []
        for session_id in killed:  # the same, on its own
            agent = _agent_of(hive.get_session_info(session_id).pid)
            started = time.perf_counter()
            os.kill(agent, signal.SIGKILL)
            stopped.acquire()
            exits.append(ended[session_id] - started)
        latencies.clear()
        delivered.clear()

        def stop(thread: int) -> None:
            for session_id in rest[thread::16]:
                hive.terminate_session(session_id, grace=5)

        started, to_stop = _stop_at_once(stop, stopped.acquire, rest)
        timings = _timings(created, went_running, to_running, started, to_stop, ended, rest)
        emit(
            "live_scale",
            contender="hive",
            sessions=len(ids),
            manager_rss_kib_per_session=round((rss_live - rss_before) / len(ids), 2),
            threads_per_session=round((threads_live - threads_before) / len(ids), 4),
            threads_total=threads_live,
            **timings,
            idle_cpu_percent=round(idle_cpu * 100, 2),
            one_stop_signalled_ms_p50=ms(signalled, 0.5),
            one_stop_signalled_ms_p99=ms(signalled, 0.99),
            one_stop_observed_ms_p50=ms(observed, 0.5),
            one_stop_observed_ms_p99=ms(observed, 0.99),
            exit_to_subscriber_ms_p50=ms(exits, 0.5),
            exit_to_subscriber_ms_p99=ms(exits, 0.99),
            mass_stop_event_latency_ms_p50=ms(latencies, 0.5),
            mass_stop_event_latency_ms_p99=ms(latencies, 0.99),
            mass_stop_commit_to_subscriber_ms_p50=ms(delivered, 0.5),
            mass_stop_commit_to_subscriber_ms_p99=ms(delivered, 0.99),
        )


def _agent_of(shim: int | None) -> int:
    """The agent process of a running session: the only child of its shim."""
    children = Path(f"/proc/{shim}/task/{shim}/children").read_text().split()
    if len(children) != 1:
        raise RuntimeError(f"the shim {shim} has children {children}, not one agent")
    return int(children[0])


def _stop_at_once(
    stop: Callable[[int], None], wait_one: Callable[[], object], rest: list[str]
) -> tuple[float, float]:
    """Stop ``rest`` from 16 threads (``stop(thread)`` stops its share) and wait until
    ``wait_one()`` returned once for each; returns when it began and how long it took."""
    started = time.perf_counter()
    run_threads(16, stop)
    for _ in rest:
        wait_one()
    return started, time.perf_counter() - started


def _timings(
    created: float,
    went_running: list[float],
    to_running: float,
    stop_started: float,
    to_stop: float,
    ended: dict[str, float],
    rest: list[str],
) -> dict[str, Any]:
    """The time figures every contender of the live workload reports, 500 being the
    number of sessions the targets speak of."""

    def to_500th(times: list[float], since: float) -> float | None:
        return round(sorted(times)[499] - since, 3) if len(times) >= 500 else None

    return {
        "seconds_to_running": round(to_running, 3),
        "seconds_to_500_running": to_500th(went_running, created),
        "seconds_to_stop_all": round(to_stop, 3),
        "seconds_to_stop_500": to_500th([ended[name] for name in rest], stop_started),
        "stopped_at_once": len(rest),
    }


def circus_live(sessions: int) -> None:
    """The live workload for circus, given up (and reported so) past LIVE_PEER_BUDGET s."""
    from circus.exc import CallError
    from circus_peer import Circus

    with temp_root() as root, Circus(root / "circus") as circus:
        spawned = threading.Semaphore(0)
        reaped = threading.Semaphore(0)
        ended: dict[str, float] = {}
        went_running: list[float] = []
        began = time.perf_counter()
        deadline = began + LIVE_PEER_BUDGET

        def observe(name: str, event: str) -> None:
            if event == "spawn":
                went_running.append(time.perf_counter())
                spawned.release()
            elif event == "reap":
                ended[name] = time.perf_counter()
                reaped.release()

        def wait(semaphore: threading.Semaphore, what: str) -> None:
            if not semaphore.acquire(timeout=max(0.0, deadline - time.perf_counter())):
                raise GaveUp(f"no {what} event within {LIVE_PEER_BUDGET:g} s of the start")

        def call(client: Any, command: str, **properties: Any) -> dict[str, Any]:
            return circus.call(client, command, deadline, **properties)

        circus.on_event(observe)
        rss_before = circus.rss_kib()
        per_thread = sessions // 16
        names = [f"s{t}-{i}" for t in range(16) for i in range(per_thread)]
        one_by_one, killed, rest = _live_shares(names)

        def add(thread: int) -> None:
            client = circus.client()
            try:
                for name in names[thread::16]:
                    if time.perf_counter() > deadline:
                        raise GaveUp(f"not all added within {LIVE_PEER_BUDGET:g} s")
                    prepare(root / "work" / name)
                    circus.add(
                        client, name, [SLEEP, "3600"], root / "work" / name, root / "log", deadline
                    )
            finally:
                client.stop()

        def stop(thread: int) -> None:
            client = circus.client()
            try:
                for name in rest[thread::16]:
                    call(client, "stop", name=name)
            finally:
                client.stop()

        try:
            created = started = time.perf_counter()
            run_threads(16, add)
            for _ in names:
                wait(spawned, "spawn")
            to_running = time.perf_counter() - started
            rss_live, threads_live = circus.rss_kib(), circus.threads()
            cpu_before = _cpu_seconds(circus.process.pid)
            time.sleep(3)  # idle CPU with every agent alive: the measurement is the wait
            idle_cpu = (_cpu_seconds(circus.process.pid) - cpu_before) / 3

            client = circus.client()
            observed, exits = [], []
            try:
                for name in one_by_one:
                    started = time.perf_counter()
                    call(client, "stop", name=name)
                    wait(reaped, "reap")
                    observed.append(ended[name] - started)
                for name in killed:
                    (agent,) = call(client, "list", name=name)["pids"]
                    started = time.perf_counter()
                    os.kill(agent, signal.SIGKILL)
                    wait(reaped, "reap")
                    exits.append(ended[name] - started)
            finally:
                client.stop()
            started, to_stop = _stop_at_once(stop, lambda: wait(reaped, "reap"), rest)
        except (GaveUp, TimeoutError, CallError) as exc:  # CallError: its client timed out
            emit(
                "live_scale",
                contender="circus",
                sessions=len(names),
                gave_up=f"after {time.perf_counter() - began:.0f} s: {exc}",
            )
            return
        timings = _timings(created, went_running, to_running, started, to_stop, ended, rest)
        emit(
            "live_scale",
            contender="circus",
            sessions=len(names),
            manager_rss_kib_per_session=round((rss_live - rss_before) / len(names), 2),
            threads_total=threads_live,
            **timings,
            idle_cpu_percent=round(idle_cpu * 100, 2),
            one_stop_observed_ms_p50=ms(observed, 0.5),
            one_stop_observed_ms_p99=ms(observed, 0.99),
            exit_to_subscriber_ms_p50=ms(exits, 0.5),
            exit_to_subscriber_ms_p99=ms(exits, 0.99),
        )


LIVE_PEER_BUDGET = 300.0
"""Seconds circus gets for the whole live workload (its own client times out on an
``add`` after 30 s; a mass stop it cannot keep up with would otherwise never end)."""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- 3. API latency (in-process) --------------------------------------------------------------


def _emit_latency(
    benchmark: str, concurrency: int, creates: list[float], statuses: list[float], target: float
) -> None:
    emit(
        benchmark,
        concurrency=concurrency,
        create_ms_p50=ms(creates, 0.5, 3),
        create_ms_p99=ms(creates, 0.99, 3),
        status_ms_p50=ms(statuses, 0.5, 4),
        status_ms_p99=ms(statuses, 0.99, 4),
        target_create_ms_p99=target,
    )


def bench_latency(calls: int) -> None:
    with temp_root() as root, Hive(root=root, command=[TRUE]) as hive:
        for concurrency in (1, 16):
            creates, statuses = _latency_round(hive, calls, concurrency)
            _emit_latency("api_latency_in_process", concurrency, creates, statuses, target=5)


def _latency_round(hive: Hive, calls: int, concurrency: int) -> tuple[list[float], list[float]]:
    return _timed_calls(calls, concurrency, lambda: _InProcess(hive))


class _InProcess:
    def __init__(self, hive: Hive) -> None:
        self.hive = hive

    def create(self) -> str:
        return self.hive.create_session("latency")

    def status(self, session_id: str) -> None:
        self.hive.status(session_id)

    def close(self) -> None:
        pass


class _OverSocket:
    """A real HTTP client on the daemon's Unix socket, one connection per caller."""

    def __init__(self, socket: Path) -> None:
        import httpx

        transport = httpx.HTTPTransport(uds=str(socket))
        self.http = httpx.Client(transport=transport, base_url="http://hive", timeout=60)

    def create(self) -> str:
        reply = self.http.post("/sessions", json={"task": "latency"})
        reply.raise_for_status()
        return str(reply.json()["session_id"])

    def status(self, session_id: str) -> None:
        self.http.get(f"/sessions/{session_id}/status").raise_for_status()

    def close(self) -> None:
        self.http.close()


def _timed_calls(
    calls: int, concurrency: int, connect: Callable[[], Any]
) -> tuple[list[float], list[float]]:
    creates: list[float] = []
    statuses: list[float] = []
    lock = threading.Lock()

    def client(_thread: int) -> None:
        caller = connect()
        mine_c, mine_s = [], []
        try:
            for _ in range(calls // concurrency):
                started = time.perf_counter()
                session_id = caller.create()
                mine_c.append(time.perf_counter() - started)
                started = time.perf_counter()
                caller.status(session_id)
                mine_s.append(time.perf_counter() - started)
        finally:
            caller.close()
        with lock:
            creates.extend(mine_c)
            statuses.extend(mine_s)

    run_threads(concurrency, client)
    return creates, statuses


def bench_daemon_latency(calls: int) -> None:
    from hive_actors._client import Client

    with temp_root() as root:
        client = Client(root)
        client.ensure_daemon()
        try:
            for concurrency in (1, 16):
                creates, statuses = _timed_calls(
                    calls, concurrency, lambda: _OverSocket(client.socket)
                )
                _emit_latency("api_latency_daemon_socket", concurrency, creates, statuses, 15)
        finally:
            client.call("POST", "/shutdown")
            client.close()
            _wait_gone(client.socket)


def _wait_gone(path: Path) -> None:
    """The daemon removes its socket last when it stops; give it a bounded while."""
    deadline = time.monotonic() + 30
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


# -- 4. event fan-out and replay --------------------------------------------------------------


def bench_fanout(events: int) -> None:
    with temp_root() as root, Hive(root=root, command=[TRUE]) as hive:
        session_id = hive.create_session("fan-out")
        at = dt.datetime.now(dt.UTC)
        batch = [
            ContextMessageEvent(session_id=session_id, at=at, role="user", content="x")
            for _ in range(100)
        ]
        for subscribers in (1, 10, 100):
            elapsed = _fanout_round(hive, batch, events, subscribers)
            emit(
                "event_fanout",
                subscribers=subscribers,
                events=events,
                deliveries_per_s=round(events * subscribers / elapsed),
                target_per_s_one_subscriber=100_000 if subscribers == 1 else None,
            )
        for subscribers in (1, 10, 100):
            elapsed = _delivery_round(hive, events, subscribers)
            emit(
                "event_delivery",
                subscribers=subscribers,
                events=events,
                deliveries_per_s=round(events * subscribers / elapsed),
                target_per_s_one_subscriber=100_000 if subscribers == 1 else None,
                note="bus to callbacks only: events already journaled",
            )
        started = time.perf_counter()
        replayed = sum(1 for _ in hive.events(since=0))
        elapsed = time.perf_counter() - started
        emit(
            "event_replay",
            events=replayed,
            seconds=round(elapsed, 3),
            events_per_s=round(replayed / elapsed),
        )


def _fanout_round(hive: Hive, batch: list[ContextMessageEvent], events: int, count: int) -> float:
    """Seconds until ``count`` subscribers each received ``events`` journaled events."""
    registry = hive._core.registry  # journal + publish: the path every event takes
    done = threading.Barrier(count + 1)
    target = hive.last_seq + events

    def receive(event: Event) -> None:
        if event.seq == target:
            done.wait()

    subscriptions = [hive.subscribe_to_all_sessions(receive) for _ in range(count)]
    started = time.perf_counter()
    for _ in range(events // len(batch)):
        registry.append(batch)
    done.wait()
    elapsed = time.perf_counter() - started
    for subscription in subscriptions:
        hive.unsubscribe(subscription)
    return elapsed


def _delivery_round(hive: Hive, events: int, count: int) -> float:
    """Seconds to deliver ``events`` journaled events from the bus to ``count`` callbacks."""
    journal = [
        event
        for event in hive.events(since=max(0, hive.last_seq - events))
        if event.type != "journal.trimmed"  # nothing is trimmed here; the type says it could
    ]
    while len(journal) < events:
        journal += journal[: events - len(journal)]
    last = journal[-1]
    done = threading.Barrier(count + 1)
    seen = [0] * count

    def make(index: int) -> Callable[[Event], None]:
        def receive(event: Event) -> None:
            seen[index] += 1
            if seen[index] == events and event is last:
                done.wait()

        return receive

    subscriptions = [hive.subscribe_to_all_sessions(make(i)) for i in range(count)]
    publish = hive._core.bus.publish  # what a commit calls, minus the commit
    started = time.perf_counter()
    for event in journal:
        publish(event)
    done.wait()
    elapsed = time.perf_counter() - started
    for subscription in subscriptions:
        hive.unsubscribe(subscription)
    return elapsed


# -- 5. recovery ------------------------------------------------------------------------------


def bench_recovery(sessions: int) -> None:
    config: dict[str, Any] = {"command": [SLEEP, "3600"], "max_running": 100_000}
    with temp_root() as root:
        with Hive(root=root, shutdown="leave", **config) as first:
            ids = [first.create_session(f"r{i}") for i in range(sessions)]
            for session_id in ids[: sessions // 2]:
                first.start_session(session_id)
        started = time.perf_counter()
        second = Hive(root=root, **config)
        elapsed = time.perf_counter() - started
        running = len(second.list_sessions("running"))
        second.close(grace=0)
        emit(
            "recovery",
            sessions=sessions,
            live_agents=sessions // 2,
            re_adopted=running,
            seconds=round(elapsed, 3),
            target_seconds=3,
        )


# -- 6. the journal over a day ---------------------------------------------------------------

DAY_SESSIONS_PER_S = 10.0
DAY_RETENTION_HOURS = 1.0
"""Sessions are removed an hour after they end, and the journal keeps an hour (its default:
``retention_hours``): a day is 24 retention periods, 23 of them with trimming."""
JOURNAL_WRITERS = 8


def bench_journal(scale: float) -> None:
    """A day of ``10 x scale`` sessions a second, with retention and trimming as a hive
    does them, on the registry's own write path; its file's size along the day.

    ``scale`` shrinks the day, the retention and the housekeeping interval with the rate,
    so that every scale runs the same 24 retention periods of 1,440 passes.
    """
    seconds = 86_400 * scale
    sessions = round(DAY_SESSIONS_PER_S * scale * seconds)
    with temp_root() as root:
        day = _JournalDay(root / "registry.db", DAY_RETENTION_HOURS * scale)
        sizes = day.run(sessions, seconds)
        before, writes, batches = day.untrimmed_writes, day.write_seconds, day.batch_seconds
        per_session = day.bytes_per_session
        rebuild_mb, rebuild_s = _rebuild(root / "registry.db")
    hourly = [round(size / 1e6, 3) for size in sizes]
    emit(
        "journal_day",
        sessions=sessions,
        sessions_per_s=DAY_SESSIONS_PER_S * scale,
        day_hours=round(24 * scale, 3),
        retention_hours=DAY_RETENTION_HOURS * scale,
        db_mb_by_24th_of_the_day=hourly,
        steady_max_mb=max(hourly[2:]),
        last_mb=hourly[-1],
        wal_mb_max=round(day.wal_max / 1e6, 2),
        untrimmed_mb_estimate=round(per_session * sessions / 1e6, 1),
        bytes_per_session_untrimmed=round(per_session),
        events_trimmed=day.trimmed,
        write_ms_p99=ms(writes, 0.99),
        write_ms_max=ms(writes, 1.0),
        write_ms_p99_before_trimming=ms(before, 0.99),
        trim_lock_held_ms_p99=ms(batches, 0.99),
        trim_lock_held_ms_max=ms(batches, 1.0),
        note="untrimmed: the first period's bytes per session times the day's sessions",
    )
    emit(
        "journal_rebuild",
        mb=rebuild_mb,
        seconds=rebuild_s,
        mb_per_s=round(rebuild_mb / rebuild_s, 1) if rebuild_s else None,
        note="a registry made before trimming, made incremental once at open",
    )


class _JournalDay:
    """The day, a housekeeping interval (1/1440 of it) at a time: the sessions created in
    it are written by ``JOURNAL_WRITERS`` threads, while the pass that became due trims
    the journal concurrently, as the hive's maintenance thread does."""

    def __init__(self, path: Path, retention_hours: float) -> None:
        self.path = path
        self.registry = Registry(path, lambda event: None)
        self.batch_seconds: list[float] = []
        """How long each trimming batch held the registry's lock."""
        held = _HeldBy(self.registry._lock, "hive-maintenance", self.batch_seconds)
        self.registry._lock = held  # type: ignore[assignment]
        self.retention = dt.timedelta(hours=retention_hours)
        self.hours = retention_hours
        self.start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        self.ended: list[tuple[dt.datetime, str]] = []
        self.write_seconds: list[float] = []
        self.untrimmed_writes: list[float] = []
        """Those of the first period, before anything is old enough to be trimmed."""
        self.trimmed = 0
        self.bytes_per_session = 0.0
        self.wal_max = 0
        self._lock = threading.Lock()

    def run(self, sessions: int, seconds: float) -> list[int]:
        """Returns the database's size at the end of each 24th of the day."""
        passes = 1440
        interval = seconds / passes
        sizes: list[int] = []
        made = 0
        writers = ThreadPoolExecutor(JOURNAL_WRITERS)
        maintenance = ThreadPoolExecutor(1, thread_name_prefix="hive-maintenance")
        trimming: Future[None] | None = None
        try:
            for index in range(passes):
                now = self.start + dt.timedelta(seconds=index * interval)
                due = round(sessions * (index + 1) / passes) - made
                self._write(writers, range(made, made + due), now, interval)
                made += due
                if trimming is not None:
                    trimming.result()
                now += dt.timedelta(seconds=interval)
                self._remove_ended(now)
                trimming = maintenance.submit(self._trim, now)
                if (index + 1) % (passes // 24) == 0:
                    trimming.result()
                    sizes.append(self._size())
                    if len(sizes) == 1:  # nothing trimmed yet: every session still whole
                        self.bytes_per_session = sizes[0] / made
                        self.untrimmed_writes, self.write_seconds = self.write_seconds, []
        finally:
            writers.shutdown()
            maintenance.shutdown()
            self.registry.close()
        return sizes

    def _write(
        self, writers: ThreadPoolExecutor, indexes: range, now: dt.datetime, interval: float
    ) -> None:
        from hive_actors._models import SessionCreatedEvent, SessionInfo, SessionStatusEvent
        from hive_actors._states import Status

        def one(index: int) -> None:
            session_id = str(uuid.UUID(int=index + 1))
            at = now + dt.timedelta(seconds=interval * (index - indexes.start) / len(indexes))
            base = f"/var/lib/hive_actors/sessions/{session_id}"
            info = SessionInfo(
                session_id=session_id,
                task=f"Build a Rust CLI tool for file processing, part {index}",
                priority="medium",
                status=Status.CREATED,
                created=at,
                updated=at,
                working_dir=base,
                output_dir=f"{base}/output",
                database=f"{base}/.swarm/memory.db",
                log_file=f"/var/lib/hive_actors/logs/{session_id}.log",
                metadata={"project": "bench", "part": index},
                command=("claude-flow", "hive-mind", "spawn", "{task}"),
            )
            ended = at + dt.timedelta(seconds=min(30.0, interval))
            done = info.model_copy(
                update={
                    "status": Status.COMPLETED,
                    "updated": ended,
                    "exit_code": 0,
                    "runs": 1,
                    "reason": "exited",
                    "detail": "exited with code 0",
                }
            )
            started = time.perf_counter()
            self.registry.insert(
                info,
                [
                    SessionCreatedEvent(
                        session_id=session_id,
                        at=at,
                        task=info.task,
                        priority=info.priority,
                        metadata=info.metadata,
                    ),
                    SessionStatusEvent(session_id=session_id, at=at, to=Status.CREATED),
                ],
            )
            middle = time.perf_counter()
            self.registry.update(
                done,
                [
                    SessionStatusEvent(
                        session_id=session_id, at=at, from_=Status.CREATED, to=Status.STARTING
                    ),
                    SessionStatusEvent(
                        session_id=session_id,
                        at=at,
                        from_=Status.STARTING,
                        to=Status.RUNNING,
                        reason="spawned",
                        pid=4242,
                    ),
                    SessionStatusEvent(
                        session_id=session_id,
                        at=ended,
                        from_=Status.RUNNING,
                        to=Status.COMPLETED,
                        reason="exited",
                        detail="exited with code 0",
                        exit_code=0,
                    ),
                ],
            )
            finished = time.perf_counter()
            with self._lock:
                self.write_seconds += [middle - started, finished - middle]
                self.ended.append((ended, session_id))

        for done in [writers.submit(one, index) for index in indexes]:
            done.result()

    def _remove_ended(self, now: dt.datetime) -> None:
        """Retention: sessions that ended ``retention`` ago go, as ``Hive.cleanup`` does."""
        from hive_actors._models import SessionRemovedEvent

        with self._lock:
            self.ended.sort()
            cut = 0
            while cut < len(self.ended) and self.ended[cut][0] <= now - self.retention:
                cut += 1
            expired, self.ended = self.ended[:cut], self.ended[cut:]
        for _ended, session_id in expired:
            started = time.perf_counter()
            self.registry.delete(session_id, [SessionRemovedEvent(session_id=session_id, at=now)])
            self.write_seconds.append(time.perf_counter() - started)

    def _trim(self, now: dt.datetime) -> None:
        from hive_actors._maintenance import trim_journal

        self.trimmed += trim_journal(self.registry, now, self.hours).events

    def _size(self) -> int:
        """The database's size as its pages say: what the file holds once the WAL is
        checkpointed (the WAL itself stays under SQLite's 4 MB autocheckpoint)."""
        with contextlib.closing(sqlite3.connect(self.path)) as db:
            (pages,) = db.execute("PRAGMA page_count").fetchone()
            (page_size,) = db.execute("PRAGMA page_size").fetchone()
        wal = self.path.with_name(self.path.name + "-wal")
        self.wal_max = max(self.wal_max, wal.stat().st_size if wal.exists() else 0)
        return int(pages * page_size)


class _HeldBy:
    """The registry's lock, recording how long threads named ``holder...`` hold it each
    time (what a writer waiting for it may have to wait)."""

    def __init__(self, lock: Any, holder: str, seconds: list[float]) -> None:
        self._lock = lock
        self._holder = holder
        self._seconds = seconds
        self._taken = 0.0

    def __enter__(self) -> None:
        self._lock.acquire()
        self._taken = time.perf_counter()

    def __exit__(self, *_exc: object) -> None:
        held = time.perf_counter() - self._taken
        if threading.current_thread().name.startswith(self._holder):
            self._seconds.append(held)
        self._lock.release()


def _rebuild(path: Path) -> tuple[float, float]:
    """The once-only rebuild of a registry made before trimming: the day's file, put back
    in that form (no auto_vacuum), opened again. Its size in MB, and the open's seconds."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as old:
        old.execute("PRAGMA auto_vacuum=NONE")
        old.execute("VACUUM")
        old.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = path.stat().st_size / 1e6
    started = time.perf_counter()
    Registry(path, lambda event: None).close()
    return round(size, 1), round(time.perf_counter() - started, 3)


# -- 7. the cluster engine ---------------------------------------------------------------------


def bench_cluster(rounds: int, calls: int, sessions: int, live: int) -> None:
    """ClusterHive on a simulated cluster of two hosts on this machine, against one local
    Hive in the same run: call overhead, lifecycle throughput, a host killed under live
    agents, and how soon a host's commit reaches a front end's subscriber."""
    # First, before anything imports Ray: the simulated cluster stays on 127.0.0.1.
    from hive_actors.testing import ray_cluster  # isort: skip
    from hive_actors.cluster import ClusterHive
    from hive_actors.testing import clear_cgroups

    with temp_root() as local_root, Hive(root=local_root, command=[TRUE]) as hive:
        local_creates, local_statuses = _timed_calls(calls, 1, lambda: _InProcess(hive))
    local_rates = []
    for _ in range(rounds):
        with temp_root() as root:
            local_rates.append(sessions / hive_lifecycle(root, sessions, 16))
    # Ray's driver prints its cluster's news ("a worker died ...") on stdout: not here.
    with temp_root() as host_root:
        try:
            with contextlib.redirect_stdout(sys.stderr), ray_cluster.local_cluster(["a", "b"]):
                settings: dict[str, Any] = {
                    "command": [SLEEP, "3600"],
                    "max_running": 100_000,
                    "grace_period": 1.0,
                }
                with ClusterHive(host_root=host_root, **settings) as cluster:
                    creates, statuses = _timed_calls(calls, 1, lambda: _InProcess(cluster))  # type: ignore[arg-type]
                    emit(
                        "cluster_call_latency",
                        calls=calls,
                        create_ms_p50=ms(creates, 0.5, 3),
                        create_ms_p99=ms(creates, 0.99, 3),
                        status_ms_p50=ms(statuses, 0.5, 3),
                        status_ms_p99=ms(statuses, 0.99, 3),
                        local_create_ms_p50=ms(local_creates, 0.5, 3),
                        local_status_ms_p50=ms(local_statuses, 0.5, 3),
                        target_ms_p50=3,
                        target_ms_p99=15,
                    )
                    cluster.cleanup(0)
                    rates = [
                        sessions / _cluster_lifecycle(cluster, sessions, 16) for _ in range(rounds)
                    ]
                    emit(
                        "cluster_lifecycle",
                        sessions=sessions,
                        concurrency=16,
                        hosts=2,
                        cluster_sessions_per_s=round(statistics.median(rates), 1),
                        local_sessions_per_s=round(statistics.median(local_rates), 1),
                        ratio_cluster_over_local=round(
                            statistics.median(rates) / statistics.median(local_rates), 3
                        ),
                        target_ratio=0.5,
                    )
                    _cluster_event_latency(cluster, live)
                    _cluster_host_kill(cluster, live // 10)
                    for info in cluster.list_sessions():
                        if not info.terminal:
                            cluster.terminate_session(info.session_id, grace=0)
                    for info in cluster.list_sessions():
                        cluster.wait(info.session_id, timeout=120)
        finally:  # the hosts died with their nodes, their Hives unclosed
            for host in ("a", "b"):
                clear_cgroups(host_root / host)


def _cluster_lifecycle(cluster: Any, sessions: int, concurrency: int) -> float:
    """create -> completed seen by a front end's subscriber, from ``concurrency`` threads."""
    per_thread = sessions // concurrency
    ended = threading.Semaphore(0)

    def observe(event: Event) -> None:
        if event.type == "session.status" and event.to in ("completed", "failed"):
            ended.release()

    subscription = cluster.subscribe_to_all_sessions(observe)
    started = time.perf_counter()

    def work(_thread: int) -> None:
        for index in range(per_thread):
            session_id = cluster.create_session(f"task {index}", command=[TRUE])
            cluster.start_session(session_id)

    run_threads(concurrency, work)
    for _ in range(per_thread * concurrency):
        ended.acquire()
    elapsed = time.perf_counter() - started
    cluster.unsubscribe(subscription)
    cluster.cleanup(0)
    return elapsed


def _cluster_event_latency(cluster: Any, live: int) -> None:
    """Host commit to a front end's subscriber, with ``live`` agents running over the hosts."""
    ids = [cluster.create_session(f"live {n}") for n in range(live)]
    _start_all(cluster, ids)
    lags: list[float] = []
    got = threading.Semaphore(0)

    def observe(event: Event) -> None:
        if event.type == "context.message":
            lags.append(time.time() - event.at.timestamp())
            got.release()

    subscription = cluster.subscribe_to_all_sessions(observe)
    samples = max(50, min(500, live))
    for n in range(samples):
        cluster.send_message(ids[n % live], "user", f"ping {n}")
        time.sleep(0.005)  # a steady trickle, not a burst: each event's own latency
    for _ in range(samples):
        got.acquire()
    cluster.unsubscribe(subscription)
    emit(
        "cluster_event_latency",
        live_sessions=live,
        hosts=2,
        events=samples,
        commit_to_subscriber_ms_p50=ms(lags, 0.5),
        commit_to_subscriber_ms_p99=ms(lags, 0.99),
        target_ms_p99=50,
    )


def _start_all(cluster: Any, ids: list[str]) -> None:
    def start(thread: int) -> None:
        for session_id in ids[thread::16]:
            cluster.start_session(session_id)

    run_threads(16, start)


def _cluster_host_kill(cluster: Any, agents: int) -> None:
    """SIGKILL a host with ``agents`` live agents: until it answers with all re-adopted."""
    import ray

    from hive_actors.cluster._coordinator import host_actor_name

    mine = [cluster.create_session(f"kept {n}", host="a") for n in range(agents)]
    _start_all(cluster, mine)
    host = ray.get_actor(host_actor_name("a"), namespace="hive")
    pid = ray.get(host.describe.remote())["pid"]
    started = time.perf_counter()
    os.kill(pid, signal.SIGKILL)
    while True:
        try:
            reply = ray.get(host.call.remote("list_sessions", ("running",), {}), timeout=60)
        except ray.exceptions.RayActorError:
            time.sleep(0.01)
            continue
        running = {info["session_id"] for info in reply[1]}
        if running >= set(mine):
            break
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    emit(
        "cluster_host_kill",
        live_agents=agents,
        re_adopted=len(set(mine) & running),
        seconds_to_answer_all_re_adopted=round(elapsed, 3),
        target_seconds=3,
    )


# -- 8. sessions from a repository ------------------------------------------------------------

FILES_PER_DIR = 100
BUILD_ENV = {
    "GIT_AUTHOR_NAME": "hive bench",
    "GIT_AUTHOR_EMAIL": "bench@hive.invalid",
    "GIT_COMMITTER_NAME": "hive bench",
    "GIT_COMMITTER_EMAIL": "bench@hive.invalid",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
}
"""git's identity and config for building the repository, whoever runs the benchmark."""


def bench_workspace(creates: int, files: int) -> None:
    """``create_session(repo=)`` on a repository of ``files`` files (a new worktree on a
    new branch), against ``git worktree add -b`` alone and a plain ``create_session``:
    ``creates`` of each, interleaved in one run, after one of each not counted.

    Nothing is removed until every create was timed: removing a worktree frees thousands
    of inodes, and every file made in the next half minute scans past them (see
    ``scratch``): with removals between them, ``git worktree add`` took 3-10x as long.
    """
    with temp_root() as root, Hive(root=root / "hive", command=[TRUE]) as hive:
        repo = root / "repo"
        _make_repository(repo, files)
        git = [_git.git_program(), "-C", str(repo)]
        env = _git._environment()  # git run as the hive runs it (the user's own config)
        from_repo: list[str] = []

        def worktree_add(index: int) -> float:
            argv = [*git, "worktree", "add", "--quiet", "-b", f"bench/{index}"]
            started = time.perf_counter()
            subprocess.run(
                [*argv, str(root / "worktrees" / str(index)), "HEAD"],
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                check=True,
            )
            return time.perf_counter() - started

        def repo_create(_index: int) -> float:
            started = time.perf_counter()
            from_repo.append(hive.create_session("t", repo=str(repo)))
            return time.perf_counter() - started

        def plain_create(_index: int) -> float:
            started = time.perf_counter()
            hive.create_session("t")
            return time.perf_counter() - started

        contenders = [worktree_add, repo_create, plain_create]
        times: dict[str, list[float]] = {run.__name__: [] for run in contenders}
        for index in range(creates + 1):  # the first: git's and the hive's one-off work
            turn = index % len(contenders)  # who goes first changes every time
            for run in contenders[turn:] + contenders[:turn]:
                elapsed = run(index)
                if index > 0:
                    times[run.__name__].append(elapsed)

        for session_id in from_repo:
            hive.terminate_session(session_id)  # created, never started: ended at once
            hive.remove_session(session_id, delete_branch=True)
        for index in range(creates + 1):
            path = str(root / "worktrees" / str(index))
            for argv in (
                ["worktree", "remove", "--force", path],
                ["branch", "-D", f"bench/{index}"],
            ):
                subprocess.run([*git, *argv], env=env, capture_output=True, check=True)

    shares = {"p50": 0.5, "p99": 0.99}
    figures = {
        f"{name}_ms_{label}": ms(values, share)
        for name, values in times.items()
        for label, share in shares.items()
    }
    ratios = {
        label: round(
            percentile(times["repo_create"], share) / percentile(times["worktree_add"], share), 3
        )
        for label, share in shares.items()
    }
    emit(
        "workspace_create",
        files=files,
        creates=creates,
        **figures,
        ratio_repo_create_over_worktree_add_p50=ratios["p50"],
        ratio_repo_create_over_worktree_add_p99=ratios["p99"],
        target_ratio=1.5,
        target_met_p50=ratios["p50"] <= 1.5,
        target_met_p99=ratios["p99"] <= 1.5,
    )


def _make_repository(repo: Path, files: int) -> None:
    """A repository of ``files`` small files, ``FILES_PER_DIR`` a directory, one commit."""
    for index in range(files):
        folder = repo / f"d{index // FILES_PER_DIR:03}"
        if index % FILES_PER_DIR == 0:
            folder.mkdir(parents=True)
        (folder / f"f{index % FILES_PER_DIR:03}.txt").write_text(f"file {index}\n")
    env = {name: value for name, value in os.environ.items() if not name.startswith("GIT_")}
    env.update(BUILD_ENV)
    for argv in (["init", "--quiet"], ["add", "-A"], ["commit", "--quiet", "-m", "files"]):
        subprocess.run(
            [_git.git_program(), "-C", str(repo), *argv], env=env, capture_output=True, check=True
        )


# -- 9. a cgroup per run ----------------------------------------------------------------------

CGROUP_VARIANTS = ("off", "auto", "limits")
"""``cgroups="off"``; ``cgroups="auto"``; ``auto`` with CGROUP_LIMITS on every session."""
CGROUP_LIMITS: dict[str, Any] = {"memory": "256M", "pids": 256, "cpus": 1}
CGROUP_TARGET_MS = 0.5
"""The most manager CPU a session's cgroup may add, in ms."""
CGROUP_ROUND_BUDGET = 120.0
"""Seconds one round's sessions get to complete before the round fails."""


def _own_cpu() -> float:
    """This process's CPU seconds, user and system, every thread (not its children)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench_cgroups(rounds: int, sessions: int) -> None:
    """The manager's own CPU per one-shot session (``/bin/true``) with a cgroup per run,
    against without, in one run: each round a fresh Hive on a fresh root for each of
    CGROUP_VARIANTS, who goes first turning every round, after one round of a tenth of
    the sessions each not counted (the first Hive's one-off work)."""
    per_session: dict[str, list[float]] = {name: [] for name in CGROUP_VARIANTS}
    open_close: dict[str, list[float]] = {name: [] for name in CGROUP_VARIANTS}
    modes: set[str] = set()
    skipped: str | None = None
    for index in range(rounds + 1):
        turn = index % len(CGROUP_VARIANTS)
        count = sessions if index > 0 else max(1, sessions // 10)
        for variant in CGROUP_VARIANTS[turn:] + CGROUP_VARIANTS[:turn]:
            if variant == "limits" and skipped is not None:
                continue
            try:
                cpu, fixed, mode = _cgroups_round(variant, count)
            except InvalidLimits as exc:  # this machine's cgroups cannot set them
                skipped = str(exc)
                continue
            if variant != "off":
                modes.add(mode)
            if index > 0:
                per_session[variant].append(cpu)
                open_close[variant].append(fixed)
    if len(modes) != 1:
        raise RuntimeError(f"the Hives of one run found different cgroup modes: {modes}")
    median = {name: statistics.median(v) * 1000 for name, v in per_session.items() if v}
    fixed_ms = {name: statistics.median(v) * 1000 for name, v in open_close.items() if v}
    delta = {name: median[name] - median["off"] for name in ("auto", "limits") if name in median}
    emit(
        "cgroup_overhead",
        sessions=sessions,
        rounds=rounds,
        cgroup_mode=modes.pop(),
        **{f"{name}_cpu_ms_per_session": round(median[name], 3) for name in median},
        **{f"delta_{name}_ms_per_session": round(delta[name], 3) for name in delta},
        **{f"{name}_open_close_cpu_ms": round(fixed_ms[name], 1) for name in fixed_ms},
        limits=CGROUP_LIMITS,
        limits_skipped=skipped,
        target_delta_ms=CGROUP_TARGET_MS,
        target_met=all(value <= CGROUP_TARGET_MS for value in delta.values()),
        note="manager CPU (user + system, every thread, not its children), create to completed",
    )


def _cgroups_round(variant: str, sessions: int) -> tuple[float, float, str]:
    """One Hive of ``variant`` running ``sessions`` one-shot sessions from one caller:
    its CPU seconds per session from the first create to the last completed, its CPU
    seconds outside that (opening and closing it), and its cgroup mode. Raises if a
    session did not complete, or if the Hive left a cgroup of its own behind."""
    limits = CGROUP_LIMITS if variant == "limits" else None
    with temp_root() as root:
        gc.collect()  # the rounds before's garbage, collected outside the measurement
        opened = _own_cpu()
        hive = Hive(
            root=root / "hive",
            command=[TRUE],
            max_running=100_000,
            cgroups="off" if variant == "off" else "auto",
        )
        try:
            mode = hive.stats().cgroup_mode
            dirs = list(hive._core.cgroups.dirs())
            if (mode == "none") != (not dirs):
                raise RuntimeError(f"cgroup mode {mode!r} with the Hive's cgroups {dirs}")
            ended = threading.Semaphore(0)

            def observe(event: Event) -> None:
                if event.type == "session.status" and event.to in ("completed", "failed"):
                    ended.release()

            hive.subscribe_to_all_sessions(observe)
            began = _own_cpu()
            deadline = time.monotonic() + CGROUP_ROUND_BUDGET
            for index in range(sessions):
                hive.start_session(hive.create_session(f"task {index}", limits=limits))
            for done in range(sessions):
                if not ended.acquire(timeout=max(0.0, deadline - time.monotonic())):
                    raise RuntimeError(
                        f"cgroups {variant}: {done} of {sessions} sessions ended "
                        f"within {CGROUP_ROUND_BUDGET:g} s"
                    )
            spent = _own_cpu() - began
            infos = hive.list_sessions()
            wrong = [
                (info.session_id, info.status, info.detail)
                for info in infos
                if info.status != "completed"
            ]
            if len(infos) != sessions or wrong:
                raise RuntimeError(
                    f"cgroups {variant}: {len(infos)} sessions, not completed: {wrong[:5]}"
                )
            if dirs and any(info.usage is None for info in infos):
                raise RuntimeError(f"cgroups {variant}: a run without its cgroup's usage")
        finally:
            hive.close()
        total = _own_cpu() - opened
    left = [str(path) for path in dirs if path.exists()]
    if left:
        raise RuntimeError(f"cgroups {variant}: the Hive left its cgroups behind: {left}")
    return spent / sessions, total - spent, mode


WORKLOADS = (
    "lifecycle",
    "live",
    "latency",
    "fanout",
    "recovery",
    "journal",
    "cluster",
    "workspace",
    "cgroups",
)


def _scale(text: str) -> float:
    """--scale's value: a share of the full sizes, small enough to leave 16 sessions."""
    try:
        scale = float(text)
    except ValueError:
        scale = 0.0
    if not 0.016 <= scale <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number from 0.016 to 1")
    return scale


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "workloads", nargs="*", metavar="WORKLOAD", help=f"{', '.join(WORKLOADS)} (default: all)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    scaled = parser.add_mutually_exclusive_group()
    scaled.add_argument(
        "--scale",
        type=_scale,
        default=1.0,
        metavar="S",
        help="every workload's size times S, from 0.016 to 1",
    )
    scaled.add_argument(
        "--quick", dest="scale", action="store_const", const=0.2, help="the same as --scale 0.2"
    )
    parser.add_argument(
        "--live", type=int, nargs="+", default=[1000, 5000], help="live-scale sizes"
    )
    parser.add_argument(
        "--creates", type=int, default=30, metavar="N", help="workspace: creates of each kind"
    )
    parser.add_argument("--files", type=int, default=5000, help="workspace: the repository's files")
    parser.add_argument(
        "--cgroup-sessions",
        type=int,
        default=200,
        metavar="N",
        help="cgroups: sessions a round, for each of off, auto and auto with limits",
    )
    parser.add_argument("--no-peer", action="store_true", help="leave circus out")
    parser.add_argument("--plot", type=Path, help="draw lifecycle throughput to this PNG")
    options = parser.parse_args()
    unknown = [name for name in options.workloads if name not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload {unknown[0]!r}; choose from {', '.join(WORKLOADS)}")
    structlog.configure(logger_factory=structlog.stdlib.LoggerFactory())
    logging.basicConfig(level=logging.ERROR)
    emit(
        "machine",
        cpus=os.cpu_count(),
        python=sys.version.split()[0],
        date=dt.datetime.now(dt.UTC).date().isoformat(),
    )
    with scratch():
        size = options.scale
        chosen = options.workloads or list(WORKLOADS)
        sessions = int(1000 * size) // 16 * 16  # 16 callers with an equal share
        if "lifecycle" in chosen:
            bench_lifecycle(options.rounds, sessions, options.plot, peer=not options.no_peer)
        if "live" in chosen:
            sizes = [int(n * size) // 16 * 16 for n in options.live]
            bench_live(sizes, [] if options.no_peer else [sessions])
        if "latency" in chosen:
            bench_latency(int(2000 * size))
            bench_daemon_latency(int(2000 * size))
        if "fanout" in chosen:
            bench_fanout(int(100_000 * size) // 100 * 100)
        if "recovery" in chosen:
            bench_recovery(int(1000 * size))
        if "journal" in chosen:
            bench_journal(size)
        if "cluster" in chosen:
            live = int(1000 * size)
            bench_cluster(options.rounds, int(2000 * size), sessions, live)
        if "cgroups" in chosen:
            bench_cgroups(options.rounds, max(1, int(options.cgroup_sessions * size)))
        if "workspace" in chosen:  # last: its thousands of files are freed as the run ends
            bench_workspace(max(3, int(options.creates * size)), max(1, int(options.files * size)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
