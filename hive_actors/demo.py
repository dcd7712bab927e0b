"""``make demo``: a few sessions of the bundled fake agent, their events live, then where
their outputs are.

    python -m hive_actors.demo [--root DIR] [--keep]

Runs against ``--root``, else ``$HIVE_ROOT``, else a new temporary directory, which it
removes at the end unless ``--keep`` asks to look at what the sessions left behind. A
root given is never removed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import structlog

from hive_actors import TERMINAL, Event, Hive, HostEvent, RootInUse
from hive_actors.testing import fake_agent_command

TASKS = [
    ("Build a Rust CLI tool for file processing", "high", ["--sleep", "0.5"]),
    ("Create a Python web scraper", "medium", ["--sleep", "1"]),
    ("Write the release notes", "low", ["--sleep", "0.2"]),
    ("Refactor the parser (this one fails)", "medium", ["--sleep", "0.3", "--exit", "3"]),
]


def _describe(event: Event) -> str:
    if event.type == "journal.trimmed":
        return f"#{event.seq:<3} (events before #{event.first_seq} were trimmed)"
    if isinstance(event, HostEvent):
        return f"#{event.seq:<3} host {event.host} {event.type.removeprefix('host.')}"
    short = event.session_id[:8]
    if event.type == "session.status":
        extra = f" ({event.detail})" if event.detail else ""
        return f"#{event.seq:<3} {short} {event.from_ or 'new'} -> {event.to}{extra}"
    if event.type == "context.message":
        return f"#{event.seq:<3} {short} {event.role}: {event.content}"
    return f"#{event.seq:<3} {short} {event.type}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hive_actors.demo", description=__doc__)
    parser.add_argument("--root", type=Path, help="hive root (default: $HIVE_ROOT or a temp dir)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temp root it makes (a root given is kept)"
    )
    options = parser.parse_args(argv)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    given = options.root or os.environ.get("HIVE_ROOT")
    if given:
        return _run(Path(given))
    root = Path(tempfile.mkdtemp(prefix="hive-demo-"))
    try:
        return _run(root)
    finally:
        _dispose(root, options.keep)


def _run(root: Path) -> int:
    try:
        hive = Hive(root=root, command=fake_agent_command(), grace_period=2)
    except RootInUse as exc:  # e.g. $HIVE_ROOT is the root a daemon serves
        print(f"demo: {exc}; for the demo, give --root DIR or unset HIVE_ROOT", file=sys.stderr)
        return 1
    with hive:
        print(f"hive root: {root}\n")
        since = hive.last_seq
        ids = []
        for task, priority, args in TASKS:
            session_id = hive.create_session(task, priority, {"demo": True}, args=args)
            hive.send_message(session_id, "user", task)
            ids.append(session_id)
        for session_id in ids:
            hive.start_session(session_id)
        # Replay what happened since we began, then follow live until every session ended.
        ended: set[str] = set()
        with hive.events(since=since, follow=True, timeout=60) as stream:
            for event in stream:
                print(_describe(event), flush=True)
                if event.type == "session.status" and event.to in TERMINAL:
                    ended.add(event.session_id)
                if ended >= set(ids):
                    break

        print("\nsession                               status     exit  output")
        for session_id in ids:
            info = hive.get_session_info(session_id)
            print(f"{session_id}  {info.status:<10} {info.exit_code!s:<5} {info.output_dir}")
        print(f"\nlogs:     {hive.config.logs_dir}")
        print(f"registry: {hive.config.registry_path}")
        failed = [i for i in ids if hive.status(i) != "completed"]
        print(f"{len(ids) - len(failed)} completed, {len(failed)} failed (one on purpose)")
    return 0


def _dispose(root: Path, keep: bool) -> None:
    """The temp dir the demo made is its own to remove, once its hive has closed; a demo
    run after demo run must not leave one behind each time without saying so."""
    if keep:
        print(f"kept the demo's temp root {root}")
        return
    try:
        shutil.rmtree(root)
    except OSError as exc:
        print(f"demo: could not remove its root {root}: {exc.strerror}", file=sys.stderr)
    else:
        print(f"removed the demo's temp root {root} (give --keep to keep it)")


if __name__ == "__main__":
    sys.exit(main())
