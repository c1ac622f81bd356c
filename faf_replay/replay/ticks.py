"""How far a game has got, in ticks: the ``Advance`` commands of its body, counted as it grows.

A replay body is a run of commands: a type byte, a little-endian ``u16`` size that counts
the three bytes of the command's own header, then its payload. Type 0 is ``Advance``; its
payload is a ``u32`` of ticks (ten a second). :class:`TickCounter` is fed the body in pieces
of any size, in order, and keeps what it has not yet seen whole. No Twisted here.
"""

from __future__ import annotations

ADVANCE = 0


class TickCounter:
    __slots__ = ("_pending", "_stopped", "fed", "ticks")

    def __init__(self) -> None:
        #: Ticks of the whole commands seen so far.
        self.ticks = 0
        #: Body bytes fed so far.
        self.fed = 0
        self._pending = b""
        #: A size under three bytes was met: what follows is no command stream to count.
        self._stopped = False

    def feed(self, data: bytes) -> int:
        """Take the next ``data`` of the body; the ticks so far."""
        self.fed += len(data)
        if self._stopped:
            return self.ticks
        buffer = self._pending + data if self._pending else data
        position, end = 0, len(buffer)
        while position + 3 <= end:
            size = buffer[position + 1] | buffer[position + 2] << 8
            if size < 3:  # not a command: count no further, in this piece or any later
                self._pending, self._stopped = b"", True
                return self.ticks
            if position + size > end:
                break
            if buffer[position] == ADVANCE and size >= 7:
                self.ticks += int.from_bytes(buffer[position + 3 : position + 7], "little")
            position += size
        self._pending = bytes(buffer[position:])
        return self.ticks
