"""WebSocket pings on a fake clock: when a ping goes, and when silence is a verdict."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from faf_replay.websocket_pings import PING_ON_THE_WIRE, Pings


class Peer:
    """What the pings see of one connection: the pings sent, the bytes acknowledged."""

    def __init__(self, interval: float = 30.0, timeout: float = 20.0) -> None:
        self.clock = Clock()
        self.pings: list[bytes] = []
        self.acknowledged: int | None = 1000
        self.vanished_at: float | None = None
        self.subject = Pings(
            self.clock,
            interval,
            timeout,
            send=self.pings.append,
            acknowledged=lambda: self.acknowledged,
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
        self.subject.pong(self.pings[-1])


class Idle(SynchronousTestCase):
    def test_an_idle_peer_that_answers_is_pinged_every_interval_and_kept(self):
        peer = Peer(interval=30, timeout=20)
        peer.advance_to(29.9)
        self.assertEqual(peer.pings, [])
        for ping in range(1, 11):
            peer.advance_to(30.0 * ping)
            self.assertEqual(len(peer.pings), ping)
            peer.clock.advance(0.5)
            peer.answer()
        self.assertEqual(len(set(peer.pings)), 10)  # each its own payload
        self.assertIsNone(peer.vanished_at)

    def test_a_peer_that_speaks_is_not_pinged(self):
        peer = Peer(interval=30, timeout=20)
        for second in range(1, 301):
            peer.advance_to(second)
            peer.subject.heard()
        self.assertEqual(peer.pings, [])
        # Silent from 300 s: the check at 330 s still finds the bytes of 300 s;
        # the one at 360 s pings. A silent peer is pinged within two intervals.
        peer.advance_to(359)
        self.assertEqual(peer.pings, [])
        peer.advance_to(360)
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

    def test_the_ping_acknowledged_by_a_proxy_is_not_an_answer(self):
        peer = Peer(interval=30, timeout=20)
        peer.advance_to(30)
        peer.acknowledged += PING_ON_THE_WIRE  # the ping itself, acknowledged by the next hop
        peer.advance_to(50)
        self.assertEqual(peer.vanished_at, 50)

    def test_a_wrong_or_late_pong_is_no_answer(self):
        peer = Peer(interval=30, timeout=20)
        peer.advance_to(30)
        peer.subject.pong(b"not ours")
        peer.advance_to(50)
        self.assertEqual(peer.vanished_at, 50)

    def test_anything_heard_is_an_answer(self):
        peer = Peer(interval=30, timeout=20)
        peer.advance_to(30)
        peer.advance_to(45)
        peer.subject.heard()  # replay bytes, no pong
        peer.advance_to(79)
        self.assertIsNone(peer.vanished_at)
        self.assertEqual(len(peer.pings), 1)
        peer.advance_to(1000)  # silent from 45 s: pinged at 80 s, judged at 100 s
        self.assertEqual(len(peer.pings), 2)
        self.assertEqual(peer.vanished_at, 100)

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


class SlowReader(SynchronousTestCase):
    """A watcher reading a long backlog slowly: its ping waits behind the bytes
    queued before it, and it must not be judged while it still reads them."""

    def test_kept_while_it_acknowledges_and_judged_once_nothing_moves(self):
        peer = Peer(interval=30, timeout=20)
        peer.advance_to(30)  # the ping goes behind a full socket
        for second in range(31, 200):
            peer.advance_to(second)
            peer.acknowledged += 1400  # reading slowly, the ping not reached yet
        self.assertIsNone(peer.vanished_at)
        stopped = peer.clock.seconds()
        peer.advance_to(stopped + 40)  # now nothing moves: two timeouts at most
        self.assertIsNotNone(peer.vanished_at)
        self.assertLessEqual(peer.vanished_at, stopped + 40)

    def test_unknown_acknowledgements_never_keep_it(self):
        peer = Peer(interval=30, timeout=20)
        peer.acknowledged = None  # not a TCP socket
        peer.advance_to(50)
        self.assertEqual(peer.vanished_at, 50)
