"""How many connections the server holds, in all and per address.

The factory asks :class:`ConnectionLimits` before it builds a protocol and
tells it when a connection ends; a refused connection is closed before it can
send a byte. Pure bookkeeping, no Twisted.
"""

from __future__ import annotations

from collections.abc import Callable

#: Descriptors kept for everything but connections and spool files: listening
#: sockets, the log, vault files being written, database connections, pipes.
RESERVED_FILES = 100


def connections_that_fit(open_files: int, spool_files: int) -> int:
    """How many connections the open-file limit leaves room for."""
    return max(1, open_files - spool_files - RESERVED_FILES)


class Place:
    """One admitted connection's place: calling it gives the place back, once.

    (A small object rather than a closure: the garbage collector visits every
    object a connection keeps, and a closure is four of them.)
    """

    __slots__ = ("_host", "_limits")

    def __init__(self, limits: ConnectionLimits, host: str) -> None:
        self._limits: ConnectionLimits | None = limits
        self._host = host

    def __call__(self) -> None:
        limits, self._limits = self._limits, None
        if limits is not None:
            limits.release(self._host)


class ConnectionLimits:
    """``unlimited(address)``: addresses the per-address limit does not apply to
    (a trusted proxy's own, which speaks for many clients); they count in all."""

    __slots__ = ("_by_address", "open", "per_address", "total", "unlimited")

    def __init__(
        self, per_address: int, total: int, unlimited: Callable[[str], bool] = lambda address: False
    ) -> None:
        self.per_address = per_address
        self.total = total
        self.unlimited = unlimited
        self.open = 0
        self._by_address: dict[str, int] = {}

    def admit(self, address: str) -> str | None:
        """Count one more connection from ``address``, or say why not."""
        if self.open >= self.total:
            return "too many connections"
        if self.unlimited(address):
            self.open += 1
            return None
        count = self._by_address.get(address, 0)
        if count >= self.per_address:
            return "too many connections from one address"
        self._by_address[address] = count + 1
        self.open += 1
        return None

    def release(self, address: str) -> None:
        count = self._by_address.get(address, 0)
        if count <= 1:
            self._by_address.pop(address, None)
        else:
            self._by_address[address] = count - 1
        self.open = max(0, self.open - 1)

    def from_address(self, address: str) -> int:
        return self._by_address.get(address, 0)
