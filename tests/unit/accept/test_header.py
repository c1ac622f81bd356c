import itertools

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from faf_replay.accept.header import (
    MAX_HEADER_BODY,
    ConnectionHeader,
    ConnectionHeaderError,
    ConnectionHeaderParser,
    Kind,
)


def parse_in_pieces(data: bytes, cuts: list[int]):
    parser = ConnectionHeaderParser()
    result = None
    bounds = [0, *sorted(set(cuts)), len(data)]
    for start, end in itertools.pairwise(bounds):
        result = parser.feed(data[start:end])
        if result is not None:
            return result, data[end:]
    return result, b""


class GoodHeaders(SynchronousTestCase):
    def test_upload(self):
        (header, rest), _ = parse_in_pieces(b"P/1234/Rowan.SCFAreplay\0", [])
        self.assertEqual(header, ConnectionHeader(Kind.UPLOAD, 1234, "Rowan.SCFAreplay"))
        self.assertEqual(rest, b"")

    def test_download(self):
        (header, _), _ = parse_in_pieces(b"G/7/watcher\0", [])
        self.assertEqual(header, ConnectionHeader(Kind.DOWNLOAD, 7, "watcher"))

    def test_name_may_be_empty_and_hold_slashes(self):
        (header, _), _ = parse_in_pieces(b"G/7/\0", [])
        self.assertEqual(header.name, "")
        (header, _), _ = parse_in_pieces(b"P/7/a/b//c\0", [])
        self.assertEqual(header.name, "a/b//c")

    def test_unicode_name(self):
        (header, _), _ = parse_in_pieces("P/7/Żółw.SCFAreplay\0".encode(), [])
        self.assertEqual(header.name, "Żółw.SCFAreplay")

    def test_largest_game_id(self):
        (header, _), _ = parse_in_pieces(b"P/18446744073709551615/x\0", [])
        self.assertEqual(header.game_id, 2**64 - 1)

    def test_bytes_after_the_nul_are_handed_back(self):
        parser = ConnectionHeaderParser()
        _header, rest = parser.feed(b"P/1/x\0Supreme Commander")
        self.assertEqual(rest, b"Supreme Commander")

    def test_every_split_point(self):
        data = b"P/22373098/Jip.SCFAreplay\0REPLAY"
        for cut in range(len(data) + 1):
            parser = ConnectionHeaderParser()
            result = parser.feed(data[:cut])
            if result is None:
                result = parser.feed(data[cut:])
                header, rest = result
            else:
                header, rest = result
                rest += data[cut:]  # what the protocol passes on unparsed
            self.assertEqual((header.game_id, header.name), (22373098, "Jip.SCFAreplay"))
            self.assertEqual(rest, b"REPLAY")

    def test_one_byte_at_a_time(self):
        data = b"G/99/someone\0"
        parser = ConnectionHeaderParser()
        results = [parser.feed(data[i : i + 1]) for i in range(len(data))]
        self.assertEqual(results[:-1], [None] * (len(data) - 1))
        self.assertEqual(results[-1][0].game_id, 99)
        self.assertEqual(parser.received, len(data))

    def test_longest_allowed(self):
        name = b"n" * (MAX_HEADER_BODY - len(b"1/") - 1)
        data = b"P/1/" + name + b"\0"
        self.assertEqual(len(data) - 2, MAX_HEADER_BODY)
        (header, _), _ = parse_in_pieces(data, [100, 500])
        self.assertEqual(header.name, name.decode())


class BadHeaders(SynchronousTestCase):
    def assertRejected(self, data: bytes, reason: str):
        for cut in range(len(data) + 1):
            parser = ConnectionHeaderParser()
            with self.assertRaises(ConnectionHeaderError) as caught:
                parser.feed(data[:cut])
                parser.feed(data[cut:])
            self.assertIn(reason, str(caught.exception))

    def test_unknown_type(self):
        self.assertRejected(b"X/1/a\0", "unknown connection type")
        self.assertRejected(b"p/1/a\0", "unknown connection type")
        self.assertRejected(b"PP1/a\0", "unknown connection type")

    def test_unknown_type_is_rejected_at_the_first_byte(self):
        with self.assertRaises(ConnectionHeaderError):
            ConnectionHeaderParser().feed(b"\x16")  # a TLS handshake, say

    def test_no_slash(self):
        self.assertRejected(b"P/123\0", "no '/'")

    def test_game_id_not_digits(self):
        for game_id in [b"", b"-1", b"+1", b" 1", b"1 ", b"1_000", b"abc", b"0x10", "١٢".encode()]:
            self.assertRejected(b"P/" + game_id + b"/a\0", "not a decimal number")

    def test_game_id_too_big(self):
        self.assertRejected(b"P/18446744073709551616/a\0", "64 bits")

    def test_name_not_utf8(self):
        self.assertRejected(b"G/1/foo \xc0 bar\0", "UTF-8")

    def test_too_long(self):
        data = b"P/1/" + b"n" * MAX_HEADER_BODY + b"\0"
        parser = ConnectionHeaderParser()
        with self.assertRaises(ConnectionHeaderError) as caught:
            for i in range(0, len(data), 10):
                parser.feed(data[i : i + 10])
        self.assertIn("no NUL within 1024 bytes", str(caught.exception))
        # rejected as soon as the limit is passed, not at the end
        self.assertLessEqual(parser.received, 2 + MAX_HEADER_BODY + 10)


class Properties(SynchronousTestCase):
    @given(st.binary(max_size=1200), st.lists(st.integers(0, 1200), max_size=6))
    def test_only_its_own_error(self, data, cuts):
        try:
            result, _ = parse_in_pieces(data, [c for c in cuts if c <= len(data)])
        except ConnectionHeaderError:
            return
        if result is not None:
            header, rest = result
            self.assertTrue(data.startswith(b"P/" if header.kind is Kind.UPLOAD else b"G/"))
            self.assertTrue(data.endswith(rest))

    @given(
        st.sampled_from([b"P/", b"G/"]),
        st.integers(0, 2**64 - 1),
        st.text(max_size=200).filter(lambda s: "\0" not in s),
        st.binary(max_size=50),
        st.lists(st.integers(0, 400), max_size=5),
    )
    def test_round_trip(self, kind, game_id, name, after, cuts):
        data = kind + str(game_id).encode() + b"/" + name.encode() + b"\0" + after
        if len(data) - len(after) - 2 > MAX_HEADER_BODY:
            return
        parser = ConnectionHeaderParser()
        bounds = [0, *sorted(c for c in set(cuts) if c < len(data)), len(data)]
        rest = b""
        result = None
        for start, end in itertools.pairwise(bounds):
            if result is None:
                result = parser.feed(data[start:end])
                if result is not None:
                    header, rest = result
            else:
                rest += data[start:end]
        self.assertEqual((header.game_id, header.name), (game_id, name))
        self.assertEqual(rest, after)
