"""The path most players' uploads and watchers take: the FAF Java client's relay
(reactor-netty) over a WebSocket, through Cloudflare and Traefik.

Real sockets end to end against the real service tree. The client is autobahn
set up as reactor-netty is by default (``tests.support.clients.JavaClient``); the
Cloudflare edge's idle cut is a small relay (``tests.support.edge``); the forwarding
headers are those Cloudflare and FAF's Traefik write.
"""

from __future__ import annotations

import socket

from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from faf_replay.accept.websocket import MAX_MESSAGE
from tests.support.clients import (
    JavaClient,
    Uploader,
    Watcher,
    WebSocketClient,
    connect,
    connect_like_java_client,
    start_server,
    until,
)
from tests.support.edge import IdleCuttingEdge
from tests.support.logs import CapturedLogs
from tests.support.metrics import metric
from tests.support.recordings import recording, split, with_many_mods
from tests.system.test_end_to_end import read_saved

WS = {"ws-port": "tcp:0:interface=127.0.0.1"}


def lost(category: str, verdict: str) -> float:
    return metric("replayserver_lost_connections_total", category=category, verdict=verdict)


class ServerTestCase(TestCase):
    timeout = 60

    @inlineCallbacks
    def start(self, **options):
        self.logs = CapturedLogs(self)
        self.service, self.tcp = yield start_server(self, **{**WS, **options})
        self.ws = (yield self.service.listening("websocket")).getHost().port

    def saved(self, game_id: int) -> bytes:
        return read_saved(self.service.registry.settings.vault, game_id)[1]

    @inlineCallbacks
    def upload_line(self, game_id: int, name: str):
        """The server's line for an upload's end (logged once the server saw it)."""

        def lines():
            return [
                line for line in self.logs.matching(f"game {game_id}: upload {name!r}") if "after" in line
            ]

        yield until(lines)
        [line] = lines()
        return line


class Frames(ServerTestCase):
    @inlineCallbacks
    def test_a_watcher_of_a_game_with_a_header_over_64_kib_gets_every_byte(self):
        yield self.start()
        stream = with_many_mods()
        self.assertGreater(len(split(stream)[0]), 65536)
        yield connect(self.tcp, Uploader(60, "a.SCFAreplay", stream, [8000]))
        yield until(lambda: 60 in self.service.registry.games)
        watcher = Watcher(60)
        yield connect_like_java_client(self.ws, watcher)
        client = watcher.transport._websocket
        self.assertEqual((yield watcher.done), stream)
        self.assertEqual(client.close_code, 1000)
        self.assertLessEqual(max(len(payload) for payload, _ in client.messages), MAX_MESSAGE)

    @inlineCallbacks
    def test_an_upload_of_such_a_header_over_websocket_is_saved_whole(self):
        yield self.start()
        stream = with_many_mods()
        yield connect_like_java_client(self.ws, Uploader(61, "a.SCFAreplay", stream, [30000]))
        yield self.service.registry.when_done(61)
        self.assertEqual(self.saved(61), stream)


