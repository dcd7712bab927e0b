"""``hivectl``: drive a hive daemon from the shell, with the seeds' verbs and outputs.

stdout carries only machine-readable output (an id, a status word, JSON); everything for
people (errors, notices, progress) goes to stderr as one line each.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hive_actors import _validate
from hive_actors._client import ApiError, Client, DaemonUnreachable
from hive_actors._lockfile import DaemonLock
from hive_actors._paths import default_root, usable_root
from hive_actors._states import SETTLED
from hive_actors.errors import CorruptState, HiveError, InvalidInput, WorkspaceError

EXIT_OK = 0
EXIT_FAILED = 1
"""The session did not complete (wait, run, start)."""
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_INVALID = 4
EXIT_UNREACHABLE = 5
EXIT_CONFLICT = 6
"""The request conflicts with the state: invalid transition, or a daemon already runs."""
EXIT_ERROR = 7
EXIT_TIMEOUT = 124
EXIT_SPAWN_ERROR = 127
EXIT_INTERRUPTED = 130

_HTTP_EXIT = {404: EXIT_NOT_FOUND, 422: EXIT_INVALID, 409: EXIT_CONFLICT}
MAX_WAIT_REQUEST = 300.0


class CliError(Exception):
    def __init__(self, message: str, code: int) -> None:
        self.code = code
        super().__init__(message)


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0911 - one exit per error kind
    argv = sys.argv[1:] if argv is None else argv
    command: list[str] = []
    if "run" in argv and "--" in argv[argv.index("run") :]:
        cut = argv.index("--", argv.index("run"))
        argv, command = argv[:cut], argv[cut + 1 :]
    options = _parser().parse_args(argv)
    options.command = command
    try:
        code: int = options.handler(options)
    except CliError as exc:
        return _fail(str(exc), exc.code)
    except ApiError as exc:
        return _fail(str(exc), _HTTP_EXIT.get(exc.status, EXIT_ERROR))
    except DaemonUnreachable as exc:
        return _fail(str(exc), EXIT_UNREACHABLE)
    except InvalidInput as exc:
        return _fail(str(exc), EXIT_INVALID)
    except (CorruptState, WorkspaceError) as exc:  # the root's state, not a conflict
        return _fail(str(exc), EXIT_ERROR)
    except HiveError as exc:  # DaemonRunning and the like
        return _fail(str(exc), EXIT_CONFLICT)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `hivectl events | head`
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the interpreter's flush
        return EXIT_OK
    except OSError as exc:  # the root or a file under it refused us
        where = f": {exc.filename}" if exc.filename else ""
        return _fail(f"{exc.strerror or exc}{where}", EXIT_ERROR)
    except Exception as exc:  # noqa: BLE001 - a bug of ours still gets one line, not a traceback
        return _fail(f"unexpected {type(exc).__name__}: {exc}; please report it", EXIT_ERROR)
    return code


def _fail(message: str, code: int) -> int:
    print(f"hivectl: {message}", file=sys.stderr)
    return code


def _out(text: str) -> None:
    print(text, flush=True)


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


# -- verbs ----------------------------------------------------------------------------------


def _create(options: argparse.Namespace) -> int:
    metadata = _validate.metadata_json(options.metadata or "")
    body = {
        "task": options.task,
        "priority": _validate.priority(options.priority),
        "metadata": metadata,
        "persistent": options.persistent,
        "role": options.role,
        "restart": options.restart,
        "restart_limit": options.restart_limit,
        "restart_backoff": options.restart_backoff,
        "host": options.host,
        # A path of the caller's, made absolute here: the daemon's working dir is not ours.
        "repo": _validate.repo(options.repo),
        "ref": options.ref,
        "setup": None
        if options.setup is None
        else _json_list(options.setup, "--setup", '["npm", "ci"]'),
        "ports": _not_negative(options, "ports"),
        "stall_timeout": _not_negative(options, "stall_timeout"),
        "stall_action": options.stall_action,
        "resume_command": None
        if options.resume_command is None
        else _json_list(options.resume_command, "--resume-command", '["claude", "--continue"]'),
        # Checked by the daemon, which says what is accepted (exit 4).
        "limits": {
            name: value
            for name in _validate.LIMIT_NAMES
            if (value := getattr(options, name)) is not None
        }
        or None,
    }
    info = _client(options).call("POST", "/sessions", body=body)
    _out(info["session_id"])
    print(_json(info), file=sys.stderr)
    return EXIT_OK


def _json_list(text: str, option: str, example: str) -> list[str]:
    """An argv given as a JSON list (the daemon checks its strings)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, list):
        raise InvalidInput(
            f"{option} must be a JSON list of strings such as '{example}', not {text!r}"
        )
    return value


