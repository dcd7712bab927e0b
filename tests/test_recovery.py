"""Nothing is lost when the hive dies: every unsettled session is reconciled on start."""

from __future__ import annotations

import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from hive_actors import Hive, RootInUse, _recovery
from hive_actors._process import process_start_time, read_status, signal_each
from hive_actors._runner import status_file
from hive_actors.testing import FakeClock, ReadySignal, session_processes

from .conftest import Daemon, Hives, eventually, kill_leftovers, process_alive

containment = pytest.mark.usefixtures("containment")
"""Run in both modes: with a cgroup per run, and with process groups and markers only."""


def _run_script(body: str, root: Path) -> list[str]:
    """Run ``body`` in a fresh interpreter with ``root`` as sys.argv[1]; its stdout words.

    A script that fails leaves nothing: its own process group (a child it forked) is
    killed if it does not finish in time, and the processes of every session made on
    ``root``. One that succeeds leaves its agents to the test.
    """
    script = "import os, sys\nfrom hive_actors import Hive\n"
    script += "from hive_actors.testing import fake_agent_command\n" + textwrap.dedent(body)
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        try:
            stdout, stderr = process.communicate(timeout=45)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
        assert process.returncode == 0, stderr
    except BaseException:
        kill_leftovers([root / "sessions"])
        raise
    return stdout.split()


def _crash_after(root: Path, *calls: str) -> list[str]:
    """Run a Hive in a child process, make ``calls``, then die without closing (like -9)."""
    body = f"""
        hive = Hive(root=sys.argv[1], command=fake_agent_command())
        ids = []
        for call in {list(calls)!r}:
            verb, *args = call.split()
            session_id = hive.create_session(verb, args=args)
            if verb != "created":
                hive.start_session(session_id)
            ids.append(session_id)
        print(" ".join(ids), flush=True)
        os._exit(0)
        """
    return _run_script(body, root)


def _status_file(hive: Hive, session_id: str) -> Path:
    info = hive.get_session_info(session_id) if not hive.closed else None
    assert info is not None
    return Path(info.working_dir, ".hive", f"run-{info.runs}.exit")


