"""How an upload is read once its trickle begins: at its game's tick.

FA writes its replay ten times a second in small pieces; the game merges once
a tick. Reading each piece as it comes costs a wake-up of the reactor per
piece. Once its replay header is in, an upload holds its reading after a
small read and the game's tick reads what gathered meanwhile; a big read (an
uploader catching up) is a burst, read as it comes. How an upload holds and
reads is chosen once per connection (:func:`reads_for`):

- :class:`SocketReads`, a plain socket: the upload takes it out of the
  reactor's reading set and the tick reads it directly (``doRead``, one
  ``recv`` that returns what gathered since the last tick), so a trickling
  upload costs one system call a tick and nothing in between. The reactor
  still does everything else: writes, and closing. What a read at the tick
  finds (the peer's FIN, a reset, the kernel's keepalive verdict) is handed to
  the socket's ``connectionLost`` with the same reason the reactor would have
  given, so the protocol cannot tell the difference.
- :class:`PausingReads`, any other connection (a WebSocket's messages, a test's
  transport): it pauses after a small read and resumes at the tick.

A connection that knows better says so itself (:class:`ChoosesItsReads`): one
behind a PROXY header is read as the socket under it, a WebSocket pauses but
measures its reads in socket bytes, not in frames.

``doRead``, ``startReading``, ``stopReading`` and ``connectionLost`` are
Twisted's public descriptor methods (``IReadDescriptor``, ``FileDescriptor``);
this module is the one that uses them, and ``tests/unit/replay/test_tick_reads.py``
reads a real TCP socket this way, so a Twisted that changed them would turn it
red.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from twisted.logger import Logger
from twisted.python.failure import Failure

from faf_replay.accept.connection import Connection

log = Logger()

#: A read at least this big is a burst, not FA's trickle: keep reading at once.
BURST = 16 * 1024

#: The most reads a drain makes: what one tick can gather, and then some.
DRAIN_READS = 64


class TickReads(Protocol):
    """What an upload does with its reading; see the module."""

    def trickled(self, data: bytes) -> bool:
        """``data`` just came: True when it was a trickle and reading is now held
        until the next tick (the caller asks the game for it)."""
        ...

    def at_tick(self) -> bool:
        """The tick: read what gathered. True when the upload should be woken
        at the next tick again."""
        ...

    def drain(self) -> None:
        """Read now whatever waits (the write phase is ending)."""
        ...


@runtime_checkable
class ReadableSocket(Protocol):
    """A socket the reactor reads (Twisted's ``tcp.Connection``)."""

    disconnecting: bool

    def doRead(self) -> object: ...

    def startReading(self) -> None: ...

    def stopReading(self) -> None: ...

    def connectionLost(self, reason: Failure) -> None: ...


class Counted(Protocol):
    """What counts an upload's bytes (its ``UploadStream``)."""

    @property
    def received(self) -> int: ...


@runtime_checkable
class ChoosesItsReads(Protocol):
    """A connection that says how its upload is best read."""

    def tick_reads(self, counted: Counted) -> TickReads: ...


def reads_for(connection: Connection, counted: Counted) -> TickReads:
    """How to read an upload on ``connection``; ``counted.received`` is its bytes so far."""
    if isinstance(connection, ChoosesItsReads):
        return connection.tick_reads(counted)
    if isinstance(connection, ReadableSocket):
        return SocketReads(connection, counted)
    return PausingReads(connection)


def read_now(socket: ReadableSocket) -> bool:
    """Read what waits in ``socket``, as the reactor would: its protocol gets
    the bytes. False when the read found the connection's end, which is then
    handed to ``connectionLost`` as the reactor would have done."""
    try:
        why = socket.doRead()
    except Exception as error:  # what the reactor logs and closes on, too
        log.failure("reading an upload at its tick failed")
        why = error
    if why is None:
        return True
    socket.connectionLost(why if isinstance(why, Failure) else Failure(why))
    return False


class SocketReads:
    """A plain socket, read by the tick itself (see the module)."""

    def __init__(self, socket: ReadableSocket, counted: Counted) -> None:
        self._socket = socket
        self._counted = counted
        self._held = False

    def trickled(self, data: bytes) -> bool:
        if self._held or len(data) >= BURST:
            return False
        self._held = True
        self._socket.stopReading()  # nothing to do if the tick read this
        return True

    def at_tick(self) -> bool:
        if not self._held:
            return False
        self._held = False
        socket = self._socket
        if socket.disconnecting:
            return False
        counted = self._counted
        before = counted.received
        if not read_now(socket) or self._held or socket.disconnecting:
            return False  # it ended, or it brought a trickle and is held again
        if counted.received == before:
            self._held = True  # nothing came: look again at the next tick
            return True
        socket.startReading()  # a burst: read it as it comes until it slows down
        return False

    def drain(self) -> None:
        drain(self._socket, self._counted)


class PausingReads:
    """A connection that pauses after a trickle and resumes at the tick.

    ``size`` says how big the read was that brought some bytes (by default
    their length); ``socket``, when there is one underneath, is read directly
    by :meth:`drain`."""

    def __init__(
        self,
        connection: Connection,
        size: Callable[[bytes], int] = len,
        socket: ReadableSocket | None = None,
        counted: Counted | None = None,
    ) -> None:
        self._connection = connection
        self._size = size
        self._socket = socket
        self._counted = counted
        self._held = False

    def trickled(self, data: bytes) -> bool:
        if self._held or self._size(data) >= BURST:
            return False
        self._held = True
        self._connection.pauseProducing()
        return True

    def at_tick(self) -> bool:
        if not self._held:
            return False
        self._held = False
        if not self._connection.disconnecting:
            self._connection.resumeProducing()
        return False

    def drain(self) -> None:
        if self._socket is not None and self._counted is not None:
            drain(self._socket, self._counted)


def drain(socket: ReadableSocket, counted: Counted) -> None:
    """Read ``socket`` until it has nothing more for now, or ends (handed on)."""
    for _ in range(DRAIN_READS):
        if socket.disconnecting:
            return
        before = counted.received
        if not read_now(socket) or counted.received == before:
            return
