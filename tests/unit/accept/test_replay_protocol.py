"""The connection protocols byte by byte: StringTransport and a fake clock."""

from pathlib import Path

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from faf_replay.accept.replay_protocol import MOVES, Phase, ReplayFactory, ReplayProtocol
from faf_replay.database.pool import DatabaseError, GameStatus
from faf_replay.metrics import EMPTY, NO_REPLAY, SUCCESS
from faf_replay.replay.download import DownloadProtocol
from faf_replay.replay.lifecycle import State
from faf_replay.replay.registry import VAULT_LOOK_TIMEOUT, GameRegistry
from faf_replay.replay.upload import UploadProtocol
from faf_replay.replay.vault_replays import VaultReplays
from faf_replay.save.vault import write_replay
from faf_replay.settings import Settings
from tests.support.fakes import HeldWorkers, Saves
from tests.support.logs import CapturedLogs
from tests.support.metrics import metric
from tests.support.recordings import chunks, recording, split

SETTINGS = Settings(delay=10, sample_interval=1, grace=5, header_timeout=60, linger=1, stall_timeout=60)


SERVED = "replayserver_served_connections_total"


class ProtocolTestCase(SynchronousTestCase):
    settings = SETTINGS

    def setUp(self):
        self.clock = Clock()
        self.saves = Saves()
        self.registry = GameRegistry(self.settings, self.clock, self.saves)
        self.registry.startService()
        self.addCleanup(lambda: self.registry.running and self.registry.stopService())
        self.factory = ReplayFactory(self.registry, self.clock)
        self.logs = CapturedLogs(self)
        self.peers = 0

    def connect(self) -> tuple[ReplayProtocol, StringTransport]:
        self.peers += 1
        address = IPv4Address("TCP", "192.0.2.7", 40000 + self.peers)
        protocol = self.factory.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        return protocol, transport

    def disconnect(self, protocol, transport):
        transport.loseConnection()
        protocol.connectionLost(None)

    def advance(self, seconds: float, step: float = 1.0):
        while seconds > 0:
            self.clock.advance(min(step, seconds))
            seconds -= step


