"""End to end: a real daemon on a temp root, driven by the real hivectl and by HTTP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import threading
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from hive_actors import Hive
from hive_actors._client import Client
from hive_actors.testing import session_processes

from .conftest import HIVECTL, Daemon, eventually, process_alive

UNKNOWN = "550e8400-e29b-41d4-a716-446655440000"
SEED_FIELDS = {
    "session_id",
    "task",
    "priority",
    "created",
    "updated",
    "status",
    "working_dir",
    "output_dir",
    "database",
    "log_file",
    "metadata",
}


def _create(daemon: Daemon, *args: str) -> str:
    done = daemon.cli("create", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_seed_verbs_and_their_outputs(daemon: Daemon) -> None:
    daemon.start()
    created = daemon.cli("create", "Build a Rust CLI tool", "high", '{"project":"rust-cli"}')
    assert created.returncode == 0, created.stderr
    session_id = created.stdout.strip()
    assert len(created.stdout.splitlines()) == 1
    assert len(session_id) == 36
    metadata = json.loads(created.stderr)
    assert metadata["session_id"] == session_id
    assert metadata["metadata"] == {"project": "rust-cli"}

    assert daemon.cli("status", session_id).stdout == "created\n"
    started = daemon.cli("start", session_id, "--writes", "5")
    assert (started.returncode, started.stdout) == (0, "running\n")
    waited = daemon.cli("wait", session_id, "--timeout", "60")
    assert (waited.returncode, waited.stdout) == (0, "completed\n")

    info = json.loads(daemon.cli("get", session_id).stdout)
    assert set(info) >= SEED_FIELDS
    assert (info["status"], info["priority"], info["exit_code"]) == ("completed", "high", 0)
    assert json.loads(Path(info["output_dir"], "env.json").read_text())["argv"] == json.dumps(
        ["Build a Rust CLI tool", "--writes", "5"]
    )

    index = json.loads(daemon.cli("list").stdout)
    assert set(index) == {"sessions", "created"}
    assert index["sessions"][session_id] == {
        "task": "Build a Rust CLI tool",
        "status": "completed",
        "created": info["created"],
        "updated": info["updated"],
        "dir": info["working_dir"],
    }
    assert daemon.cli("output-dir", session_id).stdout == info["output_dir"] + "\n"
    assert daemon.cli("log", session_id).stdout == info["log_file"] + "\n"
    tail = daemon.cli("log", session_id, "--tail", "1").stdout
    assert tail == "fake_agent: exiting with 0\n"
    assert "exiting with 0" in daemon.cli("log", session_id, "--follow").stdout

    assert daemon.cli("send", session_id, "user", "hello").stdout.strip().isdigit()
    events = [
        json.loads(line)
        for line in daemon.cli("events", session_id, "--no-follow").stdout.splitlines()
    ]
    assert [e["type"] for e in events][:2] == ["session.created", "session.status"]
    assert events[-1] == {**events[-1], "type": "context.message", "content": "hello"}
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)

    assert daemon.cli("cleanup").stdout == "0\n"  # younger than 24 h
    assert daemon.cli("cleanup", "0").stdout == "1\n"
    assert daemon.cli("status", session_id).stdout == "not_found\n"


def test_errors_have_one_line_and_a_distinct_exit_code(daemon: Daemon) -> None:
    daemon.start()
    session_id = _create(daemon, "t")
    daemon.cli("start", session_id)
    daemon.cli("wait", session_id)

    cases = [
        (("status", UNKNOWN), 0, "not_found\n"),
        (("get", UNKNOWN), 3, ""),
        (("status", "../x"), 4, ""),
        (("create", "t", "urgent"), 4, ""),
        (("create", "t", "high", "[1,2]"), 4, ""),
        (("create", ""), 4, ""),
        (("start", session_id), 6, ""),
        (("wait", session_id, "--timeout", "-1"), 4, ""),
        (("wait", session_id, "--timeout", "nan"), 4, ""),
        (("log", session_id, "--tail", "-3"), 4, ""),
        (("events", "--since", "-5"), 4, ""),
        (("frobnicate",), 2, ""),
    ]
    for args, code, stdout in cases:
        done = daemon.cli(*args)
        assert done.returncode == code, (args, done.stderr)
        assert done.stdout == stdout, args
        if code not in (0, 2):
            assert done.stderr.startswith("hivectl: "), done.stderr
            assert done.stderr.count("\n") == 1, done.stderr

    def nowhere(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [HIVECTL, "--root", str(daemon.root / "nowhere"), "--no-autostart", *args],
            capture_output=True,
            text=True,
            env=daemon.env,
            check=False,
        )

    unreachable = nowhere("status", UNKNOWN)
    assert unreachable.returncode == 5
    assert "no hive daemon answers" in unreachable.stderr
    refused_first = nowhere("wait", UNKNOWN, "--timeout", "-1")  # before a daemon is asked
    assert refused_first.returncode == 4
    assert refused_first.stderr == "hivectl: --timeout must be a number, 0 or more, not -1.0\n"


def test_wait_and_run_exit_codes(daemon: Daemon) -> None:
    daemon.start()
    failing = _create(daemon, "doomed")
    daemon.cli("start", failing, "--exit", "3")
    assert daemon.cli("wait", failing).returncode == 1
    sleeper = _create(daemon, "slow")
    daemon.cli("start", sleeper, "--sleep", "inf")
    timed_out = daemon.cli("wait", sleeper, "--timeout", "0.2")
    assert timed_out.returncode == 124
    assert daemon.cli("terminate", sleeper, "--grace", "0").stdout in ("stopping\n", "terminated\n")
    assert daemon.cli("wait", sleeper).stdout == "terminated\n"

    agent = [*json.loads(daemon.env["HIVE_COMMAND"])[:2], "--exit", "3", "run task"]
    ran = daemon.cli("run", "run task", "--priority", "high", "--meta", '{"a": 1}', "--", *agent)
    assert ran.returncode == 3, ran.stderr
    assert "starting task 'run task'" in ran.stdout  # the agent's log, streamed
    assert "hivectl: running" in ran.stderr
    assert "hivectl: failed (exited with code 3)" in ran.stderr
    missing = daemon.cli("run", "x", "--", "/nonexistent/agent")
    assert missing.returncode == 127
    assert "/nonexistent/agent" in missing.stderr


def test_cli_starts_a_daemon_when_none_runs_and_shutdown_stops_it(daemon: Daemon) -> None:
    session_id = _create(daemon, "autostarted")
    holder = json.loads(daemon.cli("health").stdout)["pid"]
    created = daemon.cli("status", session_id)
    assert created.stdout == "created\n"
    assert "started one" not in created.stderr  # only the first command started it
    first = daemon.cli("create", "second")
    assert first.returncode == 0
    stopped = daemon.cli("shutdown")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped" in stopped.stderr
    assert not daemon.socket.exists()
    # Its work is done once the lock is free; the interpreter itself may take a moment more.
    eventually(lambda: not process_alive(holder))
    assert "no daemon serves" in daemon.cli("shutdown").stderr


@pytest.mark.parametrize(
    ("setting", "why", "logged"),
    [
        ({"root": "r" * 100}, "hive.sock is longer than 100 bytes; pass a shorter --socket", True),
        ({"HIVE_MAX_RUNNING": "lots"}, "invalid configuration: HIVE_MAX_RUNNING: Input", False),
    ],
    ids=["socket path too long", "bad setting"],
)
def test_a_daemon_that_cannot_start_in_the_background_says_why(
    daemon: Daemon, setting: dict[str, str], why: str, logged: bool
) -> None:
    root = daemon.root / setting.pop("root", "")
    env = {**daemon.env, **setting}
    done = subprocess.run(
        [HIVECTL, "--root", str(root), "create", "t"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    assert done.returncode == 5
    assert done.stderr.startswith(f"hivectl: could not start a daemon for {root}: "), done.stderr
    assert why in done.stderr
    assert done.stderr.count("\n") == 1
    assert not (root / "sessions").exists()  # nothing was made for the session
    if logged:  # it failed after taking the root's lock, where its log is opened
        assert '"event": "daemon failed"' in (root / "daemon.log").read_text()
    else:  # it failed reading its settings, before it touched the root
        assert not root.exists()


def test_a_daemon_started_while_another_serves_the_root_leaves_it_to_that_one(
    daemon: Daemon,
) -> None:
    """Two hivectl starting a daemon at the same moment: the second daemon finds the root
    taken and says so; its starter waits for the first one instead of failing."""
    daemon.start()
    pid = daemon.process.pid if daemon.process else 0
    client = Client(daemon.root)
    try:
        assert client._start_daemon() is None  # none of its own: the other one serves
        assert client.call("GET", "/health")["pid"] == pid
    finally:
        client.close()


def test_hivectl_says_which_process_manages_a_root_it_cannot_serve(daemon: Daemon) -> None:
    with Hive(root=daemon.root, command=["true"]):  # an orchestrator's own, in-process
        done = daemon.cli("create", "t")
        assert done.returncode == 5
        assert done.stderr == (
            f"hivectl: could not start a daemon for {daemon.root}: a Hive in process "
            f"{os.getpid()} already manages {daemon.root}; close it, drive it (a daemon: "
            "hivectl or its HTTP API), or open another root\n"
        )
        served = daemon.cli("serve")  # in the foreground: the same refusal, as a conflict
        assert served.returncode == 6
        assert f"a Hive in process {os.getpid()} already manages" in served.stderr
    assert daemon.cli("create", "t").returncode == 0  # free again: a daemon starts


def test_socket_is_owner_only_and_http_over_it_does_everything(daemon: Daemon) -> None:
    daemon.start()
    assert stat.S_IMODE(daemon.socket.stat().st_mode) == 0o600
    with daemon.http() as http:
        assert http.get("/health").json()["status"] == "ok"
        schema = http.get("/openapi.json").json()
        assert {"/sessions", "/sessions/{session_id}/start", "/events"} <= set(schema["paths"])
        info = http.post("/sessions", json={"task": "over http", "args": ["--sleep", "0"]}).json()
        session_id = info["session_id"]
        assert http.post(f"/sessions/{session_id}/start", json={}).json()["status"] == "running"
        assert http.get(f"/sessions/{session_id}/wait", params={"timeout": 60}).json() == {
            "session_id": session_id,
            "status": "completed",
            "settled": True,
        }
        log = http.get(f"/sessions/{session_id}/log", params={"tail": 1}).json()
        assert log["tail"] == "fake_agent: exiting with 0"
        assert (
            http.post(
                f"/sessions/{session_id}/messages", json={"role": "user", "content": "hi"}
            ).status_code
            == 200
        )
        assert http.post(f"/sessions/{session_id}/files", json={"path": "src/a.rs"}).json() == {
            "active_files": ["src/a.rs"]
        }
        context = http.get(f"/sessions/{session_id}/context").json()
        assert context["history"][0]["content"] == "hi"
        bad = http.post("/sessions", json={"task": "", "priority": "urgent"})
        assert bad.status_code == 422
        assert bad.json()["error"] == "invalid_input"
        assert "priority" in bad.json()["message"]
        garbled = http.post(
            "/sessions", content=b"{task: 1}", headers={"content-type": "application/json"}
        )
        assert (garbled.status_code, garbled.json()) == (
            422,
            {
                "error": "invalid_input",
                "message": "body is not valid JSON (Expecting property name enclosed in "
                "double quotes, at character 1)",
            },
        )
        hostile = {
            "nested 400 deep": '{"task":"t","metadata":' + '{"a":' * 400 + "1" + "}" * 401,
            "nested too deep to parse": '{"task":"t","metadata":' + "[" * 5000 + "]" * 5000 + "}",
            "not UTF-8": b'{"task":"\xff"}',
        }
        for name, body in hostile.items():
            refused = http.post(
                "/sessions", content=body, headers={"content-type": "application/json"}
            )
            assert (refused.status_code, refused.json()["error"]) == (422, "invalid_input"), name
            expected = "UTF-8" if name == "not UTF-8" else "at most 32 levels"
            assert expected in refused.json()["message"], (name, refused.json())
        assert len(http.get("/sessions").json()["sessions"]) == 1  # nothing half-made
        assert http.get(f"/sessions/{UNKNOWN}").json()["error"] == "not_found"
        assert http.post(f"/sessions/{session_id}/start", json={}).status_code == 409
        assert http.get("/sessions/not-a-uuid/status").status_code == 422


def test_twenty_concurrent_clients_in_separate_processes(daemon: Daemon) -> None:
    daemon.start()
    script = (
        'U=$(hivectl --root "$1" create "concurrent $2" medium) && '
        'hivectl --root "$1" start "$U" >/dev/null && echo "$U"'
    )
    clients = [
        subprocess.Popen(
            ["bash", "-c", script, "client", str(daemon.root), str(index)],
            env=daemon.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(20)
    ]
    ids = []
    for client in clients:
        out, err = client.communicate(timeout=120)
        assert client.returncode == 0, err
        ids.append(out.strip())
    assert len(set(ids)) == 20
    for session_id in ids:
        assert daemon.cli("wait", session_id, "--timeout", "120").stdout == "completed\n"
    logs = list((daemon.root / "logs").glob("*.log"))
    assert len(logs) == 20
    for log in logs:
        text = log.read_text().lower()
        assert "locked" not in text
        assert "sqlite_busy" not in text


def test_event_stream_resumes_from_last_seq_exactly_once(daemon: Daemon) -> None:
    daemon.start()
    with daemon.http() as http:
        first = http.post("/sessions", json={"task": "one"}).json()["session_id"]
        http.post(f"/sessions/{first}/start", json={})
        http.get(f"/sessions/{first}/wait", params={"timeout": 60})
        total = http.get("/health").json()["last_seq"]
        seen: list[int] = []
        with connect_sse(http, "GET", "/events", params={"since": 0}) as source:
            for message in source.iter_sse():
                seen.append(int(message.id))
                if len(seen) == 3:
                    break  # the client drops the connection
        second = http.post("/sessions", json={"task": "two"}).json()["session_id"]
        http.post(f"/sessions/{second}/start", json={})
        http.get(f"/sessions/{second}/wait", params={"timeout": 60})
        total = http.get("/health").json()["last_seq"]
        headers = {"Last-Event-ID": str(seen[-1])}
        with connect_sse(http, "GET", "/events", headers=headers) as source:
            for message in source.iter_sse():
                seen.append(int(message.id))
                assert message.event == json.loads(message.data)["type"]
                if int(message.id) == total:
                    break
        assert seen == list(range(1, total + 1))
        # Filtered by session: only that session's events.
        with connect_sse(
            http, "GET", "/events", params={"since": 0, "session_id": second, "follow": "false"}
        ) as source:
            assert {json.loads(m.data)["session_id"] for m in source.iter_sse()} == {second}


def test_every_events_parameter_is_checked_before_the_stream_starts(daemon: Daemon) -> None:
    daemon.start()
    cases = [
        ({"since": 0, "session_id": "../etc"}, {}, "'../etc' is not a session id"),
        ({"since": "abc"}, {}, "query.since: Input should be a valid integer"),
        ({"since": -1}, {}, "query.since: Input should be greater than or equal to 0"),
        ({"follow": "maybe"}, {}, "query.follow: Input should be a valid boolean"),
        ({}, {"Last-Event-ID": "xyz"}, "header.last-event-id: Input should be a valid integer"),
        ({}, {"Last-Event-ID": "-3"}, "header.last-event-id: Input should be greater than"),
    ]
    with daemon.http() as http:
        for params, headers, message in cases:
            with http.stream("GET", "/events", params=params, headers=headers) as reply:
                reply.read()
                assert reply.status_code == 422, (params, headers)
                assert reply.headers["content-type"] == "application/json"
                assert reply.json()["error"] == "invalid_input"
                assert reply.json()["message"].startswith(message), reply.json()
        # A valid Last-Event-ID still wins over since (a reconnecting EventSource).
        session_id = http.post("/sessions", json={"task": "t"}).json()["session_id"]
        params = {"since": 0, "session_id": session_id, "follow": "false"}
        with connect_sse(
            http, "GET", "/events", params=params, headers={"Last-Event-ID": "1"}
        ) as source:
            assert [int(m.id) for m in source.iter_sse()] == [2]
    daemon.stop()
    assert "Traceback" not in (daemon.root / "daemon.log").read_text()


def _subscribers(http: httpx.Client) -> float:
    (line,) = [
        line
        for line in http.get("/metrics").text.splitlines()
        if line.startswith("hive_event_subscribers ")
    ]
    return float(line.split()[1])


def test_a_closed_event_stream_releases_its_subscription_at_once(daemon: Daemon) -> None:
    daemon.start()
    with daemon.http() as http:
        session_id = http.post("/sessions", json={"task": "quiet"}).json()["session_id"]
        baseline = _subscribers(http)
        for params in [{"since": 0}, {"since": 0, "session_id": session_id}] * 10:
            with connect_sse(http, "GET", "/events", params=params) as source:
                next(source.iter_sse())  # read, then hang up while it waits for more
        # Nothing happens meanwhile: no later event, no keep-alive ping (every 15 s), to
        # make the daemon notice. It must notice the hang-up itself.
        eventually(lambda: _subscribers(http) == baseline, timeout=10)


def test_sse_and_hivectl_events_say_where_the_journal_was_trimmed(daemon: Daemon) -> None:
    daemon.env["HIVE_MAINTENANCE_INTERVAL"] = "0.1"  # passes trim the journal often
    daemon.start()
    with daemon.http() as http:
        gone = http.post("/sessions", json={"task": "removed"}).json()["session_id"]
        kept = http.post("/sessions", json={"task": "kept"}).json()["session_id"]
        http.post(f"/sessions/{gone}/terminate", json={})
        assert http.delete(f"/sessions/{gone}").status_code == 204

        def replay(**params: object) -> list[tuple[str, int, dict]]:
            with connect_sse(
                http, "GET", "/events", params={"since": 0, "follow": "false", **params}
            ) as source:
                return [(m.event, int(m.id), json.loads(m.data)) for m in source.iter_sse()]

        eventually(lambda: replay(session_id=gone)[0][0] == "journal.trimmed")
        everything = replay()
        kind, seq, data = everything[0]
        assert kind == "journal.trimmed"
        assert data == {
            "seq": seq,
            "session_id": None,
            "type": "journal.trimmed",
            "first_seq": seq + 1,
        }
        assert everything[1][1] == seq + 1  # it goes on from first_seq
        assert everything[1][2]["session_id"] == kept
        ids = [event_id for _, event_id, _ in everything]
        assert ids == sorted(set(ids))
        # A reconnecting client (Last-Event-ID = the signal's id) is not told twice.
        with connect_sse(
            http, "GET", "/events", params={"follow": "false"}, headers={"Last-Event-ID": str(seq)}
        ) as source:
            assert [int(m.id) for m in source.iter_sse()] == ids[1:]

    printed = daemon.cli("events", "--since", "0", "--no-follow")
    assert printed.returncode == 0, printed.stderr
    lines = [json.loads(line) for line in printed.stdout.splitlines()]
    assert lines[0] == everything[0][2]  # one JSON line like any event, first
    assert [line["seq"] for line in lines] == ids
    one = daemon.cli("events", gone, "--since", "0", "--no-follow")
    assert [json.loads(line)["type"] for line in one.stdout.splitlines()] == [
        "journal.trimmed",
        "session.removed",
    ]


def test_tcp_needs_the_bearer_token(daemon: Daemon) -> None:
    daemon.root.mkdir(parents=True)
    (daemon.root / "token").write_text("")  # as a crash between its create and write left it
    ready = daemon.start("--tcp", "127.0.0.1:0")
    address = ready.split()[1]
    assert address.startswith("127.0.0.1:")
    token_file = daemon.root / "token"
    # Printed even though stdout is a pipe: every address, and where the token is.
    assert daemon.stdout_line == f"ready socket={daemon.socket} tcp={address} token={token_file}"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    url = f"http://{address}"
    assert len(token) >= 32  # an empty one is made anew, never trusted
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": token},
        {"Authorization": "Bearer"},
    ):
        refused = httpx.post(f"{url}/sessions", json={"task": "sneaky"}, headers=headers)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
    with daemon.http() as http:
        assert http.get("/sessions").json()["sessions"] == []  # nothing was created
    good = {"Authorization": f"Bearer {token}"}
    assert httpx.post(f"{url}/sessions", json={"task": "ok"}, headers=good).status_code == 201
    for scheme in ("bearer", "BEARER", "bEaReR "):  # RFC 7235: the scheme is case-insensitive
        headers = {"Authorization": f"{scheme} {token}"}
        assert httpx.get(f"{url}/sessions", headers=headers).status_code == 200, scheme
    listed = daemon.cli("--url", url, "--token", token, "list")
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)["sessions"]) == 1
    assert daemon.stop() == 0
    log = (daemon.root / "daemon.log").read_text().splitlines()
    said = [json.loads(line)["event"] for line in log]
    assert said.count("daemon ready") == 1  # uvicorn's own start lines, one per listener, gone
    assert not [line for line in said if "server process" in line], said


def test_a_second_daemon_on_the_same_root_is_refused(daemon: Daemon) -> None:
    daemon.start()
    pid = daemon.process.pid if daemon.process else 0
    second = daemon.cli("serve")
    assert second.returncode == 6
    assert f"a daemon (pid {pid}) already serves {daemon.root}" in second.stderr
    assert daemon.cli("health").returncode == 0  # the first one is untouched


def test_sigterm_stops_every_agent_and_leaves_a_consistent_registry(daemon: Daemon) -> None:
    daemon.start()
    running = [_create(daemon, f"long {i}") for i in range(3)]
    for session_id in running:
        assert daemon.cli("start", session_id, "--sleep", "inf").stdout == "running\n"
    waiting = _create(daemon, "never started")
    assert all(session_processes(i) for i in running)
    assert daemon.stop() == 0
    assert not daemon.socket.exists()
    for session_id in running:
        assert session_processes(session_id) == []
    with Hive(root=daemon.root) as hive:
        for session_id in running:
            info = hive.get_session_info(session_id)
            assert (info.status, info.reason) == ("terminated", "shutdown")
        assert hive.status(waiting) == "created"


def _run_seed_script(text: str, daemon: Daemon) -> subprocess.CompletedProcess[str]:
    """Run a seed script with bash, hivectl on PATH, HIVE_ROOT the daemon's root."""
    root = daemon.root
    script = f'set -u\nexport HIVE_ROOT="{root}"\ncd "{root.parent}"\n' + text
    return subprocess.run(
        ["bash", "-c", script],
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


WORKFLOW = r"""
# The seed's "Complete Workflow Example", with
# `docker exec [-d] multi-agent-container /app/scripts/hive-session-manager.sh` -> `hivectl`
# and the host path of the mounted ext/ dir -> the OUTPUT_DIR it printed.

# 1. Create session
UUID=$(hivectl create \
  "Build web scraper in Python" \
  "high" \
  '{"requester":"api","timeout":3600}')

echo "Created session: $UUID"

# 2. Start hive-mind spawn (background)
hivectl start $UUID

# 3. Monitor status
while true; do
  STATUS=$(hivectl status $UUID)

  echo "Status: $STATUS"

  if [[ "$STATUS" == "completed" || "$STATUS" == "failed" ]]; then
    break
  fi

  sleep 1
done

# 4. Get results
if [ "$STATUS" = "completed" ]; then
  OUTPUT_DIR=$(hivectl output-dir $UUID)

  echo "Task completed! Output at: $OUTPUT_DIR"

  # Copy results from mounted ext/ directory
  cp -r "$OUTPUT_DIR/" ./results/

else
  # Get error logs
  LOG_FILE=$(hivectl log $UUID)

  echo "Task failed. Logs:"
  tail -50 "$LOG_FILE"
fi
"""

CONCURRENT = r"""
# The seed's "Test Multiple Concurrent Spawns", same replacement; the container checks
# become checks of the daemon, and the lock grep runs over the session logs.
UUID1=$(hivectl create "task 1")
UUID2=$(hivectl create "task 2")
UUID3=$(hivectl create "task 3")

hivectl start $UUID1
hivectl start $UUID2
hivectl start $UUID3

# Daemon should NOT crash
hivectl health > /dev/null && echo "daemon Up"

# Check for lock errors
for U in $UUID1 $UUID2 $UUID3; do [ "$(hivectl wait $U)" = completed ] || exit 1; done
grep -i "lock\|SQLITE_BUSY" "$HIVE_ROOT"/logs/*.log && exit 1
# Should find NOTHING
find "$HIVE_ROOT/sessions" -name "memory.db" | wc -l
"""


def test_the_seeds_workflow_script_runs_with_hivectl(daemon: Daemon) -> None:
    daemon.start()
    done = _run_seed_script(WORKFLOW, daemon)
    assert done.returncode == 0, done.stderr
    assert "Task completed! Output at: " in done.stdout
    assert (
        daemon.root.parent / "results" / "result.txt"
    ).read_text() == "Build web scraper in Python"


def test_the_seeds_concurrent_spawn_script_runs_with_hivectl(daemon: Daemon) -> None:
    done = _run_seed_script(CONCURRENT, daemon)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "daemon Up" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "3"  # three separate memory.db files
    assert "started one" in done.stderr  # the first hivectl started the daemon


def _follow(daemon: Daemon, session_id: str) -> subprocess.Popen[str]:
    """``hivectl events UUID --since 0``, running: the session's journal, then live."""
    return subprocess.Popen(
        [HIVECTL, "--root", str(daemon.root), "events", session_id, "--since", "0"],
        env=daemon.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_events_verb_streams_until_interrupted(daemon: Daemon) -> None:
    daemon.start()
    session_id = _create(daemon, "streamed")
    follower = _follow(daemon, session_id)
    assert follower.stdout is not None
    lines: list[dict] = []
    reader = threading.Thread(
        target=lambda: [lines.append(json.loads(line)) for line in follower.stdout]  # type: ignore[union-attr]
    )
    reader.start()
    daemon.cli("start", session_id)
    daemon.cli("wait", session_id)
    daemon.cli("send", session_id, "user", "last")
    with daemon.http() as http:
        last = http.get("/health").json()["last_seq"]
    eventually(lambda: bool(lines) and lines[-1]["seq"] == last)
    follower.send_signal(signal.SIGINT)
    assert follower.wait(10) == 130
    reader.join(10)
    follower.stdout.close()
    assert follower.stderr is not None
    follower.stderr.close()
    assert [e["to"] for e in lines if e["type"] == "session.status"] == [
        "created",
        "starting",
        "running",
        "completed",
    ]


def test_a_followed_event_stream_says_where_to_resume_when_the_daemon_stops(
    daemon: Daemon,
) -> None:
    daemon.start()
    session_id = _create(daemon, "followed")
    follower = _follow(daemon, session_id)
    try:
        assert follower.stdout is not None
        first, second = (json.loads(follower.stdout.readline()) for _ in range(2))
        assert [first["type"], second["type"]] == ["session.created", "session.status"]
        assert daemon.cli("shutdown").returncode == 0
        out, err = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()
    assert follower.returncode == 5  # not a clean end: a supervisor should start it again
    assert out == ""
    assert err == (
        f"hivectl: the daemon stopped; to go on: hivectl events {session_id} "
        f"--since {second['seq']}\n"
    )


def test_no_error_path_of_hivectl_prints_a_traceback(daemon: Daemon, tmp_path: Path) -> None:
    """Every kind of failure ends in one line on stderr and its documented exit code."""
    daemon.start()
    running = _create(daemon, "long", "high", "{}")
    assert daemon.cli("start", running, "--sleep", "60").stdout == "running\n"
    a_file = tmp_path / "afile"
    a_file.write_text("")
    taken = socket.create_server(("127.0.0.1", 0))
    busy_port = taken.getsockname()[1]
    other = tmp_path / "other-root"  # a root no daemon serves
    deep = '{"a":' * 5_000 + "1" + "}" * 5_000  # too deep for json.loads itself
    cases: list[tuple[tuple[str, ...], int, str]] = [
        (("start", running), 6, f"session {running} is already running"),
        (("send", running, "assistant", ""), 4, "message content is empty"),
        (("send", running, "assistant", "  \n"), 4, "message content is empty"),
        (("create", "t", "high", deep), 4, "at most 32 levels"),
        (("create", "t", "high", '{"a":' * 40 + "1" + "}" * 40), 4, "at most 32 levels"),
        (("get", UNKNOWN), 3, "no session"),
        (("log", UNKNOWN), 3, "no session"),
        (("output-dir", "../etc"), 4, "is not a session id"),
        (("terminate", running, "--grace", "-1"), 4, "grace"),
        (("--root", str(other), "serve", "--tcp", f"127.0.0.1:{busy_port}"), 6, "already in use"),
        (("--root", str(other), "serve", "--tcp", "no-port"), 4, "give PORT or HOST:PORT"),
    ]
    for verb in ("create x", f"status {UNKNOWN}", "list", "serve", "events --no-follow"):
        for root in (a_file, a_file / "root"):
            cases.append((("--root", str(root), *verb.split()), 4, "not a directory"))
    try:
        for args, code, message in cases:
            done = daemon.cli(*args, timeout=60)
            assert "Traceback" not in done.stderr, (args, done.stderr)
            assert (done.returncode, done.stderr.count("\n")) == (code, 1), (args, done.stderr)
            assert done.stderr.startswith("hivectl: "), (args, done.stderr)
            assert message in done.stderr, (args, done.stderr)
    finally:
        taken.close()
    assert daemon.cli("terminate", running, "--grace", "0").returncode == 0


@pytest.mark.parametrize("removed", ["root", "socket"])
def test_a_daemon_whose_root_or_socket_is_removed_stops_and_says_why(
    daemon: Daemon, removed: str
) -> None:
    daemon.env["HIVE_MAINTENANCE_INTERVAL"] = "0.1"
    daemon.start()
    assert daemon.process is not None
    if removed == "root":
        shutil.rmtree(daemon.root)
    else:
        daemon.socket.unlink()
    assert daemon.process.wait(30) == 7
    assert daemon.process.stderr is not None
    said = daemon.process.stderr.read().decode()
    gone = daemon.root if removed == "root" else daemon.socket
    assert said == (
        f"hivectl: the daemon stopped: its {removed} {gone} was removed "
        "(start it again to serve there)\n"
    )
