"""Tests of ``stream``."""

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from faf_replay.replay.stream import RESUME_AFTER, WRITE_AT, RawStore, UploadStream
from faf_replay.replay.uploads import UploadRecord
from faf_replay.spool.files import SpoolFile
from tests.support.recordings import chunks, recording, split
from tests.unit.spool.test_spool import Writer


class SpooledStreams(SynchronousTestCase):
    def spooled(self, writer=None, file_class=SpoolFile):
        file = file_class(Path(self.mktemp()), b"p\0")
        errors = []
        writer = writer or Writer()
        self.resumed = []
        store = RawStore(
            file, writer.write, on_error=errors.append, resume=writer.resume, on_resumed=self.resumed.append
        )
        return UploadStream("p", store), file, errors

    def test_every_byte_reaches_the_disk_and_memory_lets_go(self):
        stream_bytes = recording("example")
        header, body = split(stream_bytes)
        writer = Writer()
        upload, file, _ = self.spooled(writer)
        for piece in chunks(stream_bytes, [1, 100, 3000, 7]):
            upload.feed(piece)
            if len(upload.store.tail) > 5000:
                upload.flush()  # once a tick, in the server
        self.assertEqual(upload.header, header)
        self.assertEqual(upload.body[0 : len(body)], body)  # from disk and memory
        writer.run()
        upload.flush()
        writer.run()
        self.assertEqual(len(upload.store.tail), 0)  # all on disk now
        self.assertEqual(file.size, len(stream_bytes))
        self.assertEqual(upload.body[0 : len(body)], body)
        self.assertEqual(upload.body[100:200], body[100:200])
        self.assertEqual(upload.body[5], body[5])
        self.assertEqual(upload.body[-1], body[-1])
        with open(file.path, "rb") as raw:
            self.assertEqual(raw.read(), b"p\0" + stream_bytes)

    def test_the_disk_failing_midway_keeps_the_rest_in_memory(self):
        class FullDisk(SpoolFile):
            def write(self, data):
                if self._written + len(data) > 10_000:
                    raise OSError(28, "No space left on device")
                return super().write(data)

        stream_bytes = recording("example")
        writer = Writer()
        upload, file, errors = self.spooled(writer, FullDisk)
        for piece in chunks(stream_bytes, [1000]):
            upload.feed(piece)
            upload.flush()
            writer.run()
        self.assertEqual(len(errors), 1)
        self.assertEqual(upload.header + upload.body[0 : len(upload.body)], stream_bytes)
        self.assertEqual(file.size, 10_000)

    def test_a_disk_with_room_again_takes_the_upload_again(self):
        """Found by the chaos soak: a spool full for seconds left every upload then running in
        memory for the rest of its game, so that a kill -9 minutes later lost all of it since."""

        class FullForAWhile(SpoolFile):
            full = False

            def write(self, data):
                if FullForAWhile.full:
                    raise OSError(28, "No space left on device")
                return super().write(data)

        stream_bytes = recording("example")
        writer = Writer()
        upload, file, errors = self.spooled(writer, FullForAWhile)
        for second, piece in enumerate(chunks(stream_bytes, [1000])):
            FullForAWhile.full = 10 <= second < 20  # full from the 10th second to the 20th
            upload.feed(piece)
            upload.flush(now=float(second))
            writer.run()
            if second == 19:
                self.assertEqual(file.size, 10_000)  # while full: nothing more on disk
        self.assertEqual(len(errors), 1)
        self.assertTrue(self.resumed)
        self.assertGreater(file.size, 40_000)  # on disk again before the game ended
        # Offered again every RESUME_AFTER seconds: taken within that of the room coming back.
        self.assertTrue(20_000 < self.resumed[0] <= (20 + RESUME_AFTER + 1) * 1000, self.resumed)
        upload.flush()
        writer.run()
        self.assertEqual(upload.store.tail, b"")
        with open(file.path, "rb") as raw:
            self.assertEqual(raw.read(), b"p\0" + stream_bytes)  # every byte once, in order
        self.assertEqual(upload.header + upload.body[0 : len(upload.body)], stream_bytes)

    def test_new_bytes_are_written_every_interval_or_when_many(self):
        writer = Writer()
        file = SpoolFile(Path(self.mktemp()), b"p\0")
        store = RawStore(file, writer.write, interval=5.0)
        store.append(b"a" * 100)
        store.flush(now=0.0)  # the first bytes at once: the file exists early
        store.append(b"b" * 100)
        store.flush(now=4.9)
        self.assertEqual(len(writer.jobs), 1)
        store.flush(now=5.0)
        self.assertEqual(len(writer.jobs), 2)
        store.append(b"c" * WRITE_AT)
        store.flush(now=5.1)  # plenty waiting: no need to wait
        store.append(b"d")
        store.flush(now=5.2)
        self.assertEqual(len(writer.jobs), 3)
        store.flush()  # the end of the game: everything
        writer.run()
        self.assertEqual(file.size, 201 + WRITE_AT)
        self.assertEqual(store.tail, b"")
        self.assertEqual(store.read(0, len(store)), b"a" * 100 + b"b" * 100 + b"c" * WRITE_AT + b"d")

    def test_writes_queued_behind_a_failed_one_are_refused(self):
        class FlakyDisk(SpoolFile):
            calls = 0

            def write(self, data):
                FlakyDisk.calls += 1
                if FlakyDisk.calls == 2:  # a moment of a full disk, then room again
                    self.broken = True
                    raise OSError(28, "No space left on device")
                return super().write(data)

        stream_bytes = recording("example")
        writer = Writer()
        upload, file, errors = self.spooled(writer, FlakyDisk)
        for piece in chunks(stream_bytes, [3000, 3000, 3000]):
            upload.feed(piece)
            upload.flush()  # three writes queued before the writer runs
        writer.run()
        upload.feed(b"")
        self.assertEqual(len(errors), 1)
        self.assertEqual(file.size, 3000)
        with open(file.path, "rb") as raw:  # only a prefix, never a gap
            self.assertEqual(raw.read(), b"p\0" + stream_bytes[:3000])
        self.assertEqual(upload.header + upload.body[0 : len(upload.body)], stream_bytes[: len(upload.store)])
        self.assertEqual(len(upload.store), len(stream_bytes))
        upload.flush(now=0.0)
        upload.flush(now=RESUME_AFTER)  # room again: all of it goes to the file, once
        more = b"\x00\x07\x00more"  # and the game goes on while the writer has it
        upload.feed(more)
        writer.run()
        with open(file.path, "rb") as raw:
            self.assertEqual(raw.read(), b"p\0" + stream_bytes)
        self.assertEqual(upload.header + upload.body[0 : len(upload.body)], stream_bytes + more)
        upload.flush()
        writer.run()
        self.assertEqual((file.size, upload.store.tail), (len(stream_bytes) + len(more), b""))

    def test_without_a_spool_everything_stays_in_memory(self):
        upload = UploadStream("p")
        for piece in chunks(recording("example"), [500]):
            upload.feed(piece)
        upload.flush()
        self.assertEqual(upload.header + upload.body[0 : len(upload.body)], recording("example"))

    def test_recovered(self):
        path = Path(self.mktemp())
        SpoolFile(path, b"Rowan\0").write(recording("8805603"))
        stream = UploadStream.recovered("Rowan", SpoolFile.existing(path))
        self.assertTrue(UploadRecord(stream).ended)  # no connection: no more bytes will come
        self.assertEqual(stream.header + stream.body[0 : len(stream.body)], recording("8805603"))
        broken_path = Path(self.mktemp())
        SpoolFile(broken_path, b"x\0").write(b"not a replay at all" * 10)
        broken = UploadStream.recovered("x", SpoolFile.existing(broken_path))
        self.assertIsNone(broken.header)
        self.assertEqual(len(broken.body), 0)
