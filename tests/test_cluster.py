"""What only a ClusterHive has: hosts, placement, detaching, several front ends.

The calls it shares with Hive are in test_contract.py, run on both engines.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hive_actors import HostUnavailable, InvalidConfig, InvalidInput
from hive_actors.cluster import ClusterHive
from hive_actors.testing import fake_agent_command

from . import test_dashboard as dashboard  # its browser, flags and login
from .conftest import (
    CLUSTER_HOSTS,
    Daemon,
    Recorder,
    SimulatedCluster,
    in_threads,
    process_alive,
)


@pytest.fixture
def front(cluster: SimulatedCluster) -> Any:
    hive = cluster.open()
    yield hive
    hive.close()
    cluster.stop_everything()


def test_without_ray_the_import_names_the_extra() -> None:
    blocked = "import sys; sys.modules['ray'] = None; "
    result = subprocess.run(
        [sys.executable, "-c", blocked + "import hive_actors.cluster"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "ImportError: hive_actors.cluster needs Ray: pip install 'hive_actors[ray]'"
    )
    core = "from hive_actors import Hive; import hive_actors._server; print('ok')"
    assert (
        subprocess.run(
            [sys.executable, "-c", blocked + core], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "ok"
    )


def test_one_host_per_labelled_node_and_none_on_the_cpu_less_head(front: Any) -> None:
    hosts = front.hosts()
    assert [host.name for host in hosts] == list(CLUSTER_HOSTS)
    assert all(host.alive and host.max_running == 64 for host in hosts)
    journal = [event for event in front.events() if event.type == "host.up"]
    assert {event.host for event in journal} >= set(CLUSTER_HOSTS)
    assert all(event.session_id is None for event in journal)


def test_a_session_pinned_to_a_host_lives_there(front: Any, cluster: SimulatedCluster) -> None:
    session_id = front.create_session("pinned", host="b")
    info = front.get_session_info(session_id)
    assert info.host == "b"
    assert Path(info.working_dir).is_relative_to(cluster.host_root / "b")
    front.start_session(session_id, ["--sleep", "0"])
    assert front.wait(session_id, timeout=30) == "completed"
    assert {event.host for event in front.events(session_id)} == {"b"}


def test_an_unknown_or_bad_host_is_refused_and_creates_nothing(front: Any) -> None:
    before = len(front.list_sessions())
    with pytest.raises(HostUnavailable, match=r"'gpu-9' is not a host of this cluster.*a, b"):
        front.create_session("t", host="gpu-9")
    with pytest.raises(InvalidInput, match="host must be"):
        front.create_session("t", host=7)
    assert len(front.list_sessions()) == before


def test_sessions_created_in_a_burst_spread_over_the_hosts(front: Any) -> None:
    made = in_threads(
        lambda n: [front.create_session(f"burst {n}.{i}") for i in range(5)], range(8)
    )
    ids = [session_id for batch in made for session_id in batch]
    assert len(set(ids)) == 40
    placed = [front.get_session_info(session_id).host for session_id in ids]
    assert abs(placed.count("a") - placed.count("b")) <= 2
    loads = {host.name: host.sessions for host in front.hosts()}
    assert loads == {"a": placed.count("a"), "b": placed.count("b")}


def test_close_detaches_and_leaves_sessions_running(cluster: SimulatedCluster) -> None:
    first = cluster.open()
    session_id = first.create_session("outlives its client")
    first.start_session(session_id, ["--sleep", "inf"])
    pid = first.get_session_info(session_id).pid
    first.close()
    with cluster.open() as second:
        assert second.status(session_id) == "running"
        assert second.get_session_info(session_id).pid == pid
        assert process_alive(pid)
        second.terminate_session(session_id, grace=0)
        assert second.wait(session_id, timeout=30) == "terminated"
    assert not process_alive(pid)


def test_front_ends_share_one_journal(cluster: SimulatedCluster) -> None:
    with cluster.open() as one, cluster.open() as other:
        recorder = Recorder()
        mark = other.last_seq
        other.subscribe_to_all_sessions(recorder, since=mark)
        session_id = one.create_session("seen by both")
        one.start_session(session_id, ["--sleep", "0"])
        one.wait(session_id, timeout=30)
        recorder.wait_for(lambda _: recorder.statuses(session_id)[-1:] == ["completed"])
        mine = [(e.seq, e.type) for e in one.events(session_id)]
        theirs = [(e.seq, e.type) for e in recorder.events if e.session_id == session_id]
        assert mine == theirs
        assert other.get_session_info(session_id).status == "completed"


def test_settings_are_checked_and_the_first_front_end_sets_them(
    cluster: SimulatedCluster, front: Any
) -> None:
    with pytest.raises(InvalidConfig, match="command"):
        ClusterHive(host_root=cluster.host_root, command=fake_agent_command("--exit", "1"))
    with pytest.raises(InvalidConfig, match="absolute"):
        ClusterHive(host_root="relative/dir")
    with pytest.raises(InvalidConfig, match="root, shutdown"):
        ClusterHive(host_root=cluster.host_root, root="/x", shutdown="terminate")
    with pytest.raises(InvalidConfig, match="max_running"):
        ClusterHive(host_root=cluster.host_root, max_running=0)
    with ClusterHive(host_root=cluster.host_root) as bare:  # none given: the cluster's hold
        assert bare.hosts()[0].max_running == 64


def test_metrics_count_the_whole_cluster(front: Any) -> None:
    session_id = front.create_session("counted")
    front.start_session(session_id, ["--sleep", "0"])
    front.wait(session_id, timeout=30)
    front.last_seq  # noqa: B018  # its events are in
    text = front.metrics().decode()
    assert 'hive_transitions_total{from_state="running",to_state="completed"}' in text


def test_the_daemon_serves_the_cluster(cluster: SimulatedCluster, tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "root")
    try:
        daemon.start(
            "--ray", cluster.nodes.address, "--host-root", str(cluster.host_root), "--tcp", "0"
        )
        hosts = json.loads(daemon.cli("hosts").stdout)["hosts"]
        assert [(h["name"], h["alive"]) for h in hosts] == [("a", True), ("b", True)]
        created = daemon.cli("create", "served", "high", '{"ticket": 7}', "--host", "b")
        assert created.returncode == 0, created.stderr
        session_id = created.stdout.strip()
        assert json.loads(created.stderr)["host"] == "b"
        assert daemon.cli("start", session_id, "--sleep", "0").returncode == 0
        assert daemon.cli("wait", session_id, "--timeout", "30").returncode == 0
        assert "served" in daemon.cli("log", session_id, "--tail", "20").stdout
        events = [
            json.loads(line)
            for line in daemon.cli("events", session_id, "--no-follow").stdout.splitlines()
        ]
        assert {e["host"] for e in events} == {"b"}
        assert events[-1]["to"] == "completed"
        refused = daemon.cli("create", "nowhere", "--host", "gpu-9")
        assert refused.returncode == 6
        assert "hivectl: host 'gpu-9' is not a host of this cluster" in refused.stderr
        assert "Traceback" not in refused.stderr
        listed = json.loads(daemon.cli("list").stdout)
        assert session_id in json.dumps(listed)
        with daemon.http() as http:
            assert "hive_sessions" in http.get("/metrics").text
        _the_dashboard_shows_the_hosts(daemon, session_id)
    finally:
        daemon.cleanup()


def _the_dashboard_shows_the_hosts(daemon: Daemon, session_id: str) -> None:
    """The page of a daemon serving a cluster: a strip of hosts, a host column."""
    if not Path(dashboard.CHROMIUM).exists():
        pytest.skip(f"no Chromium at {dashboard.CHROMIUM}: `make browser` installs it")
    url = f"http://{daemon.ready_line.split()[1]}"
    token = (daemon.root / "token").read_text().strip()
    expect = dashboard.expect
    with dashboard.playwright_api.sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=dashboard.CHROMIUM, headless=True, args=dashboard.FLAGS
        )
        try:
            for page in dashboard._open(browser, url, token):
                strip = page.locator("#hosts .host")
                expect(strip).to_have_count(2, timeout=dashboard.WAIT_MS)
                expect(strip.first).to_contain_text("a")
                expect(page.locator('#hosts [data-host="b"] .load')).to_contain_text("/64 running")
                cell = page.locator(f'tr[data-id="{session_id}"] td.host-col')
                expect(cell).to_have_text("b")
                expect(cell).to_be_visible()
                fresh = daemon.cli("create", "placed by the page's daemon", "--host", "a")
                row = page.locator(f'tr[data-id="{fresh.stdout.strip()}"] td.host-col')
                expect(row).to_have_text("a", timeout=dashboard.WAIT_MS)
                dashboard.screenshot(page, "dashboard-cluster.png")
        finally:
            browser.close()
