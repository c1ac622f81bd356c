"""WebSocket pings on a fake clock: when a ping goes, and when silence is a verdict."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from faf_replay.accept.websocket_pings import Pings


class Peer:
    """What the pings see of one connection: the pings sent, and the bytes the
    kernel still holds for the peer unacknowledged."""

    def __init__(self, interval: float = 30.0, timeout: float = 20.0) -> None:
        self.clock = Clock()
        self.pings: list[bytes] = []
        self.queued: int | None = 0
        self.vanished_at: float | None = None
        self.subject = Pings(
            self.clock,
            interval,
            timeout,
            send=self.pings.append,
            unacknowledged=lambda: self.queued,
            vanished=self.vanished,
        )
        self.subject.start()

    def vanished(self) -> None:
        assert self.vanished_at is None, "judged twice"
        self.vanished_at = self.clock.seconds()

    def advance_to(self, when: float) -> None:
        """Move time on call by call (``Clock.advance`` jumps to its end first,
        so a call it runs would schedule the next one from there)."""
        while True:
            due = [call.getTime() for call in self.clock.getDelayedCalls()]
            step = min([time for time in due if time <= when], default=when)
            self.clock.advance(step - self.clock.seconds())
            if step >= when:
                return

    def answer(self) -> None:
        self.subject.heard()  # the pong's bytes
        self.subject.pong(self.pings[-1])


class Idle(SynchronousTestCase):
    def test_an_idle_peer_that_answers_is_pinged_every_interval_and_kept(self):
        peer = Peer(interval=30, timeout=20)
        peer.advance_to(29.9)
        self.assertEqual(peer.pings, [])
        for ping in range(1, 11):
            peer.advance_to(30.5 * ping - 0.5)  # each pong half a second after its ping
            self.assertEqual(len(peer.pings), ping)
            peer.advance_to(30.5 * ping)
            peer.answer()
        self.assertEqual(len(set(peer.pings)), 10)  # each its own payload
        self.assertIsNone(peer.vanished_at)

    def test_a_silent_peer_is_pinged_one_interval_after_it_was_last_heard(self):
        peer = Peer(interval=30, timeout=20)
        for second in range(1, 301):
            peer.advance_to(second)
            peer.subject.heard()
        self.assertEqual(peer.pings, [])
        peer.advance_to(329.9)
        self.assertEqual(peer.pings, [])
        peer.advance_to(330)
        self.assertEqual(len(peer.pings), 1)

    def test_no_pong_is_the_verdict_after_the_timeout(self):
        peer = Peer(interval=30, timeout=20)
        peer.advance_to(30)
        self.assertEqual(len(peer.pings), 1)
        peer.advance_to(49.9)
        self.assertIsNone(peer.vanished_at)
        peer.advance_to(50)
        self.assertEqual(peer.vanished_at, 50)
        self.assertEqual(len(peer.pings), 1)  # and nothing more is sent to it
        peer.advance_to(500)
        self.assertEqual(len(peer.pings), 1)

    def test_a_wrong_pong_is_no_answer(self):
        peer = Peer(interval=30, timeout=20)
        peer.advance_to(30)
        peer.subject.pong(b"not ours")
        peer.advance_to(50)
        self.assertEqual(peer.vanished_at, 50)

    def test_anything_heard_is_an_answer(self):
        peer = Peer(interval=30, timeout=20)
        peer.advance_to(45)
        peer.subject.heard()  # replay bytes, no pong
        peer.advance_to(74)
        self.assertIsNone(peer.vanished_at)
        self.assertEqual(len(peer.pings), 1)
        peer.advance_to(1000)  # silent from 45 s: pinged at 75 s, judged at 95 s
        self.assertEqual(len(peer.pings), 2)
        self.assertEqual(peer.vanished_at, 95)

    def test_stopped(self):
        peer = Peer(interval=30, timeout=20)
        peer.advance_to(30)
        peer.subject.stop()
        peer.advance_to(1000)
        self.assertIsNone(peer.vanished_at)
        self.assertEqual(len(peer.pings), 1)

    def test_zero_interval_is_off(self):
        peer = Peer(interval=0, timeout=20)
        peer.advance_to(100_000)
        self.assertEqual(peer.pings, [])
        self.assertEqual(peer.clock.getDelayedCalls(), [])


class BehindItsOwnBytes(SynchronousTestCase):
    """A watcher that reads slowly, or has paused: its ping waits in the kernel
    behind bytes it has not taken. It is not judged by pongs while they wait."""

    def test_not_judged_while_the_kernel_holds_bytes_for_it(self):
        peer = Peer(interval=30, timeout=20)
        peer.queued = 4_000_000
        peer.advance_to(1000)
        self.assertIsNone(peer.vanished_at)
        self.assertEqual(len(peer.pings), 1)  # one ping, waiting
        peer.queued = 0  # everything taken, the ping too, and still no pong
        peer.advance_to(1020)
        self.assertIsNotNone(peer.vanished_at)
        self.assertLessEqual(peer.vanished_at, 1020)

    def test_its_pong_after_the_backlog_keeps_it(self):
        peer = Peer(interval=30, timeout=20)
        peer.queued = 100_000
        peer.advance_to(200)
        peer.queued = 0
        peer.answer()
        peer.advance_to(10_000)  # from then on idle, answering nothing: judged once, later
        self.assertGreater(peer.vanished_at, 200)

    def test_unknown_is_nothing_held(self):
        peer = Peer(interval=30, timeout=20)
        peer.queued = None  # not a TCP socket
        peer.advance_to(50)
        self.assertEqual(peer.vanished_at, 50)
