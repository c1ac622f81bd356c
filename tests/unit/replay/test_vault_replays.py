"""Ended games read back from the vault for watchers (``replay/vault_replays.py``)."""

import os
import time

from twisted.trial.unittest import SynchronousTestCase

from faf_replay.replay.slices import READ_CHUNK as CHUNK
from faf_replay.replay.vault_replays import KEPT, VaultReplays, read_saved_stream
from faf_replay.save.vault import vault_path, write_replay
from tests.support.fakes import HeldWorkers
from tests.support.logs import CapturedLogs
from tests.support.metrics import metric
from tests.support.recordings import recording, split


class ReadingTheVault(SynchronousTestCase):
    def setUp(self):
        self.vault = self.mktemp()
        self.workers = HeldWorkers()
        self.replays = VaultReplays(self.vault, 3600, self.workers)

    def save(self, game_id, stream):
        write_replay(self.vault, game_id, {"uid": game_id}, stream, 3)

    def opened(self, game_id, min_age=0.0):
        results = []
        self.replays.open(game_id, min_age).addCallback(results.append)
        self.workers.finish()
        [result] = results
        return result

    def test_the_saved_stream_in_chunks(self):
        header, body = split(recording("example"))
        stream = header + body * 5  # a longer game: several chunks
        self.save(7, stream)
        replay = self.opened(7)
        self.assertEqual((replay.game_id, replay.visible, replay.write_phase_over), (7, len(stream), True))
        chunks, position = [], 0
        while position < replay.visible:
            chunks.append(replay.read(position, replay.visible))
            position += len(chunks[-1])
        self.assertEqual(b"".join(chunks), stream)
        self.assertEqual(max(len(chunk) for chunk in chunks), CHUNK)
        self.assertIs(replay.read(0, replay.visible), chunks[0])  # watchers at one place share a slice

    def test_nothing_for_a_missing_an_old_or_a_refused_file(self):
        self.assertIsNone(self.opened(8))
        self.save(9, recording("example"))
        old = time.time() - 3601
        os.utime(vault_path(self.vault, 9), (old, old))
        self.assertIsNone(self.opened(9))
        off = VaultReplays(self.vault, 0, self.workers)
        self.save(10, recording("example"))
        self.assertFalse(off.enabled)
        results = []
        off.open(10).addCallback(results.append)
        self.assertEqual((results, self.workers.calls), ([None], []))

    def test_a_replay_younger_than_asked_waits(self):
        logs = CapturedLogs(self)
        stream = recording("example")
        self.save(11, stream)
        self.assertIsNone(self.opened(11, min_age=60))
        [line] = logs.matching("game 11: not served from the vault yet")
        self.assertIn("saved 0 s ago, watchable 60 s from now", line)
        self.assertEqual(self.flushLoggedErrors(), [])
        aged = time.time() - 61
        os.utime(vault_path(self.vault, 11), (aged, aged))
        self.assertEqual(self.opened(11, min_age=60).read(0, len(stream)), stream)

    def test_an_unreadable_file_is_logged_and_refused(self):
        logs = CapturedLogs(self)
        path = vault_path(self.vault, 11)
        path.parent.mkdir(parents=True)
        path.write_bytes(b'{"uid": 11}\nnot zstd at all')
        errors = metric("replayserver_vault_read_errors_total")
        self.assertIsNone(self.opened(11))
        self.assertEqual(len(logs.matching("game 11: its saved replay")), 1)
        self.assertEqual(metric("replayserver_vault_read_errors_total"), errors + 1)
        self.flushLoggedErrors()

    def test_watchers_of_one_game_share_one_read_and_one_copy(self):
        self.save(12, recording("example"))
        results = []
        for _ in range(200):
            self.replays.open(12).addCallback(results.append)
        self.assertEqual(len(self.workers.calls), 1)  # one read for all of them
        self.workers.finish()
        self.assertEqual(len(results), 200)
        self.assertEqual(len({id(replay) for replay in results}), 1)
        again = []
        self.replays.open(12).addCallback(again.append)
        self.assertEqual((again, self.workers.calls), ([results[0]], []))  # kept: no read

    def test_only_the_last_few_are_kept(self):
        for game_id in range(20, 20 + KEPT + 1):
            self.save(game_id, recording("example"))
            self.opened(game_id)
        self.replays.open(20)
        self.assertEqual(len(self.workers.calls), 1)  # the first one was let go
        self.replays.open(20 + KEPT)
        self.assertEqual(len(self.workers.calls), 1)  # the last one is kept

    def test_the_age_is_the_files(self):
        path = vault_path(self.vault, 30)
        self.save(30, recording("example"))
        written = os.stat(path).st_mtime
        self.assertIsNotNone(read_saved_stream(path, 100, written + 99))
        self.assertIsNone(read_saved_stream(path, 100, written + 101))
