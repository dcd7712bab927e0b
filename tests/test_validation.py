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
    InvalidInput,
    InvalidMetadata,
    InvalidPriority,
    InvalidSessionId,
    InvalidTask,
    SessionNotFound,
)
from hive_actors._validate import metadata_json

from .conftest import Hives

UNKNOWN = "550e8400-e29b-41d4-a716-446655440000"


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
    with pytest.raises(InvalidConfig, match="HIVE_COMMAND"):
        Hive(root=hives.root / "x")
    monkeypatch.setenv("HIVE_COMMAND", json.dumps(["agent", "{task}"]))
    monkeypatch.setenv("HIVE_MAX_RESTARTS", "many")
    with pytest.raises(InvalidConfig, match="HIVE_MAX_RESTARTS"):
        Hive(root=hives.root / "x")
    assert not (hives.root / "x").exists()


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
