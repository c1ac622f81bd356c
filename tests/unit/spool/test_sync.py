"""Tests of ``sync``."""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from faf_replay.spool.spool import Spool
from faf_replay.spool.sync import SpoolSync
from tests.unit.spool.test_spool import Writer


class Syncing(SynchronousTestCase):
    def test_the_sync_service_syncs_every_interval_and_at_the_end(self):
        writer = Writer()
        spool = Spool(self.mktemp(), writer.submit)
        clock = Clock()
        service = SpoolSync(spool, clock, interval=5)
        service.startService()
        clock.advance(4.9)
        self.assertEqual(writer.jobs, [])
        clock.advance(0.1)
        self.assertEqual(len(writer.jobs), 1)
        service.stopService()  # a last sync, for the next run
        self.assertEqual(len(writer.jobs), 2)
        writer.run()
