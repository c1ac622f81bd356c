"""A fresh FAF-shaped database per test, with blocking helpers for fixtures and checks.

The server under test talks to it through adbapi like in production; the test
itself writes fixture rows and reads results over a direct root connection.
"""

from __future__ import annotations

from typing import Any

import MySQLdb
from twisted.trial.unittest import TestCase

from faf_replay.database.config import DatabaseConfig
from tests.support import mariadb

STARTED = 1_700_000_000
ENDED = STARTED + 1928 // 10


class FafDatabase:
    def __init__(self, test: TestCase, name: str | None = None) -> None:
        self.server = mariadb.server()
        self.name = mariadb.fresh_database(name)
        test.addCleanup(mariadb.drop_database, self.name)
        self.connection = self._connect()
        test.addCleanup(self.close)

    def close(self) -> None:
        try:
            self.connection.close()
        except MySQLdb.Error:
            pass

    def config(self, password: str = mariadb.PASSWORD) -> DatabaseConfig:
        return DatabaseConfig("127.0.0.1", self.server.port, mariadb.USER, self.name, password)

    def url(self) -> str:
        return f"mysql://{mariadb.USER}@127.0.0.1:{self.server.port}/{self.name}"

    def _connect(self) -> MySQLdb.Connection:
        return MySQLdb.connect(
            unix_socket=self.server.socket, user="root", db=self.name, charset="utf8mb4", autocommit=True
        )

    def execute(self, sql: str, args: Any = ()) -> list[tuple]:
        try:
            with self.connection.cursor() as cursor:
                cursor.execute(sql, args)
                return list(cursor.fetchall())
        except MySQLdb.OperationalError:
            self.connection = self._connect()  # the server was restarted under us
            with self.connection.cursor() as cursor:
                cursor.execute(sql, args)
                return list(cursor.fetchall())

    # -- fixtures ---------------------------------------------------------------

    def login(self, name: str) -> int:
        self.execute("INSERT INTO login (login) VALUES (%s)", (name,))
        return self.execute("SELECT id FROM login WHERE login = %s", (name,))[0][0]

    def featured_mod(self, mod_id: int, name: str | None) -> int:
        self.execute("INSERT INTO game_featuredMods (id, gamemod) VALUES (%s, %s)", (mod_id, name))
        return mod_id

    def map(self, folder: str) -> int:
        self.execute("INSERT INTO map_version (folder_name) VALUES (%s)", (folder,))
        return self.execute("SELECT id FROM map_version WHERE folder_name = %s", (folder,))[0][0]

    def mod_file(self, mod: str, file_id: int, version: int) -> None:
        if not self.execute(f"SELECT id FROM `updates_{mod}` WHERE id = %s", (file_id,)):
            self.execute(
                f"INSERT INTO `updates_{mod}` (id, filename, path) VALUES (%s, %s, 'bin')",
                (file_id, f"file{file_id}.nx2"),
            )
        self.execute(
            f"INSERT INTO `updates_{mod}_files` (fileId, version, name, md5) VALUES (%s, %s, 'f', 'md5')",
            (file_id, version),
        )

    def game(
        self,
        game_id: int,
        *,
        host: int,
        mod: int,
        map_id: int | None,
        title: str = "4v4 Setons",
        game_type: str = "DEMORALIZATION",
        started: int = STARTED,
        ended: int | None = ENDED,
    ) -> int:
        self.execute(
            "INSERT INTO game_stats (id, startTime, endTime, gameType, gameMod, host, mapId, gameName)"
            " VALUES (%s, FROM_UNIXTIME(%s), FROM_UNIXTIME(%s), %s, %s, %s, %s, %s)",
            (game_id, started, ended, game_type, mod, host, map_id, title),
        )
        return game_id

    def player(self, game_id: int, player_id: int, team: int | None, ai: bool = False) -> None:
        self.execute(
            "INSERT INTO game_player_stats (gameId, playerId, AI, team) VALUES (%s, %s, %s, %s)",
            (game_id, player_id, int(ai), team),
        )

    def standard_game(self, game_id: int, title: str = "4v4 Setons") -> int:
        """A finished 2v2 on scmp_003 with an AI, featured mod faf with file versions."""
        rowan, kim = self.login("Rowan"), self.login("Kim")
        zoe, ai = self.login("Zoë"), self.login("AI: Sorian")
        self.featured_mod(0, "faf")
        for file_id, version in [(1, 3656), (1, 3659), (2, 3659), (3, 3700)]:
            self.mod_file("faf", file_id, version)
        self.game(game_id, host=rowan, mod=0, map_id=self.map("scmp_003.v0003"), title=title)
        for player, team in [(rowan, 2), (kim, 2), (zoe, 3)]:
            self.player(game_id, player, team)
        self.player(game_id, ai, 3, ai=True)
        return game_id

    # -- checks -----------------------------------------------------------------

    def replay_row(self, game_id: int) -> tuple[int | None, int]:
        [(ticks, available)] = self.execute(
            "SELECT replay_ticks, replay_available FROM game_stats WHERE id = %s", (game_id,)
        )
        return ticks, available

    def kill_server_connections(self) -> int:
        """Kill every connection of the server's user: the pool's connections die."""
        ids = [
            row[0]
            for row in self.execute(
                "SELECT id FROM information_schema.processlist WHERE user = %s", (mariadb.USER,)
            )
        ]
        for connection_id in ids:
            self.execute(f"KILL {int(connection_id)}")
        return len(ids)