def _diff(options: argparse.Namespace) -> int:
    changes = _client(options).call("GET", f"/sessions/{_id(options)}/changes")
    if options.json:
        _out(_json(changes))
    else:
        sys.stdout.write(changes["diff"])
        sys.stdout.flush()
        if changes["truncated"]:
            print(
                "hivectl: the diff was cut at the daemon's max_diff_bytes; "
                "the files and counts (--json) are complete",
                file=sys.stderr,
            )
    return EXIT_OK


def _remove(options: argparse.Namespace) -> int:
    params = {"delete_branch": "true"} if options.delete_branch else None
    _client(options).call("DELETE", f"/sessions/{_id(options)}", params=params)
    return EXIT_OK


def _start(options: argparse.Namespace) -> int:
    args = _agent_args(options.args)
    body = {"args": args or None}
    reply = _client(options).call("POST", f"/sessions/{_id(options)}/start", body=body)
    _out(reply["status"])
    if reply["status"] == "failed":
        info = _client(options).call("GET", f"/sessions/{_id(options)}")
        raise CliError(f"session {options.session_id} failed to start: {info['detail']}", 1)
    return EXIT_OK


def _status(options: argparse.Namespace) -> int:
    _out(_client(options).call("GET", f"/sessions/{_id(options)}/status")["status"])
    return EXIT_OK


def _get(options: argparse.Namespace) -> int:
    _out(_json(_client(options).call("GET", f"/sessions/{_id(options)}")))
    return EXIT_OK


def _hosts(options: argparse.Namespace) -> int:
    _out(_json(_client(options).call("GET", "/hosts")))
    return EXIT_OK


def _list(options: argparse.Namespace) -> int:
    client = _client(options)
    params = {"status": options.status} if options.status else None
    sessions = client.call("GET", "/sessions", params=params)["sessions"]
    index = {
        info["session_id"]: {
            "task": info["task"],
            "status": info["status"],
            "created": info["created"],
            "updated": info["updated"],
            "dir": info["working_dir"],
        }
        for info in sessions
    }
    created = client.call("GET", "/health")["created"]
    _out(_json({"sessions": index, "created": created}))
    return EXIT_OK


def _output_dir(options: argparse.Namespace) -> int:
    _out(_client(options).call("GET", f"/sessions/{_id(options)}/output-dir")["output_dir"])
    return EXIT_OK


def _log(options: argparse.Namespace) -> int:
    _not_negative(options, "tail")
    client = _client(options)
    if options.follow:
        for chunk in client.log_stream(_id(options)):
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
        return EXIT_OK
    params = {"tail": options.tail or 0}
    reply = client.call("GET", f"/sessions/{_id(options)}/log", params=params)
    _out(reply["tail"] if options.tail else reply["log_file"])
    return EXIT_OK


def _cleanup(options: argparse.Namespace) -> int:
    body = {"max_age_hours": options.max_age_hours}
    _out(str(_client(options).call("POST", "/cleanup", body=body)["count"]))
    return EXIT_OK


