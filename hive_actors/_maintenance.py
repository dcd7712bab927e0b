"""Housekeeping on a schedule: retention cleanup, journal trimming and log rotation.

Every ``maintenance_interval`` seconds of the hive's clock a pass runs on a thread of its
own (never the timer thread, whose deadlines must not wait on file copies):

* ended sessions last changed more than ``retention_hours`` ago are removed;
* the journal is trimmed: the events of removed sessions but their ``session.removed``,
  and every event older than ``journal_retention_hours`` (default ``retention_hours``),
  in batches that each hold the registry's lock for a few milliseconds; the pages freed
  are given back to the file system;
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
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

import structlog

from hive_actors._core import HiveCore
from hive_actors._permissions import open_private
from hive_actors._registry import Registry
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

    def start(self) -> None:
        self._schedule()  # always: removed sessions' events are trimmed with no setting

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
        # Each task on its own: one that keeps failing must not stop the others for good.
        tasks = [self._remove_expired, self._trim_journal]
        if self._config.log_max_bytes is not None:
            tasks.append(self._rotate_logs)
        try:
            for task in tasks:
                try:
                    task()
                except Exception:
                    log.exception("maintenance task failed", task=task.__name__)
        finally:
            with self._lock:
                self.passes += 1
                self._passed.notify_all()
                if not self._closed:
                    self._schedule()

    def _remove_expired(self) -> None:
        if self._config.retention_hours is not None:
            removed = self._cleanup(self._config.retention_hours)
            if removed:
                log.info("retention cleanup", removed=len(removed))

    def _trim_journal(self) -> None:
        trimmed = trim_journal(
            self._core.registry,
            self._core.clock.now(),
            self._config.journal_hours,
            lambda: self._closed,
        )
        if trimmed.events:
            log.info("journal trimmed", events=trimmed.events, free_pages=trimmed.free_pages)

    def _rotate_logs(self) -> None:
        limit, keep = self._config.log_max_bytes, self._config.log_keep
        if limit is None:
            return
        for info in self._core.table.all():
            if info.status in SETTLED:
                continue
            path = Path(info.log_file)
            try:
                if path.stat().st_size <= limit:
                    continue
            except FileNotFoundError:
                continue
            rotate(path, keep, partial(self._core.watchdog.truncate, info.session_id, path))


TRIM_BATCH = 200
"""Events one trimming batch deletes at most (a few ms under the registry's lock)."""
COMPACT_WINDOW = 2000
"""Seqs one batch looks through for removed sessions."""
RECLAIM_PAGES = 64
"""Free pages (4 KiB each) one batch gives back to the file system (moving pages to fill
the holes they leave costs ~0.1 ms a page)."""


@dataclass(frozen=True, slots=True)
class JournalTrim:
    """What one ``trim_journal`` did."""

    events: int
    """Events deleted."""
    free_pages: int
    """Free pages left in the file (0 once all were given back)."""


def trim_journal(
    registry: Registry,
    now: datetime,
    hours: float | None,
    stopping: Callable[[], bool] = lambda: False,
) -> JournalTrim:
    """Trim the journal: removed sessions' events but their ``session.removed``, then
    (if ``hours`` is not None) every event older than ``hours``; give the space back.

    Each batch is one short transaction; between two, writers waiting for the registry
    get their turn, and once ``stopping()`` is true the rest is left to the next pass.
    """
    deleted = 0
    while not stopping():
        compacted = registry.compact_removed(COMPACT_WINDOW, TRIM_BATCH)
        if compacted is None:
            break
        deleted += compacted
        _let_writers_in()
    if hours is not None:
        cutoff = now - timedelta(hours=hours)
        while not stopping():
            trimmed = registry.trim_older_than(cutoff, TRIM_BATCH)
            deleted += trimmed
            if trimmed < TRIM_BATCH:
                break
            _let_writers_in()
    free = registry.reclaim(RECLAIM_PAGES)
    while free and not stopping():
        _let_writers_in()
        left = registry.reclaim(RECLAIM_PAGES)
        if left >= free:
            break  # pages are being freed as fast as given back: the next pass goes on
        free = left
    return JournalTrim(deleted, free)


def _let_writers_in() -> None:
    # The registry's lock is not fair: taken again at once, it could keep a writer that
    # waits for it waiting for a whole trim. Giving up the GIL lets that writer run.
    time.sleep(0)


def rotate(path: Path, keep: int, truncate: Callable[[], None] | None = None) -> None:
    """``path`` -> ``path.1`` -> ... -> ``path.<keep>`` (dropped), then truncate ``path``
    (by ``truncate``, if given: the stall watchdog truncates it under its own lock)."""
    with contextlib.suppress(FileNotFoundError):
        Path(f"{path}.{keep}").unlink()
    for index in range(keep - 1, 0, -1):
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{path}.{index}", f"{path}.{index + 1}")
    if keep > 0:
        with path.open("rb") as source, open(f"{path}.1", "wb", opener=open_private) as copy:
            shutil.copyfileobj(source, copy)
    if truncate is None:
        os.truncate(path, 0)
    else:
        truncate()
