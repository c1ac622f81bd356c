"""Reading an upload at its game's tick, on real TCP sockets (``tick_reads``).

These read a real ``tcp.Server`` the way an upload does: out of the reactor's
reading set, by the tick. They use Twisted's descriptor methods (``doRead``,
``startReading``, ``stopReading``, ``connectionLost``), so a Twisted that
changed them turns these red.
"""

import socket
from collections.abc import Callable
from types import SimpleNamespace

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from faf_replay.accept.connection import connection_of
from faf_replay.accept.proxied import ProxiedConnection
from faf_replay.accept.replay_protocol import ReplayProtocol
from faf_replay.replay.tick_reads import BURST, PausingReads, SocketReads, TickReads, reads_for
from tests.support.metrics import metric
from tests.support.recordings import recording, split
from tests.unit.accept.test_replay_protocol import ProtocolTestCase, Socket


class Collecting(Protocol):
    def __init__(self, connected: Deferred, lost: Deferred) -> None:
        self.received = b""
        self.reads: TickReads | None = None
        self._connected = connected
        self._lost = lost
        self.reason = None

    def connectionMade(self):
        self._connected.callback(self)

    def dataReceived(self, data):
        self.received += data
        if self.reads is not None:
            self.reads.trickled(data)  # as an upload does with every read

    def connectionLost(self, reason=None):
        self.reason = reason
        self._lost.callback(reason.value)  # the exception, not the Failure: a result


class Counting:
    """What counts an upload's bytes, as its stream does."""

    def __init__(self, protocol: Collecting) -> None:
        self._protocol = protocol

    @property
    def received(self) -> int:
        return len(self._protocol.received)


class OnARealSocket(TestCase):
    @inlineCallbacks
    def setUp(self):
        connected, self.lost = Deferred(), Deferred()
        factory = Factory.forProtocol(lambda: Collecting(connected, self.lost))
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.client = socket.create_connection(("127.0.0.1", port.getHost().port))
        self.addCleanup(self.client.close)
        self.server = yield connected
        self.socket = self.server.transport
        self.reads = reads_for(connection_of(self.socket), Counting(self.server))
        self.server.reads = self.reads

    def reading(self) -> bool:
        return self.socket in reactor.getReaders()

    def test_a_plain_socket_is_read_by_the_tick(self):
        self.assertIsInstance(self.reads, SocketReads)
        self.assertTrue(self.reads.trickled(b"x" * 100))
        self.assertFalse(self.reading())  # out of the reactor's reading set
        self.client.sendall(b"gathered")  # loopback: in the server's buffer on return
        self.assertFalse(self.reads.at_tick())  # the tick read a trickle, which held it again
        self.assertEqual(self.server.received, b"gathered")
        self.assertFalse(self.reading())
        self.assertTrue(self.reads.at_tick())  # nothing came: held, look again next tick
        self.assertFalse(self.reading())

    def test_a_burst_goes_back_to_the_reactor(self):
        self.assertFalse(self.reads.trickled(b"x" * BURST))
        self.assertTrue(self.reading())
        self.assertTrue(self.reads.trickled(b"x"))
        self.client.sendall(b"y" * 2 * BURST)
        self.assertFalse(self.reads.at_tick())  # a burst: the reactor reads on
        self.assertTrue(self.reading())

    def test_behind_a_proxy_header_the_socket_under_it_is_read_by_the_tick(self):
        proxied = ProxiedConnection(SimpleNamespace(clock=Clock()), self.socket.getPeer())
        proxied.makeConnection(self.socket)
        reads = reads_for(proxied, Counting(self.server))
        self.assertIsInstance(reads, SocketReads)
        self.assertTrue(reads.trickled(b"x"))
        self.assertFalse(self.reading())
        self.client.sendall(b"gathered")
        self.assertFalse(reads.at_tick())
        self.assertEqual(self.server.received, b"gathered")

    @inlineCallbacks
    def test_the_end_found_at_the_tick_is_handed_on(self):
        self.reads.trickled(b"x")
        self.client.sendall(b"last words")
        self.client.close()
        self.assertFalse(self.reads.at_tick())  # the bytes: a trickle, held again
        self.assertFalse(self.lost.called)
        self.assertFalse(self.reads.at_tick())  # the end: nothing more to hold for
        self.assertTrue(self.lost.called)
        reason = yield self.lost
        self.assertIsInstance(reason, ConnectionDone)
        self.assertEqual(self.server.received, b"last words")

    @inlineCallbacks
    def test_a_drain_reads_to_the_end_and_hands_it_on(self):
        self.reads.trickled(b"x")
        self.client.sendall(b"a" * 1000)
        self.client.close()
        self.reads.drain()
        self.assertEqual(self.server.received, b"a" * 1000)
        self.assertTrue(self.lost.called)  # found by the drain, not by the reactor later
        reason = yield self.lost
        self.assertIsInstance(reason, ConnectionDone)


