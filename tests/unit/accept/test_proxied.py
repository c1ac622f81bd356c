"""Behind a proxy: PROXY protocol headers, X-Forwarded-For, and limits on the real client.

FAF's Traefik forwards every TCP connection from its own address (no PROXY
protocol) and names WebSocket clients in X-Forwarded-For; the defaults must
hold its peak from that one address, and a PROXY header or a trusted proxy's
headers must put the real client into logs and limits.
"""

from __future__ import annotations

import ipaddress
import struct

import fafreplay
from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from faf_replay.accept.client_address import (
    TrustedProxies,
)
from faf_replay.accept.proxied import HEADER_TIMEOUT, ProxiedConnection, ProxyProtocolFactory
from faf_replay.accept.proxy_header import V2_SIGNATURE, ProxiedClient, ProxyHeaderParser
from faf_replay.accept.replay_protocol import ReplayProtocol
from faf_replay.save.vault import vault_path
from tests.support.clients import Uploader, WebSocketClient, connect, start_server, until
from tests.support.logs import CapturedLogs
from tests.support.metrics import metric
from tests.support.recordings import recording
from tests.unit.accept.test_replay_protocol import ProtocolTestCase


def proxy_v1(host: str, port: int) -> bytes:
    family, destination = ("TCP6", "::1") if ":" in host else ("TCP4", "127.0.0.1")
    return f"PROXY {family} {host} {destination} {port} 15000\r\n".encode()


def proxy_v2(host: str, port: int, command: int = 1, tlvs: bytes = b"") -> bytes:
    source = ipaddress.ip_address(host)
    if source.version == 4:
        family, destination = 0x11, ipaddress.ip_address("127.0.0.1")
    else:
        family, destination = 0x21, ipaddress.ip_address("::1")
    body = source.packed + destination.packed + struct.pack("!HH", port, 15000) + tlvs
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


def parse_whole(data: bytes) -> tuple[ProxiedClient, bytes]:
    parsed = ProxyHeaderParser().feed(data)
    assert parsed is not None
    return parsed


class Wrapper(ProtocolTestCase):
    """The PROXY wrapper before a ReplayFactory, byte by byte."""

    def setUp(self):
        super().setUp()
        self.proxy_factory = ProxyProtocolFactory(self.factory, TrustedProxies.parse("private"), self.clock)

    def open(self, host: str = "10.0.0.5") -> tuple[ProxiedConnection | None, StringTransport]:
        address = IPv4Address("TCP", host, 50000)
        connection = self.proxy_factory.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        if connection is not None:
            connection.makeConnection(transport)
        return connection, transport

    def test_the_replay_protocol_is_built_for_the_client(self):
        connection, transport = self.open()
        self.assertIsNone(connection.wrapped)  # nothing before the header
        connection.dataReceived(proxy_v2("203.0.113.7", 40001)[:10])
        self.assertIsNone(connection.wrapped)
        connection.dataReceived(proxy_v2("203.0.113.7", 40001)[10:] + b"G/5/w")
        self.assertIsInstance(connection.wrapped, ReplayProtocol)
        self.assertEqual(connection.wrapped.peer, "203.0.113.7:40001")
        self.assertEqual(self.factory.limits.from_address("203.0.113.7"), 1)
        self.assertEqual(self.factory.limits.from_address("10.0.0.5"), 0)
        connection.dataReceived(b"\0")  # the watcher's header, whole: no such game
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(self.logs.matching("from 203.0.113.7:40001: cannot watch game 5")), 1)
        connection.connectionLost(None)
        self.assertEqual(self.factory.limits.open, 0)

    def test_a_proxy_of_ours_checking_on_us(self):
        connection, _ = self.open()
        connection.dataReceived(proxy_v2("203.0.113.7", 1, command=0))
        self.assertEqual(connection.wrapped.peer, "10.0.0.5:50000")

    def test_untrusted_proxy_is_refused_before_a_byte(self):
        before = metric("replayserver_rejected_connections_total", reason="untrusted proxy")
        connection, _ = self.open("203.0.113.9")
        self.assertIsNone(connection)
        self.assertEqual(
            metric("replayserver_rejected_connections_total", reason="untrusted proxy"), before + 1
        )
        self.assertEqual(
            len(self.logs.matching("connection from 203.0.113.9:50000 refused: untrusted proxy")), 1
        )

    def test_bad_missing_and_late_headers(self):
        before = metric("replayserver_rejected_connections_total", reason="bad proxy header")
        connection, transport = self.open()
        connection.dataReceived(b"P/1/x\0")
        self.assertTrue(transport.disconnecting)
        self.assertIsNone(connection.wrapped)
        connection.dataReceived(b"more")  # what was in flight: ignored
        connection.connectionLost(None)
        slow, slow_transport = self.open()
        self.clock.advance(HEADER_TIMEOUT - 0.1)
        self.assertFalse(slow_transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(slow_transport.disconnecting)
        slow.connectionLost(None)
        self.assertEqual(
            metric("replayserver_rejected_connections_total", reason="bad proxy header"), before + 2
        )
        self.assertEqual(len(self.logs.matching("from proxy 10.0.0.5:50000 rejected: no PROXY header")), 2)
        empty = metric("replayserver_served_connections_total", result="Empty connection")
        gone, _ = self.open()
        gone.connectionLost(None)  # a health check: connect and close
        self.assertEqual(
            metric("replayserver_served_connections_total", result="Empty connection"), empty + 1
        )
        self.assertEqual([c._timeout for c in (connection, slow, gone)], [None, None, None])


class Held(Protocol):
    """A connection that sends ``opening`` (a PROXY header, or nothing) and waits."""

    def __init__(self, opening: bytes = b"") -> None:
        self.opening = opening
        self.closed: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.opening)

    def connectionLost(self, reason) -> None:
        self.closed.callback(None)


