"""PROXY protocol endpoints: ``haproxy:tcp:15000``, with the real client known
before anything else sees the connection.

Twisted's own ``haproxy:`` wrapper builds the wrapped protocol as the
connection is accepted, with the proxy's address, and closes a bad header
without a word. Here the endpoint description is the same (``haproxy:``
followed by any endpoint), but the wrapped factory's ``buildProtocol`` is
called only once the header has named the client, so limits and logs key on
the client from the start; a PROXY header is taken only from a trusted proxy
(``trusted_proxies``); and a bad or missing header is logged and counted.
:class:`ProxiedConnection` then stands between the socket and the protocol
built for the client: it is that protocol's transport, with the client as
its peer, and passes everything else through.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress, IDelayedCall, IProtocol, IReactorTime
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import directlyProvides, providedBy

from faf_replay import metrics
from faf_replay.accept.client_address import TrustedProxies
from faf_replay.accept.connection import ConnectionProtocol
from faf_replay.accept.proxy_header import ProxyHeaderError, ProxyHeaderParser
from faf_replay.accept.replay_protocol import Refusals, describe_peer
from faf_replay.replay.tick_reads import Counted, TickReads, reads_for

log = Logger()

PREFIX = "haproxy:"
#: Seconds a proxy has for its header; it sends it as the connection opens.
HEADER_TIMEOUT = 10.0


def listening_description(description: str) -> tuple[str, bool]:
    """The endpoint to listen on, and whether connections start with a PROXY header."""
    if description.startswith(PREFIX):
        return description[len(PREFIX) :], True
    return description, False


class ProxyProtocolFactory(Factory):
    def __init__(self, wrapped: Factory, trusted: TrustedProxies, clock: IReactorTime) -> None:
        self.wrapped = wrapped
        self.trusted = trusted
        self.clock = clock
        self.refusals = Refusals(clock)

    def logPrefix(self) -> str:
        return f"{self.wrapped.__class__.__name__} (PROXY)"

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        self.wrapped.doStop()

    def buildProtocol(self, addr: IAddress | None) -> ProxiedConnection | None:
        if addr is None or not self.trusted.trusts(str(getattr(addr, "host", ""))):
            self.refusals.refuse("untrusted proxy", addr)
            return None  # only a proxy of ours may say who the client is
        return ProxiedConnection(self, addr)


class ProxiedConnection(ConnectionProtocol):
    """One connection from a proxy: its PROXY header, then the client's protocol."""

    def __init__(self, factory: ProxyProtocolFactory, proxy: IAddress) -> None:
        self.factory = factory
        self.proxy = proxy
        self.client: IAddress = proxy
        self.wrapped: IProtocol | None = None
        self._parser: ProxyHeaderParser | None = ProxyHeaderParser()
        self._timeout: IDelayedCall | None = None

    # -- the socket's side ---------------------------------------------------

    def makeConnection(self, transport: Any) -> None:
        directlyProvides(self, providedBy(transport))  # what the socket is, we are to the protocol
        super().makeConnection(transport)

    def connectionMade(self) -> None:
        self._timeout = self.factory.clock.callLater(HEADER_TIMEOUT, self._timed_out)

    def dataReceived(self, data: bytes) -> None:
        if self.wrapped is not None:
            self.wrapped.dataReceived(data)
            return
        if self._parser is None:
            return  # refused; closing
        try:
            parsed = self._parser.feed(data)
        except ProxyHeaderError as error:
            self._reject("bad proxy header", str(error))
            return
        if parsed is None:
            return
        client, rest = parsed
        self._parser = None
        self._cancel_timeout()
        if client.address is not None:
            host, port = client.address
            self.client = (IPv6Address if ":" in host else IPv4Address)("TCP", host, port)
        wrapped = self.factory.wrapped.buildProtocol(self.client)
        if wrapped is None:
            self.connection.loseConnection()  # refused by the limits (counted and logged there)
            return
        self.wrapped = wrapped
        wrapped.makeConnection(self)
        if rest:
            wrapped.dataReceived(rest)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_timeout()
        wrapped, self.wrapped = self.wrapped, None
        if wrapped is not None:
            wrapped.connectionLost(reason)
        elif self._parser is not None:
            # The proxy closed before its header: a health check, or its client left at once.
            metrics.served[metrics.EMPTY].inc()

    def _timed_out(self) -> None:
        self._timeout = None
        self._reject("bad proxy header", f"no PROXY header within {HEADER_TIMEOUT:g} s")

    def _reject(self, reason: str, detail: str) -> None:
        self._parser = None
        self._cancel_timeout()
        metrics.rejected_connections.labels(reason).inc()
        metrics.served[metrics.BAD_DATA].inc()
        log.warn(
            "connection from proxy {proxy} rejected: {detail}", proxy=describe_peer(self.proxy), detail=detail
        )
        self.connection.loseConnection()

    def _cancel_timeout(self) -> None:
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None

    # -- the client's protocol's side: its transport -------------------------

    def getPeer(self) -> IAddress:
        return self.client

    def write(self, data: bytes) -> None:
        self.connection.write(data)

    def writeSequence(self, data: list[bytes]) -> None:
        self.connection.writeSequence(data)

    def loseConnection(self) -> None:
        self.connection.loseConnection()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.connection.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.connection.unregisterProducer()

    @property
    def disconnecting(self) -> bool:
        return self.connection.disconnecting

    def abortConnection(self) -> None:
        self.connection.abortConnection()

    def getHost(self) -> IAddress:
        return self.connection.getHost()

    def getHandle(self) -> Any:
        return self.connection.getHandle()

    def pauseProducing(self) -> None:
        self.connection.pauseProducing()

    def resumeProducing(self) -> None:
        self.connection.resumeProducing()

    def stopProducing(self) -> None:
        self.connection.stopProducing()

    def tick_reads(self, counted: Counted) -> TickReads:
        """The client's upload is read as the socket under the PROXY header:
        what the socket reads comes through :meth:`dataReceived` all the same."""
        return reads_for(self.connection, counted)
