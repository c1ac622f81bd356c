"""The database away while replays are saved, and the server killed meanwhile.

Real processes: ``twistd faf-replay --db`` against the private MariaDB, which is
stopped while games end; the server is killed with SIGKILL while the database
work waits in its outbox; then MariaDB and the server start again. Every file
and every row must end up complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import fafreplay
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from faf_replay.database.config import PASSWORD_VARIABLE
from faf_replay.save.vault import vault_path
from tests.support import mariadb
from tests.support.clients import Uploader, connect, until
from tests.support.faf_database import FafDatabase
from tests.support.processes import run_twistd
from tests.support.recordings import recording


class DatabaseOutage(TestCase):
    timeout = 180

    def setUp(self):
        self.db = FafDatabase(self)
        self.addCleanup(self._database_up)
        self.cwd = self.mktemp()
        os.makedirs(self.cwd)

    def _database_up(self):
        if self.db.server.process is None:
            self.db.server.start()

    def twistd(self):
        return run_twistd(
            self,
            self.cwd,
            "--port=tcp:0:interface=127.0.0.1",
            "--vault=vault",
            "--spool=spool",
            f"--db={self.db.url()}",
            "--db-timeout=1",
            "--db-check-interval=0.3",
            "--delay=0.1",
            "--sample-interval=0.05",
            "--grace=0.3",
            env={PASSWORD_VARIABLE: mariadb.PASSWORD},
        )

    def saved(self, game_id: int) -> tuple[dict, bytes]:
        path = vault_path(Path(self.cwd, "vault"), game_id)
        data = path.read_bytes()
        with path.open("rb") as file:
            return json.loads(data.split(b"\n", 1)[0]), fafreplay.extract_scfa(file)

    def outbox(self) -> list[str]:
        folder = Path(self.cwd, "spool", "outbox")
        return sorted(p.name for p in folder.glob("*.json")) if folder.exists() else []

    @inlineCallbacks
    def play(self, port: int, game_id: int, name: str = "example"):
        uploaders = [Uploader(game_id, f"{who}.SCFAreplay", recording(name), [5000]) for who in "ab"]
        for uploader in uploaders:
            yield connect(port, uploader)
        for uploader in uploaders:
            yield uploader.done

    @inlineCallbacks
    def test_nothing_is_lost(self):
        games = [501, 502, 503]
        self.db.standard_game(501, title="Outage game 501 ⚡")
        host = self.db.execute("SELECT id FROM login WHERE login = 'Rowan'")[0][0]
        for game_id in games[1:]:
            self.db.game(game_id, host=host, mod=0, map_id=None, title=f"Outage game {game_id} ⚡")

        server = self.twistd()
        port = yield server.listening()
        self.db.server.stop()  # the database goes away
        for game_id in games:
            yield self.play(port, game_id)
        vault = Path(self.cwd, "vault")
        yield until(lambda: all(vault_path(vault, g).exists() for g in games), timeout=60)
        yield until(lambda: self.outbox() == [f"{g}.json" for g in games], timeout=30)
        for game_id in games:
            meta, scfa = self.saved(game_id)
            self.assertEqual((meta["title"], scfa), ("", recording("example")))  # the replay's own facts

        server.process.signalProcess("KILL")  # and the server dies with work in its outbox
        yield server.exited
        self.db.server.start()
        server = self.twistd()
        port = yield server.listening()
        yield until(lambda: self.outbox() == [], timeout=60)
        for game_id in games:
            meta, scfa = self.saved(game_id)
            self.assertEqual(scfa, recording("example"))
            self.assertEqual(meta["title"], f"Outage game {game_id} ⚡")
            self.assertEqual(meta["host"], "Rowan")
            self.assertEqual(self.db.replay_row(game_id), (1928, 1))

        # and a game after the outage is saved and marked at once
        self.db.game(504, host=host, mod=0, map_id=None, title="After")
        yield self.play(port, 504)
        yield until(lambda: self.db.replay_row(504) == (1928, 1), timeout=30)
        self.assertEqual(self.saved(504)[0]["title"], "After")
        server.process.signalProcess("TERM")
        self.assertEqual((yield server.exited), 0)

    @inlineCallbacks
    def test_database_back_while_running(self):
        self.db.standard_game(510, title="Back soon")
        server = self.twistd()
        port = yield server.listening()
        self.db.server.stop()
        yield self.play(port, 510)
        yield until(lambda: self.outbox() == ["510.json"], timeout=30)
        self.db.server.start()  # the monitor notices and the outbox drains
        yield until(lambda: self.outbox() == [], timeout=30)
        self.assertEqual(self.saved(510)[0]["title"], "Back soon")
        self.assertEqual(self.db.replay_row(510), (1928, 1))
        yield until(lambda: b"is reachable" in server.output, timeout=30)  # the monitor saw it too
