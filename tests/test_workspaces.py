"""What coding agents need from a session, beyond what the contract suite runs on both
engines: many worktrees of one repository at once (threads and processes), the setup
step's stops, timeouts and crashes, ports across hundreds of sessions and a restart,
secrets on every surface of the daemon, and the same through ``hivectl`` and HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from hive_actors import Hive, HiveConfig, InvalidInput, PortsExhausted, _git
from hive_actors._ports import PortPool
from hive_actors.testing import FakeClock, fake_agent_command

from .conftest import (
    GIT_IDENTITY,
    Daemon,
    Hives,
    branches,
    eventually,
    git,
    in_threads,
    make_repo,
    worktrees,
)

COMMITS_ITS_OWN_FILE = """
import os, pathlib, subprocess
name = os.environ["HIVE_SESSION_ID"] + ".txt"
pathlib.Path(name).write_text("work of " + name + "\\n")
subprocess.run(["git", "add", name], check=True)
subprocess.run(["git", "commit", "--quiet", "-m", "work " + name], check=True)
"""


def release(fifo: Path) -> None:
    """Tell a ``--hold`` fake agent to finish (opening blocks until it has opened it)."""
    with open(fifo, "w", encoding="utf-8") as writer:
        writer.write("go\n")


def make_fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


# -- many sessions from one repository ------------------------------------------------------


def test_ten_sessions_from_one_repository_at_once_each_on_its_branch(
    hives: Hives, repo: Path
) -> None:
    hive = hives.open(command=[sys.executable, "-c", COMMITS_ITS_OWN_FILE])

    def create(_index: int) -> str:
        return hive.create_session("t", repo=str(repo), env=GIT_IDENTITY)

    ids = in_threads(create, range(10))
    assert len(set(ids)) == 10
    assert sorted(worktrees(repo)) == sorted(hive.get_session_info(s).working_dir for s in ids)
    for session_id in ids:
        hive.start_session(session_id)
    for session_id in ids:
        assert hive.wait(session_id, timeout=60) == "completed"
    for session_id in ids:
        changes = hive.changes(session_id)
        name = f"{session_id}.txt"
        assert [c.subject for c in changes.commits] == [f"work {name}"]
        assert [(f.path, f.insertions, f.deletions) for f in changes.files] == [(name, 1, 0)]
        assert changes.diff.endswith(f"+work of {name}\n")

    assert sorted(hive.cleanup(max_age_hours=0)) == sorted(ids)
    assert worktrees(repo) == []
    assert branches(repo) == {"main"} | {f"hive/{s[:8]}" for s in ids}  # the work is kept
    assert git(repo, "status", "--porcelain", "--ignored") == ""


CREATES_FROM_A_REPO = """
import json, sys
from hive_actors import Hive
root, repo = sys.argv[1], sys.argv[2]
with Hive(root, command=["true"]) as hive:
    kept = []
    for index in range(12):  # every other one is removed again, its branch with it
        session_id = hive.create_session("t", repo=repo)
        if index % 2:
            hive.terminate_session(session_id)
            hive.remove_session(session_id, delete_branch=True)
        else:
            kept.append(hive.get_session_info(session_id).branch)
    print(json.dumps(kept))
