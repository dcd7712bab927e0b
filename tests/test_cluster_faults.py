"""A cluster's failures, each as it happens: a host process killed, a node lost for good
or for a while, a front end killed. One simulated cluster for the module."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from typing import Any

import ray

from hive_actors.cluster._coordinator import host_actor_name
from hive_actors.testing import clear_cgroups

from .conftest import (
    CLUSTER_SETTINGS,
    Recorder,
    SimulatedCluster,
    eventually,
    process_alive,
)

FOREVER = ["--sleep", "inf"]


def host_actor(name: str) -> Any:
    return ray.get_actor(host_actor_name(name), namespace="hive")


def start_many(hive: Any, count: int, host: str) -> dict[str, int]:
    """``count`` sessions running forever on ``host``: their ids and agent pids."""
    pids = {}
    for n in range(count):
        session_id = hive.create_session(f"live {n}", host=host)
        assert hive.start_session(session_id, FOREVER) == "running"
        pids[session_id] = hive.get_session_info(session_id).pid
    return pids


def own_record(session_id: str) -> tuple[str, str | None]:
    """The session as its host's own Hive has it (host b's), not as the journal does."""
    kind, data, _seq = ray.get(host_actor("b").call.remote("get_session_info", (session_id,), {}))
    assert kind == "ok", data
    return data["status"], data["reason"]


def restart_the_coordinator() -> None:
    """Kill the coordinator's process; return once Ray runs it in a new one."""
    coordinator = ray.get_actor("coordinator", namespace="hive")
    before = ray.get(coordinator.describe.remote())["pid"]
    ray.kill(coordinator, no_restart=False)

    def restarted() -> bool:
        try:
            return bool(ray.get(coordinator.describe.remote())["pid"] != before)
        except ray.exceptions.RayActorError:
            return False  # restarting

    eventually(restarted, timeout=60)


def wait_for_host(recorder: Recorder, kind: str, host: str, after: int = 0) -> None:
    recorder.wait_for(
        lambda events: any(e.type == kind and e.host == host and e.seq > after for e in events),
        timeout=60,
    )


def test_a_killed_host_restarts_in_place_and_loses_no_agent(cluster: SimulatedCluster) -> None:
    with cluster.open() as hive:
        pids = start_many(hive, 6, "a")
        host_pid = ray.get(host_actor("a").describe.remote())["pid"]
        os.kill(host_pid, signal.SIGKILL)
        # Calls made meanwhile are retried until the host answers again.
        for session_id, pid in pids.items():
            info = hive.get_session_info(session_id)
            assert (info.status, info.pid, info.runs) == ("running", pid, 1)
            assert process_alive(pid)
        assert ray.get(host_actor("a").describe.remote())["pid"] != host_pid
        statuses = [
            str(e.to) for e in hive.events() if e.type == "session.status" and e.session_id in pids
        ]
        assert statuses.count("starting") == len(pids)  # none ran twice
        for session_id in pids:
            hive.terminate_session(session_id, grace=0)
        for session_id, pid in pids.items():
            assert hive.wait(session_id, timeout=30) == "terminated"
            assert not process_alive(pid)


def test_a_host_ray_restarts_leaves_its_agents_running(cluster: SimulatedCluster) -> None:
    """Ray ending a host's worker its own way (``ray.kill`` with a restart) must not take
    the agents with it, as Ray does by default with a worker's children."""
    with cluster.open() as hive:
        pids = start_many(hive, 2, "b")
        ray.kill(host_actor("b"), no_restart=False)
        for session_id, pid in pids.items():
            info = hive.get_session_info(session_id)  # retried until b is back
            assert (info.status, info.pid) == ("running", pid)
            assert process_alive(pid)
        for session_id in pids:
            hive.terminate_session(session_id, grace=0)
            assert hive.wait(session_id, timeout=30) == "terminated"


def test_a_restarted_coordinator_goes_on_with_the_journal(cluster: SimulatedCluster) -> None:
    with cluster.open() as hive:
        mark = hive.last_seq
        before = hive.create_session("before")
        restart_the_coordinator()
        after = hive.create_session("after")
        hive.start_session(after, ["--sleep", "0"])
        assert hive.wait(after, timeout=30) == "completed"
        events = [e for e in hive.events(since=mark) if e.session_id in (before, after)]
        seqs = [e.seq for e in events]
        assert seqs == sorted(set(seqs))
        assert [e.type for e in events if e.session_id == before] == [
            "session.created",
            "session.status",
        ]
        assert [
            str(e.to) for e in events if e.type == "session.status" and e.session_id == after
        ] == [
            "created",
            "starting",
            "running",
            "completed",
        ]


def test_a_node_that_joins_gets_a_host(cluster: SimulatedCluster) -> None:
    with cluster.open() as hive:
        recorder = Recorder()
        hive.subscribe_to_all_sessions(recorder, since=hive.last_seq)
        cluster.nodes.add("c")
        try:
            wait_for_host(recorder, "host.up", "c")
            eventually(lambda: [h.alive for h in hive.hosts() if h.name == "c"] == [True])
            session_id = hive.create_session("on the newcomer", host="c")
            hive.start_session(session_id, ["--sleep", "0"])
            assert hive.wait(session_id, timeout=30) == "completed"
            assert hive.get_session_info(session_id).host == "c"
        finally:
            cluster.nodes.remove("c")
        wait_for_host(recorder, "host.down", "c")
    # Gone with its node, its Hive never closed: what it left in cgroups goes too.
    clear_cgroups(cluster.host_root / "c")


