"""The spool on a real disk: files, recovery, and games brought back after a crash."""

import io
import json
import os
import stat
import sys
from pathlib import Path

import fafreplay
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from faf_replay.replay.finished import SaveOutcome
from faf_replay.replay.game import State
from faf_replay.replay.registry import GameRegistry
from faf_replay.replay.stream import WRITE_AT, RawStore, UploadStream
from faf_replay.replay.uploads import UploadRecord
from faf_replay.save.attempts import SAVE_RETRY_FIRST, SAVE_RETRY_MAX
from faf_replay.save.vault import vault_path
from faf_replay.settings import Settings
from faf_replay.spool.files import Descriptors, SpoolFile
from faf_replay.spool.spool import Spool, run_now
from faf_replay.spool.sync import SpoolSync
from faf_replay.tools import unquarantine as quarantine
from tests.fakes import FakeUploader, FakeWatcher, Saves
from tests.logs import CapturedLogs
from tests.metrics import metric
from tests.recordings import chunks, poisoned, recording, split

SETTINGS = Settings(delay=10, sample_interval=1, grace=5, stall_timeout=60)


class Writer:
    """The spool's writer, by hand: jobs wait until the test runs them."""

    def __init__(self):
        self.jobs = []

    def submit(self, job, done):
        self.jobs.append((job, done))

    def write(self, file, data, done):
        self.submit(lambda: file.write(data), done)

    def run(self):
        while self.jobs:
            job, done = self.jobs.pop(0)
            run_now(job, done)


class Location(SynchronousTestCase):
    def test_by_default_inside_the_vault_and_only_for_the_server(self):
        vault = self.mktemp()
        directory = Path(Settings(vault=vault).spool_directory)
        self.assertEqual(directory, Path(vault).resolve() / ".faf-replay-spool")
        self.assertEqual(Path(Settings(vault=vault, spool="/srv/spool").spool_directory), Path("/srv/spool"))
        Spool(directory)
        self.assertEqual(stat.S_IMODE(directory.stat().st_mode), 0o700)
        os.chmod(directory, 0o755)  # loosened by hand: the next start makes it private again
        Spool(directory)
        self.assertEqual(stat.S_IMODE(directory.stat().st_mode), 0o700)


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

    def test_a_new_start_empties_the_trash(self):
        directory = self.mktemp()
        spool = Spool(directory)
        (spool.trash / "5.abc").mkdir()
        (spool.trash / "5.abc" / "1.upload").write_bytes(b"x")
        Spool(directory).emptier.wait()
        self.assertEqual(os.listdir(spool.trash), [])


class SpooledStreams(SynchronousTestCase):
    def spooled(self, writer=None, file_class=SpoolFile):
        file = file_class(Path(self.mktemp()), b"p\0")
        errors = []
        store = RawStore(file, (writer or Writer()).write, errors.append)
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


class Recovery(SynchronousTestCase):
    """A registry "crashes" (is dropped unsaved); a new one on the same spool recovers."""

    def setUp(self):
        self.directory = self.mktemp()
        self.logs = CapturedLogs(self)

    def registry(self, saves: Saves) -> tuple[GameRegistry, Clock]:
        clock = Clock()
        registry = GameRegistry(SETTINGS, clock, saves, spool=Spool(self.directory))
        registry.startService()
        return registry, clock

    def crash_during(self, game_id: int, streams: dict[str, bytes]) -> None:
        registry, clock = self.registry(Saves())
        game, _ = registry.game_for_upload(game_id)
        for name, data in streams.items():
            uploader = FakeUploader(game, name)
            game.add_uploader(uploader)
            for piece in chunks(data, [999]):
                uploader.send(piece)
        clock.advance(1)
        # kill -9: no save, no cleanup; the files stay as they were written

    def test_abandoned_game_is_saved_from_the_spool(self):
        stream = recording("example")
        half = len(stream) // 2
        self.crash_during(20, {"Rowan.SCFAreplay": stream[:half], "Kim.SCFAreplay": stream[: half + 500]})
        saves = Saves()
        registry, clock = self.registry(saves)
        game = registry.games[20]
        self.assertEqual(game.recorder, "Rowan")
        self.assertEqual(len(self.logs.matching("game 20: recovered from the spool (2 upload(s)")), 1)
        clock.advance(SETTINGS.grace)
        [replay] = saves.replays
        self.assertTrue(replay.recovered)
        self.assertEqual(replay.header + saves.bodies[0], stream[: half + 500])
        self.assertIs(game.state, State.DONE)
        self.assertEqual(os.listdir(os.path.join(self.directory, "games")), [])

    def test_uploaders_coming_back_continue_the_same_replay(self):
        stream = recording("22373098")
        self.crash_during(21, {"a": stream[:20_000], "b": stream[:15_000]})
        saves = Saves()
        registry, clock = self.registry(saves)
        game = registry.games[21]
        watcher = FakeWatcher(game)
        game.add_watcher(watcher)
        watcher.game_updated()
        for name in ("a", "b"):  # they send their whole stream again
            uploader = FakeUploader(game, name)
            self.assertTrue(game.add_uploader(uploader))
            uploader.send(stream)
            uploader.leave()
        clock.advance(1)
        clock.advance(SETTINGS.grace)
        self.assertEqual(len(saves.replays), 1)
        self.assertEqual(saves.replays[0].header + saves.bodies[0], stream)
        self.assertEqual(bytes(watcher.data), stream)

    def test_already_saved_game_leaves_the_spool(self):
        self.crash_during(22, {"a": recording("example")})
        saves = Saves(outcome=SaveOutcome.EXISTS)
        _, clock = self.registry(saves)
        clock.advance(SETTINGS.grace)
        self.assertEqual(len(saves.replays), 1)
        self.assertEqual(os.listdir(os.path.join(self.directory, "games")), [])

    def test_refused_vault_keeps_the_spool_for_the_next_run(self):
        self.crash_during(23, {"a": recording("example")})
        saves = Saves(outcome=SaveOutcome.FAILED)
        registry, clock = self.registry(saves)
        clock.advance(SETTINGS.grace)
        self.assertEqual(len(saves.replays), 1)
        registry.stopService()
        self.assertEqual(os.listdir(os.path.join(self.directory, "games")), ["23"])
        saves = Saves()
        registry, clock = self.registry(saves)
        clock.advance(SETTINGS.grace)
        self.assertEqual(saves.replays[0].header + saves.bodies[0], recording("example"))
        self.assertEqual(os.listdir(os.path.join(self.directory, "games")), [])


