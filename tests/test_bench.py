"""The benchmark suite itself runs: every workload at a small scale, end to end.

The figures are not checked against the targets (a benchmark measures them; a test on a
shared machine cannot), but every figure must be there and agree with the workload's
own counts, and the run must leave no agent behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from hive_actors import _process
from hive_actors._process import signal_each

ROOT = Path(__file__).resolve().parent.parent


def _marked(mark: bytes) -> list[int]:
    """Live processes whose environment holds ``mark`` (the run's agents inherit it)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if mark in _process.read_small(f"/proc/{entry.name}/environ"):
                    found.append(int(entry.name))
            except OSError:  # gone meanwhile, or not ours to read
                continue
    return found


def test_every_workload_reports_its_figures_at_a_small_scale(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # A short scratch path: the daemon's socket, deep inside it, must fit in sun_path.
    tmp_path = tmp_path_factory.mktemp("bench")
    mark = f"hive-bench-test-{uuid.uuid4()}"
    env = {key: value for key, value in os.environ.items() if not key.startswith("HIVE_")}
    env.update(TMPDIR=str(tmp_path), HIVE_BENCH_TEST_MARK=mark)
    argv = [sys.executable, str(ROOT / "bench" / "run.py"), "--scale", "0.05", "--rounds", "1"]
    try:
        run = subprocess.run(
            [*argv, "--no-peer", "--live", "1000"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        leftovers = _marked(f"HIVE_BENCH_TEST_MARK={mark}".encode())
        signal_each(leftovers, signal.SIGKILL)
    assert run.returncode == 0, run.stderr
    assert leftovers == [], "the benchmark left processes behind"
    assert list(tmp_path.iterdir()) == [], "the benchmark left its scratch files behind"

    lines = [json.loads(line) for line in run.stdout.splitlines()]
    by_name: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_name.setdefault(line.pop("benchmark"), []).append(line)

    lifecycle = by_name["lifecycle_throughput"]
    assert [row["concurrency"] for row in lifecycle] == [1, 4, 16]
    for row in lifecycle:
        assert row["sessions"] == 48
        ratio = row["floor_sessions_per_s"] / row["hive_sessions_per_s"]
        assert abs(row["ratio_hive_over_floor_time"] - ratio) < 0.02 * ratio + 0.01
        assert row["gave_up"] is None

    (live,) = by_name["live_scale"]
    assert live["contender"] == "hive"
    assert live["sessions"] == 48
    assert live["stopped_at_once"] == 48 - 6 - 12  # after the one-at-a-time stops and kills
    assert live["seconds_to_500_running"] is None  # fewer than 500: no such figure
    assert live["seconds_to_running"] > 0
    assert live["seconds_to_stop_all"] > 0
    for figure in ("one_stop_signalled", "exit_to_subscriber", "mass_stop_event_latency"):
        assert 0 < live[f"{figure}_ms_p50"] <= live[f"{figure}_ms_p99"]

    for name in ("api_latency_in_process", "api_latency_daemon_socket"):
        assert [row["concurrency"] for row in by_name[name]] == [1, 16]
        for row in by_name[name]:
            assert 0 < row["create_ms_p50"] <= row["create_ms_p99"]

    for name in ("event_fanout", "event_delivery"):
        rows = by_name[name]
        assert [row["subscribers"] for row in rows] == [1, 10, 100]
        assert all(row["events"] == 5000 and row["deliveries_per_s"] > 0 for row in rows)
    (replay,) = by_name["event_replay"]
    assert replay["events"] >= 3 * 5000  # the three end-to-end rounds' events, at least

    (recovery,) = by_name["recovery"]
    assert recovery["sessions"] == 50
    assert recovery["re_adopted"] == recovery["live_agents"] == 25

    (journal,) = by_name["journal_day"]
    assert journal["sessions"] == round(10 * 0.05 * 86_400 * 0.05)  # a day, scaled twice
    sizes = journal["db_mb_by_24th_of_the_day"]
    assert len(sizes) == 24
    assert journal["steady_max_mb"] == max(sizes[2:])
    assert journal["events_trimmed"] > 0
    assert journal["steady_max_mb"] < journal["untrimmed_mb_estimate"] / 4  # it is trimmed
    assert 0 < journal["trim_lock_held_ms_p99"] <= journal["trim_lock_held_ms_max"]
    (calls,) = by_name["cluster_call_latency"]
    assert calls["calls"] == 100
    for call in ("create", "status"):
        assert 0 < calls[f"{call}_ms_p50"] <= calls[f"{call}_ms_p99"]
    (cluster,) = by_name["cluster_lifecycle"]
    assert cluster["sessions"] == 48
    assert cluster["hosts"] == 2
    ratio = cluster["cluster_sessions_per_s"] / cluster["local_sessions_per_s"]
    assert abs(cluster["ratio_cluster_over_local"] - ratio) < 0.02 * ratio + 0.01
    (events,) = by_name["cluster_event_latency"]
    assert events["live_sessions"] == 50
    assert events["events"] == 50
    assert 0 < events["commit_to_subscriber_ms_p50"] <= events["commit_to_subscriber_ms_p99"]
    (kill,) = by_name["cluster_host_kill"]
    assert kill["re_adopted"] == kill["live_agents"] == 5
    assert kill["seconds_to_answer_all_re_adopted"] > 0

    (rebuild,) = by_name["journal_rebuild"]
    assert rebuild["mb"] > 0
    assert rebuild["seconds"] > 0

    (workspace,) = by_name["workspace_create"]
    assert workspace["files"] == 250
    assert workspace["creates"] == 3

    (cgroups,) = by_name["cgroup_overhead"]
    assert cgroups["sessions"] == 10
    assert cgroups["rounds"] == 1
    assert cgroups["cgroup_mode"] in ("v2", "hybrid", "v1", "none")
    with_cgroups = ["auto"] if cgroups["limits_skipped"] else ["auto", "limits"]
    for name in ["off", *with_cgroups]:
        assert cgroups[f"{name}_cpu_ms_per_session"] > 0
        assert cgroups[f"{name}_open_close_cpu_ms"] >= 0
    for name in with_cgroups:  # a difference of two timings: either sign
        delta = cgroups[f"{name}_cpu_ms_per_session"] - cgroups["off_cpu_ms_per_session"]
        assert abs(cgroups[f"delta_{name}_ms_per_session"] - delta) <= 0.002
    assert cgroups["target_delta_ms"] == 0.5
    assert isinstance(cgroups["target_met"], bool)  # not asserted: it is timed


def test_the_workspace_workload_reports_its_figures(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    tmp_path = tmp_path_factory.mktemp("bench")
    env = {key: value for key, value in os.environ.items() if not key.startswith("HIVE_")}
    env.update(TMPDIR=str(tmp_path))
    argv = [sys.executable, str(ROOT / "bench" / "run.py"), "workspace"]
    run = subprocess.run(
        [*argv, "--creates", "3", "--files", "150"],
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert list(tmp_path.iterdir()) == [], "the benchmark left its repository or worktrees"

    rows = [json.loads(line) for line in run.stdout.splitlines()]
    (row,) = [row for row in rows if row["benchmark"] == "workspace_create"]
    assert row["files"] == 150
    assert row["creates"] == 3
    for name in ("worktree_add", "repo_create", "plain_create"):
        assert 0 < row[f"{name}_ms_p50"] <= row[f"{name}_ms_p99"]
    for label in ("p50", "p99"):
        ratio = row[f"repo_create_ms_{label}"] / row[f"worktree_add_ms_{label}"]
        assert abs(row[f"ratio_repo_create_over_worktree_add_{label}"] - ratio) < 0.01 * ratio
        assert isinstance(row[f"target_met_{label}"], bool)  # not asserted: it is timed
    assert row["target_ratio"] == 1.5
