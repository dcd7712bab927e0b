"""A stand-in for an agent CLI such as ``claude-flow hive-mind spawn TASK``.

    python -m hive_actors.testing.fake_agent TASK [options]

It does what the real ones do to a session's workspace: writes to ``.swarm/memory.db`` in
its cwd (so concurrent sessions prove their isolation), writes its output into
``$HIVE_OUTPUT_DIR``, and prints to stdout and stderr. Options make it misbehave on cue.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fake_agent", description=__doc__)
    parser.add_argument("task")
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds to work (inf: forever)")
    parser.add_argument("--exit", type=int, default=0, dest="exit_code", help="exit code")
    parser.add_argument("--writes", type=int, default=20, help="rows to write to memory.db")
    parser.add_argument("--grandchild", action="store_true", help="start a long-lived child")
    parser.add_argument(
        "--setsid-grandchild", action="store_true", help="that child leaves our process group"
    )
    parser.add_argument(
        "--bare-grandchild", action="store_true", help="that child gets an empty environment"
    )
    parser.add_argument(
        "--ignore-term", action="store_true", help="ignore SIGTERM (and so does the child)"
    )
    parser.add_argument(
        "--stubborn-grandchild", action="store_true", help="the child ignores SIGTERM; we do not"
    )
    parser.add_argument("--ready", help="a FIFO to write {pid, grandchild} to once set up")
    parser.add_argument("--hold", help="a FIFO: work until a line is written to it, then finish")
    return parser


def _write_memory(rows: int, task: str) -> None:
    database = Path.cwd() / ".swarm" / "memory.db"
    if os.environ.get("HIVE_DB") not in (None, str(database)):
        sys.exit(f"fake_agent: HIVE_DB={os.environ['HIVE_DB']} but cwd's db is {database}")
    db = sqlite3.connect(database, timeout=5)
    try:
        db.execute("CREATE TABLE IF NOT EXISTS memory (key TEXT, value TEXT, at REAL)")
        for index in range(rows):
            with db:  # one transaction per row, as chatty agents do
                db.execute(
                    "INSERT INTO memory VALUES (?, ?, ?)", (f"step-{index}", task, time.time())
                )
    finally:
        db.close()


def main(argv: list[str] | None = None) -> int:
    options = _parser().parse_args(argv)
    if options.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(f"fake_agent: starting task {options.task!r} in {Path.cwd()}", flush=True)
    print("fake_agent: this line goes to stderr", file=sys.stderr, flush=True)
    try:
        _write_memory(options.writes, options.task)
    except sqlite3.OperationalError as exc:  # "database is locked" would land here
        print(f"fake_agent: memory.db error: {exc}", file=sys.stderr, flush=True)
        return 70
    output = os.environ.get("HIVE_OUTPUT_DIR")
    if output:
        Path(output, "result.txt").write_text(options.task, encoding="utf-8")
        seen = {name: value for name, value in os.environ.items() if name.startswith("HIVE_")}
        seen["argv"] = json.dumps(sys.argv[1:])
        seen["cwd"] = str(Path.cwd())
        Path(output, "env.json").write_text(json.dumps(seen, indent=1), encoding="utf-8")
    grandchild = None
    if options.grandchild or options.setsid_grandchild:
        if options.stubborn_grandchild:  # an ignored signal stays ignored across exec
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        grandchild = subprocess.Popen(
            [shutil.which("sleep") or "/bin/sleep", "3600"],
            start_new_session=options.setsid_grandchild,
            stdin=subprocess.DEVNULL,
            env={} if options.bare_grandchild else None,  # no HIVE_SESSION_ID to find it by
        ).pid
        if options.stubborn_grandchild and not options.ignore_term:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if options.ready:
        with open(options.ready, "w", encoding="utf-8") as fifo:
            fifo.write(json.dumps({"pid": os.getpid(), "grandchild": grandchild}) + "\n")
    if options.hold:
        with open(options.hold, encoding="utf-8") as fifo:
            print(f"fake_agent: told {fifo.readline().strip()!r}", flush=True)
    deadline = time.monotonic() + options.sleep
    while time.monotonic() < deadline:
        time.sleep(min(1.0, deadline - time.monotonic()))
    print(f"fake_agent: exiting with {options.exit_code}", flush=True)
    return int(options.exit_code)


if __name__ == "__main__":
    sys.exit(main())
