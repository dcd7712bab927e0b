"""Housekeeping on a schedule: retention cleanup and log rotation.

Every ``maintenance_interval`` seconds of the hive's clock a pass runs on a thread of its
own (never the timer thread, whose deadlines must not wait on file copies):

* ended sessions last changed more than ``retention_hours`` ago are removed;
* the log of each session that is not settled and has grown past ``log_max_bytes`` is
  rotated, ``<uuid>.log.1`` ... ``.N`` keeping ``log_keep`` files. The agent writes through
  an inherited O_APPEND fd, so rotation copies the log and truncates it in place (as
  logrotate's copytruncate does): the agent's next write lands at the new end. A line
  written between the copy and the truncate can be lost.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import structlog

from hive_actors._core import HiveCore
from hive_actors._permissions import open_private
from hive_actors._states import SETTLED
from hive_actors._timers import TimerHandle

log = structlog.get_logger(__name__)


class Maintenance:
    def __init__(self, core: HiveCore, cleanup: Callable[[float], list[str]]) -> None:
        self._core = core
        self._cleanup = cleanup
        self._config = core.config
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._timer: TimerHandle | None = None
        self._closed = False
        self.passes = 0
        """Completed passes (for tests and stats)."""
        self._passed = threading.Condition(self._lock)

    @property
    def enabled(self) -> bool:
        return self._config.retention_hours is not None or self._config.log_max_bytes is not None

    def start(self) -> None:
        if self.enabled:
            self._schedule()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
            worker = self._worker
        if worker is not None:
            worker.join(30)

    def wait_passes(self, count: int, timeout: float) -> bool:
        """Block until ``count`` passes have completed."""
        with self._passed:
            return self._passed.wait_for(lambda: self.passes >= count, timeout)

    def _schedule(self) -> None:
        self._timer = self._core.timers.call_later(self._config.maintenance_interval, self._due)

    def _due(self) -> None:
        with self._lock:
            if self._closed or (self._worker is not None and self._worker.is_alive()):
                return
            self._worker = threading.Thread(target=self._pass, name="hive-maintenance")
            self._worker.start()

    def _pass(self) -> None:
        try:
            if self._config.retention_hours is not None:
                removed = self._cleanup(self._config.retention_hours)
                if removed:
                    log.info("retention cleanup", removed=len(removed))
            if self._config.log_max_bytes is not None:
                self._rotate_logs(self._config.log_max_bytes, self._config.log_keep)
        except Exception:
            log.exception("maintenance pass failed")
        finally:
            with self._lock:
                self.passes += 1
                self._passed.notify_all()
                if not self._closed:
                    self._schedule()

    def _rotate_logs(self, limit: int, keep: int) -> None:
        for info in self._core.table.all():
            if info.status in SETTLED:
                continue
            path = Path(info.log_file)
            try:
                if path.stat().st_size <= limit:
                    continue
            except FileNotFoundError:
                continue
            rotate(path, keep)


def rotate(path: Path, keep: int) -> None:
    """``path`` -> ``path.1`` -> ... -> ``path.<keep>`` (dropped), then truncate ``path``."""
    with contextlib.suppress(FileNotFoundError):
        Path(f"{path}.{keep}").unlink()
    for index in range(keep - 1, 0, -1):
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{path}.{index}", f"{path}.{index + 1}")
    if keep > 0:
        with path.open("rb") as source, open(f"{path}.1", "wb", opener=open_private) as copy:
            shutil.copyfileobj(source, copy)
    os.truncate(path, 0)
