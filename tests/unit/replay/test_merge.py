import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from faf_replay.replay.merge import QuorumMerge, StallRule, common_prefix
from tests.support.recordings import DIVERGING, recording, split


class Stream:
    """A stand-in upload: a growing body and two flags."""

    def __init__(self, body: bytes = b"", *, ended: bool = False, voting: bool = True, name: str = ""):
        self.body = bytearray(body)
        self.ended = ended
        self.voting = voting
        self.name = name

    def __repr__(self):
        return f"<Stream {self.name} {len(self.body)}>"


def merged(merge: QuorumMerge) -> bytes:
    return bytes(merge.canonical[: merge.length])


def bodies(names):
    return [split(recording(name))[1] for name in names]


class CommonPrefix(SynchronousTestCase):
    def test_finds_the_first_difference(self):
        a = bytes(range(256)) * 1000
        for at in [0, 1, 65535, 65536, 65537, 200_000, len(a) - 1]:
            b = bytearray(a)
            b[at] ^= 0xFF
            self.assertEqual(common_prefix(a, b, 0, len(a)), at)
            self.assertEqual(common_prefix(a, b, min(at, 10), len(a)), at)
        self.assertEqual(common_prefix(a, a, 5, len(a)), len(a))
        self.assertEqual(common_prefix(a, b"", 0, 0), 0)


class Diverging1(SynchronousTestCase):
    """Six real uploads of one game (tests/data/README.md)."""

    def setUp(self):
        self.bodies = bodies(DIVERGING)
        self.expected = self.bodies[5]

    def test_the_recordings_are_what_the_readme_says(self):
        b = self.bodies
        self.assertEqual(common_prefix(b[0], b[5], 0, min(len(b[0]), len(b[5]))), 7025)
        self.assertTrue(b[5].startswith(b[1]) and b[5].startswith(b[3]) and b[3].startswith(b[4]))
        self.assertEqual(common_prefix(b[2], b[5], 0, len(b[2])), 26225)
        self.assertEqual(len(self.expected), 27121)

    def test_finished_streams_in_every_order(self):
        for order in itertools.permutations(range(6)):
            merge = QuorumMerge(2)
            for index in order:
                merge.add(Stream(self.bodies[index], ended=True, name=str(index)))
            merge.advance()
            self.assertEqual(merged(merge), self.expected, order)

    def test_live_streams_with_a_delay(self):
        """Fed in uneven chunks, merged up to a lagging limit, then ended."""
        for seed in range(20):
            rng = random.Random(seed)
            streams = [Stream(name=str(i)) for i in range(6)]
            merge = QuorumMerge(2)
            order = list(range(6))
            rng.shuffle(order)
            for index in order:
                merge.add(streams[index])
            dropped = {}
            while any(len(s.body) < len(b) for s, b in zip(streams, self.bodies, strict=True)):
                for stream, body in zip(streams, self.bodies, strict=True):
                    size = rng.choice([1, 7, 100, 997, 3000])
                    stream.body += body[len(stream.body) : len(stream.body) + size]
                    if len(stream.body) == len(body):
                        stream.ended = True
                longest = max(len(s.body) for s in streams)
                merge.advance(max(0, longest - rng.choice([0, 500, 5000])))
                self.assertTrue(self.expected.startswith(merged(merge)), seed)
                dropped.update((s.name, at) for s, at in merge.take_dropped())
            merge.advance()
            dropped.update((s.name, at) for s, at in merge.take_dropped())
            self.assertEqual(merged(merge), self.expected, seed)
            self.assertEqual(dropped, {"0": 7025, "2": 26225})

    def test_quorum_three(self):
        merge = QuorumMerge(3)
        for body in self.bodies:
            merge.add(Stream(body, ended=True))
        merge.advance()
        self.assertEqual(merged(merge), self.expected)


