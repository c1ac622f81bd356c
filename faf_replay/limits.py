"""How many connections the server holds, in all and per address.

The factory asks :class:`ConnectionLimits` before it builds a protocol and
tells it when a connection ends; a refused connection is closed before it can
send a byte. Pure bookkeeping, no Twisted.
"""

from __future__ import annotations

#: Descriptors kept for everything but connections and spool files: listening
#: sockets, the log, vault files being written, database connections, pipes.
RESERVED_FILES = 100


def connections_that_fit(open_files: int, spool_files: int) -> int:
    """How many connections the open-file limit leaves room for."""
    return max(1, open_files - spool_files - RESERVED_FILES)


class ConnectionLimits:
    __slots__ = ("_by_address", "open", "per_address", "total")

    def __init__(self, per_address: int, total: int) -> None:
        self.per_address = per_address
        self.total = total
        self.open = 0
        self._by_address: dict[str, int] = {}

    def admit(self, address: str) -> str | None:
        """Count one more connection from ``address``, or say why not."""
        if self.open >= self.total:
            return "too many connections"
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
