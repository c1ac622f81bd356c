"""The load benchmark's own pieces: the streams it sends and how it paces them, the
floor's relay, the anchor's files, the comparison's ratios and the profile's areas."""

import argparse
import hashlib

import fafreplay
import zstandard
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from benchmarks.anchor import read_fafreplay
from benchmarks.compare import against_rust, comparison_table, figures_table, ratios, variants
from benchmarks.floor import GROUPS, Floor, Game, reader_for
from benchmarks.load.generator import Upload, upload_target
from benchmarks.load.plans import GamePlan, GeneratorSpec, UploaderPlan, plan_games
from benchmarks.load.streams import make_stream, split, stream_key, tick_times
from benchmarks.load.verify import verify_watchers
from benchmarks.profile_areas import by_area, parse, report
from benchmarks.save_latency import measure
from tests.support.recordings import recording


class Streams(SynchronousTestCase):
    def test_repeated_body_keeps_the_real_header_and_bytes(self):
        original = recording("example")
        header, body = split(original)
        stream = make_stream("example", 100_000)
        self.assertEqual(stream[: len(header)], header)
        self.assertEqual(stream[len(header) :], body * 3)

    def test_varied_stream_still_parses_and_compresses_like_a_game(self):
        _, body = split(recording("example"))
        stream = make_stream("example", 500_000, vary=True)
        _, varied = split(stream)
        repeats = len(varied) // len(body)
        self.assertEqual(varied[: len(body)], body)  # the first copy is the recording itself
        self.assertNotEqual(varied[len(body) : 2 * len(body)], body)
        self.assertEqual(fafreplay.body_ticks(varied), fafreplay.body_ticks(body) * repeats)
        ratio = len(stream) / len(zstandard.ZstdCompressor(level=10).compress(stream))
        self.assertTrue(4 < ratio < 12, ratio)
        self.assertEqual(make_stream("example", 500_000, vary=True), stream)  # the same every run


class Pacing(SynchronousTestCase):
    def test_an_uploader_sends_what_its_ticks_allow(self):
        stream = recording("example")
        ticks = tick_times(stream, acceleration=10.0)
        pacing = ([at for at, _ in ticks], [offset for _, offset in ticks])
        upload = Upload(1, None, stream, end=len(stream))
        self.assertEqual(upload_target(upload, -1.0, None, pacing), 0)
        self.assertEqual(upload_target(upload, 0.0, None, pacing), 0)
        # 1928 ticks of 0.1 s at ten times real speed: all of it after 19.28 s
        self.assertLess(upload_target(upload, 10.0, None, pacing), len(stream))
        self.assertGreater(upload_target(upload, 10.0, None, pacing), len(split(stream)[0]))
        self.assertEqual(upload_target(upload, 19.3, None, pacing), len(stream))
        early = Upload(1, None, stream, end=5000)
        self.assertEqual(upload_target(early, 19.3, None, pacing), 5000)

    def test_a_fixed_rate(self):
        upload = Upload(1, None, b"x" * 10_000, end=10_000)
        self.assertEqual(
            [upload_target(upload, t, 5000, None) for t in (0.5, 1.0, 3.0)], [2500, 5000, 10_000]
        )


class Verification(SynchronousTestCase):
    def test_watchers_complete_and_exact_are_counted_apart(self):
        games = [GamePlan(1, "example", 100_000, False, (UploaderPlan("u0"),), (0.5,))]
        stream = make_stream("example", 100_000)
        key = stream_key(games[0])
        wrong = bytearray(stream)
        wrong[5000] ^= 1

        def watch(data: bytes, done: bool = True) -> dict:
            digest = hashlib.sha256(data).hexdigest()
            return {"game": 1, "received": len(data), "sha256": digest, "done": done}

        watches = [watch(stream), watch(bytes(wrong)), watch(stream[:-1]), watch(stream, done=False)]
        results = [{"watches": watches}]
        self.assertEqual(
            verify_watchers(games, results, {key: stream}),
            {"watchers": 4, "watchers_complete": 2, "watchers_verified": 1},
        )

    def test_a_planned_game_names_its_stream(self):
        plain = GamePlan(1, "22373098", 300_000, False, (), ())
        self.assertEqual(stream_key(plain), ("22373098", 300_000, False))
        varied = GamePlan(2, "22373098", 300_000, True, (), ())
        self.assertEqual(make_stream(*stream_key(varied)), make_stream("22373098", 300_000, vary=True))


