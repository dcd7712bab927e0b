"""Where things live: the default root, and a daemon's files under it.

Kept free of heavy imports: the CLI imports it on every call.
"""

from __future__ import annotations

import os
from pathlib import Path

SOCKET_NAME = "hive.sock"
TOKEN_NAME = "token"  # noqa: S105 - the file's name, not a secret
LOG_NAME = "daemon.log"


def socket_path(root: Path, given: Path | None = None) -> Path:
    return given or root / SOCKET_NAME


def default_root() -> Path:
    """The per-user data directory: $XDG_DATA_HOME/hive_actors or ~/.local/share/hive_actors."""
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "hive_actors"
