"""Real TCP clients speaking the protocol (docs/protocol.md), and a server started as twistd would."""

from __future__ import annotations

from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from faf_replay.server.services import FafReplayService
from faf_replay.server.tap import Options, makeService

FAST = {
    "http-port": "off",
    "delay": "0.3",
    "sample-interval": "0.05",
    "grace": "0.3",
    "linger": "0.1",
}


@inlineCallbacks
def start_server(test: TestCase, **options: str | None):
    """``None`` as a value makes a flag: ``start_server(test, **{"require-known-game": None})``."""
    """The real service tree on 127.0.0.1, an ephemeral port; stopped after the test."""
    settings = {**FAST, "port": "tcp:0:interface=127.0.0.1", "vault": test.mktemp(), **options}
    argv = [f"--{name}" if value is None else f"--{name}={value}" for name, value in settings.items()]
    config = Options()
    config.parseOptions(argv)
    service: FafReplayService = makeService(config, reactor)
    service.startService()
    test.addCleanup(lambda: service.running and service.stopService())
    port = yield service.listening()
    return service, port.getHost().port


class Uploader(Protocol):
    """Sends ``P/<id>/<name>\\0`` and a stream in pieces, one piece per ``pause``."""

    def __init__(self, game_id: int, name: str, data: bytes, sizes: list[int], pause: float = 0.01):
        self.header = f"P/{game_id}/{name}\0".encode()
        self.data = data
        self.sizes = sizes
        self.pause = pause
        self.position = 0
        self.index = 0
        self.done: Deferred = Deferred()
        self.sent_all: Deferred = Deferred()
        self.keep_open = False

    def connectionMade(self):
        self.transport.write(self.header)
        self._next()

    def _next(self):
        if self.position >= len(self.data):
            if not self.sent_all.called:
                self.sent_all.callback(None)
            if not self.keep_open:
                self.transport.loseConnection()
            return
        size = self.sizes[self.index % len(self.sizes)]
        self.index += 1
        self.transport.write(self.data[self.position : self.position + size])
        self.position += size
        self._call = reactor.callLater(self.pause, self._next)

    def connectionLost(self, reason):
        if getattr(self, "_call", None) is not None and self._call.active():
            self._call.cancel()
        self.done.callback(None)


class Watcher(Protocol):
    """Sends ``G/<id>/<name>\\0`` and collects everything until the server closes."""

    def __init__(self, game_id: int, name: str = "watcher"):
        self.header = f"G/{game_id}/{name}\0".encode()
        self.received = bytearray()
        self.done: Deferred = Deferred()
        self.first_data: Deferred = Deferred()

    def connectionMade(self):
        self.transport.write(self.header)

    def dataReceived(self, data):
        self.received += data
        if not self.first_data.called:
            self.first_data.callback(None)

    def connectionLost(self, reason):
        self.done.callback(bytes(self.received))


@inlineCallbacks
def until(condition, timeout: float = 10.0, step: float = 0.01):
    """Wait on the reactor until ``condition()`` holds (for state another process or
    thread changes); fails after ``timeout`` seconds."""
    waited = 0.0
    while not condition():
        if waited >= timeout:
            raise AssertionError(f"still not true after {timeout} s: {condition}")
        yield deferLater(reactor, step, lambda: None)
        waited += step


def connect(port: int, protocol: Protocol) -> Deferred:
    return connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), protocol)


class _ClientMessageTransport:
    """What the byte-stream test clients need of a transport, over a WebSocket."""

    def __init__(self, websocket: WebSocketClientProtocol) -> None:
        self._websocket = websocket

    def write(self, data: bytes) -> None:
        if self._websocket.state == WebSocketProtocol.STATE_OPEN:  # else dropped, as TCP would
            self._websocket.sendMessage(data, isBinary=True)

    def loseConnection(self) -> None:
        self._websocket.sendClose(1000)

    def abortConnection(self) -> None:
        self._websocket.dropConnection(abort=True)

    def pauseProducing(self) -> None:
        self._websocket.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._websocket.transport.resumeProducing()

    def getPeer(self):
        return self._websocket.transport.getPeer()


class _JavaClientMessageTransport(_ClientMessageTransport):
    def loseConnection(self) -> None:
        # What the FAF client's relay does when FA closes: a close frame with
        # no status code, and the TCP connection closed at once.
        self._websocket.sendClose()
        self._websocket.transport.loseConnection()


class WebSocketClient(WebSocketClientProtocol):
    """Carries a byte-stream client protocol (``Uploader``, ``Watcher``) in WebSocket messages."""

    message_transport: type[_ClientMessageTransport] = _ClientMessageTransport

    def __init__(self, inner: Protocol, opened: Deferred) -> None:
        super().__init__()
        self.inner = inner
        self.opened = opened
        self.messages: list[tuple[bytes, bool]] = []
        self.close_code: int | None = None
        self.was_clean: bool | None = None

    def onOpen(self):
        self.inner.makeConnection(self.message_transport(self))
        self.opened.callback(self.inner)

    def onMessage(self, payload, isBinary):
        self.messages.append((payload, isBinary))
        self.inner.dataReceived(payload)

    def onClose(self, wasClean, code, reason):
        if self.closeHandshakeTimeoutCall is not None:  # autobahn leaves it pending once the TCP is gone
            self.closeHandshakeTimeoutCall.cancel()
            self.closeHandshakeTimeoutCall = None
        self.close_code = code
        self.was_clean = wasClean
        if not self.opened.called:
            self.opened.errback(ConnectionError(f"websocket closed before opening: {code} {reason}"))
            return
        self.inner.connectionLost(None)


def connect_websocket(port: int, protocol: Protocol, path: str = "/", context: Any = None) -> Deferred:
    """Like :func:`connect`, over a WebSocket to ``ws://127.0.0.1:<port><path>``."""
    opened: Deferred = Deferred()
    scheme = "wss" if context is not None else "ws"
    factory = WebSocketClientFactory(f"{scheme}://127.0.0.1:{port}{path}")
    factory.protocol = lambda: WebSocketClient(protocol, opened)  # type: ignore[assignment]
    # The client's own close timeout (autobahn's: 1 s, rounded down to a whole second)
    # would abort an upload whose last messages are still on their way.
    factory.setProtocolOptions(openHandshakeTimeout=10, closeHandshakeTimeout=30)
    connectWS(factory, contextFactory=context)
    return opened


class JavaClient(WebSocketClient):
    """The FAF Java client's relay as the server meets it (reactor-netty's
    defaults): a frame over 65,536 bytes of payload fails the connection
    (1009), a close carries no status code and is followed at once by the end
    of the TCP connection, and pings are answered."""

    message_transport = _JavaClientMessageTransport


def connect_like_java_client(
    port: int, protocol: Protocol, path: str = "/", client: type[WebSocketClient] = JavaClient
) -> Deferred:
    """Like :func:`connect_websocket`, as the FAF Java client connects."""
    opened: Deferred = Deferred()
    factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}{path}")
    factory.protocol = lambda: client(protocol, opened)  # type: ignore[assignment]
    factory.setProtocolOptions(maxFramePayloadSize=65536, openHandshakeTimeout=10, closeHandshakeTimeout=30)
    connectWS(factory)
    return opened