def _terminate(options: argparse.Namespace) -> int:
    body = {"grace": options.grace}
    reply = _client(options).call("POST", f"/sessions/{_id(options)}/terminate", body=body)
    _out(reply["status"])
    return EXIT_OK


def _send(options: argparse.Namespace) -> int:
    body = {"role": options.role, "content": options.text}
    reply = _client(options).call("POST", f"/sessions/{_id(options)}/messages", body=body)
    _out(str(reply["seq"]))
    return EXIT_OK


def _events(options: argparse.Namespace) -> int:
    since = _not_negative(options, "since")
    if since is None and not options.follow:
        since = 0
    session_id = None if options.session_id is None else _id(options)
    last = since
    for event in _client(options).events(session_id, since, options.follow):
        _out(json.dumps(event, ensure_ascii=False))
        last = event["seq"]
    if options.follow:  # a followed stream ends only when the daemon stops
        again = ["hivectl events", session_id, None if last is None else f"--since {last}"]
        resume = " ".join(part for part in again if part)
        raise CliError(f"the daemon stopped; to go on: {resume}", EXIT_UNREACHABLE)
    return EXIT_OK


def _wait(options: argparse.Namespace) -> int:
    timeout = _not_negative(options, "timeout")
    status = _wait_settled(_client(options), _id(options), timeout)
    _out(status)
    return _exit_for(status)


def _run(options: argparse.Namespace) -> int:
    command = options.command
    if not command:
        raise CliError("run needs a command after --, e.g. hivectl run 'task' -- my-agent", 2)
    client = _client(options)
    body = {
        "task": options.task,
        "priority": _validate.priority(options.priority),
        "metadata": _validate.metadata_json(options.meta or ""),
        "command": command,
    }
    info = client.call("POST", "/sessions", body=body)
    session_id = info["session_id"]
    progress = _Progress(session_id, interactive=sys.stderr.isatty())
    watcher = threading.Thread(
        target=progress.follow, args=(client, info), name="hivectl-events", daemon=True
    )
    watcher.start()
    try:
        client.call("POST", f"/sessions/{session_id}/start", body={})
        for chunk in client.log_stream(session_id):
            progress.write_output(chunk)
    except KeyboardInterrupt:
        progress.note("interrupted; terminating the session")
        client.call("POST", f"/sessions/{session_id}/terminate", body={})
        _wait_settled(client, session_id, None)
        progress.stop()
        return EXIT_INTERRUPTED
    status = _wait_settled(client, session_id, None)
    watcher.join(10)
    final = client.call("GET", f"/sessions/{session_id}")
    progress.note(f"{status} ({final['detail']})" if final.get("detail") else status)
    progress.stop()
    if status == "completed":
        return EXIT_OK
    if final["reason"] == "spawn_error":
        return EXIT_SPAWN_ERROR
    code = final.get("exit_code")
    return code if isinstance(code, int) and code != 0 else EXIT_FAILED


def _serve(options: argparse.Namespace) -> int:
    from hive_actors._server import ServeOptions, serve  # noqa: PLC0415 - heavy, daemon only

    serve(
        ServeOptions(
            root=_root(options),
            socket=options.socket,
            tcp=options.tcp,
            token=options.token,
            ready_fd=options.ready_fd,
            leave_running=options.leave_running,
            ray=options.ray,
            host_root=options.host_root,
        )
    )
    return EXIT_OK


def _shutdown(options: argparse.Namespace) -> int:
    _not_negative(options, "timeout")
    root = _root(options)
    client = _client(options, autostart=False)
    try:
        client.call("POST", "/shutdown")
    except DaemonUnreachable:
        print(f"hivectl: no daemon serves {root}", file=sys.stderr)
        return EXIT_OK
    if options.url is None and not DaemonLock(root).wait_released(options.timeout):
        raise CliError(f"the daemon for {root} did not stop within {options.timeout} s", 124)
    print(f"hivectl: the daemon for {root} stopped", file=sys.stderr)
    return EXIT_OK