class ConnectionHeader(ProtocolTestCase):
    def test_upload_split_at_every_byte_keeps_every_replay_byte(self):
        stream = recording("example")[:3000]
        data = b"P/77/Rowan.SCFAreplay\0" + stream
        for cut in range(0, 40):
            protocol, transport = self.connect()
            protocol.dataReceived(data[:cut])
            protocol.dataReceived(data[cut:])
            upload = protocol._sub
            self.assertIsInstance(upload, UploadProtocol)
            self.assertEqual(upload.stream.header + bytes(upload.stream.body), stream)
            self.assertFalse(transport.disconnecting)

    def test_many_small_segments(self):
        data = b"P/77/Rowan.SCFAreplay\0" + recording("example")
        protocol, _ = self.connect()
        for piece in chunks(data, [1, 2, 3, 1000]):
            protocol.dataReceived(piece)
        stream = protocol._sub.stream
        self.assertEqual(stream.header + bytes(stream.body), recording("example"))

    def assertRejected(self, data: bytes, reason: str, detail: str):
        before = metric("replayserver_rejected_connections_total", reason=reason)
        protocol, transport = self.connect()
        protocol.dataReceived(data)
        self.assertTrue(transport.disconnecting)
        protocol.dataReceived(b"more bytes are ignored")
        self.disconnect(protocol, transport)
        self.assertEqual(transport.value(), b"")
        warnings = self.logs.lines(LogLevel.warn)
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn(detail, warnings[0])
        self.assertIn("192.0.2.7", warnings[0])
        self.assertEqual(metric("replayserver_rejected_connections_total", reason=reason), before + 1)
        self.logs.events.clear()

    def test_bad_headers_are_rejected_once_with_a_reason(self):
        for data, detail in [
            (b"X/1/a\0", "unknown connection type"),
            (b"GET / HTTP/1.1\r\n", "unknown connection type"),
            (b"P/12a/x\0", "not a decimal number"),
            (b"P/-1/x\0", "not a decimal number"),
            (b"G/1\0", "no '/'"),
            (b"G/1/\xff\xfe\0", "UTF-8"),
            (b"P/1/" + b"x" * 1100, "no NUL within 1024 bytes"),
        ]:
            self.assertRejected(data, "bad connection header", detail)

    def test_empty_connections_are_silent(self):
        for data in [b"", b"P"]:
            before = metric("replayserver_served_connections_total", result="Empty connection")
            protocol, transport = self.connect()
            if data:
                protocol.dataReceived(data)
            self.disconnect(protocol, transport)
            self.assertEqual(self.logs.lines(LogLevel.warn), [])
            self.assertEqual(
                metric("replayserver_served_connections_total", result="Empty connection"), before + 1
            )

    def test_incomplete_header_is_logged(self):
        protocol, transport = self.connect()
        protocol.dataReceived(b"P/12")
        self.disconnect(protocol, transport)
        [line] = self.logs.lines(LogLevel.warn)
        self.assertIn("before its header was complete", line)

    def test_header_timeout(self):
        protocol, transport = self.connect()
        protocol.dataReceived(b"P/1")
        self.clock.advance(59)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)
        [line] = self.logs.lines(LogLevel.warn)
        self.assertIn("no complete connection header within 60 s", line)
        self.disconnect(protocol, transport)
        self.assertEqual(len(self.logs.lines(LogLevel.warn)), 1)

    def test_header_timeout_is_cancelled_by_the_header(self):
        protocol, _transport = self.connect()
        protocol.dataReceived(b"G/1/x\0")  # unknown game: closed at once anyway
        protocol2, transport2 = self.connect()
        protocol2.dataReceived(b"P/1/x\0")
        self.clock.advance(61)
        self.assertFalse(transport2.disconnecting)

    def test_active_connection_gauge(self):
        before = metric("replayserver_active_connections_count", category="initial")
        protocol, transport = self.connect()
        self.assertEqual(metric("replayserver_active_connections_count", category="initial"), before + 1)
        writers = metric("replayserver_active_connections_count", category="writer")
        protocol.dataReceived(b"P/3/x\0")
        self.assertEqual(metric("replayserver_active_connections_count", category="initial"), before)
        self.assertEqual(metric("replayserver_active_connections_count", category="writer"), writers + 1)
        self.disconnect(protocol, transport)
        self.assertEqual(metric("replayserver_active_connections_count", category="writer"), writers)