class ProxiedUploader(Uploader):
    def __init__(self, proxy_header: bytes, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.proxy_header = proxy_header

    def connectionMade(self) -> None:
        self.transport.write(self.proxy_header)
        super().connectionMade()


class OverTcp(TestCase):
    """Real sockets: a PROXY port, and FAF's peak from one address."""

    timeout = 120

    def setUp(self):
        self.logs = CapturedLogs(self)
        self.held: list[Held] = []
        self.addCleanup(self.close_held)

    def close_held(self):
        for connection in self.held:
            if connection.transport is not None and not connection.closed.called:
                connection.transport.abortConnection()
        return until(lambda: all(c.closed.called for c in self.held))

    @inlineCallbacks
    def start(self, proxy: bool, **options):
        port = "haproxy:tcp:0:interface=127.0.0.1" if proxy else "tcp:0:interface=127.0.0.1"
        service, self.port = yield start_server(self, port=port, **options)
        factory = service.listener.factory
        self.limits = (factory.wrapped if proxy else factory).limits
        return service

    @inlineCallbacks
    def hold(self, count: int, opening: bytes = b""):
        for _ in range(count):
            held = Held(opening)
            self.held.append(held)
            yield connect(self.port, held)

    def closed(self) -> int:
        return sum(1 for connection in self.held if connection.closed.called)

    @inlineCallbacks
    def test_v1_and_v2_headers_name_the_uploaders(self):
        service = yield self.start(proxy=True)
        uploaders = [
            ProxiedUploader(proxy_v1("203.0.113.7", 40001), 90, "a.SCFAreplay", recording("example"), [3000]),
            ProxiedUploader(proxy_v2("2001:db8::7", 40002), 90, "b.SCFAreplay", recording("example"), [4100]),
        ]
        for uploader in uploaders:
            yield connect(self.port, uploader)
        yield service.registry.when_done(90)
        with vault_path(service.registry.settings.vault, 90).open("rb") as file:
            self.assertEqual(fafreplay.extract_scfa(file), recording("example"))
        self.assertEqual(len(self.logs.matching("upload 'a.SCFAreplay' from 203.0.113.7:40001 ended")), 1)
        self.assertEqual(len(self.logs.matching("upload 'b.SCFAreplay' from [2001:db8::7]:40002 ended")), 1)

    @inlineCallbacks
    def test_faf_peak_from_one_address_with_the_defaults(self):
        """All TCP from Traefik's one address, no PROXY protocol: nobody is refused."""
        yield self.start(proxy=False)
        yield self.hold(600)
        yield until(lambda: self.limits.open == 600)
        self.assertEqual(self.closed(), 0)

    @inlineCallbacks
    def test_without_trusted_proxies_one_address_is_limited(self):
        """What the defaults held before: the 257th connection from one address is closed."""
        yield self.start(proxy=False, **{"trusted-proxies": "none"})
        yield self.hold(600)
        yield until(lambda: self.closed() == 600 - 256)
        self.assertEqual(self.limits.open, 256)

    @inlineCallbacks
    def test_the_limit_applies_to_the_client_a_proxy_names(self):
        yield self.start(proxy=True)
        yield self.hold(600, proxy_v2("203.0.113.7", 40001))
        yield until(lambda: self.closed() == 600 - 256)
        self.assertEqual(self.limits.open, 256)
        self.assertEqual(
            len(self.logs.matching("from 203.0.113.7:40001 refused: too many connections from")), 1
        )
        yield self.hold(1, proxy_v1("198.51.100.1", 40002))  # another player through the same proxy
        yield until(lambda: self.limits.open == 257)

    @inlineCallbacks
    def test_a_proxy_port_refuses_what_is_not_a_trusted_proxy(self):
        yield self.start(proxy=True, **{"trusted-proxies": "192.0.2.0/24"})
        yield self.hold(1, proxy_v1("203.0.113.7", 40001))
        yield self.held[0].closed
        [line] = self.logs.matching("refused: untrusted proxy")
        self.assertIn("connection from 127.0.0.1:", line)

    @inlineCallbacks
    def test_a_client_without_a_header_on_a_proxy_port(self):
        yield self.start(proxy=True)
        direct = Uploader(91, "a.SCFAreplay", recording("8805603"), [4000])
        yield connect(self.port, direct)
        yield direct.done
        [line] = self.logs.matching("rejected: no PROXY header")
        self.assertIn("no PROXY header: the connection began with b'P/91/a.SCFArepla'", line)


class ForwardedWebSocket(TestCase):
    """X-Forwarded-For and X-Real-IP, believed from trusted proxies only."""

    timeout = 60

    @inlineCallbacks
    def open(self, game_id: int, headers: dict[str, str], opening: bytes = b"", keep_open: bool = False):
        """A WebSocket upload of a real recording with these request headers."""
        uploader = Uploader(game_id, "p.SCFAreplay", recording("8805603"), [4000])
        uploader.keep_open = keep_open
        opened: Deferred = Deferred()
        factory = WebSocketClientFactory(f"ws://127.0.0.1:{self.ws_port}/", headers=headers)

        class Client(WebSocketClient):
            def connectionMade(self):
                self.transport.write(opening)  # a PROXY header, when the port wants one
                super().connectionMade()

        factory.protocol = lambda: Client(uploader, opened)
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", self.ws_port).connect(factory)
        yield opened
        return uploader

    @inlineCallbacks
    def start(self, ws_port: str = "tcp:0:interface=127.0.0.1", **options):
        self.logs = CapturedLogs(self)
        service, _ = yield start_server(self, **{"ws-port": ws_port, **options})
        self.ws_port = (yield service.listening("websocket")).getHost().port
        return service

    @inlineCallbacks
    def upload_line(self, game_id: int):
        """The server's line for the upload's end (it may log it after the client saw the close)."""

        def lines():
            return [
                line
                for line in self.logs.matching(f"game {game_id}: upload 'p.SCFAreplay' from")
                if "ended" in line
            ]

        yield until(lines)
        [line] = lines()
        return line

    @inlineCallbacks
    def test_from_a_trusted_proxy_the_client_it_names(self):
        yield self.start()
        forwarded = {"X-Forwarded-For": "198.51.100.9, 10.0.0.2", "X-Real-IP": "10.0.0.2"}
        yield (yield self.open(92, forwarded)).done
        yield (yield self.open(93, {"X-Real-IP": "2001:db8::9"})).done
        self.assertIn("from 198.51.100.9 ended", (yield self.upload_line(92)))
        self.assertIn("from 2001:db8::9 ended", (yield self.upload_line(93)))

    @inlineCallbacks
    def test_from_anyone_else_the_headers_mean_nothing(self):
        yield self.start(**{"trusted-proxies": "none"})
        yield (yield self.open(94, {"X-Forwarded-For": "198.51.100.9", "X-Real-IP": "198.51.100.9"})).done
        self.assertIn("from 127.0.0.1:", (yield self.upload_line(94)))
        self.assertNotIn("198.51.100.9", (yield self.upload_line(94)))

    @inlineCallbacks
    def test_the_limit_applies_to_the_forwarded_client(self):
        yield self.start(**{"max-connections-per-address": "1"})
        reason = "too many connections from one address"
        before = metric("replayserver_rejected_connections_total", reason=reason)
        first = yield self.open(95, {"X-Forwarded-For": "198.51.100.9"}, keep_open=True)
        yield first.sent_all
        # The same player, one connection too many: closed as it opens.
        yield self.assertFailure(self.open(96, {"X-Forwarded-For": "198.51.100.9"}), ConnectionError)
        self.assertEqual(metric("replayserver_rejected_connections_total", reason=reason), before + 1)
        third = yield self.open(96, {"X-Forwarded-For": "198.51.100.10"})  # another player
        yield third.done
        first.transport.loseConnection()
        yield first.done
        self.assertEqual(metric("replayserver_rejected_connections_total", reason=reason), before + 1)
        self.assertIn("from 198.51.100.10 ended", (yield self.upload_line(96)))

    @inlineCallbacks
    def test_websocket_behind_a_proxy_protocol(self):
        service = yield self.start(ws_port="haproxy:tcp:0:interface=127.0.0.1")
        yield (yield self.open(97, {}, opening=proxy_v2("203.0.113.8", 40007))).done
        yield service.registry.when_done(97)
        self.assertIn("from 203.0.113.8:40007 ended", (yield self.upload_line(97)))
