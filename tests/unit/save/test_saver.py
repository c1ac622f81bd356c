import json
import os

import fafreplay
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.logger import LogLevel
from twisted.trial.unittest import SynchronousTestCase, TestCase

from faf_replay.database.outbox import Entry, Outbox
from faf_replay.database.pool import GameRecord
from faf_replay.replay.finished import FinishedReplay, SaveOutcome
from faf_replay.save import saver as saving
from faf_replay.save.saver import Saver
from faf_replay.save.vault import vault_path
from faf_replay.save.workers import WorkerPool
from faf_replay.settings import Settings
from tests.support.filesystems import linkless_directory
from tests.support.logs import CapturedLogs
from tests.support.metrics import metric
from tests.support.recordings import poisoned, recording, split


class SaverTests(TestCase):
    def setUp(self):
        self.vault = self.mktemp()
        self.workers = WorkerPool(reactor, maximum=2)
        self.workers.startService()
        self.addCleanup(self.workers.stopService)
        self.saver = Saver(Settings(vault=self.vault, zstd_level=3), reactor, self.workers)
        self.logs = CapturedLogs(self)

    def replay(self, game_id=44, name="example"):
        header, body = split(recording(name))
        return FinishedReplay(game_id, header, body, "Rowan", 1000.0, 2000.0)

    @inlineCallbacks
    def test_saves_off_the_reactor_thread(self):
        before = metric("replayserver_saved_replay_files_total")
        outcome = yield self.saver.save(self.replay())
        self.assertIs(outcome, SaveOutcome.SAVED)
        with vault_path(self.vault, 44).open("rb") as file:
            self.assertEqual(fafreplay.extract_scfa(file), recording("example"))
        self.assertEqual(metric("replayserver_saved_replay_files_total"), before + 1)
        [line] = self.logs.matching("game 44: saved")
        self.assertIn("41578 body bytes", line)

    @inlineCallbacks
    def test_a_vault_without_hard_links_is_logged_once(self):
        vault = str(linkless_directory(self))
        saver = Saver(Settings(vault=vault, zstd_level=3), reactor, self.workers)
        for game_id in (46, 47):
            self.assertIs((yield saver.save(self.replay(game_id))), SaveOutcome.SAVED)
            with vault_path(vault, game_id).open("rb") as file:
                self.assertEqual(fafreplay.extract_scfa(file), recording("example"))
        self.assertEqual(len(self.logs.matching("refuses hard links")), 1)
        self.assertEqual(metric("replayserver_vault_refuses_hard_links"), 1)

    @inlineCallbacks
    def test_a_header_that_makes_the_parser_panic_is_saved_as_sent(self):
        stream = poisoned()
        header, body = split(stream)
        before = metric("replayserver_metadata_errors_total")
        replay = FinishedReplay(45, header, body, "Rowan", 1000.0, 2000.0)
        self.assertIs((yield self.saver.save(replay)), SaveOutcome.SAVED)
        path = vault_path(self.vault, 45)
        with path.open("rb") as file:
            self.assertEqual(fafreplay.extract_scfa(file), stream)  # exactly what was uploaded
        metadata = json.loads(path.read_bytes().split(b"\n", 1)[0])
        self.assertEqual((metadata["uid"], metadata["teams"], metadata["mapname"]), (45, {}, "SCMP_016"))
        self.assertEqual(metric("replayserver_metadata_errors_total"), before + 1)
        [line] = self.logs.matching("game 45: its replay header cannot be read (PanicException")
        self.assertIn("saved with neutral values there", line)
        self.assertEqual(self.logs.matching("saving failed"), [])

    def test_a_database_record_that_cannot_be_used_gives_the_replays_own_facts(self):
        record = GameRecord(46, "yesterday", None, "DEMORALIZATION", "Rowan", "t", "faf", None)  # type: ignore[arg-type]
        before = metric("replayserver_metadata_errors_total")
        metadata = self.saver._from_record(record, self.replay(46))
        self.assertIsNone(metadata.values)  # the replay header's, then
        self.assertEqual(metric("replayserver_metadata_errors_total"), before + 1)
        [line] = self.logs.matching("game 46: its database record cannot be used (ValueError")
        self.assertIn("saving it with what the replay tells", line)

    @inlineCallbacks
    def test_existing_replay_is_left_alone(self):
        yield self.saver.save(self.replay())
        before = vault_path(self.vault, 44).read_bytes()
        failures = metric("replayserver_save_failures_total", reason="exists")
        outcome = yield self.saver.save(self.replay(name="8805603"))
        self.assertIs(outcome, SaveOutcome.EXISTS)
        self.assertEqual(vault_path(self.vault, 44).read_bytes(), before)
        self.assertEqual(metric("replayserver_save_failures_total", reason="exists"), failures + 1)
        self.assertEqual(len(self.logs.matching("already saved")), 1)

    @inlineCallbacks
    def test_unwritable_vault(self):
        os.makedirs(self.vault)
        open(os.path.join(self.vault, "0"), "w").close()  # a file where a folder must go
        failures = metric("replayserver_save_failures_total", reason="io")
        outcome = yield self.saver.save(self.replay())
        self.assertIs(outcome, SaveOutcome.FAILED)
        self.assertEqual(metric("replayserver_save_failures_total", reason="io"), failures + 1)
        self.assertEqual(len(self.logs.matching("cannot write the replay file")), 1)

    @inlineCallbacks
    def test_nothing_to_save(self):
        failures = metric("replayserver_save_failures_total", reason="no data")
        outcome = yield self.saver.save(FinishedReplay(45, None, b"", "", 0, 1))
        self.assertIs(outcome, SaveOutcome.NOTHING)
        self.assertEqual(metric("replayserver_save_failures_total", reason="no data"), failures + 1)
        self.assertFalse(os.path.exists(self.vault))

    @inlineCallbacks
    def test_unexpected_error_is_logged_with_its_traceback(self):
        def broken(*args, **kwargs):
            raise ValueError("boom")

        self.patch(saving, "write_replay", broken)
        outcome = yield self.saver.save(self.replay())
        self.assertIs(outcome, SaveOutcome.BROKEN)  # not the vault: it would fail again the same way
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        [event] = [e for e in self.logs.events if "saving failed" in e.get("log_format", "")]
        self.assertIs(event["log_level"], LogLevel.error)  # an error, not a critical line


class OutboxCount(SynchronousTestCase):
    def test_the_count_follows_the_entries_without_rereading_the_folder(self):
        outbox = Outbox(self.mktemp())
        entries = [Entry(n, f"/vault/{n}.fafreplay", 100, 1928, False, 1.0, 2.0 + n) for n in (7, 8)]
        for entry in entries:
            outbox.add(entry)
        outbox.add(entries[0])  # replaced, still one entry
        self.assertEqual(len(outbox), 2)
        self.assertEqual(len(Outbox(outbox.directory)), 2)  # a new start counts what is there
        outbox.remove(7)
        outbox.remove(7)
        self.assertEqual(len(outbox), 1)
        self.assertEqual(outbox.entries(), [entries[1]])
        self.assertEqual(sorted(os.listdir(outbox.directory)), ["8.json"])
