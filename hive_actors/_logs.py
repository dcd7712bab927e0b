"""Reading a session's log: its tail, or its bytes from an offset (what hivectl logs shows)."""

from __future__ import annotations

import os
from pathlib import Path

CHUNK = 65536


def tail(path: Path, lines: int) -> tuple[int, str]:
    """The file's size and its last ``lines`` lines (0 and "" for a log not written yet)."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return 0, ""
    with handle:
        handle.seek(0, os.SEEK_END)
        size = end = handle.tell()
        if lines == 0:
            return size, ""
        block, data = 8192, b""
        while end > 0 and data.count(b"\n") <= lines:
            start = max(0, end - block)
            handle.seek(start)
            data = handle.read(end - start) + data
            end = start
    return size, b"\n".join(data.splitlines()[-lines:]).decode("utf-8", "replace")


def read_from(path: Path, position: int, limit: int = CHUNK) -> bytes:
    """At most ``limit`` bytes from ``position`` (b"" at the end, or for no file yet)."""
    try:
        with path.open("rb") as handle:
            handle.seek(position)
            return handle.read(limit)
    except FileNotFoundError:
        return b""
