"""hive_actors benchmarks: each workload against its baseline, measured in the same run.

    python bench/run.py [WORKLOAD ...] [--rounds R] [--quick]

Workloads: lifecycle, live, latency, fanout, recovery (default: all). Each prints one JSON
line per figure: the median of R rounds, the baseline measured alongside, and their ratio.
Machines here are shared and noisy: read the ratios, not single absolute times.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog

from hive_actors import Event, Hive
from hive_actors._models import ContextMessageEvent

TRUE = shutil.which("true") or "/bin/true"
SLEEP = shutil.which("sleep") or "/bin/sleep"


def emit(benchmark: str, **figures: Any) -> None:
    print(json.dumps({"benchmark": benchmark, **figures}), flush=True)


@contextmanager
def temp_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="hive-bench-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_threads(count: int, work: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=work, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# -- 1. lifecycle throughput ------------------------------------------------------------------


def floor_lifecycle(root: Path, sessions: int, concurrency: int) -> float:
    """The bare per-session work and nothing else; returns seconds."""

    def one(index: int) -> None:
        work = root / "floor" / str(index)
        (work / ".swarm").mkdir(parents=True)
        db = sqlite3.connect(work / ".swarm" / "memory.db")
        db.execute("PRAGMA journal_mode=WAL")
        db.close()
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
    started = time.perf_counter()
    run_threads(concurrency, lambda t: [one(t * per_thread + i) for i in range(per_thread)])
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


def bench_lifecycle(rounds: int, sessions: int) -> None:
    for concurrency in (1, 16):
        floors, hives = [], []
        for _ in range(rounds):
            with temp_root() as root:
                floors.append(floor_lifecycle(root, sessions, concurrency))
            with temp_root() as root:
                hives.append(hive_lifecycle(root, sessions, concurrency))
        floor, hive = statistics.median(floors), statistics.median(hives)
        emit(
            "lifecycle_throughput",
            sessions=sessions,
            concurrency=concurrency,
            hive_sessions_per_s=round(sessions / hive, 1),
            floor_sessions_per_s=round(sessions / floor, 1),
            ratio_hive_over_floor_time=round(hive / floor, 2),
            target_ratio=1.5 if concurrency == 16 else None,
        )


# -- 2. live scale ----------------------------------------------------------------------------


def bench_live(sessions: int) -> None:
    with (
        temp_root() as root,
        Hive(root=root, command=[SLEEP, "3600"], max_running=100_000, grace_period=5) as hive,
    ):
        latencies: list[float] = []
        running = threading.Semaphore(0)
        stopped = threading.Semaphore(0)

        def observe(event: Event) -> None:
            latencies.append((dt.datetime.now(dt.UTC) - event.at).total_seconds())
            if event.type == "session.status":
                if event.to == "running":
                    running.release()
                elif event.to == "terminated":
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

        started = time.perf_counter()
        run_threads(16, create)
        for _ in ids:
            running.acquire()
        to_running = time.perf_counter() - started
        rss_live, threads_live = rss_kib(), threading.active_count()
        latencies.clear()
        cpu_before, idle_start = time.process_time(), time.perf_counter()
        time.sleep(3)  # idle CPU with every agent alive: the measurement is the wait
        idle_cpu = (time.process_time() - cpu_before) / (time.perf_counter() - idle_start)

        started = time.perf_counter()
        run_threads(16, lambda t: [hive.terminate_session(s, grace=5) for s in ids[t::16]])
        for _ in ids:
            stopped.acquire()
        to_stop = time.perf_counter() - started
        emit(
            "live_scale",
            sessions=len(ids),
            manager_rss_kib_per_session=round((rss_live - rss_before) / len(ids), 2),
            threads_per_session=round((threads_live - threads_before) / len(ids), 4),
            threads_total=threads_live,
            seconds_to_running=round(to_running, 3),
            seconds_to_stop_all=round(to_stop, 3),
            idle_cpu_percent=round(idle_cpu * 100, 2),
            event_latency_ms_p50=round(percentile(latencies, 0.5) * 1000, 2),
            event_latency_ms_p99=round(percentile(latencies, 0.99) * 1000, 2),
        )


# -- 3. API latency (in-process) --------------------------------------------------------------


def bench_latency(calls: int) -> None:
    with temp_root() as root, Hive(root=root, command=[TRUE]) as hive:
        for concurrency in (1, 16):
            creates, statuses = _latency_round(hive, calls, concurrency)
            emit(
                "api_latency_in_process",
                concurrency=concurrency,
                create_ms_p50=round(percentile(creates, 0.5) * 1000, 3),
                create_ms_p99=round(percentile(creates, 0.99) * 1000, 3),
                status_ms_p50=round(percentile(statuses, 0.5) * 1000, 4),
                status_ms_p99=round(percentile(statuses, 0.99) * 1000, 4),
                target_create_ms_p99=5,
            )


def _latency_round(hive: Hive, calls: int, concurrency: int) -> tuple[list[float], list[float]]:
    creates: list[float] = []
    statuses: list[float] = []
    lock = threading.Lock()

    def client(_thread: int) -> None:
        mine_c, mine_s = [], []
        for _ in range(calls // concurrency):
            started = time.perf_counter()
            session_id = hive.create_session("latency")
            mine_c.append(time.perf_counter() - started)
            started = time.perf_counter()
            hive.status(session_id)
            mine_s.append(time.perf_counter() - started)
        with lock:
            creates.extend(mine_c)
            statuses.extend(mine_s)

    run_threads(concurrency, client)
    return creates, statuses


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
    journal = list(hive.events(since=max(0, hive.last_seq - events)))
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


WORKLOADS = ("lifecycle", "live", "latency", "fanout", "recovery")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("workloads", nargs="*", choices=[*WORKLOADS, []], default=[])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    options = parser.parse_args()
    structlog.configure(logger_factory=structlog.stdlib.LoggerFactory())
    logging.basicConfig(level=logging.ERROR)
    emit(
        "machine",
        cpus=os.cpu_count(),
        python=sys.version.split()[0],
        date=dt.datetime.now(dt.UTC).date().isoformat(),
    )
    size = 0.2 if options.quick else 1.0
    chosen = options.workloads or list(WORKLOADS)
    if "lifecycle" in chosen:
        bench_lifecycle(options.rounds, int(1000 * size) // 16 * 16)
    if "live" in chosen:
        bench_live(int(1000 * size) // 16 * 16)
    if "latency" in chosen:
        bench_latency(int(2000 * size))
    if "fanout" in chosen:
        bench_fanout(int(100_000 * size) // 100 * 100)
    if "recovery" in chosen:
        bench_recovery(int(1000 * size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