class Uploads(ProtocolTestCase):
    def upload(self, game_id: int, data: bytes, name: str = "p.SCFAreplay"):
        protocol, transport = self.connect()
        protocol.dataReceived(f"P/{game_id}/{name}\0".encode() + data)
        return protocol, transport

    def test_upload_is_saved(self):
        protocol, transport = self.upload(5, recording("example"))
        self.disconnect(protocol, transport)
        self.advance(self.settings.grace + 1)
        [saved] = self.saves.replays
        self.assertEqual(saved.header + saved.body_bytes(), recording("example"))
        [line] = self.logs.matching("upload 'p.SCFAreplay' from 192.0.2.7")
        self.assertIn("ended after 43544 bytes", line)

    def test_bad_replay_header_closes_only_that_upload(self):
        good, good_transport = self.upload(5, recording("example")[:2000])
        bad, bad_transport = self.upload(5, b"Supreme Commander\0\r\n\0NotAReplay\0" + b"x" * 100)
        self.assertTrue(bad_transport.disconnecting)
        self.assertFalse(good_transport.disconnecting)
        self.disconnect(bad, bad_transport)
        [line] = self.logs.matching("invalid replay header")
        self.assertIn("Replay v", line)
        good.dataReceived(recording("example")[2000:])
        self.disconnect(good, good_transport)
        self.advance(self.settings.grace + 1)
        self.assertEqual(
            self.saves.replays[0].header + self.saves.replays[0].body_bytes(), recording("example")
        )

    def test_an_upload_closed_for_a_rule_counts_no_more_at_once(self):
        """Its connection is not gone yet (the reactor has yet to close it), but
        the game no longer waits for its bytes."""
        self.patch(self.registry, "settings", self.settings.replace(max_upload_bytes=3000))
        protocol, transport = self.upload(5, recording("example")[:2500])
        record = self.registry.games[5].record(protocol.sub)
        self.assertTrue(record.voting)
        protocol.dataReceived(recording("example")[2500:4000])  # past max_upload_bytes
        self.assertTrue(transport.disconnecting)
        self.assertEqual((record.connected, record.ended, record.voting), (True, True, False))

    def test_corrupt_size_closes_promptly(self):
        header, _ = split(recording("example"))
        mods_size_at = header.index(b"\0", header.index(b"\0") + 4) + 5
        stream = header[:mods_size_at] + b"\x00\x00\x00\x80"  # 2 GiB of mods, says the size
        _protocol, transport = self.upload(5, stream)
        self.assertTrue(transport.disconnecting)

    def test_upload_for_a_saved_game_is_refused(self):
        protocol, transport = self.upload(5, recording("example"))
        self.disconnect(protocol, transport)
        self.advance(self.settings.grace + 1)
        _late, late_transport = self.upload(5, recording("8805603"))
        self.assertTrue(late_transport.disconnecting)
        self.assertEqual(len(self.saves.replays), 1)
        [line] = self.logs.matching("refused")
        self.assertIn("already been saved", line)

    def test_trickles_are_read_once_a_tick_bursts_at_once(self):
        header, body = split(recording("example"))
        protocol, transport = self.upload(12, header[:1000])
        self.assertEqual(transport.producerState, "producing")  # the header phase is immediate
        protocol.dataReceived(header[1000:] + body[:500])  # the header complete, then FA's trickle
        self.assertEqual(transport.producerState, "paused")
        self.advance(1)  # the game's tick
        self.assertEqual(transport.producerState, "producing")
        protocol.dataReceived(body[500:30000])  # a burst: more is surely waiting
        self.assertEqual(transport.producerState, "producing")
        protocol.dataReceived(body[30000:30100])
        self.assertEqual(transport.producerState, "paused")
        self.disconnect(protocol, transport)
        self.advance(1)  # resuming a closed connection is harmless
        self.advance(self.settings.grace)
        self.assertEqual(self.saves.bodies, [body[:30100]])

    def test_diverged_upload_keeps_its_connection(self):
        uploads = [self.upload(9, recording(f"diverging_1/{i}"), f"{i}") for i in range(6)]
        self.advance(self.settings.delay + 2)  # decided once the delay reaches the split
        dropped = uploads[0][0]._sub
        self.assertTrue(dropped.stream.dropped)
        self.assertFalse(uploads[0][1].disconnecting)
        dropped.dataReceived(b"x" * 100)
        self.assertEqual(dropped.stream.body, b"")
        self.assertEqual(len(self.logs.matching("diverged at body byte 7025")), 1)


class Socket(StringTransport):
    """A transport that is a socket the reactor reads: what ``tick_reads`` needs.

    ``arrive`` puts bytes (or the connection's end) in its receive buffer;
    ``doRead`` hands them to the protocol as ``tcp.Connection`` does.
    """

    def __init__(self, peerAddress):
        super().__init__(peerAddress=peerAddress)
        self.reading = True
        self.waiting: list[bytes | Exception] = []
        self.reads = 0
        self.lost: Failure | None = None

    def arrive(self, data: bytes | Exception) -> None:
        self.waiting.append(data)

    def doRead(self):
        self.reads += 1
        if not self.waiting:
            return None  # EWOULDBLOCK
        data = self.waiting.pop(0)
        if isinstance(data, Exception):
            return data
        self.protocol.dataReceived(data)
        return None

    def startReading(self):
        self.reading = True

    def stopReading(self):
        self.reading = False

    def fileno(self):
        return 99

    def connectionLost(self, reason):
        self.lost = reason
        self.protocol.connectionLost(reason)


