"""The load benchmark's own pieces: the streams it sends and how it paces them."""

import fafreplay
import zstandard
from twisted.trial.unittest import SynchronousTestCase

from benchmarks.load import Upload, _target, make_stream, split, tick_times
from tests.recordings import recording


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
        self.assertEqual(_target(upload, -1.0, None, pacing), 0)
        self.assertEqual(_target(upload, 0.0, None, pacing), 0)
        # 1928 ticks of 0.1 s at ten times real speed: all of it after 19.28 s
        self.assertLess(_target(upload, 10.0, None, pacing), len(stream))
        self.assertGreater(_target(upload, 10.0, None, pacing), len(split(stream)[0]))
        self.assertEqual(_target(upload, 19.3, None, pacing), len(stream))
        early = Upload(1, None, stream, end=5000)
        self.assertEqual(_target(early, 19.3, None, pacing), 5000)

    def test_a_fixed_rate(self):
        upload = Upload(1, None, b"x" * 10_000, end=10_000)
        self.assertEqual([_target(upload, t, 5000, None) for t in (0.5, 1.0, 3.0)], [2500, 5000, 10_000])