class Plans(SynchronousTestCase):
    def args(self, **changes):
        defaults = dict(
            games=10,
            uploaders=4,
            watchers=2,
            diverging=5,
            early=2,
            late_watchers_after=20,
            recording="example",
            size=1000,
            vary=False,
        )
        return argparse.Namespace(**{**defaults, **changes})

    def test_who_diverges_who_leaves_early_who_watches_late(self):
        games = plan_games(self.args())
        self.assertEqual([g.id for g in games[:2]], [1_000_000, 1_000_001])
        first = games[0]  # every 5th game diverges, every 2nd has an early leaver
        self.assertEqual([u.diverge_at for u in first.uploaders], [None, None, None, 0.5])
        self.assertEqual([u.leave_at for u in first.uploaders], [0.6, 1.0, 1.0, 1.0])
        self.assertEqual(first.watchers, (0.5, 20))
        self.assertEqual([u.diverge_at for u in games[1].uploaders], [None] * 4)
        self.assertEqual([u.leave_at for u in games[1].uploaders], [1.0] * 4)
        two = plan_games(self.args(uploaders=2))  # too few to say which one diverged
        self.assertEqual([u.diverge_at for u in two[0].uploaders], [None, None])

    def test_a_spec_crosses_into_a_generator_whole(self):
        spec = GeneratorSpec("127.0.0.1", 1, tuple(plan_games(self.args())), 12.5, 0.1, 5000.0, None, 60.0)
        self.assertEqual(GeneratorSpec.from_json(spec.to_json()), spec)


