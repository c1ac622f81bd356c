"""Tests of ``uploads``."""

from twisted.trial.unittest import SynchronousTestCase

from faf_replay.replay.stream import UploadStream
from faf_replay.replay.uploads import UploadRecord


class Uploader:
    def __init__(self):
        self.stream = UploadStream("p")
        self.peer = "127.0.0.1:1"


class Records(SynchronousTestCase):
    def test_does_an_upload_still_count(self):
        uploader = Uploader()
        record = UploadRecord(uploader.stream, uploader)
        self.assertEqual(
            (record.connected, record.ended, record.holding, record.voting), (True, False, True, False)
        )
        uploader.stream.header = b"header"  # its replay header is in: it votes
        self.assertTrue(record.voting)
        record.stalled = True
        self.assertFalse(record.voting)
        record.stalled, record.silent = False, True
        self.assertEqual((record.voting, record.holding), (True, False))
        record.end()  # closing: no more bytes, still connected
        self.assertEqual((record.connected, record.voting), (True, False))
        record.paused = True
        record.left()  # gone: nothing to wake at the tick, nothing to hold the game open
        self.assertEqual((record.connected, record.holding, record.silent, record.paused), (False,) * 4)
        recovered = UploadRecord(UploadStream("r"))
        self.assertEqual((recovered.connected, recovered.ended), (False, True))
