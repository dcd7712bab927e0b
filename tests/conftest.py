from __future__ import annotations

# Before anything imports Ray: the simulated clusters of the tests stay on 127.0.0.1.
from hive_actors.testing import ray_cluster  # isort: skip

import contextlib
import functools
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pykka
import pytest
import structlog

from hive_actors import Event, Hive
from hive_actors._cgroups import detect, hive_dir_name
from hive_actors._lockfile import DaemonLock
from hive_actors._process import (
    AgentProcess,
    process_start_time,
    session_processes,
    signal_each,
)
from hive_actors._timers import Timers
from hive_actors.testing import (
    FakeClock,
    ReadySignal,
    clear_cgroups,
    clear_hive_cgroups,
    fake_agent_command,
    wait_maintenance,
)

# hive_actors never configures logging; tests route structlog into stdlib logging so
# pytest captures it instead of it going to stdout.
structlog.configure(
    processors=[structlog.processors.add_log_level, structlog.processors.KeyValueRenderer()],
    logger_factory=structlog.stdlib.LoggerFactory(),
    cache_logger_on_first_use=False,
)
logging.getLogger("pykka").setLevel(logging.CRITICAL)

T = TypeVar("T")

HIVE_THREADS = (
    "hive-actor",
    "hive-reaper",
    "hive-timers",
    "hive-subscriber",
    "hive-maint",
    "hive-cluster",
)


def _hive_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(HIVE_THREADS)]


_SHARED_CGROUPS: set[str] = set()
"""The cgroups of the Hives of a module's cluster hosts: they outlive each test."""


@functools.cache
def _cgroup_parents() -> frozenset[Path]:
    """Where a Hive's own cgroups go: under this process's cgroup in each hierarchy."""
    cgroups = detect(Path("/"))  # made for the look, and removed
    parents = frozenset(path.parent for path in cgroups.dirs())
    cgroups.close()
    return parents


def _hive_cgroups() -> set[Path]:
    """Every Hive's own cgroup on this machine (``hive-*``)."""
    return {path for parent in _cgroup_parents() for path in parent.glob("hive-*")}


def _describe(cgroups: set[Path]) -> list[str]:
    return [
        f"{path}: {sorted(entry.name for entry in path.iterdir() if entry.is_dir())}"
        for path in cgroups
    ]


@pytest.fixture(autouse=True)
def _no_leaks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test must leave no hive thread, no actor, no cgroup and no HIVE_* setting
    behind."""
    for name in list(os.environ):
        if name.startswith("HIVE_"):
            monkeypatch.delenv(name)
    before = _hive_cgroups()
    yield
    assert _hive_threads() == [], "a test left hive threads running"
    assert pykka.ActorRegistry.get_all() == [], "a test left actors running"
    left = {path for path in _hive_cgroups() - before if path.name not in _SHARED_CGROUPS}
    assert not left, f"a test left cgroups behind: {_describe(left)}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def timers(clock: FakeClock) -> Iterator[Timers]:
    """A timer thread on the test's fake clock, closed afterwards (closing twice is fine)."""
    made = Timers(clock)
    yield made
    made.close()


