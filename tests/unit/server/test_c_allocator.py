"""What glibc's malloc holds, as the metrics say it: seen move with a real allocation."""

import ctypes

from twisted.trial.unittest import SynchronousTestCase

from faf_replay import metrics  # noqa: F401 - registers the gauges
from faf_replay.server.c_allocator import c_allocator
from tests.support.metrics import metric

SIZE = 64 * 1024  # below glibc's mmap threshold: a block of the heap, which its free keeps


class CAllocator(SynchronousTestCase):
    def setUp(self):
        if c_allocator() is None:
            self.fail("no mallinfo2: the tests run on glibc (Debian)")
        self.libc = ctypes.CDLL(None)
        self.libc.malloc.restype = ctypes.c_void_p
        self.libc.malloc.argtypes = [ctypes.c_size_t]
        self.libc.free.argtypes = [ctypes.c_void_p]

    def test_an_allocation_is_in_use_and_its_free_is_free(self):
        # a block below the last one keeps the freed one inside the heap (not trimmed away)
        blocks = [self.libc.malloc(SIZE) for _ in range(2)]
        before = c_allocator()
        self.libc.free(blocks[0])
        after = c_allocator()
        self.libc.free(blocks[1])
        self.assertGreaterEqual(before.in_use - after.in_use, SIZE)
        self.assertGreaterEqual(after.free - before.free, SIZE)

    def test_the_metrics_say_it(self):
        big = 4 * 1024 * 1024  # mapped alone, given back at its free: a step well over the noise
        block = self.libc.malloc(big)
        in_use = metric("replayserver_c_allocator_in_use_bytes")
        self.libc.free(block)
        self.assertGreater(in_use - metric("replayserver_c_allocator_in_use_bytes"), big * 0.9)