class Watchers(ProtocolTestCase):
    def start_game(self, game_id=5):
        header, body = split(recording("example"))
        uploader, up_transport = self.connect()
        uploader.dataReceived(f"P/{game_id}/a.SCFAreplay\0".encode() + header)
        return uploader, up_transport, header, body

    def watch(self, game_id=5):
        protocol, transport = self.connect()
        protocol.dataReceived(f"G/{game_id}/w\0".encode())
        return protocol, transport

    def test_unknown_game_is_closed_at_once_with_nothing_sent(self):
        before = metric("replayserver_served_connections_total", result="No replay matched")
        _protocol, transport = self.watch(404)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(
            metric("replayserver_served_connections_total", result="No replay matched"), before + 1
        )
        self.assertEqual(self.logs.lines(LogLevel.warn), [])
        self.assertEqual(len(self.logs.matching("cannot watch game 404: no live replay")), 1)

    def test_header_at_once_then_delayed_body_then_eof_after_linger(self):
        uploader, up_transport, header, body = self.start_game()
        watcher, transport = self.watch()
        self.assertIsInstance(watcher._sub, DownloadProtocol)
        self.assertEqual(transport.value(), header)
        pieces = chunks(body, [1500])
        for piece in pieces:
            uploader.dataReceived(piece)
            self.advance(1)
        # 28 seconds of data, delay 10: the first 18 seconds' worth is visible
        self.assertEqual(transport.value(), header + body[: 1500 * (len(pieces) - 10)])
        self.disconnect(uploader, up_transport)
        self.advance(1)
        self.assertEqual(transport.value(), header + body)  # everything once nobody uploads
        self.advance(self.settings.grace - 1)
        self.assertFalse(transport.disconnecting)
        game = watcher._sub.game
        self.assertIs(game.state, State.DRAINING)
        self.advance(self.settings.linger)
        self.assertTrue(transport.disconnecting)
        self.assertIsNone(transport.producer)
        self.disconnect(watcher, transport)
        self.assertIs(game.state, State.DONE)
        self.assertEqual(len(self.logs.matching("whole replay sent")), 1)

    def test_late_watcher_catches_up_at_once(self):
        uploader, _up_transport, header, body = self.start_game()
        for piece in chunks(body, [1000]):
            uploader.dataReceived(piece)
            self.advance(1)
        visible = self.registry.games[5].visible
        self.assertGreater(visible, 0)
        _watcher, transport = self.watch()
        self.assertEqual(transport.value(), header + body[:visible])

    def test_paused_watcher_gets_nothing_until_resumed(self):
        uploader, up_transport, header, body = self.start_game()
        watcher, transport = self.watch()
        download = watcher._sub
        self.assertIs(transport.producer, download)
        self.assertTrue(transport.streaming)
        download.pauseProducing()
        uploader.dataReceived(body)
        self.disconnect(uploader, up_transport)
        self.advance(1)
        self.assertEqual(transport.value(), header)
        download.resumeProducing()
        self.assertEqual(transport.value(), header + body)

    def test_slow_watcher_does_not_slow_others(self):
        uploader, up_transport, header, body = self.start_game()
        slow, slow_transport = self.watch()
        _fast, fast_transport = self.watch()
        slow._sub.pauseProducing()
        uploader.dataReceived(body)
        self.disconnect(uploader, up_transport)
        self.advance(1)
        self.assertEqual(fast_transport.value(), header + body)
        self.assertEqual(slow_transport.value(), header)

    def test_watcher_leaving_early(self):
        _uploader, _up_transport, _header, _body = self.start_game()
        watcher, transport = self.watch()
        self.disconnect(watcher, transport)
        self.assertEqual(self.registry.games[5].watcher_count, 0)
        self.assertEqual(len(self.logs.matching("before the end")), 1)

    def test_game_with_no_replay_data_closes_watchers(self):
        uploader, up_transport = self.connect()
        uploader.dataReceived(b"P/6/a\0")
        _watcher, transport = self.watch(6)
        self.disconnect(uploader, up_transport)
        self.advance(self.settings.grace + self.settings.linger + 1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")


class PendingStatus:
    """Stands in for the database's answer, to hold a connection mid-check.

    Only the timing is controlled here; the real database is tested against
    MariaDB in test_database*.py.
    """

    def __init__(self):
        self.asked: list[tuple[int, Deferred]] = []

    def game_status(self, game_id):
        d = Deferred()
        self.asked.append((game_id, d))
        return d


class Admission(ProtocolTestCase):
    settings = SETTINGS.replace(db="mysql://u@h/n", require_known_game=True)

    def setUp(self):
        super().setUp()
        self.answers = PendingStatus()
        self.registry = GameRegistry(self.settings, self.clock, self.saves, self.answers)
        self.registry.startService()
        self.addCleanup(lambda: self.registry.running and self.registry.stopService())
        self.factory = ReplayFactory(self.registry, self.clock)

    def test_bytes_during_the_check_are_kept(self):
        stream = recording("example")
        protocol, transport = self.connect()
        protocol.dataReceived(b"P/8/a\0" + stream[:100])
        self.assertEqual(transport.producerState, "paused")
        protocol.dataReceived(stream[100:])  # already on its way when we paused
        other, _ = self.connect()
        other.dataReceived(b"P/8/b\0")
        [(game_id, answer)] = self.answers.asked  # one question for both
        self.assertEqual(game_id, 8)
        answer.callback(GameStatus(ended_at=None, replay_available=False))
        upload = protocol._sub
        self.assertEqual(upload.stream.header + bytes(upload.stream.body), stream)
        self.assertIs(other._sub.game, upload.game)

    def test_refused(self):
        protocol, transport = self.connect()
        protocol.dataReceived(b"P/9/a\0")
        self.answers.asked[0][1].callback(None)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(self.logs.matching("the database does not know this game")), 1)
        self.assertNotIn(9, self.registry.games)

    def test_gone_before_the_answer(self):
        protocol, transport = self.connect()
        protocol.dataReceived(b"P/10/a\0")
        self.disconnect(protocol, transport)
        self.answers.asked[0][1].callback(GameStatus(ended_at=None, replay_available=False))
        self.assertNotIn(10, self.registry.games)
        self.assertEqual(len(self.logs.matching("closed while its game was being checked")), 1)

    def test_running_game_needs_no_check(self):
        first, _ = self.connect()
        first.dataReceived(b"P/11/a\0")
        self.answers.asked[0][1].callback(GameStatus(ended_at=None, replay_available=False))
        second, _ = self.connect()
        second.dataReceived(b"P/11/b\0")
        self.assertEqual(len(self.answers.asked), 1)
        self.assertIs(second._sub.game, first._sub.game)

    def test_database_error_lets_the_upload_in(self):
        protocol, _ = self.connect()
        protocol.dataReceived(b"P/12/a\0")
        self.answers.asked[0][1].errback(DatabaseError("check game: MySQL server has gone away"))
        self.assertIn(12, self.registry.games)
        self.assertEqual(len(self.logs.matching("accepting the upload")), 1)


