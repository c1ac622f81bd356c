"""The spool on a real disk: files, recovery, and games brought back after a crash."""

import os

from twisted.internet.task import Clock
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase

from faf_replay.game import SaveOutcome, State
from faf_replay.registry import GameRegistry
from faf_replay.services import SpoolSync
from faf_replay.settings import Settings
from faf_replay.spool import Spool, SpoolFile
from faf_replay.stream import UploadStream
from tests.fakes import FakeUploader, FakeWatcher, Saves
from tests.logs import CapturedLogs
from tests.recordings import chunks, recording, split

SETTINGS = Settings(delay=10, sample_interval=1, grace=5, stall_timeout=60)


class Files(SynchronousTestCase):
    def test_append_read_sync_close(self):
        path = self.mktemp()
        file = SpoolFile(path, create=True)
        file.append(b"hello ")
        file.append(memoryview(b"world"))
        self.assertEqual((file.size, file.read(0, 11), file.read(6, 5)), (11, b"hello world", b"world"))
        self.assertTrue(file.dirty)
        file.sync()
        self.assertFalse(file.dirty)
        file.close()
        file.sync()  # closed: nothing to do, no error
        with open(path, "rb") as raw:
            self.assertEqual(raw.read(), b"hello world")
        self.assertRaises(FileExistsError, SpoolFile, path, create=True)

    def test_a_failed_append_leaves_the_file_as_it_was(self):
        file = SpoolFile(self.mktemp(), create=True)
        file.append(b"kept")
        os.close(file.fd)  # the next write fails
        with self.assertRaises(OSError):
            file.append(b"lost")
        self.assertEqual(file.size, 4)

    def test_game_folders(self):
        spool = Spool(self.mktemp())
        game = spool.game(12, 1000.0)
        first, second = game.new_upload("a.SCFAreplay"), game.new_upload("b/c")
        self.assertEqual([first.path.name, second.path.name], ["1.upload", "2.upload"])
        first.append(b"x")
        self.assertEqual((first.size, first.read(0, 1)), (1, b"x"))
        with open(first.path, "rb") as raw:
            self.assertEqual(raw.read(), b"a.SCFAreplay\0x")  # the name first, for recovery
        self.assertEqual(spool.dirty_files(), [first, second])
        self.assertEqual(spool.sync(spool.dirty_files()), 2)
        self.assertEqual(spool.dirty_files(), [])
        discarded = []
        spool.discard = discarded.append
        game.remove()
        self.assertFalse(game.directory.exists())  # out of games/ at once
        [trash] = discarded
        self.assertEqual(trash.parent, spool.trash)
        self.assertTrue((trash / "1.upload").exists())  # deleted by whoever discards
        self.assertEqual(Spool(spool.directory).recover(), [])
        self.assertFalse(trash.exists())  # a new start empties the trash

    def test_recover(self):
        directory = self.mktemp()
        before = Spool(directory)
        game = before.game(77, 1234.5)
        game.new_upload("Rowan.SCFAreplay").append(b"abc")
        game.new_upload("Kim.SCFAreplay").append(b"defg")
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
        game.new_upload("x").append(b"data")
        os.unlink(game.directory / "record.json")
        [found] = Spool(directory).recover()
        self.assertEqual([(u.name, u.file.read(0, 4)) for u in found.uploads], [("x", b"data")])
        self.assertNotEqual(found.started_at, 1.0)  # the folder's age instead


class SpooledStreams(SynchronousTestCase):
    def test_every_byte_is_on_disk_and_read_back(self):
        stream = recording("example")
        header, body = split(stream)
        file = SpoolFile(self.mktemp(), create=True)
        upload = UploadStream("p", file)
        for piece in chunks(stream, [1, 100, 3000, 7]):
            upload.feed(piece)
        self.assertEqual(file.read(0, file.size), stream)
        self.assertEqual(upload.header, header)
        self.assertEqual(len(upload.body), len(body))
        self.assertEqual(upload.body[0 : len(body)], body)
        self.assertEqual(upload.body[100:200], body[100:200])
        self.assertEqual(upload.body[5], body[5])
        self.assertEqual(upload.body[-1], body[-1])

    def test_the_disk_failing_midway_keeps_the_rest_in_memory(self):
        stream = recording("example")
        failures = []

        class FullDisk(SpoolFile):
            def append(self, data):
                if self.size + len(data) > 10_000:
                    raise OSError(28, "No space left on device")
                super().append(data)

        file = FullDisk(self.mktemp(), create=True)
        upload = UploadStream("p", file, on_spool_error=failures.append)
        for piece in chunks(stream, [1000]):
            upload.feed(piece)
        self.assertEqual(len(failures), 1)
        self.assertEqual(upload.header + upload.body[0 : len(upload.body)], stream)
        self.assertEqual(file.size, 10_000)

    def test_the_disk_failing_in_the_header(self):
        class NoDisk(SpoolFile):
            def append(self, data):
                raise OSError(5, "Input/output error")

        failures = []
        upload = UploadStream("p", NoDisk(self.mktemp(), create=True), on_spool_error=failures.append)
        for piece in chunks(recording("example"), [500]):
            upload.feed(piece)
        self.assertEqual(upload.header + bytes(upload.body), recording("example"))
        self.assertEqual(len(failures), 1)

    def test_recovered(self):
        path = self.mktemp()
        SpoolFile(path, create=True).append(recording("8805603"))
        stream = UploadStream.recovered("p", SpoolFile(path, create=False))
        self.assertTrue(stream.ended)
        self.assertEqual(stream.header + stream.body[0 : len(stream.body)], recording("8805603"))
        SpoolFile(path + "2", create=True).append(b"not a replay at all" * 10)
        broken = UploadStream.recovered("q", SpoolFile(path + "2", create=False))
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


class Syncing(SynchronousTestCase):
    def test_the_sync_service_fsyncs_what_was_written(self):
        spool = Spool(self.mktemp())
        game = spool.game(1, 0.0)
        file = game.new_upload("a")
        file.append(b"data")
        clock = Clock()
        pool = ThreadPool(0, 1)
        service = SpoolSync(spool, clock, pool, interval=5)
        service.startService()
        self.assertTrue(file.dirty)
        service.stopService()  # a last sync, for the next run
        self.assertFalse(file.dirty)
