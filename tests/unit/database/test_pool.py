"""The database layer against a real MariaDB (tests/support/mariadb.py starts it)."""

import errno
import json
import socket
import threading

import fafreplay
from twisted.internet import reactor
from twisted.internet.defer import fail, inlineCallbacks
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from faf_replay.database.bookkeeper import Bookkeeper
from faf_replay.database.config import DatabaseConfig
from faf_replay.database.outbox import Outbox
from faf_replay.database.pool import Database, DatabaseClosing, DatabaseError, GameRecord
from faf_replay.replay.finished import FinishedReplay, SaveOutcome
from faf_replay.save import durable
from faf_replay.save.metadata import database_metadata
from faf_replay.save.saver import Saver
from faf_replay.save.vault import vault_path
from faf_replay.save.workers import WorkerPool
from faf_replay.settings import Settings
from tests.support.clients import until
from tests.support.faf_database import ENDED, STARTED, FafDatabase
from tests.support.logs import CapturedLogs
from tests.support.metrics import metric
from tests.support.recordings import recording, split


class DatabaseTestCase(TestCase):
    timeout = 60

    def setUp(self):
        self.db = FafDatabase(self)
        self.database = self.connect(self.db.config())
        self.logs = CapturedLogs(self)

    def connect(self, config: DatabaseConfig) -> Database:
        database = Database(config, reactor)
        self.addCleanup(database.close)
        return database

    @inlineCallbacks
    def metadata(self, game_id: int, now: float = 2_000_000_000):
        record = yield self.database.read_game(game_id)
        self.assertIsInstance(record, GameRecord)
        return database_metadata(record, started_at=1.0, now=now)


