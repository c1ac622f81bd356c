import itertools
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from faf_replay.replay.replay_header import (
    MAX_HEADER_SIZE,
    ReplayHeaderError,
    ReplayHeaderScanner,
    map_folder,
)
from tests.support.recordings import ALL, recording, split


def scan(data: bytes, cuts=()) -> int | None:
    scanner = ReplayHeaderScanner()
    bounds = [0, *sorted(set(cuts)), len(data)]
    for start, end in itertools.pairwise(bounds):
        length = scanner.feed(data[start:end])
        if length is not None:
            return length
    return None


def scenario_size_offset(stream: bytes) -> int:
    """Offset of the scenario-info size field: after the mods table."""
    first = stream.index(b"\0")
    second = stream.index(b"\0", first + 4)
    mods_size_at = second + 1 + 4
    (mods_size,) = struct.unpack_from("<I", stream, mods_size_at)
    return mods_size_at + 4 + mods_size


class RealHeaders(SynchronousTestCase):
    def test_length_matches_fafreplay(self):
        for name in ALL:
            stream = recording(name)
            header, _ = split(stream)
            self.assertEqual(scan(stream), len(header), name)

    def test_every_split_point(self):
        for name in ["example", "diverging_1/2"]:
            stream = recording(name)
            expected = len(split(stream)[0])
            for cut in range(expected + 2):
                self.assertEqual(scan(stream[: expected + 50], [cut]), expected, (name, cut))

    def test_one_byte_at_a_time(self):
        stream = recording("22373098")
        expected = len(split(stream)[0])
        scanner = ReplayHeaderScanner()
        results = [scanner.feed(stream[i : i + 1]) for i in range(expected)]
        self.assertEqual(results[-1], expected)
        self.assertEqual(set(results[:-1]), {None})

    def test_incomplete_header_waits(self):
        stream = recording("example")
        header, _ = split(stream)
        self.assertIsNone(scan(header[:-1]))

    def test_map_path_is_recorded(self):
        scanner = ReplayHeaderScanner()
        scanner.feed(recording("diverging_1/0"))
        self.assertEqual(map_folder(scanner.found["replay_and_map"]), "paradisebay.v0007")

    def test_strings_are_not_decoded(self):
        stream = bytearray(recording("example"))
        # cp1252 en dash in the game version and a lone UTF-8 lead byte in the map path
        stream[17] = 0x96
        stream[stream.index(b"/maps/") + 1] = 0xC0
        header, _ = split(recording("example"))
        self.assertEqual(scan(bytes(stream)), len(header))


class BadHeaders(SynchronousTestCase):
    def test_corrupt_size_is_rejected_at_once(self):
        stream = bytearray(recording("example"))
        at = scenario_size_offset(bytes(stream))
        stream[at : at + 4] = struct.pack("<I", 0x80000000)
        scanner = ReplayHeaderScanner()
        with self.assertRaises(ReplayHeaderError) as caught:
            scanner.feed(bytes(stream[: at + 4]))  # no byte of the table yet
        self.assertIn("scenario info", str(caught.exception))
        self.assertIn("2147483648", str(caught.exception))

    def test_sizes_are_summed_against_the_limit(self):
        stream = bytearray(recording("example"))
        at = scenario_size_offset(bytes(stream))
        stream[at : at + 4] = struct.pack("<I", MAX_HEADER_SIZE - at)  # one byte too many
        with self.assertRaises(ReplayHeaderError):
            scan(bytes(stream[: at + 4]))
        stream[at : at + 4] = struct.pack("<I", MAX_HEADER_SIZE - at - 4)  # fits: wait
        self.assertIsNone(scan(bytes(stream[: at + 4])))

    def test_no_nul_within_the_limit(self):
        scanner = ReplayHeaderScanner()
        with self.assertRaises(ReplayHeaderError) as caught:
            for _ in range(MAX_HEADER_SIZE // 4096 + 1):
                scanner.feed(b"S" * 4096)
        self.assertIn("no NUL", str(caught.exception))
        self.assertLessEqual(len(scanner.buffer), MAX_HEADER_SIZE + 4096)

    def test_not_a_replay(self):
        for garbage in [b"\0\r\n\0", b"GET / HTTP/1.1\r\n\r\n\0\r\n\0xxxxxxx\0"]:
            with self.assertRaises(ReplayHeaderError):
                scan(garbage + b"\0" * 100)

    def test_small_limit(self):
        stream = recording("example")
        with self.assertRaises(ReplayHeaderError):
            ReplayHeaderScanner(limit=1000).feed(stream)


class Properties(SynchronousTestCase):
    @settings(max_examples=300)
    @given(st.binary(max_size=3000), st.lists(st.integers(0, 3000), max_size=4))
    def test_random_bytes(self, data, cuts):
        try:
            length = scan(data, [c for c in cuts if c <= len(data)])
        except ReplayHeaderError:
            return
        if length is not None:
            self.assertLessEqual(length, len(data))

    @settings(max_examples=300)
    @given(
        st.sampled_from(ALL),
        st.lists(st.tuples(st.integers(0, 8000), st.integers(0, 255)), min_size=1, max_size=8),
        st.lists(st.integers(0, 8000), max_size=3),
    )
    def test_mutated_real_headers(self, name, flips, cuts):
        stream = bytearray(recording(name)[:9000])
        for at, value in flips:
            if at < len(stream):
                stream[at] = value
        try:
            length = scan(bytes(stream), [c for c in cuts if c <= len(stream)])
        except ReplayHeaderError:
            return
        if length is not None:
            self.assertLessEqual(length, MAX_HEADER_SIZE)
