"""Network faults for real: each test in a network namespace of its own, nftables losing packets.

See tests/support/netns.py. As root with iproute2 and nftables; skipped elsewhere, failed
with ``FAF_REPLAY_REQUIRE_NETNS=1``.
"""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import termios
import threading
import time
import unittest

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support.clients import Uploader, Watcher, connect, start_server, until
from tests.support.netns import Namespace, namespace_for
from tests.support.recordings import recording, split
from tests.system.test_end_to_end import read_saved


def sleep(seconds: float):
    return deferLater(reactor, seconds, lambda: None)


def unacknowledged(transport) -> int:
    """Bytes a TCP socket has sent, or still has to send, that its peer has not acknowledged."""
    raw = fcntl.ioctl(transport.getHandle().fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
    return struct.unpack("i", raw)[0]


def namespace_of_process(pid: int) -> str:
    command = ["ip", "netns", "identify", str(pid)]
    return subprocess.run(command, capture_output=True, text=True, check=False).stdout.strip()


def retransmitted_segments(namespace: Namespace) -> int:
    """TCP segments sent again in the namespace (``RetransSegs`` of its /proc/net/snmp)."""
    rows = [line.split() for line in namespace.exec("cat", "/proc/net/snmp").splitlines()]
    names, values = [row for row in rows if row[0] == "Tcp:"]
    return int(values[names.index("RetransSegs")])


def listed_namespaces() -> list[str]:
    output = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in output.splitlines() if line.strip()]


class Collecting(Protocol):
    """Either end of a plain TCP connection: keeps what arrives."""

    def __init__(self, factory: Factory | None = None) -> None:
        self.owner = factory
        self.received = bytearray()
        self.lost = False

    def connectionMade(self):
        if self.owner is not None:
            self.owner.connections.append(self)

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.lost = True


class CollectingFactory(Factory):
    def __init__(self) -> None:
        self.connections: list[Collecting] = []

    def buildProtocol(self, addr):
        return Collecting(self)


class Tooling(TestCase):
    """What the tests below rely on: the namespace is private, a blackhole is one connection."""

    timeout = 60

    @inlineCallbacks
    def test_server_inside_is_unreachable_from_outside(self):
        namespace = namespace_for(self)
        self.assertIn(namespace.name, listed_namespaces())
        with namespace.entered():
            started = start_server(self)
        service, port = yield started
        # The spool's writer thread was started in startService, inside the block;
        # it runs in the original namespace all the same.
        self.assertTrue(any("faf-replay-spool" in thread.name for thread in threading.enumerate()))
        self.assertEqual(namespace.threads_inside(), [])

        yield self.assertFailure(connect(port, Protocol()), ConnectionRefusedError)

        uploader = Uploader(1, "a.SCFAreplay", recording("8805603"), [500])
        with namespace.entered():
            connected = connect(port, uploader)
        yield connected
        yield uploader.done
        yield service.registry.when_done(1)
        self.assertEqual(read_saved(service.registry.settings.vault, 1)[1], recording("8805603"))

    @inlineCallbacks
    def test_blackhole_stops_one_connection_both_ways(self):
        namespace = namespace_for(self)
        factory = CollectingFactory()
        black, other = Collecting(), Collecting()
        with namespace.entered():
            listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
            port = listening.getHost().port
            connected = [connect(port, black), connect(port, other)]
        self.addCleanup(listening.stopListening)
        yield gatherResults(connected)
        yield until(lambda: len(factory.connections) == 2)
        served = {c.transport.getPeer().port: c for c in factory.connections}
        black_served = served[black.transport.getHost().port]
        other_served = served[other.transport.getHost().port]

        namespace.blackhole(black.transport.getHost().port)
        black.transport.write(b"c" * 1000)
        black_served.transport.write(b"s" * 1000)
        other.transport.write(b"c" * 1000)
        other_served.transport.write(b"s" * 1000)
        yield until(lambda: len(other_served.received) == 1000 and len(other.received) == 1000)
        yield sleep(0.5)  # past the first retransmissions (200 ms and 400 ms later)
        self.assertEqual((black_served.received, black.received), (b"", b""))
        self.assertEqual(unacknowledged(black.transport), 1000)
        self.assertEqual(unacknowledged(black_served.transport), 1000)
        self.assertEqual(unacknowledged(other.transport), 0)
        counters = namespace.counters()
        port_of_black = black.transport.getHost().port
        self.assertGreater(counters[f"to server {port_of_black}"], 0)  # the client's packets
        self.assertGreater(counters[f"to client {port_of_black}"], 0)  # the server's packets

        namespace.clear()
        self.assertEqual(namespace.counters(), {})
        yield until(lambda: len(black_served.received) == 1000 and len(black.received) == 1000, timeout=10)
        self.assertEqual(unacknowledged(black.transport), 0)

        for client in (black, other):
            client.transport.loseConnection()
        yield until(lambda: all(c.lost for c in [black, other, *factory.connections]))


