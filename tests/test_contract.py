"""The public API's contract, run on both engines: a local Hive and a ClusterHive on a
simulated Ray cluster (one per module; its sessions outlive each test, so a test looks
only at the sessions it made)."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

from hive_actors import (
    HiveClosed,
    InvalidInput,
    InvalidLimits,
    InvalidMetadata,
    InvalidPriority,
    InvalidRepository,
    InvalidSessionId,
    InvalidTask,
    InvalidTransition,
    SessionNotFound,
    Usage,
)
from hive_actors.testing import fake_agent_command

from .conftest import (
    GIT_IDENTITY,
    Engines,
    Recorder,
    branches,
    eventually,
    git,
    in_threads,
    worktrees,
)

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
UNKNOWN = "00000000-0000-4000-8000-000000000000"
FOREVER = ["--sleep", "inf"]


def run(hive: Any, *args: str, task: str = "a task", **options: Any) -> str:
    """Create and start a session with these agent options; return its id."""
    session_id = hive.create_session(task, **options)
    hive.start_session(session_id, list(args))
    return session_id


def types_of(hive: Any, session_id: str) -> list[str]:
    return [event.type for event in hive.events(session_id)]


def statuses(hive: Any, session_id: str) -> list[str]:
    return [str(e.to) for e in hive.events(session_id) if e.type == "session.status"]


# -- create --------------------------------------------------------------------------------


def test_create_gives_a_uuid_and_a_workspace_of_its_own(engine: Any) -> None:
    first = engine.create_session("Build a Rust CLI tool", "high", {"team": "cli"})
    second = engine.create_session("Build a Rust CLI tool")
    assert UUID.match(first)
    assert first != second
    info = engine.get_session_info(first)
    assert info.status == "created"
    assert info.priority == "high"
    assert info.metadata == {"team": "cli"}
    assert info.working_dir.endswith(first)
    assert info.database == str(Path(info.working_dir) / ".swarm" / "memory.db")
    assert info.working_dir != engine.get_session_info(second).working_dir


def test_session_info_says_which_host_it_lives_on(engine: Any, engines: Engines) -> None:
    session_id = engine.create_session("where am I")
    host = engine.get_session_info(session_id).host
    assert host is None if engines.kind == "local" else host in ("a", "b")


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda h: h.create_session(""), InvalidTask),
        (lambda h: h.create_session(42), InvalidTask),
        (lambda h: h.create_session("t", "urgent"), InvalidPriority),
        (lambda h: h.create_session("t", metadata={"a": object()}), InvalidMetadata),
        (lambda h: h.create_session("t", metadata=_nested(40)), InvalidMetadata),
        (lambda h: h.create_session("t", metadata=_nested(100_000)), InvalidMetadata),
        (lambda h: h.create_session("t", command=[]), InvalidInput),
        (lambda h: h.create_session("t", env={"A=B": "x"}), InvalidInput),
        (lambda h: h.create_session("t", restart="sometimes"), InvalidInput),
        (lambda h: h.create_session("t", restart_limit=-1), InvalidInput),
        (lambda h: h.create_session("t", persistent="yes"), InvalidInput),
    ],
)
def test_bad_input_is_refused_and_creates_nothing(engine: Any, call: Any, error: type) -> None:
    before = {info.session_id for info in engine.list_sessions()}
    with pytest.raises(error):
        call(engine)
    assert {info.session_id for info in engine.list_sessions()} == before


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"x": value}
    return value


def test_bad_session_ids_are_refused_and_unknown_ones_not_found(engine: Any) -> None:
    with pytest.raises(InvalidSessionId):
        engine.status("../etc")
    with pytest.raises(InvalidSessionId):
        engine.get_session_info("not-a-uuid")
    assert engine.status(UNKNOWN) == "not_found"
    for call in (engine.get_session_info, engine.start_session, engine.terminate_session):
        with pytest.raises(SessionNotFound):
            call(UNKNOWN)
    with pytest.raises(SessionNotFound):
        engine.wait(UNKNOWN, timeout=1)


# -- lifecycle -----------------------------------------------------------------------------


def test_a_session_runs_to_completion(engine: Any) -> None:
    session_id = engine.create_session("finish it")
    assert engine.start_session(session_id, ["--sleep", "0.05"]) == "running"
    assert engine.wait(session_id, timeout=30) == "completed"
    info = engine.get_session_info(session_id)
    assert info.exit_code == 0
    assert info.reason == "exited"
    assert info.runs == 1
    assert statuses(engine, session_id) == ["created", "starting", "running", "completed"]


def test_a_failing_agent_fails_the_session_with_its_exit_code(engine: Any) -> None:
    session_id = run(engine, "--exit", "3")
    assert engine.wait(session_id, timeout=30) == "failed"
    info = engine.get_session_info(session_id)
    assert (info.exit_code, info.reason) == (3, "exit_code")


def test_a_program_that_cannot_start_is_a_spawn_error(engine: Any) -> None:
    session_id = engine.create_session("t", command=["/nonexistent/agent", "{task}"])
    assert engine.start_session(session_id) == "failed"
    assert engine.get_session_info(session_id).reason == "spawn_error"


def test_terminate_stops_a_running_agent(engine: Any) -> None:
    session_id = run(engine, *FOREVER)
    assert engine.terminate_session(session_id, grace=5) in ("stopping", "terminated")
    assert engine.wait(session_id, timeout=30) == "terminated"
    assert engine.get_session_info(session_id).reason == "requested"
    assert engine.get_session_info(session_id).pid is None


def test_terminate_of_a_created_or_ended_session(engine: Any) -> None:
    created = engine.create_session("never started")
    assert engine.terminate_session(created) == "terminated"
    assert engine.terminate_session(created) == "terminated"  # ended: left as it is
    with pytest.raises(InvalidInput):
        engine.terminate_session(created, grace=-1)


def test_start_is_refused_unless_created_or_idle(engine: Any) -> None:
    session_id = run(engine, *FOREVER)
    with pytest.raises(InvalidTransition, match="already running"):
        engine.start_session(session_id)
    engine.terminate_session(session_id, grace=0)
    engine.wait(session_id, timeout=30)
    with pytest.raises(InvalidTransition) as refused:
        engine.start_session(session_id)
    assert refused.value.session_id == session_id
    assert refused.value.current == "terminated"


def test_start_arguments_and_a_task_of_the_run_reach_the_agent(engine: Any) -> None:
    session_id = engine.create_session("the session's task", args=["--sleep", "30"])
    engine.start_session(session_id, ["--exit", "4"], task="this run's task")
    assert engine.wait(session_id, timeout=30) == "failed"  # the start's args replaced --sleep
    info = engine.get_session_info(session_id)
    assert info.exit_code == 4
    assert info.current_task == "this run's task"
    assert "this run's task" in Path(engine.log_file(session_id)).read_text()


def test_restart_on_failure_restarts_the_agent(engine: Any) -> None:
    session_id = engine.create_session(
        "flaky", restart="on-failure", restart_limit=2, restart_backoff=0
    )
    engine.start_session(session_id, ["--exit", "1"])
    assert engine.wait(session_id, timeout=30) == "failed"
    info = engine.get_session_info(session_id)
    assert info.runs == 3
    assert info.restarts == 2


def test_wait_times_out_on_a_session_still_running(engine: Any) -> None:
    session_id = run(engine, *FOREVER)
    with pytest.raises(TimeoutError, match="still running"):
        engine.wait(session_id, timeout=0.2)
    with pytest.raises(InvalidInput):
        engine.wait(session_id, timeout=-1)


def test_output_dir_and_log_file(engine: Any) -> None:
    session_id = run(engine, "--sleep", "0")
    engine.wait(session_id, timeout=30)
    assert engine.output_dir(session_id).endswith("output")
    assert Path(engine.output_dir(session_id)).is_dir()
    assert Path(engine.log_file(session_id)).read_text()


# -- listing -------------------------------------------------------------------------------


def test_list_sessions_oldest_first_and_by_status(engine: Any) -> None:
    made = [engine.create_session(f"task {n}") for n in range(4)]
    engine.terminate_session(made[1])
    listed = [info.session_id for info in engine.list_sessions() if info.session_id in made]
    assert listed == made
    created = {info.session_id for info in engine.list_sessions("created")}
    assert set(made) - created == {made[1]}
    assert made[1] in {info.session_id for info in engine.list_sessions("terminated")}
    with pytest.raises(InvalidInput, match="is not one of"):
        engine.list_sessions("sleeping")


def test_stats_count_sessions_and_runs(engine: Any) -> None:
    session_id = run(engine, "--sleep", "0")
    engine.wait(session_id, timeout=30)
    stats = engine.stats()
    assert stats.sessions >= 1
    assert stats.runs >= 1
    assert stats.by_status.get("completed", 0) >= 1
    assert stats.last_seq >= 1


# -- events --------------------------------------------------------------------------------


def test_a_sessions_events_come_in_transition_order(engine: Any, engines: Engines) -> None:
    session_id = run(engine, "--sleep", "0")
    engine.wait(session_id, timeout=30)
    recorder = Recorder()
    engine.subscribe_to_session(session_id, recorder, since=0)
    recorder.wait_for(
        lambda events: any(e.type == "session.status" and e.to == "completed" for e in events)
    )
    events = [e for e in recorder.events if e.session_id == session_id]
    assert [e.type for e in events[:2]] == ["session.created", "session.status"]
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    hosts = {e.host for e in events}
    assert hosts == (
        {None} if engines.kind == "local" else {engine.get_session_info(session_id).host}
    )


def test_live_subscribers_see_every_transition(engine: Any) -> None:
    recorder, everything = Recorder(), Recorder()
    session_id = engine.create_session("watched")
    engine.subscribe_to_session(session_id, recorder)
    engine.subscribe_to_all_sessions(everything)
    engine.start_session(session_id, ["--sleep", "0"])
    recorder.wait_for(lambda _: recorder.statuses(session_id)[-1:] == ["completed"])
    assert recorder.statuses(session_id) == ["starting", "running", "completed"]
    everything.wait_for(lambda _: everything.statuses(session_id)[-1:] == ["completed"])
    assert {e.session_id for e in recorder.events} == {session_id}


def test_replay_since_a_seq_has_no_gap_and_no_duplicate(engine: Any) -> None:
    first = run(engine, "--sleep", "0")
    engine.wait(first, timeout=30)
    mark = engine.last_seq
    second = run(engine, "--sleep", "0")
    engine.wait(second, timeout=30)
    recorder = Recorder()
    engine.subscribe_to_all_sessions(recorder, since=mark)
    third = run(engine, "--sleep", "0")
    recorder.wait_for(lambda _: recorder.statuses(third)[-1:] == ["completed"])
    seqs = [e.seq for e in recorder.events]
    assert seqs == sorted(set(seqs))
    assert seqs[0] > mark
    assert not any(e.session_id == first for e in recorder.events)
    assert recorder.statuses(second) == ["created", "starting", "running", "completed"]
    journal = [e.seq for e in engine.events(since=mark)]
    assert journal[: len(seqs)] == seqs[: len(journal)]


def test_events_follow_with_a_timeout_and_replay_by_session(engine: Any) -> None:
    session_id = run(engine, "--sleep", "0")
    engine.wait(session_id, timeout=30)
    assert types_of(engine, session_id)[0] == "session.created"
    with engine.events(session_id, since=0, follow=True, timeout=0.3) as stream:
        seen = [event.type for event in stream]
    assert seen == types_of(engine, session_id)
    with pytest.raises(InvalidInput, match="since"):
        engine.events(since=-1)


def test_async_events(engine: Any) -> None:
    session_id = run(engine, "--sleep", "0")
    engine.wait(session_id, timeout=30)

    async def collect() -> list[str]:
        return [event.type async for event in engine.aevents(session_id)]

    assert asyncio.run(collect()) == types_of(engine, session_id)


def test_unsubscribe_stops_delivery(engine: Any) -> None:
    recorder = Recorder()
    session_id = engine.create_session("t")
    subscription = engine.subscribe_to_session(session_id, recorder)
    engine.unsubscribe(subscription)
    assert not subscription.active
    engine.terminate_session(session_id)
    later = Recorder()
    engine.subscribe_to_session(session_id, later, since=0)
    later.wait_for(lambda _: "terminated" in later.statuses(session_id))
    assert recorder.events == []
    with pytest.raises(InvalidInput, match="callable"):
        engine.subscribe_to_all_sessions("not a function")


# -- context -------------------------------------------------------------------------------


def test_context_calls_while_running_and_after(engine: Any) -> None:
    session_id = run(engine, *FOREVER)
    assert engine.send_message(session_id, "user", "hello") > 0
    context = engine.context(session_id)
    context.add_message("assistant", "hi")
    assert [m["content"] for m in context.history()] == ["hello", "hi"]
    assert context.add_file("src/main.rs") == ["src/main.rs"]
    context.update_file_index("src/main.rs", {"lines": 10})
    assert context.file_index() == {"src/main.rs": {"lines": 10}}
    assert context.build_context()["active_files"] == ["src/main.rs"]
    engine.terminate_session(session_id, grace=0)
    engine.wait(session_id, timeout=30)
    assert [m["content"] for m in engine.context(session_id).history(1)] == ["hi"]
    assert engine.context(session_id).clear_history() == 2
    with pytest.raises(SessionNotFound):
        engine.context(UNKNOWN)


def test_context_messages_are_journaled(engine: Any) -> None:
    session_id = engine.create_session("t")
    engine.send_message(session_id, "user", "remember this")
    recorder = Recorder()
    engine.subscribe_to_session(session_id, recorder, since=0)
    recorder.wait_for(lambda events: any(e.type == "context.message" for e in events))
    message = next(e for e in recorder.events if e.type == "context.message")
    assert (message.role, message.content) == ("user", "remember this")


# -- removing ------------------------------------------------------------------------------


def test_cleanup_and_remove_take_ended_sessions_only(engine: Any) -> None:
    ended = engine.create_session("ended")
    engine.terminate_session(ended)
    live = run(engine, *FOREVER)
    removed = engine.cleanup(max_age_hours=0)
    assert ended in removed
    assert live not in removed
    assert engine.status(ended) == "not_found"
    with pytest.raises(InvalidTransition):
        engine.remove_session(live)
    engine.terminate_session(live, grace=0)
    engine.wait(live, timeout=30)
    working_dir = Path(engine.get_session_info(live).working_dir)
    engine.remove_session(live)
    assert engine.status(live) == "not_found"
    assert not working_dir.exists()
    with pytest.raises(InvalidInput):
        engine.cleanup(max_age_hours=-1)


def test_removal_is_announced(engine: Any) -> None:
    session_id = engine.create_session("t")
    engine.terminate_session(session_id)
    recorder = Recorder()
    engine.subscribe_to_session(session_id, recorder)
    engine.remove_session(session_id)
    recorder.wait_for(lambda events: any(e.type == "session.removed" for e in events))


# -- closing -------------------------------------------------------------------------------


def test_a_closed_engine_refuses_calls(engines: Engines) -> None:
    hive = engines.open()
    session_id = hive.create_session("t")
    hive.close()
    hive.close()  # idempotent
    assert hive.closed
    for call in (
        lambda: hive.create_session("t"),
        lambda: hive.get_session_info(session_id),
        hive.events,
        hive.cleanup,
    ):
        with pytest.raises(HiveClosed):
            call()


def test_the_context_manager_form(engines: Engines) -> None:
    with engines.open() as hive:
        session_id = hive.create_session("t")
        assert hive.status(session_id) == "created"
    assert hive.closed


def test_commands_are_never_run_through_a_shell(engine: Any, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    task = f"x; touch {marker}; $(touch {marker}) `touch {marker}`"
    session_id = engine.create_session(task, command=[sys.executable, "-c", "pass", "{task}"])
    engine.start_session(session_id)
    assert engine.wait(session_id, timeout=30) == "completed"
    assert not marker.exists()
    assert engine.get_session_info(session_id).task == task


def test_per_session_command_and_env(engine: Any) -> None:
    session_id = engine.create_session(
        "t", command=fake_agent_command("--exit", "5"), env={"EXTRA": "1"}
    )
    engine.start_session(session_id)
    assert engine.wait(session_id, timeout=30) == "failed"
    info = engine.get_session_info(session_id)
    assert info.exit_code == 5
    assert info.env == ("EXTRA",)  # the names only: values can be credentials


# -- workspaces: a worktree per session, a setup step, ports, secrets -----------------------

AGENT_WORK = """
import pathlib, subprocess
f0 = pathlib.Path("f0.txt")
f0.write_text(f0.read_text().replace("line 2", "line two"))
pathlib.Path("new.txt").write_text("new 1\\nnew 2\\n")
subprocess.run(["git", "add", "f0.txt", "new.txt"], check=True)
subprocess.run(["git", "commit", "--quiet", "-m", "agent work"], check=True)
with open("f1.txt", "a") as f1:
    f1.write("line 4\\n")