class Quarantine(Recovery):
    """A save that fails by the data itself is tried three times in all, across
    restarts, then the game's uploads go to ``<spool>/quarantine/``, whole."""

    def test_after_three_broken_saves_across_a_restart(self):
        self.crash_during(24, {"a": recording("example"), "b": recording("example")[:9000]})
        before = metric("replayserver_quarantined_replays_total")
        saves = Saves(outcome=SaveOutcome.BROKEN)
        registry, clock = self.registry(saves)
        clock.advance(SETTINGS.grace)  # the first try
        self.assertEqual(len(saves.replays), 1)
        registry.stopService()  # the second, as the server stops; then a restart
        self.assertEqual(len(saves.replays), 2)
        self.assertEqual(json.loads(self.record(24).read_text())["broken_saves"], 2)  # kept in the spool

        saves = Saves(outcome=SaveOutcome.BROKEN)
        registry, clock = self.registry(saves)
        clock.advance(SETTINGS.grace)  # the third: quarantine
        self.assertEqual(len(saves.replays), 1)
        self.assertEqual(registry.games, {})
        self.assertEqual(os.listdir(os.path.join(self.directory, "games")), [])
        [kept] = Path(self.directory, "quarantine").iterdir()
        self.assertTrue(kept.name.startswith("24-"))
        self.assertEqual(
            sorted(p.name for p in kept.iterdir()), ["1.upload", "2.upload", "record.json", "why.txt"]
        )
        self.assertEqual((kept / "1.upload").read_bytes(), b"a\0" + recording("example"))
        self.assertIn("saving failed 3 times", (kept / "why.txt").read_text())
        self.assertEqual(metric("replayserver_quarantined_replays_total"), before + 1)
        [line] = self.logs.matching("game 24: saving failed 3 times the same way; its uploads are kept")
        self.assertIn(str(kept), line)
        clock.advance(3600)
        self.assertEqual(len(saves.replays), 1)  # never tried again

        registry.stopService()
        registry, clock = self.registry(Saves())  # nor recovered by a later start
        self.assertEqual(registry.games, {})

    def test_a_game_whose_files_cannot_be_read_back_is_kept_and_the_server_starts(self):
        self.crash_during(26, {"a": recording("example")})
        self.crash_during(27, {"a": recording("8805603")})
        Path(self.directory, "games", "26", "2.upload").mkdir()  # an upload that is no file
        saves = Saves()
        registry, clock = self.registry(saves)
        self.assertEqual(sorted(registry.games), [27])
        [line] = self.logs.matching("game 26: cannot recover it from the spool (IsADirectoryError")
        [kept] = Path(self.directory, "quarantine").iterdir()
        self.assertIn(str(kept), line)
        self.assertEqual((kept / "1.upload").read_bytes(), b"a\0" + recording("example"))
        clock.advance(SETTINGS.grace)
        self.assertEqual(saves.replays[0].header + saves.bodies[0], recording("8805603"))

    def test_an_operator_puts_a_quarantined_game_into_the_vault(self):
        stream = poisoned()
        self.crash_during(28, {"Rowan.SCFAreplay": stream, "Kim.SCFAreplay": stream[:20_000]})
        saves = Saves(outcome=SaveOutcome.BROKEN)
        _, clock = self.registry(saves)
        for wait in (SETTINGS.grace, SAVE_RETRY_FIRST, SAVE_RETRY_FIRST * 2):  # three tries
            clock.advance(wait)
        [kept] = Path(self.directory, "quarantine").iterdir()
        vault = self.mktemp()
        output = io.StringIO()
        self.patch(sys, "stdout", output)
        self.assertEqual(quarantine.main([str(kept), "--vault", vault, "--zstd-level", "3"]), 0)
        with vault_path(vault, 28).open("rb") as file:
            self.assertEqual(fafreplay.extract_scfa(file), stream)  # the longest upload, as it came
        metadata = json.loads(vault_path(vault, 28).read_bytes().split(b"\n", 1)[0])
        self.assertEqual((metadata["uid"], metadata["recorder"]), (28, "Rowan"))
        self.assertIn("game 28: saved", output.getvalue())
        self.assertRaises(FileExistsError, quarantine.main, [str(kept), "--vault", vault])  # never over it

    def test_a_refusing_vault_is_retried_without_end(self):
        self.crash_during(25, {"a": recording("example")})
        saves = Saves(outcome=SaveOutcome.FAILED)
        _, clock = self.registry(saves)
        clock.advance(SETTINGS.grace)
        for _ in range(10):
            clock.advance(SAVE_RETRY_MAX)
        self.assertEqual(len(saves.replays), 11)
        self.assertEqual(os.listdir(os.path.join(self.directory, "games")), ["25"])
        self.assertFalse(Path(self.directory, "quarantine").exists())

    def record(self, game_id: int) -> Path:
        return Path(self.directory, "games", str(game_id), "record.json")


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