class Hives:
    """Opens Hives on a test's temp root and, at teardown, closes them and kills leftovers."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.opened: list[Hive] = []

    def open(self, **config: Any) -> Hive:
        config.setdefault("root", self.root / "hive")
        config.setdefault("command", fake_agent_command())
        config.setdefault("grace_period", 5.0)
        config.setdefault("max_running", 64)  # tests of the cap set their own
        hive = Hive(**config)
        self.opened.append(hive)
        return hive

    def close(self) -> None:
        for hive in self.opened:
            hive.close(grace=0)
        # Whoever closed the hive: a test that closes its own and then fails leaves its
        # processes to us.
        kill_leftovers(hive.config.sessions_dir for hive in self.opened)
        for hive in self.opened:  # one that left agents running on purpose, or failed
            clear_hive_cgroups(hive._core.cgroups)


def kill_leftovers(sessions_dirs: Iterable[Path]) -> None:
    """SIGKILL every process of every session ever made in ``sessions_dirs``."""
    session_ids = {path.name for directory in sessions_dirs for path in directory.glob("*")}
    for pids in session_processes(session_ids).values():
        signal_each(pids, signal.SIGKILL)


@pytest.fixture(params=["cgroups", "none"])
def containment(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test twice: with a cgroup per run (where this machine has them), and
    with process groups and the session marker only (``cgroups="off"``). Every Hive the
    test opens, in this process or a child, takes it from ``HIVE_CGROUPS``."""
    mode = str(request.param)
    monkeypatch.setenv("HIVE_CGROUPS", "auto" if mode == "cgroups" else "off")
    return mode


@pytest.fixture
def hives(tmp_path: Path) -> Iterator[Hives]:
    opened = Hives(tmp_path)
    yield opened
    opened.close()


@pytest.fixture
def hive(hives: Hives, clock: FakeClock) -> Hive:
    return hives.open(clock=clock)


@pytest.fixture
def ready(tmp_path: Path) -> Iterator[Callable[[], ReadySignal]]:
    made: list[ReadySignal] = []

    def make() -> ReadySignal:
        signal_ = ReadySignal(tmp_path)
        made.append(signal_)
        return signal_

    yield make
    for signal_ in made:
        signal_.close()


def in_threads(
    target: Callable[[Any], T], arguments: Iterable[Any], timeout: float = 120
) -> list[T]:
    """Call ``target(argument)`` on a thread per argument, all at once; their results in
    argument order. The first exception any of them raised is raised here."""
    arguments = list(arguments)
    results: list[Any] = [None] * len(arguments)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            results[index] = target(arguments[index])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(arguments))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    if errors:
        raise errors[0]
    assert not any(thread.is_alive() for thread in threads), "a thread did not finish"
    return results