class ReadingGames(DatabaseTestCase):
    @inlineCallbacks
    def test_a_whole_game(self):
        self.db.standard_game(100)
        meta = yield self.metadata(100)
        self.assertEqual(
            meta,
            {
                "uid": 100,
                "complete": True,
                "state": "PLAYING",
                "featured_mod": "faf",
                "featured_mod_versions": {"1": 3659, "2": 3659, "3": 3700},
                "game_type": "DEMORALIZATION",
                "recorder": "Rowan",
                "host": "Rowan",
                "launched_at": STARTED,
                "game_end": ENDED,
                "title": "4v4 Setons",
                "mapname": "scmp_003.v0003",
                "num_players": 4,  # the AI counts
                "teams": {"2": ["Rowan", "Kim"], "3": ["Zoë"]},  # but is in no team
                "version": 2,
                "compression": "zstd",
            },
        )

    @inlineCallbacks
    def test_coop_game_without_player_rows(self):
        host = self.db.login("Rowan")
        self.db.featured_mod(25, "coop")
        self.db.mod_file("coop", 7, 12)
        self.db.game(101, host=host, mod=25, map_id=self.db.map("x1ca_001.v0001"))
        meta = yield self.metadata(101)
        self.assertEqual((meta["teams"], meta["num_players"]), ({}, 0))
        self.assertEqual((meta["featured_mod"], meta["featured_mod_versions"]), ("coop", {"7": 12}))

    @inlineCallbacks
    def test_only_ai_players(self):
        host, ai = self.db.login("Rowan"), self.db.login("AI: Rufus")
        self.db.featured_mod(0, "faf")
        self.db.game(102, host=host, mod=0, map_id=None)
        self.db.player(102, ai, 2, ai=True)
        self.db.player(102, ai, 3, ai=True)
        meta = yield self.metadata(102)
        self.assertEqual((meta["teams"], meta["num_players"]), ({}, 2))

    @inlineCallbacks
    def test_null_team_null_end_null_map(self):
        host = self.db.login("Rowan")
        self.db.featured_mod(0, "faf")
        self.db.game(103, host=host, mod=0, map_id=None, ended=None)
        self.db.player(103, host, None)
        meta = yield self.metadata(103, now=1_800_000_123.7)
        self.assertEqual(meta["teams"], {"null": ["Rowan"]})
        self.assertEqual(meta["game_end"], 1_800_000_123)
        self.assertEqual(meta["mapname"], "None")

    @inlineCallbacks
    def test_null_and_unknown_featured_mod(self):
        host = self.db.login("Rowan")
        self.db.featured_mod(3, None)
        self.db.game(104, host=host, mod=3, map_id=None)
        self.db.game(105, host=host, mod=99, map_id=None)  # no such featured mod
        for game_id in (104, 105):
            meta = yield self.metadata(game_id)
            self.assertEqual((meta["featured_mod"], meta["featured_mod_versions"]), ("faf", {}))

    @inlineCallbacks
    def test_mod_without_update_tables(self):
        host = self.db.login("Rowan")
        self.db.featured_mod(6, "ladder1v1")
        self.db.game(106, host=host, mod=6, map_id=None)
        meta = yield self.metadata(106)
        self.assertEqual((meta["featured_mod"], meta["featured_mod_versions"]), ("ladder1v1", {}))

    @inlineCallbacks
    def test_mod_name_that_needs_quoting(self):
        host = self.db.login("Rowan")
        self.db.featured_mod(40, "my-mod")
        self.db.mod_file("my-mod", 1, 5)
        self.db.game(107, host=host, mod=40, map_id=None)
        meta = yield self.metadata(107)
        self.assertEqual(meta["featured_mod_versions"], {"1": 5})

    @inlineCallbacks
    def test_mod_name_that_is_not_a_table_name_builds_no_query(self):
        host = self.db.login("Rowan")
        evil = "faf_files` f, login l; DROP TABLE login; --"
        self.db.featured_mod(41, evil[:50])
        self.db.game(108, host=host, mod=41, map_id=None)
        meta = yield self.metadata(108)
        self.assertEqual(meta["featured_mod_versions"], {})
        self.assertEqual(len(self.db.execute("SELECT * FROM login")), 1)  # still there

    @inlineCallbacks
    def test_non_ascii_logins_and_titles(self):
        host = self.db.login("Żółw🐢")
        self.db.featured_mod(0, "faf")
        self.db.game(109, host=host, mod=0, map_id=None, title="Спокойной ночи 🌙 ゲーム")
        self.db.player(109, host, 1)
        meta = yield self.metadata(109)
        self.assertEqual(meta["title"], "Спокойной ночи 🌙 ゲーム")
        self.assertEqual(meta["teams"], {"1": ["Żółw🐢"]})
        self.assertEqual(meta["host"], "Żółw🐢")

    @inlineCallbacks
    def test_no_game_row(self):
        record = yield self.database.read_game(404)
        self.assertIsNone(record)
        status = yield self.database.game_status(404)
        self.assertIsNone(status)
        rows = yield self.database.mark_saved(404, 10)
        self.assertEqual(rows, 0)

    @inlineCallbacks
    def test_mark_saved_and_status(self):
        self.db.standard_game(110)
        status = yield self.database.game_status(110)
        self.assertEqual((status.ended_at, status.replay_available), (ENDED, False))
        rows = yield self.database.mark_saved(110, 1928)
        self.assertEqual(rows, 1)
        self.assertEqual(self.db.replay_row(110), (1928, 1))
        status = yield self.database.game_status(110)
        self.assertTrue(status.replay_available)
        yield self.database.mark_saved(110, None)
        self.assertEqual(self.db.replay_row(110), (None, 1))

    @inlineCallbacks
    def test_a_row_marked_already_is_a_row_found(self):
        """A recovered duplicate marks the row again with the same values: MariaDB changes
        nothing, but the game is known (the bookkeeper's line must not say otherwise)."""
        self.db.standard_game(111)
        self.assertEqual((yield self.database.mark_saved(111, 1928)), 1)
        self.assertEqual((yield self.database.mark_saved(111, 1928)), 1)