class Closes(ServerTestCase):
    @inlineCallbacks
    def test_an_upload_closed_without_a_status_code_is_a_clean_end(self):
        yield self.start()
        before = {verdict: lost("writer", verdict) for verdict in ("reset", "no answer", "protocol error")}
        stream = recording("example")
        uploader = Uploader(62, "java.SCFAreplay", stream, [4000])
        yield connect_like_java_client(self.ws, uploader)
        yield uploader.done
        yield self.service.registry.when_done(62)
        self.assertEqual(self.saved(62), stream)
        line = yield self.upload_line(62, "java.SCFAreplay")
        self.assertTrue(line.endswith(f"ended after {len(stream)} bytes"), line)
        self.assertEqual({verdict: lost("writer", verdict) for verdict in before}, before)

    @inlineCallbacks
    def test_going_away_is_a_clean_end_and_an_error_code_is_not(self):
        yield self.start()

        class Closing(WebSocketClient):
            code = 1001

            def onOpen(self):
                super().onOpen()
                # autobahn's sendClose refuses the codes a browser or a failing peer sends.
                self.inner.transport.loseConnection = lambda: self.sendCloseFrame(self.code, isReply=False)

        class Failing(Closing):
            code = 1011  # the peer's own internal error

        stream = recording("8805603")
        before_clean, before_error = lost("writer", "reset"), lost("writer", "error code")
        for game_id, client in ((63, Closing), (64, Failing)):
            uploader = Uploader(game_id, "a.SCFAreplay", stream, [1000])
            yield connect_like_java_client(self.ws, uploader, client=client)
            yield uploader.done
            yield self.service.registry.when_done(game_id)
            self.assertEqual(self.saved(game_id), stream)
        self.assertTrue((yield self.upload_line(63, "a.SCFAreplay")).endswith(f"after {len(stream)} bytes"))
        line = yield self.upload_line(64, "a.SCFAreplay")
        self.assertIn("(connection lost: WebSocket closed with 1011)", line)
        self.assertEqual(lost("writer", "reset"), before_clean)
        self.assertEqual(lost("writer", "error code"), before_error + 1)

    @inlineCallbacks
    def test_a_frame_that_breaks_the_protocol_is_a_protocol_error(self):
        yield self.start()
        before = lost("writer", "protocol error")
        stream = recording("example")
        uploader = Uploader(65, "a.SCFAreplay", stream[:9000], [3000])
        uploader.keep_open = True
        yield connect_like_java_client(self.ws, uploader)
        yield uploader.sent_all
        yield until(lambda: self.service.registry.games[65].status(0)["merged_bytes"] > 0)
        # A masked frame of the reserved opcode 3: no WebSocket may send it.
        uploader.transport._websocket.transport.write(b"\x83\x80\x01\x02\x03\x04")
        yield uploader.done
        yield self.service.registry.when_done(65)
        self.assertEqual(self.saved(65), stream[:9000])
        line = yield self.upload_line(65, "a.SCFAreplay")
        self.assertIn("(connection lost: WebSocket protocol error:", line)
        self.assertEqual(lost("writer", "protocol error"), before + 1)


class Lobby(Uploader):
    """FA's upload as the relay carries it: the WebSocket opens when FA starts,
    in the lobby, and nothing is sent until the game begins (``begin``)."""

    def connectionMade(self):
        self.opened_at = reactor.seconds()

    def begin(self):
        Uploader.connectionMade(self)


class Answering(JavaClient):
    """Counts the pings it answers (autobahn answers them, as reactor-netty does)."""

    def onPing(self, payload):
        self.inner.pings_answered = getattr(self.inner, "pings_answered", 0) + 1
        super().onPing(payload)


def answered(uploader) -> int:
    return getattr(uploader, "pings_answered", 0)