def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a condition no event announces (e.g. an actor's thread-free stop).

    Checks every 5 ms up to a bounded deadline; use an event or a future where one exists.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition still false after {timeout} s")
        time.sleep(0.005)


def spawn_agent(directory: Path, name: str, argv: list[str], run: int = 1) -> AgentProcess:
    """Run ``run`` of an agent outside any hive, as session ``name``: its marker in the
    environment, log and exit status file in ``directory``."""
    env = {**os.environ, "HIVE_SESSION_ID": name}  # how escapees are recognised
    status = directory / f"{name}-{run}"
    return AgentProcess.spawn(name, run, argv, directory, env, directory / "log", status)


def process_alive(pid: int) -> bool:
    """True for a running process; a zombie (exited, not yet reaped) counts as gone."""
    return process_start_time(pid) is not None


class Recorder:
    """A subscriber callback that records events and lets a test wait for one."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = threading.Condition()

    def __call__(self, event: Event) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[list[Event]], bool], timeout: float = 10) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self.events), timeout):
                raise AssertionError(f"condition not met; events so far: {self.events}")

    def statuses(self, session_id: str) -> list[str]:
        return [
            str(e.to)
            for e in self.events
            if e.type == "session.status" and e.session_id == session_id
        ]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


HIVECTL = str(Path(sys.executable).with_name("hivectl"))


class Daemon:
    """A real ``hivectl serve`` on a temp root, and the real CLI pointed at it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("HIVE_")}
        self.env["HIVE_COMMAND"] = json.dumps(fake_agent_command())
        self.env["HIVE_GRACE_PERIOD"] = "5"
        self.env["HIVE_MAX_RUNNING"] = "64"
        self.env["PATH"] = f"{Path(HIVECTL).parent}:{self.env.get('PATH', '')}"
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_line = ""
        self.stdout_line = ""
        """What the daemon printed on its stdout when it was ready."""

    @property
    def socket(self) -> Path:
        return self.root / "hive.sock"

    def start(self, *extra: str) -> str:
        self._close_pipes()  # of an earlier daemon of this test (killed, say)
        read_end, write_end = os.pipe()
        self.process = subprocess.Popen(
            [HIVECTL, "serve", "--root", str(self.root), "--ready-fd", str(write_end), *extra],
            env=self.env,
            pass_fds=(write_end,),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        os.close(write_end)
        try:
            ready, _, _ = select.select([read_end], [], [], 60)
            line = os.read(read_end, 256).decode() if ready else ""
        finally:
            os.close(read_end)
        if not line.startswith("ready"):
            self.process.wait(30)
            assert self.process.stderr is not None
            raise AssertionError(f"daemon did not start: {self.process.stderr.read().decode()}")
        self.ready_line = line.strip()
        assert self.process.stdout is not None
        printed, _, _ = select.select([self.process.stdout], [], [], 10)  # said before
        self.stdout_line = self.process.stdout.readline().decode().strip() if printed else ""
        return self.ready_line

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [HIVECTL, "--root", str(self.root), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def http(self) -> httpx.Client:
        transport = httpx.HTTPTransport(uds=str(self.socket))
        return httpx.Client(transport=transport, base_url="http://hive", timeout=60)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM the daemon (ours, or one a CLI started) and wait for it to exit."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            code = self.process.wait(timeout)
            self._close_pipes()
            return code
        holder = DaemonLock(self.root).holder()
        if holder is not None:
            os.kill(holder, signal.SIGTERM)
            assert DaemonLock(self.root).wait_released(timeout)
        return 0

    def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(10)
            self._close_pipes()  # also of one that stopped on its own
        kill_leftovers([self.root / "sessions"])

    def _close_pipes(self) -> None:
        if self.process is not None:
            for pipe in (self.process.stdout, self.process.stderr):
                if pipe is not None:
                    pipe.close()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    made = Daemon(tmp_path / "root")
    yield made
    made.cleanup()


CHATTY = [  # says 100 lines, then sleeps
    "sh",
    "-c",
    'i=0; while [ $i -lt 100 ]; do echo "line $i: some output of the agent"; i=$((i+1)); done;'
    " exec sleep 3600",
]


def chatty_after_a_pass(hive: Hive, clock: FakeClock, interval: float = 5) -> tuple[str, Path]:
    """A running CHATTY session once the agent has said its piece and one housekeeping
    pass (every ``interval`` s of ``clock``) has run: its id and its log."""
    session_id = hive.create_session("chatty", command=CHATTY)
    hive.start_session(session_id)
    log = Path(hive.log_file(session_id))
    eventually(lambda: "line 99:" in log.read_text())
    clock.advance(interval)
    wait_maintenance(hive, 1)
    return session_id, log


# -- the cluster engine: one simulated cluster per test module --------------------------------

CLUSTER_HOSTS = ("a", "b")
CLUSTER_SETTINGS: dict[str, Any] = {
    "command": fake_agent_command(),
    "grace_period": 5.0,
    "max_running": 64,
}
"""What every ClusterHive of a module's cluster is opened with (the first one sets them)."""


class SimulatedCluster:
    """A module's Ray cluster on loopback (a head and two labelled nodes, hosts a and b),
    with the host_root its hosts share on this machine."""

    def __init__(self, nodes: ray_cluster.LocalCluster, host_root: Path) -> None:
        self.nodes = nodes
        self.host_root = host_root

    def open(self, **options: Any) -> Any:
        from hive_actors.cluster import ClusterHive  # noqa: PLC0415

        return ClusterHive(host_root=self.host_root, **CLUSTER_SETTINGS, **options)

    def sessions_dirs(self) -> list[Path]:
        return [self.host_root / host / "sessions" for host in CLUSTER_HOSTS]

    def stop_everything(self) -> None:
        """Terminate every session not ended, on every host that answers."""
        with self.open() as hive:
            live = [info.session_id for info in hive.list_sessions() if not info.terminal]
            for session_id in live:
                hive.terminate_session(session_id, grace=0)
            for session_id in live:
                hive.wait(session_id, timeout=30)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatedCluster]:
    host_root = tmp_path_factory.mktemp("hosts")
    hosts = [host_root / host for host in CLUSTER_HOSTS]
    shared = {hive_dir_name(root) for root in hosts}
    _SHARED_CGROUPS.update(shared)
    try:
        with ray_cluster.local_cluster(CLUSTER_HOSTS) as nodes:
            simulated = SimulatedCluster(nodes, host_root)
            try:
                yield simulated
            finally:
                try:
                    simulated.stop_everything()
                finally:
                    kill_leftovers(simulated.sessions_dirs())
    finally:  # the hosts are gone: what their Hives left in cgroups goes too
        for root in hosts:
            clear_cgroups(root)
        _SHARED_CGROUPS.difference_update(shared)


class Engines:
    """Opens the engine a contract test runs on: a local Hive, or a ClusterHive."""

    def __init__(self, kind: str, request: pytest.FixtureRequest, hives: Hives) -> None:
        self.kind = kind
        self._request = request
        self._hives = hives
        self.opened: list[Any] = []

    def open(self, **options: Any) -> Any:
        if self.kind == "local":
            return self._hives.open(**options)
        hive = self._request.getfixturevalue("cluster").open(**options)
        self.opened.append(hive)
        return hive

    def close(self) -> None:
        if not self.opened:
            return
        cluster: SimulatedCluster = self._request.getfixturevalue("cluster")
        for hive in self.opened:
            hive.close()
        cluster.stop_everything()  # what a test left running stops with it, as a Hive's would


@pytest.fixture(params=["local", "ray"])
def engines(request: pytest.FixtureRequest, hives: Hives) -> Iterator[Engines]:
    made = Engines(request.param, request, hives)
    yield made
    made.close()


@pytest.fixture
def engine(engines: Engines) -> Any:
    """The engine under a contract test: a Hive, or a ClusterHive on the module's cluster."""
    return engines.open()


# -- git repositories ----------------------------------------------------------------------

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Test Agent",
    "GIT_AUTHOR_EMAIL": "agent@example.invalid",
    "GIT_COMMITTER_NAME": "Test Agent",
    "GIT_COMMITTER_EMAIL": "agent@example.invalid",
}
"""Who commits in the tests' repositories (passed as a session's env to agents that commit)."""


