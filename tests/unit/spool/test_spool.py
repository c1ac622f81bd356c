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
from faf_replay.save.attempts import SAVE_RETRY_FIRST, SAVE_RETRY_MAX
from faf_replay.save.vault import vault_path
from faf_replay.settings import Settings
from faf_replay.spool.spool import Spool, run_now
from faf_replay.tools import unquarantine as quarantine
from tests.support.fakes import FakeUploader, FakeWatcher, Saves
from tests.support.logs import CapturedLogs
from tests.support.metrics import metric
from tests.support.recordings import chunks, poisoned, recording

SETTINGS = Settings(delay=10, sample_interval=1, grace=5, stall_timeout=60)


class Writer:
    """The spool's writer, by hand: jobs wait until the test runs them."""

    def __init__(self):
        self.jobs = []

    def submit(self, job, done):
        self.jobs.append((job, done))

    def write(self, file, data, done):
        self.submit(lambda: file.write(data), done)

    def resume(self, file, offset, data, done):
        self.submit(lambda: file.rewrite_from(offset, data), done)

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
