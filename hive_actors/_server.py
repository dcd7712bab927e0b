"""``hivectl serve``: the daemon. One Hive, served over HTTP on a Unix socket (owner-only)
and optionally on TCP behind a bearer token, until SIGTERM, SIGINT or POST /shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import hmac
import json
import os
import secrets
import select
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import uvicorn

from hive_actors._config import HiveConfig
from hive_actors._engine import Engine
from hive_actors._hive import Hive
from hive_actors._http import create_app, is_public
from hive_actors._lockfile import DaemonLock
from hive_actors._logging import configure_daemon_logging
from hive_actors._paths import LOG_NAME, TOKEN_NAME, socket_path
from hive_actors._permissions import open_private, private_dir, refused
from hive_actors.errors import HiveError, InvalidConfig, WorkspaceError

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


class AddressInUse(HiveError):
    """The TCP address given to serve on is taken by another program."""

    def __init__(self, address: str) -> None:
        super().__init__(
            f"--tcp {address}: the address is already in use by another program; "
            "choose another port, or port 0 for any free one"
        )


@dataclass(frozen=True)
class ServeOptions:
    root: Path | None = None
    socket: Path | None = None
    tcp: str | None = None
    token: str | None = None
    ready_fd: int | None = None
    leave_running: bool = False
    ray: str | None = None
    """Serve the sessions of the Ray cluster at this address (a ClusterHive), not a Hive."""
    host_root: Path | None = None
    """With ``ray``: where each host keeps its sessions, ``<host_root>/<host name>``."""


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
    watch: _RootWatch | None = None
    try:
        configure_daemon_logging(config.root / LOG_NAME)
        # Sockets before the Hive: binding changes the umask, which threads must not see.
        listeners.append(_unix_listener(path))
        watch = _RootWatch(config.root, path)
        token = None
        if options.tcp is not None:
            listeners.append(_tcp_listener(options.tcp))
            token = _token(config.root, options.token)
        hive = _engine(options, config)
        try:
            asyncio.run(_run(hive, listeners, token, starter, watch, config))
        finally:
            log.info("daemon stopping; terminating running sessions")
            hive.close()
    except HiveError as exc:
        log.error("daemon failed", error=str(exc), error_type=type(exc).__name__)
        raise
    except Exception:
        log.exception("daemon failed")  # a bug of ours: its traceback goes to daemon.log
        raise
    finally:
        for listener in listeners:
            listener.close()
        if watch is not None and watch.lost is None:  # else it is gone, or not ours
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        lock.release()
        log.info("daemon stopped")


class _Listener(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the daemon handles SIGTERM/SIGINT once, for all its listeners


def _engine(options: ServeOptions, config: HiveConfig) -> Engine:
    """The Hive on the root, or the front end of a Ray cluster (``--ray``)."""
    if options.ray is None:
        return Hive(root=config.root, shutdown="leave" if options.leave_running else None)
    if options.host_root is None:
        raise InvalidConfig("serving a Ray cluster (--ray) needs --host-root DIR")
    from hive_actors.cluster import ClusterHive  # noqa: PLC0415 - needs the ray extra

    # The daemon's HIVE_* settings are the hosts' (their root is each host's own).
    settings = HiveConfig.env_settings(exclude=("root", "shutdown"))
    return ClusterHive(options.ray, host_root=options.host_root, **settings)


async def _run(
    hive: Engine,
    listeners: list[socket.socket],
    token: _Token | None,
    starter: _Starter,
    watch: _RootWatch,
    config: HiveConfig,
) -> None:
    root, watch_interval = config.root, config.maintenance_interval
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
    apps: list[Any] = [app] if token is None else [app, BearerAuth(app, token.value)]
    for listener_app in apps:
        listener_config = uvicorn.Config(
            listener_app,
            lifespan="off",
            log_config=None,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
        )
        servers.append(_Listener(listener_config))
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
    tcp = [_address(sock) for sock in listeners[1:]]
    socket_file = listeners[0].getsockname()
    log.info("daemon ready", pid=os.getpid(), root=str(root), socket=socket_file, tcp=tcp)
    # One line for whoever runs us (a terminal, a process supervisor's log): where to
    # connect, and where the TCP token is, since port 0 and a generated token are known
    # only now.
    said = [f"socket={socket_file}", *(f"tcp={address}" for address in tcp)]
    if token is not None:
        said.append(f"token={token.source}")
    with contextlib.suppress(OSError):  # nobody reads our stdout: nothing to tell
        print("ready " + " ".join(said), flush=True)
    starter.ready(" ".join(tcp))  # it may go on now
    watching = asyncio.create_task(watch.run(watch_interval, stop))
    await asyncio.gather(*tasks)
    watching.cancel()
    if watch.lost is not None:
        raise RootLost(root, watch.lost)


class _RootWatch:
    """Notices the root, or the socket in it, removed or replaced under a running daemon:
    it would serve nothing and be found by no client, so it stops instead."""

    def __init__(self, root: Path, socket_file: Path) -> None:
        self._paths = (root, socket_file)
        self._identities = [self._identity(path) for path in self._paths]
        self.lost: str | None = None

    async def run(self, interval: float, stop: Callable[[], None]) -> None:
        while self.lost is None:
            await asyncio.sleep(interval)
            self.lost = self._check()
        log.error("daemon stopping: " + self.lost, root=str(self._paths[0]))
        stop()

    def _check(self) -> str | None:
        for what, path, identity in zip(
            ("root", "socket"), self._paths, self._identities, strict=True
        ):
            now = self._identity(path)
            if now != identity:
                return f"its {what} {path} was {'removed' if now is None else 'replaced'}"
        return None

    @staticmethod
    def _identity(path: Path) -> tuple[int, int] | None:
        try:
            status = path.stat()
        except OSError:
            return None
        return status.st_dev, status.st_ino


class RootLost(WorkspaceError):
    """The root, or the daemon's socket in it, was removed or replaced while it served."""

    def __init__(self, root: Path, what: str) -> None:
        HiveError.__init__(self, f"the daemon stopped: {what} (start it again to serve there)")
        self.path = root


