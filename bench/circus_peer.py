"""circus, the peer: circusd in its own process, driven through its own Python client.

Configured as fairly as it allows: exits polled every 10 ms (``check_delay`` 0.01; its
default is 5 s), one watcher per session with ``respawn`` off and ``max_retry`` 1 (0
prevents the start), no multicast discovery, no stats, ipc endpoints only. circus rejects a
command while another exclusive one runs ("arbiter is already running ..."); callers retry
those, as a user of it has to.

Install it only for the benchmark: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq
from circus.client import CircusClient

BUSY = "already running"
BUSY_BACKOFF = 0.002
PR_SET_PDEATHSIG = 1
STARTUP_SECONDS = 30.0


class Circus:
    """A running circusd over ``root``, with a subscriber on its event stream."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.endpoint = f"ipc://{root}/control.sock"
        self.pubsub = f"ipc://{root}/events.sock"
        config = root / "circus.ini"
        config.write_text(
            "[circus]\n"
            f"endpoint = {self.endpoint}\n"
            f"pubsub_endpoint = {self.pubsub}\n"
            "multicast_endpoint =\n"
            "check_delay = 0.01\n"
            "statsd = False\n"
        )
        daemon = Path(sys.executable).with_name("circusd")
        self.process = subprocess.Popen(
            [str(daemon), "--log-level", "error", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # a bench killed mid-run leaves no circusd behind
        )
        self._handlers: list[Callable[[str, str], None]] = []
        self._stopping = threading.Event()
        self._subscribed = threading.Event()
        self._listener = threading.Thread(target=self._listen, name="circus-events", daemon=True)
        self._listener.start()
        self._wait_ready()

    # -- control --------------------------------------------------------------------------

    def client(self) -> CircusClient:
        """One client per thread: a zmq socket belongs to the thread that uses it."""
        return CircusClient(endpoint=self.endpoint, timeout=30.0)

    @staticmethod
    def call(
        client: CircusClient, command: str, deadline: float = math.inf, **properties: Any
    ) -> dict[str, Any]:
        """Send ``command``, retrying while circus says it is busy with another one, until
        ``deadline`` (``time.perf_counter()``); TimeoutError past it."""
        while True:
            answer: dict[str, Any] = client.call({"command": command, "properties": properties})
            if answer.get("status") == "ok":
                return answer
            if BUSY not in str(answer.get("reason", "")):
                raise RuntimeError(f"circus {command}: {answer.get('reason')}")
            if time.perf_counter() > deadline:
                raise TimeoutError(f"circus {command}: still busy at the deadline")
            time.sleep(BUSY_BACKOFF)  # not to hammer the one loop that must get on

    def add(
        self,
        client: CircusClient,
        name: str,
        argv: list[str],
        work: Path,
        log: Path,
        deadline: float = math.inf,
    ) -> None:
        """Add a watcher for ``argv`` and start it (busy retries end at ``deadline``, as
        in ``call``)."""
        stream = {"class": "FileStream", "filename": str(log)}
        self.call(
            client,
            "add",
            deadline,
            name=name,
            cmd=argv[0],
            args=argv[1:],
            options={
                "working_dir": str(work),
                "respawn": False,
                "max_retry": 1,
                "close_child_stdin": True,
                "stdout_stream": stream,
                "stderr_stream": stream,
            },
        )
        # Started apart from the add: a start refused as busy would leave the watcher
        # added, and a retried add would then fail as a duplicate.
        self.call(client, "start", deadline, name=name, waiting=True)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/task"))

    # -- events ---------------------------------------------------------------------------

    def on_event(self, handler: Callable[[str, str], None]) -> None:
        """Call ``handler(watcher, event)`` for every watcher event ("spawn", "reap", ...)."""
        self._handlers.append(handler)

    def _listen(self) -> None:
        socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.SUB)
        socket.setsockopt(zmq.LINGER, 0)
        # No high-water mark on our side: zmq's own thread queues what this one has not
        # read yet, instead of dropping it (the default drops past 1,000 messages).
        socket.setsockopt(zmq.RCVHWM, 0)
        socket.setsockopt(zmq.SUBSCRIBE, b"watcher.")
        socket.connect(self.pubsub)
        self._subscribed.set()
        poller = zmq.Poller()
        poller.register(socket, zmq.POLLIN)
        try:
            while not self._stopping.is_set():
                if not poller.poll(100):
                    continue
                topic, _body = socket.recv_multipart()
                _, name, event = topic.decode().split(".", 2)
                for handler in self._handlers:
                    handler(name, event)
        finally:
            socket.close()

    # -- life -----------------------------------------------------------------------------

    def _wait_ready(self) -> None:
        """Until circusd answers and our subscriber hears it: a zmq subscription that is
        not yet joined drops what is published meanwhile."""
        client = self.client()
        deadline = time.monotonic() + STARTUP_SECONDS
        heard = threading.Event()
        self.on_event(lambda name, _event: heard.set() if name == "probe" else None)
        try:
            while not heard.is_set():
                try:
                    self.call(client, "add", name="probe", cmd="true")
                    self.call(client, "rm", name="probe", waiting=True)
                except Exception as error:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        self.close()
                        raise RuntimeError(f"circusd did not answer: {error}") from error
                heard.wait(0.05)
        finally:
            client.stop()
        self._handlers.clear()

    def close(self) -> None:
        self._stopping.set()
        if self.process.poll() is None:
            client = self.client()
            try:
                client.call({"command": "quit", "properties": {"waiting": True}})
            except Exception:  # noqa: BLE001 -- it may go before it answers; the kill follows
                pass
            finally:
                client.stop()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._listener.join()

    def __enter__(self) -> Circus:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def describe() -> dict[str, Any]:
    import circus

    return {"peer": "circus", "version": circus.__version__, "zmq": zmq.zmq_version()}


if __name__ == "__main__":
    print(json.dumps(describe()))
