"""The WebSocket transport: the same protocol, carried in WebSocket messages.

FAF's client reaches the server through a WebSocket. Every message payload,
binary or text, is appended to one byte stream that carries exactly what a TCP
connection carries (``P/…\\0`` or ``G/…\\0``, then replay bytes); message
boundaries mean nothing. :class:`WebSocketReplayProtocol` (autobahn) hands
that stream to an ordinary :class:`~faf_replay.accept.replay_protocol.ReplayProtocol` through
:class:`MessageTransport`, so uploads and watchers behave the same on both
transports: one behaviour, two transports. Watchers receive binary messages
of at most :data:`MAX_MESSAGE` bytes (the FAF client's reactor-netty closes the
connection on a frame over 64 KiB), flow control goes through to the TCP
socket underneath, and the end is a close frame (1000). Frames are passed on as
they arrive, never assembled into whole messages.

A close with 1000, 1001 or no status code (the FAF client's relay sends none)
is a clean end; a dropped connection is judged like a TCP one
(``keepalive.loss_of``); a broken protocol (its close codes, or a frame
autobahn refuses) is the verdict ``protocol error``, any other code
``error code``. A silent WebSocket is pinged (``websocket_pings.py``), which
keeps it open through Cloudflare's idle cut and finds a peer that vanished
(verdict ``no pong``). With a secret, the handshake must carry a timed HMAC
token (``signed_url.py``) or is refused with 403. Behind trusted proxies the
client is the one their headers name (``client_address.py``): limits and logs
see the player, not the proxy.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IDelayedCall,
    IPushProducer,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from faf_replay import metrics
from faf_replay.accept.client_address import forwarded_client
from faf_replay.accept.connection import connection_of
from faf_replay.accept.keepalive import KnownLoss, acknowledged, unacknowledged
from faf_replay.accept.replay_protocol import ReplayFactory, ReplayProtocol, describe_peer
from faf_replay.accept.signed_url import SignedUrlError, check_signed_url
from faf_replay.accept.websocket_pings import Pings
from faf_replay.replay.tick_reads import Counted, PausingReads, ReadableSocket, TickReads

log = Logger()

#: Seconds a closing peer may go without acknowledging a byte before it is dropped.
CLOSE_PATIENCE = 5.0

#: The most bytes one message we send carries: half of the 65,536-byte frame
#: payload that reactor-netty (the FAF client's WebSocket) accepts by default.
MAX_MESSAGE = 32 * 1024

#: Close codes of a clean end: normal, going away, and none at all (which
#: autobahn reports as None).
CLEAN_CLOSES = frozenset({1000, 1001, None})

#: Close codes that say the WebSocket protocol itself was broken: a bad frame,
#: an unacceptable or inconsistent message, one too big, a missing extension.
PROTOCOL_ERRORS = frozenset({1002, 1003, 1007, 1009, 1010})


@implementer(ITransport, IConsumer, IPushProducer)
class MessageTransport:
    """What a :class:`ReplayProtocol` needs of a transport, over a WebSocket
    (a :class:`~faf_replay.accept.connection.Connection`). Flow control and the
    addresses are the TCP socket's underneath."""

    def __init__(self, websocket: WebSocketReplayProtocol) -> None:
        self._websocket = websocket
        self._socket = connection_of(websocket.transport)
        self.disconnecting = False

    def write(self, data: bytes) -> None:
        # Like a TCP transport, a closing WebSocket drops what is written to it.
        if self.disconnecting or self._websocket.state != WebSocketProtocol.STATE_OPEN:
            return
        send = self._websocket.sendMessage
        if len(data) <= MAX_MESSAGE:
            send(data, isBinary=True)
            return
        for start in range(0, len(data), MAX_MESSAGE):
            send(data[start : start + MAX_MESSAGE], isBinary=True)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        if not self.disconnecting:
            self.disconnecting = True
            self._websocket.close_once_read()

    def abortConnection(self) -> None:
        self.disconnecting = True
        self._websocket.dropConnection(abort=True)

    def getPeer(self) -> IAddress:
        return self._websocket.client

    def getHost(self) -> IAddress:
        return self._socket.getHost()

    def getHandle(self) -> Any:
        """The socket underneath (for what the kernel knows of the connection)."""
        return self._socket.getHandle()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._socket.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._socket.unregisterProducer()

    def pauseProducing(self) -> None:
        self._socket.pauseProducing()

    def resumeProducing(self) -> None:
        self._socket.resumeProducing()

    def stopProducing(self) -> None:
        self._socket.stopProducing()

    def tick_reads(self, counted: Counted) -> TickReads:
        """An upload pauses and resumes; its reads are measured in socket bytes,
        whatever frames they held, and a drain reads the socket itself."""
        websocket = self._websocket
        socket = websocket.transport
        return PausingReads(
            self,
            size=lambda _data: websocket.last_read_size,
            socket=socket if isinstance(socket, ReadableSocket) else None,
            counted=counted,
        )