class VaultAdmission(ProtocolTestCase):
    """An upload that would start a game looks in the vault first: a replay an earlier run
    saved (a deploy cut its game; one of its players came back after the restart) is never
    replaced, and a second copy could never be saved (the soak lost 4,597 bytes that way)."""

    settings = SETTINGS.replace(db="mysql://u@h/n", require_known_game=True)

    def setUp(self):
        super().setUp()
        self.vault = self.mktemp()
        self.workers = HeldWorkers()
        self.answers = PendingStatus()
        self.registry = GameRegistry(
            self.settings,
            self.clock,
            self.saves,
            self.answers,
            vault_replays=VaultReplays(self.vault, 0, self.workers),  # watching it from there is off
        )
        self.registry.startService()
        self.addCleanup(lambda: self.registry.running and self.registry.stopService())
        self.factory = ReplayFactory(self.registry, self.clock)
        self.saved = write_replay(self.vault, 5, {"uid": 5}, recording("example")[:400], 3).path

    def test_a_game_the_vault_holds_is_not_started_again(self):
        before = self.saved.read_bytes()
        refused = metric("replayserver_rejected_connections_total", reason="not admitted")
        protocol, transport = self.connect()
        protocol.dataReceived(b"P/5/a\0" + recording("example"))
        self.assertEqual(transport.producerState, "paused")
        self.workers.finish()
        self.assertTrue(transport.disconnecting)
        self.assertNotIn(5, self.registry.games)
        self.assertEqual(self.answers.asked, [])  # the vault's answer is enough
        self.assertEqual(
            len(self.logs.matching("upload for game 5 refused: its replay is already in the vault")), 1
        )
        self.assertEqual(
            metric("replayserver_rejected_connections_total", reason="not admitted"), refused + 1
        )
        self.assertEqual(self.saved.read_bytes(), before)

    def test_a_game_the_vault_lacks_starts_with_every_byte(self):
        stream = recording("example")
        protocol, _ = self.connect()
        protocol.dataReceived(b"P/6/a\0" + stream[:100])
        protocol.dataReceived(stream[100:])
        self.workers.finish()
        [(game_id, answer)] = self.answers.asked  # then the database
        self.assertEqual(game_id, 6)
        answer.callback(GameStatus(ended_at=None, replay_available=False))
        upload = protocol._sub
        self.assertEqual(upload.stream.header + bytes(upload.stream.body), stream)

    def test_a_vault_that_cannot_be_looked_at_lets_the_upload_in(self):
        vault = Path(self.mktemp())
        vault.write_bytes(b"")  # a file where the vault's folders should be: ENOTDIR
        self.registry.vault_replays = VaultReplays(str(vault), 0, self.workers)
        errors = metric("replayserver_vault_read_errors_total")
        protocol, _ = self.connect()
        protocol.dataReceived(b"P/7/a\0")
        self.workers.finish()
        self.answers.asked[0][1].callback(GameStatus(ended_at=None, replay_available=False))
        self.assertIn(7, self.registry.games)
        self.assertEqual(len(self.logs.matching("cannot look in the vault for its replay (")), 1)
        self.assertEqual(metric("replayserver_vault_read_errors_total"), errors + 1)

    def test_a_vault_that_does_not_answer_lets_the_upload_in(self):
        """A hung network filesystem: the look is given up after VAULT_LOOK_TIMEOUT."""
        errors = metric("replayserver_vault_read_errors_total")
        protocol, _ = self.connect()
        protocol.dataReceived(b"P/7/a\0")
        self.advance(VAULT_LOOK_TIMEOUT - 0.5, 0.5)
        self.assertEqual(self.answers.asked, [])
        self.advance(0.5, 0.5)
        self.answers.asked[0][1].callback(GameStatus(ended_at=None, replay_available=False))
        self.assertIn(7, self.registry.games)
        self.assertEqual(len(self.logs.matching("no answer within 2 s")), 1)
        self.assertEqual(metric("replayserver_vault_read_errors_total"), errors + 1)

    def test_a_failing_look_stops_nothing(self):
        """Any failure lets the upload in; the game's next uploads are not left waiting."""
        first, _ = self.connect()
        first.dataReceived(b"P/7/a\0")
        [(_, _, d)] = self.workers.calls
        self.workers.calls.clear()
        d.errback(RuntimeError("a bug"))
        self.answers.asked[0][1].errback(RuntimeError("another bug"))  # not a DatabaseError
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        second, _ = self.connect()
        second.dataReceived(b"P/7/b\0")
        self.assertIs(second._sub.game, first._sub.game)
        self.assertEqual(self.registry.games[7].uploader_count, 2)

    def test_uploads_arriving_together_share_one_look(self):
        first, _ = self.connect()
        first.dataReceived(b"P/6/a\0")
        second, _ = self.connect()
        second.dataReceived(b"P/6/b\0")
        self.assertEqual(len(self.workers.calls), 1)
        self.workers.finish()
        self.answers.asked[0][1].callback(GameStatus(ended_at=None, replay_available=False))
        self.assertIs(second._sub.game, first._sub.game)

    def test_a_watcher_during_the_look_joins_the_game(self):
        """Without the wait, the game does not exist yet: the watcher was refused."""
        initial = metric("replayserver_active_connections_count", category="initial")
        uploader, _ = self.connect()
        uploader.dataReceived(b"P/6/a\0")
        watcher, _ = self.connect()
        watcher.dataReceived(b"G/6/w\0")
        self.assertEqual(metric("replayserver_active_connections_count", category="initial"), initial + 2)
        self.workers.finish()
        self.answers.asked[0][1].callback(GameStatus(ended_at=None, replay_available=False))
        self.assertEqual(self.registry.games[6].watcher_count, 1)
        self.assertEqual(metric("replayserver_active_connections_count", category="initial"), initial)

    def test_a_game_this_run_saved_is_refused_without_a_look(self):
        protocol, _ = self.connect()
        protocol.dataReceived(b"P/6/a\0" + recording("example"))
        self.workers.finish()
        self.answers.asked[0][1].callback(GameStatus(ended_at=None, replay_available=False))
        self.disconnect(protocol, protocol.transport)
        self.advance(self.settings.grace + 2 * self.settings.sample_interval)
        self.assertNotIn(6, self.registry.games)
        late, transport = self.connect()
        late.dataReceived(b"P/6/b\0")
        self.assertEqual(self.workers.calls, [])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(self.logs.matching("its replay has already been saved")), 1)

    def test_a_game_sent_whole_before_the_answer_is_kept(self):
        """A short game whose player closed before the vault answered (the WebSocket test
        that sends a whole replay at once lost it, the upload dropped with its bytes)."""
        header, body = split(recording("example"))
        served = {result: metric(SERVED, result=result) for result in (SUCCESS, EMPTY)}
        writers = metric("replayserver_active_connections_count", category="writer")
        protocol, transport = self.connect()
        protocol.dataReceived(b"P/9/a\0" + header + body)
        self.disconnect(protocol, transport)
        self.workers.finish()
        self.answers.asked[0][1].callback(GameStatus(ended_at=None, replay_available=False))
        self.advance(self.settings.grace + 2 * self.settings.sample_interval)
        self.assertEqual([(r.game_id, r.header) for r in self.saves.replays], [(9, header)])
        self.assertEqual(self.saves.bodies, [body])
        self.assertEqual(
            {r: metric(SERVED, result=r) for r in served},
            {SUCCESS: served[SUCCESS] + 1, EMPTY: served[EMPTY]},
        )
        self.assertEqual(metric("replayserver_active_connections_count", category="writer"), writers)

    def test_a_game_sent_whole_before_a_refusal_is_not_kept(self):
        served = {result: metric(SERVED, result=result) for result in (NO_REPLAY, EMPTY)}
        protocol, transport = self.connect()
        protocol.dataReceived(b"P/5/a\0" + recording("example"))
        self.disconnect(protocol, transport)
        self.workers.finish()
        self.assertNotIn(5, self.registry.games)
        self.assertEqual(len(self.logs.matching("upload for game 5 refused")), 1)
        self.assertEqual(
            {r: metric(SERVED, result=r) for r in served},
            {NO_REPLAY: served[NO_REPLAY] + 1, EMPTY: served[EMPTY]},
        )

    def test_a_live_game_is_joined_without_looking(self):
        first, _ = self.connect()
        first.dataReceived(b"P/8/a\0")
        self.workers.finish()
        self.answers.asked[0][1].callback(GameStatus(ended_at=None, replay_available=False))
        second, _ = self.connect()
        second.dataReceived(b"P/8/b\0")
        self.assertEqual(self.workers.calls, [])
        self.assertIs(second._sub.game, first._sub.game)


