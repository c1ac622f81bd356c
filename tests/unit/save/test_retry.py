"""Tests of ``retry``."""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from faf_replay.save.retry import Retry


class Retries(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.tries = 0
        self.retry = Retry(self.clock, self.attempt, first=5, maximum=20)

    def attempt(self):
        self.tries += 1

    def test_the_wait_doubles_up_to_the_maximum(self):
        waits = []
        for _ in range(4):
            waits.append(self.retry.later())
            self.assertEqual(self.retry.later(), waits[-1])  # one at a time
            self.clock.advance(waits[-1] / 2)
            self.assertEqual(self.tries, len(waits) - 1)
            self.clock.advance(waits[-1] / 2)
            self.assertEqual(self.tries, len(waits))
        self.assertEqual(waits, [5, 10, 20, 20])

    def test_cancel_and_reset(self):
        self.retry.later()
        self.assertTrue(self.retry.pending)
        self.assertTrue(self.retry.cancel())
        self.assertFalse(self.retry.cancel())
        self.clock.advance(100)
        self.assertEqual(self.tries, 0)
        self.retry.reset()
        self.assertEqual(self.retry.later(), 5)
