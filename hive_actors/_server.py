"""``hivectl serve``: the daemon. One Hive, served over HTTP on a Unix socket (owner-only)
and optionally on TCP behind a bearer token, until SIGTERM, SIGINT or POST /shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import json
import os
import secrets
import select
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import uvicorn

from hive_actors._config import HiveConfig
from hive_actors._hive import Hive
from hive_actors._http import create_app, is_public
from hive_actors._lockfile import DaemonLock
from hive_actors._logging import configure_daemon_logging
from hive_actors._paths import LOG_NAME, TOKEN_NAME, socket_path
from hive_actors._permissions import open_private, private_dir, refused
from hive_actors.errors import HiveError, InvalidConfig

log = structlog.get_logger(__name__)

MAX_SOCKET_PATH = 100
"""sun_path holds 108 bytes; keep a margin."""
GRACEFUL_SHUTDOWN = 3
"""Seconds open HTTP connections get to finish when the daemon stops."""


class DaemonRunning(HiveError):
    """Another daemon already serves this root."""

    def __init__(self, root: Path, pid: int | None) -> None:
        self.pid = pid
        who = f"pid {pid}" if pid else "another process"
        super().__init__(
            f"a daemon ({who}) already serves {root}; stop it with 'hivectl shutdown' "
            "or choose another --root"
        )


@dataclass(frozen=True)
class ServeOptions:
    root: Path | None = None
    socket: Path | None = None
    tcp: str | None = None
    token: str | None = None
    ready_fd: int | None = None
    leave_running: bool = False


def parse_tcp(value: str) -> tuple[str, int]:
    """``PORT``, ``HOST:PORT`` or ``[V6]:PORT``; the host defaults to 127.0.0.1.

    Port 0 picks a free port; the ready message and the log say which.
    """
    host, _, port = value.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise InvalidConfig(f"--tcp {value!r}: give PORT or HOST:PORT, e.g. 127.0.0.1:8765")
    return host, int(port)


class _Starter:
    """The pipe to whoever started the daemon (``--ready-fd``): told once, then closed.

    "ready [TCP ADDRESS...]" when the daemon serves; "error MESSAGE" when it could not
    start, so that a hivectl that started it in the background can say why.
    """

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def ready(self, tcp: str) -> None:
        self._tell(f"ready {tcp}".rstrip())

    def failed(self, exc: BaseException) -> None:
        self._tell(f"error {exc}")

    def _tell(self, line: str) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        # One write of at most PIPE_BUF bytes arrives whole: the starter reads it at once.
        message = line.encode(errors="replace")[: select.PIPE_BUF - 1] + b"\n"
        with contextlib.suppress(OSError):  # the starter gave up waiting: nobody to tell
            os.write(fd, message)
        os.close(fd)


def serve(options: ServeOptions) -> None:
    """Run the daemon in the foreground until told to stop. Raises DaemonRunning."""
    starter = _Starter(options.ready_fd)
    try:
        _serve(options, starter)
    except Exception as exc:
        starter.failed(exc)  # a no-op once it was told "ready"
        raise


def _serve(options: ServeOptions, starter: _Starter) -> None:
    config = HiveConfig.load(root=options.root)
    lock = DaemonLock(config.root)
    try:
        private_dir(config.root)
        acquired = lock.acquire()
    except OSError as exc:  # a root it may not write: say why, as the Hive would
        raise refused(Path(exc.filename or config.root), exc) from exc
    if not acquired:
        raise DaemonRunning(config.root, lock.holder())
    path = socket_path(config.root, options.socket)
    listeners: list[socket.socket] = []
    try:
        configure_daemon_logging(config.root / LOG_NAME)
        # Sockets before the Hive: binding changes the umask, which threads must not see.
        listeners.append(_unix_listener(path))
        token = None
        if options.tcp is not None:
            listeners.append(socket.create_server(parse_tcp(options.tcp), backlog=128))
            token = _token(config.root, options.token)
        hive = Hive(root=config.root, shutdown="leave" if options.leave_running else None)
        try:
            asyncio.run(_run(hive, listeners, token, starter, path))
        finally:
            log.info("daemon stopping; terminating running sessions")
            hive.close()
    except Exception as exc:
        log.error("daemon failed", error=str(exc), error_type=type(exc).__name__)
        raise
    finally:
        for listener in listeners:
            listener.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        lock.release()
        log.info("daemon stopped")


class _Listener(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the daemon handles SIGTERM/SIGINT once, for all its listeners


async def _run(
    hive: Hive,
    listeners: list[socket.socket],
    token: str | None,
    starter: _Starter,
    path: Path,
) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    servers: list[_Listener] = []

    def stop() -> None:
        stopping.set()
        for server in servers:
            server.should_exit = True

    def stop_from_thread() -> None:
        loop.call_soon_threadsafe(stop)

    app = create_app(hive, stop_from_thread, stopping)
    apps: list[Any] = [app] if token is None else [app, BearerAuth(app, token)]
    for listener_app in apps:
        config = uvicorn.Config(
            listener_app,
            lifespan="off",
            log_config=None,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
        )
        servers.append(_Listener(config))
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
    tasks = [
        asyncio.create_task(server.serve(sockets=[listener]))
        for server, listener in zip(servers, listeners, strict=True)
    ]
    # What exists now (modules, the app, the recovered sessions) mostly lives as long as
    # the daemon: kept out of the collector's sight, a full collection walks only what
    # came after (the imports alone are ~56,000 objects, ~25 ms of every thread stopped;
    # create p99 with 16 clients ~210 -> ~135 ms). The price: cycles among these objects
    # are never collected, a bounded once-only cost (the recovered sessions' actors).
    gc.collect()
    gc.freeze()
    log.info(
        "daemon ready",
        pid=os.getpid(),
        root=str(hive.root),
        socket=str(path),
        tcp=[_address(sock) for sock in listeners[1:]],
    )
    starter.ready(" ".join(_address(sock) for sock in listeners[1:]))  # it may go on now
    await asyncio.gather(*tasks)


def _address(listener: socket.socket) -> str:
    host, port = listener.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class BearerAuth:
    """ASGI middleware for the TCP listener: no valid token, no access (401, nothing done)."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and not is_public(
            scope.get("method"), scope["path"]
        ):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                body = json.dumps(
                    {"error": "unauthorized", "message": "missing or wrong bearer token"}
                ).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"www-authenticate", b"Bearer"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def _unix_listener(path: Path) -> socket.socket:
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise InvalidConfig(
            f"socket path {path} is longer than {MAX_SOCKET_PATH} bytes; pass a shorter --socket"
        )
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a stale socket: we hold the root's lock, so no daemon owns it
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o177)  # created owner-only: no moment where others may connect
    try:
        listener.bind(str(path))
    finally:
        os.umask(previous)
    listener.listen(128)
    return listener


def _token(root: Path, given: str | None) -> str:
    """The TCP bearer token: given, or $HIVE_TOKEN, or ``<root>/token`` (made owner-only)."""
    token = given or os.environ.get("HIVE_TOKEN")
    if token:
        return token
    path = root / TOKEN_NAME
    try:
        fd = open_private(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        return path.read_text().strip()
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    log.info("generated a bearer token for TCP", file=str(path))
    return token