@containment
def test_a_live_agent_is_re_adopted_and_its_end_recorded(hives: Hives, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (session_id,) = _crash_after(root, "running --sleep inf")
    try:
        hive = hives.open(root=root)
        info = hive.get_session_info(session_id)
        assert (info.status, info.runs) == ("running", 1)
        assert process_alive(info.pid)
        assert hive.terminate_session(session_id, grace=0) == "stopping"
        assert hive.wait(session_id, timeout=10) == "terminated"
        assert hive.get_session_info(session_id).exit_code == 137
        assert session_processes(session_id) == []
    finally:
        signal_each(session_processes(session_id), signal.SIGKILL)


@containment
def test_runs_that_ended_while_no_hive_watched_get_their_exit_codes(
    hives: Hives, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    ok, bad = _crash_after(root, "finishing --sleep 0.3", "failing --sleep 0.3 --exit 3")
    sessions = root / "sessions"
    eventually(lambda: all(_recorded(sessions / s) for s in (ok, bad)))
    hive = hives.open(root=root)
    assert (hive.status(ok), hive.status(bad)) == ("completed", "failed")
    assert hive.get_session_info(bad).exit_code == 3
    recovered = [e for e in hive.events(bad) if e.recovered]
    assert [e.to for e in recovered if e.type == "session.status"] == ["failed"]


@containment
def test_what_a_run_that_ended_while_no_hive_watched_left_is_killed(
    hives: Hives, tmp_path: Path
) -> None:
    """No hive reaped the run, so nothing killed its group when the shim ended; and
    nothing hunted its escapees. The next hive does both before recording the outcome."""
    root = tmp_path / "root"
    in_group, escaped = _crash_after(
        root,
        "leaves --sleep 0.3 --grandchild",
        "leaves --sleep 0.3 --setsid-grandchild",
    )
    sessions = root / "sessions"
    eventually(lambda: all(_recorded(sessions / s) for s in (in_group, escaped)))
    assert len(session_processes(in_group)) == 1  # the grandchild: shim and agent are gone
    assert len(session_processes(escaped)) == 1
    hive = hives.open(root=root)
    assert (hive.status(in_group), hive.status(escaped)) == ("completed", "completed")
    eventually(lambda: session_processes(in_group) == session_processes(escaped) == [])


@containment
def test_a_vanished_agent_without_an_exit_status_is_lost(hives: Hives, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (session_id,) = _crash_after(root, "vanishing --sleep inf")
    # The shim and its agent both (the agent seen once it has exec'd: an environment
    # is unreadable mid-exec). The shim included: nothing records the end.
    eventually(lambda: len(session_processes(session_id)) == 2)
    signal_each(session_processes(session_id), signal.SIGKILL)
    eventually(lambda: session_processes(session_id) == [])
    hive = hives.open(root=root)
    info = hive.get_session_info(session_id)
    assert (info.status, info.reason) == ("failed", "lost")
    assert "no hive watched" in (info.detail or "")


def _recorded_pid(root: Path, session_id: str) -> int:
    """The shim's pid, as the hive that started the run recorded it in session.json."""
    pid: int = json.loads((root / "sessions" / session_id / "session.json").read_text())["pid"]
    return pid


def _orphan_an_agent(root: Path, ready: Callable[[], ReadySignal]) -> tuple[str, int, int, int]:
    """The second run of a persistent session (the first exited 0) left by a crashed hive,
    its agent with a grandchild in its group that cleared its environment (only the group
    finds it); the session, shim, agent and grandchild."""
    signal_ = ready()
    (session_id,) = _run_script(
        f"""
        hive = Hive(root=sys.argv[1], command=fake_agent_command())
        session_id = hive.create_session("orphaned", persistent=True)
        hive.start_session(session_id)
        assert hive.wait(session_id, timeout=30) == "idle"
        args = ["--sleep", "inf", "--grandchild", "--bare-grandchild"]
        hive.start_session(session_id, [*args, "--ready", {str(signal_.path)!r}])
        print(session_id, flush=True)
        os._exit(0)
        """,
        root,
    )
    agent = signal_.wait()
    return session_id, _recorded_pid(root, session_id), agent["pid"], agent["grandchild"]


def _assert_lost_and_killed(hive: Hive, session_id: str, cause: str, pids: list[int]) -> None:
    info = hive.get_session_info(session_id)
    assert (info.status, info.reason, info.exit_code) == ("failed", "lost", None)
    assert info.detail == _lost_detail(cause, pids)
    eventually(lambda: not any(process_alive(pid) for pid in pids))
    assert session_processes(session_id) == []


def _lost_detail(cause: str, killed: list[int]) -> str:
    pids = ", ".join(str(pid) for pid in sorted(killed))
    return f"{cause}; killed the {len(killed)} processes of the run still running (pids {pids})"


@containment
def test_a_live_agent_whose_shim_was_killed_while_no_hive_ran_is_killed_and_recorded(
    hives: Hives, tmp_path: Path, ready: Callable[[], ReadySignal]
) -> None:
    """A container tool or the OOM killer took the shim, which records the agent's exit,
    and left the agent running, unwatched: the next hive finds the run's processes (by
    their marker, and by their group), kills them and says so."""
    root = tmp_path / "root"
    session_id, shim, agent, grandchild = _orphan_an_agent(root, ready)
    try:
        os.kill(shim, signal.SIGKILL)
        eventually(lambda: not process_alive(shim))
        assert process_alive(agent)
        assert process_alive(grandchild)
        hive = hives.open(root=root)
        cause = "its shim ended while no hive ran, without recording the agent's exit status"
        _assert_lost_and_killed(hive, session_id, cause, [agent, grandchild])
    finally:
        signal_each([agent, grandchild], signal.SIGKILL)


@containment
def test_a_re_adopted_agent_whose_shim_is_killed_is_killed_and_recorded(
    hives: Hives, tmp_path: Path, ready: Callable[[], ReadySignal], clock: FakeClock
) -> None:
    """The same while a hive watches a run it re-adopted: the shim is not its child, so
    its group is found as recovery finds it, not through the shim's zombie."""
    root = tmp_path / "root"
    session_id, shim, agent, grandchild = _orphan_an_agent(root, ready)
    try:
        hive = hives.open(root=root, clock=clock)  # no sweep runs: its clock stands still
        assert hive.status(session_id) == "running"
        os.kill(shim, signal.SIGKILL)
        assert hive.wait(session_id, timeout=10) == "failed"
        cause = "its shim ended without recording the agent's exit status"
        _assert_lost_and_killed(hive, session_id, cause, [agent, grandchild])
    finally:
        signal_each([agent, grandchild], signal.SIGKILL)


@containment
def test_a_shim_killed_after_recovery_found_it_alive_leaves_nothing_running(
    hives: Hives,
    tmp_path: Path,
    ready: Callable[[], ReadySignal],
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The shim dies between recovery's look at it and its adoption by the session's
    runner: the runner finds it gone, and reaps it as the reaper would have."""
    root = tmp_path / "root"
    session_id, shim, agent, grandchild = _orphan_an_agent(root, ready)
    try:
        shim_start = process_start_time(shim)
        os.kill(shim, signal.SIGKILL)
        eventually(lambda: not process_alive(shim))
        # Fault injection: recovery still sees the shim as it was a moment before.
        looked = _recovery.process_start_time
        monkeypatch.setattr(
            _recovery, "process_start_time", lambda pid: shim_start if pid == shim else looked(pid)
        )
        hive = hives.open(root=root, clock=clock)
        assert hive.wait(session_id, timeout=10) == "failed"
        info = hive.get_session_info(session_id)
        assert (info.reason, info.exit_code) == ("lost", None)
        cause = "its shim ended without recording the agent's exit status"
        assert info.detail == _lost_detail(cause, [agent, grandchild])
        eventually(lambda: not process_alive(agent) and not process_alive(grandchild))
    finally:
        signal_each([agent, grandchild], signal.SIGKILL)


@containment
def test_a_run_that_ends_while_recovery_looks_at_it_gets_its_exit_code(
    hives: Hives, tmp_path: Path, ready: Callable[[], ReadySignal], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shim writes the agent's exit status after recovery read it (none yet) and
    before recovery looked at the shim's pid (gone): the run ended, it was not lost."""
    root = tmp_path / "root"
    session_id, shim, agent, grandchild = _orphan_an_agent(root, ready)
    try:
        looked = _recovery.process_start_time

        def ends_meanwhile(pid: int) -> int | None:
            if pid != shim:
                return looked(pid)
            info = json.loads((root / "sessions" / session_id / "session.json").read_text())
            status_file(root / "sessions" / session_id, info["runs"]).write_text("7\n")
            signal_each([shim, agent, grandchild], signal.SIGKILL)
            return None

        monkeypatch.setattr(_recovery, "process_start_time", ends_meanwhile)
        hive = hives.open(root=root)
        info = hive.get_session_info(session_id)
        assert (info.status, info.exit_code) == ("failed", 7), info.detail
    finally:
        signal_each([shim, agent, grandchild], signal.SIGKILL)


@containment
def test_a_recycled_pid_is_not_mistaken_for_the_agent(hives: Hives, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (session_id,) = _crash_after(root, "vanishing --sleep inf")
    eventually(lambda: len(session_processes(session_id)) == 2)  # the agent has exec'd
    signal_each(session_processes(session_id), signal.SIGKILL)
    eventually(lambda: session_processes(session_id) == [])
    # Point the record at a live process with another start time: this test's own pid.
    db = sqlite3.connect(root / "registry.db")
    (raw,) = db.execute("SELECT info FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
    info = json.loads(raw)
    info["pid"] = os.getpid()
    db.execute("UPDATE sessions SET info = ? WHERE session_id = ?", (json.dumps(info), session_id))
    db.commit()
    db.close()
    hive = hives.open(root=root)
    assert hive.get_session_info(session_id).reason == "lost"


@containment
def test_leave_running_lets_the_next_hive_finish_the_job(hives: Hives, ready) -> None:
    first = hives.open(shutdown="leave")
    signal_ = ready()
    session_id = first.create_session(
        "outlives its hive", args=["--sleep", "inf", "--ready", str(signal_.path)]
    )
    first.start_session(session_id)
    agent = signal_.wait()["pid"]
    first.close()
    assert process_alive(agent)

    second = hives.open()
    assert second.status(session_id) == "running"
    os.kill(agent, signal.SIGTERM)  # the agent ends on its own, watched by the new hive
    assert second.wait(session_id, timeout=10) == "failed"
    info = second.get_session_info(session_id)
    assert (info.exit_code, info.detail) == (143, "killed by SIGTERM")


def test_kill_9_of_the_daemon_loses_nothing_and_runs_nothing_twice(daemon: Daemon) -> None:
    daemon.env["HIVE_MAX_RUNNING"] = "10"
    daemon.start()
    plan = (
        [("long", ["--sleep", "inf"])] * 6
        + [("quick-ok", ["--sleep", "0.5", "--writes", "7"])] * 2
        + [("quick-fail", ["--sleep", "0.5", "--exit", "3"])] * 2
        + [("queued", ["--writes", "7"])] * 4  # all 10 slots are taken by now
        + [("created", None)] * 6
    )
    ids: dict[str, str] = {}
    with daemon.http() as http:
        for name, args in plan:
            session_id = http.post("/sessions", json={"task": name}).json()["session_id"]
            if args is not None:
                reply = http.post(f"/sessions/{session_id}/start", json={"args": args})
                assert reply.json()["status"] == ("queued" if name == "queued" else "running")
            ids[session_id] = name
    assert daemon.process is not None
    daemon.process.kill()  # kill -9: no shutdown, no cleanup
    daemon.process.wait(10)
    finishing = [s for s, name in ids.items() if name.startswith("quick")]
    sessions = daemon.root / "sessions"
    eventually(lambda: all(_recorded(sessions / s) for s in finishing))

    daemon.start()  # a new daemon on the same root
    expected = {
        "long": ("running", None),
        "quick-ok": ("completed", 0),
        "quick-fail": ("failed", 3),
        "queued": ("completed", 0),  # started by the new daemon as slots allowed
        "created": ("created", None),
    }
    with daemon.http() as http:
        for session_id, name in ids.items():
            if name == "queued":
                http.get(f"/sessions/{session_id}/wait", params={"timeout": 60})
        got = {s: http.get(f"/sessions/{s}").json() for s in ids}
        assert len(got) == 20  # every acknowledged create survived
        for session_id, name in ids.items():
            info = got[session_id]
            assert (info["status"], info["exit_code"]) == expected[name], (name, info)
            assert info["runs"] == (0 if name == "created" else 1)  # nothing ran twice
            if name.endswith("ok") or name == "queued":
                db = sqlite3.connect(info["database"])
                assert db.execute("SELECT count(*) FROM memory").fetchone() == (7,)
                db.close()
        recovered = [e for e in (json.loads(line) for line in _journal(daemon)) if e["recovered"]]
        assert {e["session_id"] for e in recovered} == set(finishing)
        for session_id, name in ids.items():
            if name == "long":
                http.post(f"/sessions/{session_id}/terminate", json={"grace": 0})
        for session_id, name in ids.items():
            if name == "long":
                reply = http.get(f"/sessions/{session_id}/wait", params={"timeout": 30}).json()
                assert reply["status"] == "terminated"
                assert session_processes(session_id) == []


def _journal(daemon: Daemon) -> list[str]:
    done = daemon.cli("events", "--no-follow")
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def _recorded(working_dir: Path) -> bool:
    """The shim wrote its first run's exit status, whole."""
    return read_status(working_dir / ".hive" / "run-1.exit") is not None


def test_an_exit_status_is_read_only_whole(tmp_path: Path) -> None:
    """A shim killed mid-write leaves "unknown", never a wrong code."""
    status = tmp_path / "run-1.exit"
    assert read_status(status) is None  # never written
    for partial in ("", "14"):
        status.write_text(partial)
        assert read_status(status) is None
    status.write_text("143\n")
    assert read_status(status) == 143
    status.write_text("garbage\n")
    assert read_status(status) is None


def test_a_second_hive_on_a_root_is_refused_and_changes_nothing(hives: Hives, ready) -> None:
    first = hives.open()
    signal_ = ready()
    session_id = first.create_session("mine", args=["--sleep", "inf", "--ready", str(signal_.path)])
    first.start_session(session_id)
    signal_.wait()
    with pytest.raises(
        RootInUse, match=f"another Hive of this process already manages {first.root}"
    ):
        hives.open()  # it would adopt the running agent as if the first had died
    assert first.status(session_id) == "running"  # the first still owns it, and works
    assert first.terminate_session(session_id, grace=0) == "stopping"
    assert first.wait(session_id, timeout=10) == "terminated"
    first.close()

    second = hives.open()  # the root is free once the first is closed
    assert second.status(session_id) == "terminated"
    assert not any(event.recovered for event in second.events(since=0))  # none adopted


def test_a_hive_in_another_process_holds_the_root_until_that_process_dies(tmp_path: Path) -> None:
    root = tmp_path / "root"
    script = textwrap.dedent(
        """
        import sys
        from hive_actors import Hive
        hive = Hive(root=sys.argv[1])
        print("open", flush=True)
        sys.stdin.read()  # until killed
        """
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert select.select([holder.stdout], [], [], 60)[0], "the holder did not open its Hive"
        assert holder.stdout.readline() == b"open\n"
        with pytest.raises(RootInUse, match=f"a Hive in process {holder.pid} already manages"):
            Hive(root=root)
    finally:
        holder.kill()  # no close: the kernel drops its lock as it dies
        holder.wait(30)
        for stream in (holder.stdin, holder.stdout):
            if stream is not None:
                stream.close()
    with Hive(root=root) as hive:
        assert hive.list_sessions() == []


def test_a_child_forked_without_exec_does_not_keep_the_root_locked(hives: Hives) -> None:
    first = hives.open()
    told, tell = os.pipe()
    with warnings.catch_warnings():  # Python 3.12+ warns of a fork with threads running
        warnings.simplefilter("ignore", DeprecationWarning)
        child = os.fork()
    if child == 0:  # as a multiprocessing "fork" worker would: lives on, execs nothing
        os.close(tell)
        os.read(told, 1)
        os._exit(0)
    os.close(told)
    try:
        first.close()
        second = hives.open()  # while the child, forked with the first's lock, lives
        assert second.list_sessions() == []
    finally:
        os.close(tell)  # the child reads end-of-file and exits
        os.waitpid(child, 0)


def test_a_hive_left_open_at_exit_is_closed_like_a_with_block(hives: Hives, tmp_path: Path) -> None:
    root = tmp_path / "root"
    session_id, agent = _run_script(
        """
        hive = Hive(root=sys.argv[1], command=fake_agent_command())
        session_id = hive.create_session("forgotten", args=["--sleep", "inf"])
        hive.start_session(session_id)
        print(session_id, hive.get_session_info(session_id).pid, flush=True)
        # no close(): the interpreter exits
        """,
        root,
    )
    assert not process_alive(int(agent))
    hive = hives.open(root=root)
    info = hive.get_session_info(session_id)
    assert (info.status, info.reason) == ("terminated", "shutdown")
    assert not any(event.recovered for event in hive.events(since=0))  # closed, not crashed


def test_a_forked_child_that_exits_does_not_close_its_parents_hive(
    hives: Hives, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    (session_id,) = _run_script(
        """
        import warnings
        hive = Hive(root=sys.argv[1], command=fake_agent_command())
        session_id = hive.create_session("parent's", args=["--sleep", "inf"])
        hive.start_session(session_id)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            child = os.fork()
        if child == 0:
            sys.exit(0)  # a normal exit runs the child's atexit handlers
        os.waitpid(child, 0)
        assert hive.status(session_id) == "running", hive.status(session_id)
        print(session_id, flush=True)
        """,
        root,
    )
    hive = hives.open(root=root)  # the parent closed its Hive itself, at its own exit
    assert hive.get_session_info(session_id).reason == "shutdown"