class Rules(SynchronousTestCase):
    def test_single_uploader_is_used_as_it_is(self):
        stream = Stream(b"abcdef")
        merge = QuorumMerge(2)
        merge.add(stream)
        self.assertEqual(merge.advance(), 6)
        stream.body += b"ghi"
        self.assertEqual(merge.advance(4), 6)  # never shrinks
        self.assertEqual(merge.advance(), 9)
        self.assertEqual(merged(merge), b"abcdefghi")

    def test_limit_is_respected(self):
        merge = QuorumMerge(2)
        merge.add(Stream(b"a" * 100))
        merge.add(Stream(b"a" * 100))
        self.assertEqual(merge.advance(40), 40)
        self.assertEqual(merge.advance(0), 40)
        self.assertEqual(merge.advance(), 100)

    def test_waits_for_a_connected_voter(self):
        talker, silent = Stream(b"data"), Stream()
        merge = QuorumMerge(2)
        merge.add(talker)
        merge.add(silent)
        self.assertEqual(merge.advance(), 0)
        self.assertEqual((merge.waiting_on, merge.wanted), ([silent], 4))
        silent.body += b"da"
        self.assertEqual(merge.advance(), 2)
        self.assertEqual((merge.waiting_on, merge.wanted), ([silent], 4))
        silent.voting = False  # the stall rule: not waited for any more
        self.assertEqual(merge.advance(), 4)
        self.assertEqual(merge.waiting_on, [])
        silent.voting = True
        silent.body += b"tX"
        self.assertEqual(merge.advance(), 4)
        self.assertEqual([(s is silent, at) for s, at in merge.take_dropped()], [(True, 3)])

    def test_quorum_does_not_wait_for_laggards(self):
        a, b, c = Stream(b"xyz" * 10), Stream(b"xyz" * 10), Stream(b"xy")
        merge = QuorumMerge(2)
        for s in (a, b, c):
            merge.add(s)
        self.assertEqual(merge.advance(), 30)

    def test_ended_prefix_stops_voting(self):
        short, long = Stream(b"abc", ended=True), Stream(b"abcdef")
        merge = QuorumMerge(2)
        merge.add(short)
        merge.add(long)
        self.assertEqual(merge.advance(), 6)
        self.assertNotIn(short, merge)
        self.assertEqual(merge.take_dropped(), [])

    def test_bigger_group_wins(self):
        streams = [Stream(b"commonAAAA"), Stream(b"commonAAAA"), Stream(b"commonBBBBBBBB")]
        merge = QuorumMerge(2)
        for s in streams:
            merge.add(s)
        merge.advance()
        self.assertEqual(merged(merge), b"commonAAAA")
        self.assertEqual([(s is streams[2], at) for s, at in merge.take_dropped()], [(True, 6)])

    def test_tie_goes_to_the_longest_stream(self):
        for first, second in [(b"commonAAAA", b"commonBBBBBB"), (b"commonBBBBBB", b"commonAAAA")]:
            merge = QuorumMerge(2)
            merge.add(Stream(first, ended=True))
            merge.add(Stream(second, ended=True))
            merge.advance()
            self.assertEqual(merged(merge), b"commonBBBBBB")

    def test_lone_split_waits_while_a_bigger_group_can_form(self):
        lone, other, pending = Stream(b"abXXXXXXXX"), Stream(b"abYY"), Stream(b"a")
        merge = QuorumMerge(2)
        for s in (lone, other, pending):
            merge.add(s)
        self.assertEqual(merge.advance(), 2)  # "ab" agreed; the split at 2 waits
        self.assertEqual((merge.waiting_on, merge.wanted), ([pending], 3))
        pending.body += b"bYYY"
        merge.advance()
        self.assertEqual(merged(merge)[:4], b"abYY")
        self.assertEqual([s for s, _ in merge.take_dropped()], [lone])

    def test_split_waits_for_a_pending_voter_until_it_ends(self):
        a, b, waiting = Stream(b"abXX"), Stream(b"abYYYY"), Stream(b"ab")
        merge = QuorumMerge(2)
        for s in (a, b, waiting):
            merge.add(s)
        self.assertEqual(merge.advance(), 2)
        waiting.ended = True
        merge.advance()
        self.assertEqual(merged(merge), b"abYYYY")  # tie, longest

    def test_late_joiner_contradicting_the_past_is_dropped(self):
        a, b = Stream(b"0123456789"), Stream(b"0123456789")
        merge = QuorumMerge(2)
        merge.add(a)
        merge.add(b)
        merge.advance()
        late = Stream(b"0123x")
        merge.add(late)
        merge.advance()
        self.assertEqual(merge.take_dropped(), [(late, 4)])
        self.assertEqual(merged(merge), b"0123456789")

    def test_reference_switches_when_it_ends(self):
        a, b, c = Stream(b"abcd", ended=True), Stream(b"abcdefgh"), Stream(b"abcdefghij")
        merge = QuorumMerge(2)
        for s in (a, b, c):
            merge.add(s)
        self.assertEqual(merge.advance(), 8)
        b.ended = True
        self.assertEqual(merge.advance(), 10)
        self.assertEqual(merged(merge), b"abcdefghij")

    def test_dropped_streams_are_forgotten(self):
        a, b, c = Stream(b"aaaa"), Stream(b"aaaa"), Stream(b"abbb")
        merge = QuorumMerge(2)
        for s in (a, b, c):
            merge.add(s)
        merge.advance()
        self.assertNotIn(c, merge)
        c.body += b"more"
        merge.advance()
        self.assertEqual(merge.take_dropped(), [(c, 1)])

    def test_quorum_must_be_positive(self):
        self.assertRaises(ValueError, QuorumMerge, 0)


