"""Each session's own block of TCP ports, unique among the live sessions of a Hive.

A session's ports are in its SessionInfo (so in the registry): a restarted Hive knows
which are held by the sessions it re-adopts, and a session that ended holds none. Ports
something on the machine already listens on are skipped (read from /proc/net/tcp and
tcp6: no socket is opened, nothing is sent).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from hive_actors.errors import PortsExhausted

_LISTEN = "0A"
"""A socket's state in /proc/net/tcp: TCP_LISTEN."""


def listening_ports() -> set[int]:
    """Every local TCP port something listens on (IPv4 and IPv6) in our network namespace."""
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as file:
                next(file, None)  # the header
                for line in file:
                    fields = line.split()
                    if len(fields) > 3 and fields[3] == _LISTEN:
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except OSError:  # no IPv6, or no /proc: only the sessions' own ports are known
            continue
    return ports


class PortPool:
    """Hands out blocks of consecutive ports from ``[low, high]``, round the range from
    where the last block ended, so a port just released is the last to be handed again."""

    def __init__(
        self,
        low: int,
        high: int,
        held: Callable[[], Iterable[int]],
        listening: Callable[[], set[int]] = listening_ports,
    ) -> None:
        self._low = low
        self._high = high
        self._held = held
        self._listening = listening
        self._lock = threading.Lock()
        self._reserved: set[int] = set()
        """Handed out to creates not yet recorded in the session table."""
        self._next = low

    def take(self, count: int) -> tuple[int, ...]:
        """Reserve ``count`` consecutive free ports; PortsExhausted if there are none.

        Reserved until ``settle`` (the create recorded them, or failed)."""
        if count == 0:
            return ()
        with self._lock:
            held = set(self._held()) | self._reserved
            busy = held | self._listening()
            size = self._high - self._low + 1
            for offset in range(size):
                start = self._low + (self._next - self._low + offset) % size
                block = range(start, start + count)
                if block.stop - 1 <= self._high and busy.isdisjoint(block):
                    self._reserved.update(block)
                    self._next = block.stop if block.stop <= self._high else self._low
                    return tuple(block)
            in_range = range(self._low, self._high + 1)
            raise PortsExhausted(
                count,
                self._low,
                self._high,
                sum(1 for port in held if port in in_range),
                sum(1 for port in busy - held if port in in_range),
            )

    def settle(self, ports: Iterable[int]) -> None:
        """The create that took ``ports`` is over: the session table holds them now (or
        nothing does, if it failed)."""
        with self._lock:
            self._reserved.difference_update(ports)
