"""Reading an upload's socket at its game's tick, without the reactor.

FA writes its replay ten times a second in small pieces; the game merges once
a tick. Reading each piece as it comes costs a wake-up of the reactor per
piece; pausing the socket after a read and resuming it at the tick costs two
``epoll_ctl`` calls and a wake-up per upload per tick. A plain socket can do
with less: once its replay header is in, the upload takes its socket out of
the reactor's reading set for good and the game's tick reads it directly
(``doRead``, one ``recv`` that returns what gathered since the last tick), so
a trickling upload costs one system call a tick and nothing in between.

The reactor still does everything else: writes, and closing. What a read at
the tick finds (the peer's FIN, a reset, the kernel's keepalive verdict) is
handed to the transport's ``connectionLost`` with the same reason the reactor
would have given, so the protocol cannot tell the difference. A burst (an
uploader catching up) goes back to the reactor (``startReading``) until it
slows down again. Transports that are not plain sockets (TLS, WebSocket
frames) keep pausing and resuming instead (:func:`readable_at_ticks`).
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

#: What a transport needs to be read at ticks: a socket the reactor reads.
_SOCKET_METHODS = ("doRead", "startReading", "stopReading", "connectionLost", "fileno")


def readable_at_ticks(transport: Any) -> bool:
    """Whether ``transport`` is a socket the upload may read itself (see the module)."""
    return all(callable(getattr(transport, name, None)) for name in _SOCKET_METHODS)


def read_now(transport: Any) -> bool:
    """Read what waits in the socket, as the reactor would: its protocol gets
    the bytes. False when the read found the connection's end, which is then
    handed to ``connectionLost`` as the reactor would have done."""
    try:
        why = transport.doRead()
    except Exception as error:  # what the reactor logs and closes on, too
        log.failure("reading an upload at its tick failed")
        why = error
    if why is None:
        return True
    transport.connectionLost(why if isinstance(why, Failure) else Failure(why))
    return False