class Cleanup(SynchronousTestCase):
    """The namespace goes with its test, failed or not, and what ran in it with it."""

    def test_processes_inside_are_killed(self):
        namespace = namespace_for(self)
        sleeper = subprocess.Popen(["ip", "netns", "exec", namespace.name, "sleep", "60"])
        self.addCleanup(lambda: sleeper.poll() is None and sleeper.kill())
        deadline = time.monotonic() + 5
        while namespace_of_process(sleeper.pid) != namespace.name:  # `ip netns exec` execs sleep
            self.assertLess(time.monotonic(), deadline, "sleep never ran in the namespace")
            time.sleep(0.01)
        namespace.delete()
        self.assertEqual(sleeper.wait(timeout=5), -9)
        self.assertNotIn(namespace.name, listed_namespaces())

    def test_deleted_after_a_failing_test(self):
        namespace_for(self)  # skips or fails here where there are no namespaces
        made: list[Namespace] = []

        class Failing(SynchronousTestCase):
            def test_fails(self):
                made.append(namespace_for(self))
                self.fail("fails on purpose")

        result = unittest.TestResult()
        Failing("test_fails").run(result)
        self.assertEqual((len(result.failures), result.errors), (1, []))
        self.assertNotIn(made[0].name, listed_namespaces())
        self.assertFalse(os.path.exists(made[0].path))


def sizes_for(name: str, index: int, pieces: int = 200) -> list[int]:
    """Small pieces, a different rhythm per uploader: ``pieces`` of them, about."""
    average = max(1, len(recording(name)) // pieces)
    sizes = [max(1, int(average * factor)) for factor in (0.5, 1.5, 0.8, 1.2)]
    return sizes[index % 4 :] + sizes[: index % 4]


class GatedUploader(Uploader):
    """Connects, then sends only when told (:meth:`go`).

    Under loss a SYN may need 1 s, even 3 s, to get through: all uploaders are
    connected before any sends, so none comes late to a game already saved.
    """

    def connectionMade(self):
        pass

    def go(self):
        Uploader.connectionMade(self)


#: game id, what its uploaders send, watchers
GAMES = [
    (101, ["example"] * 3, 2),
    (102, ["22373098"] * 2, 1),
    (103, ["8805603"] * 2, 2),
    (104, ["diverging_1/1", "diverging_1/3", "diverging_1/4", "diverging_1/5"], 2),
    (105, ["example"] * 2, 1),
    (106, ["22373098"] * 4, 2),
]
LOSS_PERCENT = 3


class Lossy(TestCase):
    """Real recordings over a network that loses packets: nothing lost in the replays."""

    timeout = 120

    @inlineCallbacks
    def test_games_under_packet_loss(self):
        began = time.monotonic()
        namespace = namespace_for(self)
        namespace.lose(LOSS_PERCENT)
        with namespace.entered():
            started = start_server(self)
        service, port = yield started

        uploaders = {
            game_id: [
                GatedUploader(game_id, f"p{i}.SCFAreplay", recording(name), sizes_for(name, i))
                for i, name in enumerate(names)
            ]
            for game_id, names, _ in GAMES
        }
        everyone = [u for group in uploaders.values() for u in group]
        for uploader in everyone:
            uploader.keep_open = True  # closed once every watcher is in
        with namespace.entered():
            connected = [connect(port, uploader) for uploader in everyone]
        yield gatherResults(connected)
        for uploader in everyone:
            uploader.go()
        yield until(lambda: all(game_id in service.registry.games for game_id, _, _ in GAMES), timeout=30)

        watchers = {game_id: [Watcher(game_id, f"w{i}") for i in range(count)] for game_id, _, count in GAMES}
        all_watchers = [w for group in watchers.values() for w in group]
        with namespace.entered():
            connected = [connect(port, watcher) for watcher in all_watchers]
        yield gatherResults(connected)
        yield gatherResults([w.first_data for w in all_watchers])

        yield gatherResults([u.sent_all for u in everyone])
        for uploader in everyone:
            uploader.transport.loseConnection()
        yield gatherResults([service.registry.when_done(game_id) for game_id, _, _ in GAMES])
        yield gatherResults([w.done for w in all_watchers])
        yield gatherResults([u.done for u in everyone])

        vault = service.registry.settings.vault
        for game_id, names, _ in GAMES:
            _, saved = read_saved(vault, game_id)
            if len(set(names)) == 1:
                self.assertEqual(saved, recording(names[0]), f"game {game_id}")
            else:  # diverging uploads: upload 5's body, one of their headers
                header, body = split(saved)
                self.assertEqual(body, split(recording("diverging_1/5"))[1], f"game {game_id}")
                self.assertIn(header, {split(recording(name))[0] for name in names})
            for watcher in watchers[game_id]:
                self.assertEqual(bytes(watcher.received), saved, f"game {game_id}, watcher {watcher.header}")

        counters, retransmitted = namespace.counters(), retransmitted_segments(namespace)
        self.assertGreater(counters["lost"], 0)
        self.assertGreater(retransmitted, 0)
        elapsed = time.monotonic() - began
        uploaded = sum(len(u.data) for u in everyone)
        print(
            f"\nlossy run: {len(GAMES)} games, {len(everyone)} uploaders ({uploaded} bytes), "
            f"{len(all_watchers)} watchers, all verified; {counters['lost']} of {counters['packets']} "
            f"packets dropped ({100 * counters['lost'] / counters['packets']:.1f} %), "
            f"{retransmitted} TCP segments retransmitted; {elapsed:.1f} s"
        )