class Faults(DatabaseTestCase):
    @inlineCallbacks
    def test_a_killed_connection_is_retried(self):
        self.db.standard_game(120)
        yield self.database.read_game(120)
        self.assertGreater(self.db.kill_server_connections(), 0)
        record = yield self.database.read_game(120)
        self.assertEqual(record.title, "4v4 Setons")
        self.assertEqual(len(self.logs.matching("connection lost during read game; retrying once")), 1)

    @inlineCallbacks
    def test_a_restarted_server_between_two_saves(self):
        self.db.standard_game(121)
        yield self.database.mark_saved(121, 1)
        self.db.server.restart()
        rows = yield self.database.mark_saved(121, 2)
        self.assertEqual(rows, 1)
        self.assertEqual(self.db.replay_row(121), (2, 1))

    @inlineCallbacks
    def test_a_dead_server_fails_cleanly(self):
        dead = self.connect(DatabaseConfig("127.0.0.1", 1, "nobody", "nothing", "x"))
        before = metric("replayserver_database_errors_total", operation="read game")
        with self.assertRaises(DatabaseError) as caught:
            yield dead.read_game(1)
        self.assertIn("Can't connect", str(caught.exception))
        self.assertEqual(metric("replayserver_database_errors_total", operation="read game"), before + 1)
        self.assertEqual(len(self.logs.matching("database read game failed")), 1)

    @inlineCallbacks
    def test_closing_drops_queued_work_instead_of_waiting_on_a_hung_database(self):
        """A database that takes connections and never answers (a hung MariaDB):
        at shutdown, work still queued must not each try to connect (5 s a try,
        then a retry); the one running finishes, the rest fail at once."""
        silent = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(silent.close)
        accepted: list[socket.socket] = []

        def take() -> None:
            while True:
                try:
                    accepted.append(silent.accept()[0])
                except OSError:
                    return

        threading.Thread(target=take, daemon=True).start()
        self.addCleanup(lambda: [connection.close() for connection in accepted])
        hung = Database(DatabaseConfig("127.0.0.1", silent.getsockname()[1], "u", "p", "d"), reactor, 1)
        results: list[object] = []
        for game_id in range(10):
            hung.read_game(game_id).addBoth(results.append)
        yield until(lambda: len(accepted) == 1)  # the first read is connecting
        hung.close()  # waits for the one running: its connection gives up after 5 s
        yield until(lambda: len(results) == 10)
        self.assertTrue(all(isinstance(result, Failure) for result in results))
        self.assertTrue(all(result.check(DatabaseError) for result in results))
        self.assertGreaterEqual(sum(1 for result in results if result.check(DatabaseClosing)), 9)
        self.assertEqual(len(accepted), 1)  # nothing queued tried to connect
        self.assertLessEqual(len(self.logs.matching("database read game failed")), 1)
        with self.assertRaises(DatabaseClosing):
            yield hung.read_game(11)  # and nothing is queued after the close

    @inlineCallbacks
    def test_wrong_password(self):
        wrong = self.connect(self.db.config(password="not it"))
        with self.assertRaises(DatabaseError) as caught:
            yield wrong.read_game(1)
        self.assertIn("Access denied", str(caught.exception))