def _health(options: argparse.Namespace) -> int:
    _out(_json(_client(options).call("GET", "/health")))
    return EXIT_OK


# -- helpers --------------------------------------------------------------------------------


def _root(options: argparse.Namespace) -> Path:
    if options.root is not None:
        return usable_root(Path(options.root))
    given = os.environ.get("HIVE_ROOT")
    return usable_root(Path(given) if given else default_root())


def _client(options: argparse.Namespace, autostart: bool = True) -> Client:
    cached: Client | None = getattr(options, "_client", None)
    if cached is not None:
        return cached
    root = _root(options)
    client = Client(root, socket=options.socket, url=options.url, token=options.token)
    if autostart and options.url is None and not options.no_autostart:
        pid = client.ensure_daemon()
        if pid is not None:
            print(
                f"hivectl: no daemon was serving {root}; started one (pid {pid}); "
                "'hivectl shutdown' stops it",
                file=sys.stderr,
            )
    options._client = client
    return client


def _id(options: argparse.Namespace) -> str:
    """The session id argument, checked here: a malformed one must never reach a URL path."""
    return _validate.session_id(options.session_id)


def _not_negative(options: argparse.Namespace, name: str) -> Any:
    """The number given for ``--name``, checked before any daemon is asked: none, or a
    finite number, 0 or more."""
    value = getattr(options, name)
    if value is not None and not (value >= 0 and math.isfinite(value)):
        raise InvalidInput(f"--{name} must be a number, 0 or more, not {value}")
    return value


def _agent_args(args: list[str]) -> list[str]:
    return args[1:] if args[:1] == ["--"] else args


def _wait_settled(client: Client, session_id: str, timeout: float | None) -> str:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        remaining = MAX_WAIT_REQUEST if deadline is None else deadline - time.monotonic()
        chunk = max(0.0, min(remaining, MAX_WAIT_REQUEST))
        reply = client.call(
            "GET",
            f"/sessions/{session_id}/wait",
            params={"timeout": chunk},
            timeout=chunk + 30,
        )
        if reply["settled"]:
            return str(reply["status"])
        if deadline is not None and time.monotonic() >= deadline:
            raise CliError(
                f"session {session_id} still {reply['status']} after {timeout} s", EXIT_TIMEOUT
            )


def _exit_for(status: str) -> int:
    # idle is a persistent session's clean end of run: as good as completed for a script.
    return EXIT_OK if status in ("completed", "idle") else EXIT_FAILED