class OtherConnections(TestCase):
    def test_a_transport_without_a_socket_pauses_and_resumes(self):
        transport = StringTransport()
        reads = reads_for(connection_of(transport), SimpleNamespace(received=0))
        self.assertIsInstance(reads, PausingReads)
        self.assertTrue(reads.trickled(b"x"))
        self.assertEqual(transport.producerState, "paused")
        self.assertFalse(reads.trickled(b"x"))  # already held: one wake-up a tick
        self.assertFalse(reads.at_tick())  # the reactor reads it from now on
        self.assertEqual(transport.producerState, "producing")
        self.assertFalse(reads.trickled(b"x" * BURST))
        self.assertEqual(transport.producerState, "producing")


class AtTheTick(ProtocolTestCase):
    """A plain socket is read by its game's tick, out of the reactor's reading set."""

    def connect_socket(self) -> tuple[ReplayProtocol, Socket]:
        self.peers += 1
        address = IPv4Address("TCP", "192.0.2.7", 40000 + self.peers)
        protocol = self.factory.buildProtocol(address)
        transport = Socket(address)
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return protocol, transport

    def test_a_trickle_is_read_at_the_tick_and_a_burst_as_it_comes(self):
        header, body = split(recording("example"))
        protocol, transport = self.connect_socket()
        protocol.dataReceived(b"P/12/p.SCFAreplay\0" + header[:1000])
        self.assertTrue(transport.reading)  # the header phase is immediate
        protocol.dataReceived(header[1000:] + body[:500])
        self.assertFalse(transport.reading)  # out of the reactor's reading set...
        self.assertEqual(transport.producerState, "producing")  # ...not paused: no resume to pay
        transport.arrive(body[500:900])
        self.advance(1)
        upload = protocol._sub
        self.assertEqual(len(upload.stream.body), 900)  # the tick read it
        self.assertFalse(transport.reading)
        reads = transport.reads
        self.advance(3)  # nothing comes: one read a tick, still out of the set
        self.assertEqual(transport.reads, reads + 3)
        self.assertFalse(transport.reading)
        transport.arrive(body[900:30000])  # a burst: back to the reactor
        self.advance(1)
        self.assertTrue(transport.reading)
        protocol.dataReceived(body[30000:30100])  # the reactor read a trickle again
        self.assertFalse(transport.reading)
        transport.arrive(ConnectionDone())
        self.advance(1)
        self.assertIsInstance(transport.lost.value, ConnectionDone)
        self.assertEqual(upload.game.uploader_count, 0)
        self.advance(self.settings.grace + 1)
        self.assertEqual(self.saves.bodies, [body[:30100]])
        [line] = self.logs.matching("upload 'p.SCFAreplay' from 192.0.2.7:40001 ended after")
        self.assertNotIn("connection lost", line)

    def test_a_reset_found_at_the_tick_is_the_reactors_verdict(self):
        header, body = split(recording("example"))
        protocol, transport = self.connect_socket()
        protocol.dataReceived(b"P/12/p.SCFAreplay\0" + header + body[:500])
        resets = metric("replayserver_lost_connections_total", category="writer", verdict="reset")
        transport.arrive(ConnectionLost())
        self.advance(1)
        self.assertIsInstance(transport.lost.value, ConnectionLost)
        [line] = self.logs.matching("upload 'p.SCFAreplay' from 192.0.2.7:40001 ended after")
        self.assertIn("connection lost: reset", line)
        lost = metric("replayserver_lost_connections_total", category="writer", verdict="reset")
        self.assertEqual(lost, resets + 1)

    def test_other_transports_pause_and_resume(self):
        header, body = split(recording("example"))
        protocol, transport = self.connect()  # no socket of its own (TLS, WebSocket frames)
        protocol.dataReceived(b"P/12/p.SCFAreplay\0" + header + body[:500])
        self.assertEqual(transport.producerState, "paused")