def test_a_create_sent_twice_makes_one_session(cluster: SimulatedCluster) -> None:
    with cluster.open() as hive:
        session_id = "0a1b2c3d-0000-4000-8000-00000000abcd"
        host = host_actor("b")
        options: dict[str, Any] = {"args": []}
        first = ray.get(host.create.remote(session_id, "once", "medium", {}, options))
        again = ray.get(host.create.remote(session_id, "once", "medium", {}, options))
        assert first[1]["created"] == again[1]["created"]
        mine = [info for info in hive.list_sessions() if info.session_id == session_id]
        assert len(mine) == 1
        created = [e for e in hive.events(session_id) if e.type == "session.created"]
        assert len(created) == 1


def test_a_node_lost_past_the_timeout_fails_its_sessions_for_good(
    cluster: SimulatedCluster,
) -> None:
    with cluster.open(host_lost_timeout=1.0) as hive:
        recorder = Recorder()
        hive.subscribe_to_all_sessions(recorder, since=hive.last_seq)
        pids = start_many(hive, 2, "b")
        waiting = hive.create_session("never started", host="b")
        elsewhere = start_many(hive, 1, "a")
        cluster.nodes.remove("b")
        wait_for_host(recorder, "host.down", "b")
        lost = [*pids, waiting]
        recorder.wait_for(
            lambda _: all(recorder.statuses(s)[-1:] == ["failed"] for s in lost), timeout=60
        )
        for session_id in lost:
            info = hive.get_session_info(session_id)  # from the journal: b is away
            assert (info.status, info.reason) == ("failed", "host_lost")
            assert hive.wait(session_id, timeout=5) == "failed"
        assert [h.alive for h in hive.hosts() if h.name == "b"] == [False]
        assert hive.status(next(iter(elsewhere))) == "running"

        mark = hive.last_seq
        cluster.nodes.add("b")
        wait_for_host(recorder, "host.up", "b", after=mark)
        for pid in pids.values():  # the verdict holds: the agents still running are stopped
            eventually(lambda pid=pid: not process_alive(pid), timeout=60)
        for session_id in lost:  # and the host's own records agree
            info = hive.get_session_info(session_id)
            assert (info.status, info.reason) == ("failed", "host_lost")
            eventually(lambda s=session_id: own_record(s) == ("failed", "host_lost"), timeout=30)
        hive.list_sessions()  # b answers: events() below waits until the journal has its news
        later = [e for e in hive.events(since=mark) if e.session_id in lost]
        assert [e for e in later if e.type == "session.status"] == []  # the verdict stands


def test_a_node_back_before_the_timeout_reconciles_as_after_a_crash(
    cluster: SimulatedCluster,
) -> None:
    with cluster.open(host_lost_timeout=300.0) as hive:
        recorder = Recorder()
        hive.subscribe_to_all_sessions(recorder, since=hive.last_seq)
        pids = start_many(hive, 2, "a")
        finishing = hive.create_session("ends while its host is away", host="a")
        hold = cluster.host_root / "hold.fifo"
        os.mkfifo(hold)
        hive.start_session(finishing, ["--hold", str(hold)])
        mark = hive.last_seq
        cluster.nodes.remove("a")
        wait_for_host(recorder, "host.down", "a", after=mark)
        assert hive.status(next(iter(pids))) == "running"  # its last known state
        restart_the_coordinator()  # meanwhile: it must still know a is away
        assert [h.alive for h in hive.hosts() if h.name == "a"] == [False]
        with open(hold, "w") as release:  # the agent finishes while nobody watches
            release.write("done\n")
        cluster.nodes.add("a")
        wait_for_host(recorder, "host.up", "a", after=mark)
        assert hive.wait(finishing, timeout=60) == "completed"
        recorder.wait_for(
            lambda events: any(e.session_id == finishing and e.recovered for e in events)
        )
        recovered = [e for e in recorder.events if e.session_id == finishing and e.recovered]
        assert [str(e.to) for e in recovered if e.type == "session.status"] == ["completed"]
        for session_id, pid in pids.items():
            info = hive.get_session_info(session_id)
            assert (info.status, info.pid, info.runs) == ("running", pid, 1)
            hive.terminate_session(session_id, grace=0)
            assert hive.wait(session_id, timeout=30) == "terminated"


FRONT_END = textwrap.dedent(
    """
    import json, sys
    import ray
    from hive_actors.cluster import ClusterHive
    ray.init(address=sys.argv[1], _node_ip_address="127.0.0.1", log_to_driver=False)
    hive = ClusterHive(host_root=sys.argv[2], **json.loads(sys.argv[3]))
    while True:
        session_id = hive.create_session("from a doomed front end")
        hive.start_session(session_id, ["--sleep", "0"])
        print(session_id, flush=True)
    """
)


def test_a_killed_front_end_leaves_a_journal_without_gap_or_duplicate(
    cluster: SimulatedCluster,
) -> None:
    with cluster.open() as before:
        mark = before.last_seq
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            FRONT_END,
            cluster.nodes.address,
            str(cluster.host_root),
            json.dumps(CLUSTER_SETTINGS),
        ],
        stdout=subprocess.PIPE,
        text=True,
    ) as front_end:
        try:
            assert front_end.stdout is not None
            made = [front_end.stdout.readline().strip() for _ in range(5)]
        finally:
            front_end.kill()
    with cluster.open() as hive:
        for session_id in made:
            assert hive.wait(session_id, timeout=30) == "completed"
        events = list(hive.events(since=mark))
        seqs = [e.seq for e in events]
        assert seqs == list(range(mark + 1, mark + 1 + len(seqs)))
        for session_id in made:
            mine = [
                str(e.to)
                for e in events
                if e.session_id == session_id and e.type == "session.status"
            ]
            assert mine == ["created", "starting", "running", "completed"]