class _Progress:
    """``hivectl run``'s stderr: one line per status change, and a spinner on a terminal."""

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self, session_id: str, interactive: bool) -> None:
        self._id = session_id
        self._interactive = interactive
        self._lock = threading.Lock()
        self._status = "created"
        self._started = time.monotonic()
        self._done = threading.Event()
        self._spinner: threading.Thread | None = None
        if interactive:
            self._spinner = threading.Thread(target=self._spin, daemon=True)
            self._spinner.start()

    def follow(self, client: Client, info: dict[str, Any]) -> None:
        self.note(f"session {self._id} created")
        with contextlib.suppress(DaemonUnreachable, ApiError):
            for event in client.events(self._id, 0, follow=True):
                if event["type"] != "session.status" or event["to"] == "created":
                    continue
                self._status = event["to"]
                if event["to"] in SETTLED:
                    return  # said by run() once the log is drained, so it comes last
                self.note(event["to"])

    def write_output(self, chunk: bytes) -> None:
        with self._lock:
            self._clear()
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()

    def note(self, text: str) -> None:
        with self._lock:
            self._clear()
            print(f"hivectl: {text}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        self._done.set()
        if self._spinner is not None:
            self._spinner.join(1)
        with self._lock:
            self._clear()

    def _clear(self) -> None:
        if self._interactive:
            sys.stderr.write("\r\033[K")

    def _spin(self) -> None:
        for frame in itertools.cycle(self.FRAMES):
            if self._done.wait(0.1):
                return
            with self._lock:
                elapsed = time.monotonic() - self._started
                sys.stderr.write(f"\r\033[K{frame} {self._id[:8]} {self._status} {elapsed:.1f}s")
                sys.stderr.flush()


# -- the parser -----------------------------------------------------------------------------


def _common_options(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "--root", default=default, help="hive root (default: $HIVE_ROOT or the user data dir)"
    )
    parser.add_argument(
        "--socket", type=Path, default=default, help="daemon socket (default: ROOT/hive.sock)"
    )
    parser.add_argument("--url", default=default, help="daemon URL over TCP ($HIVE_URL)")
    parser.add_argument("--token", default=default, help="bearer token for --url ($HIVE_TOKEN)")
    parser.add_argument(
        "--no-autostart", action="store_true", default=default, help="never start a daemon"
    )


def _parser() -> argparse.ArgumentParser:  # noqa: PLR0915 - one statement per option
    parser = argparse.ArgumentParser(
        prog="hivectl",
        description="Drive a hive_actors daemon: isolated sessions for AI coding agents.",
        epilog="Exit codes: 0 ok, 1 session did not complete, 2 usage, 3 not found, "
        "4 invalid input, 5 daemon unreachable, 6 conflict, 7 other error, 124 timeout, "
        "127 agent could not be started, 130 interrupted.",
    )
    _common_options(parser, argparse.SUPPRESS)
    parser.set_defaults(
        root=None,
        socket=None,
        url=os.environ.get("HIVE_URL") or None,
        token=os.environ.get("HIVE_TOKEN") or None,
        no_autostart=False,
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, handler: Callable[[argparse.Namespace], int], text: str) -> Any:
        sub = verbs.add_parser(name, help=text, description=text)
        sub.set_defaults(handler=handler)
        _common_options(sub, argparse.SUPPRESS)  # also accepted after the verb
        return sub

    sub = verb("create", _create, "create a session; prints its UUID (metadata JSON on stderr)")
    sub.add_argument("task")
    sub.add_argument("priority", nargs="?", default="medium", help="high, medium or low")
    sub.add_argument("metadata", nargs="?", help="a JSON object")
    sub.add_argument("--persistent", action="store_true", help="idle after a clean run")
    sub.add_argument("--role", help="a role name (for pooling persistent sessions)")
    sub.add_argument(
        "--restart", default="never", help="restart the agent: never, on-failure, always"
    )
    sub.add_argument("--restart-limit", type=int, default=3, metavar="N")
    sub.add_argument("--restart-backoff", type=float, default=1.0, metavar="S")
    sub.add_argument("--host", metavar="NAME", help="on this cluster host (a --ray daemon)")
    sub.add_argument("--repo", metavar="PATH", help="work in a new git worktree of this repository")
    sub.add_argument(
        "--ref", metavar="REF", help="with --repo: start at this branch, tag or commit"
    )
    sub.add_argument(
        "--setup",
        metavar="JSON",
        help='a setup step to run first, as a JSON list: \'["npm", "ci"]\'',
    )
    sub.add_argument(
        "--ports", type=int, metavar="N", help="give the session N TCP ports of its own"
    )
    sub.add_argument(
        "--memory", metavar="SIZE", help="memory limit: bytes, or with K, M, G (2G; 1K = 1024)"
    )
    sub.add_argument("--pids", metavar="N", help="limit on its processes and threads at once")
    sub.add_argument("--cpus", metavar="CORES", help="CPU limit in cores, such as 0.5 or 2")
    sub.add_argument(
        "--stall-timeout", type=float, metavar="S", help="a stall: its log still for S seconds"
    )
    sub.add_argument(
        "--stall-action", metavar="A", help="on a stall: none, terminate or restart the run"
    )
    sub.add_argument(
        "--resume-command",
        metavar="JSON",
        help='argv of every run after the first: \'["claude", "--continue"]\'',
    )

    sub = verb("diff", _diff, "print a session's diff against its base (a session from --repo)")
    sub.add_argument("session_id", metavar="UUID")
    sub.add_argument(
        "--json", action="store_true", help="the whole object: branch, base, commits, files, diff"
    )

    sub = verb("remove", _remove, "remove an ended session (its worktree; its branch stays)")
    sub.add_argument("session_id", metavar="UUID")
    sub.add_argument("--delete-branch", action="store_true", help="delete its branch too")

    sub = verb("start", _start, "start a session's agent; extra ARGS go to the agent")
    sub.add_argument("session_id", metavar="UUID")
    sub.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS")

    for name, handler, text in (
        ("status", _status, "print a session's status word (not_found if unknown)"),
        ("get", _get, "print a session's metadata as JSON"),
        ("output-dir", _output_dir, "print a session's output directory"),
    ):
        verb(name, handler, text).add_argument("session_id", metavar="UUID")

    verb("hosts", _hosts, "print the cluster's hosts as JSON (a --ray daemon; else none)")

    sub = verb("list", _list, "print every session as the seeds' index JSON")
    sub.add_argument("--status", help="only sessions with this status")

    sub = verb("log", _log, "print a session's log path (or its tail, or follow it)")
    sub.add_argument("session_id", metavar="UUID")
    sub.add_argument("--tail", type=int, metavar="N", help="print the last N lines instead")
    sub.add_argument("--follow", "-f", action="store_true", help="stream it until the run ends")

    sub = verb(
        "cleanup", _cleanup, "remove ended sessions older than MAX_AGE_HOURS; prints the count"
    )
    sub.add_argument("max_age_hours", nargs="?", type=float, default=24.0, metavar="MAX_AGE_HOURS")

    sub = verb("terminate", _terminate, "stop a session: SIGTERM, grace period, SIGKILL")
    sub.add_argument("session_id", metavar="UUID")
    sub.add_argument("--grace", type=float, help="seconds before SIGKILL")

    sub = verb("send", _send, "add a message to a session's conversation; prints its seq")
    sub.add_argument("session_id", metavar="UUID")
    sub.add_argument("role", help="user, assistant, system or tool")
    sub.add_argument("text")

    sub = verb("events", _events, "stream events as JSON lines (all sessions, or one)")
    sub.add_argument("session_id", nargs="?", metavar="UUID")
    sub.add_argument("--since", type=int, metavar="SEQ", help="replay the journal after SEQ first")
    sub.add_argument(
        "--no-follow", dest="follow", action="store_false", help="print the journal and stop"
    )

    sub = verb("wait", _wait, "wait until a session is settled; exit 0 if it completed")
    sub.add_argument("session_id", metavar="UUID")
    sub.add_argument("--timeout", type=float, metavar="S")

    sub = verb("run", _run, "create and start a session running CMD, show it, exit with its code")
    sub.usage = "hivectl run [-h] [--priority P] [--meta JSON] TASK -- CMD [ARGS...]"
    sub.add_argument("task")
    sub.add_argument("--priority", default="medium")
    sub.add_argument("--meta", help="metadata as a JSON object")

    sub = verb("serve", _serve, "run the daemon in the foreground")
    sub.add_argument("--tcp", metavar="[HOST:]PORT", help="also listen on TCP (bearer token)")
    sub.add_argument(
        "--leave-running",
        action="store_true",
        help="on stop, leave running agents for the next daemon to re-adopt",
    )
    sub.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    sub.add_argument(
        "--ray", metavar="ADDRESS", help="serve the sessions of the Ray cluster at ADDRESS"
    )
    sub.add_argument(
        "--host-root", type=Path, metavar="DIR", help="with --ray: the hosts' <DIR>/<host name>"
    )

    sub = verb("shutdown", _shutdown, "stop the daemon of the root")
    sub.add_argument("--timeout", type=float, default=120.0, metavar="S")

    verb("health", _health, "print the daemon's health JSON")
    return parser
