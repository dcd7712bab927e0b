"""A cgroup per run, on this machine's real cgroups: containment no process can leave,
limits the kernel enforces, usage from its counters, and nothing left behind.

Each test runs where the Hive finds usable cgroups (``hybrid`` on a v2 mount without
controllers beside writable v1 ones); the escapee tests run in ``v1`` too (the freezer
for membership), by hiding the v2 mount from detection.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hive_actors import Hive, InvalidConfig, InvalidLimits, _cgroups, _core, _process
from hive_actors._cgroups import Cgroups, detect
from hive_actors.testing import FakeClock, ReadySignal, session_processes

from .conftest import Daemon, Hives, eventually, process_alive

SLEEP = shutil.which("sleep") or "/bin/sleep"

ESCAPING = f"""
import json, os, signal, sys, time
ready, how = sys.argv[1], sys.argv[2]
read_end, write_end = os.pipe()
child = os.fork()
if child == 0:  # out of the agent's group and session, deaf to SIGTERM, no environment
    os.setsid()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    grandchild = os.fork()
    if grandchild == 0:
        os.execve({SLEEP!r}, ["sleep", "3600"], {{}})
    os.write(write_end, b"%d\\n" % grandchild)
    os.execve({SLEEP!r}, ["sleep", "3600"], {{}})
grandchild = int(os.fdopen(read_end).readline())
with open(ready, "w") as fifo:
    fifo.write(json.dumps({{"escapees": [child, grandchild]}}) + "\\n")
if how == "ends":
    sys.exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only the SIGKILL ends it
while True:
    time.sleep(3600)
"""
"""An agent whose child calls setsid, ignores SIGTERM, clears its environment and
forks again; it reports both, then ends (``ends``) or runs on ignoring SIGTERM."""

MEMORY_HOG = """
hoard = []
while True:
    hoard.append(b"x" * (4 << 20))  # written, so really resident
"""

FORKS = """
import json, os, sys, time
born, refused = 0, 0
for _ in range(100):
    try:
        pid = os.fork()
    except OSError:
        refused += 1
        continue
    if pid == 0:
        time.sleep(3600)
        os._exit(0)
    born += 1
with open(sys.argv[1], "w") as fifo:
    fifo.write(json.dumps({"born": born, "refused": refused}) + "\\n")
sys.exit(1 if refused else 0)
"""

SPINNERS = """
import os
os.fork()  # two processes, each would take a whole core
while True:
    pass
"""


def python(script: str, *args: str) -> dict[str, Any]:
    """create_session options that run ``script`` as the agent."""
    return {"command": [sys.executable, "-c", script, *args]}


def run_dirs(hive: Hive) -> list[str]:
    """The run cgroups that exist under the Hive's own cgroups."""
    return hive._core.cgroups.runs()


def hive_dirs(hive: Hive) -> list[Path]:
    """The Hive's own cgroups that still exist."""
    return [path for path in hive._core.cgroups.dirs() if path.exists()]


def _v1_only(root: Path) -> Cgroups:
    """Detection with the unified mount hidden: membership in v1's freezer."""
    with open("/proc/self/mountinfo") as mountinfo:
        lines = [line for line in mountinfo if " - cgroup2 " not in line]
    return detect(root, mountinfo="".join(lines))


