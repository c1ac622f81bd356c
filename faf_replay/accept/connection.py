"""What the replay protocols use of the connection under them.

Twisted types a protocol's ``transport`` as ``ITransport | None``: set once
the connection is made, and only ``write``, ``loseConnection`` and the
addresses. Our protocols use more of it: flow control (``pauseProducing``,
``registerProducer``), ``abortConnection``, whether it is closing. Every
connection they are given offers all of that: a TCP socket, a connection
behind a PROXY header (``proxy_protocol.ProxiedConnection``), a WebSocket's
messages (``websocket.MessageTransport``). :class:`Connection` names that
surface and :class:`ConnectionProtocol` is the one place that takes a
transport for one, when the connection is made.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, cast

from twisted.internet.interfaces import IAddress, ITransport
from twisted.internet.protocol import Protocol as TwistedProtocol


class Connection(Protocol):
    """A stream connection: a transport, a consumer and a push producer."""

    @property
    def disconnecting(self) -> bool: ...

    def write(self, data: bytes) -> None: ...

    def writeSequence(self, data: Iterable[bytes]) -> None: ...

    def loseConnection(self) -> None: ...

    def abortConnection(self) -> None: ...

    def getPeer(self) -> IAddress: ...

    def getHost(self) -> IAddress: ...

    def getHandle(self) -> Any:
        """The socket underneath (``ISystemHandle``), for what the kernel knows of it."""
        ...

    def registerProducer(self, producer: Any, streaming: bool) -> None: ...

    def unregisterProducer(self) -> None: ...

    def pauseProducing(self) -> None: ...

    def resumeProducing(self) -> None: ...

    def stopProducing(self) -> None: ...


def connection_of(transport: ITransport | None) -> Connection:
    """``transport`` as the :class:`Connection` it is (see the module)."""
    if transport is None:
        raise RuntimeError("the protocol is not connected yet")
    # ITransport is what Twisted promises; the transports we are given
    # (tcp.Server, ProxiedConnection, MessageTransport) are all a Connection.
    return cast(Connection, transport)


class ConnectionProtocol(TwistedProtocol):
    """A protocol that uses its transport as a :class:`Connection`."""

    connection: Connection

    def makeConnection(self, transport: ITransport) -> None:
        self.connection = connection_of(transport)
        super().makeConnection(transport)