class Stalls(SynchronousTestCase):
    def test_waited_for_too_long(self):
        rule, stream = StallRule(60), Stream(b"x" * 10)
        self.assertEqual(rule.update(0, [stream], 100), [])
        self.assertEqual(rule.update(59, [stream], 150), [])
        self.assertEqual(rule.update(60, [stream], 200), [stream])

    def test_a_dribbler_is_not_waited_for(self):
        rule, stream = StallRule(60), Stream(b"x" * 10)
        for second in range(61):
            stream.body += b"x"  # grows, but never reaches what the merge waited for
            overdue = rule.update(second, [stream], 1000)
        self.assertEqual(overdue, [stream])

    def test_a_lagging_voter_that_keeps_up_is_waited_for(self):
        rule, stream = StallRule(60), Stream()
        for second in range(500):
            stream.body = bytearray(b"x" * (second * 100))  # reaches each target 2 s later
            self.assertEqual(rule.update(second, [stream], second * 100 + 200), [])

    def test_a_wait_ends_when_nobody_waits(self):
        rule, stream = StallRule(60), Stream()
        rule.update(0, [stream], 10)
        rule.update(50, [], 0)
        self.assertEqual(rule.update(100, [stream], 10), [])
        self.assertEqual(rule.update(160, [stream], 10), [stream])


@st.composite
def stream_families(draw):
    """An honest body, honest copies ending early, and poisoners diverging alone."""
    honest = draw(st.binary(min_size=1, max_size=400))
    copies = draw(st.lists(st.integers(0, len(honest)), min_size=0, max_size=4))
    full_copies = draw(st.integers(0, 3))
    poisoners = draw(
        st.lists(
            # A stream that goes on after the honest body ends is just a longer
            # honest one: poisoners diverge inside it.
            st.tuples(st.integers(0, len(honest) - 1), st.binary(min_size=1, max_size=200)),
            max_size=3,
        )
    )
    streams = [honest] * full_copies + [honest[:end] for end in copies]
    for number, (at, tail) in enumerate(poisoners, start=1):
        # A byte no other stream has at that point: each poisoner stands alone.
        streams.append(honest[:at] + bytes([honest[at] ^ number]) + tail)
    if not streams:
        streams = [honest]
    order = draw(st.permutations(range(len(streams))))
    return honest, full_copies, [streams[i] for i in order], len(poisoners)


class Properties(SynchronousTestCase):
    @settings(max_examples=400, deadline=None)
    @given(
        stream_families(),
        st.integers(1, 3),
        st.lists(st.integers(1, 60), min_size=1, max_size=5),
        st.lists(st.integers(0, 300), min_size=1, max_size=5),
    )
    def test_never_a_splice(self, family, quorum, steps, lags):
        honest, full_copies, finals, _poisoners = family
        streams = [Stream(name=str(i)) for i in range(len(finals))]
        merge = QuorumMerge(quorum)
        for s in streams:
            merge.add(s)
        round_ = 0
        while any(len(s.body) < len(f) for s, f in zip(streams, finals, strict=True)):
            for i, (stream, final) in enumerate(zip(streams, finals, strict=True)):
                step = steps[(round_ + i) % len(steps)]
                stream.body += final[len(stream.body) : len(stream.body) + step]
                stream.ended = len(stream.body) == len(final) and (round_ + i) % 2 == 0
            longest = max(len(s.body) for s in streams)
            merge.advance(max(0, longest - lags[round_ % len(lags)]))
            result = merged(merge)
            self.assertTrue(any(f.startswith(result) for f in finals), "a splice while running")
            round_ += 1
        for s in streams:
            s.ended = True
        merge.advance()
        result = merged(merge)
        self.assertTrue(any(f.startswith(result) for f in finals), "a splice")
        self.assertTrue(any(f == result for f in finals), "not a whole stream")
        if full_copies >= 2 and quorum >= 2:
            # Two or more full honest copies outvote any lone poisoner (with a
            # quorum of 1 the first stream to arrive is believed).
            self.assertEqual(result, honest)