@pytest.fixture(params=["found", "v1"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The mode this machine gives a Hive, and v1 (where the machine has it)."""
    if request.param == "v1":
        monkeypatch.setattr(_core, "detect", _v1_only)
    return str(request.param)


@pytest.fixture
def hive(hives: Hives, clock: FakeClock, mode: str) -> Hive:
    opened = hives.open(clock=clock)
    wanted = {"found": ("v2", "hybrid"), "v1": ("v1",)}[mode]
    assert opened.stats().cgroup_mode in wanted, "this machine's cgroups are not usable"
    return opened


@pytest.fixture
def signal_(ready: Callable[[], ReadySignal]) -> ReadySignal:
    return ready()


@pytest.fixture
def escapees() -> Iterator[list[int]]:
    """Pids a test saw escape; killed afterwards whatever the test's outcome."""
    found: list[int] = []
    yield found
    _process.signal_each(found, signal.SIGKILL)


# -- containment -----------------------------------------------------------------------------


def test_an_escapee_is_gone_after_terminate(
    hive: Hive, clock: FakeClock, signal_: ReadySignal, escapees: list[int]
) -> None:
    session_id = hive.create_session("escapes", **python(ESCAPING, str(signal_.path), "stays"))
    hive.start_session(session_id)
    escapees += signal_.wait()["escapees"]
    # No marker once they have exec'd (the report may come just before), and no group:
    eventually(lambda: not set(escapees) & set(session_processes(session_id)))
    assert hive.terminate_session(session_id, grace=5) == "stopping"
    assert all(process_alive(pid) for pid in escapees)  # SIGTERM is ignored
    clock.advance(5)
    assert hive.wait(session_id, timeout=10) == "terminated"
    assert not any(process_alive(pid) for pid in escapees)  # gone before the end was told
    assert run_dirs(hive) == []


def test_an_escapee_is_gone_when_its_run_ends_on_its_own(
    hive: Hive, signal_: ReadySignal, escapees: list[int]
) -> None:
    session_id = hive.create_session("escapes", **python(ESCAPING, str(signal_.path), "ends"))
    hive.start_session(session_id)
    escapees += signal_.wait()["escapees"]
    assert hive.wait(session_id, timeout=10) == "completed"
    assert not any(process_alive(pid) for pid in escapees)
    assert run_dirs(hive) == []


def test_a_shim_killed_under_a_running_hive_takes_its_run_with_it(
    hive: Hive, signal_: ReadySignal, escapees: list[int]
) -> None:
    session_id = hive.create_session("orphaned", **python(ESCAPING, str(signal_.path), "stays"))
    hive.start_session(session_id)
    escapees += signal_.wait()["escapees"]
    os.kill(hive.get_session_info(session_id).pid or 0, signal.SIGKILL)
    assert hive.wait(session_id, timeout=10) == "failed"
    info = hive.get_session_info(session_id)
    assert info.reason == "lost"
    assert "killed the 3 processes" in (info.detail or "")
    assert not any(process_alive(pid) for pid in escapees)
    assert run_dirs(hive) == []


def test_a_shim_killed_while_no_hive_ran_is_found_by_its_cgroup(
    hives: Hives,
    tmp_path: Path,
    signal_: ReadySignal,
    escapees: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path / "root"
    first = hives.open(root=root, shutdown="leave")
    session_id = first.create_session("left", **python(ESCAPING, str(signal_.path), "stays"))
    first.start_session(session_id)
    escapees += signal_.wait()["escapees"]
    shim = first.get_session_info(session_id).pid or 0
    first.close()
    os.kill(shim, signal.SIGKILL)  # its agent and escapees run on, watched by nobody
    eventually(lambda: not process_alive(shim))

    def no_scan() -> list[tuple[int, int, str | None]]:
        raise AssertionError("recovery looked through /proc")

    monkeypatch.setattr(_process, "_read_proc", no_scan)
    second = hives.open(root=root)
    monkeypatch.undo()  # the teardown's own leftover hunt scans
    info = second.get_session_info(session_id)
    assert (info.status, info.reason) == ("failed", "lost")
    assert "killed the 3 processes of the run still running" in (info.detail or "")
    assert not any(process_alive(pid) for pid in escapees)
    assert run_dirs(second) == []


def test_nothing_is_left_after_a_crash_removal_and_close(
    hives: Hives, tmp_path: Path, signal_: ReadySignal, escapees: list[int]
) -> None:
    """A Hive that dies (here: closed leaving its agent, whose cgroup is then the
    crash's) leaves run cgroups; the next one removes them, and its own close the rest."""
    root = tmp_path / "root"
    first = hives.open(root=root, shutdown="leave")
    ended = first.create_session("ends", command=["true"])
    first.start_session(ended)
    assert first.wait(ended, timeout=10) == "completed"
    left = first.create_session("left", **python(ESCAPING, str(signal_.path), "stays"))
    first.start_session(left)
    escapees += signal_.wait()["escapees"]
    assert run_dirs(first) == [f"{left}.1"]
    first.close()
    second = hives.open(root=root)
    assert second.status(left) == "running"  # re-adopted, its cgroup kept
    assert run_dirs(second) == [f"{left}.1"]
    second.terminate_session(left, grace=0)
    assert second.wait(left, timeout=10) == "terminated"
    assert not any(process_alive(pid) for pid in escapees)
    second.remove_session(left)
    second.remove_session(ended)
    assert run_dirs(second) == []
    second.close()
    assert hive_dirs(second) == []


# -- limits ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["found"], indirect=True)
def test_a_run_past_its_memory_limit_fails_with_memory_limit(hive: Hive) -> None:
    session_id = hive.create_session("hoards", **python(MEMORY_HOG), limits={"memory": "64M"})
    hive.start_session(session_id)
    assert hive.wait(session_id, timeout=30) == "failed"
    info = hive.get_session_info(session_id)
    assert info.reason == "memory_limit"
    assert info.limits.memory == 64 * 1024**2
    assert "the memory limit of 64 MiB, peak 6" in (info.detail or "")  # 60-64 MiB
    assert info.usage is not None
    assert 48 * 1024**2 <= (info.usage.memory_peak_bytes or 0) <= 64 * 1024**2
    assert b"hive_memory_limit_runs_total 1.0" in hive.metrics()


@pytest.mark.parametrize("mode", ["found"], indirect=True)
def test_a_fork_bomb_is_held_to_its_process_limit(hive: Hive, signal_: ReadySignal) -> None:
    session_id = hive.create_session(
        "forks", **python(FORKS, str(signal_.path)), limits={"pids": 32}
    )
    hive.start_session(session_id)
    counts = signal_.wait()
    assert counts["born"] < 32
    assert counts["born"] + counts["refused"] == 100
    assert hive.wait(session_id, timeout=10) == "failed"
    info = hive.get_session_info(session_id)
    assert info.reason == "exit_code"
    assert f"{counts['refused']} forks refused by the process limit of 32" in (info.detail or "")
    assert session_processes(session_id) == []
    # The machine is unaffected: the next session forks as it likes.
    other = hive.create_session("fine", command=["true"])
    hive.start_session(other)
    assert hive.wait(other, timeout=10) == "completed"


@pytest.mark.parametrize("mode", ["found"], indirect=True)
def test_a_cpu_limit_holds_two_spinners_to_a_fifth_of_a_core(hive: Hive) -> None:
    session_id = hive.create_session("spins", **python(SPINNERS), limits={"cpus": 0.2})
    hive.start_session(session_id)

    def cpu() -> float:
        usage = hive.get_session_info(session_id).usage
        assert usage is not None
        assert usage.cpu_seconds is not None
        return usage.cpu_seconds

    # The shim and both spinners:
    eventually(lambda: hive.get_session_info(session_id).usage.processes == 3)  # type: ignore[union-attr]
    began, used = time.monotonic(), cpu()
    time.sleep(2)  # a measurement window: the rate is the point, not a wait for an event
    rate = (cpu() - used) / (time.monotonic() - began)
    assert 0.1 <= rate <= 0.3, f"{rate:.3f} of a core"
    hive.terminate_session(session_id, grace=0)
    assert hive.wait(session_id, timeout=10) == "terminated"


@pytest.mark.parametrize("mode", ["found"], indirect=True)
def test_usage_is_fresh_while_a_run_lasts_and_kept_once_it_ended(
    hive: Hive, signal_: ReadySignal
) -> None:
    session_id = hive.create_session(
        "forks", **python(FORKS, str(signal_.path)), limits={"pids": 8}
    )
    hive.start_session(session_id)
    signal_.wait()
    assert hive.wait(session_id, timeout=10) == "failed"
    ended = hive.get_session_info(session_id).usage
    assert ended is not None
    assert ended.processes == 0
    assert (ended.cpu_seconds or 0) > 0
    assert (ended.memory_peak_bytes or 0) > 0
    assert [event.usage for event in hive.events(session_id) if event.type == "session.status"][
        -1
    ] == ended
    live = hive.create_session("lives", command=[SLEEP, "3600"], limits={"memory": "32M"})
    hive.start_session(live)
    # The shim and its agent:
    eventually(lambda: hive.get_session_info(live).usage.processes == 2)  # type: ignore[union-attr]
    (running,) = hive.list_sessions("running")
    assert running.usage is not None
    assert running.usage.processes == 2
    hive.terminate_session(live, grace=0)


# -- what is refused -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "says"),
    [
        ({"memory": "2X"}, "memory must be bytes or a number with a binary suffix"),
        ({"memory": 1000}, "from 1M to 1024T"),
        ({"memory": "2000T"}, "from 1M to 1024T"),
        ({"pids": 0}, "pids must be a whole number from 1"),
        ({"pids": 2.5}, "pids must be a whole number"),
        ({"cpus": 0}, "cpus must be a number of cores from 0.01"),
        ({"cpus": "lots"}, "cpus must be a number of cores"),
        ({"disk": "1G"}, "unknown limit 'disk'; known: memory, pids, cpus"),
        ("2G", "limits must be an object"),
    ],
)
@pytest.mark.parametrize("mode", ["found"], indirect=True)
def test_bad_limits_are_refused_and_nothing_is_created(hive: Hive, limits: Any, says: str) -> None:
    with pytest.raises(InvalidLimits, match=says):
        hive.create_session("limited", limits=limits)
    assert hive.list_sessions() == []


def test_without_cgroups_a_limit_is_refused_naming_what_is_missing(hives: Hives) -> None:
    hive = hives.open(cgroups="off")
    assert hive.stats().cgroup_mode == "none"
    with pytest.raises(InvalidLimits, match="the memory limit needs the cgroup memory controller"):
        hive.create_session("limited", limits={"memory": "1G"})
    assert hive.list_sessions() == []
    with pytest.raises(InvalidConfig, match="default limits: the pids limit needs"):
        hives.open(root=hives.root / "other", cgroups="off", pids_max=64)


def test_no_hierarchy_at_all_is_mode_none_and_says_why(tmp_path: Path) -> None:
    cgroups = detect(tmp_path, mountinfo="", own="0::/\n")
    assert cgroups.mode == "none"
    with pytest.raises(ValueError, match="no cgroup hierarchy is mounted"):
        cgroups.check(_cgroups.Limits(cpus=1.0))


def test_defaults_apply_and_a_sessions_own_limits_win(hives: Hives) -> None:
    hive = hives.open(memory_max="1G", pids_max=100)
    mine = hive.create_session("mine", limits={"pids": 10, "cpus": "1.5"})
    default = hive.create_session("default")
    assert hive.get_session_info(mine).limits.model_dump() == {
        "memory": 1024**3,
        "pids": 10,
        "cpus": 1.5,
    }
    assert hive.get_session_info(default).limits.model_dump() == {
        "memory": 1024**3,
        "pids": 100,
        "cpus": None,
    }


# -- hivectl and HTTP ------------------------------------------------------------------------


def test_limits_and_usage_through_hivectl_and_http(daemon: Daemon) -> None:
    daemon.env["HIVE_PIDS_MAX"] = "256"
    daemon.start()
    created = daemon.cli("create", "t", "--memory", "2G", "--cpus", "1.5")
    assert created.returncode == 0, created.stderr
    session_id = created.stdout.strip()
    info = json.loads(daemon.cli("get", session_id).stdout)
    assert info["limits"] == {"memory": 2 * 1024**3, "pids": 256, "cpus": 1.5}
    assert info["usage"] is None
    assert daemon.cli("start", session_id, "--exit", "0").returncode == 0
    assert daemon.cli("wait", session_id, "--timeout", "60").returncode == 0
    usage = json.loads(daemon.cli("get", session_id).stdout)["usage"]
    assert set(usage) == {"memory_bytes", "memory_peak_bytes", "cpu_seconds", "processes"}
    assert usage["cpu_seconds"] > 0
    assert usage["processes"] == 0
    cases = [
        (("create", "t", "--memory", "lots"), "memory must be bytes or a number"),
        (("create", "t", "--pids", "0"), "pids must be a whole number from 1"),
        (("create", "t", "--cpus", "none"), "cpus must be a number of cores"),
    ]
    for args, message in cases:
        done = daemon.cli(*args)
        assert (done.returncode, done.stdout) == (4, ""), (args, done.stderr)
        assert message in done.stderr
        assert "Traceback" not in done.stderr
    with daemon.http() as http:
        health = http.get("/health").json()
        assert health["cgroup_mode"] in ("v2", "hybrid")
        reply = http.post("/sessions", json={"task": "t", "limits": {"cpus": 0}})
        assert (reply.status_code, reply.json()["error"]) == (422, "invalid_input")
        assert "cpus must be a number of cores" in reply.json()["message"]
        made = http.post("/sessions", json={"task": "t", "limits": {"memory": 1048576}})
        assert made.json()["limits"] == {"memory": 1048576, "pids": 256, "cpus": None}
        assert len(http.get("/sessions").json()["sessions"]) == 2  # the refused made none
        metrics = http.get("/metrics").text
        assert "hive_run_cpu_seconds_count 1.0" in metrics
        assert "hive_run_memory_peak_bytes_bucket" in metrics
        assert session_id not in metrics  # never a label per session


def test_a_daemon_without_cgroups_refuses_a_limit_with_why(daemon: Daemon) -> None:
    daemon.env["HIVE_CGROUPS"] = "off"
    daemon.start()
    refused = daemon.cli("create", "t", "--memory", "1G")
    assert (refused.returncode, refused.stdout) == (4, "")
    assert "the memory limit needs the cgroup memory controller" in refused.stderr
    with daemon.http() as http:
        assert http.get("/health").json()["cgroup_mode"] == "none"


def test_a_machine_without_cgroups_is_said_once_with_why(
    hives: Hives, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def nothing_mounted(root: Path) -> Cgroups:
        return detect(root, mountinfo="", own="0::/\n")

    monkeypatch.setattr(_core, "detect", nothing_mounted)
    monkeypatch.setattr(_core, "_warned_no_cgroups", False)
    first = hives.open(root=hives.root / "first")
    second = hives.open(root=hives.root / "second")
    assert first.stats().cgroup_mode == second.stats().cgroup_mode == "none"
    said = [record for record in caplog.records if "no usable cgroups" in record.getMessage()]
    assert len(said) == 1
    assert "no cgroup hierarchy is mounted" in said[0].getMessage()
    hives.open(root=hives.root / "third", cgroups="off")  # asked for: not warned about
    assert len([r for r in caplog.records if "no usable cgroups" in r.getMessage()]) == 1


# -- what the review of the first version found ------------------------------------------------


def test_a_kernel_list_is_read_whole(tmp_path: Path) -> None:
    """cgroupfs and /proc hand a list over a page a read: one read would cut it short."""
    with open("/proc/self/smaps", encoding="utf-8") as smaps:
        assert len(smaps.read()) > 8192
    assert len(_cgroups._read(Path("/proc/self/smaps"))) > 8192


def test_one_root_spelled_two_ways_has_one_cgroup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "root")
    monkeypatch.chdir(tmp_path)
    names = {
        _cgroups.hive_dir_name(path)
        for path in (tmp_path / "root", Path("root"), Path("./root/"), tmp_path / "link")
    }
    assert len(names) == 1


def test_a_run_cgroup_of_no_known_session_is_left_alone(hives: Hives, tmp_path: Path) -> None:
    """Not this root's (or not any Hive's): recovery neither kills in it nor removes it."""
    root = tmp_path / "root"
    hive = hives.open(root=root)
    stranger = hive._core.cgroups.open("0a1b2c3d-0000-4000-8000-00000000abcd.1").membership
    hive.close()
    stranger.parent.mkdir(exist_ok=True)
    stranger.mkdir()
    try:
        second = hives.open(root=root)
        assert stranger.is_dir()
        assert run_dirs(second) == [stranger.name]
    finally:
        stranger.rmdir()


def test_a_run_started_without_cgroups_is_still_contained_when_they_come(
    hives: Hives, tmp_path: Path, signal_: ReadySignal, escapees: list[int]
) -> None:
    """Left running by a Hive with cgroups off (or an older version), then re-adopted by
    one with them: its escapee is found the old way, by its marker, when it is stopped."""
    root = tmp_path / "root"
    first = hives.open(root=root, cgroups="off", shutdown="leave")
    args = ["--sleep", "inf", "--setsid-grandchild", "--stubborn-grandchild"]
    session_id = first.create_session("older", args=[*args, "--ready", str(signal_.path)])
    first.start_session(session_id)
    escapees.append(signal_.wait()["grandchild"])
    first.close()
    second = hives.open(root=root, grace_period=0.2)
    assert second.stats().cgroup_mode in ("v2", "hybrid")
    assert second.status(session_id) == "running"
    assert run_dirs(second) == []
    second.terminate_session(session_id)
    assert second.wait(session_id, timeout=10) == "terminated"
    eventually(lambda: not process_alive(escapees[0]))


NESTS = """
cgroup=$(sed -n 's/^0:://p' /proc/self/cgroup)
mkdir "/sys/fs/cgroup/unified$cgroup/inner"
echo $$ > "/sys/fs/cgroup/unified$cgroup/inner/cgroup.procs"
exec sleep 3600
"""


@pytest.mark.parametrize("mode", ["found"], indirect=True)
def test_cgroups_an_agent_makes_in_its_own_go_with_its_run(hive: Hive) -> None:
    session_id = hive.create_session("nests", command=["sh", "-c", NESTS])
    hive.start_session(session_id)
    eventually(lambda: hive.get_session_info(session_id).usage.processes == 1)  # type: ignore[union-attr]
    hive.terminate_session(session_id, grace=0)
    assert hive.wait(session_id, timeout=10) == "terminated"
    assert run_dirs(hive) == []


def test_a_stop_cut_short_by_a_crash_ends_as_the_stop_would_have(
    hives: Hives, tmp_path: Path, signal_: ReadySignal
) -> None:
    """The stop's SIGKILL takes the shim too, so no status is left: with the session
    stopping when its Hive died, the next one ends it as the stop, not as lost."""
    root = tmp_path / "root"
    first = hives.open(root=root, shutdown="leave", grace_period=3600)
    args = ["--sleep", "inf", "--ignore-term", "--ready", str(signal_.path)]
    session_id = first.create_session("stubborn", args=args)
    first.start_session(session_id)
    signal_.wait()  # it ignores SIGTERM from now on
    assert first.terminate_session(session_id) == "stopping"
    cgroup = first._core.cgroups.existing(f"{session_id}.1")
    first.close()  # the Hive is gone mid-stop; its SIGKILL then comes from elsewhere
    cgroup.kill()
    eventually(lambda: not cgroup.populated())
    second = hives.open(root=root)
    info = second.get_session_info(session_id)
    assert (info.status, info.reason) == ("terminated", "requested")
    assert "its stop was under way when its Hive ended" in (info.detail or "")


@pytest.mark.parametrize("mode", ["found"], indirect=True)
def test_a_cpu_limit_above_what_the_hive_may_use_is_refused_at_create(hive: Hive) -> None:
    """v1 refuses a child a CPU quota above its parent's: said at create, not at spawn."""
    cpu = hive._core.cgroups.limit_dirs["cpus"]
    if not (cpu / "cpu.cfs_quota_us").exists():
        pytest.skip("the cpu controller is v2's here: a quota above its parent's is allowed")
    (cpu / "cpu.cfs_quota_us").write_text("50000")  # half a core for the whole Hive
    try:
        with pytest.raises(InvalidLimits, match=r"more than the 0\.5 cores the Hive.s own"):
            hive.create_session("greedy", limits={"cpus": 1})
        session_id = hive.create_session("modest", command=["true"], limits={"cpus": 0.25})
        hive.start_session(session_id)
        assert hive.wait(session_id, timeout=10) == "completed"
    finally:
        (cpu / "cpu.cfs_quota_us").write_text("-1")