def _address(listener: socket.socket) -> str:
    host, port = listener.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class BearerAuth:
    """ASGI middleware for the TCP listener: no valid token, no access (401, nothing done)."""

    def __init__(self, app: Any, token: str) -> None:
        if not token:
            raise InvalidConfig("the bearer token is empty; give one, or let serve make one")
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and not is_public(
            scope.get("method"), scope["path"]
        ):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not self._authorized(given):
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

    def _authorized(self, header: bytes) -> bool:
        # RFC 7235: the scheme is case-insensitive, and spaces separate it from the token.
        scheme, _, credentials = header.strip().partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self._token)


def _tcp_listener(address: str) -> socket.socket:
    try:
        return socket.create_server(parse_tcp(address), backlog=128)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise AddressInUse(address) from None
        hint = {
            errno.EACCES: "ports below 1024 need privileges; choose a port from 1024 up",
            errno.EADDRNOTAVAIL: "give an address of this machine, e.g. 127.0.0.1:8765",
        }.get(exc.errno or 0, "give another address, e.g. 127.0.0.1:8765")
        raise InvalidConfig(
            f"--tcp {address}: cannot listen there ({os.strerror(exc.errno or 0)}); {hint}"
        ) from None


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


@dataclass(frozen=True)
class _Token:
    value: str
    source: str
    """Where a user finds it: ``--token``, ``$HIVE_TOKEN`` or the token file's path."""


def _token(root: Path, given: str | None) -> _Token:
    """The TCP bearer token: given, or $HIVE_TOKEN, or ``<root>/token`` (made owner-only)."""
    if given:
        return _Token(given, "--token")
    if os.environ.get("HIVE_TOKEN"):
        return _Token(os.environ["HIVE_TOKEN"], "$HIVE_TOKEN")
    path = root / TOKEN_NAME
    with contextlib.suppress(FileNotFoundError):
        kept = path.read_text().strip()
        if kept:
            return _Token(kept, str(path))
    # Made whole under another name, then renamed: an empty token (a crash between the
    # create and the write) would let in anyone who sends "Bearer" and nothing after it.
    token = secrets.token_urlsafe(32)
    temp = path.with_name(f".{TOKEN_NAME}.tmp")
    with open(temp, "w", opener=open_private) as handle:
        handle.write(token + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    log.info("generated a bearer token for TCP", file=str(path))
    return _Token(token, str(path))