class IdleThroughCloudflare(ServerTestCase):
    """An edge that drops connections silent for 1 s stands for Cloudflare's 100 s."""

    CUT = 1.0

    @inlineCallbacks
    def start_behind_the_edge(self, **options):
        yield self.start(**options)
        self.edge = IdleCuttingEdge(self.ws, idle=self.CUT)
        self.addCleanup(self.edge.close_all)
        listening = reactor.listenTCP(0, self.edge, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        self.edge_port = listening.getHost().port

    @inlineCallbacks
    def test_pings_keep_an_idle_upload_open_and_its_replay_is_saved(self):
        yield self.start_behind_the_edge(**{"ws-ping-interval": "0.2", "ws-ping-timeout": "2"})
        stream = recording("example")
        uploader = Lobby(66, "lobby.SCFAreplay", stream, [4000])
        yield connect_like_java_client(self.edge_port, uploader, client=Answering)
        # A long lobby: at least four idle cuts' time, pinged all along.
        yield until(
            lambda: answered(uploader) >= 15 and reactor.seconds() - uploader.opened_at > 4 * self.CUT
        )
        self.assertEqual(self.edge.cuts, 0)
        self.assertFalse(uploader.done.called)
        uploader.begin()
        yield self.service.registry.when_done(66)
        self.assertEqual(self.saved(66), stream)
        self.assertEqual(self.edge.cuts, 0)

    @inlineCallbacks
    def test_without_pings_the_edge_cuts_it_and_the_upload_is_lost(self):
        yield self.start_behind_the_edge(**{"ws-ping-interval": "0"})
        uploader = Lobby(67, "lobby.SCFAreplay", recording("example"), [4000])
        yield connect_like_java_client(self.edge_port, uploader)
        yield uploader.done
        self.assertGreaterEqual(reactor.seconds() - uploader.opened_at, self.CUT * 0.9)
        self.assertEqual(self.edge.cuts, 1)
        self.assertNotIn(67, self.service.registry.games)


class Deaf(JavaClient):
    """A peer that no longer answers pings (its machine froze behind a proxy
    that keeps the TCP connection up)."""

    def onPing(self, payload):
        pass


class Vanished(ServerTestCase):
    @inlineCallbacks
    def test_an_upload_that_stops_answering_pings_is_closed_with_the_verdict(self):
        yield self.start(**{"ws-ping-interval": "0.2", "ws-ping-timeout": "0.3"})
        before = lost("writer", "no pong")
        stream = recording("example")
        uploader = Uploader(68, "deaf.SCFAreplay", stream[:12000], [3000])
        uploader.keep_open = True
        yield connect_like_java_client(self.ws, uploader, client=Deaf)
        yield uploader.done  # closed by the server
        yield self.service.registry.when_done(68)
        self.assertEqual(self.saved(68), stream[:12000])
        line = yield self.upload_line(68, "deaf.SCFAreplay")
        self.assertIn("(connection lost: no answer to a WebSocket ping for 0.3 s, the peer vanished)", line)
        self.assertEqual(lost("writer", "no pong"), before + 1)

    @inlineCallbacks
    def test_in_the_lobby_too(self):
        yield self.start(**{"ws-ping-interval": "0.2", "ws-ping-timeout": "0.3"})
        before = lost("initial", "no pong")
        uploader = Lobby(69, "deaf.SCFAreplay", b"", [1])
        yield connect_like_java_client(self.ws, uploader, client=Deaf)
        yield uploader.done
        yield until(lambda: self.logs.matching("lost before its header"))
        [line] = self.logs.matching("lost before its header")
        self.assertIn("no answer to a WebSocket ping for 0.3 s, the peer vanished", line)
        self.assertEqual(lost("initial", "no pong"), before + 1)

    @inlineCallbacks
    def test_one_that_answers_is_kept(self):
        yield self.start(**{"ws-ping-interval": "0.2", "ws-ping-timeout": "0.3"})
        uploader = Lobby(70, "a.SCFAreplay", recording("example"), [4000])
        yield connect_like_java_client(self.ws, uploader, client=Answering)
        yield until(lambda: answered(uploader) >= 8)  # eight rounds: far longer than a timeout
        self.assertFalse(uploader.done.called)
        uploader.begin()
        yield self.service.registry.when_done(70)
        self.assertEqual(self.saved(70), recording("example"))


def long_game() -> bytes:
    """A real recording with its body 60 times over (2.5 MB): more than socket
    buffers hold, so a watcher that stops reading leaves bytes queued for it."""
    header, body = split(recording("example"))
    return header + body * 60


class SmallWindow(Watcher):
    """A watcher whose socket takes little at a time (a 16 KiB receive buffer)."""

    def connectionMade(self):
        handle = self.transport._websocket.transport.getHandle()
        handle.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        super().connectionMade()


class PausedWatchers(ServerTestCase):
    """Pings must not cut a watcher that is alive but not reading: its ping
    waits behind bytes it has not taken, and the watcher stall rule is the one
    that judges it."""

    @inlineCallbacks
    def watch_a_long_game(self, game_id: int):
        yield self.start(**{"ws-ping-interval": "0.2", "ws-ping-timeout": "0.3"})
        self.stream = long_game()
        yield connect(self.tcp, Uploader(game_id, "a.SCFAreplay", self.stream, [200_000]))
        yield until(lambda: game_id in self.service.registry.games)
        watcher = SmallWindow(game_id)
        yield connect_like_java_client(self.ws, watcher, client=Answering)
        yield watcher.first_data
        return watcher

    def watcher_line(self, game_id: int) -> list[str]:
        return [line for line in self.logs.matching(f"game {game_id}: watcher") if "left after" in line]

    @inlineCallbacks
    def test_a_watcher_that_pauses_longer_than_the_ping_timeout_is_kept(self):
        before = lost("reader", "no pong")
        watcher = yield self.watch_a_long_game(75)
        watcher.transport.pauseProducing()  # FA's viewer paused: nothing read for 2 s
        yield deferLater(reactor, 2.0, lambda: None)
        self.assertFalse(watcher.done.called)
        watcher.transport.resumeProducing()
        self.assertEqual((yield watcher.done), self.stream)
        yield until(lambda: self.watcher_line(75))
        [line] = self.watcher_line(75)
        self.assertIn("(whole replay sent)", line)
        self.assertNotIn("connection lost", line)
        self.assertEqual(lost("reader", "no pong"), before)

    @inlineCallbacks
    def test_its_own_close_stays_a_clean_end_while_it_reads_what_was_sent(self):
        before = {verdict: lost("reader", verdict) for verdict in ("no pong", "reset", "protocol error")}
        watcher = yield self.watch_a_long_game(76)
        watcher.transport._websocket.sendClose(1000)  # it leaves; our buffers still hold bytes for it
        watcher.transport.pauseProducing()
        yield deferLater(reactor, 1.5, lambda: None)  # five ping timeouts
        watcher.transport.resumeProducing()
        yield watcher.done
        yield until(lambda: self.watcher_line(76))
        [line] = self.watcher_line(76)
        self.assertIn("(before the end)", line)
        self.assertNotIn("connection lost", line)
        self.assertEqual({verdict: lost("reader", verdict) for verdict in before}, before)


class Held(Protocol):
    """A connection that says nothing and waits."""

    def __init__(self) -> None:
        self.closed: Deferred = Deferred()

    def connectionLost(self, reason=None) -> None:
        if not self.closed.called:
            self.closed.callback(None)


CLOUDFLARE_EDGES = ("173.245.48.5", "2606:4700:10::6816:1")


class BehindCloudflare(ServerTestCase):
    """Cloudflare, then FAF's Traefik (a private address: here 127.0.0.1), then us.
    Traefik appends the Cloudflare edge it saw to X-Forwarded-For."""

    timeout = 120

    @inlineCallbacks
    def open(self, headers: dict[str, str], inner: Protocol | None = None):
        inner = inner or Held()
        opened: Deferred = Deferred()
        factory = WebSocketClientFactory(f"ws://127.0.0.1:{self.ws}/", headers=headers)
        factory.protocol = lambda: WebSocketClient(inner, opened)
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", self.ws).connect(factory)
        yield opened
        return inner

    @inlineCallbacks
    def upload_from(self, game_id: int, headers: dict[str, str]):
        uploader = yield self.open(headers, Uploader(game_id, "p.SCFAreplay", recording("8805603"), [4000]))
        yield uploader.done
        return (yield self.upload_line(game_id, "p.SCFAreplay"))

    @inlineCallbacks
    def test_the_player_is_logged_with_the_defaults(self):
        yield self.start()
        line = yield self.upload_from(71, {"X-Forwarded-For": f"198.51.100.20, {CLOUDFLARE_EDGES[0]}"})
        self.assertIn("from 198.51.100.20 ended", line)
        line = yield self.upload_from(
            72, {"X-Forwarded-For": CLOUDFLARE_EDGES[1], "CF-Connecting-IP": "2001:db8::21"}
        )
        self.assertIn("from 2001:db8::21 ended", line)

    @inlineCallbacks
    def test_from_an_untrusted_peer_the_headers_mean_nothing(self):
        yield self.start(**{"trusted-proxies": "cloudflare"})  # 127.0.0.1 is no proxy of ours
        line = yield self.upload_from(
            73,
            {"X-Forwarded-For": f"198.51.100.20, {CLOUDFLARE_EDGES[0]}", "CF-Connecting-IP": "198.51.100.20"},
        )
        self.assertIn("from 127.0.0.1:", line)
        self.assertNotIn("198.51.100.20", line)

    @inlineCallbacks
    def test_a_connecting_ip_not_set_by_cloudflare_means_nothing(self):
        yield self.start()
        # Traefik reached straight (no Cloudflare hop): the header is the client's own claim.
        line = yield self.upload_from(
            74, {"X-Forwarded-For": "198.51.100.30", "CF-Connecting-IP": "192.0.2.66"}
        )
        self.assertIn("from 198.51.100.30 ended", line)

    @inlineCallbacks
    def test_the_per_address_limit_counts_the_player(self):
        yield self.start(**{"max-connections-per-address": "1"})
        reason = "too many connections from one address"
        refused = metric("replayserver_rejected_connections_total", reason=reason)
        first = yield self.open({"X-Forwarded-For": f"198.51.100.40, {CLOUDFLARE_EDGES[0]}"})
        # The same player again, named by Cloudflare's header through the other edge.
        with self.assertRaises(ConnectionError):
            yield self.open({"X-Forwarded-For": CLOUDFLARE_EDGES[1], "CF-Connecting-IP": "198.51.100.40"})
        self.assertEqual(metric("replayserver_rejected_connections_total", reason=reason), refused + 1)
        other = yield self.open({"X-Forwarded-For": f"198.51.100.41, {CLOUDFLARE_EDGES[0]}"})
        for held in (first, other):
            held.transport.abortConnection()
            yield held.closed

    @inlineCallbacks
    def test_an_edge_address_as_the_client_is_limited_like_any(self):
        """Code run at Cloudflare (a Worker) reaches us from an edge address, and
        Cloudflare names that address as the client: it gets no exemption."""
        yield self.start(**{"max-connections-per-address": "2"})
        reason = "too many connections from one address"
        refused = metric("replayserver_rejected_connections_total", reason=reason)
        worker = "2a06:98c0:3600::103"
        held = []
        for _ in range(2):
            held.append(
                (yield self.open({"X-Forwarded-For": CLOUDFLARE_EDGES[1], "CF-Connecting-IP": worker}))
            )
        with self.assertRaises(ConnectionError):
            yield self.open({"X-Forwarded-For": CLOUDFLARE_EDGES[1], "CF-Connecting-IP": worker})
        with self.assertRaises(ConnectionError):  # nor when the edge itself is the client
            yield self.open({"X-Forwarded-For": worker})
        self.assertEqual(metric("replayserver_rejected_connections_total", reason=reason), refused + 2)
        for connection in held:
            connection.transport.abortConnection()
            yield connection.closed

    @inlineCallbacks
    def test_600_players_behind_two_cloudflare_addresses_are_all_served(self):
        yield self.start()
        limits = self.service.listeners["websocket"].factory.replay_factory.limits
        held = []
        for number in range(600):
            player = f"198.51.{100 + number // 250}.{number % 250 + 1}"
            edge = CLOUDFLARE_EDGES[number % 2]
            held.append((yield self.open({"X-Forwarded-For": f"{player}, {edge}"})))
        yield until(lambda: limits.open == 600)
        self.assertEqual(sum(1 for connection in held if connection.closed.called), 0)
        for connection in held:
            connection.transport.abortConnection()
        yield until(lambda: all(connection.closed.called for connection in held))