def git(cwd: Path | str, *args: str) -> str:
    """Run git in ``cwd`` as a user would (no config of this machine's user); its stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_IDENTITY, GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL="/dev/null")
    done = subprocess.run(
        ["git", "-C", str(cwd), *args], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {done.stderr}")
    return done.stdout


def make_repo(path: Path, files: int = 3) -> Path:
    """A repository with ``files`` tracked files (``f<i>.txt``, three lines each) in one
    commit on ``main``, and a tag ``v1`` on it."""
    if shutil.which("git") is None:
        pytest.skip("no git: `make tools` installs Debian's git (as root)")
    path.mkdir(parents=True)
    git(path, "init", "--quiet", "--initial-branch=main")
    for index in range(files):
        (path / f"f{index}.txt").write_text(f"line 1 of {index}\nline 2\nline 3\n")
    git(path, "add", "--all")
    git(path, "commit", "--quiet", "-m", "initial")
    git(path, "tag", "v1")
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


def worktrees(repo: Path) -> list[str]:
    """The repository's linked worktrees (paths), as git lists them."""
    lines = git(repo, "worktree", "list", "--porcelain").splitlines()
    paths = [line.split(" ", 1)[1] for line in lines if line.startswith("worktree ")]
    return paths[1:]


def branches(repo: Path) -> set[str]:
    return set(git(repo, "branch", "--format=%(refname:short)").split())
