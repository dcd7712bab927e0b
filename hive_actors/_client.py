"""The daemon's HTTP client, as ``hivectl`` uses it: Unix socket by default, TCP with a
bearer token when given a URL; starts a daemon for the root when none runs (as tmux does).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import connect_sse

from hive_actors._lockfile import DaemonLock
from hive_actors._paths import LOG_NAME, socket_path
from hive_actors.errors import InvalidInput

DAEMON_START_TIMEOUT = 30.0


class DaemonUnreachable(Exception):
    """No daemon answers at the socket or URL."""


class ApiError(Exception):
    """The daemon answered with an error status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        super().__init__(message)


class Client:
    def __init__(
        self,
        root: Path,
        socket: Path | None = None,
        url: str | None = None,
        token: str | None = None,
    ) -> None:
        self.root = root
        self.url = url
        self.socket = socket_path(root, socket)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if url is not None:
            self._http = httpx.Client(base_url=url, headers=headers, timeout=60)
        else:
            transport = httpx.HTTPTransport(uds=str(self.socket))
            self._http = httpx.Client(transport=transport, base_url="http://hive", timeout=60)

    def close(self) -> None:
        self._http.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        timeout: float = 60,
    ) -> Any:
        """One request; returns the decoded JSON. Raises DaemonUnreachable or ApiError."""
        try:
            response = self._http.request(method, path, json=body, params=params, timeout=timeout)
        except httpx.TransportError as exc:
            raise DaemonUnreachable(self._where(exc)) from None
        except UnicodeEncodeError:  # argv bytes that are not UTF-8 (surrogate-escaped)
            raise InvalidInput(
                "an argument holds bytes that are not valid UTF-8; only UTF-8 text is accepted"
            ) from None
        return _decode(response)

    def events(
        self, session_id: str | None, since: int | None, follow: bool
    ) -> Iterator[dict[str, Any]]:
        params: dict[str, Any] = {"follow": follow}
        if session_id is not None:
            params["session_id"] = session_id
        if since is not None:
            params["since"] = since
        try:
            with connect_sse(self._http, "GET", "/events", params=params, timeout=None) as source:
                if source.response.status_code >= 400:
                    source.response.read()
                    _decode(source.response)
                for message in source.iter_sse():
                    yield json.loads(message.data)
        except httpx.TransportError as exc:
            raise DaemonUnreachable(self._where(exc)) from None

    def log_stream(self, session_id: str, offset: int = 0) -> Iterator[bytes]:
        path = f"/sessions/{session_id}/log/stream"
        try:
            with self._http.stream("GET", path, params={"offset": offset}, timeout=None) as reply:
                if reply.status_code >= 400:
                    reply.read()
                    _decode(reply)
                yield from reply.iter_bytes()
        except httpx.TransportError as exc:
            raise DaemonUnreachable(self._where(exc)) from None

    def ensure_daemon(self) -> int | None:
        """Start a daemon for the root if none answers; its pid, or None if one was running."""
        try:
            self.call("GET", "/health", timeout=10)
        except DaemonUnreachable:
            if self.url is not None:
                raise
        else:
            return None
        return self._start_daemon()

    def _start_daemon(self) -> int | None:
        read_end, write_end = os.pipe()
        command = [sys.executable, "-m", "hive_actors", "serve", "--root", str(self.root)]
        command += ["--socket", str(self.socket), "--ready-fd", str(write_end)]
        daemon = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(write_end,),
            start_new_session=True,  # it outlives this command, like a tmux server
        )
        os.close(write_end)
        try:
            ready, _, _ = select.select([read_end], [], [], DAEMON_START_TIMEOUT)
            said = os.read(read_end, select.PIPE_BUF) if ready else b""
        finally:
            os.close(read_end)
        if said.startswith(b"ready"):
            return daemon.pid
        if ready:  # it answered otherwise, or closed the pipe: it is on its way out
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.wait(DAEMON_START_TIMEOUT)  # no zombie left to whoever runs us
        # It exited without serving: often another hivectl started one at the same moment
        # (ours then says that one serves the root, and that one holds the root's lock).
        if DaemonLock(self.root).held():
            self._wait_healthy(time.monotonic() + DAEMON_START_TIMEOUT)
            return None
        if said.startswith(b"error "):  # it could not start, and says why
            why = said.removeprefix(b"error ").decode(errors="replace").strip()
            raise DaemonUnreachable(f"could not start a daemon for {self.root}: {why}")
        raise DaemonUnreachable(
            f"could not start a daemon for {self.root}; see {self.root / LOG_NAME}"
        )

    def _wait_healthy(self, deadline: float) -> None:
        """Wait for a daemon another process is starting; it signals us nothing, so retry."""
        while True:
            try:
                self.call("GET", "/health", timeout=max(0.1, deadline - time.monotonic()))
            except DaemonUnreachable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
            else:
                return

    def _where(self, exc: Exception) -> str:
        target = self.url or f"socket {self.socket}"
        return f"no hive daemon answers at {target} ({exc.__class__.__name__})"


def _decode(response: httpx.Response) -> Any:
    try:
        data = response.json()
    except ValueError:
        data = {"message": response.text}
    if response.status_code >= 400:
        if not isinstance(data, dict):
            data = {"message": str(data)}
        raise ApiError(
            response.status_code,
            str(data.get("error", "error")),
            str(data.get("message", response.reason_phrase)),
        )
    return data
