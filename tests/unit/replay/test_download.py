"""Tests of ``download``."""

from __future__ import annotations

from tests.support.metrics import metric
from tests.support.recordings import recording
from tests.unit.accept.test_replay_protocol import SETTINGS, ProtocolTestCase


class WatcherTestCase(ProtocolTestCase):
    """A watcher whose socket stays full (StringTransport: no socket, so progress is
    judged by the transport's pauses and resumes alone)."""

    settings = SETTINGS.replace(watcher_stall_timeout=120, delay=0)

    def watcher(self):
        uploader, _ = self.connect()
        uploader.dataReceived(b"P/8/p\0" + recording("example"))
        protocol, transport = self.connect()
        protocol.dataReceived(b"G/8/w\0")
        self.advance(2)
        return protocol, transport


class StalledWatchers(WatcherTestCase):
    def test_a_watcher_that_reads_nothing_is_closed(self):
        protocol, transport = self.watcher()
        before = metric("replayserver_stalled_watchers_total")
        protocol._sub.pauseProducing()  # its socket is full and stays so
        self.advance(119)
        self.assertFalse(transport.disconnecting)
        self.advance(2)
        self.assertTrue(transport.disconnected)  # aborted: it would never read a close
        self.assertEqual(metric("replayserver_stalled_watchers_total"), before + 1)
        [line] = self.logs.matching("acknowledged nothing for 120 s while its socket stayed full")
        self.assertIn("watcher 'w' from 192.0.2.7:40002", line)

    def test_a_slow_watcher_is_never_cut(self):
        protocol, transport = self.watcher()
        for _ in range(20):  # its socket fills again and again, and drains every 100 s
            protocol._sub.pauseProducing()
            self.advance(100)
            protocol._sub.resumeProducing()
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.logs.matching("acknowledged nothing"), [])


class StalledWatchersOff(WatcherTestCase):
    settings = WatcherTestCase.settings.replace(watcher_stall_timeout=0)

    def test_zero_is_off(self):
        protocol, transport = self.watcher()
        protocol._sub.pauseProducing()
        self.advance(10_000)
        self.assertFalse(transport.disconnecting)