class SavingWithTheDatabase(DatabaseTestCase):
    def setUp(self):
        super().setUp()
        self.vault = self.mktemp()
        self.outbox = Outbox(self.mktemp())
        self.workers = WorkerPool(reactor, maximum=2)
        self.workers.startService()
        self.addCleanup(self.workers.stopService)

    def saver(self, database: Database | None = None, **settings) -> Saver:
        database = database or self.database
        bookkeeper = Bookkeeper(self.outbox, database, reactor, self.workers)
        bookkeeper.startService()
        self.addCleanup(bookkeeper.stopService)
        return Saver(
            Settings(vault=self.vault, zstd_level=3, **settings), reactor, self.workers, database, bookkeeper
        )

    def replay(self, game_id: int, name: str = "example") -> FinishedReplay:
        header, body = split(recording(name))
        return FinishedReplay(game_id, header, body, "uploader", 1000.0, 2000.0)

    def saved(self, game_id: int) -> tuple[dict, bytes]:
        data = vault_path(self.vault, game_id).read_bytes()
        with vault_path(self.vault, game_id).open("rb") as file:
            return json.loads(data.split(b"\n", 1)[0]), fafreplay.extract_scfa(file)

    @inlineCallbacks
    def test_file_carries_the_database_metadata_and_the_row_is_marked(self):
        self.db.standard_game(130, title="Ranked 2v2 ⚔")
        yield self.saver().save(self.replay(130))
        meta, scfa = self.saved(130)
        self.assertEqual(scfa, recording("example"))
        self.assertEqual(meta["title"], "Ranked 2v2 ⚔")
        self.assertEqual(meta["teams"], {"2": ["Rowan", "Kim"], "3": ["Zoë"]})
        self.assertEqual(meta["launched_at"], STARTED)
        self.assertEqual(self.db.replay_row(130), (1928, 1))

    @inlineCallbacks
    def test_unknown_game_is_saved_with_the_replays_own_metadata(self):
        yield self.saver().save(self.replay(131))
        meta, _ = self.saved(131)
        self.assertEqual(meta["teams"], {"2": ["MazorNoob"], "3": ["dragonite"]})
        self.assertEqual(len(self.logs.matching("game 131 is not in the database")), 1)
        self.assertEqual(len(self.logs.matching("the database does not know the game")), 1)
        self.assertEqual(self.outbox.entries(), [])

    @inlineCallbacks
    def test_database_down_still_writes_the_file(self):
        dead = self.connect(DatabaseConfig("127.0.0.1", 1, "nobody", "nothing", "x"))
        outcome = yield self.saver(dead).save(self.replay(132))
        self.assertIs(outcome, SaveOutcome.SAVED)
        meta, scfa = self.saved(132)
        self.assertEqual(scfa, recording("example"))
        self.assertEqual(meta["mapname"], "scmp_016")
        self.assertEqual(len(self.logs.matching("its database row waits in the outbox")), 1)
        [entry] = self.outbox.entries()
        self.assertEqual((entry.game_id, entry.ticks, entry.needs_metadata), (132, 1928, True))

    @inlineCallbacks
    def test_never_clobber(self):
        self.db.standard_game(133)
        yield self.saver().save(self.replay(133))
        before = vault_path(self.vault, 133).read_bytes()
        self.db.execute("UPDATE game_stats SET replay_ticks = 7 WHERE id = 133")  # to see any write
        outcome = yield self.saver().save(self.replay(133, "8805603"))  # a late duplicate
        self.assertIs(outcome, SaveOutcome.EXISTS)
        self.assertEqual(vault_path(self.vault, 133).read_bytes(), before)
        self.assertEqual(self.db.replay_row(133), (7, 1))

    @inlineCallbacks
    def test_uncountable_body_stores_null_ticks(self):
        self.db.standard_game(134)
        header, _ = split(recording("example"))
        yield self.saver().save(FinishedReplay(134, header, b"\xff" * 50, "u", 1.0, 2.0))
        self.assertEqual(self.db.replay_row(134), (None, 1))

    @inlineCallbacks
    def test_featured_mod_that_is_not_a_table_name_is_logged(self):
        host = self.db.login("Rowan")
        self.db.featured_mod(41, "bad name")
        self.db.game(135, host=host, mod=41, map_id=None)
        yield self.saver().save(self.replay(135))
        meta, _ = self.saved(135)
        self.assertEqual((meta["featured_mod"], meta["featured_mod_versions"]), ("bad name", {}))
        self.assertEqual(len(self.logs.matching("is not a table name")), 1)


