from twisted.trial.unittest import SynchronousTestCase

from faf_replay.replay.delay import DelayWindow


class DelayWindowTests(SynchronousTestCase):
    def test_nothing_before_the_delay(self):
        window = DelayWindow(300)
        window.record(0, 0)
        window.record(1, 500)
        self.assertEqual(window.limit(1), 0)
        self.assertEqual(window.limit(300), 0)
        self.assertEqual(window.limit(301), 500)

    def test_limit_is_the_newest_sample_old_enough(self):
        window = DelayWindow(10)
        for second in range(100):
            window.record(second, second * 100)
            self.assertEqual(window.limit(second), max(0, (second - 10) * 100))

    def test_never_ahead_between_samples(self):
        window = DelayWindow(10)
        window.record(0, 100)
        window.record(5, 200)
        self.assertEqual(window.limit(14.999), 100)
        self.assertEqual(window.limit(15), 200)

    def test_memory_stays_within_the_window(self):
        window = DelayWindow(10)
        for second in range(10_000):
            window.record(second, second)
            window.limit(second)
        self.assertLessEqual(len(window._samples), 12)

    def test_unchanged_lengths_are_not_stored(self):
        window = DelayWindow(10)
        for second in range(1000):
            window.record(second, 42)
        self.assertEqual(len(window._samples), 1)
        self.assertEqual(window.limit(1000), 42)

    def test_zero_delay(self):
        window = DelayWindow(0)
        window.record(3, 77)
        self.assertEqual(window.limit(3), 77)

    def test_negative_delay_refused(self):
        self.assertRaises(ValueError, DelayWindow, -1)
