"""The public API's contract, run on both engines: a local Hive and a ClusterHive on a
simulated Ray cluster (one per module; its sessions outlive each test, so a test looks
only at the sessions it made)."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from hive_actors import (
    HiveClosed,
    InvalidInput,
    InvalidMetadata,
    InvalidPriority,
    InvalidSessionId,
    InvalidTask,
    InvalidTransition,
    SessionNotFound,
)
from hive_actors.testing import fake_agent_command

from .conftest import Engines, Recorder

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
    assert info.env == {"EXTRA": "1"}
