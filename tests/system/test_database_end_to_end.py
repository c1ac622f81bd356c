"""The whole server with --db, over real TCP, against a real MariaDB."""

import json
import os
from pathlib import Path

import fafreplay
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from faf_replay.database.config import PASSWORD_VARIABLE
from faf_replay.save.vault import vault_path
from tests.support import mariadb
from tests.support.clients import Uploader, Watcher, connect, start_server, until
from tests.support.faf_database import STARTED, FafDatabase
from tests.support.logs import CapturedLogs
from tests.support.recordings import recording


class WithDatabase(TestCase):
    timeout = 60

    def setUp(self):
        self.db = FafDatabase(self)
        self.logs = CapturedLogs(self)
        self.patch(os, "environ", {**os.environ, PASSWORD_VARIABLE: mariadb.PASSWORD})

    def saved(self, service, game_id):
        path = vault_path(service.registry.settings.vault, game_id)
        data = path.read_bytes()
        with path.open("rb") as file:
            return json.loads(data.split(b"\n", 1)[0]), fafreplay.extract_scfa(file)

    @inlineCallbacks
    def upload_game(self, port, game_id, uploaders=2, name="example"):
        clients = [
            Uploader(game_id, f"p{i}.SCFAreplay", recording(name), [3000 + 7 * i]) for i in range(uploaders)
        ]
        for client in clients:
            yield connect(port, client)
        return clients

    @inlineCallbacks
    def test_a_game_saved_with_its_row(self):
        self.db.standard_game(2000, title="Ladder: Rowan vs Zoë")
        service, port = yield start_server(self, db=self.db.url())
        yield self.upload_game(port, 2000)
        yield service.registry.when_done(2000)
        meta, scfa = self.saved(service, 2000)
        self.assertEqual(scfa, recording("example"))
        self.assertEqual(meta["title"], "Ladder: Rowan vs Zoë")
        self.assertEqual(
            (meta["host"], meta["launched_at"], meta["mapname"]), ("Rowan", STARTED, "scmp_003.v0003")
        )
        self.assertEqual(self.db.replay_row(2000), (1928, 1))

    @inlineCallbacks
    def test_password_from_a_file(self):
        self.patch(os, "environ", {k: v for k, v in os.environ.items() if k != PASSWORD_VARIABLE})
        secret = self.mktemp()
        with open(secret, "w", encoding="utf-8") as file:
            file.write(mariadb.PASSWORD + "\n")
        self.db.standard_game(2001)
        service, port = yield start_server(self, db=self.db.url(), **{"db-password-file": secret})
        yield self.upload_game(port, 2001)
        yield service.registry.when_done(2001)
        self.assertEqual(self.db.replay_row(2001), (1928, 1))

    @inlineCallbacks
    def test_database_down_at_startup(self):
        """The server starts, serves the game and saves it with the replay's own metadata."""
        service, port = yield start_server(self, db="mysql://nobody@127.0.0.1:1/faf")
        yield self.upload_game(port, 2002)
        yield service.registry.when_done(2002)
        meta, scfa = self.saved(service, 2002)
        self.assertEqual(scfa, recording("example"))
        self.assertEqual(meta["mapname"], "scmp_016")
        self.assertEqual(len(self.logs.matching("is unreachable")), 1)
        self.assertEqual(service.database.reachable, False)

    @inlineCallbacks
    def test_monitor_sees_the_database(self):
        service, _ = yield start_server(self, db=self.db.url())
        yield service.database.check()
        self.assertIs(service.database.reachable, True)
        self.assertEqual(len(self.logs.matching("is reachable")), 1)


class RequireKnownGame(WithDatabase):
    @inlineCallbacks
    def start(self):
        result = yield start_server(self, db=self.db.url(), **{"require-known-game": None})
        return result

    @inlineCallbacks
    def test_known_game_is_accepted(self):
        self.db.standard_game(3000)
        self.db.execute("UPDATE game_stats SET endTime = NULL WHERE id = 3000")  # still running
        service, port = yield self.start()
        yield self.upload_game(port, 3000, uploaders=3)
        yield service.registry.when_done(3000)
        self.assertEqual(self.saved(service, 3000)[1], recording("example"))

    @inlineCallbacks
    def test_refusals(self):
        self.db.standard_game(3001)  # ended in 2023: long ago
        host = self.db.execute("SELECT id FROM login WHERE login = 'Rowan'")[0][0]
        self.db.game(3002, host=host, mod=0, map_id=None, ended=None)
        self.db.execute("UPDATE game_stats SET replay_available = 1 WHERE id = 3002")
        service, port = yield self.start()
        for game_id, why in [
            (3001, "it ended more than 3600 s ago"),
            (3002, "its replay is already saved"),
            (3003, "the database does not know this game"),
        ]:
            clients = yield self.upload_game(port, game_id, uploaders=2)
            for client in clients:
                yield client.done
            self.assertNotIn(game_id, service.registry.games)
            self.assertEqual(len(self.logs.matching(f"upload for game {game_id} refused: {why}")), 2)
        self.assertEqual(list(Path(service.registry.settings.vault).rglob("*.fafreplay")), [])

    @inlineCallbacks
    def test_watchers_are_not_checked(self):
        self.db.standard_game(3004)
        self.db.execute("UPDATE game_stats SET endTime = NULL WHERE id = 3004")
        service, port = yield self.start()
        yield self.upload_game(port, 3004)
        yield until(lambda: 3004 in service.registry.games)  # once the database said yes
        watcher = Watcher(3004)
        yield connect(port, watcher)
        self.assertEqual((yield watcher.done), recording("example"))

    @inlineCallbacks
    def test_database_down_lets_uploads_in(self):
        service, port = yield start_server(
            self, db="mysql://nobody@127.0.0.1:1/faf", **{"require-known-game": None}
        )
        yield self.upload_game(port, 3005)
        yield service.registry.when_done(3005)
        self.assertEqual(self.saved(service, 3005)[1], recording("example"))
        self.assertEqual(len(self.logs.matching("accepting the upload")), 1)
