"""Every limit on hostile input: its log line, its counter, and what it closes."""

from twisted.internet.address import IPv4Address
from twisted.trial.unittest import SynchronousTestCase

from faf_replay.accept.limits import RESERVED_FILES, ConnectionLimits, Place, connections_that_fit
from faf_replay.server.tap import _fit_open_files
from faf_replay.settings import Settings
from tests.support.logs import CapturedLogs
from tests.support.metrics import metric
from tests.support.recordings import recording, split
from tests.unit.accept.test_replay_protocol import SETTINGS, ProtocolTestCase


class Counting(SynchronousTestCase):
    def test_per_address_and_total(self):
        limits = ConnectionLimits(per_address=2, total=3)
        self.assertIsNone(limits.admit("a"))
        self.assertIsNone(limits.admit("a"))
        self.assertEqual(limits.admit("a"), "too many connections from one address")
        self.assertIsNone(limits.admit("b"))
        self.assertEqual(limits.admit("c"), "too many connections")
        limits.release("a")
        self.assertEqual((limits.open, limits.from_address("a")), (2, 1))
        self.assertIsNone(limits.admit("c"))
        for address in ("a", "b", "c"):
            limits.release(address)
        self.assertEqual((limits.open, limits.from_address("a")), (0, 0))

    def test_a_place_is_given_back_once(self):
        limits = ConnectionLimits(per_address=2, total=2)
        self.assertIsNone(limits.admit("a"))
        place = Place(limits, "a")
        self.assertIsNone(limits.admit("a"))
        place()
        place()  # a second call frees nothing more
        self.assertEqual((limits.open, limits.from_address("a")), (1, 1))

    def test_connections_fit_beside_the_spool_files(self):
        self.assertEqual(connections_that_fit(20_000, 5_000), 20_000 - 5_000 - RESERVED_FILES)
        self.assertEqual(connections_that_fit(50, 40), 1)

    def test_max_connections_is_lowered_to_what_the_open_file_limit_holds(self):
        logs = CapturedLogs(self)
        fitted = _fit_open_files(Settings(max_connections=30_000), 20_000, 2_000)
        self.assertEqual(fitted.max_connections, 20_000 - 2_000 - RESERVED_FILES)
        self.assertEqual(len(logs.matching("max_connections lowered from 30000 to 17900")), 1)
        roomy = Settings(max_connections=1_000)
        self.assertIs(_fit_open_files(roomy, 20_000, 2_000), roomy)


class Connections(ProtocolTestCase):
    settings = SETTINGS.replace(max_connections_per_address=3, max_connections=5)

    def build(self, host):
        return self.factory.buildProtocol(IPv4Address("TCP", host, 1234))

    def test_refused_over_the_limits_and_counted(self):
        reason = "too many connections from one address"
        before = metric("replayserver_rejected_connections_total", reason=reason)
        kept = [self.build("192.0.2.1") for _ in range(3)]
        self.assertNotIn(None, kept)
        for _ in range(50):
            self.assertIsNone(self.build("192.0.2.1"))
        self.assertEqual(metric("replayserver_rejected_connections_total", reason=reason), before + 50)
        lines = self.logs.matching("refused: too many connections from one address")
        self.assertEqual(len(lines), 1)  # not one per connection
        self.clock.advance(self.factory.refusals.interval)
        self.assertIsNone(self.build("192.0.2.1"))
        lines = self.logs.matching("refused: too many connections from one address")
        self.assertIn("50 refused since the last such line", lines[-1])
        self.assertIsNotNone(self.build("192.0.2.2"))
        self.assertIsNotNone(self.build("192.0.2.3"))
        self.assertIsNone(self.build("192.0.2.4"))  # 5 open in all

    def test_a_closed_connection_frees_its_place(self):
        protocols = [self.build("192.0.2.1") for _ in range(3)]
        self.assertIsNone(self.build("192.0.2.1"))
        protocols[0].connectionLost(None)
        protocols[0].connectionLost(None)  # once only
        self.assertIsNotNone(self.build("192.0.2.1"))
        self.assertIsNone(self.build("192.0.2.1"))


class Uploads(ProtocolTestCase):
    settings = SETTINGS.replace(
        replay_header_timeout=30, max_upload_bytes=20_000, max_uploads_per_game=3, max_watchers_per_game=2
    )

    def upload(self, game_id, data, name="p"):
        protocol, transport = self.connect()
        protocol.dataReceived(f"P/{game_id}/{name}\0".encode() + data)
        return protocol, transport

    def test_replay_header_timeout(self):
        header, _ = split(recording("example"))
        slow, slow_transport = self.upload(1, header[:100])
        _, quick_transport = self.upload(1, header)
        self.clock.advance(29)
        self.assertFalse(slow_transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(slow_transport.disconnecting)
        self.assertFalse(quick_transport.disconnecting)
        self.disconnect(slow, slow_transport)
        self.assertEqual(len(self.logs.matching("no complete replay header within 30 s")), 1)

    def test_too_large_upload_is_cut(self):
        stream = recording("example")
        protocol, transport = self.upload(2, stream[:15_000])
        protocol.dataReceived(stream[15_000:])
        self.assertTrue(transport.disconnecting)
        stream_kept = protocol._sub.stream
        self.assertEqual(stream_kept.received, 20_000)
        self.assertEqual(stream_kept.header + bytes(stream_kept.body), stream[:20_000])
        self.disconnect(protocol, transport)
        self.assertEqual(len(self.logs.matching("more than 20000 bytes; the rest is not kept")), 1)
        self.advance(self.settings.grace + 1)
        [saved] = self.saves.bodies
        self.assertEqual(split(stream)[0] + saved, stream[:20_000])

    def test_uploads_per_game(self):
        for name in "abc":
            _, transport = self.upload(3, b"", name)
            self.assertFalse(transport.disconnecting)
        _, transport = self.upload(3, b"", "d")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(self.logs.matching("refused: it has had 3 uploads already")), 1)

    def test_watchers_per_game(self):
        self.upload(4, recording("example"))
        transports = []
        for _ in range(3):
            protocol, transport = self.connect()
            protocol.dataReceived(b"G/4/w\0")
            transports.append(transport)
        self.assertEqual([t.disconnecting for t in transports], [False, False, True])
        self.assertEqual(len(self.logs.matching("cannot watch game 4: it has 2 watchers already")), 1)