class StallingSocket(Socket):
    """One ``recv`` takes in everything waiting; ``before_read`` runs first (a stall there)."""

    before_read: Callable[[], None] | None = None

    def doRead(self):
        if self.before_read is not None:
            self.before_read()
        if len(self.waiting) > 1 and all(isinstance(data, bytes) for data in self.waiting):
            self.waiting = [b"".join(self.waiting)]
        return super().doRead()


class AStalledTick(ProtocolTestCase):
    """The process stalls inside a tick, after the tick read the clock (a long garbage
    collection, a throttled or stopped process): what the players wrote meanwhile must not
    be dated before it, or watchers get it that much earlier than the delay allows."""

    STALL = 1.0
    WRITES = 0.1  # seconds between two writes of a player, 40 body bytes each

    def play(self, stalls: int, watched: int) -> list[tuple[float, int, int]]:
        """Games 5 and 25 (one tick group: 5 is read first), a player each writing 40 body
        bytes every 0.1 s; the read of game ``stalls`` stalls once; the moments when the
        watcher of game ``watched`` had more body bytes than the delay allowed."""
        header, body = split(recording("example"))
        sockets: dict[int, StallingSocket] = {}
        for game_id in (5, 25):
            self.peers += 1
            address = IPv4Address("TCP", "192.0.2.7", 40000 + self.peers)
            protocol = self.factory.buildProtocol(address)
            sockets[game_id] = socket = StallingSocket(address)
            socket.protocol = protocol
            protocol.makeConnection(socket)
            protocol.dataReceived(f"P/{game_id}/p.SCFAreplay\0".encode() + header)
        watcher, transport = self.connect()
        watcher.dataReceived(f"G/{watched}/w\0".encode())
        written = [(0.0, 0)]  # (when, body bytes each player had written by then)

        def write_until(moment: float) -> None:
            while written[-1][0] + self.WRITES <= moment:
                at, sent = written[-1]
                for socket in sockets.values():
                    socket.arrive(body[sent : sent + 40])
                written.append((at + self.WRITES, sent + 40))

        def stall() -> None:
            if self.clock.seconds() >= 3.2 and not stalled:
                stalled.append(True)
                write_until(self.clock.seconds() + self.STALL)  # the players go on meanwhile
                self.clock.rightNow += self.STALL  # and no timer runs

        stalled: list[bool] = []
        sockets[stalls].before_read = stall
        early = []
        while self.clock.seconds() < 3.2 + self.settings.delay + 3:
            write_until(self.clock.seconds())
            self.clock.advance(0.01)
            now = self.clock.seconds()
            allowed = max((sent for at, sent in written if at <= now - self.settings.delay), default=0)
            had = len(transport.value()) - len(header)
            if had > allowed:
                early.append((round(now, 2), had, allowed))
        self.assertEqual(stalled, [True])
        self.assertGreater(len(transport.value()) - len(header), 0)
        self.assertEqual(self.registry.games[watched].uploader_count, 1)  # the delay held throughout
        return early

    def test_a_stall_in_the_games_own_read(self):
        self.assertEqual(self.play(stalls=5, watched=5), [])

    def test_a_stall_in_the_read_of_a_game_sampled_before_it(self):
        self.assertEqual(self.play(stalls=5, watched=25), [])
