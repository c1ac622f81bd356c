"""The WebSocket transport, with autobahn's own client against the running server."""

from __future__ import annotations

import socket

from autobahn.twisted.websocket import WebSocketClientFactory, connectWS
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from faf_replay.accept.websocket import MessageTransport
from tests.support.clients import (
    Uploader,
    Watcher,
    WebSocketClient,
    connect,
    connect_websocket,
    start_server,
    until,
)
from tests.support.logs import CapturedLogs
from tests.support.metrics import metric
from tests.support.recordings import recording
from tests.system import test_end_to_end as over_tcp
from tests.system.test_end_to_end import read_saved

WS = {"ws-port": "tcp:0:interface=127.0.0.1"}


class OverWebSocket(over_tcp.OverTCP):
    """The same suites, every client over a WebSocket."""

    @inlineCallbacks
    def start(self, **options):
        service, _ = yield start_server(self, **{**WS, **options})
        port = yield service.listening("websocket")
        return service, port.getHost().port

    def connect(self, port, protocol):
        return connect_websocket(port, protocol)


class EndToEndOverWebSocket(OverWebSocket, over_tcp.EndToEnd):
    pass


class BackpressureOverWebSocket(OverWebSocket, over_tcp.Backpressure):
    pass


class Raw(Protocol):
    """A client that sends what it is told and keeps what it gets."""

    def __init__(self):
        self.received = b""
        self.closed: Deferred = Deferred()

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.closed.callback(self.received)


class WebSocketTransport(TestCase):
    timeout = 60

    @inlineCallbacks
    def start(self, **options):
        self.logs = CapturedLogs(self)
        service, tcp_port = yield start_server(self, **{**WS, **options})
        ws_port = (yield service.listening("websocket")).getHost().port
        return service, tcp_port, ws_port

    @inlineCallbacks
    def test_tcp_and_websocket_mix_in_one_game(self):
        service, tcp, ws = yield self.start()
        stream = recording("example")
        yield connect_websocket(ws, Uploader(40, "ws.SCFAreplay", stream, [700]))
        yield connect(tcp, Uploader(40, "tcp.SCFAreplay", stream, [1100]))
        yield until(lambda: 40 in service.registry.games)
        over_ws, over_tcp = Watcher(40, "ws"), Watcher(40, "tcp")
        yield connect_websocket(ws, over_ws)
        yield connect(tcp, over_tcp)
        self.assertEqual((yield over_ws.done), stream)
        self.assertEqual((yield over_tcp.done), stream)
        yield service.registry.when_done(40)
        self.assertEqual(read_saved(service.registry.settings.vault, 40)[1], stream)

    @inlineCallbacks
    def test_message_boundaries_text_frames_and_pings_mean_nothing(self):
        service, _, ws = yield self.start()
        stream = recording("8805603")
        raw = Raw()
        opened: Deferred = Deferred()
        factory = WebSocketClientFactory(f"ws://127.0.0.1:{ws}/41/x.scfareplay")
        client = None

        def build():
            nonlocal client
            client = WebSocketClient(raw, opened)
            return client

        factory.protocol = build
        connectWS(factory)
        yield opened
        client.sendMessage(b"P/4", isBinary=True)
        client.sendPing(b"not data")
        client.sendMessage(b"1/x.SCFAre", isBinary=False)  # text frames count too
        client.sendMessage(b"play\0" + stream[:777], isBinary=True)
        for start in range(777, len(stream), 1000):
            client.sendMessage(stream[start : start + 1000], isBinary=start % 2000 == 777)
            client.sendPing()
        client.sendClose(1000)
        yield service.registry.when_done(41)
        self.assertEqual(read_saved(service.registry.settings.vault, 41)[1], stream)

    @inlineCallbacks
    def test_an_unclean_end_keeps_what_arrived(self):
        service, _, ws = yield self.start()
        stream = recording("example")
        received = metric("replayserver_received_bytes_total")
        uploader = Uploader(42, "a.SCFAreplay", stream[:20000], [5000])
        uploader.keep_open = True
        yield connect_websocket(ws, uploader)
        yield uploader.sent_all
        # Every byte has reached the server before the connection is dropped.
        yield until(lambda: metric("replayserver_received_bytes_total") >= received + 20000)
        uploader.transport.abortConnection()  # no close frame at all
        yield service.registry.when_done(42)
        self.assertEqual(read_saved(service.registry.settings.vault, 42)[1], stream[:20000])

    @inlineCallbacks
    def test_watchers_get_binary_messages_and_a_close_frame(self):
        service, tcp, ws = yield self.start()
        yield connect(tcp, Uploader(43, "a.SCFAreplay", recording("example"), [4000]))
        yield until(lambda: 43 in service.registry.games)
        watcher = Watcher(43)
        opened = connect_websocket(ws, watcher)
        yield opened
        client = watcher.transport._websocket
        self.assertEqual((yield watcher.done), recording("example"))
        self.assertTrue(client.messages)
        self.assertTrue(all(binary for _, binary in client.messages))
        self.assertEqual(client.close_code, 1000)

    @inlineCallbacks
    def test_a_stalled_handshake_blocks_nobody(self):
        service, _, ws = yield self.start(**{"ws-handshake-timeout": "3"})
        stalled = socket.create_connection(("127.0.0.1", ws))
        stalled.sendall(b"GET /1/x HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")  # and nothing more
        self.addCleanup(stalled.close)
        opened_at = reactor.seconds()
        stream = recording("8805603")
        yield connect_websocket(ws, Uploader(44, "a.SCFAreplay", stream, [1000]))
        yield service.registry.when_done(44)
        self.assertEqual(read_saved(service.registry.settings.vault, 44)[1], stream)
        self.assertLess(reactor.seconds() - opened_at, 3)
        stalled.settimeout(0.05)
        self.assertRaises(TimeoutError, stalled.recv, 1000)  # still waiting, harmlessly
        yield deferLater(reactor, 3 - (reactor.seconds() - opened_at) + 0.5, lambda: None)
        try:
            self.assertEqual(stalled.recv(1000), b"")  # closed by the server after its timeout
        except ConnectionResetError:
            pass  # or dropped outright: closed either way


class ClosingWebSocket(TestCase):
    """Writing to a WebSocket that is closing drops the bytes, as TCP does."""

    def test_writes_go_out_only_while_open(self):
        class Socket:
            def __init__(self, state):
                self.state = state
                self.sent = []
                self.transport = StringTransport()

            def sendMessage(self, data, isBinary):
                self.sent.append((data, isBinary))

        for state, sent in [
            (WebSocketProtocol.STATE_OPEN, [(b"bytes", True)]),
            (WebSocketProtocol.STATE_CLOSING, []),
            (WebSocketProtocol.STATE_CLOSED, []),
        ]:
            websocket = Socket(state)
            MessageTransport(websocket).write(b"bytes")
            self.assertEqual(websocket.sent, sent)
