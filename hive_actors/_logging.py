"""Log output of the daemon (the library itself never configures logging).

JSON lines to ``<root>/daemon.log``, and human-readable lines on stderr when it is a
terminal. uvicorn's and pykka's stdlib logging go to the same places.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import structlog

from hive_actors._permissions import open_private

_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure_daemon_logging(log_file: Path, interactive: bool | None = None) -> None:
    interactive = sys.stderr.isatty() if interactive is None else interactive
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    os.close(open_private(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND))  # owner-only
    to_file = logging.FileHandler(log_file, encoding="utf-8")
    to_file.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
            foreign_pre_chain=_SHARED,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [to_file]
    if interactive:
        to_terminal = logging.StreamHandler(sys.stderr)
        to_terminal.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                processors=[
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.dev.ConsoleRenderer(),
                ],
                foreign_pre_chain=_SHARED,
            )
        )
        root.addHandler(to_terminal)
    root.setLevel(logging.INFO)
    logging.getLogger("pykka").setLevel(logging.WARNING)
    # uvicorn says "Started server process" (and the like) once per listener; the daemon's
    # own "daemon ready" and "daemon stopping" lines say it once, with every address.
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
