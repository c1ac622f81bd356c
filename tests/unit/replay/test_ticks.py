"""Ticks counted as the body grows (``replay/ticks.py``), against fafreplay's own count."""

import random

import fafreplay
from twisted.trial.unittest import SynchronousTestCase

from faf_replay.replay.ticks import TickCounter
from tests.support.recordings import recording, split


class Counting(SynchronousTestCase):
    def test_in_pieces_of_any_size_as_fafreplay_counts(self):
        for name in ("example", "8805603", "22373098"):
            body = split(recording(name))[1]
            expected = fafreplay.body_ticks(body)
            rng = random.Random(name)
            counter, position = TickCounter(), 0
            while position < len(body):
                step = rng.choice([1, 2, 3, 7, 100, 4096])
                counter.feed(body[position : position + step])
                position += step
            self.assertEqual((counter.ticks, counter.fed), (expected, len(body)), name)

    def test_a_command_cut_short_is_not_counted_yet(self):
        advance = bytes([0, 7, 0]) + (5).to_bytes(4, "little")
        counter = TickCounter()
        self.assertEqual(counter.feed(advance * 2 + advance[:6]), 10)
        self.assertEqual(counter.feed(advance[6:]), 15)

    def test_a_size_under_three_ends_the_count_for_good(self):
        """A command whose size says 0 (what froze FAF's own counter) or 1 or 2 is no
        command: the pieces after it are not counted from wherever they begin."""
        advance = bytes([0, 7, 0]) + (5).to_bytes(4, "little")
        counter = TickCounter()
        self.assertEqual(counter.feed(advance + bytes.fromhex("010000")), 5)
        self.assertEqual(counter.feed(advance * 3), 5)
        self.assertEqual(counter.fed, 7 + 3 + 21)