class VaultAdmissionWithoutDatabase(ProtocolTestCase):
    """The vault is looked in without ``--require-known-game`` and without a database too."""

    def test_a_game_the_vault_holds_is_not_started_again(self):
        vault, workers = self.mktemp(), HeldWorkers()
        write_replay(vault, 5, {"uid": 5}, recording("example")[:400], 3)
        self.registry = GameRegistry(
            self.settings, self.clock, self.saves, vault_replays=VaultReplays(vault, 3600, workers)
        )
        self.registry.startService()
        self.addCleanup(self.registry.stopService)
        self.factory = ReplayFactory(self.registry, self.clock)
        protocol, transport = self.connect()
        protocol.dataReceived(b"P/5/a\0" + recording("example"))
        workers.finish()
        self.assertTrue(transport.disconnecting)
        self.assertNotIn(5, self.registry.games)


class ConnectionPhases(SynchronousTestCase):
    def test_a_connection_moves_only_along_the_table(self):
        protocol = ReplayProtocol(GameRegistry(Settings(), Clock(), Saves()), Clock(), lambda: None)
        self.assertIs(protocol.phase, Phase.HEADER)
        self.assertNotIn((Phase.SWITCHED, Phase.HEADER), MOVES)
        self.assertNotIn((Phase.CLOSED, Phase.SWITCHED), MOVES)  # a refused connection stays refused
        protocol.phase = Phase.CLOSED
        self.assertRaises(RuntimeError, protocol._enter, Phase.SWITCHED)
