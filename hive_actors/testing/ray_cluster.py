"""A simulated Ray cluster on this machine, on loopback only: for tests and benchmarks.

Each node is its own raylet, as on a real cluster; the head runs no agents (no CPUs) and
every other node carries a ``hive-host`` label, so each is a host of its own:

    with local_cluster(["a", "b"]) as cluster:
        with ClusterHive(host_root=..., command=[...]) as hive:
            ...
        cluster.remove("a")      # as if machine a were lost
        cluster.add("a")         # and back

Import this module before anything imports Ray: it keeps every Ray process on 127.0.0.1
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), without token files in the home directory, and
with its session files in a temp dir it removes on exit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterable, Iterator
from typing import Any

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # read once, when Ray is imported
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray
from ray._private import ray_constants
from ray.cluster_utils import Cluster

from hive_actors._process import read_small

LOOPBACK = "127.0.0.1"
HEALTH_CHECKS = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 300,
    "health_check_timeout_ms": 300,
    "health_check_failure_threshold": 3,
}
HOST_LABEL = "hive-host"


class LocalCluster:
    """A head node and one labelled node per host, each a raylet on loopback."""

    def __init__(self, cluster: Any, cpus: int) -> None:
        self._cluster = cluster
        self._cpus = cpus
        self.nodes: dict[str, Any] = {}

    @property
    def address(self) -> str:
        return str(self._cluster.address)

    def add(self, host: str) -> None:
        """Start a node labelled ``hive-host=<host>`` (a machine joining, or coming back)."""
        self.nodes[host] = self._cluster.add_node(
            num_cpus=self._cpus, labels={HOST_LABEL: host}, node_ip_address=LOOPBACK
        )

    def remove(self, host: str) -> None:
        """Kill the node's raylet and its workers at once (a machine lost)."""
        self._cluster.remove_node(self.nodes.pop(host), allow_graceful=False)


def _kill_all_with(marker: bytes, patience: float = 10.0) -> None:
    """SIGKILL every process whose environment holds ``marker`` (each process of the
    cluster inherited its RAY_TMPDIR), until none is left or ``patience`` s passed."""
    deadline = time.monotonic() + patience
    while (left := _processes_with(marker)) and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)  # for the kernel to take them away; bounded by patience


def _processes_with(marker: bytes) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker in read_small(f"/proc/{entry.name}/environ"):
                    found.append(int(entry.name))
            except OSError:  # gone meanwhile, or a zombie's, or not ours to read
                continue
    return found


@contextlib.contextmanager
def local_cluster(hosts: Iterable[str] = ("a", "b"), cpus: int = 2) -> Iterator[LocalCluster]:
    """Start the cluster and join it (``ray.init``); leave and remove every trace on exit."""
    if ray_constants.ENABLE_RAY_CLUSTER:
        raise RuntimeError(
            "Ray was imported before hive_actors.testing.ray_cluster: its nodes would "
            "bind to this machine's outward address instead of 127.0.0.1"
        )
    temp = tempfile.mkdtemp(prefix="hive-ray-", dir="/tmp")  # short: raylet socket paths
    previous = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = temp
    cluster = None
    try:
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 0,
                "node_ip_address": LOOPBACK,
                "include_dashboard": False,
                # A lost node is noticed in about a second, not Ray's default 15 s or so.
                "_system_config": HEALTH_CHECKS,
            },
        )
        local = LocalCluster(cluster, cpus)
        for host in hosts:
            local.add(host)
        ray.init(address=cluster.address, _node_ip_address=LOOPBACK, log_to_driver=False)
        yield local
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        # Whatever of the cluster still runs (a worker of a node removed earlier, an
        # agent) would write into the temp dir after it is removed: none may outlive it.
        _kill_all_with(f"RAY_TMPDIR={temp}".encode())
        if previous is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = previous
        shutil.rmtree(temp, ignore_errors=True)