class AnchorFiles(SynchronousTestCase):
    """The anchor's files are read with a streaming decompressor: its frames need not say their size."""

    def test_a_frame_without_content_size(self):
        stream = make_stream("example", 100_000)
        frame = zstandard.ZstdCompressor(level=3, write_content_size=False).compress(stream)
        self.assertEqual(read_fafreplay(b'{"uid": 1}\n' + frame), stream)

    def test_an_unfinished_or_foreign_file_is_not_a_replay(self):
        frame = zstandard.ZstdCompressor(level=3).compress(make_stream("example", 100_000))
        self.assertIsNone(read_fafreplay(b'{"uid": 1}\n' + frame[: len(frame) // 2]))
        self.assertIsNone(read_fafreplay(b""))  # created, not yet written
        self.assertIsNone(read_fafreplay(b'{"uid": 1}'))
        self.assertIsNone(read_fafreplay(b"not json\n" + frame))


class Ratios(SynchronousTestCase):
    CPU = {
        "faf-replay": {"streaming": 5.0, "saving": 1.0, "total": 6.0},
        "faf-replay zstd 19": {"streaming": 5.0, "saving": 10.0, "total": 15.0},
        "floor": {"streaming": 2.5, "saving": 0.1, "total": 2.6},
        "floor-every-write": {"streaming": 10.0, "saving": 0.1, "total": 10.1},
        "rust": {"streaming": 4.0, "saving": 4.0, "total": 8.0},
        "anchor": {"streaming": 40.0, "saving": 20.0, "total": 60.0},
    }

    def test_ratios_and_targets(self):
        rows = {row["ratio"]: row for row in ratios(self.CPU)}
        ours = rows["faf-replay total / anchor total"]
        self.assertEqual((ours["value"], ours["target"], ours["met"]), (0.1, 0.125, True))
        floor = rows["faf-replay streaming / floor streaming"]
        self.assertEqual((floor["value"], floor["target"], floor["met"]), (2.0, 2.0, True))
        rust = rows["faf-replay total / rust total"]
        self.assertEqual((rust["value"], rust["target"], rust["met"]), (0.75, 1.0, True))
        self.assertEqual(rows["rust streaming / floor streaming"]["value"], 1.6)
        self.assertEqual(rows["faf-replay streaming / floor-every-write streaming"]["value"], 0.5)
        self.assertIsNone(rows["faf-replay streaming / floor-every-write streaming"]["met"])
        self.assertEqual(rows["faf-replay zstd 19 saving / anchor saving"]["value"], 0.5)
        self.assertEqual(rows["anchor streaming / floor streaming"]["value"], 16.0)

    def test_a_missed_target(self):
        cpu = {**self.CPU, "faf-replay": {"streaming": 7.5, "saving": 3.0, "total": 10.5}}
        rows = {row["ratio"]: row for row in ratios(cpu)}
        self.assertEqual(rows["faf-replay total / anchor total"]["met"], False)
        self.assertEqual(rows["faf-replay streaming / floor streaming"]["value"], 3.0)
        self.assertEqual(rows["faf-replay total / rust total"]["met"], False)
        self.assertIn("target <= 2.0: MISSED", comparison_table(self._runs(cpu), ratios(cpu)))

    def test_figures_beside_the_rust_servers(self):
        runs = {
            "faf-replay": {"rss_peak_mib": 150.0, "row_latency_median_s": 2.5, "row_latency_p99_s": 3.2},
            "rust": {"rss_peak_mib": 120.0, "row_latency_median_s": 2.6, "row_latency_p99_s": 3.1},
        }
        rows = {row["figure"]: row for row in against_rust(runs)}
        met = {key: row["met"] for key, row in rows.items()}
        expected = {"rss_peak_mib": False, "row_latency_median_s": True, "row_latency_p99_s": False}
        self.assertEqual(met, expected)
        self.assertIn("rss_peak_mib", figures_table(list(rows.values())))
        self.assertIn("MISSED", figures_table(list(rows.values())))
        self.assertEqual(against_rust({"faf-replay": runs["faf-replay"]}), [])

    def test_runs_that_did_not_take_place_or_cost_nothing_give_no_ratio(self):
        cpu = {name: self.CPU[name] for name in ("faf-replay", "floor")}
        cpu["floor"] = {"streaming": 0.0, "saving": 0.0, "total": 0.0}
        self.assertEqual(ratios(cpu), [])

    def test_the_table_has_a_line_per_run_and_per_ratio(self):
        table = comparison_table(self._runs(self.CPU), ratios(self.CPU))
        self.assertIn("anchor", table)
        self.assertIn("400/399", table)
        self.assertIn("790/780 of 800", table)
        self.assertIn("faf-replay total / anchor total", table)
        self.assertIn("target <= 0.125: met", table)

    @staticmethod
    def _runs(cpu: dict) -> dict:
        return {
            name: {
                "server_cpu_seconds": phases,
                "saved": None if name.startswith("floor") else 400,
                "verified": None if name.startswith("floor") else 399,
                "watchers": 800,
                "watchers_complete": 790,
                "watchers_verified": 780,
            }
            for name, phases in cpu.items()
        }

    def test_the_runs_of_a_comparison(self):
        args = argparse.Namespace(zstd_level=10, anchor_path=["/a/aio", "/a/aio-py311"], rust_anchor="/a/rs")
        names = [name for name, _ in variants(args)]
        self.assertEqual(
            names,
            [
                "faf-replay",
                "faf-replay zstd 19",
                "floor",
                "floor-every-write",
                "rust",
                "anchor",
                "anchor aio-py311",
            ],
        )
        self.assertEqual(dict(variants(args))["anchor aio-py311"]["anchor_path"], ["/a/aio-py311"])
        at_19 = argparse.Namespace(zstd_level=19, anchor_path=None)
        self.assertEqual([name for name, _ in variants(at_19)], ["faf-replay", "floor", "floor-every-write"])
        before = argparse.Namespace(zstd_level=19, anchor_path=None, before="/a/faf-replay-then")
        self.assertEqual(dict(variants(before))["faf-replay before"]["checkout"], "/a/faf-replay-then")


class FloorRelay(SynchronousTestCase):
    """The floor's relay without sockets: the longest upload so far is what watchers get."""

    def test_each_read_adds_only_what_goes_past_the_longest_upload(self):
        game = Game()
        game.received(0, b"abcd")  # upload a
        game.received(0, b"ab")  # upload b, behind
        game.received(2, b"cdef")  # b overtakes a
        game.received(4, b"e")  # a, behind again
        self.assertEqual((game.stream(), game.length), (b"abcdef", 6))
        self.assertEqual(game.chunks, [b"abcdef"])  # kept as one piece once a watcher asked
        game.received(6, b"gh")
        self.assertEqual(game.stream(), b"abcdefgh")


class Sink(protocol.Protocol):
    """A client connection that keeps what it receives; ``closed`` fires with it."""

    def __init__(self) -> None:
        self.data = b""
        self.closed = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason=None) -> None:
        self.closed.callback(self.data)


class FloorOverSockets(TestCase):
    """The floor over real TCP: two uploads (one leaving early), watchers before and after the end."""

    @defer.inlineCallbacks
    def relay(self, mode: str):
        floor = Floor(reader_for(mode, reactor, interval=0.05))
        if mode == "tick":
            self.addCleanup(floor.reader.stop)
        port = reactor.listenTCP(0, floor, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        stream = make_stream("example", 100_000)
        early = yield connectProtocol(endpoint, Sink())
        late = yield connectProtocol(endpoint, Sink())
        watcher = yield connectProtocol(endpoint, Sink())
        watcher.transport.write(b"G/7/w\0")
        early.transport.write(b"P/7/early.SCFAreplay\0" + stream[:30_000])
        late.transport.write(b"P/7")  # a header in two pieces
        late.transport.write(b"/late.SCFAreplay\0" + stream[:20_000])
        yield self.until(lambda: 7 in floor.games and floor.games[7].length == 30_000)
        if mode == "tick":  # read by the tick alone, two ticks on: never back in the reading set
            reads = floor.reader.group_reads
            yield self.until(lambda: floor.reader.group_reads >= reads + 2 * GROUPS)
            uploads = [u for group in floor.reader.groups for u in group]
            self.assertEqual(len(uploads), 2)
            readers = reactor.getReaders()
            self.assertFalse(any(upload.transport in readers for upload in uploads))
        early.transport.loseConnection()  # leaves; the other upload goes on where it left off
        yield early.closed
        late.transport.write(stream[20_000:])
        yield self.until(lambda: floor.games[7].length == len(stream))
        late.transport.loseConnection()
        self.assertEqual((yield watcher.closed), stream)  # closed by the floor when the last upload left
        yield late.closed
        after = yield connectProtocol(endpoint, Sink())
        after.transport.write(b"G/7/after\0")
        self.assertEqual((yield after.closed), stream)

    def test_reading_every_write(self):
        return self.relay("every-write")

    def test_reading_once_a_tick(self):
        return self.relay("tick")

    def test_a_bad_header_is_closed(self):
        floor = Floor(reader_for("every-write", reactor))
        port = reactor.listenTCP(0, floor, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)

        @defer.inlineCallbacks
        def run():
            client = yield connectProtocol(endpoint, Sink())
            client.transport.write(b"X/1/x\0")
            self.assertEqual((yield client.closed), b"")
            self.assertEqual(floor.games, {})

        return run()

    @defer.inlineCallbacks
    def until(self, condition, seconds: float = 5.0):
        for _ in range(int(seconds / 0.01)):
            if condition():
                return
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.fail("condition not met in time")


class ProfileAreas(SynchronousTestCase):
    """The profile summary: raw py-spy lines, each stack in one area by the first matching rule."""

    RAW = [
        "run (a.py:1);EPollReactor.doPoll (twisted/internet/epollreactor.py:227) 40\n",
        "run (a.py:1);Connection.doRead (twisted/internet/tcp.py:278) 30\n",
        "run (a.py:1);Connection.doRead (twisted/internet/tcp.py:285);"
        "UploadProtocol.dataReceived (faf_replay/replay/upload.py:80);"
        "FileDescriptor.pauseProducing (twisted/internet/abstract.py:519) 10\n",
        "Thread.run (threading.py:982);Saver._write (faf_replay/save/saver.py:162);"
        "write_replay (faf_replay/save/vault.py:121);encode_replay (faf_replay/save/vault.py:89) 15\n",
        "Thread.run (threading.py:982);Saver._write (faf_replay/save/saver.py:162);"
        "Logger.info (twisted/logger/_logger.py:311) 5\n",
        "not a stack line\n",
    ]

    def test_parse_and_areas(self):
        stacks = parse(self.RAW)
        self.assertEqual(len(stacks), 5)
        self.assertEqual(stacks[1], (["run (a.py:1)", "Connection.doRead (twisted/internet/tcp.py:278)"], 30))
        areas = by_area(stacks)
        self.assertEqual(areas["waiting (epoll_wait, idle threads)"], 40)
        self.assertEqual(areas["socket reads (recv, Twisted's doRead)"], 30)
        # a pause inside a read is epoll registration; zstd inside a vault write is zstd;
        # a log line of the saving thread is saving
        self.assertEqual(areas["epoll registration: pause/resume of uploads"], 10)
        self.assertEqual(areas["saving: zstd"], 15)
        self.assertEqual(areas["saving: the rest (metadata, bookkeeping)"], 5)

    def test_report_shares_leave_the_waiting_out(self):
        text = report(parse(self.RAW), top=2)
        self.assertIn("60 samples of work (100 Hz: about 0.6 s), 40 waiting", text)
        self.assertIn(" 50.0 %  socket reads", text)
        self.assertIn("(waiting)", text)


class SaveLatency(TestCase):
    """``benchmarks.save_latency`` saves through the server's own path, outbox included."""

    timeout = 120

    @defer.inlineCallbacks
    def test_each_save_marks_its_row_and_empties_the_outbox(self):
        timings = yield measure(2, "example", 10)  # asserts the row and the outbox itself
        self.assertEqual(len(timings), 2)
        self.assertTrue(all(0 < t < 30 for t in timings), timings)
