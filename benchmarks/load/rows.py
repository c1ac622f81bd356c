"""The games' rows in the private MariaDB, and when each says its replay is available."""

from __future__ import annotations

import threading
import time


class Rows:
    """FAF's tables in a fresh database of the test suite's private MariaDB,
    with a game row (4 players, featured mod, map) for every game of the run."""

    def __init__(self, game_ids: list[int]) -> None:
        import MySQLdb  # noqa: PLC0415

        from tests.support import mariadb  # noqa: PLC0415

        server = mariadb.server()
        self.name = mariadb.fresh_database()
        self.port = server.port
        self.url = f"mysql://{mariadb.USER}@127.0.0.1:{server.port}/{self.name}"
        self.password = mariadb.PASSWORD
        self.connection = MySQLdb.connect(
            unix_socket=server.socket, user="root", db=self.name, charset="utf8mb4", autocommit=True
        )
        with self.connection.cursor() as cursor:
            fill_tables(cursor, [(game_id, 4) for game_id in game_ids])

    def watch(self, interval: float = 0.05) -> None:
        """Note, from now on, when each game's row first says its replay is
        available (``replay_available = 1``): what a user of FAF's site sees.
        Polled on a connection of its own every ``interval`` seconds."""
        import MySQLdb  # noqa: PLC0415

        from tests.support import mariadb  # noqa: PLC0415

        self.available_at: dict[int, float] = {}
        self._watching = threading.Event()
        self._watching.set()
        connection = MySQLdb.connect(
            unix_socket=mariadb.server().socket, user="root", db=self.name, autocommit=True
        )

        def poll() -> None:
            with connection.cursor() as cursor:
                while self._watching.is_set():
                    cursor.execute("SELECT id FROM game_stats WHERE replay_available = 1")
                    now = time.time()
                    for (game_id,) in cursor.fetchall():
                        self.available_at.setdefault(int(game_id), now)
                    time.sleep(interval)
            connection.close()

        self._poller = threading.Thread(target=poll, name="rows-watcher", daemon=True)
        self._poller.start()

    def stop_watching(self) -> None:
        self._watching.clear()
        self._poller.join(5)

    def recorded(self) -> int:
        """Games whose row says their replay is available, with a tick count."""
        with self.connection.cursor() as cursor:
            cursor.execute(
                "SELECT COUNT(*) FROM game_stats WHERE replay_available = 1 AND replay_ticks IS NOT NULL"
            )
            return int(cursor.fetchone()[0])


def fill_tables(cursor, games: list[tuple[int, int]]) -> None:
    """FAF's rows for ``games`` (id, players): 8 logins, the featured mod, a map, the game
    executable's version, and each game's row and its players' (teams 2 and 3)."""
    cursor.executemany("INSERT INTO login (id, login) VALUES (%s, %s)", [(n, f"u{n}") for n in range(1, 9)])
    cursor.execute("INSERT INTO game_featuredMods (id, gamemod) VALUES (0, 'faf')")
    cursor.execute("INSERT INTO map_version (id, folder_name) VALUES (1, 'scmp_009.v0003')")
    cursor.execute("INSERT INTO updates_faf (id, filename, path) VALUES (1, 'ForgedAlliance.exe', 'bin')")
    cursor.execute("INSERT INTO updates_faf_files (fileId, version, name, md5) VALUES (1, 3800, 'f', 'x')")
    cursor.executemany(
        "INSERT INTO game_stats (id, startTime, gameType, gameMod, host, mapId, gameName)"
        " VALUES (%s, NOW(), 'DEMORALIZATION', 0, 1, 1, %s)",
        [(game_id, f"bench {game_id}") for game_id, _ in games],
    )
    cursor.executemany(
        "INSERT INTO game_player_stats (gameId, playerId, AI, team) VALUES (%s, %s, 0, %s)",
        [(game_id, player, 2 + player % 2) for game_id, players in games for player in range(1, players + 1)],
    )