pathlib.Path("u.txt").write_text("untracked\\n")
"""


def test_a_session_from_a_repository_works_in_a_worktree_on_its_own_branch(
    engine: Any, repo: Path
) -> None:
    head = git(repo, "rev-parse", "HEAD").strip()
    session_id = engine.create_session(
        "change things",
        repo=str(repo),
        command=[sys.executable, "-c", AGENT_WORK],
        env=GIT_IDENTITY,
    )
    info = engine.get_session_info(session_id)
    assert info.repo == str(repo)
    assert info.base == head
    assert info.branch == f"hive/{session_id[:8]}"
    assert worktrees(repo) == [info.working_dir]
    assert git(info.working_dir, "rev-parse", "--abbrev-ref", "HEAD").strip() == info.branch
    assert Path(info.database).is_file()  # .swarm/memory.db, as in any session
    # hive_actors' own files are nowhere in git's sight, and none landed in the repository
    assert git(info.working_dir, "status", "--porcelain", "--ignored=no") == ""
    assert git(repo, "status", "--porcelain", "--ignored") == ""

    engine.start_session(session_id)
    assert engine.wait(session_id, timeout=30) == "completed"
    changes = engine.changes(session_id)
    assert (changes.branch, changes.base) == (info.branch, head)
    assert [commit.subject for commit in changes.commits] == ["agent work"]
    assert changes.commits[0].sha == git(info.working_dir, "rev-parse", "HEAD").strip()
    counts = {f.path: (f.insertions, f.deletions) for f in changes.files}
    assert counts == {"f0.txt": (1, 1), "f1.txt": (1, 0), "new.txt": (2, 0), "u.txt": (1, 0)}
    assert "-line 2\n+line two\n" in changes.diff
    assert "+untracked\n" in changes.diff
    assert not changes.truncated
    # reading the changes left the worktree as it was: nothing staged
    assert git(info.working_dir, "diff", "--cached", "--name-only") == ""

    engine.remove_session(session_id)
    assert worktrees(repo) == []
    assert not Path(info.working_dir).exists()
    assert info.branch in branches(repo)  # the work is kept
    assert git(repo, "log", "-1", "--format=%s", info.branch).strip() == "agent work"


def test_a_session_starts_at_the_ref_it_names_and_can_drop_its_branch(
    engine: Any, repo: Path
) -> None:
    tagged = git(repo, "rev-parse", "v1").strip()
    (repo / "later.txt").write_text("later\n")
    git(repo, "add", "later.txt")
    git(repo, "commit", "--quiet", "-m", "later")
    session_id = engine.create_session("t", repo=str(repo), ref="v1")
    info = engine.get_session_info(session_id)
    assert info.base == tagged  # the full sha, whatever the ref named
    assert not (Path(info.working_dir) / "later.txt").exists()
    assert engine.changes(session_id).files == ()
    engine.terminate_session(session_id)
    engine.remove_session(session_id, delete_branch=True)
    assert info.branch not in branches(repo)
    assert worktrees(repo) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"repo": "{tmp}/nowhere"}, "does not exist"),
        ({"repo": "{tmp}"}, "not a git repository"),
        ({"repo": "{repo}", "ref": "no-such-branch"}, "not a branch, tag or commit"),
        ({"repo": "{repo}", "ref": "HEAD^{{tree}}"}, "names a tree, not a commit"),
        ({"repo": "{repo}", "ref": "--orphan"}, "must name a branch"),
        ({"ref": "main"}, "give repo too"),
    ],
)
def test_a_repository_that_cannot_be_used_is_refused_and_nothing_is_made(
    engine: Any, repo: Path, tmp_path: Path, options: dict[str, str], message: str
) -> None:
    options = {k: v.format(tmp=tmp_path, repo=repo) for k, v in options.items()}
    before = {info.session_id for info in engine.list_sessions()}
    with pytest.raises(InvalidRepository, match=re.escape(message)):
        engine.create_session("t", **options)
    assert {info.session_id for info in engine.list_sessions()} == before
    assert worktrees(repo) == []
    assert branches(repo) == {"main"}


def test_a_branch_that_cannot_be_made_leaves_nothing(engine: Any, repo: Path) -> None:
    git(repo, "branch", "hive")  # refs/heads/hive is in the way of every hive/<id>
    before = {info.session_id for info in engine.list_sessions()}
    with pytest.raises(InvalidRepository, match="cannot make branch"):
        engine.create_session("t", repo=str(repo))
    assert {info.session_id for info in engine.list_sessions()} == before
    assert worktrees(repo) == []
    assert branches(repo) == {"main", "hive"}
    assert git(repo, "worktree", "list").count("\n") == 1


SETUP_WRITES = [sys.executable, "-c", "print('installing'); open('ready', 'w').write('yes')"]
AGENT_NEEDS_SETUP = [
    sys.executable,
    "-c",
    "print('agent sees', open('ready').read())",  # fails unless the setup step made it
]


def test_the_setup_step_runs_before_the_agents_first_run(engine: Any) -> None:
    session_id = engine.create_session("t", command=AGENT_NEEDS_SETUP, setup=SETUP_WRITES)
    assert engine.get_session_info(session_id).setup == tuple(SETUP_WRITES)
    assert engine.start_session(session_id) in ("starting", "running", "completed")
    assert engine.wait(session_id, timeout=30) == "completed"
    info = engine.get_session_info(session_id)
    assert info.setup_done
    assert info.runs == 1
    log = Path(info.log_file).read_text()
    header = f"== setup: {shlex.join(SETUP_WRITES)}\n"
    assert log.index(header) < log.index("installing\n") < log.index("agent sees yes")
    seen = statuses(engine, session_id)
    assert seen == ["created", "starting", "running", "completed"]


def test_a_failing_setup_fails_the_session_and_the_agent_never_runs(engine: Any) -> None:
    session_id = engine.create_session(
        "t",
        command=[sys.executable, "-c", "open('agent-ran', 'w')"],
        setup=[sys.executable, "-c", "import sys; print('npm ERR'); sys.exit(3)"],
    )
    engine.start_session(session_id)
    assert engine.wait(session_id, timeout=30) == "failed"
    info = engine.get_session_info(session_id)
    assert (info.reason, info.exit_code) == ("setup_failed", 3)
    assert info.detail == "the setup step exited with code 3"
    assert info.runs == 0
    assert not (Path(info.working_dir) / "agent-ran").exists()
    assert "npm ERR" in Path(info.log_file).read_text()


def test_a_setup_program_that_cannot_start_is_a_setup_failure(engine: Any) -> None:
    session_id = engine.create_session("t", setup=["/nonexistent/setup-tool"])
    engine.start_session(session_id)
    assert engine.wait(session_id, timeout=30) == "failed"
    info = engine.get_session_info(session_id)
    assert info.reason == "setup_failed"
    assert "cannot start the setup step '/nonexistent/setup-tool'" in (info.detail or "")


PORTS_TO_OUTPUT = [
    sys.executable,
    "-c",
    "import os; open(os.path.join(os.environ['HIVE_OUTPUT_DIR'], 'ports'), 'w')"
    ".write(os.environ['HIVE_PORT'] + ' ' + os.environ['HIVE_PORTS'])",
]


def test_a_session_gets_ports_of_its_own(engine: Any) -> None:
    first = engine.create_session("t", ports=3, command=PORTS_TO_OUTPUT)
    second = engine.create_session("t", ports=2)
    plain = engine.create_session("t")
    ports = engine.get_session_info(first).ports
    assert len(ports) == 3
    assert list(ports) == list(range(ports[0], ports[0] + 3))  # one block
    assert all(20000 <= port <= 29999 for port in ports)
    assert engine.get_session_info(plain).ports == ()
    if engine.get_session_info(first).host == engine.get_session_info(second).host:
        assert not set(ports) & set(engine.get_session_info(second).ports)
    engine.start_session(first)
    assert engine.wait(first, timeout=30) == "completed"
    output = Path(engine.output_dir(first)) / "ports"
    assert output.read_text() == f"{ports[0]} {','.join(map(str, ports))}"


SECRET = "sk-test-0123456789-never-shown"
CHECKS_SECRET = [
    sys.executable,
    "-c",
    # compared reversed: the command line is shown, and must not hold the secret either
    f"import os, sys; sys.exit(0 if os.environ.get('API_KEY')[::-1] == {SECRET[::-1]!r} else 7)",
]


def test_env_values_reach_the_agent_and_never_show(engine: Any, engines: Engines) -> None:
    session_id = engine.create_session(
        "t",
        command=CHECKS_SECRET,
        env={"API_KEY": SECRET},
        restart="always",
        restart_limit=1,
        restart_backoff=0,
    )
    engine.start_session(session_id)
    assert engine.wait(session_id, timeout=30) == "completed"
    info = engine.get_session_info(session_id)
    assert info.runs == 2  # the restart used it too
    assert info.env == ("API_KEY",)
    shown = [
        info.model_dump_json(),
        *(i.model_dump_json() for i in engine.list_sessions()),
        *(json.dumps(e.to_json_dict()) for e in engine.events(session_id)),
        engine.metrics().decode(),
    ]
    assert not [text for text in shown if SECRET in text]
    root = Path(info.working_dir).parents[1]
    holders = [p for p in root.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert [p.relative_to(root).parts[0] for p in holders] == ["secrets"]
    assert holders[0].stat().st_mode & 0o777 == 0o600
    assert holders[0].parent.stat().st_mode & 0o777 == 0o700
    engine.remove_session(session_id)
    assert not holders[0].exists()


# -- watchdogs: a stalled agent, a resumed run ---------------------------------------------


def test_a_silent_agent_is_stalled_and_terminated(engine: Any) -> None:
    session_id = run(engine, *FOREVER, stall_timeout=0.5, stall_action="terminate")
    assert engine.wait(session_id, timeout=30) == "terminated"
    info = engine.get_session_info(session_id)
    assert info.reason == "stalled"
    stalled = [e for e in engine.events(session_id) if e.type == "session.stalled"]
    assert len(stalled) == 1
    assert stalled[0].silent_seconds >= 0.5
    assert stalled[0].action == "terminate"


RECORDS_ARGV = (
    "import os, sys; open(os.path.join(os.environ['HIVE_OUTPUT_DIR'], 'argv'), 'a')"
    ".write(' '.join(sys.argv[1:]) + '\\n')"
)


def test_runs_after_the_first_use_the_resume_command(engine: Any) -> None:
    session_id = engine.create_session(
        "the task",
        command=[sys.executable, "-c", RECORDS_ARGV, "first", "{task}"],
        resume_command=[sys.executable, "-c", RECORDS_ARGV, "resume", "{session_id}", "{run}"],
        restart="always",
        restart_limit=2,
        restart_backoff=0,
    )
    engine.start_session(session_id)
    assert engine.wait(session_id, timeout=30) == "completed"
    lines = (Path(engine.output_dir(session_id)) / "argv").read_text().splitlines()
    assert lines == ["first the task", f"resume {session_id} 2", f"resume {session_id} 3"]


# -- limits, containment and usage (a cgroup per run) --------------------------------------

HOARDS = "hoard = []\nwhile True:\n    hoard.append(b'x' * (4 << 20))\n"


def test_limits_hold_and_usage_is_read_from_the_runs_cgroup(engine: Any) -> None:
    assert engine.stats().cgroup_mode in ("v2", "hybrid"), "this machine's cgroups are unusable"
    limits = {"memory": "256M", "pids": 64, "cpus": 1}
    session_id = run(engine, *FOREVER, limits=limits)
    info = engine.get_session_info(session_id)
    assert info.limits.model_dump() == {"memory": 256 * 1024**2, "pids": 64, "cpus": 1.0}
    # Fresh while it runs: the shim and its agent, as seen through the session's host.
    eventually(lambda: (engine.get_session_info(session_id).usage or Usage()).processes == 2)
    engine.terminate_session(session_id, grace=0)
    assert engine.wait(session_id, timeout=30) == "terminated"
    usage = engine.get_session_info(session_id).usage
    assert usage is not None
    assert usage.processes == 0
    assert (usage.cpu_seconds or 0) > 0
    ended = [e for e in engine.events(session_id) if e.type == "session.status"][-1]
    assert ended.usage == usage


def test_a_run_past_its_memory_limit_fails_with_memory_limit(engine: Any) -> None:
    session_id = engine.create_session(
        "hoards", command=[sys.executable, "-c", HOARDS], limits={"memory": "64M"}
    )
    engine.start_session(session_id)
    assert engine.wait(session_id, timeout=30) == "failed"
    info = engine.get_session_info(session_id)
    assert info.reason == "memory_limit"
    assert "memory limit of 64 MiB" in (info.detail or "")


@pytest.mark.parametrize(
    "limits", [{"memory": "lots"}, {"pids": 0}, {"cpus": -1}, {"disk": "1G"}, ["2G"]]
)
def test_bad_limits_are_refused_and_create_nothing(engine: Any, limits: Any) -> None:
    before = {info.session_id for info in engine.list_sessions()}
    with pytest.raises(InvalidLimits):
        engine.create_session("limited", limits=limits)
    assert {info.session_id for info in engine.list_sessions()} == before


# -- role pooling (execute) ----------------------------------------------------------------


def test_execute_reuses_an_idle_session_of_the_role(engine: Any) -> None:
    first = engine.execute("write the parser", role="coder")
    assert (first.status, first.exit_code, first.reused) == ("idle", 0, False)
    second = engine.execute("write the tests", role="coder")
    assert (second.session_id, second.reused) == (first.session_id, True)
    other = engine.execute("review", role="reviewer")
    assert other.session_id != first.session_id
    info = engine.get_session_info(first.session_id)
    assert (info.runs, info.task, info.current_task) == (2, "write the parser", "write the tests")
    seen = json.loads(Path(info.output_dir, "env.json").read_text())
    assert seen["HIVE_TASK"] == "write the tests"  # the run's own task, in env and argv
    assert json.loads(seen["argv"])[0] == "write the tests"
    stats = engine.stats()
    assert (stats.executes, round(stats.reuse_rate, 3)) == (3, round(1 / 3, 3))


def test_execute_batch_runs_every_task_in_one_session(engine: Any) -> None:
    results = engine.execute_batch(["one", "two", "three"], role="batcher")
    assert [r.task for r in results] == ["one", "two", "three"]
    assert len({r.session_id for r in results}) == 1
    assert [r.reused for r in results] == [False, True, True]
    assert engine.get_session_info(results[0].session_id).runs == 3


def test_concurrent_executes_never_share_a_session(engine: Any) -> None:
    engine.execute("warm up", role="pool")
    results = in_threads(lambda index: engine.execute(f"task {index}", role="pool"), range(4))
    assert len({r.session_id for r in results}) == 4  # no session ran two tasks at once
    assert all(r.status == "idle" for r in results)
    assert sum(r.reused for r in results) >= 1  # the warm session was taken by one of them