class Outage(SavingWithTheDatabase):
    """The database away at save time: nothing is lost, everything is completed later."""

    @inlineCallbacks
    def test_down_then_back(self):
        self.db.standard_game(140, title="Comeback ⚡")
        dead = self.connect(DatabaseConfig("127.0.0.1", 1, "nobody", "nothing", "x"))
        yield self.saver(dead).save(self.replay(140))
        meta, scfa = self.saved(140)
        self.assertEqual((meta["title"], scfa), ("", recording("example")))  # the replay's own facts
        self.assertEqual(self.db.replay_row(140), (None, 0))
        # A restart later, with the database back: a new bookkeeper finds the entry.
        bookkeeper = Bookkeeper(Outbox(self.outbox.directory), self.database, reactor, self.workers)
        self.assertEqual(len(bookkeeper.outbox), 1)
        yield bookkeeper.drain()
        meta, scfa = self.saved(140)
        self.assertEqual(scfa, recording("example"))
        self.assertEqual((meta["title"], meta["host"]), ("Comeback ⚡", "Rowan"))
        self.assertEqual(meta["teams"], {"2": ["Rowan", "Kim"], "3": ["Zoë"]})
        self.assertEqual(self.db.replay_row(140), (1928, 1))
        self.assertEqual(len(bookkeeper.outbox), 0)

    @inlineCallbacks
    def test_slow_database(self):
        self.db.standard_game(141)
        locker = FafDatabase.__new__(FafDatabase)  # a second root connection holding a lock
        locker.server, locker.name = self.db.server, self.db.name
        locker.connection = locker._connect()
        self.addCleanup(locker.close)
        locker.execute("LOCK TABLES game_stats WRITE")
        saver = self.saver(db_timeout=0.3)
        outcome = yield saver.save(self.replay(141))
        self.assertIs(outcome, SaveOutcome.SAVED)
        self.assertEqual(len(self.logs.matching("no answer in time")), 1)
        self.assertEqual(self.saved(141)[0]["title"], "")
        locker.execute("UNLOCK TABLES")
        # The work that waited on the lock finishes by itself.
        yield until(lambda: len(self.outbox) == 0)
        self.assertEqual(self.saved(141)[0]["title"], "4v4 Setons")
        self.assertEqual(self.db.replay_row(141), (1928, 1))

    def _bookkeeper_of(self, saver: Saver) -> Bookkeeper:
        return saver._bookkeeper

    @inlineCallbacks
    def test_retried_with_backoff_until_it_lands(self):
        self.db.standard_game(142)
        dead = self.connect(DatabaseConfig("127.0.0.1", 1, "nobody", "nothing", "x"))
        saver = self.saver(dead)
        yield saver.save(self.replay(142))
        bookkeeper = self._bookkeeper_of(saver)
        self.assertEqual(len(self.logs.matching("next try in 5 s")), 1)
        yield bookkeeper.drain()
        self.assertEqual(len(self.logs.matching("next try in 10 s")), 1)
        bookkeeper._database = self.database  # the database is back
        yield bookkeeper.drain()
        self.assertEqual(self.db.replay_row(142), (1928, 1))
        self.assertEqual(len(bookkeeper.outbox), 0)
        # It worked: the next outage starts from 5 s again.
        bookkeeper._database = dead
        yield saver.save(self.replay(144))
        self.assertEqual(len(self.logs.matching("next try in 5 s")), 2)

    @inlineCallbacks
    def test_a_changed_file_is_not_rewritten(self):
        self.db.standard_game(143)
        dead = self.connect(DatabaseConfig("127.0.0.1", 1, "nobody", "nothing", "x"))
        yield self.saver(dead).save(self.replay(143))
        path = vault_path(self.vault, 143)
        path.write_bytes(path.read_bytes() + b"x")  # somebody else's file now
        before = path.read_bytes()
        bookkeeper = Bookkeeper(self.outbox, self.database, reactor, self.workers)
        yield bookkeeper.drain()
        self.assertEqual(path.read_bytes(), before)
        self.assertEqual(len(self.logs.matching("JSON line not completed")), 1)
        self.assertEqual(self.db.replay_row(143), (1928, 1))  # the row is still right to mark