"""


def test_hives_in_four_processes_create_and_remove_from_one_repository_at_once(
    tmp_path: Path, repo: Path
) -> None:
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CREATES_FROM_A_REPO, str(tmp_path / f"root{i}"), str(repo)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    made = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        made += json.loads(out)
    assert len(set(made)) == 24
    assert branches(repo) == {"main", *made}  # none removed left its branch behind
    assert len(worktrees(repo)) == 24


def test_a_bare_repository_and_the_users_own_worktrees_of_it_keep_working(
    hives: Hives, repo: Path, tmp_path: Path
) -> None:
    bare = tmp_path / "bare.git"
    git(tmp_path, "clone", "--quiet", "--bare", str(repo), str(bare))
    git(bare, "worktree", "add", "--quiet", str(tmp_path / "mine"), "main")
    hive = hives.open(command=[sys.executable, "-c", "open('f0.txt', 'a').write('x\\n')"])
    session_id = hive.create_session("t", repo=str(bare))
    hive.start_session(session_id)
    assert hive.wait(session_id, timeout=30) == "completed"
    assert [f.path for f in hive.changes(session_id).files] == ["f0.txt"]
    working_dir = hive.get_session_info(session_id).working_dir
    assert git(working_dir, "status", "--porcelain") == " M f0.txt\n"
    assert git(tmp_path / "mine", "status", "--porcelain") == ""  # the user's, as before
    assert git(bare, "rev-parse", "--is-bare-repository").strip() == "true"


def test_what_the_user_ignores_everywhere_stays_ignored_in_a_worktree(
    hives: Hives, repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_home = tmp_path / "config"
    (config_home / "git").mkdir(parents=True)
    (config_home / "git" / "ignore").write_text(".env\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.gitconfig naming another file
    hive = hives.open()
    session_id = hive.create_session("t", repo=str(repo))
    working_dir = Path(hive.get_session_info(session_id).working_dir)
    (working_dir / ".env").write_text("API_KEY=secret\n")
    (working_dir / "kept.txt").write_text("k\n")
    assert git(working_dir, "status", "--porcelain") == "?? kept.txt\n"
    assert [f.path for f in hive.changes(session_id).files] == ["kept.txt"]


def test_the_diff_is_gits_plain_one_whatever_the_repository_config_says(
    hives: Hives, repo: Path
) -> None:
    git(repo, "config", "color.ui", "always")
    git(repo, "config", "diff.noprefix", "true")
    hive = hives.open()
    session_id = hive.create_session("t", repo=str(repo))
    working_dir = Path(hive.get_session_info(session_id).working_dir)
    (working_dir / "f0.txt").write_text("changed\n")
    untracked = working_dir / "untracked.txt"
    untracked.write_text("only in the worktree\n")
    diff = hive.changes(session_id).diff
    assert diff.startswith("diff --git a/f0.txt b/f0.txt\n")
    assert "\x1b[" not in diff
    # Reading the changes wrote nothing of the worktree's files into the repository.
    blob = git(repo, "hash-object", str(untracked)).strip()
    with pytest.raises(AssertionError):
        git(repo, "cat-file", "-e", blob)


def test_removing_a_session_leaves_the_users_other_worktrees_records_alone(
    hives: Hives, repo: Path, tmp_path: Path
) -> None:
    git(repo, "worktree", "add", "--quiet", "-b", "mine", str(tmp_path / "mine"))
    (tmp_path / "mine").rename(tmp_path / "away")  # on a drive not mounted now, say
    hive = hives.open()
    session_id = hive.create_session("t", repo=str(repo))
    hive.terminate_session(session_id)
    hive.remove_session(session_id)
    assert (repo / ".git" / "worktrees" / "mine").is_dir()  # not pruned
    assert worktrees(repo) == [str(tmp_path / "mine")]


def test_a_create_retried_after_it_was_cut_short_succeeds_and_leaves_no_debris(
    hives: Hives, repo: Path, tmp_path: Path
) -> None:
    root = tmp_path / "retried"
    hive = hives.open(root=root)
    session_id = "12345678-1234-4234-8234-123456789abc"
    # What a create cut short after the worktree was made leaves: worktree and branch.
    origin = _git.resolve(str(repo), None)
    _git.add_worktree(origin, root / "sessions" / session_id, "hive/12345678")
    (root / "secrets").mkdir(exist_ok=True)
    (root / "secrets" / "87654321-1234-4234-8234-123456789abc.json").write_text('{"K": "v"}')
    assert hive._create_session(session_id, "t", "medium", None, repo=str(repo)) == session_id
    assert worktrees(repo) == [hive.get_session_info(session_id).working_dir]
    assert branches(repo) == {"main", "hive/12345678"}
    hive.close()
    hives.open(root=root)  # env values kept for no session are not kept
    assert list((root / "secrets").iterdir()) == []


def test_env_given_as_anything_but_a_mapping_is_refused_without_its_values(
    hives: Hives,
) -> None:
    hive = hives.open()
    with pytest.raises(InvalidInput) as refused:
        hive.create_session("t", env=["API_KEY=sk-live-in-a-list"])  # type: ignore[arg-type]
    assert "sk-live" not in str(refused.value)
    assert "not a list" in str(refused.value)


def test_a_setup_timeout_a_restart_interrupted_still_ends_failed(
    hives: Hives, ready: Any, tmp_path: Path
) -> None:
    root = tmp_path / "timeout"
    clock = FakeClock()
    first = hives.open(root=root, clock=clock, setup_timeout=10, grace_period=60, shutdown="leave")
    signal_ = ready()
    setup = fake_agent_command("--sleep", "inf", "--ignore-term", "--ready", str(signal_.path))
    session_id = first.create_session("t", setup=setup)
    first.start_session(session_id)
    signal_.wait()
    clock.advance(11)
    eventually(lambda: first.status(session_id) == "stopping")
    first.close()  # within the grace period: the stop is the next Hive's to finish

    second = hives.open(root=root, grace_period=0.2)
    assert second.wait(session_id, timeout=30) == "failed"
    assert second.get_session_info(session_id).reason == "setup_timeout"


def test_a_repository_moved_or_deleted_never_blocks_cleanup(hives: Hives, tmp_path: Path) -> None:
    hive = hives.open()
    moved = make_repo(tmp_path / "moved")
    deleted = make_repo(tmp_path / "deleted")
    first = hive.create_session("t", repo=str(moved))
    second = hive.create_session("t", repo=str(deleted))
    moved.rename(tmp_path / "elsewhere")
    shutil.rmtree(deleted)
    for session_id in (first, second):
        hive.terminate_session(session_id)
    with pytest.raises(Exception, match="cannot read the changes"):
        hive.changes(second)
    hive.remove_session(first, delete_branch=True)
    assert sorted(hive.cleanup(max_age_hours=0)) == [second]
    assert list(hive.config.sessions_dir.iterdir()) == []
    # the moved repository keeps a stale record of the worktree until it prunes
    git(tmp_path / "elsewhere", "worktree", "prune")
    assert worktrees(tmp_path / "elsewhere") == []


def test_a_long_diff_is_cut_at_max_diff_bytes_and_the_counts_stay_whole(
    hives: Hives, repo: Path
) -> None:
    writes = "open('big.txt', 'w').write(''.join(f'line {i}\\n' for i in range(5000)))"
    hive = hives.open(max_diff_bytes=2048, command=[sys.executable, "-c", writes])
    session_id = hive.create_session("t", repo=str(repo))
    hive.start_session(session_id)
    assert hive.wait(session_id, timeout=30) == "completed"
    changes = hive.changes(session_id)
    assert changes.truncated
    assert 0 < len(changes.diff.encode()) <= 2048
    assert changes.diff.endswith("\n")  # cut at a line's end
    assert [(f.path, f.insertions) for f in changes.files] == [("big.txt", 5000)]


def test_changes_after_the_hive_was_reopened_and_for_a_plain_session(
    hives: Hives, repo: Path, tmp_path: Path
) -> None:
    root = tmp_path / "reopened"
    writes = [sys.executable, "-c", "open('n.txt','w').write('n\\n')"]
    hive = hives.open(root=root, command=writes, branch_prefix="agents/")
    session_id = hive.create_session("t", repo=str(repo))
    plain = hive.create_session("t")
    hive.start_session(session_id)
    assert hive.wait(session_id, timeout=30) == "completed"
    hive.close()
    again = hives.open(root=root)
    changes = again.changes(session_id)
    assert changes.branch == f"agents/{session_id[:8]}"
    assert [f.path for f in changes.files] == ["n.txt"]
    with pytest.raises(InvalidInput, match="not made from a repository"):
        again.changes(plain)


def test_a_tracked_file_where_hive_actors_keeps_its_own_is_refused(
    hives: Hives, repo: Path
) -> None:
    (repo / "output").write_text("the project's own\n")
    git(repo, "add", "output")
    git(repo, "commit", "--quiet", "-m", "an output file")
    hive = hives.open()
    with pytest.raises(InvalidInput, match="has output at its top level"):
        hive.create_session("t", repo=str(repo))
    assert (worktrees(repo), branches(repo), hive.list_sessions()) == ([], {"main"}, [])
    assert hive.create_session("t", repo=str(repo), ref="v1")  # a commit without it


# -- the setup step -------------------------------------------------------------------------


def test_a_setup_step_past_setup_timeout_fails_the_session(
    hives: Hives, clock: FakeClock, ready: Any
) -> None:
    hive = hives.open(clock=clock, setup_timeout=60)
    signal_ = ready()
    setup = fake_agent_command("--sleep", "inf", "--ready", str(signal_.path))
    session_id = hive.create_session("t", setup=setup)
    assert hive.start_session(session_id) == "starting"
    setup_pid = signal_.wait()["pid"]
    assert hive.status(session_id) == "starting"
    clock.advance(59)
    assert hive.status(session_id) == "starting"
    clock.advance(2)
    assert hive.wait(session_id, timeout=30) == "failed"
    info = hive.get_session_info(session_id)
    assert info.reason == "setup_timeout"
    assert info.detail == "the setup step ran past its setup_timeout of 60 s"
    assert info.runs == 0
    eventually(lambda: not Path(f"/proc/{setup_pid}").exists())


def test_terminate_during_setup_stops_it_and_the_agent_never_runs(
    hives: Hives, ready: Any, tmp_path: Path
) -> None:
    hive = hives.open()
    signal_ = ready()
    setup = fake_agent_command("--sleep", "inf", "--ready", str(signal_.path))
    agent_ran = tmp_path / "agent-ran"
    session_id = hive.create_session(
        "t", setup=setup, command=[sys.executable, "-c", f"open({str(agent_ran)!r}, 'w')"]
    )
    hive.start_session(session_id)
    setup_pid = signal_.wait()["pid"]
    hive.terminate_session(session_id)
    assert hive.wait(session_id, timeout=30) == "terminated"
    info = hive.get_session_info(session_id)
    assert (info.reason, info.runs, info.setup_done) == ("requested", 0, False)
    assert not agent_ran.exists()
    eventually(lambda: not Path(f"/proc/{setup_pid}").exists())


def test_kill_9_of_the_daemon_during_setup_is_recovered(daemon: Daemon, tmp_path: Path) -> None:
    hold = make_fifo(tmp_path / "hold")
    started = tmp_path / "setup-started"
    setup = [
        sys.executable,
        "-c",
        f"open({str(started)!r}, 'w').close(); print('setup told', open({str(hold)!r}).read())",
    ]
    daemon.start()
    with daemon.http() as http:
        body = {"task": "after setup", "setup": setup}
        session_id = http.post("/sessions", json=body).json()["session_id"]
        assert http.post(f"/sessions/{session_id}/start").json()["status"] == "starting"
    eventually(started.exists)
    assert daemon.process is not None
    daemon.process.kill()  # kill -9 while the setup step runs
    daemon.process.wait(10)
    daemon.start()
    with daemon.http() as http:
        assert http.get(f"/sessions/{session_id}/status").json()["status"] == "starting"
        release(hold)
        reply = http.get(f"/sessions/{session_id}/wait", params={"timeout": 60}).json()
        assert reply["status"] == "completed"
        info = http.get(f"/sessions/{session_id}").json()
    assert (info["setup_done"], info["runs"]) == (True, 1)
    log = Path(info["log_file"]).read_text()
    assert "setup told go" in log
    assert "fake_agent: exiting with 0" in log


def test_a_setup_step_that_ended_while_no_hive_ran_decides_the_first_run(
    hives: Hives, tmp_path: Path
) -> None:
    root = tmp_path / "left"
    first = hives.open(root=root, shutdown="leave")
    hold = make_fifo(tmp_path / "hold")
    failing = [sys.executable, "-c", f"import sys; open({str(hold)!r}).read(); sys.exit(4)"]
    session_id = first.create_session("t", setup=failing)
    first.start_session(session_id)
    info = first.get_session_info(session_id)
    eventually(lambda: first.get_session_info(session_id).pid is not None)
    first.close()  # the setup step runs on, watched by nobody
    release(hold)
    status = Path(info.working_dir) / ".hive" / "setup.exit"
    eventually(status.exists)
    second = hives.open(root=root)
    assert second.wait(session_id, timeout=30) == "failed"
    info = second.get_session_info(session_id)
    assert (info.reason, info.exit_code, info.runs) == ("setup_failed", 4, 0)


def test_the_hive_default_setup_and_an_empty_one_of_a_session(hives: Hives) -> None:
    hive = hives.open(setup=[sys.executable, "-c", "open('made-by-setup', 'w')"])
    with_default = hive.create_session("t")
    without = hive.create_session("t", setup=[])
    for session_id in (with_default, without):
        hive.start_session(session_id)
        assert hive.wait(session_id, timeout=30) == "completed"
    made = [
        (Path(hive.get_session_info(s).working_dir) / "made-by-setup").exists()
        for s in (with_default, without)
    ]
    assert made == [True, False]
    assert "== setup:" not in Path(hive.log_file(without)).read_text()


# -- ports ----------------------------------------------------------------------------------


def test_ports_are_unique_across_200_sessions_and_a_restart(hives: Hives, tmp_path: Path) -> None:
    root = tmp_path / "ports"
    hive = hives.open(root=root, ports_per_session=2)
    ids = in_threads(lambda _i: [hive.create_session("t") for _ in range(25)], range(8))
    held = [port for batch in ids for s in batch for port in hive.get_session_info(s).ports]
    assert len(held) == 400
    assert len(set(held)) == 400
    hive.close()

    again = hives.open(root=root, ports_per_session=2)
    more = [again.create_session("t") for _ in range(20)]
    new = [port for s in more for port in again.get_session_info(s).ports]
    assert not set(new) & set(held)  # the restarted Hive knows what is held


def test_ports_run_out_clearly_skip_listeners_and_come_back_when_sessions_end(
    hives: Hives,
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        hive = hives.open(port_range=f"{port}-{port + 3}")
        first = hive.create_session("t", ports=2)
        assert hive.get_session_info(first).ports == (port + 1, port + 2)  # the listener's skipped
        with pytest.raises(PortsExhausted, match=r"no 2 consecutive free ports in port_range"):
            hive.create_session("t", ports=2)
        before = len(hive.list_sessions())
        hive.terminate_session(first)
        second = hive.create_session("t", ports=2)
        assert hive.get_session_info(second).ports == (port + 1, port + 2)
        assert len(hive.list_sessions()) == before + 1


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"port_range": "3000"}, "port_range must be"),
        ({"port_range": "20-10"}, "port_range must be"),
        ({"port_range": "1-70000"}, "port_range must be"),
        ({"branch_prefix": "bad prefix/"}, "branch_prefix"),
        ({"setup": "npm ci"}, "setup must be a list"),
    ],
)
def test_bad_workspace_settings_are_refused(
    tmp_path: Path, settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        Hive(tmp_path / "root", **settings)


# -- secrets --------------------------------------------------------------------------------

SECRET = "sk-live-9876543210-kept-apart"
CHECKS = [
    sys.executable,
    "-c",
    f"import os, sys; sys.exit(0 if os.environ['API_KEY'][::-1] == {SECRET[::-1]!r} else 7)",
]


def test_secrets_show_on_no_surface_of_the_daemon(daemon: Daemon) -> None:
    daemon.start()
    with daemon.http() as http:
        body = {"task": "t", "command": CHECKS, "env": {"API_KEY": SECRET}}
        created = http.post("/sessions", json=body)
        session_id = created.json()["session_id"]
        http.post(f"/sessions/{session_id}/start")
        assert http.get(f"/sessions/{session_id}/wait").json()["status"] == "completed"
        answers = [
            created.text,
            http.get(f"/sessions/{session_id}").text,
            http.get("/sessions").text,
            http.get("/events", params={"follow": "false"}).text,
            http.get("/metrics").text,
            http.get("/health").text,
        ]
    got = daemon.cli("get", session_id)
    listed = daemon.cli("list")
    events = daemon.cli("events", "--no-follow")
    answers += [got.stdout, listed.stdout, events.stdout]
    assert json.loads(got.stdout)["env"] == ["API_KEY"]
    assert not [answer for answer in answers if SECRET in answer]
    daemon.stop()
    holders = [
        path.relative_to(daemon.root)
        for path in daemon.root.rglob("*")
        if path.is_file() and SECRET.encode() in path.read_bytes()
    ]
    assert holders == [Path("secrets") / f"{session_id}.json"]


def test_env_values_of_an_older_row_are_moved_out_of_it(hives: Hives, tmp_path: Path) -> None:
    root = tmp_path / "old"
    hive = hives.open(root=root, command=CHECKS)
    session_id = hive.create_session("t", env={"API_KEY": SECRET})
    info = hive.get_session_info(session_id)
    hive.close()
    # What an older hive_actors wrote: the values in the row and in session.json.
    (root / "secrets" / f"{session_id}.json").unlink()
    old = json.loads(info.model_dump_json()) | {"env": {"API_KEY": SECRET}}
    Path(info.working_dir, "session.json").write_text(json.dumps(old))
    with contextlib.closing(sqlite3.connect(root / "registry.db")) as db, db:
        db.execute(
            "UPDATE sessions SET info = ? WHERE session_id = ?", (json.dumps(old), session_id)
        )

    again = hives.open(root=root, command=CHECKS)
    again.start_session(session_id)
    assert again.wait(session_id, timeout=30) == "completed"  # the agent got the value
    assert SECRET.encode() not in Path(info.working_dir, "session.json").read_bytes()
    assert SECRET.encode() not in (root / "registry.db").read_bytes()


# -- hivectl and HTTP -----------------------------------------------------------------------


def test_hivectl_and_http_make_show_and_remove_sessions_from_a_repository(
    daemon: Daemon, repo: Path
) -> None:
    daemon.env["HIVE_COMMAND"] = json.dumps(
        [sys.executable, "-c", "open('f0.txt', 'a').write('more\\n')"]
    )
    daemon.start()
    created = subprocess.run(
        [
            *daemon_cli(daemon),
            "create",
            "edit",
            "--repo",
            "repo",
            "--ref",
            "v1",
            "--ports",
            "2",
            "--setup",
            '["true"]',
        ],
        cwd=repo.parent,  # a relative --repo is the caller's
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    session_id = created.stdout.strip()
    info = json.loads(daemon.cli("get", session_id).stdout)
    assert info["repo"] == str(repo)
    assert info["setup"] == ["true"]
    assert len(info["ports"]) == 2
    assert daemon.cli("start", session_id).returncode == 0
    assert daemon.cli("wait", session_id, "--timeout", "60").returncode == 0

    diff = daemon.cli("diff", session_id)
    assert diff.returncode == 0
    assert diff.stdout.startswith("diff --git a/f0.txt b/f0.txt\n")
    assert diff.stdout.endswith("+more\n")
    whole = json.loads(daemon.cli("diff", session_id, "--json").stdout)
    assert whole["files"] == [{"path": "f0.txt", "insertions": 1, "deletions": 0, "binary": False}]
    with daemon.http() as http:
        assert http.get(f"/sessions/{session_id}/changes").json() == whole

    assert daemon.cli("remove", session_id, "--delete-branch").returncode == 0
    assert worktrees(repo) == []
    assert branches(repo) == {"main"}


def daemon_cli(daemon: Daemon) -> list[str]:
    hivectl = shutil.which("hivectl", path=daemon.env["PATH"])
    assert hivectl is not None
    return [hivectl, "--root", str(daemon.root)]


def test_bad_repositories_and_ports_through_hivectl_and_http(
    daemon: Daemon, repo: Path, tmp_path: Path
) -> None:
    daemon.env["HIVE_PORT_RANGE"] = "29990-29991"
    daemon.start()
    cases = [
        (("create", "t", "--repo", str(tmp_path)), 4, "is not a git repository"),
        (("create", "t", "--repo", str(repo), "--ref", "nope"), 4, "not a branch, tag or"),
        (("create", "t", "--setup", "npm ci"), 4, "--setup must be a JSON list"),
        (("create", "t", "--ports", "3"), 6, "no 3 consecutive free ports"),
        (("diff", "00000000-0000-4000-8000-000000000000"), 3, "no session"),
    ]
    for args, code, message in cases:
        done = daemon.cli(*args)
        assert (done.returncode, done.stdout) == (code, ""), (args, done.stderr)
        assert message in done.stderr
        assert "Traceback" not in done.stderr
    with daemon.http() as http:
        relative = http.post("/sessions", json={"task": "t", "repo": "repo"})
        assert relative.status_code == 422
        assert "absolute path" in relative.json()["message"]
        refused = http.post("/sessions", json={"task": "t", "repo": str(tmp_path)})
        assert (refused.status_code, refused.json()["error"]) == (422, "invalid_input")
        full = http.post("/sessions", json={"task": "t", "ports": 3})
        assert (full.status_code, full.json()["error"]) == (409, "ports_exhausted")
        plain = http.post("/sessions", json={"task": "t"}).json()["session_id"]
        no_repo = http.get(f"/sessions/{plain}/changes")
        assert no_repo.status_code == 422
        assert http.get("/sessions").json()["sessions"][0]["session_id"] == plain
    assert worktrees(repo) == []


def test_two_threads_never_get_one_port(hives: Hives) -> None:
    hive = hives.open(port_range="25000-25099")
    barrier = threading.Barrier(4)

    def create(_index: int) -> list[int]:
        barrier.wait(10)
        return [
            p
            for _ in range(25)
            for p in hive.get_session_info(hive.create_session("t", ports=1)).ports
        ]

    taken = [port for batch in in_threads(create, range(4)) for port in batch]
    assert sorted(taken) == list(range(25000, 25100))
    with pytest.raises(PortsExhausted):
        hive.create_session("t", ports=1)


def test_the_shim_reaps_setups_signal_like_an_agents(hives: Hives, ready: Any) -> None:
    hive = hives.open()
    signal_ = ready()
    session_id = hive.create_session(
        "t", setup=fake_agent_command("--sleep", "inf", "--ready", str(signal_.path))
    )
    hive.start_session(session_id)
    os.kill(signal_.wait()["pid"], signal.SIGKILL)  # the setup dies of a signal
    assert hive.wait(session_id, timeout=30) == "failed"
    info = hive.get_session_info(session_id)
    assert (info.reason, info.exit_code, info.detail) == (
        "setup_failed",
        137,
        "the setup step was killed by SIGKILL",
    )


def test_a_lock_another_git_holds_is_waited_out_briefly(
    hives: Hives, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hive = hives.open()
    lock = repo / ".git" / "config.lock"  # another git is writing the repository's config
    lock.write_text("")
    waits: list[float] = []

    def other_git_lets_go(seconds: float) -> None:  # as the retry waits, the other git ends
        waits.append(seconds)
        lock.unlink(missing_ok=True)

    monkeypatch.setattr(
        _git, "time", SimpleNamespace(monotonic=time.monotonic, sleep=other_git_lets_go)
    )
    session_id = hive.create_session("t", repo=str(repo))
    assert worktrees(repo) == [hive.get_session_info(session_id).working_dir]
    assert waits  # it did wait for the lock
    monkeypatch.setattr(_git, "time", time)

    other = make_repo(repo.parent / "other")
    (other / ".git" / "config.lock").write_text("")  # held for good: given up on, clearly
    monkeypatch.setattr(_git, "LOCK_WAIT", 0.2)
    with pytest.raises(InvalidInput, match="could not lock config file"):
        hive.create_session("t", repo=str(other))
    assert (worktrees(other), branches(other)) == ([], {"main"})


def test_ports_handed_to_creates_under_way_are_not_handed_again() -> None:
    held: list[int] = []
    pool = PortPool(30001, 30003, held=lambda: held, listening=set)
    taken = [pool.take(1) for _ in range(3)]
    assert taken == [(30001,), (30002,), (30003,)]
    with pytest.raises(PortsExhausted):  # all three reserved by creates not recorded yet
        pool.take(1)
    held += [30002, 30003]  # two creates were recorded; one failed
    pool.settle([*taken[0], *taken[1], *taken[2]])
    assert pool.take(1) == (30001,)


def test_settings_from_the_environment(tmp_path: Path) -> None:
    config = HiveConfig.load(
        {
            "HIVE_SETUP": '["npm", "ci"]',
            "HIVE_PORTS_PER_SESSION": "2",
            "HIVE_PORT_RANGE": "40000-40100",
            "HIVE_BRANCH_PREFIX": "agents/",
            "HIVE_SETUP_TIMEOUT": "90",
            "HIVE_MAX_DIFF_BYTES": "4096",
        },
        root=tmp_path,
    )
    assert config.setup == ("npm", "ci")
    assert (config.ports_per_session, config.ports) == (2, (40000, 40100))
    assert (config.branch_prefix, config.setup_timeout, config.max_diff_bytes) == (
        "agents/",
        90,
        4096,
    )
    with pytest.raises(InvalidInput, match=r"HIVE_SETUP must be a JSON list of strings"):
        HiveConfig.load({"HIVE_SETUP": "npm ci"}, root=tmp_path)


def test_a_repository_this_process_cannot_read_is_refused(
    hives: Hives, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hive = hives.open()  # the tests run as root, who may read anything: say it may not
    real_access = os.access
    monkeypatch.setattr(
        _git.os, "access", lambda path, mode: Path(path) != repo and real_access(path, mode)
    )
    with pytest.raises(InvalidInput, match="cannot be read by this process"):
        hive.create_session("t", repo=str(repo))
    assert (worktrees(repo), hive.list_sessions()) == ([], [])


def test_worktrees_are_made_under_a_lock_other_processes_see(
    hives: Hives, repo: Path, tmp_path: Path
) -> None:
    """Two processes' gits must never work on one repository's worktrees at once (one
    would read the other's half-made record): git's own hook, run in the middle of the
    worktree's making, tries the lock from a process of its own."""
    seen = tmp_path / "seen"
    hook = repo / ".git" / "hooks" / "post-checkout"
    hook.write_text(
        f"#!{sys.executable}\n"
        "import fcntl, os\n"
        f"lock = open(os.path.join({str(repo / '.git')!r}, 'hive-actors.lock'))\n"
        "try:\n"
        "    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "    state = 'free'\n"
        "except BlockingIOError:\n"
        "    state = 'held'\n"
        f"open({str(seen)!r}, 'a').write(state + '\\n')\n"
    )
    hook.chmod(0o755)
    hive = hives.open()
    hive.create_session("t", repo=str(repo))
    assert seen.read_text() == "held\n"
