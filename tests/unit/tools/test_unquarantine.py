"""Quarantine through the real server: real sockets, the real saver, spool and
vault, and a save that fails for real, by a fault in the writing of one game's
file. Three tries across restarts, then ``<spool>/quarantine/``; the next start
leaves it there."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from faf_replay.save import saver as saving
from faf_replay.save.vault import vault_path
from faf_replay.settings import DEFAULT_SPOOL_NAME
from tests.support.clients import Uploader, connect, start_server, until
from tests.support.logs import CapturedLogs
from tests.support.metrics import metric
from tests.support.recordings import recording
from tests.system.test_end_to_end import read_saved

BROKEN_GAME = 80


class BrokenWriting:
    """``saving.write_replay``, failing for one game the way a bug met by its
    data would (not an OSError: that is the vault refusing, retried forever)."""

    def __init__(self) -> None:
        self.real = saving.write_replay
        self.tries = 0

    def __call__(self, vault, game_id, metadata, scfa, level):
        if game_id == BROKEN_GAME:
            self.tries += 1
            raise ValueError(f"injected fault in the writing of game {game_id}'s file")
        return self.real(vault, game_id, metadata, scfa, level)


class ThroughTheServer(TestCase):
    timeout = 60

    @inlineCallbacks
    def start(self):
        service, port = yield start_server(self, vault=self.vault)
        return service, port

    @inlineCallbacks
    def test_three_broken_saves_across_restarts_then_quarantine_kept_after_another(self):
        logs = CapturedLogs(self)
        self.vault = self.mktemp()
        spool = Path(self.vault, DEFAULT_SPOOL_NAME)
        broken = BrokenWriting()
        self.patch(saving, "write_replay", broken)
        quarantined = metric("replayserver_quarantined_replays_total")

        # First start: game 81 is saved; game 80's first try fails.
        service, port = yield self.start()
        for game_id, name in ((BROKEN_GAME, "example"), (81, "8805603")):
            yield connect(port, Uploader(game_id, "a.SCFAreplay", recording(name), [4000]))
        yield service.registry.when_done(81)
        self.assertEqual(read_saved(self.vault, 81)[1], recording("8805603"))
        yield until(lambda: broken.tries >= 1)
        # Stopping saves every game: the second try, counted in the spool.
        yield service.stopService()
        self.assertEqual(broken.tries, 2)
        self.assertTrue(Path(spool, "games", str(BROKEN_GAME)).is_dir())
        self.assertFalse(Path(spool, "quarantine").exists())

        # Second start: recovered, the third try fails: quarantine.
        service, _ = yield self.start()
        self.assertIn(BROKEN_GAME, service.registry.games)
        yield service.registry.when_done(BROKEN_GAME)
        self.assertEqual(broken.tries, 3)
        # The spool's writer thread moves the folder: wait for it to get there.
        yield until(lambda: list(Path(spool, "quarantine").glob("*/why.txt")))
        [kept] = Path(spool, "quarantine").iterdir()
        self.assertTrue(kept.name.startswith(f"{BROKEN_GAME}-"))
        self.assertEqual(sorted(p.name for p in kept.iterdir()), ["1.upload", "record.json", "why.txt"])
        self.assertEqual((kept / "1.upload").read_bytes(), b"a.SCFAreplay\0" + recording("example"))
        self.assertIn("saving failed 3 times", (kept / "why.txt").read_text())
        self.assertEqual(metric("replayserver_quarantined_replays_total"), quarantined + 1)
        [line] = logs.matching(f"game {BROKEN_GAME}: saving failed 3 times the same way")
        self.assertIn(str(kept), line)
        self.assertEqual(logs.lines().count(f"game {BROKEN_GAME}: saving failed"), 3)
        yield service.stopService()
        self.assertEqual(broken.tries, 3)  # not tried again at shutdown

        # Third start: it stays in quarantine, nothing else is touched.
        service, _ = yield self.start()
        self.assertEqual(service.registry.games, {})
        self.assertEqual(list(Path(spool, "games").iterdir()), [])
        self.assertEqual([p.name for p in Path(spool, "quarantine").iterdir()], [kept.name])
        self.assertFalse(vault_path(self.vault, BROKEN_GAME).exists())
        self.assertEqual(read_saved(self.vault, 81)[1], recording("8805603"))
        self.assertEqual(broken.tries, 3)
        self.assertEqual(metric("replayserver_quarantined_replays_total"), quarantined + 1)
        yield service.stopService()
        # Each failure logged with its traceback (error level, not critical).
        errors = self.flushLoggedErrors(ValueError)
        self.assertEqual(len(errors), 3)
        self.assertIn("injected fault in the writing of game 80", str(errors[0].value))