class VaultFullWhenTheDatabaseReturns(SavingWithTheDatabase):
    """Found by the chaos soak (seed 1, two minutes): the database came back while the vault
    was full; completing a file's JSON line failed with ENOSPC, which the bookkeeper did not
    expect ("Unhandled error in Deferred", a critical line) and the row stayed unmarked."""

    @inlineCallbacks
    def test_the_row_is_marked_and_the_json_line_waits_for_room(self):
        self.db.standard_game(170, title="Evening 4v4")
        dead = self.connect(DatabaseConfig("127.0.0.1", 1, "nobody", "nothing", "x"))
        yield self.saver(dead).save(self.replay(170))
        [entry] = self.outbox.entries()
        self.assertTrue(entry.needs_metadata)

        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        replace = durable.replace
        self.patch(durable, "replace", full)
        bookkeeper = Bookkeeper(self.outbox, self.database, reactor, self.workers)
        bookkeeper.startService()  # drains the outbox
        self.addCleanup(bookkeeper.stopService)
        yield until(lambda: bookkeeper._retry.pending, timeout=10)
        self.assertEqual(self.db.replay_row(170), (1928, 1))  # the file is there: the row says so
        self.assertEqual([e.game_id for e in self.outbox.entries()], [170])  # the JSON line waits
        self.assertEqual(len(self.logs.matching("the vault refused its JSON line")), 1)

        self.patch(durable, "replace", replace)
        yield bookkeeper.drain()
        meta, scfa = self.saved(170)
        self.assertEqual((meta["title"], scfa), ("Evening 4v4", recording("example")))
        self.assertEqual(self.outbox.entries(), [])


class OutboxFullAndDatabaseDown(SavingWithTheDatabase):
    """Found by the chaos soak (seed 1, two minutes): the database down while the spool's
    disk was full. The file was saved, the outbox could not take its row, the game left the
    spool as saved, and a kill -9 then lost the row for good (replay_available stayed 0)."""

    @inlineCallbacks
    def test_the_game_stays_in_the_spool_until_its_row_is_marked(self):
        self.db.standard_game(160)

        def full(entry):
            raise OSError(errno.ENOSPC, "No space left on device")

        def down(game_id, ticks):
            return fail(DatabaseError("the database is down"))

        saver = self.saver()
        marking = self.database.mark_saved
        self.patch(self.outbox, "add", full)
        self.patch(self.database, "mark_saved", down)
        replay = self.replay(160)
        outcome = yield saver.save(replay)
        self.assertIs(outcome, SaveOutcome.FAILED)  # not over: the spool keeps the game
        self.assertEqual(self.db.replay_row(160), (None, 0))
        self.assertEqual(len(self.logs.matching("neither the database nor the outbox took its row")), 1)

        outcome = yield saver.save(replay)  # the retry, both still refusing
        self.assertIs(outcome, SaveOutcome.FAILED)

        self.patch(self.database, "mark_saved", marking)
        outcome = yield saver.save(replay)  # the database is back: the row, for the file there
        self.assertIs(outcome, SaveOutcome.EXISTS)
        self.assertEqual(self.db.replay_row(160), (1928, 1))


class RecoveredAfterACrash(SavingWithTheDatabase):
    @inlineCallbacks
    def test_existing_file_of_a_recovered_game_gets_its_row(self):
        """A crash between writing the file and telling the database: the next run
        finds the file there and marks the row for it."""
        self.db.standard_game(150)
        yield self.saver().save(self.replay(150))
        self.db.execute("UPDATE game_stats SET replay_ticks = NULL, replay_available = 0 WHERE id = 150")
        header, body = split(recording("example"))
        recovered = FinishedReplay(150, header, body, "u", 1.0, 2.0, recovered=True)
        outcome = yield self.saver().save(recovered)
        self.assertIs(outcome, SaveOutcome.EXISTS)
        self.assertEqual(self.db.replay_row(150), (1928, 1))
        self.assertEqual(len(self.outbox), 0)

    @inlineCallbacks
    def test_a_late_duplicate_still_leaves_the_row_alone(self):
        self.db.standard_game(151)
        yield self.saver().save(self.replay(151))
        self.db.execute("UPDATE game_stats SET replay_ticks = 7 WHERE id = 151")
        yield self.saver().save(self.replay(151))  # not recovered: nothing to mend
        self.assertEqual(self.db.replay_row(151), (7, 1))
