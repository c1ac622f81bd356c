"""Tests of ``files``."""

import errno
import os
import signal
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from faf_replay.spool.files import Descriptors, SpoolFile
from faf_replay.spool.spool import Spool
from tests.unit.spool.test_spool import Writer


class Files(SynchronousTestCase):
    def test_the_writer_creates_appends_and_closes(self):
        path = self.mktemp()
        file = SpoolFile(Path(path), b"name\0")
        self.assertFalse(os.path.exists(path))  # created with the first bytes, by the writer
        self.assertEqual(file.write(b"hello "), 6)
        self.assertEqual(file.write(memoryview(b"world")), 5)
        file.size = 11  # what the owner confirms
        self.assertEqual((file.read(0, 11), file.read(6, 5)), (b"hello world", b"world"))
        file.close()
        with open(path, "rb") as raw:
            self.assertEqual(raw.read(), b"name\0hello world")
        self.assertRaises(OSError, file.write, b"late")
        again = SpoolFile.existing(Path(path))
        self.assertEqual((again.name, again.size, again.read(0, 5)), ("name", 11, b"hello"))

    def test_a_failed_write_leaves_the_file_as_it_was(self):
        file = SpoolFile(Path(self.mktemp()))
        file.write(b"kept")
        os.close(file.fd)  # the next write fails
        with self.assertRaises(OSError):
            file.write(b"lost")
        self.assertEqual(file._written, 4)

    def test_a_name_the_disk_refused_leaves_no_file(self):
        """Found by the chaos soak: a spool full when an upload began left its file created
        but without the upload's name; the next write that got through put the replay's bytes
        where the name belongs, and reading them back failed (a critical line, a tick lost)."""
        path = Path(self.mktemp())
        file = SpoolFile(path, b"p0.SCFAreplay\0")
        real_write = os.write

        def full(fd, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(os, "write", full)
        with self.assertRaises(OSError):
            file.write(b"header")
        self.assertFalse(path.exists())
        self.patch(os, "write", real_write)
        self.assertEqual(file.rewrite_from(0, b"header+body"), 11)
        self.assertEqual(path.read_bytes(), b"p0.SCFAreplay\0header+body")
        file.size = 11
        self.assertEqual(file.read(0, 11), b"header+body")
        self.assertEqual(SpoolFile.existing(path).name, "p0.SCFAreplay")

    def test_a_file_the_disk_would_not_create_refuses_the_writes_behind(self):
        """The spool's writer takes a batch of writes at once: when the first of an upload's
        could not even create its file, the next one of the batch created it and put its
        bytes where the first one's belong (not a prefix of the upload any more; found by
        reading the code after the soak). Refused until the writer rewrites from the start."""
        path = Path(self.mktemp())
        file = SpoolFile(path, b"p0.SCFAreplay\0")
        real_open = os.open

        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(os, "open", full)
        with self.assertRaises(OSError):
            file.write(b"header")
        self.patch(os, "open", real_open)
        with self.assertRaises(OSError):
            file.write(b"+body")  # queued behind it in the same batch
        self.assertFalse(path.exists())
        self.assertEqual(file.rewrite_from(0, b"header+body"), 11)
        self.assertEqual(path.read_bytes(), b"p0.SCFAreplay\0header+body")

    def test_at_most_the_limit_of_files_hold_a_descriptor(self):
        descriptors = Descriptors(limit=3)
        directory = Path(self.mktemp())
        directory.mkdir()
        before = len(os.listdir("/proc/self/fd"))
        files = [SpoolFile(directory / f"{n}.upload", b"p\0", descriptors) for n in range(10)]
        for round_ in range(3):
            for n, file in enumerate(files):
                file.write(f"{round_}:{n};".encode())
                self.assertLessEqual(len(os.listdir("/proc/self/fd")) - before, 3)
        self.assertEqual(len(descriptors), 3)
        self.assertGreater(descriptors.evictions, 20)
        for n, file in enumerate(files):  # given-up descriptors are opened again to read
            file.size = file._written
            self.assertEqual(file.read(0, file.size), f"0:{n};1:{n};2:{n};".encode())
        self.assertLessEqual(len(os.listdir("/proc/self/fd")) - before, 3)
        for file in files:
            file.close()
        self.assertEqual((len(descriptors), len(os.listdir("/proc/self/fd"))), (0, before))
        self.assertRaises(OSError, files[0].read, 0, 1)
        again = SpoolFile.existing(files[4].path, descriptors)
        self.assertEqual((len(descriptors), again.read(0, 4)), (0, b"0:4;"))
        self.assertEqual(len(descriptors), 1)
        again.close()

    def test_a_file_busy_in_another_thread_keeps_its_descriptor(self):
        descriptors = Descriptors(limit=1)
        directory = Path(self.mktemp())
        directory.mkdir()
        busy, other = (SpoolFile(directory / f"{n}.upload", b"", descriptors) for n in (1, 2))
        busy.write(b"busy")
        with busy._lock:  # as if the reactor were reading it right now
            other.write(b"other")  # evicts busy: skipped, not waited for
            self.assertIsNotNone(busy.fd)
        self.assertEqual(descriptors.evictions, 0)
        busy.size = 4
        self.assertEqual(busy.read(0, 4), b"busy")  # registered again by its next use
        self.assertEqual((len(descriptors), other.fd, descriptors.evictions), (1, None, 1))
        busy.close()
        other.close()

    def test_game_folders_are_the_writers_work(self):
        writer = Writer()
        spool = Spool(self.mktemp(), writer.submit)
        game = spool.game(12, 1000.0)
        first, second = game.new_upload("a.SCFAreplay"), game.new_upload("b/c")
        self.assertEqual([first.path.name, second.path.name], ["1.upload", "2.upload"])
        self.assertFalse(game.directory.exists())  # nothing done on the caller's thread
        writer.run()
        self.assertTrue((game.directory / "record.json").exists())
        written = []
        spool.write(first, b"x", written.append)
        spool.write(second, b"yz", written.append)
        spool.write(first, b"w", written.append)
        self.assertEqual(writer.jobs, [])  # queued until sent
        spool.send()
        self.assertEqual(len(writer.jobs), 1)  # one job for the whole batch
        writer.run()
        self.assertEqual(written, [1, 2, 1])
        with open(first.path, "rb") as raw:
            self.assertEqual(raw.read(), b"a.SCFAreplay\0xw")  # the name first, for recovery
        spool.sync()
        writer.run()
        spool.write(second, b"!", written.append)
        game.remove()
        self.assertTrue(game.directory.exists())
        self.assertEqual(len(writer.jobs), 2)  # the queued write goes first
        writer.run()
        self.assertEqual(written, [1, 2, 1, 1])
        self.assertFalse(game.directory.exists())
        spool.emptier.wait()
        self.assertEqual(os.listdir(spool.trash), [])
        self.assertTrue(first.closed)

    def test_a_failed_job_is_reported(self):
        errors = []
        spool = Spool(self.mktemp())
        spool.on_error = errors.append
        spool.submit(lambda: 1 / 0, spool.report)
        self.assertEqual([type(e) for e in errors], [ZeroDivisionError])

    def test_recover(self):
        directory = self.mktemp()
        before = Spool(directory)
        game = before.game(77, 1234.5)
        game.new_upload("Rowan.SCFAreplay").write(b"abc")
        game.new_upload("Kim.SCFAreplay").write(b"defg")
        os.makedirs(os.path.join(directory, "games", "not-a-game"))
        after = Spool(directory)
        [found] = after.recover()
        self.assertEqual((found.game_id, found.started_at), (77, 1234.5))
        self.assertEqual([(u.number, u.name, u.file.size) for u in found.uploads], [
            (1, "Rowan.SCFAreplay", 3), (2, "Kim.SCFAreplay", 4),
        ])  # fmt: skip
        # a new upload of a recovered game takes the next number
        self.assertEqual(found.spool.new_upload("late").path.name, "3.upload")

    def test_recover_without_a_record(self):
        directory = self.mktemp()
        game = Spool(directory).game(5, 1.0)
        game.new_upload("x").write(b"data")
        os.unlink(game.directory / "record.json")
        [found] = Spool(directory).recover()
        self.assertEqual([(u.name, u.file.read(0, 4)) for u in found.uploads], [("x", b"data")])
        self.assertNotEqual(found.started_at, 1.0)  # the folder's age instead

    def test_a_fork_after_the_emptier_started_still_empties(self):
        """twistd's daemon mode forks after makeService, where a kill's leftovers start the
        emptier's thread: the child has no such thread, and its trash was never emptied."""
        directory = self.mktemp()
        spool = Spool(directory)
        (spool.trash / "1.a").mkdir()
        started = Spool(directory)  # the leftover starts its emptier
        started.emptier.wait()
        (spool.trash / "2.b").mkdir()
        child = os.fork()
        if child == 0:  # pragma: no cover - the child's exit status is the verdict
            signal.alarm(10)  # a trash never emptied ends the child by SIGALRM
            started.emptier.delete(started.trash / "2.b")
            started.emptier.wait()
            os._exit(0)
        _, status = os.waitpid(child, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        self.assertEqual(os.listdir(spool.trash), [])

    def test_a_new_start_empties_the_trash(self):
        directory = self.mktemp()
        spool = Spool(directory)
        (spool.trash / "5.abc").mkdir()
        (spool.trash / "5.abc" / "1.upload").write_bytes(b"x")
        Spool(directory).emptier.wait()
        self.assertEqual(os.listdir(spool.trash), [])
