"""Bad input gets a clear error, and nothing is created or changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hive_actors import (
    CorruptState,
    Hive,
    HiveClosed,
    InvalidCommand,
    InvalidConfig,
    InvalidContext,
    InvalidInput,
    InvalidMetadata,
    InvalidPriority,
    InvalidSessionId,
    InvalidTask,
    InvalidTransition,
    SessionNotFound,
)
from hive_actors._validate import metadata_json

from .conftest import Hives

UNKNOWN = "550e8400-e29b-41d4-a716-446655440000"


def _nested(levels: int) -> dict:
    """A JSON object ``levels`` objects deep: {"a": {"a": ... 1}}."""
    value: object = 1
    for _ in range(levels):
        value = {"a": value}
    assert isinstance(value, dict)
    return value


def test_metadata_nested_up_to_the_limit_is_kept_whole(hive: Hive) -> None:
    session_id = hive.create_session("t", metadata=_nested(32))
    assert hive.get_session_info(session_id).metadata == _nested(32)


def test_file_index_info_deeper_than_the_limit_is_refused(hive: Hive) -> None:
    session_id = hive.create_session("t")
    context = hive.context(session_id)
    for levels in (33, 100_000):
        with pytest.raises(InvalidContext, match="at most 32 levels"):
            context.update_file_index("src/a.py", _nested(levels))
    context.update_file_index("src/a.py", _nested(32))
    assert context.file_index() == {"src/a.py": _nested(32)}


def test_metadata_text_too_deep_to_parse_is_refused() -> None:
    with pytest.raises(InvalidMetadata, match="at most 32 levels"):
        metadata_json('{"a":' * 100_000 + "1" + "}" * 100_000)


def _snapshot(hive: Hive) -> tuple:
    sessions = sorted(p.name for p in hive.config.sessions_dir.iterdir())
    logs = sorted(p.name for p in hive.config.logs_dir.iterdir())
    return sessions, logs, hive.last_seq, len(hive.list_sessions())


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"task": ""}, InvalidTask, "task is empty"),
        ({"task": "   \n"}, InvalidTask, "task is empty"),
        ({"task": "a\x00b"}, InvalidTask, "NUL"),
        ({"task": "x" * 70_000}, InvalidTask, "at most 65536 bytes"),
        ({"task": "\udcff"}, InvalidTask, "not valid UTF-8"),
        ({"task": 7}, InvalidTask, "must be a string"),
        (
            {"task": "t", "priority": "urgent"},
            InvalidPriority,
            "'urgent' is not one of high, medium, low",
        ),
        ({"task": "t", "metadata": ["a"]}, InvalidMetadata, "must be a JSON object"),
        ({"task": "t", "metadata": '{"a": 1}'}, InvalidMetadata, "must be a JSON object"),
        ({"task": "t", "metadata": {"a": object()}}, InvalidMetadata, "not JSON-serialisable"),
        ({"task": "t", "metadata": {"blob": "x" * 70_000}}, InvalidMetadata, "at most 65536 bytes"),
        ({"task": "t", "metadata": _nested(33)}, InvalidMetadata, "at most 32 levels"),
        ({"task": "t", "metadata": _nested(400)}, InvalidMetadata, "at most 32 levels"),
        ({"task": "t", "metadata": _nested(100_000)}, InvalidMetadata, "at most 32 levels"),
        ({"task": "t", "metadata": {"l": [[[_nested(30)]]]}}, InvalidMetadata, "at most 32 levels"),
        ({"task": "t", "command": []}, InvalidCommand, "command is empty"),
        ({"task": "t", "command": "claude-flow spawn"}, InvalidCommand, "list of strings"),
        ({"task": "t", "command": ["ok", 3]}, InvalidCommand, r"command\[1\] must be a string"),
        ({"task": "t", "command": [""]}, InvalidCommand, "must name the program"),
        ({"task": "t", "args": "--flag"}, InvalidCommand, "args must be a list"),
        ({"task": "t", "env": {"1BAD": "x"}}, InvalidCommand, "not a valid identifier"),
        ({"task": "t", "env": {"HIVE_DB": "/tmp/x"}}, InvalidCommand, "set by hive_actors"),
        ({"task": "t", "env": {"A": 1}}, InvalidCommand, "must be a string"),
        ({"task": "t", "role": ""}, InvalidCommand, "role must be"),
        ({"task": "t", "persistent": "yes"}, InvalidInput, "persistent must be"),
    ],
)
def test_create_refuses_bad_input_and_creates_nothing(
    hive: Hive, kwargs: dict, error: type[Exception], message: str
) -> None:
    before = _snapshot(hive)
    with pytest.raises(error, match=message):
        hive.create_session(**kwargs)
    assert _snapshot(hive) == before


@pytest.mark.parametrize("bad", ["../x", "../../etc", "", "not-a-uuid", UNKNOWN + "/..", 42, None])
def test_malformed_ids_are_refused_everywhere_and_never_touch_disk(hive: Hive, bad: object) -> None:
    for call in (
        hive.status,
        hive.get_session_info,
        hive.start_session,
        hive.terminate_session,
        hive.output_dir,
        hive.log_file,
        hive.wait,
        hive.context,
    ):
        with pytest.raises(
            InvalidSessionId, match="is not a session id; a session id is a UUID like"
        ):
            call(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidSessionId):
        hive.send_message(bad, "user", "x")  # type: ignore[arg-type]


def test_unknown_ids_are_not_found(hive: Hive) -> None:
    assert hive.status(UNKNOWN) == "not_found"
    assert hive.status(UNKNOWN.upper()) == "not_found"  # ids are case-insensitive
    for call in (hive.get_session_info, hive.start_session, hive.terminate_session, hive.wait):
        with pytest.raises(SessionNotFound, match=UNKNOWN):
            call(UNKNOWN)


def test_other_bad_arguments(hive: Hive) -> None:
    session_id = hive.create_session("t")
    with pytest.raises(InvalidConfig, match="grace must be"):
        hive.terminate_session(session_id, grace=-1)
    with pytest.raises(InvalidInput, match="status 'done' is not one of"):
        hive.list_sessions(status="done")
    with pytest.raises(InvalidInput, match="since must be"):
        hive.events(since=-3)
    with pytest.raises(InvalidInput, match="max_age_hours"):
        hive.cleanup(-1)
    with pytest.raises(InvalidInput, match="timeout"):
        hive.wait(session_id, timeout=-1)
    with pytest.raises(InvalidCommand, match="args"):
        hive.start_session(session_id, args=["ok", None])  # type: ignore[list-item]
    assert hive.status(session_id) == "created"


def test_bad_configuration_names_the_setting(hives: Hives, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidConfig, match="grace_period"):
        Hive(root=hives.root / "x", grace_period=-1)
    with pytest.raises(InvalidConfig, match="unknown setting colour"):
        Hive(root=hives.root / "x", colour="blue")
    monkeypatch.setenv("HIVE_COMMAND", "claude-flow spawn")
    with pytest.raises(InvalidConfig, match="HIVE_COMMAND must be a JSON list"):
        Hive(root=hives.root / "x")
    monkeypatch.setenv("HIVE_COMMAND", json.dumps([]))
    with pytest.raises(InvalidConfig) as empty:
        Hive(root=hives.root / "x")
    assert str(empty.value) == (  # our reason, without pydantic's "Value error, " before it
        "invalid configuration: HIVE_COMMAND: command is empty; give at least the program to run"
    )
    monkeypatch.setenv("HIVE_COMMAND", json.dumps(["agent", "{task}"]))
    monkeypatch.setenv("HIVE_MAX_RESTARTS", "many")
    with pytest.raises(InvalidConfig, match="HIVE_MAX_RESTARTS"):
        Hive(root=hives.root / "x")
    assert not (hives.root / "x").exists()
    monkeypatch.delenv("HIVE_MAX_RESTARTS")
    for setting in ("RETENTION_HOURS", "IDLE_TIMEOUT", "MAX_LIFETIME"):  # inf broke housekeeping
        monkeypatch.setenv(f"HIVE_{setting}", "inf")
        with pytest.raises(InvalidConfig, match=f"HIVE_{setting}: Input should be a finite"):
            Hive(root=hives.root / "x")
        monkeypatch.delenv(f"HIVE_{setting}")
    (hives.root / "afile").write_text("")
    for root in (hives.root / "afile", hives.root / "afile" / "root"):
        with pytest.raises(InvalidConfig, match=r"afile.*not a directory; choose a directory"):
            Hive(root=root)


def test_a_closed_hive_refuses_calls(hives: Hives) -> None:
    hive = hives.open()
    session_id = hive.create_session("t")
    hive.close()
    hive.close()  # idempotent
    with pytest.raises(HiveClosed, match="create a new Hive"):
        hive.create_session("t")
    with pytest.raises(HiveClosed):
        hive.get_session_info(session_id)


def test_a_corrupt_registry_is_reported_not_replaced(hives: Hives, tmp_path: Path) -> None:
    root = tmp_path / "corrupt"
    root.mkdir()
    (root / "registry.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CorruptState, match="not a readable hive registry"):
        Hive(root=root)
    assert (root / "registry.db").read_bytes() == b"this is not sqlite" * 100
    (root / "registry.db").unlink()  # mended by hand: the Hive that failed left the root free
    assert hives.open(root=root).list_sessions() == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("team=search", r"not valid JSON \(Expecting value.*\); give a JSON object, e\.g\."),
        ("[1, 2]", r"must be a JSON object \(a dict\), not list"),
    ],
)
def test_metadata_given_as_text_is_refused_saying_what_is_accepted(text: str, message: str) -> None:
    with pytest.raises(InvalidMetadata, match=message):
        metadata_json(text)
    assert metadata_json(" null ") == metadata_json("") == {}
    assert metadata_json('{"team": "search"}') == {"team": "search"}


def test_starting_a_live_session_says_it_is_already_running(hive: Hive) -> None:
    session_id = hive.create_session("t", args=["--sleep", "60"])
    assert hive.start_session(session_id) == "running"
    with pytest.raises(InvalidTransition) as again:
        hive.start_session(session_id)
    assert str(again.value) == f"session {session_id} is already running"
    assert (again.value.current, again.value.target) == ("running", "starting")


@pytest.mark.parametrize("content", ["", " \n\t"])
def test_an_empty_message_is_refused_like_an_empty_task(hive: Hive, content: str) -> None:
    session_id = hive.create_session("t")
    with pytest.raises(InvalidContext, match="message content is empty"):
        hive.send_message(session_id, "assistant", content)
    assert hive.context(session_id).history() == []


def test_metadata_sharing_one_list_many_times_over_is_refused_at_once(hive: Hive) -> None:
    shared: list = []
    for _ in range(30):  # 2**30 lists once written out
        shared = [shared, shared]
    with pytest.raises(InvalidMetadata, match="too many objects and lists for 65536 bytes"):
        hive.create_session("t", metadata={"a": shared})
