"""A proxy between test clients and the server that cuts idle connections, as
Cloudflare does to a proxied WebSocket after 100 s without traffic."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Factory, Protocol


class _Half(Protocol):
    """One side of a relayed connection: what it receives goes to the other side."""

    def __init__(self, relay: _Relayed, is_client: bool) -> None:
        self.relay = relay
        self.is_client = is_client

    def connectionMade(self) -> None:
        if self.is_client:
            self.relay.start()

    def dataReceived(self, data: bytes) -> None:
        self.relay.passed(self, data)

    def connectionLost(self, reason: object = None) -> None:
        self.relay.ended(self)


class _Relayed:
    """One client's connection and ours to the server, with the idle timer of both."""

    def __init__(self, edge: IdleCuttingEdge) -> None:
        self.edge = edge
        self.client = _Half(self, is_client=True)
        self.server = _Half(self, is_client=False)
        self.idle: IDelayedCall | None = None
        self.over = False

    def start(self) -> None:
        self.client.transport.pauseProducing()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.edge.target)
        connectProtocol(endpoint, self.server).addCallbacks(self._up, lambda _: self._cut(count=False))
        self._restart_idle()

    def _up(self, _: object) -> None:
        self.client.transport.resumeProducing()

    def passed(self, side: _Half, data: bytes) -> None:
        if self.over:
            return
        self._restart_idle()
        other = self.server if side is self.client else self.client
        other.transport.write(data)

    def _restart_idle(self) -> None:
        if self.idle is not None and self.idle.active():
            self.idle.reset(self.edge.idle)
        else:
            self.idle = reactor.callLater(self.edge.idle, self._cut)

    def _cut(self, count: bool = True) -> None:
        """No byte either way for ``idle`` seconds: both connections dropped, no word said."""
        if self.over:
            return
        if count:
            self.edge.cuts += 1
        self._end(abort=True)

    def ended(self, side: _Half) -> None:
        """One side closed: the other is closed once what it was sent has gone."""
        self._end(abort=False)

    def _end(self, abort: bool) -> None:
        if self.over:
            return
        self.over = True
        if self.idle is not None and self.idle.active():
            self.idle.cancel()
        for side in (self.client, self.server):
            if side.transport is not None:
                if abort:
                    side.transport.abortConnection()
                else:
                    side.transport.loseConnection()


class IdleCuttingEdge(Factory):
    """Listen with ``reactor.listenTCP(0, edge)``; every connection is relayed to
    ``127.0.0.1:<target>`` and dropped after ``idle`` seconds without a byte
    either way (``cuts`` counts those)."""

    def __init__(self, target: int, idle: float) -> None:
        self.target = target
        self.idle = idle
        self.cuts = 0
        self.relayed: list[_Relayed] = []

    def buildProtocol(self, addr: object) -> Protocol:
        relayed = _Relayed(self)
        self.relayed.append(relayed)
        return relayed.client

    def close_all(self) -> None:
        for relayed in self.relayed:
            relayed._end(abort=True)
