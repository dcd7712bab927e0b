"""Where things live: the default root, and a daemon's files under it.

Kept free of heavy imports: the CLI imports it on every call.
"""

from __future__ import annotations

import os
from pathlib import Path

from hive_actors.errors import InvalidConfig

SOCKET_NAME = "hive.sock"
TOKEN_NAME = "token"  # noqa: S105 - the file's name, not a secret
LOG_NAME = "daemon.log"


def socket_path(root: Path, given: Path | None = None) -> Path:
    return given or root / SOCKET_NAME


def default_root() -> Path:
    """The per-user data directory: $XDG_DATA_HOME/hive_actors or ~/.local/share/hive_actors."""
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "hive_actors"


def usable_root(root: Path) -> Path:
    """Return ``root``; raise InvalidConfig if it cannot be a directory (it, or the
    nearest of its parents that exists, is a file)."""
    for path in (root, *root.parents):
        try:
            if not path.exists():
                continue
        except OSError:  # not even looked at (a parent we may not search): said when used
            return root
        if not path.is_dir():
            what = "is a file" if path == root else f"lies beneath {path}, a file"
            raise InvalidConfig(
                f"hive root {root} {what}, not a directory; "
                "choose a directory for the root (--root, HIVE_ROOT)"
            )
        break
    return root