class WebSocketReplayProtocol(WebSocketServerProtocol):
    """One WebSocket connection, carrying one replay connection.

    Its two deadlines are timed here, on the reactor's clock, not by autobahn
    (whose timers round to whole seconds): the opening handshake's, and the
    close's, which waits as long as the peer goes on reading what our buffers
    still hold (a slow watcher at the end of a long replay) and no longer.
    """

    replay: ReplayProtocol | None = None
    last_read_size = 0
    #: Who the replay connection is from: the TCP peer, or behind trusted
    #: proxies the client their headers name (port unknown: 0).
    client: IAddress
    _deadline: IDelayedCall | None = None
    _acknowledged: int | None = None
    _pings: Pings | None = None
    #: Why we dropped the connection, when we know better than "lost".
    _dropped_because: KnownLoss | None = None

    def connectionMade(self) -> None:
        self.client = connection_of(self.transport).getPeer()
        super().connectionMade()
        clock, timeout = self.factory.clock, self.factory.handshake_timeout
        self._deadline = clock.callLater(timeout, self._no_handshake, timeout)

    def _no_handshake(self, timeout: float) -> None:
        self._deadline = None
        metrics.rejected_connections.labels("websocket handshake timeout").inc()
        log.info(
            "websocket from {peer} closed: no opening handshake within {timeout:g} s",
            peer=describe_peer(self.client),
            timeout=timeout,
        )
        self.dropConnection(abort=True)

    def close_once_read(self) -> None:
        """Send the close frame, and drop the connection only once the peer
        stops acknowledging what we sent without answering it."""
        self._stop_pings()
        self.sendClose(1000)
        self._acknowledged = acknowledged(self.transport)
        self._deadline = self.factory.clock.callLater(CLOSE_PATIENCE, self._close_overdue)

    def _close_overdue(self) -> None:
        self._deadline = None
        if self.state == WebSocketProtocol.STATE_CLOSED:
            return
        now = acknowledged(self.transport)
        if now is not None and now != self._acknowledged:  # still reading: give it more time
            self._acknowledged = now
            self._deadline = self.factory.clock.callLater(CLOSE_PATIENCE, self._close_overdue)
            return
        self.dropConnection(abort=True)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        self._stop_pings()
        super().connectionLost(reason)

    def dataReceived(self, data: bytes) -> None:
        self.last_read_size = len(data)
        if self._pings is not None:
            self._pings.heard()
        super().dataReceived(data)

    # -- pings ------------------------------------------------------------------

    def _start_pings(self) -> None:
        factory = self.factory
        if factory.ping_interval > 0:
            self._pings = Pings(
                factory.clock,
                factory.ping_interval,
                factory.ping_timeout,
                send=self.sendPing,
                unacknowledged=lambda: unacknowledged(self.transport),
                vanished=self._no_pong,
            )
            self._pings.start()

    def _stop_pings(self) -> None:
        if self._pings is not None:
            self._pings.stop()
            self._pings = None

    def onPong(self, payload: bytes) -> None:
        if self._pings is not None:
            self._pings.pong(payload)

    def onCloseFrame(self, code: int, reasonRaw: bytes) -> bool | None:
        self._stop_pings()  # the connection is ending: what it owes us now is its close
        return super().onCloseFrame(code, reasonRaw)

    def _no_pong(self) -> None:
        self._pings = None
        if self.state != WebSocketProtocol.STATE_OPEN:
            return
        self._dropped_because = KnownLoss(
            "no pong",
            f"no answer to a WebSocket ping for {self.factory.ping_timeout:g} s, the peer vanished",
        )
        self.dropConnection(abort=True)

    def onConnect(self, request: Any) -> None:
        self._find_client(request.headers)
        secret = self.factory.hmac_secret
        if secret is None:
            return
        now = self.factory.clock.seconds()
        try:
            check_signed_url(secret, request.path, request.params, now, self.factory.hmac_lifetime)
        except SignedUrlError as error:
            metrics.rejected_connections.labels("bad signed url").inc()
            log.warn("websocket from {peer} refused: {why}", peer=describe_peer(self.client), why=str(error))
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "a valid signed URL is required") from None

    def _find_client(self, headers: dict[str, str]) -> None:
        peer = self.client
        host = forwarded_client(
            str(getattr(peer, "host", "")),
            self.factory.replay_factory.trusted,
            forwarded_for=headers.get("x-forwarded-for"),
            real_ip=headers.get("x-real-ip"),
            connecting_ip=headers.get("cf-connecting-ip"),
        )
        if host != getattr(peer, "host", None):
            self.client = (IPv6Address if ":" in host else IPv4Address)("TCP", host, 0)

    def onOpen(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        replay = self.factory.replay_factory.buildProtocol(self.client)
        if replay is None:  # over the connection limits
            self.dropConnection(abort=True)
            return
        self.replay = replay
        self._start_pings()
        replay.makeConnection(MessageTransport(self))

    # Frames go on as they arrive: nothing is held until a message is whole.
    def onMessageFrameData(self, payload: bytes) -> None:
        if self.replay is not None and payload:
            self.replay.dataReceived(payload)

    def onMessageFrameEnd(self) -> None:
        pass

    def onMessageEnd(self) -> None:
        pass

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        replay, self.replay = self.replay, None
        if replay is not None:
            replay.connectionLost(Failure(self._why_closed(wasClean, code, reason)))

    def _why_closed(self, clean: bool, code: int | None, reason: str | None) -> Exception:
        """What ended the connection, as the replay protocol's ``connectionLost`` hears it."""
        if self._dropped_because is not None:
            return self._dropped_because
        if self.failedByMe:  # autobahn failed the connection: the peer broke the protocol
            return KnownLoss("protocol error", f"WebSocket protocol error: {self.wasNotCleanReason}")
        if clean and code in CLEAN_CLOSES:
            return ConnectionDone(f"closed with {code or 'no status code'}")
        if code == WebSocketProtocol.CLOSE_STATUS_CODE_ABNORMAL_CLOSE:
            return ConnectionLost(reason)  # no close frame: judged as TCP would be
        said = f"WebSocket closed with {code}" + (f": {reason}" if reason else "")
        # Any other code is the peer's own error (1011, a proxy's 1014, an application's 4000).
        return KnownLoss("protocol error" if code in PROTOCOL_ERRORS else "error code", said)


class WebSocketReplayFactory(WebSocketServerFactory):
    protocol = WebSocketReplayProtocol

    def __init__(
        self,
        replay_factory: ReplayFactory,
        clock: IReactorTime,
        *,
        handshake_timeout: float,
        hmac_secret: bytes | None = None,
        hmac_lifetime: float = 3600.0,
        ping_interval: float = 0.0,
        ping_timeout: float = 30.0,
    ) -> None:
        super().__init__()
        self.replay_factory = replay_factory
        self.clock = clock
        self.hmac_secret = hmac_secret
        self.hmac_lifetime = hmac_lifetime
        self.handshake_timeout = handshake_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.setProtocolOptions(
            openHandshakeTimeout=0,  # timed by the protocol itself, see WebSocketReplayProtocol
            closeHandshakeTimeout=0,
            utf8validateIncoming=False,  # text payloads are replay bytes too
            maxFramePayloadSize=0,
            maxMessagePayloadSize=0,
        )
